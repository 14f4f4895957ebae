"""workbench compare: geometry and value agreement of two volumes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from workbench.cli import main
from workbench.errors import VolumeError
from workbench.reconstruction.compare import compare_files, compare_volumes


def _image(values, origin=(1.0, 2.0, 3.0), spacing=(0.5, 0.5, 0.5)):
    image = sitk.GetImageFromArray(np.asarray(values, dtype=np.uint8))
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    return image


@pytest.fixture
def values():
    return np.random.default_rng(1).integers(0, 200, size=(4, 5, 6))


def test_identical_volumes(values):
    result = compare_volumes(_image(values), _image(values))
    assert result.geometry_equal
    assert (result.fraction_equal, result.fraction_within_1, result.fraction_within_2) == (1.0, 1.0, 1.0)
    assert result.mean_abs_diff == 0.0 and result.ncc == pytest.approx(1.0)
    assert result.voxels == 120


def test_differences_are_counted_by_size(values):
    other = values.copy()
    other[:2] += 1  # half the voxels one grey level up
    other[3, 0, :3] += 2  # three voxels two up
    result = compare_volumes(_image(values), _image(other))
    assert result.fraction_equal == pytest.approx((60 - 3) / 120)
    assert result.fraction_within_1 == pytest.approx(117 / 120)
    assert result.fraction_within_2 == 1.0
    assert result.mean_abs_diff == pytest.approx((60 + 6) / 120)
    assert result.max_abs_diff == 2.0
    assert 0.99 < result.ncc < 1.0


def test_geometry_tolerance_is_a_micrometre(values):
    assert compare_volumes(_image(values), _image(values, origin=(1.0, 2.0, 3.0009))).geometry_equal
    shifted = compare_volumes(_image(values), _image(values, origin=(1.0, 2.0, 3.002)))
    assert not shifted.geometry_equal and shifted.max_origin_difference_mm == pytest.approx(0.002)
    assert not compare_volumes(_image(values), _image(values, spacing=(0.5, 0.5, 0.6))).geometry_equal


def test_different_sizes_compare_the_common_block(values):
    result = compare_volumes(_image(values), _image(values[:3]))
    assert not result.geometry_equal
    assert result.size_a == [6, 5, 4] and result.size_b == [6, 5, 3]
    assert result.voxels == 90 and result.fraction_equal == 1.0


def test_ncc_is_over_voxels_non_zero_in_either():
    a = np.zeros((2, 2, 2))
    b = np.zeros((2, 2, 2))
    a[0, 0, :] = (10, 20)
    b[0, 0, :] = (20, 40)
    result = compare_volumes(_image(a), _image(b))
    assert result.nonzero_voxels == 2 and result.ncc == pytest.approx(1.0)
    assert compare_volumes(_image(np.zeros((2, 2, 2))), _image(np.zeros((2, 2, 2)))).to_dict()["ncc"] is None


def test_cli_prints_json(values, tmp_path, capsys):
    sitk.WriteImage(_image(values), str(tmp_path / "a.mha"))
    sitk.WriteImage(_image(values + 1), str(tmp_path / "b.mha"))
    assert main(["compare", str(tmp_path / "a.mha"), str(tmp_path / "b.mha")]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("geometry_equal", "fraction_equal", "fraction_within_1", "fraction_within_2", "mean_abs_diff", "ncc"):
        assert key in report
    assert report["fraction_equal"] == 0.0 and report["fraction_within_1"] == 1.0 and report["mean_abs_diff"] == 1.0


def test_unreadable_file_is_a_volume_error(values, tmp_path):
    sitk.WriteImage(_image(values), str(tmp_path / "a.mha"))
    (tmp_path / "b.mha").write_text("not an image")
    with pytest.raises(VolumeError, match="b.mha"):
        compare_files(tmp_path / "a.mha", tmp_path / "b.mha")
