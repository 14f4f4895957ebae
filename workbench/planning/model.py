"""The puncture plan: trajectories (target, skin entry, needle, injectate) and their geometry.

Points are in the ``Mri`` frame (patient LPS, mm); the registration ``ReferenceToMri`` gives the
same path in ``Reference`` (tracker reference marker) coordinates. See docs/frames.md and
docs/planning.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from workbench import __version__
from workbench.equipment import GAUGE_OUTER_DIAMETER_MM, NEEDLE_CATALOGUE, NEEDLE_MARGIN_MM, NeedleSpec, shortest_needle
from workbench.errors import PlanError
from workbench.frames import Transform

__all__ = [
    "GAUGE_OUTER_DIAMETER_MM",
    "NEEDLE_CATALOGUE",
    "NEEDLE_MARGIN_MM",
    "NeedleSpec",
    "Plan",
    "Provenance",
    "RegistrationSummary",
    "Trajectory",
    "TrajectoryGeometry",
    "angle_to_plane_deg",
    "derive_geometry",
    "registration_summary",
    "shortest_needle",
]

# Unit normals of the patient planes in LPS, and of the Reference frame's coordinate planes.
_PATIENT_PLANE_NORMALS = {"axial": (0.0, 0.0, 1.0), "sagittal": (1.0, 0.0, 0.0), "coronal": (0.0, 1.0, 0.0)}
_REFERENCE_PLANE_NORMALS = {"xy": (0.0, 0.0, 1.0), "yz": (1.0, 0.0, 0.0), "xz": (0.0, 1.0, 0.0)}


def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _point(values, what: str) -> tuple[float, float, float]:
    try:
        arr = np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.size != 3 or not np.all(np.isfinite(arr)):
        raise PlanError(f"{what} must be 3 finite numbers (LPS mm), got {values!r}")
    return float(arr[0]), float(arr[1]), float(arr[2])


@dataclass(frozen=True)
class Trajectory:
    """One needle path, in the ``Mri`` frame (LPS, mm).

    Attributes
    ----------
    name : str
        Unique within the plan, e.g. ``"L4 right"``.
    structure : str
        What the target aims at, e.g. ``"L4 right exiting nerve root, dorsal aspect"``.
    target_lps_mm, entry_lps_mm : (3,) tuple of float
        Needle tip target and skin entry point, LPS mm.
    needle : NeedleSpec
    injectate_ml : float
        Volume injected, mL.
    drugs : str
        Free text (e.g. ``"ropivacaine 0.375 % 5 mL + dexamethasone 4 mg"``).
    approach : str
        E.g. ``"paramedian in-plane"``.
    skin_normal_lps : (3,) tuple of float or None
        Outward unit normal of the skin at the entry (from the label map), if known.
    """

    name: str
    structure: str
    target_lps_mm: tuple[float, float, float]
    entry_lps_mm: tuple[float, float, float]
    needle: NeedleSpec
    injectate_ml: float = 6.0
    drugs: str = ""
    approach: str = ""
    skin_normal_lps: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise PlanError("a trajectory needs a non-empty name")
        object.__setattr__(self, "target_lps_mm", _point(self.target_lps_mm, f"{self.name}: target"))
        object.__setattr__(self, "entry_lps_mm", _point(self.entry_lps_mm, f"{self.name}: entry"))
        if self.insertion_depth_mm < 1e-6:
            raise PlanError(f"{self.name}: entry and target are the same point")
        if not (math.isfinite(self.injectate_ml) and self.injectate_ml >= 0):
            raise PlanError(f"{self.name}: injectate volume must be >= 0 mL, got {self.injectate_ml!r}")
        if self.skin_normal_lps is not None:
            normal = np.asarray(_point(self.skin_normal_lps, f"{self.name}: skin normal"))
            norm = np.linalg.norm(normal)
            if norm < 1e-9:
                raise PlanError(f"{self.name}: skin normal has zero length")
            object.__setattr__(self, "skin_normal_lps", tuple(float(v) for v in normal / norm))

    @property
    def insertion_depth_mm(self) -> float:
        """Straight distance from the skin entry to the target, mm."""
        return float(np.linalg.norm(np.subtract(self.target_lps_mm, self.entry_lps_mm)))

    @property
    def direction_lps(self) -> np.ndarray:
        """(3,) unit vector from entry to target, LPS."""
        return np.subtract(self.target_lps_mm, self.entry_lps_mm) / self.insertion_depth_mm


def angle_to_plane_deg(direction, plane_normal) -> float:
    """Angle between a line of direction ``direction`` and the plane of normal ``plane_normal``, degrees (0..90)."""
    d = np.asarray(direction, dtype=float)
    n = np.asarray(plane_normal, dtype=float)
    sine = abs(float(d @ n)) / (np.linalg.norm(d) * np.linalg.norm(n))
    return math.degrees(math.asin(min(1.0, sine)))


@dataclass(frozen=True)
class TrajectoryGeometry:
    """Values derived from a trajectory (see :func:`derive_geometry`).

    Attributes
    ----------
    insertion_depth_mm : float
    remaining_needle_mm : float
        Needle length left outside the skin at the target (negative: the needle is too short).
    angle_to_axial_deg, angle_to_sagittal_deg, angle_to_coronal_deg : float
        Angle of the path to the patient's planes (0 = in the plane), degrees.
    angle_to_skin_normal_deg : float or None
        Angle between the path and the inward skin normal (0 = perpendicular to the skin).
    entry_reference_mm, target_reference_mm : (3,) tuple of float or None
        The points in ``Reference`` through the inverse of ``ReferenceToMri``.
    angle_to_reference_planes_deg : dict or None
        Angles of the path to the Reference frame's ``xy``, ``yz`` and ``xz`` planes, degrees.
    """

    insertion_depth_mm: float
    remaining_needle_mm: float
    angle_to_axial_deg: float
    angle_to_sagittal_deg: float
    angle_to_coronal_deg: float
    angle_to_skin_normal_deg: float | None = None
    entry_reference_mm: tuple[float, float, float] | None = None
    target_reference_mm: tuple[float, float, float] | None = None
    angle_to_reference_planes_deg: dict[str, float] | None = None


def derive_geometry(trajectory: Trajectory, reference_to_mri: Transform | None = None) -> TrajectoryGeometry:
    """Depth, remaining needle length and angles of ``trajectory``; in Reference too if ``reference_to_mri`` is given.

    Parameters
    ----------
    trajectory : Trajectory
    reference_to_mri : Transform, optional
        ``ReferenceToMri`` of the registration (see docs/frames.md).
    """
    direction = trajectory.direction_lps
    depth_mm = trajectory.insertion_depth_mm
    angles = {name: angle_to_plane_deg(direction, normal) for name, normal in _PATIENT_PLANE_NORMALS.items()}
    skin_angle = None
    if trajectory.skin_normal_lps is not None:
        cosine = float(-direction @ np.asarray(trajectory.skin_normal_lps))
        skin_angle = math.degrees(math.acos(max(-1.0, min(1.0, cosine))))
    reference = {}
    if reference_to_mri is not None:
        if reference_to_mri.name != "ReferenceToMri":
            raise PlanError(f"the registration must be ReferenceToMri, got {reference_to_mri.name}")
        mri_to_reference = reference_to_mri.inverse()
        entry_ref, target_ref = mri_to_reference.apply_to_points(np.array([trajectory.entry_lps_mm, trajectory.target_lps_mm]))
        reference = {
            "entry_reference_mm": tuple(float(v) for v in entry_ref),
            "target_reference_mm": tuple(float(v) for v in target_ref),
            "angle_to_reference_planes_deg": {
                name: angle_to_plane_deg(target_ref - entry_ref, normal) for name, normal in _REFERENCE_PLANE_NORMALS.items()
            },
        }
    return TrajectoryGeometry(
        insertion_depth_mm=depth_mm,
        remaining_needle_mm=trajectory.needle.length_mm - depth_mm,
        angle_to_axial_deg=angles["axial"],
        angle_to_sagittal_deg=angles["sagittal"],
        angle_to_coronal_deg=angles["coronal"],
        angle_to_skin_normal_deg=skin_angle,
        **reference,
    )


@dataclass(frozen=True)
class RegistrationSummary:
    """The registration a plan was made with: ``ReferenceToMri`` and its errors (mm, None if unknown).

    ``registration_id`` names the case's saved registration (``case.json`` ``registrations``)
    when the plan used one; ``tre_mm`` is the largest predicted TRE over the plan's targets;
    ``quality_warning``: one line when the registration quality gate judged it doubtful
    (``"doubtful registration: possible one-level slip ..."``), else None.
    """

    method: str
    reference_to_mri: Transform
    fre_mm: float | None = None
    tre_mm: float | None = None
    registration_id: str | None = None
    quality_warning: str | None = None
    quality_verdict: str | None = None  # the quality gate's "accepted" / "doubtful"; None: not assessed

    def __post_init__(self) -> None:
        if self.reference_to_mri.name != "ReferenceToMri":
            raise PlanError(f"the registration must be ReferenceToMri, got {self.reference_to_mri.name}")


def registration_summary(saved, target_names=None) -> RegistrationSummary:
    """The :class:`RegistrationSummary` of a case's saved registration (``case.current_registration``).

    Parameters
    ----------
    saved : workbench.case.model.SavedRegistration
    target_names : iterable of str, optional
        The plan's targets (case target names): ``tre_mm`` is the largest predicted TRE among
        them; default, or when none of them has one, the largest over every target predicted.

    Returns
    -------
    RegistrationSummary
        ``method``, ``ReferenceToMri``, ``fre_mm`` and ``registration_id`` of ``saved``;
        ``quality_warning`` when its quality-gate verdict (``provenance["quality"]``) is doubtful.

    Raises
    ------
    PlanError
        The quality gate refused the registration: a plan never uses it.
    """
    quality = (saved.provenance or {}).get("quality") or {}
    reasons = "; ".join(quality.get("reasons", ())) or "no reason recorded"
    if quality.get("verdict") == "refused":
        raise PlanError(
            f"the current registration {saved.registration_id} ({saved.method}) was refused by the quality gate "
            f"({reasons}): register again or undo to an accepted one"
        )
    tre_by_target = saved.tre_mm or {}
    chosen = [tre_by_target[name] for name in (target_names or ()) if name in tre_by_target] or list(tre_by_target.values())
    return RegistrationSummary(
        method=saved.method,
        reference_to_mri=saved.reference_to_mri,
        fre_mm=saved.fre_mm,
        tre_mm=max(chosen) if chosen else None,
        registration_id=saved.registration_id,
        quality_warning=f"doubtful registration: {reasons}" if quality.get("verdict") == "doubtful" else None,
        quality_verdict=quality.get("verdict"),
    )


@dataclass(frozen=True)
class Provenance:
    """Where a plan comes from. Never patient identifiers: the MRI is named by its voxel digest.

    Attributes
    ----------
    mri_digest : str or None
        :attr:`workbench.io.volume.LoadedVolume.source_digest` of the planning MRI (SHA-256 hex).
    software : str
        ``"workbench <version>"``.
    created_utc : str
        ISO 8601 UTC time of creation.
    author : str
        Who planned (free text, e.g. initials or a role).
    """

    mri_digest: str | None = None
    software: str = f"workbench {__version__}"
    created_utc: str = field(default_factory=_utc_now)
    author: str = ""


@dataclass(frozen=True)
class Plan:
    """A puncture plan: trajectories, the registration used and provenance.

    Attributes
    ----------
    plan_id : str
        Pseudonymous identifier (``^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$``, like case ids).
    trajectories : tuple of Trajectory
        Names unique.
    provenance : Provenance
    registration : RegistrationSummary or None
    title : str
    """

    plan_id: str
    trajectories: tuple[Trajectory, ...]
    provenance: Provenance = field(default_factory=Provenance)
    registration: RegistrationSummary | None = None
    title: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "trajectories", tuple(self.trajectories))
        names = [t.name for t in self.trajectories]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise PlanError(f"trajectory names must be unique; repeated: {', '.join(duplicates)}")

    def geometry(self, trajectory: Trajectory) -> TrajectoryGeometry:
        """:func:`derive_geometry` with this plan's registration."""
        return derive_geometry(trajectory, None if self.registration is None else self.registration.reference_to_mri)
