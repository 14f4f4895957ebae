"""Safety checks of a needle path against the MRI and the label map, and a search for safer skin entries.

:func:`check_trajectory` runs every check of one path: the label-free ones of
:mod:`workbench.planning.mri_checks` (target and entry inside the MRI, entry on the skin, path
through air; with the body segmented from the MRI), the needle length, and with a label map the
anatomical ones below. The report's status is the worst finding; a check that could not run is
"not checked" (a warning), never "ok".

The needle is a segment from the skin entry to the target with the needle's outer radius. For
each group of critical structures the *clearance* is the distance from the needle surface to the
nearest voxel of the group, a lower bound: distance to the voxel centre minus the needle radius
minus half the voxel diagonal (negative: the needle may touch the structure). Thresholds and
defaults: docs/planning.md. Points are LPS mm in the ``Mri`` frame (docs/frames.md). Label
values are read through the label map's table (:class:`workbench.anatomy.LabelMap`), never
compared with constants.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from workbench.anatomy import BONE_NAMES, Label, LabelMap, display_name
from workbench.equipment import NEEDLE_MARGIN_MM
from workbench.errors import PlanError
from workbench.frames import apply_affine
from workbench.planning.model import Trajectory
from workbench.planning.mri_checks import (
    CHECK_ENTRY_ON_SKIN,
    CHECK_PATH_THROUGH_AIR,
    DEFAULT_SKIN_TOLERANCE_MM,
    BodyMask,
    CheckResult,
    check_path,
)

__all__ = [
    "BONE_GROUP",
    "BodyMask",
    "CRITICAL_STRUCTURES",
    "CheckResult",
    "DEFAULT_WARNING_CLEARANCE_MM",
    "EntrySuggestion",
    "LabelMap",
    "NOT_CHECKED_REASONS",
    "SAFER_ENTRY_RING_RADII_MM",
    "SKIN_GROUP",
    "STATUS_ORDER",
    "STRUCTURE_GROUPS",
    "SafetyReport",
    "SafetyThresholds",
    "StructureCoverage",
    "check_trajectory",
    "skin_normal_at",
    "suggest_entries",
]

#: Critical structure groups (name -> vocabulary labels; their values come from the label map's table).
CRITICAL_STRUCTURES: dict[str, tuple[Label, ...]] = {
    "nerve root": (Label.NERVE_ROOT, Label.DORSAL_ROOT_GANGLION),
    "radicular artery": (Label.RADICULAR_ARTERY,),
    # the canal's contents: imported segmentations give the canal or the cord instead of dura and CSF
    "dura/CSF": (Label.DURA, Label.CSF, Label.SPINAL_CANAL, Label.SPINAL_CORD),
    "aorta/IVC": (Label.AORTA, Label.IVC),
    "disc": (Label.DISC_ANNULUS, Label.DISC_NUCLEUS, Label.DISC),
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
#: The bone group of the coverage list (the bone check: any class of ``workbench.anatomy.BONE_NAMES``).
BONE_GROUP = "bone"
#: The skin/body group of the coverage list (the MRI checks: entry on the skin, path through air).
SKIN_GROUP = "skin/body"
#: Every structure group a safety report says it checked or did not check, in report order.
STRUCTURE_GROUPS = (*CRITICAL_STRUCTURES, BONE_GROUP, SKIN_GROUP)
#: Why a group was not checked: its classes are not in the label map, the path (or the zone searched
#: around it) leaves the label map / MRI, or nothing is known (no label map, no MRI, unnamed label values).
NOT_CHECKED_REASONS = ("absent", "outside", "unknown")
#: Report statuses, best first: "incomplete" = no finding, but something was not checked.
STATUS_ORDER = ("ok", "incomplete", "warning", "blocked")
#: Radii of the rings of candidate entries that :func:`suggest_entries` searches around the chosen
#: entry, mm (the widget and notebook 04 use it too; docs/planning.md).
SAFER_ENTRY_RING_RADII_MM = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)


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
    skin_tolerance_mm : float
        An entry farther than this from the body surface (segmented from the MRI) is not on the
        skin, and a path running longer than this outside the body goes through air: both block
        (:mod:`workbench.planning.mri_checks`).
    """

    warning_clearance_mm: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WARNING_CLEARANCE_MM))
    target_zone_mm: float = 5.0
    bone_tolerance_mm: float = 1.0
    needle_margin_mm: float = NEEDLE_MARGIN_MM
    skin_tolerance_mm: float = DEFAULT_SKIN_TOLERANCE_MM

    def __post_init__(self) -> None:
        unknown = set(self.warning_clearance_mm) - set(CRITICAL_STRUCTURES)
        if unknown:
            raise PlanError(f"unknown structure group(s) in thresholds: {', '.join(sorted(unknown))}")
        object.__setattr__(self, "warning_clearance_mm", {**DEFAULT_WARNING_CLEARANCE_MM, **self.warning_clearance_mm})
        values = [
            *self.warning_clearance_mm.values(), self.target_zone_mm, self.bone_tolerance_mm, self.needle_margin_mm,
            self.skin_tolerance_mm,
        ]
        if not all(math.isfinite(v) and v >= 0 for v in values):
            raise PlanError("safety thresholds must be finite and >= 0 mm")


# ``LabelMap`` (re-exported above) is workbench.anatomy.LabelMap: labels, geometry and label table.


@dataclass(frozen=True)
class StructureCoverage:
    """Whether a safety report checked one structure group of :data:`STRUCTURE_GROUPS`, and why not.

    Attributes
    ----------
    name : str
        The group (``"radicular artery"``, ``"bone"``, ``"skin/body"``...).
    checked : bool
    reason : {"absent", "outside", "unknown"} or None
        Why it was not checked (:data:`NOT_CHECKED_REASONS`); None when checked.
    detail : str
        One line a physician reads: what was found, or why it could not be checked
        (``"absent from the label map (its table names no radicular artery)"``).
    """

    name: str
    checked: bool
    reason: str | None
    detail: str

    def __post_init__(self) -> None:
        if self.checked != (self.reason is None) or (self.reason is not None and self.reason not in NOT_CHECKED_REASONS):
            raise PlanError(f"structure coverage of {self.name!r}: reason must be None when checked, else one of {NOT_CHECKED_REASONS}")

    def to_dict(self) -> dict:
        return {"name": self.name, "reason": self.reason, "detail": self.detail}


class _StructurePoints:
    """Surface voxel centres (``Mri``, LPS mm) of each critical group inside a box, for fast distance queries.

    Interior voxels are left out: a path from the skin (outside every group) that reaches into a
    structure crosses its surface, so the nearest surface voxel is as near as any.
    """

    def __init__(self, label_map: LabelMap, lo_mri: np.ndarray, hi_mri: np.ndarray):
        values_kji, first_ijk = label_map.crop(lo_mri, hi_mri)
        #: Label values in the box that the table does not name (then nothing there can be checked).
        self.unknown_values = tuple(int(v) for v in np.unique(values_kji) if int(v) not in label_map.table)
        self.points_mri: dict[str, np.ndarray] = {}
        for name, labels in CRITICAL_STRUCTURES.items():
            mask_kji = label_map.mask(labels, values_kji)
            surface_kji = mask_kji & ~ndimage.binary_erosion(mask_kji)
            kji = np.argwhere(surface_kji)
            ijk = kji[:, ::-1] + first_ijk
            self.points_mri[name] = apply_affine(label_map.mri_voxel_to_mri.matrix, ijk)


def _distances_to_segment(points_mri: np.ndarray, start_mri: np.ndarray, end_mri: np.ndarray) -> np.ndarray:
    """(N,) distances, mm, from (N, 3) points to the segment ``start_mri``-``end_mri`` (all LPS mm)."""
    axis_mm = end_mri - start_mri
    fraction = np.clip((points_mri - start_mri) @ axis_mm / float(axis_mm @ axis_mm), 0.0, 1.0)
    return np.linalg.norm(points_mri - (start_mri + fraction[:, None] * axis_mm), axis=1)


@dataclass(frozen=True)
class SafetyReport:
    """The outcome of :func:`check_trajectory`.

    Attributes
    ----------
    status : {"ok", "incomplete", "warning", "blocked"}
        The worst finding (:data:`STATUS_ORDER`); "ok" only when every group of
        :data:`STRUCTURE_GROUPS` and every check was checked.
    reasons : list of str
        One line per finding that is not ok, and one per reason groups were not checked
        (``"not checked: radicular artery, aorta/IVC (absent from the label map ...)"``).
    clearance_mm : dict of str to float or None
        Per structure group, the clearance (mm, lower bound); None: nothing of the group within
        the search distance (the largest warning threshold).
    bone_crossed : str or None
        Name of the first bone label on the path before the target.
    bone_depth_mm : float or None
        Depth below the entry of that bone, mm.
    needle_margin_mm : float
        Needle length left outside the skin at the target, mm.
    checks : tuple of CheckResult
        Every check that was run or could not run, ok ones included (empty for the quick
        evaluations of :func:`suggest_entries`).
    structures : tuple of StructureCoverage
        One per group of :data:`STRUCTURE_GROUPS`: checked, or not and why.
    """

    status: str
    reasons: tuple[str, ...]
    clearance_mm: dict[str, float | None]
    bone_crossed: str | None
    bone_depth_mm: float | None
    needle_margin_mm: float
    checks: tuple[CheckResult, ...] = ()
    structures: tuple[StructureCoverage, ...] = ()

    def __post_init__(self) -> None:
        if self.status not in STATUS_ORDER:
            raise PlanError(f"safety status must be one of {STATUS_ORDER}, got {self.status!r}")
        if self.status == "ok" and (self.unchecked_structures or any(c.status not in ("ok",) for c in self.checks)):
            raise PlanError("a safety report with a structure or check not checked cannot be 'ok'")

    @property
    def checked_structures(self) -> tuple[str, ...]:
        """Names of the groups that were checked."""
        return tuple(s.name for s in self.structures if s.checked)

    @property
    def unchecked_structures(self) -> dict[str, StructureCoverage]:
        """The groups that were not checked: name -> coverage (with ``reason`` and ``detail``)."""
        return {s.name: s for s in self.structures if not s.checked}

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
            "checks": [check.to_dict() for check in self.checks],
            "structures_checked": list(self.checked_structures),
            "structures_not_checked": [s.to_dict() for s in self.structures if not s.checked],
        }


def _search_mm(thresholds: SafetyThresholds, label_map: LabelMap, radius_mm: float) -> float:
    return max(thresholds.warning_clearance_mm.values(), default=0.0) + radius_mm + label_map.half_voxel_diagonal_mm


def _structure_points_for(segments_mri: list[tuple[np.ndarray, np.ndarray]], label_map, search_mm) -> _StructurePoints:
    ends_mri = np.array([p for segment in segments_mri for p in segment])
    return _StructurePoints(label_map, ends_mri.min(axis=0) - search_mm, ends_mri.max(axis=0) + search_mm)


def _clearances(entry_mri, target_mri, radius_mm, structures: _StructurePoints, label_map, thresholds) -> dict[str, float | None]:
    depth_mm = float(np.linalg.norm(target_mri - entry_mri))
    shortened_mri = entry_mri + (target_mri - entry_mri) * max(0.0, depth_mm - thresholds.target_zone_mm) / depth_mm
    search_mm = _search_mm(thresholds, label_map, radius_mm)
    result: dict[str, float | None] = {}
    for name, points_mri in structures.points_mri.items():
        end_mri = shortened_mri if name == TARGET_GROUP else target_mri
        if len(points_mri) == 0 or (name == TARGET_GROUP and depth_mm <= thresholds.target_zone_mm):
            result[name] = None
            continue
        distance_mm = float(_distances_to_segment(points_mri, entry_mri, end_mri).min())
        clearance_mm = distance_mm - radius_mm - label_map.half_voxel_diagonal_mm
        result[name] = clearance_mm if clearance_mm <= search_mm else None
    return result


def _first_bone(entry_mri, target_mri, label_map: LabelMap, thresholds: SafetyThresholds) -> tuple[str | None, float | None]:
    depth_mm = float(np.linalg.norm(target_mri - entry_mri))
    step_mm = float(label_map.spacing_mm.min()) / 2.0
    depths_mm = np.arange(0.0, max(0.0, depth_mm - thresholds.bone_tolerance_mm), step_mm)
    values = label_map.values_at(entry_mri + np.outer(depths_mm / depth_mm, target_mri - entry_mri))
    hits = np.flatnonzero(label_map.bone_mask(values))
    if hits.size == 0:
        return None, None
    return display_name(label_map.name_of(values[hits[0]])), float(depths_mm[hits[0]])


def _edge_distance_mm(label_map: LabelMap, points_mri: np.ndarray) -> np.ndarray:
    """(N,) distance, mm, from each point to the edge of the label map's extent (the box of its voxels,
    half a voxel beyond the outer centres): positive inside, negative outside (exact on orthogonal grids)."""
    ijk = label_map.to_ijk(points_mri)
    shape_ijk = np.array(label_map.array.shape[::-1], dtype=float)
    inner_mm = np.minimum(ijk + 0.5, shape_ijk - 0.5 - ijk) * label_map.spacing_mm
    return inner_mm.min(axis=1)


def _path_points(entry_mri: np.ndarray, target_mri: np.ndarray, step_mm: float) -> tuple[np.ndarray, float]:
    """Points every ``step_mm`` or less from the entry to the target (both included), and the step, mm."""
    depth_mm = float(np.linalg.norm(target_mri - entry_mri))
    count = max(2, int(np.ceil(depth_mm / step_mm)) + 1)
    return entry_mri + np.outer(np.linspace(0.0, 1.0, count), target_mri - entry_mri), depth_mm / (count - 1)


def _label_map_coverage(
    entry_mri, target_mri, radius_mm: float, label_map: LabelMap | None, structures: _StructurePoints | None,
    thresholds: SafetyThresholds, body: BodyMask | None, clearance: dict[str, float | None], bone: str | None, bone_depth_mm,
) -> list[StructureCoverage]:
    """Coverage of the critical groups and bone: absent from the table, outside the map's extent, unknown, or checked.

    A path point in the air (label AIR, or outside the MRI's body) needs no map around it: no
    structure lies there. Every other point must lie inside the map, and beyond the first ``reach``
    mm of the path (where the zone around it reaches into the air behind the skin, which a label
    map need not hold) the map must reach the group's search distance around it: its warning
    clearance + needle radius + half a voxel diagonal (bone: the point itself).
    """
    groups = [*CRITICAL_STRUCTURES, BONE_GROUP]
    if label_map is None or structures is None:
        return [StructureCoverage(name, False, "unknown", "no label map") for name in groups]
    if structures.unknown_values:
        values = ", ".join(str(v) for v in structures.unknown_values[:10])
        detail = f"label values {values} near the path are not in the label table"
        return [StructureCoverage(name, False, "unknown", detail) for name in groups]
    points_mri, step_mm = _path_points(entry_mri, target_mri, float(label_map.spacing_mm.min()) / 2.0)
    edge_mm = _edge_distance_mm(label_map, points_mri)
    in_air = label_map.mask([Label.AIR], label_map.values_at(points_mri))
    if body is not None:
        outside_body_mm = body.surface_distance_mm(points_mri)
        in_air |= np.isfinite(outside_body_mm) & (outside_body_mm > 0)
    edge_mm = np.where(in_air, np.inf, edge_mm)
    outside_mm = float(np.count_nonzero(edge_mm < 0) * step_mm)
    from_entry_mm = np.linalg.norm(points_mri - entry_mri, axis=1)
    coverage = []
    for name in groups:
        labels = sorted(BONE_NAMES) if name == BONE_GROUP else CRITICAL_STRUCTURES[name]
        if not label_map.values_of(labels):
            coverage.append(StructureCoverage(name, False, "absent", "absent from the label map"))
            continue
        reach_mm = 0.0 if name == BONE_GROUP else thresholds.warning_clearance_mm[name] + radius_mm + label_map.half_voxel_diagonal_mm
        deep = from_entry_mm >= reach_mm
        nearest_edge_mm = float(edge_mm[deep].min()) if deep.any() else np.inf
        if outside_mm > 0:
            detail = f"outside the label map: {outside_mm:.1f} mm of the path lies beyond its extent"
            coverage.append(StructureCoverage(name, False, "outside", detail))
        elif nearest_edge_mm < reach_mm:
            detail = (f"outside the label map: it ends {nearest_edge_mm:.1f} mm from the path, inside the "
                      f"{reach_mm:.1f} mm searched around it")
            coverage.append(StructureCoverage(name, False, "outside", detail))
        elif name == BONE_GROUP:
            found = "no bone on the path before the target" if bone is None else f"{bone} at {bone_depth_mm:.1f} mm depth"
            coverage.append(StructureCoverage(name, True, None, found))
        else:
            value = clearance.get(name)
            found = f"none within {reach_mm:.1f} mm of the needle" if value is None else f"clearance {value:.1f} mm"
            coverage.append(StructureCoverage(name, True, None, found))
    return coverage


def _skin_coverage(checks: list[CheckResult]) -> StructureCoverage:
    """Coverage of the skin/body from the MRI checks (entry on the skin, path through air)."""
    by_name = {c.name: c for c in checks}
    skin, air = by_name.get(CHECK_ENTRY_ON_SKIN), by_name.get(CHECK_PATH_THROUGH_AIR)
    if skin is None or air is None:
        return StructureCoverage(SKIN_GROUP, False, "unknown", "the MRI checks did not run")
    for check in (skin, air):
        if check.status == "not checked":
            reason = "unknown" if "no MRI" in check.detail else "absent" if "no body" in check.detail else "outside"
            return StructureCoverage(SKIN_GROUP, False, reason, f"{check.name}: {check.detail}")
        if check.status == "incomplete":
            return StructureCoverage(SKIN_GROUP, False, "outside", f"{check.name}: {check.detail}")
    return StructureCoverage(SKIN_GROUP, True, None, f"{skin.detail}; {air.detail}")


def _not_checked_lines(coverage: list[StructureCoverage]) -> list[str]:
    """One reason line per distinct why, naming the groups (the skin/body's lines come from the MRI checks)."""
    by_detail: dict[str, list[str]] = {}
    for item in coverage:
        if not item.checked and item.name != SKIN_GROUP:
            by_detail.setdefault(item.detail, []).append(item.name)
    lines = []
    for detail, names in by_detail.items():
        if detail == "no label map" and len(names) == len(CRITICAL_STRUCTURES) + 1:
            lines.append("not checked: critical structures and bone (no label map)")
        else:
            lines.append(f"not checked: {', '.join(names)} ({detail})")
    return lines


def _level(check_status: str) -> str:
    """The report level of a check's status: a check that did not run (fully) makes the report incomplete."""
    return "incomplete" if check_status in ("not checked", "incomplete") else check_status


def _evaluate(
    trajectory: Trajectory,
    label_map,
    thresholds,
    structures: _StructurePoints | None,
    mri_checks: tuple[CheckResult, ...] | None = None,
    body: BodyMask | None = None,
) -> SafetyReport:
    """The report of one path: the MRI checks already made (``mri_checks``), then the label-map and needle checks."""
    entry_mri, target_mri = np.array(trajectory.entry_lps_mm), np.array(trajectory.target_lps_mm)
    checks: list[CheckResult] = list(mri_checks or ())
    findings: list[tuple[str, str]] = [(_level(check.status), check.reason) for check in checks if check.status != "ok"]
    if structures is None:
        clearance, bone, bone_depth_mm = {}, None, None
        checks.append(CheckResult("critical structures and bone", "not checked", "no label map"))
    else:
        clearance = _clearances(entry_mri, target_mri, trajectory.needle.radius_mm, structures, label_map, thresholds)
        bone, bone_depth_mm = _first_bone(entry_mri, target_mri, label_map, thresholds)
    coverage = _label_map_coverage(
        entry_mri, target_mri, trajectory.needle.radius_mm, label_map, structures, thresholds, body, clearance, bone, bone_depth_mm
    )
    unchecked = {c.name: c for c in coverage if not c.checked}
    structure_findings = []
    for name, value in clearance.items():
        limit = thresholds.warning_clearance_mm.get(name, 0.0)
        if value is not None and value < 0:
            structure_findings.append(("blocked", f"needle may touch the {name} (clearance {value:.1f} mm)"))
        elif value is not None and value < limit:
            structure_findings.append(("warning", f"{name} {value:.1f} mm from the needle (< {limit:g} mm)"))
    findings += structure_findings
    if structures is not None:
        nearest = min((v for v in clearance.values() if v is not None), default=None)
        worst = max((level for level, _ in structure_findings), key=STATUS_ORDER.index, default="ok")
        missing = [n for n in CRITICAL_STRUCTURES if n in unchecked]
        if worst == "ok" and missing:
            worst = "incomplete"
        detail = "; ".join(r for _, r in structure_findings) or (
            "no critical structure within the search distance" if nearest is None else f"smallest clearance {nearest:.1f} mm"
        )
        if missing:
            detail += f"; not checked: {', '.join(missing)}"
        checks.append(CheckResult("critical structures", worst, detail, nearest))
        if bone is not None:
            reason = f"path crosses bone ({bone}) at {bone_depth_mm:.1f} mm depth"
            findings.append(("blocked", reason))
            checks.append(CheckResult("bone", "blocked", reason, bone_depth_mm))
        elif BONE_GROUP in unchecked:
            checks.append(CheckResult("bone", "not checked", unchecked[BONE_GROUP].detail))
        else:
            checks.append(CheckResult("bone", "ok", "no bone on the path before the target"))
    findings += [("incomplete", line) for line in _not_checked_lines(coverage)]
    margin_mm = trajectory.needle.length_mm - trajectory.insertion_depth_mm
    if margin_mm < 0:
        needle = ("blocked", f"{trajectory.needle.label} needle is {-margin_mm:.1f} mm too short")
    elif margin_mm < thresholds.needle_margin_mm:
        needle = ("warning", f"only {margin_mm:.1f} mm of needle left outside the skin (< {thresholds.needle_margin_mm:g} mm)")
    else:
        needle = ("ok", f"{margin_mm:.1f} mm of needle left outside the skin (>= {thresholds.needle_margin_mm:g} mm)")
    if needle[0] != "ok":
        findings.append(needle)
    checks.append(CheckResult("needle length", needle[0], needle[1], margin_mm))
    coverage.append(_skin_coverage(checks))
    status = max((level for level, _ in findings), key=STATUS_ORDER.index, default="ok")
    return SafetyReport(
        status, tuple(reason for _, reason in findings), clearance, bone, bone_depth_mm, margin_mm, tuple(checks), tuple(coverage)
    )


def check_trajectory(
    trajectory: Trajectory,
    label_map: LabelMap | None,
    thresholds: SafetyThresholds | None = None,
    body: BodyMask | None = None,
) -> SafetyReport:
    """Run every safety check of one trajectory.

    Parameters
    ----------
    trajectory : Trajectory
        Target and entry in LPS mm (``Mri`` frame).
    label_map : workbench.anatomy.LabelMap or None
        In the same frame, with its label table. Without one, critical structures and bone are
        "not checked" (the status is at best "incomplete").
    thresholds : SafetyThresholds, optional
        Defaults as documented in docs/planning.md.
    body : workbench.planning.mri_checks.BodyMask, optional
        The body segmented from the planning MRI (``BodyMask.from_volume(mri)``), for the checks
        that need no label map (:func:`workbench.planning.mri_checks.check_path`). Without it those
        checks are "not checked: ... (no MRI given)" (at best "incomplete").

    Returns
    -------
    SafetyReport
        With ``structures``: every group of :data:`STRUCTURE_GROUPS`, checked or not and why.
    """
    thresholds = thresholds or SafetyThresholds()
    mri_checks = check_path(trajectory, body, thresholds.skin_tolerance_mm, label_map)
    if label_map is None:
        return _evaluate(trajectory, None, thresholds, None, mri_checks, body)
    entry_mri, target_mri = np.array(trajectory.entry_lps_mm), np.array(trajectory.target_lps_mm)
    search_mm = _search_mm(thresholds, label_map, trajectory.needle.radius_mm)
    structures = _structure_points_for([(entry_mri, target_mri)], label_map, search_mm)
    return _evaluate(trajectory, label_map, thresholds, structures, mri_checks, body)


def skin_normal_at(label_map: LabelMap, entry_lps_mm, smoothing_mm: float = 2.0) -> tuple[float, float, float] | None:
    """Outward unit normal (LPS) of the body surface (label not AIR) near ``entry_lps_mm``; None if no surface there.

    None also when the label map's table names no AIR (an imported segmentation's 0 is "unlabelled"):
    use the MRI's body then (:meth:`workbench.planning.mri_checks.BodyMask.outward_normal_at`).
    """
    if not label_map.values_of([Label.AIR]):
        return None
    entry_mri = np.asarray(entry_lps_mm, dtype=float)
    reach_mm = 3.0 * smoothing_mm + float(label_map.spacing_mm.max())
    values_kji, first_ijk = label_map.crop(entry_mri - reach_mm, entry_mri + reach_mm)
    if min(values_kji.shape) < 3:
        return None
    body_kji = (~label_map.mask([Label.AIR], values_kji)).astype(float)
    body_kji = ndimage.gaussian_filter(body_kji, smoothing_mm / label_map.spacing_mm[::-1])
    entry_ijk = label_map.to_ijk(entry_mri[None])[0]
    kji = np.clip(np.rint(entry_ijk[::-1] - first_ijk[::-1]).astype(int), 1, np.array(values_kji.shape) - 2)
    gradient_kji = np.array([g[tuple(kji)] for g in np.gradient(body_kji)])
    # A gradient is a covector: per mm = (d ijk / d mri)^T per voxel step, the transposed linear part of MriToMriVoxel.
    gradient_mri = label_map.mri_to_mri_voxel.matrix[:3, :3].T @ gradient_kji[::-1]
    norm = float(np.linalg.norm(gradient_mri))
    if norm < 1e-6:
        return None
    return tuple(float(v) for v in -gradient_mri / norm)


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


def _skin_point(
    label_map: LabelMap, target_mri: np.ndarray, outward_mri: np.ndarray, max_depth_mm: float, body: BodyMask | None
) -> np.ndarray | None:
    """First point outside the body going out from ``target_mri`` along the unit ``outward_mri``, or None
    within ``max_depth_mm``.

    Outside the body: label AIR or off the map, when the label map's table names AIR (the phantom's);
    else (an imported segmentation, whose 0 is "unlabelled") outside the MRI's ``body``. A ray that
    leaves the MRI before it leaves the body finds no skin (None). Where the MRI holds no air at all
    (``body.no_air``: a crop inside the body) the ray ends where it leaves the MRI: the edge of the
    image, not the skin, which the candidate's report says (skin/body not checked).
    """
    step_mm = float(label_map.spacing_mm.min()) / 2.0
    depths_mm = np.arange(step_mm, max_depth_mm, step_mm)
    points_mri = target_mri + np.outer(depths_mm, outward_mri)
    if label_map.values_of([Label.AIR]):
        values = label_map.values_at(points_mri)
        outside = np.flatnonzero((values < 0) | label_map.mask([Label.AIR], values))
    elif body.no_air is not None or body.empty:
        # the skin is not in the MRI: the candidate ends where its ray leaves the MRI (its skin/body
        # check then reads "not checked", so the suggestion is at best "incomplete")
        inside = np.flatnonzero(body.distance_outside_volume_mm(points_mri) > 1e-6)
        last = (inside[0] if inside.size else len(depths_mm)) - 1
        return None if last < 0 else target_mri + depths_mm[last] * outward_mri
    else:
        distance_mm = body.surface_distance_mm(points_mri)
        stop = np.flatnonzero(~np.isfinite(distance_mm) | (distance_mm > 0))
        outside = stop if stop.size == 0 or np.isfinite(distance_mm[stop[0]]) else stop[:0]
    return None if outside.size == 0 else target_mri + depths_mm[outside[0]] * outward_mri


def suggest_entries(
    trajectory: Trajectory,
    label_map: LabelMap,
    thresholds: SafetyThresholds | None = None,
    ring_radii_mm: tuple[float, ...] = SAFER_ENTRY_RING_RADII_MM,
    directions: int = 12,
    clearance_cap_mm: float = 10.0,
    body: BodyMask | None = None,
) -> list[EntrySuggestion]:
    """Candidate skin entries around the chosen one, safest first.

    Candidates aim at points on rings around the chosen entry (in the plane perpendicular to the
    path); each candidate path runs from the target outward through that point to the skin (the first
    air voxel of the label map, or where the path leaves the MRI's ``body`` when the label map's table
    names no AIR), searched up to twice the original depth. They are ranked by
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
    body : workbench.planning.mri_checks.BodyMask, optional
        As for :func:`check_trajectory`: each candidate's report includes the MRI checks, so a
        suggestion's status is the status the plan would get. Without it those checks read "not
        checked" (the status is at best "incomplete"), never "ok". Required when the label map's
        table names no AIR (it then finds the skin).

    Raises
    ------
    PlanError
        The skin cannot be found: a label map without AIR in its table and no ``body``.

    Returns
    -------
    list of EntrySuggestion
        Safest first.
    """
    thresholds = thresholds or SafetyThresholds()
    if body is None and not label_map.values_of([Label.AIR]):
        raise PlanError(
            "safer entries need the skin: the label map's table names no AIR (an imported segmentation), "
            "so give the body segmented from the MRI (body=BodyMask.from_volume(mri))"
        )
    target_mri, entry_mri = np.array(trajectory.target_lps_mm), np.array(trajectory.entry_lps_mm)
    inward_mri = trajectory.direction_lps
    u_mri = np.cross(inward_mri, [0.0, 0.0, 1.0] if abs(inward_mri[2]) < 0.9 else [1.0, 0.0, 0.0])
    u_mri /= np.linalg.norm(u_mri)
    v_mri = np.cross(inward_mri, u_mri)
    max_depth_mm = trajectory.insertion_depth_mm * 2.0
    entries_mri = []
    for radius_mm in ring_radii_mm:
        for angle_rad in np.linspace(0.0, 2 * np.pi, 1 if radius_mm == 0 else directions, endpoint=False):
            aim_mri = entry_mri + radius_mm * (np.cos(angle_rad) * u_mri + np.sin(angle_rad) * v_mri)
            outward_mri = (aim_mri - target_mri) / np.linalg.norm(aim_mri - target_mri)
            skin_mri = _skin_point(label_map, target_mri, outward_mri, max_depth_mm, body)
            if skin_mri is not None:
                entries_mri.append(skin_mri)
    if not entries_mri:
        return []
    search_mm = _search_mm(thresholds, label_map, trajectory.needle.radius_mm)
    structures = _structure_points_for([(e, target_mri) for e in entries_mri], label_map, search_mm)
    suggestions = []
    for skin_mri in entries_mri:
        candidate = _replace_entry(trajectory, skin_mri)
        cosine = float(candidate.direction_lps @ inward_mri)
        mri_checks = check_path(candidate, body, thresholds.skin_tolerance_mm, label_map)
        report = _evaluate(candidate, label_map, thresholds, structures, mri_checks, body)
        suggestions.append(EntrySuggestion(candidate, report, math.degrees(math.acos(min(1.0, cosine)))))
    return sorted(suggestions, key=lambda s: s.rank_key(clearance_cap_mm))


def _replace_entry(trajectory: Trajectory, entry_lps_mm: np.ndarray) -> Trajectory:
    return dataclasses.replace(trajectory, entry_lps_mm=tuple(float(x) for x in entry_lps_mm), skin_normal_lps=None)
