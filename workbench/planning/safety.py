"""Safety checks of a needle path against the label map, and a search for safer skin entries.

The needle is a segment from the skin entry to the target with the needle's outer radius. For
each group of critical structures the *clearance* is the distance from the needle surface to the
nearest voxel of the group, a lower bound: distance to the voxel centre minus the needle radius
minus half the voxel diagonal (negative: the needle may touch the structure). Thresholds and
defaults: docs/planning.md. Points are LPS mm in the ``Mri`` frame (docs/frames.md).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from workbench.errors import PlanError
from workbench.phantom.labels import BONE_LABELS, Label
from workbench.planning.model import Trajectory

__all__ = [
    "CRITICAL_STRUCTURES",
    "DEFAULT_WARNING_CLEARANCE_MM",
    "EntrySuggestion",
    "LabelMap",
    "SafetyReport",
    "SafetyThresholds",
    "check_trajectory",
    "skin_normal_at",
    "suggest_entries",
]

#: Critical structure groups of the label map (name -> labels).
CRITICAL_STRUCTURES: dict[str, tuple[Label, ...]] = {
    "nerve root": (Label.NERVE_ROOT, Label.DORSAL_ROOT_GANGLION),
    "radicular artery": (Label.RADICULAR_ARTERY,),
    "dura/CSF": (Label.DURA, Label.CSF),
    "aorta/IVC": (Label.AORTA, Label.IVC),
    "disc": (Label.DISC_ANNULUS, Label.DISC_NUCLEUS),
    "kidney": (Label.KIDNEY,),
}
#: Default warning clearance per group, mm (see docs/planning.md).
DEFAULT_WARNING_CLEARANCE_MM = {
    "nerve root": 2.0,
    "radicular artery": 3.0,
    "dura/CSF": 3.0,
    "aorta/IVC": 10.0,
    "disc": 2.0,
    "kidney": 5.0,
}
#: The group a paravertebral target lies on: measured only up to ``target_zone_mm`` short of the target.
TARGET_GROUP = "nerve root"
STATUS_ORDER = ("ok", "warning", "blocked")


@dataclass(frozen=True)
class SafetyThresholds:
    """Limits of the safety checks (defaults in docs/planning.md).

    Attributes
    ----------
    warning_clearance_mm : dict of str to float
        Per structure group: a clearance below this is a warning; below 0 the path is blocked.
        Groups not given keep their :data:`DEFAULT_WARNING_CLEARANCE_MM`.
    target_zone_mm : float
        The last part of the path before the target where the target's own group (nerve root)
        is not counted.
    bone_tolerance_mm : float
        Bone within this distance before the target does not count as crossed.
    needle_margin_mm : float
        Needle length to keep outside the skin at the target; less is a warning, negative blocks.
    """

    warning_clearance_mm: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WARNING_CLEARANCE_MM))
    target_zone_mm: float = 5.0
    bone_tolerance_mm: float = 1.0
    needle_margin_mm: float = 10.0

    def __post_init__(self) -> None:
        unknown = set(self.warning_clearance_mm) - set(CRITICAL_STRUCTURES)
        if unknown:
            raise PlanError(f"unknown structure group(s) in thresholds: {', '.join(sorted(unknown))}")
        object.__setattr__(self, "warning_clearance_mm", {**DEFAULT_WARNING_CLEARANCE_MM, **self.warning_clearance_mm})
        values = [*self.warning_clearance_mm.values(), self.target_zone_mm, self.bone_tolerance_mm, self.needle_margin_mm]
        if not all(math.isfinite(v) and v >= 0 for v in values):
            raise PlanError("safety thresholds must be finite and >= 0 mm")


class LabelMap:
    """A label map in the ``Mri`` frame, for path queries.

    Parameters
    ----------
    labels : (K, J, I) int array
        Label values (:class:`~workbench.phantom.labels.Label`), indexed [k, j, i] as SimpleITK arrays.
    index_to_lps : (4, 4) float array
        Voxel index (i, j, k) to LPS mm (``MriVoxelToMri``).
    """

    def __init__(self, labels: np.ndarray, index_to_lps: np.ndarray):
        self.labels = np.asarray(labels)
        if self.labels.ndim != 3:
            raise PlanError(f"a label map must be 3D, got shape {self.labels.shape}")
        self.index_to_lps = np.asarray(index_to_lps, dtype=float)
        self.lps_to_index = np.linalg.inv(self.index_to_lps)
        self.spacing_mm = np.linalg.norm(self.index_to_lps[:3, :3], axis=0)

    @classmethod
    def from_volume(cls, volume) -> "LabelMap":
        """From a :class:`~workbench.io.volume.LoadedVolume` of integer labels."""
        import SimpleITK as sitk

        return cls(sitk.GetArrayFromImage(volume.image), volume.index_to_lps_matrix)

    @property
    def half_voxel_diagonal_mm(self) -> float:
        return float(np.linalg.norm(self.spacing_mm) / 2.0)

    def to_index(self, points_lps: np.ndarray) -> np.ndarray:
        """(N, 3) continuous (i, j, k) indices of (N, 3) LPS points."""
        return np.asarray(points_lps, dtype=float) @ self.lps_to_index[:3, :3].T + self.lps_to_index[:3, 3]

    def labels_at(self, points_lps: np.ndarray) -> np.ndarray:
        """(N,) labels at (N, 3) LPS points (nearest voxel; -1 outside the map)."""
        ijk = np.rint(self.to_index(points_lps)).astype(int)
        shape_ijk = np.array(self.labels.shape[::-1])
        inside = np.all((ijk >= 0) & (ijk < shape_ijk), axis=1)
        out = np.full(len(ijk), -1, dtype=int)
        out[inside] = self.labels[ijk[inside, 2], ijk[inside, 1], ijk[inside, 0]]
        return out

    def crop(self, lo_lps: np.ndarray, hi_lps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels of the box ``lo_lps..hi_lps`` and the (i, j, k) index of its first voxel."""
        corners = np.array([[x, y, z] for x in (lo_lps[0], hi_lps[0]) for y in (lo_lps[1], hi_lps[1]) for z in (lo_lps[2], hi_lps[2])])
        ijk = self.to_index(corners)
        shape_ijk = np.array(self.labels.shape[::-1])
        lo = np.clip(np.floor(ijk.min(axis=0)).astype(int), 0, shape_ijk)
        hi = np.clip(np.ceil(ijk.max(axis=0)).astype(int) + 1, 0, shape_ijk)
        return self.labels[lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]], lo


class _StructurePoints:
    """Surface voxel centres (LPS mm) of each critical group inside a box, for fast distance queries.

    Interior voxels are left out: a path from the skin (outside every group) that reaches into a
    structure crosses its surface, so the nearest surface voxel is as near as any.
    """

    def __init__(self, label_map: LabelMap, lo_lps: np.ndarray, hi_lps: np.ndarray):
        sub, first_ijk = label_map.crop(lo_lps, hi_lps)
        self.points_lps: dict[str, np.ndarray] = {}
        for name, labels in CRITICAL_STRUCTURES.items():
            mask = np.isin(sub, [int(v) for v in labels])
            surface = mask & ~ndimage.binary_erosion(mask)
            kji = np.argwhere(surface)
            ijk = kji[:, ::-1] + first_ijk
            self.points_lps[name] = ijk @ label_map.index_to_lps[:3, :3].T + label_map.index_to_lps[:3, 3]


def _distances_to_segment(points: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """(N,) distances, mm, from (N, 3) points to the segment ``start``-``end``."""
    axis = end - start
    t = np.clip((points - start) @ axis / float(axis @ axis), 0.0, 1.0)
    return np.linalg.norm(points - (start + t[:, None] * axis), axis=1)


@dataclass(frozen=True)
class SafetyReport:
    """The outcome of :func:`check_trajectory`.

    Attributes
    ----------
    status : {"ok", "warning", "blocked"}
    reasons : list of str
        One line per finding that is not ok.
    clearance_mm : dict of str to float or None
        Per structure group, the clearance (mm, lower bound); None: nothing of the group within
        the search distance (the largest warning threshold).
    bone_crossed : str or None
        Name of the first bone label on the path before the target.
    bone_depth_mm : float or None
        Depth below the entry of that bone, mm.
    needle_margin_mm : float
        Needle length left outside the skin at the target, mm.
    """

    status: str
    reasons: tuple[str, ...]
    clearance_mm: dict[str, float | None]
    bone_crossed: str | None
    bone_depth_mm: float | None
    needle_margin_mm: float

    @property
    def min_clearance_mm(self) -> float | None:
        """Smallest clearance over all groups (None if no structure is near)."""
        values = [v for v in self.clearance_mm.values() if v is not None]
        return min(values) if values else None

    def to_dict(self) -> dict:
        return {
            "status": self.status,
            "reasons": list(self.reasons),
            "clearance_mm": dict(self.clearance_mm),
            "bone_crossed": self.bone_crossed,
            "bone_depth_mm": self.bone_depth_mm,
            "needle_margin_mm": self.needle_margin_mm,
        }


def _search_mm(thresholds: SafetyThresholds, label_map: LabelMap, radius_mm: float) -> float:
    return max(thresholds.warning_clearance_mm.values(), default=0.0) + radius_mm + label_map.half_voxel_diagonal_mm


def _structure_points_for(segments: list[tuple[np.ndarray, np.ndarray]], label_map, search_mm) -> _StructurePoints:
    ends = np.array([p for segment in segments for p in segment])
    return _StructurePoints(label_map, ends.min(axis=0) - search_mm, ends.max(axis=0) + search_mm)


def _clearances(entry, target, radius_mm, structures: _StructurePoints, label_map, thresholds) -> dict[str, float | None]:
    depth_mm = float(np.linalg.norm(target - entry))
    shortened = entry + (target - entry) * max(0.0, depth_mm - thresholds.target_zone_mm) / depth_mm
    search_mm = _search_mm(thresholds, label_map, radius_mm)
    result: dict[str, float | None] = {}
    for name, points in structures.points_lps.items():
        end = shortened if name == TARGET_GROUP else target
        if len(points) == 0 or (name == TARGET_GROUP and depth_mm <= thresholds.target_zone_mm):
            result[name] = None
            continue
        clearance = float(_distances_to_segment(points, entry, end).min()) - radius_mm - label_map.half_voxel_diagonal_mm
        result[name] = clearance if clearance <= search_mm else None
    return result


def _first_bone(entry, target, label_map: LabelMap, thresholds: SafetyThresholds) -> tuple[str | None, float | None]:
    depth_mm = float(np.linalg.norm(target - entry))
    step_mm = float(label_map.spacing_mm.min()) / 2.0
    depths = np.arange(0.0, max(0.0, depth_mm - thresholds.bone_tolerance_mm), step_mm)
    labels = label_map.labels_at(entry + np.outer(depths / depth_mm, target - entry))
    hits = np.flatnonzero(np.isin(labels, [int(v) for v in BONE_LABELS]))
    if hits.size == 0:
        return None, None
    return Label(int(labels[hits[0]])).name.lower().replace("_", " "), float(depths[hits[0]])


def _evaluate(trajectory: Trajectory, label_map, thresholds, structures: _StructurePoints | None) -> SafetyReport:
    entry, target = np.array(trajectory.entry_lps_mm), np.array(trajectory.target_lps_mm)
    findings: list[tuple[str, str]] = []
    if structures is None:
        clearance, bone, bone_depth_mm = {}, None, None
        findings.append(("warning", "no label map: critical structures and bone were not checked"))
    else:
        clearance = _clearances(entry, target, trajectory.needle.radius_mm, structures, label_map, thresholds)
        bone, bone_depth_mm = _first_bone(entry, target, label_map, thresholds)
    margin_mm = trajectory.needle.length_mm - trajectory.insertion_depth_mm
    for name, value in clearance.items():
        limit = thresholds.warning_clearance_mm.get(name, 0.0)
        if value is not None and value < 0:
            findings.append(("blocked", f"needle may touch the {name} (clearance {value:.1f} mm)"))
        elif value is not None and value < limit:
            findings.append(("warning", f"{name} {value:.1f} mm from the needle (< {limit:g} mm)"))
    if bone is not None:
        findings.append(("blocked", f"path crosses bone ({bone}) at {bone_depth_mm:.1f} mm depth"))
    if margin_mm < 0:
        findings.append(("blocked", f"{trajectory.needle.label} needle is {-margin_mm:.1f} mm too short"))
    elif margin_mm < thresholds.needle_margin_mm:
        findings.append(("warning", f"only {margin_mm:.1f} mm of needle left outside the skin (< {thresholds.needle_margin_mm:g} mm)"))
    status = max((level for level, _ in findings), key=STATUS_ORDER.index, default="ok")
    return SafetyReport(status, tuple(reason for _, reason in findings), clearance, bone, bone_depth_mm, margin_mm)


def check_trajectory(
    trajectory: Trajectory, label_map: LabelMap | None, thresholds: SafetyThresholds | None = None
) -> SafetyReport:
    """Run every safety check of one trajectory.

    Parameters
    ----------
    trajectory : Trajectory
        Target and entry in LPS mm (``Mri`` frame).
    label_map : LabelMap or None
        In the same frame. Without one only the needle length is checked, and the report
        carries a warning that structures and bone were not.
    thresholds : SafetyThresholds, optional
        Defaults as documented in docs/planning.md.
    """
    thresholds = thresholds or SafetyThresholds()
    if label_map is None:
        return _evaluate(trajectory, None, thresholds, None)
    entry, target = np.array(trajectory.entry_lps_mm), np.array(trajectory.target_lps_mm)
    search_mm = _search_mm(thresholds, label_map, trajectory.needle.radius_mm)
    structures = _structure_points_for([(entry, target)], label_map, search_mm)
    return _evaluate(trajectory, label_map, thresholds, structures)


def skin_normal_at(label_map: LabelMap, entry_lps_mm, smoothing_mm: float = 2.0) -> tuple[float, float, float] | None:
    """Outward unit normal (LPS) of the body surface (label != AIR) near ``entry_lps_mm``; None if no surface there."""
    entry = np.asarray(entry_lps_mm, dtype=float)
    reach_mm = 3.0 * smoothing_mm + float(label_map.spacing_mm.max())
    sub, first_ijk = label_map.crop(entry - reach_mm, entry + reach_mm)
    if min(sub.shape) < 3:
        return None
    body = ndimage.gaussian_filter((sub != Label.AIR).astype(float), smoothing_mm / label_map.spacing_mm[::-1])
    kji = np.clip(np.rint(label_map.to_index(entry[None])[0][::-1] - first_ijk[::-1]).astype(int), 1, np.array(sub.shape) - 2)
    gradient_kji = np.array([g[tuple(kji)] for g in np.gradient(body)])
    gradient_lps = label_map.lps_to_index[:3, :3].T @ gradient_kji[::-1]
    norm = float(np.linalg.norm(gradient_lps))
    if norm < 1e-6:
        return None
    return tuple(float(v) for v in -gradient_lps / norm)


@dataclass(frozen=True)
class EntrySuggestion:
    """A candidate skin entry for the same target, with its checks.

    Attributes
    ----------
    trajectory : Trajectory
        The original trajectory with ``entry_lps_mm`` replaced.
    safety : SafetyReport
    angle_change_deg : float
        Angle between this path and the original one, degrees.
    """

    trajectory: Trajectory
    safety: SafetyReport
    angle_change_deg: float

    def rank_key(self, clearance_cap_mm: float) -> tuple:
        """Status, then clearance (capped, rounded to 1 mm; larger first), then depth, then angle change."""
        clearance = self.safety.min_clearance_mm
        capped = clearance_cap_mm if clearance is None else min(clearance, clearance_cap_mm)
        return (STATUS_ORDER.index(self.safety.status), -round(capped), self.trajectory.insertion_depth_mm, self.angle_change_deg)


def _skin_point(label_map: LabelMap, target: np.ndarray, outward: np.ndarray, max_depth_mm: float) -> np.ndarray | None:
    """First point outside the body (label AIR or off the map) going out from ``target``, or None within ``max_depth_mm``."""
    step_mm = float(label_map.spacing_mm.min()) / 2.0
    depths = np.arange(step_mm, max_depth_mm, step_mm)
    labels = label_map.labels_at(target + np.outer(depths, outward))
    outside = np.flatnonzero(labels <= int(Label.AIR))
    return None if outside.size == 0 else target + depths[outside[0]] * outward


def suggest_entries(
    trajectory: Trajectory,
    label_map: LabelMap,
    thresholds: SafetyThresholds | None = None,
    ring_radii_mm: tuple[float, ...] = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    directions: int = 12,
    clearance_cap_mm: float = 10.0,
) -> list[EntrySuggestion]:
    """Candidate skin entries around the chosen one, safest first.

    Candidates aim at points on rings around the chosen entry (in the plane perpendicular to the
    path); each candidate path runs from the target outward through that point to the first air
    voxel (the skin), searched up to twice the original depth. They are ranked by
    :meth:`EntrySuggestion.rank_key`. Radius 0 is the chosen direction itself.

    Parameters
    ----------
    trajectory : Trajectory
        The chosen path (LPS mm, ``Mri`` frame); its needle is kept for every candidate.
    label_map : LabelMap
    thresholds : SafetyThresholds, optional
    ring_radii_mm : tuple of float
        Radii of the rings around the chosen entry, mm.
    directions : int
        Candidates per ring.
    clearance_cap_mm : float
        Clearance beyond which paths rank as equally clear, mm.

    Returns
    -------
    list of EntrySuggestion
        Safest first.
    """
    thresholds = thresholds or SafetyThresholds()
    target, entry = np.array(trajectory.target_lps_mm), np.array(trajectory.entry_lps_mm)
    inward = trajectory.direction_lps
    u = np.cross(inward, [0.0, 0.0, 1.0] if abs(inward[2]) < 0.9 else [1.0, 0.0, 0.0])
    u /= np.linalg.norm(u)
    v = np.cross(inward, u)
    max_depth_mm = trajectory.insertion_depth_mm * 2.0
    entries = []
    for radius_mm in ring_radii_mm:
        for angle in np.linspace(0.0, 2 * np.pi, 1 if radius_mm == 0 else directions, endpoint=False):
            aim = entry + radius_mm * (np.cos(angle) * u + np.sin(angle) * v)
            outward = (aim - target) / np.linalg.norm(aim - target)
            skin = _skin_point(label_map, target, outward, max_depth_mm)
            if skin is not None:
                entries.append(skin)
    if not entries:
        return []
    search_mm = _search_mm(thresholds, label_map, trajectory.needle.radius_mm)
    structures = _structure_points_for([(e, target) for e in entries], label_map, search_mm)
    suggestions = []
    for skin in entries:
        candidate = _replace_entry(trajectory, skin)
        cosine = float(candidate.direction_lps @ inward)
        suggestions.append(
            EntrySuggestion(candidate, _evaluate(candidate, label_map, thresholds, structures), math.degrees(math.acos(min(1.0, cosine))))
        )
    return sorted(suggestions, key=lambda s: s.rank_key(clearance_cap_mm))


def _replace_entry(trajectory: Trajectory, entry_lps_mm: np.ndarray) -> Trajectory:
    return dataclasses.replace(trajectory, entry_lps_mm=tuple(float(x) for x in entry_lps_mm), skin_normal_lps=None)
