"""A teaching session in the Voila app (issue 19), in headless Chromium, into SQLite and PostgreSQL.

A library of 3 cases is built once for the module, and each case gets two entry points as a
trainee places them in page 02: one 1 mm from the expert's entry (an expert-like plan) and one
15 mm across the needle from it. For each database, ``workbench teach --library LIB [--db URL]
--session S`` serves the app; from the home page the test opens each case's plan page and, as 3
trainees (t01-t03), picks target and entry, types the trainee id and presses Submit: 3 plans per
case, 3 per trainee. Then it checks

- in the database, by numbers: one row per submission (3 per trainee, 3 per case), scores in
  0-100, every expert-like plan passed, each 15 mm plan scored lower than the expert-like plan of
  the same case and not passed, the plan at the wrong target flagged as wrong level;
- on the trainee's page after submitting: the score and the picture of both needle paths on the
  MRI (cyan and magenta pixels where the figure says the paths are);
- on the teacher's page (linked from the home page): a class table of 3 trainees with the right
  attempt counts, the plots drawn (not blank), and an Export CSV link that downloads a CSV with one
  row per submission.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import secrets
import sys
from pathlib import Path

import numpy as np
import pytest

from ._harness import grey_variance, serving
from ._pages import wait_for_class

pytestmark = pytest.mark.browser

SESSION = "t19-browser"
NEAR, MOVED = "my entry A", "my entry B"
#: (case index, trainee, entry, task target?) in submission order; each case's page is opened once.
SUBMISSIONS = (
    (0, "t01", NEAR, True), (0, "t02", MOVED, True), (0, "t03", NEAR, False),
    (1, "t02", NEAR, True), (1, "t03", MOVED, True), (1, "t01", NEAR, True),
    (2, "t03", NEAR, True), (2, "t01", MOVED, True), (2, "t02", NEAR, True),
)  # fmt: skip
CYAN, MAGENTA = np.array([0, 220, 255]), np.array([255, 0, 220])


@pytest.fixture(scope="module")
def library(browser, teaching_library, tmp_path_factory):
    """A copy of the session's 3-case library (tests/conftest.py), each case with the two trainee entries."""
    import shutil

    from workbench.case import load_case
    from workbench.planning.export import load_plan
    from workbench.teaching.library import read_library
    from workbench.widgets.points import PointListModel

    folder = tmp_path_factory.mktemp("teaching-browser") / "library"
    shutil.copytree(teaching_library, folder, ignore=shutil.ignore_patterns("results.sqlite*", "*.migrate.lock"))
    for entry in read_library(folder):
        trajectory = load_plan(folder / f"{entry.case_id}.expert.plan.json").trajectories[0]
        across = np.cross(trajectory.direction_lps, [0.0, 0.0, 1.0])
        across /= np.linalg.norm(across)
        points = PointListModel(load_case(folder / entry.case_id), folder / entry.case_id, autosave=True)
        points.place(NEAR, "entry", np.add(trajectory.entry_lps_mm, 1.0 * across))
        points.place(MOVED, "entry", np.add(trajectory.entry_lps_mm, 15.0 * across))
    return folder


@contextlib.contextmanager
def _running_library_app(library: Path, db: str | None, state_dir: Path):
    """``workbench teach --library LIB [--db DB] --session S`` on 127.0.0.1; stopped on exit."""
    from workbench.widgets.cli import free_port

    port, token = free_port(), secrets.token_hex(16)
    state_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(state_dir / "jupyter-config"), "WORKBENCH_TOKEN": token}
    cmd = [sys.executable, "-m", "workbench", "teach", "--library", str(library), "--session", SESSION, "--port", str(port)]
    if db is not None:
        cmd += ["--db", db]
    with serving(cmd, cwd=state_dir, env=env, port=port, token=token, log_path=state_dir / "voila.log") as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def results_db(request, library):
    """The session's database: the default SQLite file in the library, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        path = library / "results.sqlite"
        for stale in library.glob("results.sqlite*"):
            stale.unlink()
        yield request.param, None, str(path)
        return
    url = request.getfixturevalue("postgres_schema_url")
    yield request.param, url, url


def _colour_pixels(png: bytes, rgb: np.ndarray, tolerance: int = 40) -> int:
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int((np.abs(pixels - rgb).max(axis=2) <= tolerance).sum())


def _submit(page, target: str, entry: str, trainee: str, previous: str | None) -> dict:
    """Pick target and entry in the plan panel, type the trainee id, press Submit; the score shown."""
    selects = page.locator(".wb-plan-panel .widget-dropdown select")
    selects.nth(0).select_option(label=target)
    selects.nth(1).select_option(label=entry)
    page.locator(".wb-submit-trainee input").fill(trainee)
    page.locator(".wb-submit-button").click()
    page.wait_for_function(
        "(prev) => { const s = document.querySelector('.wb-submit-score');"
        " return s && s.dataset.attempt !== prev; }",
        arg=previous or "",
        timeout=120_000,
    )
    score = page.locator(".wb-submit-score")
    return {"attempt": score.get_attribute("data-attempt"), "score": float(score.get_attribute("data-score")),
            "text": score.inner_text()}


def test_a_class_of_three_trainees_in_the_voila_app(library, results_db, page_and_log, results_dir, tmp_path):
    from workbench.teaching.library import read_library
    from workbench.teaching.store import open_store

    backend, db_arg, db = results_db
    page, log = page_and_log
    entries = read_library(library)
    with _running_library_app(library, db_arg, tmp_path / "teach-state") as app:
        # the trainee: the home page lists the cases (with their task) and the teacher's page
        page.goto(app.url("/"), wait_until="domcontentloaded")
        page.wait_for_selector("#wb-landing")
        page.screenshot(path=str(results_dir / f"voila-home-library-{backend}.png"), full_page=True)
        home = page.locator("body").inner_text()
        for entry in entries:
            assert entry.case_id in home and f"task: {entry.task}" in home, home
        assert "Class results" in home and str(library) not in home and "sqlite" not in home.lower(), home
        shown = {}
        # three trainees' tabs, one per case, opened from the home page's links at once (their
        # kernels start side by side, as in a class); the first by a click on its link
        links = [page.locator(f"a[href$='04_plan_export.ipynb?case={entry.case_id}']") for entry in entries]
        hrefs = [page.evaluate("(h) => new URL(h, document.baseURI).href", link.get_attribute("href")) for link in links[1:]]
        tabs = [page] + [page.context.new_page() for _ in hrefs]
        for tab, href in zip(tabs[1:], hrefs):
            tab.set_default_timeout(30_000)
            tab.goto(href, wait_until="commit")
        links[0].click()
        for index, (entry, page) in enumerate(zip(entries, tabs)):
            wait_for_class(page, "wb-submit-panel")
            panel_text = page.locator(".wb-plan-panel").inner_text()
            assert "expert:" not in page.locator(".wb-plan-panel .widget-dropdown select").nth(1).inner_text(), (
                "the expert's entry is offered before submitting")
            previous = None
            for case_index, trainee, entry_name, on_task in SUBMISSIONS:
                if case_index != index:
                    continue
                target = entry.task if on_task else next(t for t in _targets(page) if t.split()[0] != entry.task.split()[0])
                result = _submit(page, target, entry_name, trainee, previous)
                previous = result["attempt"]
                shown[(entry.case_id, trainee, entry_name, on_task)] = result
                assert re.search(rf"{trainee}: Score \d+ / 100", result["text"]), result["text"]
            # the post-submit view: the score and both needle paths drawn on the MRI
            overlay = page.locator(".wb-submit-overlay")
            overlay.wait_for(state="visible")
            png = overlay.screenshot(path=str(results_dir / f"voila-trainee-submitted-{backend}-{entry.case_id}.png"))
            assert grey_variance(png) > 25, "the comparison picture is blank"
            assert _colour_pixels(png, CYAN) >= 150 and _colour_pixels(png, MAGENTA) >= 150, (
                _colour_pixels(png, CYAN), _colour_pixels(png, MAGENTA))
            assert str(library) not in page.locator("body").inner_text() and panel_text
        page.screenshot(path=str(results_dir / f"voila-trainee-page-{backend}.png"), full_page=True)
        for tab in tabs[1:]:
            tab.close()
        page = tabs[0]

        # the database, by numbers
        with open_store(db) as store:
            rows = store.results(SESSION)
        assert len(rows) == len(SUBMISSIONS)
        for trainee in ("t01", "t02", "t03"):
            assert sum(r["trainee"] == trainee for r in rows) == 3
        for entry in entries:
            assert sum(r["case_id"] == entry.case_id for r in rows) == 3
        assert all(0.0 <= r["score"] <= 100.0 for r in rows)
        by_key = {(r["case_id"], r["trainee"]): r for r in rows}
        for case_id, trainee, entry_name, on_task in shown:
            row = by_key[(case_id, trainee)]
            assert row["score"] == pytest.approx(shown[(case_id, trainee, entry_name, on_task)]["score"], abs=0.01)
            if not on_task:
                assert row["wrong_level"] and not row["passed"] and row["score"] <= 20.0, row
            elif entry_name == NEAR:
                assert row["passed"] and row["score"] >= 90.0 and row["offset_at_entry_mm"] == pytest.approx(1.0, abs=0.01), row
            else:
                near = next(by_key[(c, t)] for c, t, e, o in shown if c == case_id and e == NEAR and o)
                assert not row["passed"] and row["score"] < near["score"] - 30.0, (row, near)
                assert row["offset_at_entry_mm"] == pytest.approx(15.0, abs=0.01), row

        # the teacher: class table, plots, CSV download
        page.goto(app.url("/"), wait_until="domcontentloaded")
        page.locator("p.wb-teacher-link a").click()
        wait_for_class(page, "wb-teacher")
        page.wait_for_function("() => document.querySelectorAll('.wb-teacher-class tr').length > 1")
        table = page.eval_on_selector_all(".wb-teacher-class tr", "rows => rows.map(r => r.innerText)")
        assert len(table) == 1 + 3, table
        assert [line.split()[:2] for line in table[1:]] == [["t01", "3"], ["t02", "3"], ["t03", "3"]], table
        for css in ("wb-teacher-learning", "wb-teacher-distributions"):
            plot = page.locator(f".{css}")
            plot.wait_for(state="visible")
            assert grey_variance(plot.screenshot()) > 25, f"{css} is blank"
        page.get_by_role("button", name="Export CSV").click()
        link = page.locator(".wb-teacher-csv a")
        link.wait_for(state="attached", timeout=60_000)
        response = page.request.get(page.evaluate("(h) => new URL(h, document.baseURI).href", link.get_attribute("href")))
        assert response.status == 200
        exported = list(csv.DictReader(io.StringIO(response.text())))
        assert len(exported) == len(SUBMISSIONS) and {r["trainee"] for r in exported} == {"t01", "t02", "t03"}
        assert sorted(float(r["score"]) for r in exported) == pytest.approx(sorted(r["score"] for r in rows), abs=1e-9)
        page.set_viewport_size({"width": 1400, "height": 1900})  # the whole teacher's page in one picture
        page.locator(".wb-teacher").screenshot(path=str(results_dir / f"voila-teacher-{backend}.png"))
        teacher_text = page.locator("body").inner_text()
        assert str(library) not in teacher_text and "sqlite" not in teacher_text.lower() and "postgresql" not in teacher_text
    assert not log.foreign(), f"the teaching app requested non-local URLs: {log.foreign()}"


def _targets(page) -> list[str]:
    return page.eval_on_selector(".wb-plan-panel .widget-dropdown select", "s => [...s.options].map(o => o.label)")
