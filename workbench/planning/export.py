"""Plan files: ``plan.json`` (our versioned format), 3D Slicer markups, ITK transforms, CSV.

- ``plan.json`` follows ``workbench/schemas/plan.schema.json`` (draft 2020-12); it is validated
  before it is written and when it is loaded.
- ``.mrk.json``: one point list (targets and entries) and one line per trajectory (entry first,
  target second), LPS with ``coordinateSystem`` set (Slicer markups schema v1.0.3).
- ``.tfm`` / ``.h5``: the registration as ITK writes it. ITK stores the resampling direction
  (fixed to moving); the file holds ``MriToReference`` as the transform of fixed = ``Mri``,
  moving = ``Reference``, so Slicer resamples a Reference-frame (ultrasound) volume onto the MRI
  grid with it, and applied "to parent" it moves ultrasound data into the MRI.
- ``.csv``: one row per trajectory, units in the column names.

A trajectory that fails a check is marked BLOCKED with its reasons in every file: ``plan.json``
(``safety.status`` "blocked", ``safety.reasons`` and every check in ``safety.checks``; the plan's
worst status in ``status``), the markups (each control point's ``description`` starts with
``BLOCKED:``), the CSV (``safety_status``, ``safety_reasons``) and the report (a red banner at the top
and on the trajectory). Likewise a trajectory whose structures were not all checked is INCOMPLETE
(never "ok", :data:`workbench.planning.safety.STATUS_ORDER`) and every file names what was not checked
and why: ``plan.json`` (``safety.structures_checked``, ``safety.structures_not_checked`` per
trajectory, ``structures_not_checked`` for the plan), the markups (``INCOMPLETE: not checked: ...``),
the CSV (``safety_reasons``, ``structures_not_checked``) and the report (a banner and a table of the
structure groups per trajectory).

:func:`write_plan_bundle` checks a plan's trajectories and writes all of these (plus the HTML
report) into one folder; every caller that exports a plan goes through it.

Formats and conventions: docs/planning.md; frames: docs/frames.md.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Mapping

import numpy as np
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from workbench._atomic import atomic_write_text
from workbench.errors import PlanError, WorkbenchError
from workbench.frames import Transform
from workbench.io.json_io import read_json_limited
from workbench.io.markups import control_points_lps, read_markups_json
from workbench.planning.model import NeedleSpec, Plan, Provenance, RegistrationSummary, Trajectory
from workbench.planning.safety import STATUS_ORDER, SafetyReport, SafetyThresholds
from workbench.validation import check_affine, check_coordinates_mm

__all__ = [
    "PLAN_BUNDLE_FILES",
    "PLAN_FORMAT",
    "PlanBundle",
    "PLAN_SCHEMA_VERSION",
    "SLICER_MARKUPS_SCHEMA_URL",
    "load_plan",
    "markups_document",
    "plan_from_dict",
    "plan_status",
    "plan_to_dict",
    "points_from_markups",
    "read_plan_document",
    "read_registration_transform",
    "structures_not_checked",
    "trajectories_from_markups",
    "write_csv",
    "write_markups",
    "write_plan_bundle",
    "write_plan_json",
    "write_registration_transform",
]

PLAN_FORMAT = "workbench-plan"
#: 2: status "incomplete", and the structures checked / not checked of every safety report. Version 1
#: files are still read.
PLAN_SCHEMA_VERSION = 2
SLICER_MARKUPS_SCHEMA_URL = (
    "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json#"
)
_ITK_SUFFIXES = (".tfm", ".h5")


# -- plan.json ------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    text = resources.files("workbench").joinpath("schemas", "plan.schema.json").read_text(encoding="utf-8")
    return Draft202012Validator(json.loads(text))


def _check_schema(document: dict, path: Path | None) -> None:
    error = best_match(_validator().iter_errors(document))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise PlanError(f"plan does not match the plan schema at {where}: {error.message}", path)


def _floats(values) -> list[float]:
    return [float(v) for v in values]


def _trajectory_to_dict(plan: Plan, trajectory: Trajectory, safety: SafetyReport | None) -> dict:
    geometry = plan.geometry(trajectory)
    derived = {
        "insertion_depth_mm": geometry.insertion_depth_mm,
        "remaining_needle_mm": geometry.remaining_needle_mm,
        "angle_to_axial_deg": geometry.angle_to_axial_deg,
        "angle_to_sagittal_deg": geometry.angle_to_sagittal_deg,
        "angle_to_coronal_deg": geometry.angle_to_coronal_deg,
        "angle_to_skin_normal_deg": geometry.angle_to_skin_normal_deg,
    }
    if geometry.entry_reference_mm is not None:
        derived["reference"] = {
            "entry_mm": _floats(geometry.entry_reference_mm),
            "target_mm": _floats(geometry.target_reference_mm),
            "angle_to_planes_deg": dict(geometry.angle_to_reference_planes_deg),
        }
    return {
        "name": trajectory.name,
        "structure": trajectory.structure,
        "target_lps_mm": _floats(trajectory.target_lps_mm),
        "entry_lps_mm": _floats(trajectory.entry_lps_mm),
        "skin_normal_lps": None if trajectory.skin_normal_lps is None else _floats(trajectory.skin_normal_lps),
        "needle": {"length_mm": trajectory.needle.length_mm, "gauge": trajectory.needle.gauge},
        "injectate": {"volume_ml": trajectory.injectate_ml, "drugs": trajectory.drugs},
        "approach": trajectory.approach,
        "derived": derived,
        "safety": None if safety is None else safety.to_dict(),
    }


def plan_status(plan: Plan, safety: Mapping[str, SafetyReport] | None) -> str:
    """The worst safety status over the plan's trajectories (ok < incomplete < warning < blocked);
    ``"not checked"`` if any has no report."""
    reports = [(safety or {}).get(t.name) for t in plan.trajectories]
    if any(r is None for r in reports):
        return "not checked"
    return max((r.status for r in reports), key=STATUS_ORDER.index, default="ok")


def plan_to_dict(
    plan: Plan, safety: Mapping[str, SafetyReport] | None = None, thresholds: SafetyThresholds | None = None
) -> dict:
    """The ``plan.json`` document (derived values included; safety reports by trajectory name, if given)."""
    registration = plan.registration
    return {
        "format": PLAN_FORMAT,
        "schema_version": PLAN_SCHEMA_VERSION,
        "plan_id": plan.plan_id,
        "title": plan.title,
        "status": plan_status(plan, safety),
        "provenance": {
            "mri_digest": plan.provenance.mri_digest,
            "software": plan.provenance.software,
            "created_utc": plan.provenance.created_utc,
            "author": plan.provenance.author,
        },
        "registration": None
        if registration is None
        else {
            "method": registration.method,
            "ReferenceToMri": registration.reference_to_mri.to_list(),
            "fre_mm": registration.fre_mm,
            "tre_mm": registration.tre_mm,
            **({} if registration.registration_id is None else {"registration_id": registration.registration_id}),
            **({} if registration.quality_warning is None else {"quality_warning": registration.quality_warning}),
            **({} if registration.quality_verdict is None else {"quality_verdict": registration.quality_verdict}),
        },
        "safety_thresholds": None
        if thresholds is None
        else {
            "warning_clearance_mm": dict(thresholds.warning_clearance_mm),
            "target_zone_mm": thresholds.target_zone_mm,
            "bone_tolerance_mm": thresholds.bone_tolerance_mm,
            "needle_margin_mm": thresholds.needle_margin_mm,
            "skin_tolerance_mm": thresholds.skin_tolerance_mm,
        },
        "structures_not_checked": structures_not_checked(plan, safety),
        "trajectories": [_trajectory_to_dict(plan, t, (safety or {}).get(t.name)) for t in plan.trajectories],
    }


def structures_not_checked(plan: Plan, safety: Mapping[str, SafetyReport] | None) -> list[dict]:
    """Every structure group a trajectory's checks did not cover: ``{"trajectory", "name", "reason", "detail"}``.

    A trajectory without a safety report lists every group (reason ``"unknown"``, "no safety report").
    """
    from workbench.planning.safety import STRUCTURE_GROUPS

    rows = []
    for t in plan.trajectories:
        report = (safety or {}).get(t.name)
        if report is None:
            rows += [{"trajectory": t.name, "name": g, "reason": "unknown", "detail": "no safety report"} for g in STRUCTURE_GROUPS]
            continue
        rows += [{"trajectory": t.name, **item.to_dict()} for item in report.unchecked_structures.values()]
    return rows


def _trajectory_from_dict(document: dict) -> Trajectory:
    return Trajectory(
        name=document["name"],
        structure=document["structure"],
        target_lps_mm=document["target_lps_mm"],
        entry_lps_mm=document["entry_lps_mm"],
        needle=NeedleSpec(float(document["needle"]["length_mm"]), document["needle"]["gauge"]),
        injectate_ml=float(document["injectate"]["volume_ml"]),
        drugs=document["injectate"]["drugs"],
        approach=document["approach"],
        skin_normal_lps=document["skin_normal_lps"],
    )


def plan_from_dict(document: dict, path: Path | None = None) -> Plan:
    """Build a :class:`Plan` from a ``plan.json`` document (validated against the schema first)."""
    _check_schema(document, path)
    registration = document["registration"]
    try:
        return Plan(
            plan_id=document["plan_id"],
            title=document["title"],
            trajectories=tuple(_trajectory_from_dict(t) for t in document["trajectories"]),
            provenance=Provenance(**document["provenance"]),
            registration=None
            if registration is None
            else RegistrationSummary(
                method=registration["method"],
                reference_to_mri=Transform.from_name("ReferenceToMri", np.reshape(registration["ReferenceToMri"], (4, 4))),
                fre_mm=registration["fre_mm"],
                tre_mm=registration["tre_mm"],
                registration_id=registration.get("registration_id"),
                quality_warning=registration.get("quality_warning"),
                quality_verdict=registration.get("quality_verdict"),
            ),
        )
    except WorkbenchError as exc:
        raise PlanError(exc.problem, path) from None


def write_plan_json(
    plan: Plan,
    path: str | Path,
    safety: Mapping[str, SafetyReport] | None = None,
    thresholds: SafetyThresholds | None = None,
) -> Path:
    """Validate and write ``plan.json`` atomically; returns the path."""
    path = Path(path)
    document = plan_to_dict(plan, safety, thresholds)
    _check_schema(document, path)
    atomic_write_text(path, json.dumps(document, indent=2, allow_nan=False) + "\n")
    return path


def read_plan_document(path: str | Path) -> dict:
    """The schema-valid ``plan.json`` document of ``path`` (stored safety reports included)."""
    path = Path(path)
    if not path.exists():
        raise PlanError("no such plan file", path)
    document = read_json_limited(path, error=PlanError, what="plan")  # size, depth, digits, overflow bounded
    if not isinstance(document, dict) or document.get("format") != PLAN_FORMAT:
        raise PlanError(f"not a workbench plan (no \"format\": \"{PLAN_FORMAT}\")", path)
    version = document.get("schema_version")
    if isinstance(version, int) and version > PLAN_SCHEMA_VERSION:
        raise PlanError(f"plan is schema version {version}; this workbench reads up to {PLAN_SCHEMA_VERSION}", path)
    _check_schema(document, path)
    _check_physical(document, path)
    return document


def _check_physical(document: dict, path: Path) -> None:
    """Points within 10 m and a rigid ReferenceToMri (orthonormal to 1e-4): what the schema allows but no plan holds."""
    for index, trajectory in enumerate(document.get("trajectories", [])):
        for key in ("target_lps_mm", "entry_lps_mm"):
            check_coordinates_mm(trajectory.get(key, ()), f"trajectories[{index}].{key}", path, PlanError)
    registration = document.get("registration")
    if isinstance(registration, dict):
        check_affine(registration.get("ReferenceToMri"), "registration.ReferenceToMri", path, PlanError, rigid=True)


def load_plan(path: str | Path) -> Plan:
    """Load and validate a ``plan.json``."""
    return plan_from_dict(read_plan_document(path), Path(path))


# -- 3D Slicer markups -------------------------------------------------------------------


def _control_point(label: str, point_lps_mm, description: str = "") -> dict:
    return {"label": label, "description": description, "position": _floats(point_lps_mm), "positionStatus": "defined"}


def _status_note(safety: SafetyReport | None) -> str:
    """``"BLOCKED: reason; reason"`` for a blocked path, ``"warning: ..."``, ``"INCOMPLETE: not checked: ..."``,
    ``"safety not checked"`` or ``""`` when ok (every structure checked, no finding)."""
    if safety is None:
        return "safety not checked"
    if safety.status == "ok":
        return ""
    label = safety.status.upper() if safety.status in ("blocked", "incomplete") else safety.status
    return f"{label}: {'; '.join(safety.reasons)}"


def _described(*parts: str) -> str:
    return " | ".join(p for p in parts if p)


def markups_document(plan: Plan, safety: Mapping[str, SafetyReport] | None = None) -> dict:
    """The Slicer markups document of a plan: a point list of targets and entries, a line per trajectory.

    With ``safety`` each control point's description starts with the trajectory's status and
    reasons when it is not ok (``"BLOCKED: path through air 30.2 mm ..."``).
    """
    points = []
    notes = {t.name: _status_note((safety or {}).get(t.name)) if safety is not None else "" for t in plan.trajectories}
    for t in plan.trajectories:
        points.append(_control_point(f"{t.name} target", t.target_lps_mm, _described(notes[t.name], t.structure)))
        points.append(_control_point(f"{t.name} entry", t.entry_lps_mm, _described(notes[t.name], t.needle.label)))
    common = {"coordinateSystem": "LPS", "coordinateUnits": "mm"}
    markups = [{"type": "Fiducial", "name": f"{plan.plan_id} targets and entries", **common, "controlPoints": points}]
    for t in plan.trajectories:
        line_points = [
            _control_point(f"{t.name} entry", t.entry_lps_mm, notes[t.name]),
            _control_point(f"{t.name} target", t.target_lps_mm, notes[t.name]),
        ]
        markups.append({"type": "Line", "name": t.name, **common, "controlPoints": line_points})
    return {"@schema": SLICER_MARKUPS_SCHEMA_URL, "markups": markups}


def write_markups(plan: Plan, path: str | Path, safety: Mapping[str, SafetyReport] | None = None) -> Path:
    """Write the plan as a 3D Slicer ``.mrk.json`` (LPS; statuses in the descriptions, see :func:`markups_document`)."""
    path = Path(path)
    atomic_write_text(path, json.dumps(markups_document(plan, safety), indent=2, allow_nan=False) + "\n")
    return path


def points_from_markups(path: str | Path) -> dict[str, np.ndarray]:
    """Every control point of the point lists (``Fiducial``) of a Slicer markups file: label -> (3,) LPS mm.

    Unlabelled points are named ``"<markup name or 'point list'> <n>"`` (n from 1). RAS files are converted to LPS.
    """
    path = Path(path)
    points: dict[str, np.ndarray] = {}
    for markup in read_markups_json(path)["markups"]:
        if markup.get("type") != "Fiducial":
            continue
        for n, (cp, point) in enumerate(zip(markup.get("controlPoints", []), control_points_lps(markup, path)), start=1):
            points[cp.get("label") or f"{markup.get('name') or 'point list'} {n}"] = point
    return points


def trajectories_from_markups(
    path: str | Path, needle: NeedleSpec, injectate_ml: float = 6.0, approach: str = ""
) -> list[Trajectory]:
    """Trajectories drawn in 3D Slicer: each Line markup (first point entry, second target), and
    each pair of points labelled ``"<name> entry"`` / ``"<name> target"`` in point lists.
    Lines take precedence over points of the same name. RAS files are converted to LPS.
    """
    path = Path(path)
    document = read_markups_json(path)
    lines: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for index, markup in enumerate(document["markups"]):
        if markup.get("type") == "Line":
            points_lps = control_points_lps(markup, path)
            if len(points_lps) != 2:
                raise PlanError(f"line markup {index} has {len(points_lps)} control points, expected 2 (entry, target)", path)
            lines[markup.get("name") or f"line {index + 1}"] = (points_lps[0], points_lps[1])
    labelled = points_from_markups(path)
    for label in labelled:
        name = label[: -len(" target")]
        if label.endswith(" target") and f"{name} entry" in labelled and name not in lines:
            lines[name] = (labelled[f"{name} entry"], labelled[label])
    if not lines:
        raise PlanError("no trajectory in the markups: need Line markups or point pairs '<name> entry' / '<name> target'", path)
    return [
        Trajectory(name, name, target, entry, needle, injectate_ml=injectate_ml, approach=approach)
        for name, (entry, target) in lines.items()
    ]


# -- ITK transform files -------------------------------------------------------------------


def _check_itk_suffix(path: Path) -> None:
    if path.suffix.lower() not in _ITK_SUFFIXES:
        raise PlanError(f"ITK transform files end in .tfm or .h5, got {path.suffix or 'no suffix'!r}", path)


def write_registration_transform(reference_to_mri: Transform, path: str | Path) -> Path:
    """Write ``ReferenceToMri`` as an ITK transform file (``.tfm`` text or ``.h5``).

    The file holds the ITK resampling transform of fixed = ``Mri``, moving = ``Reference``: its
    matrix maps Mri points to Reference points (``MriToReference``). SimpleITK's
    ``TransformPoint`` of an Mri point gives the Reference point. Written to a temporary name
    beside ``path`` and renamed, so a crash leaves no half-written file.
    """
    import SimpleITK as sitk

    path = Path(path)
    _check_itk_suffix(path)
    if reference_to_mri.name != "ReferenceToMri":
        raise PlanError(f"the registration must be ReferenceToMri, got {reference_to_mri.name}", path)
    mri_to_reference = reference_to_mri.inverse().matrix
    affine = sitk.AffineTransform(3)
    affine.SetMatrix(_floats(mri_to_reference[:3, :3].ravel()))
    affine.SetTranslation(_floats(mri_to_reference[:3, 3]))
    temporary = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        sitk.WriteTransform(affine, str(temporary))
        temporary.replace(path)
    except (RuntimeError, OSError) as exc:
        temporary.unlink(missing_ok=True)
        raise PlanError(f"cannot write the transform file ({str(exc).splitlines()[0] if str(exc) else exc})", path) from None
    return path


def read_registration_transform(path: str | Path) -> Transform:
    """Read a file written by :func:`write_registration_transform` back as ``ReferenceToMri``."""
    from workbench.io.itk_transform import describe_transform

    path = Path(path)
    _check_itk_suffix(path)
    if not path.is_file():
        raise PlanError("no such transform file", path)
    transforms = describe_transform(path)["transforms"]
    if len(transforms) != 1 or "matrix_4x4" not in transforms[0]:
        raise PlanError("expected exactly one affine transform in the file", path)
    matrix = check_affine(transforms[0]["matrix_4x4"], "MriToReference", path, PlanError, rigid=True)  # a registration is rigid
    mri_to_reference = Transform.from_name("MriToReference", matrix)
    return mri_to_reference.inverse()


# -- CSV --------------------------------------------------------------------------------------

CSV_COLUMNS = (
    "name",
    "structure",
    "target_L_mm",
    "target_P_mm",
    "target_S_mm",
    "entry_L_mm",
    "entry_P_mm",
    "entry_S_mm",
    "insertion_depth_mm",
    "needle_length_mm",
    "needle_gauge",
    "remaining_needle_mm",
    "angle_to_axial_deg",
    "angle_to_sagittal_deg",
    "angle_to_coronal_deg",
    "angle_to_skin_normal_deg",
    "injectate_ml",
    "drugs",
    "approach",
    "safety_status",
    "min_clearance_mm",
    "safety_reasons",
    "structures_not_checked",
)


def _csv_row(plan: Plan, trajectory: Trajectory, safety: SafetyReport | None) -> list:
    g = plan.geometry(trajectory)
    return [
        trajectory.name,
        trajectory.structure,
        *(f"{v:.3f}" for v in trajectory.target_lps_mm),
        *(f"{v:.3f}" for v in trajectory.entry_lps_mm),
        f"{g.insertion_depth_mm:.2f}",
        f"{trajectory.needle.length_mm:g}",
        trajectory.needle.gauge,
        f"{g.remaining_needle_mm:.2f}",
        f"{g.angle_to_axial_deg:.2f}",
        f"{g.angle_to_sagittal_deg:.2f}",
        f"{g.angle_to_coronal_deg:.2f}",
        "" if g.angle_to_skin_normal_deg is None else f"{g.angle_to_skin_normal_deg:.2f}",
        f"{trajectory.injectate_ml:g}",
        trajectory.drugs,
        trajectory.approach,
        "" if safety is None else safety.status,
        "" if safety is None or safety.min_clearance_mm is None else f"{safety.min_clearance_mm:.2f}",
        "" if safety is None else "; ".join(safety.reasons),
        "all (no safety report)" if safety is None else "; ".join(
            f"{item.name} ({item.reason})" for item in safety.unchecked_structures.values()
        ),
    ]


def write_csv(plan: Plan, path: str | Path, safety: Mapping[str, SafetyReport] | None = None) -> Path:
    """Write one row per trajectory (columns :data:`CSV_COLUMNS`); returns the path."""
    path = Path(path)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for trajectory in plan.trajectories:
        writer.writerow(_csv_row(plan, trajectory, (safety or {}).get(trajectory.name)))
    atomic_write_text(path, buffer.getvalue())
    return path


# -- the whole bundle -------------------------------------------------------------------------

#: File names of a plan bundle, in the order :func:`write_plan_bundle` writes them.
PLAN_BUNDLE_FILES = ("plan.json", "plan.mrk.json", "plan.csv", "report.html", "registration.tfm", "registration.h5")


@dataclass(frozen=True)
class PlanBundle:
    """What :func:`write_plan_bundle` wrote.

    Attributes
    ----------
    folder : Path
    files : tuple of Path
        In the order of :data:`PLAN_BUNDLE_FILES` (the transforms only with a registration).
    safety : dict of str to SafetyReport
        The safety report of each trajectory, by name, as recorded in the files.
    thresholds : SafetyThresholds
        The thresholds the reports used (recorded in ``plan.json``).
    """

    folder: Path
    files: tuple[Path, ...]
    safety: dict[str, SafetyReport]
    thresholds: SafetyThresholds

    @property
    def status(self) -> str:
        """The worst status over the trajectories (ok < incomplete < warning < blocked)."""
        return max((r.status for r in self.safety.values()), key=STATUS_ORDER.index, default="ok")

    @property
    def blocked(self) -> dict[str, tuple[str, ...]]:
        """Blocked trajectories: name -> reasons."""
        return {name: r.reasons for name, r in self.safety.items() if r.status == "blocked"}


def write_plan_bundle(
    plan: Plan,
    folder: str | Path,
    label_map=None,
    mri=None,
    ultrasound=None,
    thresholds: SafetyThresholds | None = None,
    body=None,
) -> PlanBundle:
    """Check every trajectory and write every export of ``plan`` into ``folder``.

    The one place a plan is exported (``workbench plan``, the plan widget and the demo all call
    it): ``plan.json`` (with the safety reports and the thresholds they used), ``plan.mrk.json``,
    ``plan.csv``, ``report.html`` and, when the plan holds a registration, ``registration.tfm``
    and ``registration.h5`` (``ReferenceToMri`` as ITK writes it).

    Parameters
    ----------
    plan : Plan
    folder : path
        Created if missing; files in it with the same names are replaced.
    label_map : workbench.planning.safety.LabelMap, optional
        For the clearance and bone checks (without it only the needle length is checked).
    mri : workbench.planning.report.VolumeSampler or LoadedVolume, optional
        The MRI for the report's views (``Mri``, LPS mm); required.
    ultrasound : workbench.planning.report.VolumeSampler, optional
        A reconstructed sweep in ``Mri`` to fuse in the report.
    thresholds : SafetyThresholds, optional
        Default ``SafetyThresholds()``.
    body : workbench.planning.mri_checks.BodyMask, optional
        The body segmented from the MRI for the label-free checks; default: segmented from ``mri``
        here (pass it to reuse one segmentation for several plans).

    Returns
    -------
    PlanBundle
    """
    from workbench.planning.mri_checks import BodyMask
    from workbench.planning.report import VolumeSampler, write_report
    from workbench.planning.safety import check_trajectory

    if mri is None:
        raise PlanError("the plan report needs the MRI")
    if body is None:
        body = BodyMask.from_array(mri.voxels, mri.mri_voxel_to_mri) if isinstance(mri, VolumeSampler) else BodyMask.from_volume(mri)
    if not isinstance(mri, VolumeSampler):
        mri = VolumeSampler.from_volume(mri)
    thresholds = thresholds or SafetyThresholds()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    reports = {t.name: check_trajectory(t, label_map, thresholds, body) for t in plan.trajectories}
    files = [
        write_plan_json(plan, folder / "plan.json", reports, thresholds),
        write_markups(plan, folder / "plan.mrk.json", reports),
        write_csv(plan, folder / "plan.csv", reports),
        write_report(folder / "report.html", plan, mri, ultrasound, reports),
    ]
    if plan.registration is not None:
        files += [write_registration_transform(plan.registration.reference_to_mri, folder / name) for name in PLAN_BUNDLE_FILES[4:]]
    return PlanBundle(folder, tuple(Path(f) for f in files), reports, thresholds)
