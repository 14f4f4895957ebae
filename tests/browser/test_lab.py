"""JupyterLab in headless Chromium: place a landmark by clicking notebook 02's MRI slice, and
look at the fused view (notebook 03) and the 3D scene (notebook 05).

Each test fails if the page requested anything but the local server (the workbench works
offline, and no page may phone a CDN).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ._harness import BLANK_VARIANCE, merge_result
from ._pages import (
    CLICK_FRACTION,
    TIMING_FRACTIONS,
    click_slice,
    run_all_in_lab,
    screenshot_not_blank,
    voxel_extent_lps,
    wait_case_holds,
    wait_for_class,
)

pytestmark = pytest.mark.browser

#: The issue's target for click-to-landmark in the browser; recorded, never asserted (timing
#: on 2 shared cores is no pass/fail criterion; see docs/browser-tests.md).
ROUND_TRIP_TARGET_MS = 150.0


def record_round_trip(results_dir, app: str, clicks: list, extra: dict | None = None) -> None:
    """Merge this app's click-to-landmark round trips into ``round_trip.json`` and print them."""
    times_ms = [round(c.round_trip_ms, 1) for c in clicks if not math.isnan(c.round_trip_ms)]
    report = {
        "round_trip_ms": times_ms,
        "first_ms": times_ms[0] if times_ms else None,
        "median_ms": float(np.median(times_ms)) if times_ms else None,
        "target_ms": ROUND_TRIP_TARGET_MS,
        "clicked_lps_mm": [[round(v, 3) for v in c.expected_lps.tolist()] for c in clicks],
        "placed_lps_mm": [[round(v, 3) for v in c.point_lps.tolist()] for c in clicks],
        **(extra or {}),
    }
    merge_result(results_dir / "round_trip.json", app, report)
    print(f"{app}: click-to-landmark round trip {times_ms} ms, median {report['median_ms']} ms (target {ROUND_TRIP_TARGET_MS:.0f} ms)")


def check_not_blank(locator, results_dir, name: str) -> float:
    """Screenshot a viewer into ``<name>.png``; record its grey variance in ``viewers.json``; fail if blank."""
    variance = screenshot_not_blank(locator, results_dir / f"{name}.png")
    merge_result(results_dir / "viewers.json", name, {"grey_variance": round(variance, 1), "blank_below": BLANK_VARIANCE})
    print(f"{name}: central grey variance {variance:.1f} (blank below {BLANK_VARIANCE})")
    assert variance >= BLANK_VARIANCE, f"{name} is blank (central grey variance {variance:.1f} < {BLANK_VARIANCE})"
    return variance


def check_click(page, case_dir, results_dir, app: str) -> None:
    """Click the slice; the kernel's point is the clicked LPS within one voxel and is autosaved.

    Four more clicks time the round trip again (each is checked the same way).
    """
    voxel_mm = voxel_extent_lps(case_dir)
    clicks, errors_mm = [], []
    for fraction in (CLICK_FRACTION, *TIMING_FRACTIONS):
        click = click_slice(page, fraction)
        error_mm = np.abs(click.point_lps - click.expected_lps)
        assert np.all(error_mm <= voxel_mm + 1e-6), (
            f"clicked {click.expected_lps.round(2).tolist()} mm LPS, kernel placed {click.point_lps.round(2).tolist()} "
            f"(error {error_mm.round(2).tolist()} mm, one voxel {voxel_mm.round(2).tolist()} mm)"
        )
        assert click.last_point["kind"] in ("landmark", "target", "entry"), click.last_point
        assert int(click.last_point["count"]) == click.count_before + 1, click.last_point
        wait_case_holds(case_dir, click.last_point["name"], click.point_lps)
        clicks.append(click)
        errors_mm.append(error_mm.round(3).tolist())
    page.locator(".wb-landmark-editor").first.screenshot(path=str(results_dir / f"{app}-landmark-editor.png"))
    record_round_trip(results_dir, app, clicks, {"error_mm": errors_mm, "voxel_mm": voxel_mm.round(3).tolist()})


def test_click_on_the_mri_slice_places_a_landmark_in_the_kernel_and_the_case(lab, lab_case, page_and_log, results_dir):
    page, log = page_and_log
    try:
        run_all_in_lab(page, lab, "02_landmarks_targets.ipynb")
        check_click(page, lab_case, results_dir, "jupyterlab")
        check_not_blank(page.locator(".wb-slice-view").first, results_dir, "jupyterlab-slice-view")
    finally:
        lab.shutdown_kernels()
    assert not log.foreign(), f"the page requested non-local URLs: {log.foreign()}"


@pytest.mark.parametrize(
    ("notebook", "css_class", "name"),
    [
        ("03_register_sweep.ipynb", "wb-fused-view", "fused-view"),
        ("05_scene_3d.ipynb", "wb-scene-3d", "scene-3d"),
    ],
)
def test_viewer_is_not_blank_after_run_all(lab, page_and_log, results_dir, notebook, css_class, name):
    page, log = page_and_log
    try:
        run_all_in_lab(page, lab, notebook)
        viewer = wait_for_class(page, css_class)
        check_not_blank(viewer, results_dir, f"jupyterlab-{name}")
    finally:
        lab.shutdown_kernels()
    assert not log.foreign(), f"the page requested non-local URLs: {log.foreign()}"
