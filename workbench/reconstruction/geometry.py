"""Output grid of a reconstruction: where the volume is and how pixels map into it.

PLUS (``vtkIGSIOVolumeReconstructor::SetOutputExtentFromFrameList``) sizes the volume to the
corners of the clipped frames, mapped into the output frame: the origin is the smallest
corner coordinate on each axis and the last voxel index is ``round((max - min) / spacing)``
(the rule of PLUS's current reference volumes; before 2025 PLUS truncated, giving the
sample volume one slice fewer). Voxel (i, j, k) is *centred* at ``origin + (i, j, k) *
spacing``, as in VTK and ITK, and the axes are those of the output frame. See
docs/frames.md and docs/reconstruction.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from workbench.errors import ReconstructionError
from workbench.validation import check_allocation

__all__ = ["ExtentRounding", "OutputGrid", "check_memory", "grid_covering", "image_to_voxel_matrix"]

#: ``"round"``: PLUS since 2025 (current test references); ``"truncate"``: PLUS before.
ExtentRounding = Literal["round", "truncate"]


@dataclass(frozen=True)
class OutputGrid:
    """A regular voxel grid whose axes are those of ``frame``.

    Attributes
    ----------
    origin_mm : (3,) tuple of float
        Centre of voxel (0, 0, 0) in ``frame``, mm.
    spacing_mm : (3,) tuple of float
        Voxel size along x, y, z, mm.
    size_px : (3,) tuple of int
        Number of voxels along x, y, z (the volume array has shape ``(nz, ny, nx)``).
    frame : str
        Frame the grid lives in, e.g. ``"Reference"`` or ``"Mri"``. See docs/frames.md.
    """

    origin_mm: tuple[float, float, float]
    spacing_mm: tuple[float, float, float]
    size_px: tuple[int, int, int]
    frame: str

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(nz, ny, nx)`` of a volume on this grid."""
        nx, ny, nz = self.size_px
        return (nz, ny, nx)

    @property
    def voxel_count(self) -> int:
        """Number of voxels."""
        return int(np.prod(self.size_px, dtype=np.int64))

    def voxel_to_frame_matrix(self) -> np.ndarray:
        """(4, 4) matrix mapping continuous voxel indices (i, j, k) to ``frame`` mm."""
        matrix = np.diag([*self.spacing_mm, 1.0])
        matrix[:3, 3] = self.origin_mm
        return matrix


def grid_covering(
    image_to_frame: np.ndarray,
    corner_box_px: tuple[float, float, float, float],
    spacing_mm: tuple[float, float, float],
    frame: str,
    extent_rounding: ExtentRounding = "round",
) -> OutputGrid:
    """The grid PLUS builds around the corners of every frame.

    Parameters
    ----------
    image_to_frame : (N, 4, 4) float array
        ``ImageTo<frame>`` of each valid frame (pixels to mm).
    corner_box_px : (4,) tuple of float
        ``(x_min, x_max, y_min, y_max)`` pixel coordinates of the clipped frame's corners
        (see :func:`workbench.reconstruction.clipping.extent_corner_box`).
    spacing_mm : (3,) tuple of float
        Output voxel size, mm.
    frame : str
        Name of the output frame.
    extent_rounding : {"round", "truncate"}
        How the last voxel index is rounded (see the module docstring).

    Returns
    -------
    OutputGrid
    """
    x_min, x_max, y_min, y_max = corner_box_px
    corners_px = np.array([[x, y, 0.0, 1.0] for x in (x_min, x_max) for y in (y_min, y_max)])
    corners_mm = np.einsum("nij,cj->nci", np.asarray(image_to_frame, dtype=float), corners_px)[..., :3]
    low_mm = corners_mm.reshape(-1, 3).min(axis=0)
    high_mm = corners_mm.reshape(-1, 3).max(axis=0)
    steps = (high_mm - low_mm) / np.asarray(spacing_mm, dtype=float)
    last_index = np.floor(steps + 0.5) if extent_rounding == "round" else np.trunc(steps)
    return OutputGrid(
        origin_mm=tuple(float(v) for v in low_mm),
        spacing_mm=tuple(float(v) for v in spacing_mm),
        size_px=tuple(int(v) + 1 for v in last_index),
        frame=frame,
    )


def check_memory(grid: OutputGrid, bytes_per_voxel: int, limit_bytes: int) -> None:
    """Raise :class:`ReconstructionError` if the volume and its buffers would exceed ``limit_bytes``."""
    needed = grid.voxel_count * bytes_per_voxel
    if needed > limit_bytes:
        nx, ny, nz = grid.size_px
        raise ReconstructionError(
            f"output grid of {nx}x{ny}x{nz} voxels needs {needed / 2**30:.2f} GiB (volume and accumulation "
            f"buffer), over the memory limit of {limit_bytes / 2**30:.2f} GiB: increase the spacing or the limit"
        )
    check_allocation(needed, "output grid (volume and accumulation buffer)", None, ReconstructionError)  # memory free now


def image_to_voxel_matrix(image_to_frame: np.ndarray, grid: OutputGrid) -> np.ndarray:
    """(4, 4) matrix from image pixel (column, row, 0) to continuous voxel index of ``grid``."""
    matrix = np.array(image_to_frame, dtype=float)
    matrix[:3, 3] -= np.asarray(grid.origin_mm)
    matrix[:3] /= np.asarray(grid.spacing_mm)[:, None]
    return matrix
