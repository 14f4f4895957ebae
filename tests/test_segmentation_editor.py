"""Correcting a label map by hand: sphere brush per structure, exact undo/redo, atomic autosave (no kernel)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from workbench.anatomy import LabelMap, LabelMapError
from workbench.case import load_case
from workbench.case.create import new_case
from workbench.case.labels import read_case_label_map
from workbench.segmentation.editor import LabelEditor
from workbench.segmentation.fit import SegmentationError
from workbench.segmentation.store import attach_label_map

TABLE = {0: "air", 1: "unlabelled", 2: "lamina_L4", 3: "spinous_process_L4"}


def _image(shape_kji=(40, 50, 60), spacing=(1.0, 1.0, 1.0), direction=None) -> sitk.Image:
    values = np.ones(shape_kji, np.uint8)
    values[:, :5, :] = 0  # air at one side
    values[10:20, 20:30, 20:30] = 2
    image = sitk.GetImageFromArray(values)
    image.SetSpacing(spacing)
    image.SetOrigin((-30.0, 5.0, 12.0))
    if direction is not None:
        image.SetDirection(direction)
    return image


@pytest.fixture()
def case_with_labels(tmp_path) -> Path:
    labels = _image()
    mri = sitk.Cast(labels, sitk.sitkInt16) * 100
    mri.CopyInformation(labels)
    sitk.WriteImage(mri, str(tmp_path / "mri.nrrd"))
    case_dir = new_case(tmp_path / "case", mri=tmp_path / "mri.nrrd")
    attach_label_map(case_dir, LabelMap(labels, TABLE), "test label map")
    return case_dir


def _sphere_voxels(radius_mm: float, spacing) -> float:
    return 4.0 / 3.0 * math.pi * radius_mm**3 / float(np.prod(spacing))


@pytest.mark.parametrize(
    "spacing, radius_mm", [((1.0, 1.0, 1.0), 5.0), ((2.28, 1.0, 2.28), 9.0), ((0.8, 0.8, 1.5), 6.0)]
)
def test_a_paint_stroke_changes_the_voxels_of_a_sphere(spacing, radius_mm):
    editor = LabelEditor(LabelMap(_image(spacing=spacing), TABLE), autosave=None)
    centre_ijk = np.array([30.0, 30.0, 25.0])
    stroke = editor.paint("csf", centre_ijk, radius_mm, frame="ijk")
    expected = _sphere_voxels(radius_mm, spacing)
    assert stroke.changed == pytest.approx(expected, rel=0.06)
    assert editor.count("csf") == stroke.changed
    # every changed voxel lies within the radius of the centre, in mm
    matrix = editor.index_to_lps
    kji = np.array(np.unravel_index(stroke.flat_indices, editor.values.shape)).T
    lps = kji[:, ::-1] @ matrix[:3, :3].T + matrix[:3, 3]
    centre_lps = matrix[:3, :3] @ centre_ijk + matrix[:3, 3]
    assert np.linalg.norm(lps - centre_lps, axis=1).max() <= radius_mm + 1e-9


def test_a_brush_at_an_lps_point_with_an_oblique_grid():
    angle = math.radians(30)
    direction = (math.cos(angle), -math.sin(angle), 0.0, math.sin(angle), math.cos(angle), 0.0, 0.0, 0.0, 1.0)
    editor = LabelEditor(LabelMap(_image(direction=direction), TABLE), autosave=None)
    centre_lps = editor.index_to_lps[:3, :3] @ np.array([30.0, 30.0, 20.0]) + editor.index_to_lps[:3, 3]
    stroke = editor.paint("dura", centre_lps, 4.0)
    assert stroke.changed == pytest.approx(_sphere_voxels(4.0, (1, 1, 1)), rel=0.06)


def test_undo_restores_exactly_and_redo_reapplies():
    editor = LabelEditor(LabelMap(_image(), TABLE), autosave=None)
    original = editor.values.copy()
    first = editor.paint("spinous_process_L4", [25, 25, 15], 6.0, frame="ijk")
    after_first = editor.values.copy()
    editor.erase("lamina_L4", [25, 25, 15], 8.0, frame="ijk")
    assert editor.count("lamina_L4") < int((original == 2).sum())
    editor.undo()
    assert np.array_equal(editor.values, after_first)
    editor.undo()
    assert np.array_equal(editor.values, original)
    assert editor.undo() is None and not editor.can_undo
    assert editor.redo() is first and np.array_equal(editor.values, after_first)
    editor.paint("csf", [5, 40, 5], 2.0, frame="ijk")  # a new stroke drops the redo history
    assert not editor.can_redo
    assert dict(editor.label_map.names) == {**TABLE, 3: "spinous_process_L4", 4: "csf"}


def test_erase_touches_only_the_structure_named():
    editor = LabelEditor(LabelMap(_image(), TABLE), autosave=None)
    lamina_before = editor.count("lamina_L4")
    stroke = editor.erase("lamina_L4", [25, 25, 15], 30.0, frame="ijk")
    assert stroke.changed == lamina_before and editor.count("lamina_L4") == 0
    assert editor.count("air") == int((_image_array() == 0).sum())  # air untouched
    painted = editor.paint("csf", [25, 25, 15], 3.0, frame="ijk", only_over=("unlabelled",))
    assert painted.changed == pytest.approx(_sphere_voxels(3.0, (1, 1, 1)), rel=0.1)


def _image_array() -> np.ndarray:
    return sitk.GetArrayFromImage(_image())


def test_autosave_per_stroke_reloads_equal(case_with_labels):
    editor = LabelEditor.open_case(case_with_labels, autosave="stroke")
    editor.paint("nerve_root_L4_left", [40, 30, 20], 5.0, frame="ijk")
    editor.erase(None, [22, 22, 12], 3.0, frame="ijk")
    assert editor.saves == 2 and not editor.pending
    case = load_case(case_with_labels)  # digests of the new files verified
    reloaded = read_case_label_map(case, case_with_labels)
    assert np.array_equal(reloaded.array, editor.values)
    assert dict(reloaded.names) == dict(editor.label_map.names)
    editor.undo()
    reloaded = read_case_label_map(load_case(case_with_labels), case_with_labels)
    assert np.array_equal(reloaded.array, editor.values)


def test_debounced_autosave_waits_and_flush_saves(case_with_labels):
    now = [100.0]
    editor = LabelEditor.open_case(case_with_labels, autosave="debounce", debounce_s=2.0, clock=lambda: now[0])
    editor.paint("csf", [30, 30, 20], 3.0, frame="ijk")
    assert editor.saves == 1  # the first stroke saves at once
    now[0] += 0.5
    editor.paint("csf", [35, 30, 20], 3.0, frame="ijk")
    assert editor.saves == 1 and editor.pending
    reloaded = read_case_label_map(load_case(case_with_labels), case_with_labels)
    assert not np.array_equal(reloaded.array, editor.values)
    assert editor.flush() and editor.saves == 2 and not editor.flush()
    reloaded = read_case_label_map(load_case(case_with_labels), case_with_labels)
    assert np.array_equal(reloaded.array, editor.values)


def test_bad_brushes_and_names_are_refused():
    editor = LabelEditor(LabelMap(_image(), TABLE), autosave=None)
    with pytest.raises(SegmentationError, match="radius"):
        editor.paint("csf", [1, 1, 1], 0.0, frame="ijk")
    with pytest.raises(SegmentationError, match="frame"):
        editor.paint("csf", [1, 1, 1], 1.0, frame="ras")
    with pytest.raises(LabelMapError, match="vocabulary"):
        editor.paint("bowel", [1, 1, 1], 1.0, frame="ijk")
    with pytest.raises(SegmentationError, match="case folder"):
        LabelEditor(LabelMap(_image(), TABLE), autosave="stroke")
    with pytest.raises(SegmentationError, match="case folder"):
        editor.save()
    assert editor.paint("csf", [500, 500, 500], 2.0, frame="ijk").changed == 0  # outside: nothing, no stroke
    assert not editor.can_undo


def test_a_case_without_a_label_map_has_nothing_to_edit(tmp_path):
    sitk.WriteImage(sitk.Cast(_image(), sitk.sitkInt16), str(tmp_path / "mri.nrrd"))
    case_dir = new_case(tmp_path / "case", mri=tmp_path / "mri.nrrd")
    with pytest.raises(SegmentationError, match="no label map"):
        LabelEditor.open_case(case_dir)


def test_a_label_map_off_the_mri_grid_is_not_attached(case_with_labels):
    before = (case_with_labels / "case.json").read_bytes()
    with pytest.raises(SegmentationError, match="grid"):
        attach_label_map(case_with_labels, LabelMap(_image(spacing=(2.0, 1.0, 1.0)), TABLE), "wrong grid")
    assert (case_with_labels / "case.json").read_bytes() == before


def test_the_widget_paints_where_the_slice_is_clicked_and_saves(case_with_labels):
    from workbench.widgets.segment_editor import SegmentEditor
    from workbench.widgets.session import CaseSession

    editor = SegmentEditor(CaseSession(case_with_labels), orientation="axial", structure="csf")
    editor.radius.value = 4.0
    height, width = editor.view.model.shape_px
    stroke = editor.click_pixel(width / 2, height / 2)
    assert stroke.changed == pytest.approx(_sphere_voxels(4.0, (1, 1, 1)), rel=0.06)
    assert editor.model.saves == 1 and "1 saves" in editor.status.value
    reloaded = read_case_label_map(load_case(case_with_labels), case_with_labels)
    assert np.array_equal(reloaded.array, editor.model.values)
    editor.tool.value = "erase"
    assert editor.click_pixel(width / 2, height / 2).changed == stroke.changed
    editor.undo_button.click()
    assert editor.model.count("csf") == stroke.changed
