"""The label vocabulary and label maps that carry their label table (workbench.anatomy)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from workbench.anatomy import (
    BONE_LABELS,
    BONE_NAMES,
    LEVEL_NAMES,
    VOCABULARY,
    WORKBENCH_TABLE,
    Label,
    LabelMap,
    LabelMapError,
    display_name,
)
from workbench.errors import WorkbenchError
from workbench.frames import Transform

#: A foreign encoding of the same anatomy: other values, two values for one class, no kidney.
FOREIGN_TABLE = {0: "AIR", 5: "SOFT_TISSUE", 41: "VERTEBRAL_BODY", 42: "VERTEBRAL_BODY", 50: "LAMINA", 60: "NERVE_ROOT"}


def _toy_values_kji() -> np.ndarray:
    """(4, 5, 6) workbench-encoded labels: soft tissue, a vertebral body, a lamina and a nerve root."""
    values = np.full((4, 5, 6), int(Label.SOFT_TISSUE), np.uint8)
    values[:, 4, :] = Label.AIR
    values[1:3, 1:3, 1:3] = Label.VERTEBRAL_BODY
    values[1, 3, 4] = Label.LAMINA
    values[2, 0, 5] = Label.NERVE_ROOT
    return values


def _to_foreign(values_kji: np.ndarray) -> np.ndarray:
    foreign = np.zeros_like(values_kji)
    foreign[values_kji == Label.SOFT_TISSUE] = 5
    foreign[values_kji == Label.VERTEBRAL_BODY] = 41
    foreign[(values_kji == Label.VERTEBRAL_BODY) & (np.arange(6) >= 2)] = 42  # a second value for the same class
    foreign[values_kji == Label.LAMINA] = 50
    foreign[values_kji == Label.NERVE_ROOT] = 60
    return foreign


def test_the_vocabulary_is_not_the_phantoms_but_the_phantom_re_exports_it():
    import workbench.phantom.labels as phantom_labels

    assert phantom_labels.Label is Label and phantom_labels.BONE_LABELS is BONE_LABELS
    assert phantom_labels.LEVEL_NAMES is LEVEL_NAMES and phantom_labels.PHANTOM_TABLE is WORKBENCH_TABLE
    assert set(phantom_labels.TISSUE) == set(Label)  # the phantom's properties are keyed by the vocabulary
    assert VOCABULARY[0] == "AIR" and len(VOCABULARY) == len(Label) == len(WORKBENCH_TABLE)
    assert BONE_NAMES == {label.name for label in BONE_LABELS} and "SACRUM" in BONE_NAMES
    assert LEVEL_NAMES[1:] == ("L1", "L2", "L3", "L4", "L5", "S1")
    assert display_name("TRANSVERSE_PROCESS") == display_name(Label.TRANSVERSE_PROCESS) == "transverse process"


def test_table_round_trip():
    label_map = LabelMap(_toy_values_kji(), WORKBENCH_TABLE, np.eye(4))
    for label in Label:
        assert label_map.name_of(int(label)) == label.name
        assert label_map.values_of([label.name]) == (int(label),) == label_map.values_of(label)
    assert dict(label_map.table) == {int(label): label.name for label in Label}
    foreign = LabelMap(_to_foreign(_toy_values_kji()), FOREIGN_TABLE, np.eye(4))
    assert foreign.values_of(["VERTEBRAL_BODY"]) == (41, 42)
    assert {foreign.name_of(v) for v in foreign.values_of(["VERTEBRAL_BODY", "LAMINA"])} == {"VERTEBRAL_BODY", "LAMINA"}
    assert foreign.values_of([Label.KIDNEY]) == ()  # in the vocabulary, not in this table: nothing there
    with pytest.raises(TypeError):
        foreign.table[99] = "KIDNEY"  # read-only


def test_a_label_map_refuses_a_value_not_in_its_table_when_asked_to_interpret_it():
    values = _toy_values_kji()
    values[0, 0, 0] = 99
    label_map = LabelMap(values, WORKBENCH_TABLE, np.eye(4))  # holding it is fine...
    with pytest.raises(LabelMapError, match="label value 99 is not in this label map's table"):
        label_map.name_of(99)  # ...interpreting it is not
    assert label_map.unknown_values() == (99,)
    with pytest.raises(LabelMapError, match="values that are not in its table: 99"):
        label_map.check_values()
    assert LabelMap(_toy_values_kji(), WORKBENCH_TABLE, np.eye(4)).check_values().unknown_values() == ()
    # Names outside the vocabulary, and bare ints (values that need a table), are refused too.
    with pytest.raises(LabelMapError, match="not a name of the label vocabulary"):
        label_map.values_of(["BONE"])
    with pytest.raises(LabelMapError, match="not a name of the label vocabulary"):
        label_map.mask([8])
    with pytest.raises(LabelMapError, match="not a name of the label vocabulary"):
        LabelMap(values, {0: "AIR", 8: "bone"}, np.eye(4))  # (VERTEBRA is a class now; "bone" is not)
    assert issubclass(LabelMapError, WorkbenchError)


@pytest.mark.parametrize(
    "image, table, geometry, match",
    [
        (np.zeros((4, 4), np.uint8), WORKBENCH_TABLE, np.eye(4), "must be 3D"),
        (np.zeros((2, 2, 2), np.float32), WORKBENCH_TABLE, np.eye(4), "must be integers"),
        (np.zeros((2, 2, 2), np.uint8), WORKBENCH_TABLE, None, "needs its geometry"),
        (np.zeros((2, 2, 2), np.uint8), {}, np.eye(4), "non-empty mapping"),
        (np.zeros((2, 2, 2), np.uint8), {"0": "AIR"}, np.eye(4), "not an integer label value"),
        (sitk.Image([2, 2, 2], sitk.sitkUInt8), WORKBENCH_TABLE, np.eye(4), "carries its own geometry"),
    ],
)
def test_malformed_label_maps_are_refused(image, table, geometry, match):
    with pytest.raises(LabelMapError, match=match):
        LabelMap(image, table, geometry)


def test_bone_mask_follows_the_table_not_the_values():
    values = _toy_values_kji()
    workbench = LabelMap(values, WORKBENCH_TABLE, np.eye(4))
    expected = np.isin(values, [int(v) for v in BONE_LABELS])
    assert expected.sum() == 2 * 2 * 2 + 1  # the body and the lamina voxel
    np.testing.assert_array_equal(workbench.bone_mask(), expected)
    foreign = LabelMap(_to_foreign(values), FOREIGN_TABLE, np.eye(4))
    np.testing.assert_array_equal(foreign.bone_mask(), expected)  # 41, 42 and 50 are bone there; 8 means nothing
    np.testing.assert_array_equal(foreign.mask(["NERVE_ROOT"]), values == Label.NERVE_ROOT)
    samples = np.array([41, 5, 50, -1, 42])
    np.testing.assert_array_equal(foreign.bone_mask(samples), [True, False, True, False, True])


def test_geometry_from_an_image_or_an_array_agrees():
    image = sitk.GetImageFromArray(_to_foreign(_toy_values_kji()))
    image.SetSpacing((0.5, 2.0, 1.5))
    image.SetOrigin((-10.0, 20.0, 5.0))
    image.SetDirection((0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    from_image = LabelMap(image, FOREIGN_TABLE)
    assert from_image.image is image
    ijk = np.array([[1.0, 2.0, 3.0], [5.0, 0.0, 0.0]])
    points_mri = from_image.mri_voxel_to_mri.apply_to_points(ijk, from_frame="MriVoxel")
    np.testing.assert_allclose(points_mri, [image.TransformContinuousIndexToPhysicalPoint(p) for p in ijk], atol=1e-12)
    np.testing.assert_allclose(from_image.to_ijk(points_mri), ijk, atol=1e-12)
    assert from_image.mri_to_mri_voxel.name == "MriToMriVoxel"
    np.testing.assert_allclose(from_image.spacing_mm, [0.5, 2.0, 1.5])
    # The same map given as an array and a MriVoxelToMri: same geometry, and an image with it.
    from_array = LabelMap(from_image.array, FOREIGN_TABLE, from_image.mri_voxel_to_mri)
    np.testing.assert_array_equal(from_array.mri_voxel_to_mri.matrix, from_image.mri_voxel_to_mri.matrix)
    rebuilt = from_array.image
    np.testing.assert_allclose(rebuilt.GetSpacing(), image.GetSpacing())
    np.testing.assert_allclose(rebuilt.GetDirection(), image.GetDirection(), atol=1e-12)
    np.testing.assert_allclose(rebuilt.GetOrigin(), image.GetOrigin())
    np.testing.assert_array_equal(sitk.GetArrayFromImage(rebuilt), sitk.GetArrayFromImage(image))
    # Values at positions: nearest voxel, -1 outside.
    np.testing.assert_array_equal(from_image.values_at(np.vstack([points_mri, [1e3, 0.0, 0.0]])), [5, 5, -1])
    with pytest.raises(LabelMapError, match="must be MriVoxelToMri"):
        LabelMap(from_image.array, FOREIGN_TABLE, Transform(np.eye(4), "Image", "Mri"))


def test_mri_bone_points_read_bone_through_the_table():
    from workbench.errors import RegistrationError
    from workbench.registration.surface import mri_bone_points

    values = _toy_values_kji()
    workbench = mri_bone_points(LabelMap(values, WORKBENCH_TABLE, np.eye(4)))
    foreign = mri_bone_points(LabelMap(_to_foreign(values), FOREIGN_TABLE, np.eye(4)))
    np.testing.assert_array_equal(workbench, foreign)
    assert len(workbench) == 2 * 2 + 1  # one point per column along y: 2 x 2 over the body, 1 over the lamina
    with pytest.raises(RegistrationError, match="needs a workbench.anatomy.LabelMap"):
        mri_bone_points(sitk.GetImageFromArray(values))


def test_anatomy_doctests_run_and_pass():
    import doctest

    import workbench.anatomy

    results = doctest.testmod(workbench.anatomy, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert results.attempted >= 3 and results.failed == 0
