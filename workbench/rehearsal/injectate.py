"""The injectate: where the fluid goes, as ellipsoids in ``Mri`` (LPS mm).

Each injection adds to a :class:`Bolus` (an ellipsoid) in the compartment the needle tip is in
(:func:`compartment_at`). The shape depends on the compartment:

- ``paravertebral`` (the tip beside the exiting root, not in muscle, bone, canal or a vessel):
  an ellipsoid elongated craniocaudally along the root / psoas compartment. Calibration
  (docs/rehearsal.md): the craniocaudal extent is ``PARAVERTEBRAL_SEGMENTS_AT_CALIBRATION``
  (1.25) vertebral segments at ``CALIBRATION_VOLUME_ML`` (6 mL, the study's volume per root)
  and scales with the cube root of the volume (constant shape); the two transverse semi-axes
  are equal and follow from the volume (``V = 4/3 pi a b c``). So 6 mL covers 1.25 segments,
  3 mL 0.99, 12 mL 1.57. The segment height is the case's (median distance between
  neighbouring vertebra centres).
- ``intramuscular`` / ``subcutaneous`` / ``other``: a compact local pool (a sphere of the
  volume): the fluid does not track along a compartment; flagged.
- ``epidural``: an ellipsoid along the canal calibrated like the paravertebral one but to
  ``EPIDURAL_SEGMENTS_AT_3_ML`` (2.21) segments for 3 mL, the mean ventral epidural contrast
  spread measured by Jeong et al. (Korean J Anesthesiol 2013;65(5):431); flagged.
- ``intravascular``: no pool (the fluid is carried away; semi-axes 0); flagged.

The volume of every bolus is exactly the injected volume (1 mL = 1000 mm^3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "CALIBRATION_VOLUME_ML",
    "COMPARTMENTS",
    "EPIDURAL_SEGMENTS_AT_3_ML",
    "PARAVERTEBRAL_SEGMENTS_AT_CALIBRATION",
    "Bolus",
    "InjectateState",
    "make_bolus",
    "spread_segments",
]

#: Compartments a bolus can be in.
COMPARTMENTS = ("paravertebral", "intramuscular", "epidural", "intravascular", "subcutaneous", "other")
#: The volume the paravertebral spread is calibrated at: 6 mL per root, as in the clinical study.
CALIBRATION_VOLUME_ML = 6.0
#: Craniocaudal extent of the paravertebral spread at the calibration volume, in vertebral
#: segments: the middle of the 1-1.5 segments asked for 6 mL (issue 18; docs/rehearsal.md).
PARAVERTEBRAL_SEGMENTS_AT_CALIBRATION = 1.25
#: Craniocaudal extent of an epidural spread of 3 mL, in vertebral segments (mean level count of
#: ventral epidural contrast at 3 mL, Jeong et al., Korean J Anesthesiol 2013;65(5):431).
EPIDURAL_SEGMENTS_AT_3_ML = 2.21
_MM3_PER_ML = 1000.0


@dataclass(frozen=True)
class Bolus:
    """One pool of injectate: an ellipsoid in ``Mri`` (LPS mm).

    Attributes
    ----------
    centre_mri : (3,) float array
        Centre, mm.
    axes_mri : (3, 3) float array
        Rows: unit directions of the three semi-axes (orthonormal); row 0 is the long
        (craniocaudal) axis of a paravertebral or epidural spread.
    semi_axes_mm : (3,) float array
        Semi-axis lengths along those rows, mm (all 0 for an intravascular injection).
    volume_ml : float
        Injected volume, mL.
    compartment : str
        One of :data:`COMPARTMENTS`.
    """

    centre_mri: np.ndarray
    axes_mri: np.ndarray
    semi_axes_mm: np.ndarray
    volume_ml: float
    compartment: str

    @property
    def extent_mm(self) -> float:
        """Longest diameter of the pool, mm."""
        return 2.0 * float(np.max(self.semi_axes_mm))

    def contains(self, points_mri: np.ndarray) -> np.ndarray:
        """(N,) bool: which of the (N, 3) ``Mri`` points (mm) lie inside the ellipsoid."""
        points_mri = np.asarray(points_mri, dtype=float).reshape(-1, 3)
        if not np.all(self.semi_axes_mm > 0):
            return np.zeros(len(points_mri), dtype=bool)
        local = (points_mri - self.centre_mri) @ self.axes_mri.T / self.semi_axes_mm
        return np.einsum("ij,ij->i", local, local) <= 1.0


@dataclass(frozen=True)
class InjectateState:
    """All the injectate so far: a tuple of :class:`Bolus`."""

    boluses: tuple[Bolus, ...] = field(default_factory=tuple)

    @property
    def total_ml(self) -> float:
        """Total injected volume, mL."""
        return float(sum(b.volume_ml for b in self.boluses))

    def contains(self, points_mri: np.ndarray) -> np.ndarray:
        """(N,) bool: where there is fluid, for (N, 3) ``Mri`` points (mm); vectorised over points.

        Only boluses whose bounding sphere reaches the points' bounding box are tested.
        """
        points_mri = np.asarray(points_mri, dtype=float).reshape(-1, 3)
        inside = np.zeros(len(points_mri), dtype=bool)
        if not len(points_mri):
            return inside
        lo, hi = points_mri.min(axis=0), points_mri.max(axis=0)
        for bolus in self.boluses:
            radius = float(np.max(bolus.semi_axes_mm))
            if radius <= 0 or np.any(bolus.centre_mri + radius < lo) or np.any(bolus.centre_mri - radius > hi):
                continue
            inside |= bolus.contains(points_mri)
        return inside


def _frame_along(long_axis_mri) -> np.ndarray:
    """(3, 3) orthonormal rows: the long axis, then two perpendicular to it."""
    long_axis = np.asarray(long_axis_mri, dtype=float)
    long_axis = long_axis / np.linalg.norm(long_axis)
    helper = np.array([1.0, 0.0, 0.0]) if abs(long_axis[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    second = np.cross(long_axis, helper)
    second /= np.linalg.norm(second)
    return np.stack([long_axis, second, np.cross(long_axis, second)])


def paravertebral_semi_axes_mm(volume_ml: float, segment_height_mm: float, segments: float = PARAVERTEBRAL_SEGMENTS_AT_CALIBRATION,
                               at_ml: float = CALIBRATION_VOLUME_ML) -> np.ndarray:
    """(3,) semi-axes (craniocaudal, transverse, transverse), mm, of a spread of ``volume_ml`` along the spine.

    The craniocaudal semi-axis is ``a = 0.5 * segments * H * (V / at_ml)^(1/3)`` (``H`` the
    segment height, mm; 1.25 segments at 6 mL by default); the transverse ones
    ``b = c = sqrt(3 V / (4 pi a))`` keep the volume exact.
    """
    volume_mm3 = volume_ml * _MM3_PER_ML
    a = 0.5 * segments * segment_height_mm * (volume_ml / at_ml) ** (1 / 3)
    b = math.sqrt(3.0 * volume_mm3 / (4.0 * math.pi * a))
    return np.array([a, b, b])


def make_bolus(compartment: str, centre_mri, volume_ml: float, spine_axis_mri, segment_height_mm: float) -> Bolus:
    """A pool of ``volume_ml`` in ``compartment`` centred at ``centre_mri`` (see the module docstring).

    Parameters
    ----------
    compartment : str
        One of :data:`COMPARTMENTS`.
    centre_mri : (3,) float array
        Tip position, LPS mm.
    volume_ml : float
        Total volume of this pool, mL (> 0).
    spine_axis_mri : (3,) float array
        Craniocaudal direction of the spine at the tip (unit, LPS).
    segment_height_mm : float
        Vertebral segment height of the case, mm.
    """
    if compartment not in COMPARTMENTS:
        raise ValueError(f"unknown compartment {compartment!r}; one of {', '.join(COMPARTMENTS)}")
    if not (volume_ml > 0 and math.isfinite(volume_ml)):
        raise ValueError(f"an injected volume must be a positive number of mL, got {volume_ml!r}")
    axes = _frame_along(spine_axis_mri)
    volume_mm3 = volume_ml * _MM3_PER_ML
    if compartment == "paravertebral":
        semi = paravertebral_semi_axes_mm(volume_ml, segment_height_mm)
    elif compartment == "epidural":
        semi = paravertebral_semi_axes_mm(volume_ml, segment_height_mm, EPIDURAL_SEGMENTS_AT_3_ML, 3.0)
    elif compartment == "intravascular":
        semi = np.zeros(3)
    else:
        r = (3.0 * volume_mm3 / (4.0 * math.pi)) ** (1 / 3)
        semi = np.array([r, r, r])
    return Bolus(np.asarray(centre_mri, dtype=float).reshape(3).copy(), axes, semi, float(volume_ml), compartment)


def spread_segments(bolus: Bolus, spine_axis_mri, segment_height_mm: float) -> float:
    """Craniocaudal extent of ``bolus`` along ``spine_axis_mri`` in vertebral segments (extent / segment height)."""
    axis = np.asarray(spine_axis_mri, dtype=float)
    axis = axis / np.linalg.norm(axis)
    # half-extent of an ellipsoid along a unit direction u: sqrt(sum (s_i (r_i . u))^2)
    half_mm = float(np.sqrt(np.sum((bolus.semi_axes_mm * (bolus.axes_mri @ axis)) ** 2)))
    return 2.0 * half_mm / segment_height_mm
