"""ITK transform files and Slicer markups: what `workbench info` reports about them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from workbench.errors import WorkbenchError
from workbench.io.itk_transform import describe_transform, read_tfm_text
from workbench.io.markups import control_points_lps, describe_markups

COS30, SIN30 = np.cos(np.radians(30)), np.sin(np.radians(30))


def test_affine_tfm_matrix(shared_data):
    (entry,) = read_tfm_text(shared_data / "itk-slicer-transforms" / "affine.tfm")
    assert entry.type_name == "AffineTransform_double_3_3"
    expected = np.array([[1, 0, 0, 0], [0, COS30, -SIN30, 2.38406], [0, SIN30, COS30, -1.41421], [0, 0, 0, 1]])
    np.testing.assert_allclose(entry.matrix_4x4(), expected, atol=1e-12)


def test_two_transforms_in_one_file_and_rigid3d(shared_data):
    entries = read_tfm_text(shared_data / "itk-slicer-transforms" / "rotationAndAffine.tfm")
    assert [e.base_type for e in entries] == ["Rigid3DTransform", "AffineTransform"]
    # Rigid3DTransform: 30 degrees about x, no translation.
    np.testing.assert_allclose(entries[0].matrix_4x4()[:3, :3], [[1, 0, 0], [0, COS30, -SIN30], [0, SIN30, COS30]])


def test_bspline_has_no_matrix(shared_data):
    entry, bulk = read_tfm_text(shared_data / "itk-slicer-transforms" / "MRHeadResampledBSplineTransform.tfm")
    assert entry.base_type == "BSplineDeformableTransform" and bulk.base_type == "AffineTransform"
    assert entry.parameters.size == 1536 and entry.fixed_parameters.size == 18
    assert entry.matrix_4x4() is None


def test_centre_of_rotation_matches_simpleitk(tmp_path):
    linear = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    translation, centre = np.array([5.0, -2.0, 1.0]), np.array([10.0, 20.0, 30.0])
    path = tmp_path / "centred.tfm"
    path.write_text(
        "#Insight Transform File V1.0\n#Transform 0\nTransform: AffineTransform_double_3_3\n"
        f"Parameters: {' '.join(map(str, [*linear.ravel(), *translation]))}\n"
        f"FixedParameters: {' '.join(map(str, centre))}\n"
    )
    (entry,) = read_tfm_text(path)
    reference = sitk.ReadTransform(str(path))
    point = (3.0, -7.0, 11.0)
    got = entry.matrix_4x4() @ np.array([*point, 1.0])
    np.testing.assert_allclose(got[:3], reference.TransformPoint(point), atol=1e-9)


def test_hdf5_composite_and_unsupported_type(shared_data):
    info = describe_transform(shared_data / "itk-slicer-transforms" / "BSplineLinearCompositeTransform.h5")
    assert info["format"] == "itk-hdf5"
    assert [t["type"].split("_")[0] for t in info["transforms"]] == ["AffineTransform", "BSplineTransform"]
    assert len(info["transforms"][0]["matrix_4x4"]) == 16
    with pytest.raises(WorkbenchError, match="ThinPlateSplineKernelTransform_double_3_3 is not supported"):
        describe_transform(shared_data / "itk-slicer-transforms" / "TpsTransform.h5")


@pytest.mark.parametrize(
    "text, message",
    [
        ("hello\n", "not an ITK text transform file"),
        ("#Insight Transform File V1.0\nTransform: AffineTransform_double_3_3\nParameters: 1 2 x\n", "not a number"),
        ("#Insight Transform File V1.0\nTransform: AffineTransform_double_3_3\n", "has no Parameters line"),
        ("#Insight Transform File V1.0\nParameters: 1 2 3\n", "before any 'Transform:' line"),
        ("#Insight Transform File V1.0\nTransform: AffineTransform_double_3_3\nParameters: nan 0 0\n", "NaN"),
    ],
)
def test_bad_tfm_files(tmp_path, text, message):
    path = tmp_path / "bad.tfm"
    path.write_text(text)
    with pytest.raises(WorkbenchError, match=message) as err:
        read_tfm_text(path)
    assert str(path) in str(err.value)


def test_slicer_example_point_list(shared_data):
    info = describe_markups(shared_data / "slicer-markups-schema" / "example_pointlist_from_slicer_docs.mrk.json")
    (markup,) = info["markups"]
    assert markup["type"] == "Fiducial" and markup["coordinate_system"] == "LPS"
    assert markup["labels"] == ["F-1", "F-2", "F-3"]
    np.testing.assert_allclose(markup["points_lps_mm"][1], [49.8682950191571, -88.58955938697324, 0.0])


def test_ras_markups_are_converted_to_lps(tmp_path):
    markup = {"type": "Fiducial", "coordinateSystem": "RAS", "controlPoints": [{"position": [1.0, 2.0, 3.0]}]}
    np.testing.assert_allclose(control_points_lps(markup), [[-1.0, -2.0, 3.0]])
    path = tmp_path / "bad.mrk.json"
    path.write_text(json.dumps({"markups": [{"coordinateSystem": "XYZ", "controlPoints": []}]}))
    with pytest.raises(WorkbenchError, match="unknown coordinateSystem 'XYZ'"):
        describe_markups(path)
