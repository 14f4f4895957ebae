"""Widget models without a kernel: MPR slice <-> LPS mapping, point list edits and autosave, fusion maths."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from workbench.case import load_case
from workbench.errors import CaseBundleError
from workbench.frames import Transform
from workbench.widgets.fusion import FusionModel, blend, checkerboard, colour_overlay
from workbench.widgets.points import ENTRY_STRUCTURE, PointListModel
from workbench.widgets.session import CaseSession, WidgetError, demo_working_copy
from workbench.widgets.slices import ORIENTATIONS, SliceModel, window_to_uint8


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory):
    return demo_working_copy(tmp_path_factory.mktemp("widgets") / "case")


def _oblique_image() -> sitk.Image:
    rng = np.random.default_rng(3)
    image = sitk.GetImageFromArray(rng.integers(0, 1000, size=(7, 9, 11)).astype(np.float32))  # (k, j, i)
    angle = np.deg2rad(20.0)
    rotation = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    permuted = rotation @ np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=float)  # a coronal-slice acquisition
    image.SetDirection(permuted.ravel().tolist())
    image.SetSpacing((0.7, 1.3, 2.1))
    image.SetOrigin((-12.5, 40.25, 7.0))
    return image


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_slice_pixels_map_to_lps_as_simpleitk_does(orientation):
    image = _oblique_image()
    model = SliceModel(image, orientation, index=3)
    height, width = model.shape_px
    values = model.slice_values()
    for col, row in [(0, 0), (width - 1, 0), (0, height - 1), (2, 3), (width - 1, height - 1)]:
        ijk = model.pixel_to_ijk([col, row])
        assert np.allclose(ijk, np.rint(ijk)) and ijk[model.n_axis] == 3
        expected = image.TransformIndexToPhysicalPoint([int(v) for v in np.rint(ijk)])
        assert np.max(np.abs(model.pixel_to_lps([col, row]) - expected)) < 1e-6
        # the displayed pixel holds that voxel's value
        assert values[row, col] == image.GetPixel([int(v) for v in np.rint(ijk)])
    # continuous positions too, and the inverse mapping
    col_row = np.array([[1.37, 2.81], [-0.5, -0.5], [width - 0.5, height - 0.5]])
    points = model.pixel_to_lps(col_row)
    for (c, r), point in zip(col_row, points):
        expected = image.TransformContinuousIndexToPhysicalPoint(model.pixel_to_ijk([c, r]).tolist())
        assert np.max(np.abs(point - expected)) < 1e-6
    back, off_mm = model.lps_to_pixel(points)
    assert np.max(np.abs(back - col_row)) < 1e-9 and np.max(np.abs(off_mm)) < 1e-9


def test_views_are_radiological_on_the_demo_mri(case_dir):
    session = CaseSession(case_dir)
    for orientation, (right, down) in {"axial": (0, 1), "coronal": (0, 2), "sagittal": (1, 2)}.items():
        model = SliceModel(session.mri, orientation)
        corners = model.corners_lps()
        step_right = np.subtract(corners["top_right"], corners["top_left"])
        step_down = np.subtract(corners["bottom_left"], corners["top_left"])
        assert step_right[right] > 0  # L (axial, coronal) or P (sagittal) to the right
        assert (step_down[down] > 0) == (orientation == "axial")  # axial: P down; others: S up
        normal = np.cross(step_right, step_down)
        assert np.argmax(np.abs(normal)) == {"axial": 2, "coronal": 1, "sagittal": 0}[orientation]
    # the corners are voxel edges: half a voxel beyond the first and last voxel centres
    model = SliceModel(session.mri, "coronal", index=10)
    height, width = model.shape_px
    corners = model.corners_lps()
    centre = model.pixel_to_lps([0, 0])
    half_step = (model.pixel_to_lps([1, 1]) - centre) / 2
    assert np.allclose(corners["top_left"], centre - half_step, atol=1e-9)
    width_mm = np.linalg.norm(np.subtract(corners["top_right"], corners["top_left"]))
    height_mm = np.linalg.norm(np.subtract(corners["bottom_left"], corners["top_left"]))
    assert width_mm == pytest.approx(width * model.spacing_mm[model.u_axis], abs=1e-9)
    assert height_mm == pytest.approx(height * model.spacing_mm[model.v_axis], abs=1e-9)


def test_window_level_and_mip():
    values = np.array([0.0, 50.0, 100.0, 150.0, 200.0])
    assert window_to_uint8(values, window=100.0, level=100.0).tolist() == [0, 0, 128, 255, 255]
    image = _oblique_image()
    model = SliceModel(image, "axial", index=4)
    plain = model.slice_values()
    model.mip_slab_mm = float("inf")
    full = model.slice_values()
    array = sitk.GetArrayFromImage(image)
    assert full.max() == array.max() and np.all(full >= plain)
    model.mip_slab_mm = 3 * model.spacing_mm[model.n_axis]  # one slice each side
    slab = model.slice_values()
    manual = np.maximum.reduce([SliceModel(image, "axial", index=i).slice_values() for i in (3, 4, 5)])
    assert np.array_equal(slab, manual)


def test_place_move_rename_delete_undo_redo_autosave(case_dir):
    session = CaseSession(case_dir)
    model = PointListModel(session.case, session.folder)
    before = len(model.points)
    point = model.place("L3 left TP", "landmark", [12.25, -3.5, 40.125])
    assert point.point_lps == (12.25, -3.5, 40.125)
    target = model.place("root", "target", [20.0, 30.0, -10.0])
    entry = model.place("skin", "entry", [60.0, 80.0, -10.0])
    twin = model.place("root", "target", [21.0, 30.0, -10.0])
    assert twin.name == "root (2)" and len(model.points) == before + 4
    model.move("root", [22.5, 31.0, -9.75])
    model.rename("skin", "skin entry L3")
    model.delete("root (2)")
    reloaded = load_case(case_dir)
    landmark = next(mark for mark in reloaded.landmarks if mark.name == "L3 left TP")
    assert landmark.frame == "Mri" and landmark.point_mm == (12.25, -3.5, 40.125)
    assert next(t for t in reloaded.targets if t.name == "root").point_lps_mm == (22.5, 31.0, -9.75)
    assert next(t for t in reloaded.targets if t.name == "skin entry L3").structure == ENTRY_STRUCTURE
    assert "root (2)" not in [t.name for t in reloaded.targets]
    assert model.saved_count == 7 and model.save_error is None

    model.undo()  # the delete
    assert model.get("root (2)").point_lps == (21.0, 30.0, -10.0)
    model.undo()  # the rename
    assert "skin" in model.names("entry") and "skin entry L3" not in model.names()
    model.redo()
    assert "skin entry L3" in model.names("entry")
    assert "root (2)" in [t.name for t in load_case(case_dir).targets] and "skin entry L3" in [t.name for t in load_case(case_dir).targets]
    with pytest.raises(WidgetError, match="already named"):
        model.rename("root", "skin entry L3")

    # a fresh model reads the same list back: kinds and positions survive the bundle
    again = PointListModel(load_case(case_dir), case_dir)
    assert sorted((p.name, p.kind, p.point_lps) for p in again.points) == sorted((p.name, p.kind, p.point_lps) for p in model.points)
    # Reference landmarks are kept untouched
    assert [mark for mark in load_case(case_dir).landmarks if mark.frame == "Reference"] == [
        mark for mark in session.case.landmarks if mark.frame == "Reference"
    ]
    del target, entry


def test_a_failing_save_keeps_the_points_and_says_why(case_dir, tmp_path):
    session = CaseSession(case_dir)
    failures = []

    def failing_saver(case, folder):
        failures.append(len(case.targets))
        raise CaseBundleError("cannot write case.json (No space left on device)", folder / "case.json")

    model = PointListModel(session.case, session.folder, saver=failing_saver)
    text_before = (case_dir / "case.json").read_text()
    model.place("kept target", "target", [1.0, 2.0, 3.0])
    assert model.get("kept target").point_lps == (1.0, 2.0, 3.0)
    assert "No space left on device" in model.save_error and "case.json" in model.save_error
    assert (case_dir / "case.json").read_text() == text_before  # nothing half-written
    # the real saver refuses an identifying name: the list keeps it and the message names the problem
    real = PointListModel(session.case, session.folder)
    real.place("PatientName", "landmark", [0.0, 0.0, 0.0])
    assert real.get("PatientName").point_lps == (0.0, 0.0, 0.0)
    assert "PatientName" in real.save_error and "case.json" in real.save_error
    assert (case_dir / "case.json").read_text() == text_before
    # fixing the list saves it, with the earlier changes
    real.rename("PatientName", "spinous tip")
    assert real.save_error is None
    assert "spinous tip" in [mark.name for mark in load_case(case_dir).landmarks]


def test_blend_checkerboard_and_colour_maths():
    mri = np.array([[0, 100], [200, 255]], dtype=np.uint8)
    us = np.array([[255, 0], [100, 255]], dtype=np.uint8)
    assert np.array_equal(blend(mri, us, 0.0), mri)
    assert np.array_equal(blend(mri, us, 100.0), us)
    assert blend(mri, us, 50.0).tolist() == [[128, 50], [150, 255]]
    assert blend(mri, us, 25.0).tolist() == [[64, 75], [175, 255]]
    with pytest.raises(WidgetError):
        blend(mri, us, 101.0)
    big_mri, big_us = np.zeros((4, 4), np.uint8), np.full((4, 4), 9, np.uint8)
    board = checkerboard(big_mri, big_us, tile_px=2)
    assert board.tolist() == [[0, 0, 9, 9], [0, 0, 9, 9], [9, 9, 0, 0], [9, 9, 0, 0]]
    rgb = colour_overlay(mri, us, 50.0, threshold=30)
    assert rgb.shape == (2, 2, 3)
    assert rgb[0, 1].tolist() == [100, 100, 100]  # no echo: grey MRI
    assert rgb[0, 0].tolist() == [128, 70, 0]  # 0.5 * 0 + 0.5 * 255 * (1, 0.55, 0)


def test_fusion_plane_and_resampling_follow_the_transform_chain():
    image = sitk.GetImageFromArray(np.arange(20 * 30 * 40, dtype=np.float32).reshape(20, 30, 40))
    image.SetSpacing((1.0, 1.5, 2.0))
    image.SetOrigin((-10.0, -20.0, -5.0))
    images = np.zeros((3, 8, 10), np.uint8)
    probe_to_reference = np.repeat(np.eye(4)[None], 3, axis=0)
    probe_to_reference[1, :3, 3] = [2.0, 3.0, 4.0]
    image_to_probe = Transform.from_name("ImageToProbe", np.diag([0.5, 0.5, 0.5, 1.0]))
    reference_to_mri = Transform.from_name("ReferenceToMri", np.array(
        [[0, -1, 0, 1.0], [1, 0, 0, -2.0], [0, 0, 1, 3.0], [0, 0, 0, 1]], dtype=float))
    model = FusionModel(image, images, probe_to_reference, [True, True, False], image_to_probe, reference_to_mri)
    model.set_frame(1)
    with pytest.raises(WidgetError, match="INVALID"):
        model.set_frame(2)
    chain = reference_to_mri.matrix @ probe_to_reference[1] @ image_to_probe.matrix
    assert np.allclose(model.image_to_mri(), chain)
    corners = model.plane_corners_mri()
    assert np.allclose(corners[0], (chain @ [-0.5, -0.5, 0, 1])[:3])
    resampled = model.mri_on_frame()
    for x, y in [(0, 0), (3, 5), (9, 7)]:
        point = (chain @ [x, y, 0, 1])[:3]
        index = image.TransformPhysicalPointToContinuousIndex(point.tolist())
        expected = image.EvaluateAtContinuousIndex(index, sitk.sitkLinear)
        assert resampled[y, x] == pytest.approx(expected, abs=1e-2)
    assert model.us_percent == 50.0 and model.mode == "blend"


def test_importing_the_models_pulls_no_ui():
    code = (
        "import sys, workbench.widgets, workbench.widgets.points, workbench.widgets.slices, workbench.widgets.fusion, "
        "workbench.widgets.session; print(','.join(m for m in ('ipywidgets', 'pyvista', 'vtk', 'ipympl') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
