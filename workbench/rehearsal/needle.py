"""The simulated needle: a straight shaft from a skin entry, and how its tip moves through the label map.

A :class:`NeedleState` is where the needle is: the skin entry, the unit direction (hub to
tip), the inserted length and the needle's catalogue length and gauge. :func:`advance_tip`
moves the tip along the shaft in small steps through the case's label map and stops it at
bone (a needle cannot enter cortical bone: the tip rests on the surface and pushing further
does not move it). Everything is in the ``Mri`` frame (LPS mm, docs/frames.md); label values
are interpreted only through the map's label table (:class:`workbench.anatomy.LabelMap`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from workbench.anatomy import LabelMap
from workbench.equipment import GAUGE_OUTER_DIAMETER_MM, NeedleSpec

__all__ = ["NeedleState", "TIP_STEP_MM", "TipMove", "advance_tip", "gauge_number", "unit"]

#: Step of the tip through the label map, mm (a quarter of a 1 mm voxel: no voxel is skipped).
TIP_STEP_MM = 0.25


def unit(vector_mri) -> np.ndarray:
    """``vector_mri`` ((3,), any length > 0) scaled to length 1; ValueError for a zero or non-finite vector."""
    vector_mri = np.asarray(vector_mri, dtype=float).reshape(3)
    norm = float(np.linalg.norm(vector_mri))
    if not (math.isfinite(norm) and norm > 1e-9):
        raise ValueError(f"a needle direction must be a finite non-zero 3-vector, got {vector_mri!r}")
    if abs(norm - 1.0) < 1e-12:  # already unit: unchanged, so a replayed recording reproduces it bit for bit
        return vector_mri.copy()
    return vector_mri / norm


def gauge_number(gauge: str | int) -> int:
    """``"23G"`` or ``23`` -> 23."""
    return int(str(gauge).upper().rstrip("G"))


@dataclass(frozen=True)
class NeedleState:
    """Where the needle is, in ``Mri`` (LPS mm).

    Attributes
    ----------
    entry_mri : (3,) float array
        Skin entry point (where the shaft crosses the skin), mm.
    direction_mri : (3,) float array
        Unit vector from hub to tip.
    depth_mm : float
        Inserted length from the entry to the tip, mm (0 = tip on the skin).
    length_mm : float
        Shaft length of the catalogue needle, mm (the depth cannot exceed it).
    gauge : int
        Needle gauge (23 for a 23G needle).
    """

    entry_mri: np.ndarray
    direction_mri: np.ndarray
    depth_mm: float
    length_mm: float
    gauge: int

    @classmethod
    def of_spec(cls, spec: NeedleSpec, entry_mri, direction_mri, depth_mm: float = 0.0) -> "NeedleState":
        """A needle of catalogue ``spec`` (:class:`workbench.equipment.NeedleSpec`) at ``entry_mri``."""
        return cls(np.asarray(entry_mri, dtype=float).reshape(3).copy(), unit(direction_mri), float(depth_mm),
                   float(spec.length_mm), gauge_number(spec.gauge))

    @property
    def tip_mri(self) -> np.ndarray:
        """(3,) tip position, LPS mm: ``entry_mri + depth_mm * direction_mri``."""
        return self.entry_mri + self.depth_mm * self.direction_mri

    @property
    def hub_mri(self) -> np.ndarray:
        """(3,) hub position, LPS mm (``length_mm`` behind the tip)."""
        return self.tip_mri - self.length_mm * self.direction_mri

    @property
    def radius_mm(self) -> float:
        """Half the nominal outer diameter of the gauge (ISO 9626), mm."""
        return GAUGE_OUTER_DIAMETER_MM[f"{self.gauge}G"] / 2.0

    def shaft_points_mri(self, step_mm: float = 0.5) -> np.ndarray:
        """(N, 3) points along the inserted shaft from the entry to the tip (both included), LPS mm.

        At least 2 points (the entry twice when the depth is 0); spacing at most ``step_mm``.
        """
        count = max(2, int(math.ceil(self.depth_mm / step_mm)) + 1)
        depths_mm = np.linspace(0.0, self.depth_mm, count)
        return self.entry_mri + depths_mm[:, None] * self.direction_mri

    def with_depth(self, depth_mm: float) -> "NeedleState":
        """The same needle with the tip at ``depth_mm`` (clipped to 0..length_mm)."""
        depth_mm = float(min(max(depth_mm, 0.0), self.length_mm))
        return NeedleState(self.entry_mri, self.direction_mri, depth_mm, self.length_mm, self.gauge)


@dataclass(frozen=True)
class TipMove:
    """What happened when the tip moved forward: where it ended and what it passed.

    Attributes
    ----------
    depth_mm : float
        Depth reached, mm (less than asked when bone or the needle's length stopped it).
    depths_mm : (M,) float array
        Depths of the tip samples passed, mm, increasing (excluding the start).
    values : (M,) int array
        Label value at each sample (-1 outside the map).
    blocked_by_bone : int or None
        Label value of the bone that stopped the tip, None if it was not stopped by bone.
    """

    depth_mm: float
    depths_mm: np.ndarray
    values: np.ndarray
    blocked_by_bone: int | None


def advance_tip(needle: NeedleState, label_map: LabelMap, distance_mm: float, step_mm: float = TIP_STEP_MM) -> TipMove:
    """Move the tip forward by ``distance_mm`` along the shaft, stopping at bone.

    The tip is moved in steps of at most ``step_mm``; the first sample whose label is bone (a
    class of :data:`workbench.anatomy.BONE_NAMES` by the map's table) is not entered: the tip
    stays at the previous sample (within ``step_mm`` of the bone surface). The depth never
    exceeds the needle's length.

    Parameters
    ----------
    needle : NeedleState
    label_map : LabelMap
        The case label map with its table (``Mri`` frame).
    distance_mm : float
        How far to push, mm (>= 0).
    step_mm : float

    Returns
    -------
    TipMove
    """
    goal_mm = min(needle.depth_mm + max(float(distance_mm), 0.0), needle.length_mm)
    span_mm = goal_mm - needle.depth_mm
    if span_mm <= 0.0:
        return TipMove(needle.depth_mm, np.zeros(0), np.zeros(0, dtype=int), None)
    count = int(math.ceil(span_mm / step_mm - 1e-9))
    depths_mm = needle.depth_mm + np.minimum(np.arange(1, count + 1) * step_mm, span_mm)
    values = label_map.values_at(needle.entry_mri + depths_mm[:, None] * needle.direction_mri)
    hit = np.flatnonzero(label_map.bone_mask(values))
    if hit.size:
        first = int(hit[0])
        reached_mm = float(depths_mm[first - 1]) if first > 0 else needle.depth_mm
        return TipMove(reached_mm, depths_mm[:first], values[:first], int(values[first]))
    return TipMove(float(goal_mm), depths_mm, values, None)
