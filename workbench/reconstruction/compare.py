"""Compare two volumes voxel by voxel (a reconstruction against PLUS's, say).

:func:`compare_volumes` reports whether the grids are the same and how close the values are:
the fractions of voxels equal / within 1 / within 2 grey levels, the mean absolute
difference, and the normalised cross-correlation over voxels non-zero in either volume.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np

from workbench.errors import VolumeError

__all__ = ["GEOMETRY_TOLERANCE_MM", "VolumeComparison", "compare_files", "compare_volumes"]

#: Origins and spacings closer than this (mm) count as equal.
GEOMETRY_TOLERANCE_MM = 1e-3


@dataclass(frozen=True)
class VolumeComparison:
    """Agreement of volume ``a`` with volume ``b``.

    Attributes
    ----------
    geometry_equal : bool
        Same size, origin and spacing within :data:`GEOMETRY_TOLERANCE_MM`, same direction.
    size_a, size_b : list of int
        (nx, ny, nz) voxels.
    max_origin_difference_mm, max_spacing_difference_mm : float
    voxels : int
        Voxels compared (the whole grid if the sizes match, else their common corner block).
    fraction_equal, fraction_within_1, fraction_within_2 : float
        Fractions of ``voxels`` whose values differ by 0, <= 1, <= 2.
    mean_abs_diff, max_abs_diff : float
    nonzero_voxels : int
        Voxels non-zero in either volume.
    ncc : float
        Normalised cross-correlation (Pearson) over those voxels; 1.0 if both are constant
        and equal there, NaN if there are none.
    """

    geometry_equal: bool
    size_a: list[int]
    size_b: list[int]
    max_origin_difference_mm: float
    max_spacing_difference_mm: float
    voxels: int
    fraction_equal: float
    fraction_within_1: float
    fraction_within_2: float
    mean_abs_diff: float
    max_abs_diff: float
    nonzero_voxels: int
    ncc: float

    def to_dict(self) -> dict:
        """JSON-ready dict (NaN becomes None)."""
        return {
            key: (None if isinstance(value, float) and np.isnan(value) else value)
            for key, value in asdict(self).items()
        }


def compare_volumes(a, b) -> VolumeComparison:
    """Compare two SimpleITK images.

    Parameters
    ----------
    a, b : SimpleITK.Image
        3D scalar volumes. When their sizes differ, values are compared over the common block
        of voxels starting at index (0, 0, 0) and ``geometry_equal`` is False.

    Returns
    -------
    VolumeComparison
    """
    import SimpleITK as sitk

    values_a = sitk.GetArrayViewFromImage(a).astype(np.float64)
    values_b = sitk.GetArrayViewFromImage(b).astype(np.float64)
    if values_a.ndim != 3 or values_b.ndim != 3:
        raise VolumeError(
            f"compare needs two 3D scalar volumes, got arrays of shape {values_a.shape} and {values_b.shape}"
        )
    origin_difference = float(np.max(np.abs(np.subtract(a.GetOrigin(), b.GetOrigin()))))
    spacing_difference = float(np.max(np.abs(np.subtract(a.GetSpacing(), b.GetSpacing()))))
    geometry_equal = (
        a.GetSize() == b.GetSize()
        and origin_difference <= GEOMETRY_TOLERANCE_MM
        and spacing_difference <= GEOMETRY_TOLERANCE_MM
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)
    )
    common = tuple(slice(0, min(p, q)) for p, q in zip(values_a.shape, values_b.shape, strict=True))
    values_a, values_b = values_a[common], values_b[common]
    difference = np.abs(values_a - values_b)
    nonzero = (values_a != 0) | (values_b != 0)
    return VolumeComparison(
        geometry_equal=bool(geometry_equal),
        size_a=list(a.GetSize()),
        size_b=list(b.GetSize()),
        max_origin_difference_mm=origin_difference,
        max_spacing_difference_mm=spacing_difference,
        voxels=int(difference.size),
        fraction_equal=float(np.mean(difference == 0)),
        fraction_within_1=float(np.mean(difference <= 1)),
        fraction_within_2=float(np.mean(difference <= 2)),
        mean_abs_diff=float(difference.mean()),
        max_abs_diff=float(difference.max()),
        nonzero_voxels=int(np.count_nonzero(nonzero)),
        ncc=_ncc(values_a[nonzero], values_b[nonzero]),
    )


def compare_files(path_a: str | os.PathLike, path_b: str | os.PathLike) -> VolumeComparison:
    """Read two volume files (.mha, .nrrd, .nii, ...) and :func:`compare_volumes` them.

    Raises
    ------
    VolumeError
        A file cannot be read as a volume.
    """
    from workbench.io.volume import load_volume

    return compare_volumes(load_volume(path_a).image, load_volume(path_b).image)


def _ncc(x: np.ndarray, y: np.ndarray) -> float:
    if x.size == 0:
        return float("nan")
    dx, dy = x - x.mean(), y - y.mean()
    norm = np.sqrt(np.sum(dx * dx) * np.sum(dy * dy))
    if norm == 0:
        return 1.0 if np.array_equal(x, y) else 0.0
    return float(np.sum(dx * dy) / norm)
