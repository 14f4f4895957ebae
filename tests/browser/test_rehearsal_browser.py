"""The rehearsal page (notebook 08) in the Voila teaching app, driven by its buttons in Chromium.

Snap the probe to the planned needle plane, insert the needle, advance it to the plan's depth
(5 mm then 1 mm clicks), check that the B-mode shows the needle as bright pixels along the line the
kernel says it lies on (hidden hook ``wb-rehearsal-state``: entry and tip in B-mode pixels), inject
the plan's volume in 1 mL clicks, finish, and read the tip-to-target distance from the metrics
table (< 1 mm for the plan). The home page links the rehearsal. Screenshots go to ``results_dir``.
In a library app (``workbench teach --library``) the page's submit box stores the finished attempt
in the session's SQLite results and shows the stored score.
"""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest

from ._harness import merge_result
from ._pages import NOTEBOOK_READY_MS, open_in_voila, wait_for_class, widget_json
from tests.pixels import line_brightness

pytestmark = pytest.mark.browser

PAGE = "08_rehearsal.ipynb"
#: One click's round trip through the kernel (render, three PNGs) on 2 shared cores, generous.
CLICK_MS = 60_000


def _state(page) -> dict:
    return widget_json(page, "wb-rehearsal-state")


def _button(page, label: str):
    """The panel's button whose label ends with ``label`` (its accessible name starts with the icon's glyph)."""
    return page.locator(".wb-rehearsal").get_by_role("button", name=re.compile(re.escape(label) + r"\s*$"))


def _click(page, label: str) -> dict:
    """Click the button named ``label`` in the rehearsal panel; wait for the state hook to change."""
    before = page.locator(".wb-rehearsal .wb-rehearsal-state").first.inner_text()
    _button(page, label).click()
    page.wait_for_function(
        "(before) => { const el = document.querySelector('.wb-rehearsal .wb-rehearsal-state');"
        " return el && el.innerText !== before; }",
        arg=before, timeout=CLICK_MS,
    )
    return _state(page)


def _rgb(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("L")).astype(float)


def _set_angle(page, angle_deg: float) -> None:
    """Type the redirect angle (degrees) and commit it (Enter), as a person does."""
    field = page.locator(".wb-rehearsal input[type='number']").first
    field.fill(f"{angle_deg:g}")
    field.press("Enter")


def _check_needle_line(page, state: dict, tmp_path, results_dir) -> dict:
    """Grey levels of the B-mode screenshot along the needle's line (from the hook) and 25 px beside it."""
    image = page.locator(".wb-rehearsal-bmode").first
    image.scroll_into_view_if_needed()
    shot = tmp_path / "voila-rehearsal-bmode.png"
    grey = _rgb(image.screenshot(path=str(shot), animations="disabled"))
    (results_dir / shot.name).write_bytes(shot.read_bytes())
    print(f"screenshot: {shot}")
    box = image.bounding_box()
    png_w, png_h = state["png_px"]
    scale = np.array([box["width"] / png_w, box["height"] / png_h])
    entry, tip = (np.asarray(state["needle"][k], float) * scale for k in ("entry_px", "tip_px"))
    along = line_brightness(grey, entry, tip, samples=30)
    beside = [float(np.median(line_brightness(grey, entry + (dx, 0), tip + (dx, 0), samples=30))) for dx in (-25, 25)]
    result = {"along_median_grey": float(np.median(along)), "beside_median_grey": beside, "samples": len(along),
              "css_px": [box["width"], box["height"]], "png_px": [png_w, png_h]}
    merge_result(results_dir / "viewers.json", "voila-rehearsal-bmode", result)
    return result


def test_rehearsal_page_performs_an_attempt_with_its_buttons(teach, page_and_log, results_dir, tmp_path):
    page, log = page_and_log
    page.goto(teach.url("/"), wait_until="domcontentloaded")
    link = page.locator(".wb-extra-pages a").first
    link.wait_for(state="attached", timeout=30_000)
    assert link.get_attribute("href").endswith("/voila/render/" + PAGE), link.get_attribute("href")
    assert "Rehearse" in link.inner_text()
    page.screenshot(path=str(results_dir / "voila-home-rehearsal.png"), full_page=True)

    open_in_voila(page, teach, PAGE)
    panel = wait_for_class(page, "wb-rehearsal", timeout_ms=NOTEBOOK_READY_MS)
    page.wait_for_function("() => { const el = document.querySelector('.wb-rehearsal-state');"
                           " return el && el.innerText.includes('plan_depth_mm'); }", timeout=NOTEBOOK_READY_MS)
    state = _state(page)
    assert state["inserted_mm"] is None and not state["finished"], state  # opening the page does nothing
    page.screenshot(path=str(results_dir / "voila-rehearsal-opened.png"), full_page=True)
    _click(page, "Snap to the planned needle plane")
    state = _click(page, "Insert the needle")
    assert state["inserted_mm"] == 0.0, state
    depth_mm = float(state["plan_depth_mm"])

    # a shallow needle (turned 45 deg in the image plane) is a bright line on the B-mode; the plan's
    # steep path, nearly along the beam, shows faintly (specular reflection, imaging.needle_visibility)
    _set_angle(page, -45.0)
    _click(page, "Redirect in plane")
    for _ in range(5):
        state = _click(page, "Advance 5 mm")
    assert state["inserted_mm"] == pytest.approx(25.0, abs=0.05), state
    result = _check_needle_line(page, state, tmp_path, results_dir)
    print(f"needle on the B-mode: {result}")
    assert result["samples"] >= 20 and result["along_median_grey"] >= 200, result
    assert result["along_median_grey"] > max(result["beside_median_grey"]) + 40, result

    # back onto the plan's path (the redirect withdraws to 10 mm first), then on to the target
    _set_angle(page, 45.0)
    state = _click(page, "Redirect in plane")
    for _ in range(int((depth_mm - state["inserted_mm"]) // 5)):
        state = _click(page, "Advance 5 mm")
    for _ in range(int(depth_mm - state["inserted_mm"])):
        state = _click(page, "Advance 1 mm")
    assert 0.0 <= depth_mm - state["inserted_mm"] < 1.0, (depth_mm, state)

    for _ in range(6):
        state = _click(page, "Inject 1 mL")
    assert state["injected_ml"] == pytest.approx(6.0), state
    assert _button(page, "Inject 1 mL").is_disabled()
    state = _click(page, "Finish and score")
    metrics = page.locator(".wb-rehearsal-metrics").first
    metrics.wait_for(state="visible", timeout=CLICK_MS)
    text = metrics.inner_text()
    panel.scroll_into_view_if_needed()
    page.screenshot(path=str(results_dir / "voila-rehearsal-finished.png"), full_page=True)
    match = re.search(r"tip to target mm\s+([\d.]+)", text)
    assert match, text
    assert float(match.group(1)) < 1.0, text
    assert float(match.group(1)) == pytest.approx(state["metrics"]["tip_to_target_mm"], abs=0.005 + 1e-9)
    assert re.search(r"injected ml\s+6", text) and state["metrics"]["redirections"] == 2, text
    assert "Saved:" in text, text
    events = page.locator(".wb-rehearsal-events").first.inner_text()
    assert "puncture" not in events.lower() and "paraesthesia" not in events.lower(), events
    print(json.dumps({"metrics_text": text[:400]}))
    assert not log.foreign(), f"the rehearsal page requested non-local URLs: {log.foreign()}"


LIBRARY_CASE = "LIB-001-01"
LIBRARY_SESSION = "t18-rehearsal-browser"


def test_a_library_rehearsal_is_submitted_from_the_page(browser, teaching_library, page_and_log, results_dir, tmp_path):
    """``workbench teach --library``: the rehearsal page of a library case starts on the case's task
    and has a submit box; insert, finish, type a pseudonym, Submit attempt: the score
    shown is the row stored in the library's SQLite database (kind ``rehearsal``, the trainee, the
    case, the app's session) and equals ``score_rehearsal`` of the saved metrics (0.005, the shown
    rounding). The library holds the one case (a copy of the session's; the page writes into it)."""
    import os
    import secrets
    import shutil
    import subprocess
    import sys
    import time

    from workbench.teaching.library import LIBRARY_INDEX

    from workbench.teaching.library import library_case_for
    from workbench.teaching.score import score_rehearsal
    from workbench.teaching.store import open_store
    from workbench.widgets.cli import free_port

    from ._harness import Server, _stop, _wait_http

    start = time.perf_counter()
    library = tmp_path / "library"
    library.mkdir()
    shutil.copy2(teaching_library / LIBRARY_INDEX, library / LIBRARY_INDEX)
    shutil.copytree(teaching_library / LIBRARY_CASE, library / LIBRARY_CASE)
    task = library_case_for(library / LIBRARY_CASE).task
    port, token = free_port(), secrets.token_hex(16)
    state = tmp_path / "state"
    state.mkdir()
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(state / "jupyter-config"), "WORKBENCH_TOKEN": token}
    log_path = state / "voila.log"
    cmd = [sys.executable, "-m", "workbench", "teach", "--library", str(library), "--session", LIBRARY_SESSION,
           "--port", str(port)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(cmd, cwd=state, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", token, log_path)
    try:
        _wait_http(server.url("/"), process, log_path, 90)
        app_s = time.perf_counter() - start
        page, log = page_and_log
        open_in_voila(page, server, f"{PAGE}?case={LIBRARY_CASE}")
        wait_for_class(page, "wb-rehearsal-submit", timeout_ms=NOTEBOOK_READY_MS)
        page.wait_for_function("() => { const el = document.querySelector('.wb-rehearsal-state');"
                               " return el && el.innerText.includes('plan_depth_mm'); }", timeout=NOTEBOOK_READY_MS)
        page_s = time.perf_counter() - start - app_s
        assert task in page.locator(".wb-rehearsal-submit").first.inner_text()
        assert page.locator(".wb-rehearsal-submit-button button, button.wb-rehearsal-submit-button").first.is_disabled()
        _click(page, "Insert the needle")
        state_after = _click(page, "Finish and score")
        assert state_after["finished"] and state_after["submitted"] is None, state_after
        page.locator(".wb-submit-trainee input").fill("t18")
        before = page.locator(".wb-rehearsal .wb-rehearsal-state").first.inner_text()
        page.locator(".wb-rehearsal-submit-button").first.click()
        page.wait_for_function(
            "(before) => { const el = document.querySelector('.wb-rehearsal .wb-rehearsal-state');"
            " return el && el.innerText !== before && document.querySelector('.wb-submit-score'); }",
            arg=before, timeout=CLICK_MS,
        )
        shown = page.locator(".wb-submit-score").first
        text = shown.inner_text()
        page.locator(".wb-rehearsal-submit").first.scroll_into_view_if_needed()
        page.screenshot(path=str(results_dir / "voila-rehearsal-submitted.png"), full_page=True)
        submitted = _state(page)["submitted"]
        with open_store(library / "results.sqlite") as store:
            rows = store.results()
        assert [(r["trainee"], r["case_id"], r["kind"], r["session"], r["task"]) for r in rows] == [
            ("t18", LIBRARY_CASE, "rehearsal", LIBRARY_SESSION, task)], rows
        row = rows[0]
        saved = sorted((library / LIBRARY_CASE / "rehearsals").glob("*/metrics.json"))
        assert len(saved) == 1, saved
        expected = score_rehearsal(json.loads(saved[0].read_text(encoding="utf-8")), case_id=LIBRARY_CASE, task=task)
        assert row["score"] == pytest.approx(expected.score, abs=1e-9)
        assert float(shown.get_attribute("data-score")) == pytest.approx(row["score"], abs=0.005 + 1e-9)
        assert int(shown.get_attribute("data-attempt")) == row["id"] == submitted["attempt_id"]
        verdict = "passed" if row["passed"] else "not passed"
        assert f"t18: Score {row['score']:.0f} / 100, {verdict}" in text, text
        assert all(finding in text for finding in expected.findings), (text, expected.findings)
        print(json.dumps({"score": row["score"], "passed": row["passed"], "text": text[:300], "app_up_s": round(app_s, 1),
                          "page_ready_s": round(page_s, 1), "total_s": round(time.perf_counter() - start, 1)}))
        assert not log.foreign(), f"the rehearsal page requested non-local URLs: {log.foreign()}"
    finally:
        _stop(process)
