"""Slice-viewer and path-view models (no kernel): orientation letters, scale bar, presets, cursor,
label placement, the planned path's projections and the plan panel's stale-suggestion fix."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from workbench.widgets._ui import place_labels
from workbench.widgets.slices import PRESETS, SliceModel, direction_letters, nice_scale_bar_mm


def _image(direction=None, spacing=(0.8, 1.2, 2.5), size_kji=(20, 30, 40), seed=1) -> sitk.Image:
    direction = np.eye(3) if direction is None else direction
    rng = np.random.default_rng(seed)
    image = sitk.GetImageFromArray(rng.integers(0, 1000, size=size_kji).astype(np.float32))
    image.SetDirection(np.asarray(direction, dtype=float).ravel().tolist())
    image.SetSpacing(spacing)
    image.SetOrigin((-10.0, 20.0, 5.0))
    return image


RADIOLOGICAL = {
    "axial": {"left": "R", "right": "L", "top": "A", "bottom": "P"},
    "coronal": {"left": "R", "right": "L", "top": "S", "bottom": "I"},
    "sagittal": {"left": "A", "right": "P", "top": "S", "bottom": "I"},
}


@pytest.mark.parametrize("orientation", ["axial", "coronal", "sagittal"])
def test_orientation_letters_of_an_lps_and_a_flipped_volume(orientation):
    # LPS-stored and RAS-stored (i toward R, j toward A) volumes show the same radiological letters
    for direction in (np.eye(3), np.diag([-1.0, -1.0, 1.0])):
        model = SliceModel(_image(direction), orientation)
        assert model.side_letters() == RADIOLOGICAL[orientation]
        # and the letters agree with the LPS corners: the right side is where "right" points
        corners = model.corners_lps()
        towards_right = np.subtract(corners["top_right"], corners["top_left"])
        assert direction_letters(towards_right) == model.side_letters()["right"]


def test_orientation_letters_of_an_oblique_volume():
    angle = np.deg2rad(25.0)  # rotated 25 deg about S: the axial image's sides are oblique
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    model = SliceModel(_image(rotation), "axial")
    letters = model.side_letters()
    # columns along i = (cos 25, sin 25, 0): mostly L, then P (sin 25 = 0.42 >= 0.3); rows along
    # j = (-sin 25, cos 25, 0): mostly P, then R
    assert letters == {"left": "RA", "right": "LP", "top": "AL", "bottom": "PR"}
    assert direction_letters([np.cos(np.deg2rad(10)), np.sin(np.deg2rad(10)), 0.0]) == "L"  # 10 deg: one letter
    assert direction_letters([0.0, 0.0, -3.0]) == "I"


def test_scale_bar_length_in_pixels_is_mm_over_spacing():
    model = SliceModel(_image(spacing=(0.8, 1.2, 2.5)), "axial")  # columns along i: 0.8 mm pixels
    width_mm = model.extent_mm[0]
    assert width_mm == pytest.approx(40 * 0.8)
    bar = model.scale_bar()
    assert bar["length_mm"] == 5.0  # the longest step <= a quarter of 32 mm
    assert bar["length_px"] == pytest.approx(5.0 / 0.8)
    assert model.scale_bar(20.0)["length_px"] == pytest.approx(25.0)
    sagittal = SliceModel(_image(spacing=(0.8, 1.2, 2.5)), "sagittal")  # columns along j: 1.2 mm
    assert sagittal.scale_bar(30.0)["length_px"] == pytest.approx(25.0)
    assert nice_scale_bar_mm(420.0) == 100.0 and nice_scale_bar_mm(80.0) == 20.0 and nice_scale_bar_mm(3.0) == 5.0


def test_window_level_presets_from_the_histogram():
    values = np.zeros((10, 10, 10), dtype=np.float32)  # air, then a body of grey values 100..1099
    values[2:8, 2:8, 2:8] = np.arange(216, dtype=np.float32).reshape(6, 6, 6) * (1000.0 / 216) + 100.0
    image = sitk.GetImageFromArray(values)
    model = SliceModel(image, "axial")
    sample = values.ravel()  # 10 slices: every slice sampled
    low, high = np.percentile(sample, [1.0, 99.5])
    assert model.preset_window_level("T2 spine") == pytest.approx((high - low, (high + low) / 2))
    assert (model.window, model.level) == pytest.approx((high - low, (high + low) / 2))  # the default
    body = sample[sample > 0.1 * np.percentile(sample, 99.5)]
    low, high = np.percentile(body, [5.0, 95.0])
    assert model.preset_window_level("soft tissue") == pytest.approx((high - low, (high + low) / 2))
    assert model.preset_window_level("full range") == pytest.approx((sample.max(), sample.max() / 2))
    model.apply_preset("soft tissue")
    assert (model.window, model.level) == pytest.approx(((high - low), (high + low) / 2))
    assert set(PRESETS) == {"T2 spine", "soft tissue", "full range"}
    from workbench.widgets.session import WidgetError

    with pytest.raises(WidgetError, match="preset"):
        model.apply_preset("bone")


def test_switching_views_keeps_the_cursor():
    image = _image(np.diag([-1.0, 1.0, 1.0]))
    model = SliceModel(image, "axial")
    point = np.array(image.TransformIndexToPhysicalPoint((7, 11, 13)), dtype=float)  # voxel (i, j, k)
    model.set_cursor(point)
    assert model.index == 13
    model.set_orientation("sagittal")
    assert model.index == 7  # the sagittal slice through the point (i = 7)
    model.set_index(9)  # scrolling moves the cursor along the normal only
    assert np.allclose(model.cursor_lps, image.TransformIndexToPhysicalPoint((9, 11, 13)))
    model.set_orientation("coronal")
    assert model.index == 11
    model.set_orientation("axial")
    assert model.index == 13  # back where it was: switching never resets the slice


def test_labels_are_placed_without_overlap():
    anchors = np.array([[100.0, 50.0], [102.0, 52.0], [98.0, 49.0], [300.0, 50.0], [590.0, 100.0]])
    sizes = np.array([[120.0, 14.0]] * 5)
    boxes = place_labels(anchors, sizes, (600, 200))
    for a in range(len(boxes)):
        for b in range(a + 1, len(boxes)):
            xa, ya, wa, ha = boxes[a]
            xb, yb, wb, hb = boxes[b]
            assert xa + wa <= xb or xb + wb <= xa or ya + ha <= yb or yb + hb <= ya, (a, b, boxes)
    assert np.all(boxes[:, 0] >= 0) and np.all(boxes[:, 0] + boxes[:, 2] <= 600)
    assert boxes[4, 0] + boxes[4, 2] <= 590  # no room on the right: the label goes left of its point
    assert abs(boxes[3, 1] + 7 - 50) < 1e-9  # a lone label stays centred on its point


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    pytest.importorskip("ipywidgets")
    from workbench.widgets.session import CaseSession, case_registration, demo_working_copy

    session = CaseSession(demo_working_copy(tmp_path_factory.mktemp("viewer-models") / "case"))
    return session, case_registration(session).transform


def test_path_projections_put_entry_and_target_where_they_are(demo):
    from workbench.planning.model import Trajectory
    from workbench.equipment import NEEDLE_CATALOGUE
    from workbench.widgets.path_view import PIXEL_MM, PathViewModel, needle_plane_axes

    session, _ = demo
    model = PathViewModel(session.mri)
    target = np.array([26.0, 21.0, -10.0])
    entry = target + np.array([15.0, 70.0, 4.0])
    trajectory = Trajectory(name="t", structure="s", target_lps_mm=target, entry_lps_mm=entry,
                            needle=next(iter(NEEDLE_CATALOGUE.values())))
    plane = model.needle_plane(trajectory)
    columns, rows = needle_plane_axes(entry, target)
    assert abs(columns @ rows) < 1e-12 and columns[2] > 0.9  # columns toward superior, rows along the needle
    # the path lies in the needle plane along a column: entry above the target by the depth
    depth_px = np.linalg.norm(target - entry) / PIXEL_MM
    assert plane.entry_px[0] == pytest.approx(plane.target_px[0], abs=1e-9)
    assert plane.target_px[1] - plane.entry_px[1] == pytest.approx(depth_px, abs=1e-9)
    assert plane.letters["top"] == "P" and plane.letters["right"][0] == "S"
    size = plane.rgb.shape[0]
    assert 0 <= plane.entry_px[1] < size and 0 <= plane.target_px[1] < size  # both on the image
    # the axial view through the target: the target's pixel holds the MRI value at the target
    axial = model.axial_at_target(trajectory)
    col, row = (int(round(v)) for v in axial.target_px)
    assert axial.letters == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    ijk = np.array(session.mri.image.TransformPhysicalPointToContinuousIndex(target.tolist()))
    from scipy.ndimage import map_coordinates

    expected = map_coordinates(model.voxels, ijk[::-1, None], order=1)[0]
    from workbench.widgets.slices import window_to_uint8

    assert abs(int(axial.rgb[row, col, 0]) - int(window_to_uint8(np.array([expected]), model.window, model.level)[0])) <= 2
    # the entry is 15 mm left and 70 mm posterior of the target: right of it and below on screen
    assert axial.entry_px - axial.target_px == pytest.approx(np.array([15.0, 70.0]) / PIXEL_MM, abs=1e-9)


def test_fused_path_view_only_where_a_sweep_covers_the_target(demo):
    from workbench.widgets.fusion import FusionModel, blend
    from workbench.widgets.path_view import COVER_DISTANCE_MM, PathViewModel
    from workbench.widgets.plan import PlanModel

    session, transform = demo
    fusion = FusionModel.from_session(session, transform)
    model = PathViewModel(session.mri, fusion)
    plan = PlanModel(session, transform)
    covered, uncovered = [], []
    for target in plan.targets():
        trajectory = plan.trajectory(target)
        (covered if model.covering_frame(trajectory.target_lps_mm) else uncovered).append(trajectory)
    assert covered and uncovered  # the demo sweep covers some nerve roots, not all
    view = model.fused(covered[0])
    frame, distance = model.covering_frame(covered[0].target_lps_mm)
    assert abs(distance) <= COVER_DISTANCE_MM and view.caption.startswith(f"frame {frame}")
    # a real 50/50 blend of the frame and the MRI on it, not the MRI alone
    from workbench.widgets.slices import window_to_uint8

    mri_u8 = window_to_uint8(fusion.mri_on_frame(frame), fusion.mri_window, fusion.mri_level)
    assert np.array_equal(view.rgb[..., 0], blend(mri_u8, fusion.images[frame], 50.0))
    assert not np.array_equal(view.rgb[..., 0], mri_u8)
    # the target projects onto the frame where the frame maps back to it (within the plane distance)
    back = fusion.image_to_mri(frame) @ np.array([*view.target_px, 0.0, 1.0])
    assert np.linalg.norm(back[:3] - np.asarray(covered[0].target_lps_mm)) <= abs(distance) + 1e-6
    missing = model.fused(uncovered[0])
    assert missing.rgb is None and missing.caption == "no sweep covers this target"


def test_changing_the_target_drops_the_previous_suggestion_and_links(demo, tmp_path):
    from workbench.widgets.path_view import PathView
    from workbench.widgets.plan import PlanModel, PlanPanel

    session, transform = demo
    panel = PlanPanel(PlanModel(session, transform), out_dir=tmp_path)
    view = PathView(panel)
    first = panel.target.value
    panel.suggest()
    panel.suggestions.value = 0
    taken = np.asarray(panel._suggested[0].trajectory.entry_lps_mm)
    assert np.allclose(panel.current().entry_lps_mm, taken)
    panel.export()
    assert first.split(" exiting")[0].replace(" ", "-") in panel.links.value
    drawn = json.loads(view.hook.value)
    assert np.allclose(drawn["entry_lps"], taken, atol=1e-3)  # the path view follows the suggestion

    panel.target.value = panel.target.options[1]
    second = panel.current()
    assert panel.suggestions.value is None and list(panel.suggestions.options) == []
    assert panel.links.value == ""  # no link to the previous target's export
    assert not np.allclose(second.entry_lps_mm, taken)  # the previous target's entry is not kept
    assert np.allclose(second.target_lps_mm, panel.model.points.get(panel.target.value).point_lps)
    drawn = json.loads(view.hook.value)
    assert drawn["trajectory"] == second.name and np.allclose(drawn["target_lps"], second.target_lps_mm, atol=1e-3)
    files = panel.export()
    assert all(second.name.replace(" ", "-") in str(f.parent.name) for f in files)

    # choosing another entry for the same target un-takes the suggestion (the list stays)
    panel.suggest()
    panel.suggestions.value = 1
    if len(panel.entry.options) > 1:
        panel.entry.value = panel.entry.options[0]
        assert panel.suggestions.value == -1 and panel._custom_entry is None


def test_registration_metric_plot_is_a_png_of_its_full_size_with_the_trace(demo):
    import io

    from PIL import Image

    from workbench.widgets._plots import png_size
    from workbench.widgets.registration import RegistrationPanel

    session, _ = demo
    panel = RegistrationPanel(session)
    assert png_size(panel.plot.widget.value) == (560, 300)  # drawn (empty axes) before any run
    assert panel.plot.widget.layout.width == "560px" and panel.plot.widget.layout.height == "300px"
    trace = np.array([4.0, 3.1, 2.6, 2.4, 2.35])
    panel._on_progress(0.5, trace, "stage 2 of 3")
    png = panel.plot.widget.value
    assert png_size(png) == (560, 300)
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    blue = (rgb[..., 2] > 120) & (rgb[..., 2] - rgb[..., 0] > 60)
    assert blue.sum() > 100  # the trace (matplotlib blue) is drawn
    # its points lie where the data are: the first (highest) point is left of and above the last
    rows, cols = np.nonzero(blue)
    assert rows[np.argmin(cols)] < rows[np.argmax(cols)]
    with pytest.raises(ValueError):
        png_size(b"GIF89a")
