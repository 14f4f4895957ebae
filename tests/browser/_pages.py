"""What a person does in the page: run a notebook, click the MRI slice, look at a viewer.

The DOM hooks are those of the issue-7 contract (see docs/browser-tests.md): the editor's root
has class ``wb-landmark-editor``, its ipympl slice canvas sits inside ``wb-slice-view``, and two
HTML widgets carry JSON: ``wb-view-geometry`` (canvas/axes pixels and the LPS corners of the
displayed image) and ``wb-last-point`` (the last point the kernel placed).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._harness import BLANK_VARIANCE, Server, canvas_to_lps, grey_variance

#: Where in the axes the test clicks, as fractions of the axes width and height (off-centre, so
#: a swapped or mirrored axis cannot map the click onto itself).
CLICK_FRACTION = (0.41, 0.57)

#: Further clicks that time the round trip again once the first one warmed the path up.
TIMING_FRACTIONS = ((0.45, 0.50), (0.55, 0.47), (0.38, 0.62), (0.60, 0.58))

#: Generous limits: a cold kernel imports workbench, loads the MRI and draws on 2 shared cores.
NOTEBOOK_READY_MS = 180_000
LANDMARK_MS = 30_000


def widget_json(page, css_class: str) -> dict:
    """The JSON text shown by the HTML widget with ``css_class`` (``{}`` while it is empty)."""
    text = page.locator(f".{css_class}").first.inner_text().strip()
    start, end = text.find("{"), text.rfind("}")
    return json.loads(text[start : end + 1]) if start >= 0 and end > start else {}


def run_all_in_lab(page, server: Server, notebook: str) -> None:
    """Open ``notebook`` in JupyterLab, wait for its kernel, then run the command "Run All Cells".

    ``?reset`` starts from an empty workspace: otherwise JupyterLab reopens the notebooks of the
    previous test beside this one, each with a kernel, and "Run All" may land in the wrong tab.
    """
    page.goto(server.url(f"/lab/tree/{notebook}?reset"), wait_until="domcontentloaded")
    page.wait_for_function(
        """() => {
            const app = window.jupyterapp;
            const panel = app && app.shell && app.shell.currentWidget;
            const kernel = panel && panel.sessionContext && panel.sessionContext.session
                && panel.sessionContext.session.kernel;
            return !!(kernel && kernel.connectionStatus === 'connected' && kernel.status === 'idle'
                && panel.content && panel.content.widgets.length > 0);
        }""",
        timeout=90_000,
    )
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")


def open_in_voila(page, server: Server, notebook: str) -> None:
    """Open the Voila-rendered ``notebook`` (Voila runs it while the page streams in)."""
    page.goto(server.url(f"/voila/render/{notebook}"), wait_until="domcontentloaded", timeout=NOTEBOOK_READY_MS)


def wait_for_class(page, css_class: str, timeout_ms: int = NOTEBOOK_READY_MS):
    """The first element with ``css_class`` once it is visible."""
    locator = page.locator(f".{css_class}").first
    locator.wait_for(state="visible", timeout=timeout_ms)
    return locator


def _slice_canvas(page):
    """The ipympl canvas the user clicks on: the topmost (largest, last) canvas of the slice view."""
    canvases = page.locator(".wb-landmark-editor .wb-slice-view canvas:visible")
    canvases.first.wait_for(state="visible", timeout=NOTEBOOK_READY_MS)
    best, best_area = None, -1.0
    for index in range(canvases.count()):
        box = canvases.nth(index).bounding_box()
        if box and box["width"] * box["height"] >= best_area:
            best, best_area = box, box["width"] * box["height"]
    return best


def _wait_geometry(page, timeout_ms: int = NOTEBOOK_READY_MS) -> dict:
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        geometry = widget_json(page, "wb-view-geometry")
        if geometry.get("axes_px") and geometry.get("corners_lps"):
            return geometry
        if time.monotonic() > deadline:
            raise AssertionError(f"wb-view-geometry never held a geometry (last: {geometry!r})")
        time.sleep(0.2)


_INSTALL_TIMER = """() => {
    const hook = document.querySelector('.wb-landmark-editor .wb-last-point');
    window.__wbClick = {downMs: null, changedMs: null};
    const down = () => { if (window.__wbClick.downMs === null) window.__wbClick.downMs = performance.now(); };
    document.addEventListener('pointerdown', down, true);
    document.addEventListener('mousedown', down, true);
    new MutationObserver(() => {
        if (window.__wbClick.downMs !== null && window.__wbClick.changedMs === null)
            window.__wbClick.changedMs = performance.now();
    }).observe(hook, {subtree: true, childList: true, characterData: true, attributes: true});
}"""


@dataclass(frozen=True)
class ClickResult:
    """A click on the slice and what the kernel made of it."""

    expected_lps: np.ndarray  # (3,) mm, from the geometry hook and the clicked pixel
    point_lps: np.ndarray  # (3,) mm, reported back in wb-last-point
    last_point: dict
    count_before: int
    round_trip_ms: float  # mousedown to the wb-last-point DOM update, measured in the page


def click_slice(page, fraction: tuple[float, float] = CLICK_FRACTION) -> ClickResult:
    """Left-click inside the axes of the slice view; wait for ``wb-last-point`` to change.

    ``fraction`` is the clicked position as fractions of the axes width and height.
    """
    wait_for_class(page, "wb-landmark-editor")
    geometry = _wait_geometry(page)
    page.locator(".wb-landmark-editor .wb-slice-view").first.scroll_into_view_if_needed()
    box = _slice_canvas(page)
    canvas_w, canvas_h = (float(v) for v in geometry["canvas_px"])
    scale_x, scale_y = box["width"] / canvas_w, box["height"] / canvas_h
    x0, y0, x1, y1 = (float(c) for c in geometry["axes_px"])
    # whole CSS pixels in the page (the mouse event lands exactly there), then back to canvas pixels
    page_x = round(box["x"] + (x0 + fraction[0] * (x1 - x0)) * scale_x)
    page_y = round(box["y"] + (y0 + fraction[1] * (y1 - y0)) * scale_y)
    u_px = (page_x - box["x"]) / scale_x
    v_px = (page_y - box["y"]) / scale_y
    expected = canvas_to_lps(geometry, u_px, v_px)

    before_text = page.locator(".wb-landmark-editor .wb-last-point").first.inner_text()
    before = widget_json(page, "wb-last-point")
    page.evaluate(_INSTALL_TIMER)
    page.mouse.click(page_x, page_y, button="left")
    page.wait_for_function(
        "(before) => { const el = document.querySelector('.wb-landmark-editor .wb-last-point');"
        " return el && el.innerText !== before && el.innerText.includes('point_lps'); }",
        arg=before_text,
        timeout=LANDMARK_MS,
    )
    timing = page.evaluate("() => window.__wbClick")
    last = widget_json(page, "wb-last-point")
    round_trip_ms = float(timing["changedMs"] - timing["downMs"]) if timing and timing.get("changedMs") else float("nan")
    return ClickResult(
        expected_lps=expected,
        point_lps=np.asarray(last["point_lps"], dtype=float),
        last_point=last,
        count_before=int(before.get("count", 0) or 0),
        round_trip_ms=round_trip_ms,
    )


def voxel_extent_lps(case_dir: Path) -> np.ndarray:
    """Extent (mm, shape (3,)) of one MRI voxel along L, P and S, from the case's MRI header."""
    import SimpleITK as sitk

    document = json.loads((case_dir / "case.json").read_text())
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(case_dir / document["mri"]["path"]))
    reader.ReadImageInformation()
    direction = np.asarray(reader.GetDirection(), dtype=float).reshape(3, 3)
    spacing_mm = np.asarray(reader.GetSpacing(), dtype=float)
    return np.abs(direction) @ spacing_mm


def _points_named(document, name: str):
    """Every 3-vector stored under a ``point*`` key of an object named ``name`` in case.json."""
    if isinstance(document, dict):
        if document.get("name") == name:
            for key, value in document.items():
                if key.startswith("point") and isinstance(value, list) and len(value) == 3:
                    yield np.asarray(value, dtype=float)
        for value in document.values():
            yield from _points_named(value, name)
    elif isinstance(document, list):
        for value in document:
            yield from _points_named(value, name)


def wait_case_holds(case_dir: Path, name: str, point_lps: np.ndarray, timeout_s: float = 10.0) -> np.ndarray:
    """Wait until ``case.json`` holds a point ``name`` at ``point_lps`` (autosave); return it."""
    deadline = time.monotonic() + timeout_s
    found: list[np.ndarray] = []
    while time.monotonic() < deadline:
        try:
            document = json.loads((case_dir / "case.json").read_text())
        except (OSError, ValueError):  # a non-atomic writer would show up here as a failure below
            document = {}
        found = list(_points_named(document, name))
        for point in found:
            if np.allclose(point, point_lps, atol=1e-3):
                return point
        time.sleep(0.2)
    raise AssertionError(f"{case_dir / 'case.json'} has no point {name!r} at {point_lps.tolist()} (found {found})")


def screenshot_not_blank(locator, path: Path, timeout_s: float = 90.0) -> float:
    """Screenshot ``locator`` into ``path`` until its central grey variance passes; return it.

    A viewer may still be drawing when its widget appears, so the check is retried until
    ``timeout_s``; the last screenshot is kept either way.
    """
    locator.wait_for(state="visible", timeout=int(timeout_s * 1000))
    locator.scroll_into_view_if_needed()
    deadline = time.monotonic() + timeout_s
    while True:
        png = locator.screenshot(path=str(path), animations="disabled")
        variance = grey_variance(png)
        if variance >= BLANK_VARIANCE or time.monotonic() > deadline:
            return variance
        time.sleep(1.0)
