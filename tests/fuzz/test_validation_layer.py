"""The validation layer (workbench.validation) and JSON reading with limits (workbench.io.json_io).

Every check is tested at its stated bound: spacing 1e-3..100 mm, coordinates within 10 m,
rotations orthonormal to 1e-4, sizes within the memory available now.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from workbench.errors import CaseBundleError, VolumeError, WorkbenchError
from workbench.io.json_io import MAX_INT_DIGITS, MAX_JSON_DEPTH, parse_json_limited, read_json_limited
from workbench.validation import (
    available_memory_bytes,
    check_affine,
    check_allocation,
    check_coordinates_mm,
    check_direction,
    check_image_geometry,
    check_rotation,
    check_size,
    check_spacing_mm,
    finite_float,
)


def _rotation_z(angle_rad: float) -> np.ndarray:
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@pytest.mark.parametrize(
    "spacing, ok", [(1e-3, True), (100.0, True), (0.5, True), (9.9e-4, False), (100.01, False), (0.0, False), (-1.0, False)]
)
def test_spacing_range_in_mm(spacing, ok):
    if ok:
        assert check_spacing_mm([spacing, 1.0], "ElementSpacing", "f.mha")[0] == spacing
    else:
        with pytest.raises(VolumeError, match=r"f.mha: ElementSpacing: spacing .* mm is outside 0.001..100 mm"):
            check_spacing_mm([spacing, 1.0], "ElementSpacing", "f.mha", VolumeError)


def test_coordinates_within_ten_metres():
    check_coordinates_mm([10_000.0, -10_000.0, 0.0], "origin", "x")
    with pytest.raises(WorkbenchError, match=r"x: origin: coordinate 10000.1 mm is farther than 10 m"):
        check_coordinates_mm([0.0, -10_000.1, 0.0], "origin", "x")
    with pytest.raises(WorkbenchError, match="origin: holds NaN or infinity"):
        check_coordinates_mm([np.nan, 0, 0], "origin", "x")
    with pytest.raises(WorkbenchError, match="not a number"):
        check_coordinates_mm(["a", 0, 0], "origin", "x")


def test_rotation_orthonormal_to_1e_4():
    rotation = _rotation_z(0.7)
    check_rotation(rotation + 4e-5 * np.eye(3), "R", None)  # |R^T R - I| = 8e-5 < 1e-4
    with pytest.raises(WorkbenchError, match=r"R: not orthonormal \(\|R\^T R - I\| = 0.0002"):
        check_rotation(rotation + 1e-4 * np.eye(3), "R", None)  # 2e-4 > 1e-4
    with pytest.raises(WorkbenchError, match="reflection"):
        check_rotation(np.diag([1.0, 1.0, -1.0]), "R", None, proper=True)
    check_direction(np.diag([1.0, -1.0, 1.0]).ravel(), 3, "direction", None)  # LPS/RAS flips are directions


def test_affine_rigid_and_scaled():
    matrix = np.eye(4)
    matrix[:3, :3] = _rotation_z(0.3) * 0.08  # an ImageToProbe calibration: 0.08 mm per pixel
    matrix[:3, 3] = [11.0, 50.0, 0.0]
    check_affine(matrix, "ImageToProbe", None)
    with pytest.raises(WorkbenchError, match="ImageToProbe rotation: not orthonormal"):
        check_affine(matrix, "ImageToProbe", None, rigid=True)
    singular = matrix.copy()
    singular[:3, 0] = 0.0
    with pytest.raises(WorkbenchError, match="matrix is singular"):
        check_affine(singular, "ImageToProbe", None)
    far = np.eye(4)
    far[0, 3] = 1e300
    with pytest.raises(WorkbenchError, match="translation: coordinate 1e\\+300 mm is farther than 10 m"):
        check_affine(far, "T", None)
    skew = np.eye(4)
    skew[3] = [0, 0, 0.1, 1]
    with pytest.raises(WorkbenchError, match="last row must be 0 0 0 1"):
        check_affine(skew, "T", None)


def test_sizes_bounded_by_available_memory():
    available = available_memory_bytes()
    assert available > 0
    check_allocation(available // 4, "volume", None)
    with pytest.raises(WorkbenchError, match="needs .* more than the .* this machine can spare"):
        check_allocation(available, "volume", None)
    assert check_size([3, 4, 5], "DimSize", None, bytes_per_element=2) == (3, 4, 5)
    with pytest.raises(VolumeError, match="DimSize: 1000 dimensions"):
        check_size([1] * 1000, "DimSize", None, VolumeError)
    with pytest.raises(WorkbenchError, match="DimSize: size '-3' is not a positive integer"):
        check_size([2, -3, 4], "DimSize", None)
    with pytest.raises(WorkbenchError, match="DimSize: needs"):
        check_size([100_000, 100_000, 100_000], "DimSize", None)  # 1e15 voxels


def test_image_geometry_refuses_what_no_scanner_writes():
    check_image_geometry((10, 10, 10), (0.5, 0.5, 2.0), (0, 0, 0), np.eye(3).ravel(), None)
    with pytest.raises(WorkbenchError, match="image direction: not orthonormal"):
        check_image_geometry((10, 10, 10), (0.5, 0.5, 2.0), (0, 0, 0), np.ones(9), None)
    with pytest.raises(WorkbenchError, match="image spacing: 2 values for 3 dimensions"):
        check_image_geometry((10, 10, 10), (0.5, 0.5), (0, 0, 0), np.eye(3).ravel(), None)


def test_finite_float():
    assert finite_float("2.5", "x") == 2.5
    for bad, message in ((True, "expected a number"), ("1e999", "inf is not finite"), (10**400, "too large"), ("a", "expected a number")):
        with pytest.raises(WorkbenchError, match=message):
            finite_float(bad, "x")


@pytest.mark.parametrize(
    "text, message",
    [
        ("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), f"nests {MAX_JSON_DEPTH + 1} levels deep"),
        ("[" * 100_000, "nests 100000 levels deep"),
        ('{"a": ' + "9" * 5000 + "}", "an integer with 5000 digits"),
        ('{"a": ' + "1" * (MAX_INT_DIGITS + 1) + "}", f"an integer with {MAX_INT_DIGITS + 1} digits"),
        ('{"a": 1e999}', "number 1e999 is too large for a float"),
        ('{"a": NaN}', "NaN; NaN or infinity is not a JSON number"),
        ('{"a": -Infinity}', "-Infinity; NaN or infinity is not a JSON number"),
        ('{"a": ', "is not valid JSON at line 1, column 7"),
    ],
)
def test_json_limits_refuse_with_the_callers_error(text, message):
    with pytest.raises(CaseBundleError, match=message):
        parse_json_limited(text.encode(), "case.json", error=CaseBundleError, what="case.json")


def test_json_depth_ignores_brackets_inside_strings_and_reads_files(tmp_path):
    document = {"text": "[[[[" * 100, "points": [[1.5, -2, 3]]}
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(document))
    assert read_json_limited(path) == document
    assert read_json_limited(path, max_depth=3) == document  # {"points": [[...]]}, brackets in the string not counted
    with pytest.raises(WorkbenchError, match="nests 3 levels deep"):
        parse_json_limited(b'{"a": [[1]]}', path, max_depth=2)
    with pytest.raises(WorkbenchError, match="is 100 bytes, more than the 50 accepted"):
        parse_json_limited(b" " * 100, path, max_bytes=50)
    with pytest.raises(WorkbenchError, match="not UTF-8"):
        parse_json_limited(b'{"a": "\xff"}', path)
    kept = parse_json_limited(b'{"a": [NaN, 1e999]}', keep_non_finite=True)
    assert np.isnan(kept["a"][0]) and kept["a"][1] == np.inf
