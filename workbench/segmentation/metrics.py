"""Figures of a segmentation against a reference: posterior bone surface distance, canal Dice, levels.

- :func:`posterior_surface_points`: the bone surface an ultrasound probe on the back sees: in
  every image column along the posterior axis, the face of the most posterior bone voxel
  (spinous processes, laminae, articular and transverse processes; the bodies only through the
  interlaminar windows). Points are voxel face centres, LPS mm.
- :func:`surface_distances`: symmetric nearest-point distances between two such point sets, mm
  (mean = mean surface distance, MSD; and the 95th percentile).
- :func:`dice`: 2|A and B| / (|A| + |B|).
- :func:`level_correct`: per reference vertebra, whether the level most of the segmented bone
  over it carries is the reference's.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

__all__ = ["dice", "level_correct", "posterior_axis", "posterior_surface_points", "surface_distances"]


def posterior_axis(index_to_lps: np.ndarray) -> tuple[int, int]:
    """(array axis of a (K, J, I) array, +1 or -1): the axis most aligned with +y (posterior) and
    whether higher indices along it are more posterior."""
    column = int(np.argmax(np.abs(index_to_lps[1, :3])))  # index axis i=0, j=1, k=2
    return 2 - column, 1 if index_to_lps[1, column] > 0 else -1


def posterior_surface_points(mask_kji: np.ndarray, index_to_lps: np.ndarray) -> np.ndarray:
    """(N, 3) LPS mm: the posterior face of the most posterior voxel of ``mask_kji`` in each column.

    Parameters
    ----------
    mask_kji : (K, J, I) bool array
    index_to_lps : (4, 4) float array
        Voxel index (i, j, k) to LPS mm.
    """
    axis, sign = posterior_axis(index_to_lps)
    mask = np.asarray(mask_kji, bool)
    if not mask.any():
        return np.zeros((0, 3))
    moved = np.moveaxis(mask, axis, -1)
    n = moved.shape[-1]
    if sign > 0:
        last = n - 1 - np.argmax(moved[..., ::-1], axis=-1)
    else:
        last = np.argmax(moved, axis=-1)
    has = moved.any(axis=-1)
    cols = np.nonzero(has)
    depth = last[cols].astype(float) + 0.5 * sign
    kji = np.zeros((len(depth), 3))
    other = [a for a in range(3) if a != axis]
    kji[:, other[0]] = cols[0]
    kji[:, other[1]] = cols[1]
    kji[:, axis] = depth
    ijk = kji[:, ::-1]
    return ijk @ index_to_lps[:3, :3].T + index_to_lps[:3, 3]


def surface_distances(a_lps: np.ndarray, b_lps: np.ndarray) -> np.ndarray:
    """Symmetric nearest-point distances, mm: every point of ``a`` to ``b`` and every point of ``b`` to ``a``."""
    from scipy.spatial import cKDTree

    if len(a_lps) == 0 or len(b_lps) == 0:
        return np.array([np.inf])
    d_ab, _ = cKDTree(b_lps).query(a_lps)
    d_ba, _ = cKDTree(a_lps).query(b_lps)
    return np.concatenate([d_ab, d_ba])


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two bool arrays of one shape (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def level_correct(
    reference_levels: np.ndarray, reference_names: Mapping[int, str], segmented_levels: np.ndarray, min_voxels: int = 50
) -> dict[str, str | None]:
    """Per reference vertebra: the level the segmentation gives most of its bone (None: none).

    Parameters
    ----------
    reference_levels : int array
        Reference vertebra id per voxel (0: not a vertebra).
    reference_names : mapping of int to str
        Vertebra id -> level name (``"L4"``).
    segmented_levels : object array of str or None, same shape
        The segmentation's level per voxel (None where its label carries no level or is not bone).
    min_voxels : int
        Vertebrae with fewer reference voxels are not judged.
    """
    out: dict[str, str | None] = {}
    for value, name in reference_names.items():
        where = reference_levels == value
        if int(where.sum()) < min_voxels:
            continue
        found = segmented_levels[where]
        found = found[found != None]  # noqa: E711 (object array)
        if len(found) == 0:
            out[name] = None
            continue
        names, counts = np.unique(found.astype(str), return_counts=True)
        out[name] = str(names[int(np.argmax(counts))])
    return out
