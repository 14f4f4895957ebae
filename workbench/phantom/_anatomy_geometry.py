"""Geometry shared by the anatomy builders: the voxel canvas, shape primitives and the spine curve.

Everything here works in the patient frame ``Mri`` (LPS, mm; see docs/frames.md) or in the local
frame of one vertebra, ``(u, v, w)`` = (patient left, posterior, superior along the spine) with its
origin at the centre of the vertebral body. A structure is a :class:`Part`: a label, a local
bounding box and a vectorised ``inside(u, v, w)`` test; :meth:`Canvas.paint_part` evaluates the
test only inside the part's box, which is what keeps a 0.5 mm build fast.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from workbench.anatomy import Label

__all__ = [
    "Canvas",
    "Part",
    "Pose",
    "SpineCurve",
    "VoxelGrid",
    "capsule",
    "ellipse",
    "superellipse",
    "tube",
]

InsideFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


# -- voxel grid and canvas ---------------------------------------------------------------------


@dataclass(frozen=True)
class VoxelGrid:
    """An axis-aligned LPS grid with identity direction.

    Attributes
    ----------
    origin_lps_mm : (3,) float array
        Centre of voxel (0, 0, 0), mm.
    spacing_mm : float
        Isotropic voxel size, mm.
    size_px : (3,) tuple of int
        (nx, ny, nz); numpy arrays of the grid are indexed ``[z, y, x]``.
    """

    origin_lps_mm: np.ndarray
    spacing_mm: float
    size_px: tuple[int, int, int]

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        nx, ny, nz = self.size_px
        return nz, ny, nx

    def box(self, lo_lps: np.ndarray, hi_lps: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Index slices ``(z, y, x)`` of the voxels whose centres lie in ``[lo, hi]``; None if empty."""
        lo = np.ceil((np.asarray(lo_lps) - self.origin_lps_mm) / self.spacing_mm).astype(int)
        hi = np.floor((np.asarray(hi_lps) - self.origin_lps_mm) / self.spacing_mm).astype(int) + 1
        lo = np.maximum(lo, 0)
        hi = np.minimum(hi, self.size_px)
        if np.any(hi <= lo):
            return None
        return slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0])

    def axes(self, box: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable coordinates of a box: X (1, 1, nx), Y (1, ny, 1), Z (nz, 1, 1), mm."""
        sz, sy, sx = box
        x = self.origin_lps_mm[0] + self.spacing_mm * np.arange(sx.start, sx.stop)
        y = self.origin_lps_mm[1] + self.spacing_mm * np.arange(sy.start, sy.stop)
        z = self.origin_lps_mm[2] + self.spacing_mm * np.arange(sz.start, sz.stop)
        return x[None, None, :], y[None, :, None], z[:, None, None]

    def z_mm(self) -> np.ndarray:
        """(nz,) z of every slice, mm."""
        return self.origin_lps_mm[2] + self.spacing_mm * np.arange(self.size_px[2])


@dataclass(frozen=True)
class Pose:
    """A rigid placement of a local frame in LPS: ``p_lps = rotation @ p_local + centre_lps``.

    ``rotation`` columns are the local axes u (left), v (posterior), w (superior) in LPS.
    """

    rotation: np.ndarray
    centre_lps: np.ndarray

    def to_lps(self, points_local: np.ndarray) -> np.ndarray:
        """(N, 3) or (3,) local points, mm -> LPS, mm."""
        return np.asarray(points_local) @ self.rotation.T + self.centre_lps

    def to_local(self, points_lps: np.ndarray) -> np.ndarray:
        """(N, 3) or (3,) LPS points, mm -> local, mm."""
        return (np.asarray(points_lps) - self.centre_lps) @ self.rotation

    def matrix(self) -> np.ndarray:
        """(4, 4) local-to-LPS homogeneous matrix."""
        m = np.eye(4)
        m[:3, :3] = self.rotation
        m[:3, 3] = self.centre_lps
        return m

    def moved(self, motion_rotation: np.ndarray, translation_mm: np.ndarray) -> Pose:
        """This pose after a rigid motion about its own centre: ``p' = Rm (p - c) + c + t``."""
        return Pose(motion_rotation @ self.rotation, self.centre_lps + translation_mm)


@dataclass(frozen=True)
class Part:
    """One structure in a local frame: label, local bounding box (mm) and an inside test."""

    name: str
    label: Label
    lo_local: np.ndarray
    hi_local: np.ndarray
    inside: InsideFn


class Canvas:
    """The label map and level map being painted (numpy ``[z, y, x]`` uint8 arrays)."""

    def __init__(self, grid: VoxelGrid, fill: Label = Label.AIR):
        self.grid = grid
        self.labels = np.full(grid.shape_zyx, int(fill), dtype=np.uint8)
        self.levels = np.zeros(grid.shape_zyx, dtype=np.uint8)

    def paint(
        self,
        box: tuple[slice, slice, slice],
        mask: np.ndarray,
        label: Label,
        *,
        level: int = 0,
        only_on: tuple[Label, ...] | None = None,
        not_on: tuple[Label, ...] | None = None,
    ) -> None:
        """Set ``label`` (and ``level`` in the level map) where ``mask`` is True inside ``box``.

        ``only_on`` / ``not_on`` restrict painting to voxels that currently hold / do not hold
        one of those labels (e.g. muscles only inside the fascia, joint space never on bone).
        """
        current = self.labels[box]
        if only_on is not None:
            mask = mask & _label_table(only_on)[current]
        if not_on is not None:
            mask = mask & ~_label_table(not_on)[current]
        current[mask] = int(label)
        self.levels[box][mask] = level

    def paint_part(self, pose: Pose, part: Part, *, level: int = 0, not_on: tuple[Label, ...] | None = None) -> None:
        """Paint a local-frame part placed by ``pose``, evaluating it only inside its box."""
        corners_local = np.array(
            [
                [x, y, z]
                for x in (part.lo_local[0], part.hi_local[0])
                for y in (part.lo_local[1], part.hi_local[1])
                for z in (part.lo_local[2], part.hi_local[2])
            ]
        )
        corners = pose.to_lps(corners_local)
        box = self.grid.box(corners.min(axis=0), corners.max(axis=0))
        if box is None:
            return
        u, v, w = local_coordinates(self.grid, box, pose)
        self.paint(box, part.inside(u, v, w), part.label, level=level, not_on=not_on)


def _label_table(labels: tuple[Label, ...]) -> np.ndarray:
    """(256,) bool lookup table, True at ``labels``."""
    table = np.zeros(256, dtype=bool)
    table[[int(v) for v in labels]] = True
    return table


def local_coordinates(grid: VoxelGrid, box, pose: Pose) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local (u, v, w) of every voxel centre in ``box``: (nz, ny, nx) float32 arrays, mm."""
    x, y, z = grid.axes(box)
    dx = (x - pose.centre_lps[0]).astype(np.float32)
    dy = (y - pose.centre_lps[1]).astype(np.float32)
    dz = (z - pose.centre_lps[2]).astype(np.float32)
    r = pose.rotation.astype(np.float32)
    # p_local = R^T (p - c): component i is the dot product with column i of R.
    return tuple(dx * r[0, i] + dy * r[1, i] + dz * r[2, i] for i in range(3))


# -- shape primitives (vectorised, any broadcastable float arrays) -------------------------------


def ellipse(a: np.ndarray, b: np.ndarray, ra, rb) -> np.ndarray:
    """``(a / ra)^2 + (b / rb)^2 <= 1``."""
    return (a / ra) ** 2 + (b / rb) ** 2 <= 1.0


def superellipse(a: np.ndarray, b: np.ndarray, ra, rb, exponent: float) -> np.ndarray:
    """Inside the superellipse ``|a/ra|^p + |b/rb|^p <= 1`` (p = 2, 2.5, 3 or 4)."""
    return _abs_power(a / ra, exponent) + _abs_power(b / rb, exponent) <= 1.0


def _abs_power(x: np.ndarray, exponent: float) -> np.ndarray:
    """``|x|^p`` without the general power function for the exponents the shapes use."""
    square = x * x
    if exponent == 2:
        return square
    if exponent == 2.5:
        return square * np.sqrt(np.abs(x))
    if exponent == 3:
        return square * np.abs(x)
    if exponent == 4:
        return square * square
    raise ValueError(f"unsupported superellipse exponent {exponent}")


def tube(name: str, label: Label, points_local: np.ndarray, radius_mm: float) -> list[Part]:
    """A tube of constant radius along a polyline (rounded ends), one capsule part per segment
    so that each is evaluated only inside its own box.

    Parameters
    ----------
    points_local : (K, 3) float array, mm
        Waypoints in the local frame.
    radius_mm : float
    """
    points = np.asarray(points_local, dtype=np.float64)
    return [
        Part(name, label, np.minimum(a, b) - radius_mm, np.maximum(a, b) + radius_mm, capsule(a, b, radius_mm))
        for a, b in zip(points[:-1], points[1:])
    ]


def capsule(a: np.ndarray, b: np.ndarray, radius_mm: float) -> InsideFn:
    """Inside test of the capsule of ``radius_mm`` around the segment a-b ((3,) local, mm)."""
    d = b - a
    length_sq = float(d @ d)

    def inside(u, v, w):
        du, dv, dw = u - a[0], v - a[1], w - a[2]
        t = np.clip((du * d[0] + dv * d[1] + dw * d[2]) / length_sq, 0.0, 1.0)
        return (du - t * d[0]) ** 2 + (dv - t * d[1]) ** 2 + (dw - t * d[2]) ** 2 <= radius_mm**2

    return inside


def rotation_from_euler_deg(rotation_deg) -> np.ndarray:
    """(3, 3) rotation from angles about the LPS x, y and z axes, degrees, applied in that order.

    ``R = Rz @ Ry @ Rx`` (extrinsic x-y-z, SciPy ``Rotation.from_euler("xyz", ...)``).
    """
    ax, ay, az = (math.radians(float(a)) for a in rotation_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


# -- the spine curve -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SpineCurve:
    """Centre line through the vertebral body centres, parametrised by arc length ``s`` (mm).

    Sagittally a circular arc (constant curvature ``curvature_per_mm`` > 0 is a lordosis: the
    centre of curvature lies posterior), laterally a small parabola (scoliosis). ``s`` grows
    superiorly and is 0 at the L3 body centre, which sits at the LPS origin. The tangent angle
    ``theta(s) = theta0 + curvature * s`` is measured from +z towards +y (positive: going up
    also goes posterior).

    Attributes
    ----------
    theta0_rad : float
        Tangent angle at s = 0.
    curvature_per_mm : float
        d(theta)/ds, rad/mm (0 for a straight spine).
    lateral_per_mm2 : float
        Lateral offset ``x(s) = 0.5 * lateral_per_mm2 * s^2``, 1/mm.
    """

    theta0_rad: float
    curvature_per_mm: float
    lateral_per_mm2: float

    _STRAIGHT = 1e-7  # below this curvature (rad/mm) the arc is treated as a straight line

    @property
    def straight(self) -> bool:
        return abs(self.curvature_per_mm) < self._STRAIGHT

    def theta(self, s_mm) -> np.ndarray:
        return self.theta0_rad + self.curvature_per_mm * np.asarray(s_mm, dtype=np.float64)

    def point(self, s_mm) -> np.ndarray:
        """(N, 3) LPS points of the curve at arc lengths ``s_mm`` (N,), mm."""
        s = np.atleast_1d(np.asarray(s_mm, dtype=np.float64))
        t0, k = self.theta0_rad, self.curvature_per_mm
        if self.straight:
            y, z = s * math.sin(t0), s * math.cos(t0)
        else:
            th = self.theta(s)
            y = (math.cos(t0) - np.cos(th)) / k
            z = (np.sin(th) - math.sin(t0)) / k
        x = 0.5 * self.lateral_per_mm2 * s**2
        return np.stack([x, y, z], axis=-1)

    def frame(self, s_mm: float) -> np.ndarray:
        """(3, 3) rotation whose columns are u (left), v (posterior), w (superior) at ``s_mm``."""
        th = float(self.theta(s_mm))
        tangent = np.array([self.lateral_per_mm2 * s_mm, math.sin(th), math.cos(th)])
        w = tangent / np.linalg.norm(tangent)
        v = np.array([0.0, math.cos(th), -math.sin(th)])
        v -= (v @ w) * w
        v /= np.linalg.norm(v)
        return np.column_stack([np.cross(v, w), v, w])

    def s_at_z(self, z_mm) -> np.ndarray:
        """Arc length where the curve crosses the axial planes ``z_mm`` (N,), mm."""
        z = np.asarray(z_mm, dtype=np.float64)
        t0, k = self.theta0_rad, self.curvature_per_mm
        if self.straight:
            return z / math.cos(t0)
        return (np.arcsin(np.clip(k * z + math.sin(t0), -1.0, 1.0)) - t0) / k

    def curve_coordinates(self, x, y, z) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tube coordinates of LPS points: (s along the curve, u left of it, v posterior of it), mm.

        Exact for the sagittal arc (polar coordinates about the centre of curvature); the lateral
        offset is subtracted from x (scoliosis is small).
        """
        t0, k = self.theta0_rad, self.curvature_per_mm
        y = np.asarray(y, dtype=np.float64)
        z = np.asarray(z, dtype=np.float64)
        if self.straight:
            s = y * math.sin(t0) + z * math.cos(t0)
            v = y * math.cos(t0) - z * math.sin(t0)
        else:
            dy = y - math.cos(t0) / k
            dz = z + math.sin(t0) / k
            s = (np.arctan2(dz, -dy) - t0) / k
            v = 1.0 / k - np.hypot(dy, dz)
        u = x - 0.5 * self.lateral_per_mm2 * s**2
        return s, u, v
