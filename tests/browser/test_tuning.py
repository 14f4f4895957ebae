"""Notebook 06 (registration tuning) in a real browser: its plots render in JupyterLab and in Voila.

The plots are static PNGs in ``ipywidgets.Image`` (class ``wb-tuning-plot``). After the notebook
ran, each of the five (history, importance, parallel coordinates, per-case TRE, held-out
comparison) must be an image larger than 200 x 150 CSS px on the page whose screenshot is not
blank (central grey variance >= BLANK_VARIANCE) and holds many grey levels (> 20 distinct values):
checked by pixel content, not by the element's existence.
"""

from __future__ import annotations

import contextlib
import io
import secrets
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ._harness import BLANK_VARIANCE, REPO, Server, _stop, _wait_http, grey_variance, merge_result
from ._pages import run_all_in_lab

pytestmark = pytest.mark.browser

NOTEBOOK = "06_registration_tuning.ipynb"
PLOTS = 5
#: Generous: the kernel starts a LocalCluster, simulates 2 cases and runs 4 trials on 2 shared cores.
PLOTS_READY_MS = 400_000


def _wait_plots(page) -> None:
    page.wait_for_function(
        """(n) => {
            const images = Array.from(document.querySelectorAll('img.wb-tuning-plot'));
            return images.length >= n && images.every(img => img.complete && img.naturalWidth > 200);
        }""",
        arg=PLOTS,
        timeout=PLOTS_READY_MS,
    )


def _check_plots(page, results_dir: Path, app: str) -> list[dict]:
    _wait_plots(page)
    images = page.locator("img.wb-tuning-plot")
    found = []
    for index in range(images.count()):
        image = images.nth(index)
        image.scroll_into_view_if_needed()
        box = image.bounding_box()
        png = image.screenshot(path=str(results_dir / f"{app}-tuning-plot-{index}.png"), animations="disabled")
        from PIL import Image

        with Image.open(io.BytesIO(png)) as shot:
            grey = np.asarray(shot.convert("L"))
        row = {"width_px": round(box["width"]), "height_px": round(box["height"]),
               "grey_variance": round(grey_variance(png), 1), "grey_levels": int(np.unique(grey).size)}
        found.append(row)
        assert box["width"] > 200 and box["height"] > 150, f"{app} plot {index} is {box['width']}x{box['height']} px"
        assert row["grey_variance"] >= BLANK_VARIANCE, f"{app} plot {index} is blank: {row}"
        assert row["grey_levels"] > 20, f"{app} plot {index} has too few grey levels: {row}"
    assert len(found) == PLOTS
    merge_result(results_dir / "viewers.json", f"{app}-tuning-plots", found)
    print(f"{app}: tuning plots {found}")
    return found


def test_notebook_06_plots_render_in_jupyterlab(lab, page_and_log, results_dir):
    page, log = page_and_log
    try:
        run_all_in_lab(page, lab, NOTEBOOK)
        _check_plots(page, results_dir, "jupyterlab")
    finally:
        lab.shutdown_kernels()
    assert not log.foreign(), f"the page requested non-local URLs: {log.foreign()}"


@contextlib.contextmanager
def _voila_on(notebook: Path, case_dir: Path, state_dir: Path):
    """Voila (workbench's offline template, token from a 0600 file) serving only ``notebook``."""
    from workbench.teach import prepare_template, voila_command, voila_environment
    from workbench.widgets.cli import free_port

    app_dir = state_dir / "app"
    app_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(notebook, app_dir / notebook.name)
    token = secrets.token_hex(16)
    token_file = state_dir / "token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    template_root = prepare_template(state_dir / "jupyter-data", "")
    env = voila_environment(case_dir, token_file, template_root=template_root)
    env["JUPYTER_CONFIG_DIR"] = str(state_dir / "jupyter-config")
    port = free_port()
    log_path = state_dir / "voila.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(voila_command(app_dir, port), cwd=app_dir, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", token, log_path)
    try:
        _wait_http(server.url("/"), process, log_path, 90)
        yield server
    finally:
        _stop(process)


def test_notebook_06_plots_render_in_voila(browser, page_and_log, results_dir, tmp_path):
    from workbench.phantom.democase import default_demo_case

    case_dir = tmp_path / "case"
    shutil.copytree(default_demo_case(), case_dir)
    page, log = page_and_log
    with _voila_on(REPO / "notebooks" / NOTEBOOK, case_dir, results_dir / "tuning-voila-state") as server:
        page.goto(server.url(f"/voila/render/{NOTEBOOK}"), wait_until="domcontentloaded", timeout=PLOTS_READY_MS)
        _check_plots(page, results_dir, "voila")
    assert not log.foreign(), f"the page requested non-local URLs: {log.foreign()}"
