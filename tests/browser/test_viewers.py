"""What the clinician sees, checked by pixels in a real browser (issue 17).

- notebook 03: the registration's metric plot is an image larger than 200 x 150 px with the
  metric trace drawn on it (blue line pixels), in JupyterLab and in the Voila app;
- notebook 04: the planned path is drawn (cyan pixels all along the projected line between the
  entry and the target) on every view that has an image, and follows a change of target;
- notebook 02: the slice viewer shows orientation letters (yellow pixels at the sides), its canvas
  has the slice's physical aspect after a view switch, switching views keeps the slice, the JSON
  test hooks are not visible and no button label is cut.

Screenshots go to the test's tmp dir (and ``results_dir``); the paths are printed.
"""

from __future__ import annotations

import io
import shutil
import time

import numpy as np
import pytest

from ._harness import merge_result
from ._pages import open_in_voila, run_all_in_lab, wait_for_class, widget_json

pytestmark = pytest.mark.browser

#: Smallest plot an eye can read on a 1400 px wide page.
MIN_PLOT_PX = (200, 150)
#: Notebook 03 refines with bone ICP after "Run All": minutes on 2 shared cores.
REGISTRATION_MS = 420_000


def _rgb(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def _shot(locator, name: str, tmp_path, results_dir) -> np.ndarray:
    path = tmp_path / f"{name}.png"
    png = locator.screenshot(path=str(path), animations="disabled")
    shutil.copy2(path, results_dir / f"{name}.png")
    print(f"screenshot: {path}")
    return _rgb(png)


def _trace_pixels(rgb: np.ndarray) -> int:
    """Pixels of the metric trace (matplotlib blue #1f77b4 and its anti-aliased edges)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return int(np.sum((b > 120) & (b - r > 60) & (b - g > 20)))


def _check_metric_plot(page, tmp_path, results_dir, name: str) -> dict:
    plot = wait_for_class(page, "wb-metric-plot", timeout_ms=REGISTRATION_MS)
    plot.scroll_into_view_if_needed()
    deadline = time.monotonic() + REGISTRATION_MS / 1000
    while True:  # the trace appears once the refinement has reported a stage
        rgb = _shot(plot, name, tmp_path, results_dir)
        if _trace_pixels(rgb) >= 60 or time.monotonic() > deadline:
            break
        time.sleep(3.0)
    box = plot.bounding_box()
    natural = plot.evaluate("(el) => [el.naturalWidth, el.naturalHeight]")
    white = np.all(rgb > 245, axis=2).mean()
    result = {"css_px": [box["width"], box["height"]], "png_px": natural, "trace_pixels": _trace_pixels(rgb),
              "white_fraction": round(float(white), 3)}
    merge_result(results_dir / "viewers.json", name, result)
    print(f"{name}: {result}")
    assert box["width"] > MIN_PLOT_PX[0] and box["height"] > MIN_PLOT_PX[1], result
    assert natural[0] > MIN_PLOT_PX[0] and natural[1] > MIN_PLOT_PX[1], result
    assert result["trace_pixels"] >= 60, f"no metric trace drawn on the plot: {result}"
    assert white < 0.97, f"the plot is blank: {result}"  # axes, ticks, labels and the trace
    return result


def _cyan(patch: np.ndarray) -> bool:
    r, g, b = patch[..., 0], patch[..., 1], patch[..., 2]
    return bool(np.any((b > 170) & (g > 140) & (r < 120)))


def _path_geometry(page, name: str | None = None, timeout_s: float = 240.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        geometry = widget_json(page, "wb-path-geometry")
        if geometry.get("views") and (name is None or geometry.get("trajectory") == name):
            return geometry
        if time.monotonic() > deadline:
            raise AssertionError(f"wb-path-geometry never held the path of {name!r} (last: {geometry!r})")
        time.sleep(0.5)


def _check_path_drawn(page, tmp_path, results_dir, name: str, trajectory: str | None = None) -> dict:
    """Cyan pixels along the projected entry-target line on every view with an image."""
    image = wait_for_class(page, "wb-path-image")
    image.scroll_into_view_if_needed()
    geometry = _path_geometry(page, trajectory)
    deadline = time.monotonic() + 60.0
    while True:  # the PNG may arrive a moment after the hook
        rgb = _shot(image, name, tmp_path, results_dir)
        scale_x = rgb.shape[1] / geometry["png_px"][0]
        scale_y = rgb.shape[0] / geometry["png_px"][1]
        report = {}
        for view in geometry["views"]:
            if not view["has_image"]:
                report[view["title"]] = {"caption": view["caption"]}
                continue
            entry, target = np.array(view["entry_px"]), np.array(view["target_px"])
            x0, y0, x1, y1 = view["axes_px"]
            hits, samples = 0, 0
            for t in np.linspace(0.1, 0.9, 9):
                x, y = entry + t * (target - entry)
                if not (x0 + 3 <= x <= x1 - 3 and y0 + 3 <= y <= y1 - 3):
                    continue  # that part of the path lies outside the image (clipped)
                u, v = int(round(x * scale_x)), int(round(y * scale_y))
                samples += 1
                hits += _cyan(rgb[max(v - 3, 0):v + 4, max(u - 3, 0):u + 4])
            report[view["title"]] = {"samples": samples, "cyan_hits": hits}
        drawn = all(r.get("samples", 1) >= 4 and r.get("cyan_hits", 0) >= r.get("samples", 0) - 1
                    for r in report.values() if "samples" in r)
        if drawn or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    merge_result(results_dir / "viewers.json", name, {"trajectory": geometry["trajectory"], "views": report})
    print(f"{name}: {geometry['trajectory']}: {report}")
    with_image = [r for r in report.values() if "samples" in r]
    assert len(with_image) >= 2, report  # the needle plane and the axial MRI at least
    for title, r in report.items():
        if "samples" in r:
            assert r["samples"] >= 4 and r["cyan_hits"] >= r["samples"] - 1, f"path not drawn on {title}: {r}"
        else:  # no fused image: the view says why instead of showing one
            assert r["caption"] in ("no sweep covers this target", "no registered sweep loaded: no fused view"), r
    return geometry


def test_lab_registration_metric_plot_is_a_real_image(lab, page_and_log, tmp_path, results_dir):
    page, log = page_and_log
    try:
        run_all_in_lab(page, lab, "03_register_sweep.ipynb")
        _check_metric_plot(page, tmp_path, results_dir, "jupyterlab-metric-plot")
    finally:
        lab.shutdown_kernels()
    assert not log.foreign(), f"the page requested non-local URLs: {log.foreign()}"


def _wait_kernel_idle(page, timeout_ms: int = REGISTRATION_MS) -> None:
    """Wait until JupyterLab's current notebook has run every cell (its kernel is idle again)."""
    page.wait_for_function(
        """() => {
            const panel = window.jupyterapp.shell.currentWidget;
            const kernel = panel && panel.sessionContext && panel.sessionContext.session
                && panel.sessionContext.session.kernel;
            const running = panel && panel.content && panel.content.widgets.some(
                (cell) => cell.model.type === 'code' && cell.promptNode && cell.promptNode.innerText.includes('*'));
            return !!kernel && kernel.status === 'idle' && !running;
        }""",
        timeout=timeout_ms,
    )


def test_lab_plan_draws_the_path_and_follows_the_target(lab, page_and_log, tmp_path, results_dir):
    page, log = page_and_log
    try:
        run_all_in_lab(page, lab, "04_plan_export.ipynb")
        first = _check_path_drawn(page, tmp_path, results_dir, "jupyterlab-plan-path")
        _wait_kernel_idle(page)  # the last cells (suggestions, export) have run
        # choose another target in the panel: the path is redrawn for it, the old suggestion dropped
        select = page.locator(".wb-plan-panel select").first
        options = [o.replace("\xa0", " ") for o in select.locator("option").all_inner_texts()]  # ipywidgets: nbsp
        index, other = next((i, o) for i, o in enumerate(options) if not o.startswith(first["trajectory"] + " "))
        select.select_option(index=index)
        second = _check_path_drawn(page, tmp_path, results_dir, "jupyterlab-plan-path-2",
                                   trajectory=other.split(" exiting")[0][:60])
        assert second["target_lps"] != first["target_lps"]
        use = page.locator(".wb-plan-panel select").nth(3)  # the suggestions list ("use")
        assert use.locator("option").count() == 0, "the previous target's suggestions are still offered"
    finally:
        lab.shutdown_kernels()
    assert not log.foreign(), f"the page requested non-local URLs: {log.foreign()}"


_CUT_BUTTONS = """() => Array.from(document.querySelectorAll('.jp-OutputArea-output button, .jp-OutputArea-output .widget-toggle-button'))
    .filter((b) => b.offsetParent !== null && b.scrollWidth > b.clientWidth + 1)
    .map((b) => b.innerText.trim() + ' (' + b.scrollWidth + ' > ' + b.clientWidth + ')')"""


def _yellow(rgb: np.ndarray) -> np.ndarray:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return (r > 200) & (g > 170) & (b < 150)


RADIOLOGICAL = {
    "axial": {"left": "R", "right": "L", "top": "A", "bottom": "P"},
    "coronal": {"left": "R", "right": "L", "top": "S", "bottom": "I"},
    "sagittal": {"left": "A", "right": "P", "top": "S", "bottom": "I"},
}


def _largest_canvas(view) -> dict:
    """Bounding box of the largest visible canvas in ``view`` (ipympl stacks a few; the image is the largest)."""
    return max((c.bounding_box() for c in view.locator("canvas").all() if c.is_visible()),
               key=lambda b: b["width"] * b["height"])


def _wait_view(page, orientation: str | None, timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        geometry = widget_json(page, "wb-view-geometry")
        if geometry.get("letters") and geometry.get("orientation") == (orientation or geometry.get("orientation")):
            return geometry
        if time.monotonic() > deadline:
            raise AssertionError(f"the view never switched to {orientation} (last: {geometry!r})")
        time.sleep(0.3)


def test_lab_slice_viewer_letters_aspect_view_switch_hooks_and_buttons(lab, page_and_log, tmp_path, results_dir):
    page, log = page_and_log
    try:
        run_all_in_lab(page, lab, "02_landmarks_targets.ipynb")
        editor = wait_for_class(page, "wb-landmark-editor")
        first = _wait_view(page, None, timeout_s=180.0)  # the view the notebook opens with
        assert first["letters"] == RADIOLOGICAL[first["orientation"]], first
        other = "sagittal" if first["orientation"] != "sagittal" else "axial"
        # the JSON hooks are in the DOM for tests, not on the screen
        assert not page.locator(".wb-view-geometry").first.is_visible()
        assert not page.locator(".wb-last-point").first.is_visible()
        shown = page.evaluate("() => Array.from(document.querySelectorAll('.jp-OutputArea')).map((o) => o.innerText).join('\\n')")
        assert '"canvas_px"' not in shown and '"point_lps"' not in shown, "a raw JSON hook is visible"
        assert '"canvas_px"' in page.locator(".wb-view-geometry").first.inner_text()  # still readable by a test
        cut = page.evaluate(_CUT_BUTTONS)
        assert not cut, f"button labels cut: {cut}"

        view = page.locator(".wb-landmark-editor .wb-slice-view").first
        view.scroll_into_view_if_needed()
        time.sleep(1.0)
        rgb = _shot(view, f"jupyterlab-viewer-{first['orientation']}", tmp_path, results_dir)
        outer, canvas = view.bounding_box(), _largest_canvas(view)
        left, top = int(round(canvas["x"] - outer["x"])), int(round(canvas["y"] - outer["y"]))
        rgb = rgb[top:top + int(canvas["height"]), left:left + int(canvas["width"])]  # the canvas only
        width = rgb.shape[1]
        strip = max(int(0.06 * width), 8)
        assert _yellow(rgb[:, :strip]).sum() >= 8 and _yellow(rgb[:, -strip:]).sum() >= 8, "no R/L letters at the sides"

        # switch to another view and back: the canvas takes the slice's aspect, the slice is kept
        buttons = editor.locator(".wb-mpr-viewer .widget-toggle-buttons").first
        buttons.get_by_role("button", name=other, exact=True).click()
        sagittal = _wait_view(page, other)
        assert sagittal["letters"] == RADIOLOGICAL[other], sagittal["letters"]
        deadline = time.monotonic() + 30.0
        while True:  # the browser resizes the canvas when the kernel's figure changes size
            canvas = _largest_canvas(view)
            want = sagittal["canvas_px"][0] / sagittal["canvas_px"][1]
            if abs(canvas["width"] / canvas["height"] - want) < 0.05 * want or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert abs(canvas["width"] / canvas["height"] - want) < 0.05 * want, (canvas, sagittal["canvas_px"])
        _shot(view, f"jupyterlab-viewer-{other}", tmp_path, results_dir)
        buttons.get_by_role("button", name=first["orientation"], exact=True).click()
        back = _wait_view(page, first["orientation"])
        assert back["slice_index"] == first["slice_index"], (first["slice_index"], back["slice_index"])

        # a window/level preset changes the window
        editor.locator(".wb-mpr-viewer select").first.select_option(label="soft tissue")
        deadline = time.monotonic() + 30.0
        while widget_json(page, "wb-view-geometry").get("window") == first["window"] and time.monotonic() < deadline:
            time.sleep(0.3)
        assert widget_json(page, "wb-view-geometry")["window"] != first["window"]
        merge_result(results_dir / "viewers.json", "jupyterlab-viewer", {
            "letters": first["letters"], "scale_bar": first["scale_bar"], f"canvas_px_{first['orientation']}": first["canvas_px"],
            f"canvas_px_{other}": sagittal["canvas_px"], "slice_kept": back["slice_index"]})
    finally:
        lab.shutdown_kernels()
    assert not log.foreign(), f"the page requested non-local URLs: {log.foreign()}"


def test_voila_registration_plot_and_plan_path(teach, page_and_log, tmp_path, results_dir):
    page, log = page_and_log
    open_in_voila(page, teach, "03_register_sweep.ipynb")
    _check_metric_plot(page, tmp_path, results_dir, "voila-metric-plot")
    open_in_voila(page, teach, "04_plan_export.ipynb")
    _check_path_drawn(page, tmp_path, results_dir, "voila-plan-path")
    assert not log.foreign(), f"the Voila pages requested non-local URLs: {log.foreign()}"
