"""``workbench plan``: build a case's plans and write every export, or re-check a ``plan.json``.

``workbench plan CASE_DIR --out OUT_DIR [--author TEXT] [--no-ultrasound] [--expert] [--strict]``
    Plans the case's own targets with their entry points (one plan ``<case_id>-targets``; see
    :func:`pair_entries` for how an entry belongs to a target), plus every plan saved in the case
    (attachments of role ``plan``), plus with ``--expert`` the expert plans of a synthetic case's
    ``ground_truth.json``. For each plan writes ``OUT_DIR/<plan_id>/``: ``plan.json``,
    ``plan.mrk.json``, ``plan.csv``, ``report.html`` and, with a registration,
    ``registration.tfm`` and ``registration.h5``. Prints a JSON summary: per plan its status
    (ok < incomplete < warning < blocked), files and trajectories (status, reasons, the structure
    groups checked and those not checked with why), the blocked trajectories, the registration
    used (or ``"missing"``) and the targets that could not be planned ("no entry placed").
``workbench plan --check PLAN_JSON [CASE_DIR | --labels LABELS] [--strict]``
    Validates the plan and re-runs the safety checks (the MRI checks with CASE_DIR's MRI; structures
    and bone with CASE_DIR's label map or LABELS). Prints JSON.

The registration is the case's current registration (``case.json`` ``registrations``), else a
``ReferenceToMri`` in the case's ``transforms``; never the ground truth. Without one the plans are
written without a registration (no ITK transform files, no ultrasound in the report, which says so).

Exit status 0 also when a trajectory is blocked (the summary lists it and every export says
BLOCKED and why); with ``--strict`` a blocked trajectory exits :data:`EXIT_BLOCKED` (3). Bad input
raises :class:`~workbench.errors.PlanError` (exit 2 through ``workbench``, nothing written).
Formats: docs/planning.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from workbench.errors import PlanError

__all__ = ["EXIT_BLOCKED", "build_plans", "handle", "pair_entries", "register"]

#: Exit status of ``workbench plan --strict`` when a trajectory is blocked.
EXIT_BLOCKED = 3
#: Reason given for a target of the case that has no entry point.
NO_ENTRY = "no entry placed"


def register(subparsers) -> None:
    """Add the ``plan`` sub-command to an ``argparse`` sub-parser collection."""
    p = subparsers.add_parser("plan", help="build a case's puncture plans and exports, or re-check a plan.json")
    p.add_argument("case_dir", nargs="?", type=Path, help="case folder")
    p.add_argument("--out", type=Path, help="output folder for the exports")
    p.add_argument("--check", type=Path, metavar="PLAN_JSON", help="validate a plan.json and re-run its safety checks")
    p.add_argument("--labels", type=Path, help="label map volume for --check (instead of CASE_DIR)")
    p.add_argument("--author", default="", help="author field of new plans")
    p.add_argument("--no-ultrasound", action="store_true", help="skip reconstructing a sweep for the fused view")
    p.add_argument("--expert", action="store_true", help="also plan the expert plans of a synthetic case's ground truth")
    p.add_argument("--strict", action="store_true", help=f"exit {EXIT_BLOCKED} when a trajectory is blocked")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    """Run ``workbench plan``; returns the exit status."""
    if args.check is not None:
        summary = _check(args.check, args.case_dir, args.labels)
    elif args.case_dir is None or args.out is None:
        raise PlanError("give CASE_DIR and --out OUT_DIR to build plans, or --check PLAN_JSON")
    else:
        summary = build_plans(args.case_dir, args.out, args.author, not args.no_ultrasound, expert=args.expert)
    json.dump(summary, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return EXIT_BLOCKED if args.strict and summary["blocked"] else 0


def _attachment_path(case, case_dir: Path, role: str) -> Path | None:
    found = next((a for a in case.attachments if a.role == role), None)
    return None if found is None else case_dir / found.path


def _read_label_map(path: Path | None, case=None):
    """A label map file with its sidecar table (:func:`workbench.case.labels.read_label_map_file`)."""
    from workbench.case.labels import is_synthetic_case, read_label_map_file

    synthetic = case is not None and is_synthetic_case(case)
    return None if path is None else read_label_map_file(path, synthetic=synthetic)


def _check(plan_path: Path, case_dir: Path | None, labels: Path | None) -> dict:
    from workbench.case import load_case
    from workbench.io.volume import load_volume
    from workbench.planning.export import load_plan
    from workbench.planning.mri_checks import BodyMask
    from workbench.planning.safety import check_trajectory

    plan = load_plan(plan_path)
    body = case = None
    if case_dir is not None:
        case = load_case(case_dir, verify_digests=False)
        if labels is None:
            labels = _attachment_path(case, case_dir, "label_map")
        if case.mri is not None:
            body = BodyMask.from_volume(load_volume(case_dir / case.mri.path))
    label_map = _read_label_map(labels, case)
    reports = {t.name: check_trajectory(t, label_map, body=body) for t in plan.trajectories}
    summary = _plan_summary(plan, "checked plan", reports, [])
    return {
        "label_map_checked": label_map is not None,
        "mri_checked": body is not None,
        "plans": [summary],
        "blocked": _blocked([summary]),
    }


def _plan_summary(plan, source: str, reports, files: list[Path]) -> dict:
    from workbench.planning.export import plan_status

    return {
        "plan_id": plan.plan_id,
        "source": source,
        "status": plan_status(plan, reports),
        "files": [str(f) for f in files],
        "trajectories": [
            {
                "name": t.name,
                "status": reports[t.name].status,
                "reasons": list(reports[t.name].reasons),
                "structures_checked": list(reports[t.name].checked_structures),
                "structures_not_checked": {n: c.detail for n, c in reports[t.name].unchecked_structures.items()},
            }
            for t in plan.trajectories
        ],
    }


def _blocked(plans: list[dict]) -> list[str]:
    """``"<plan_id> / <trajectory>: reason; reason"`` for every blocked trajectory."""
    return [
        f"{plan['plan_id']} / {t['name']}: {'; '.join(t['reasons'])}"
        for plan in plans
        for t in plan["trajectories"]
        if t["status"] == "blocked"
    ]


# -- what to plan --------------------------------------------------------------------------------


def pair_entries(case) -> tuple[list[tuple[object, object]], list[dict], list[str]]:
    """Pair the case's targets with their entry points (both ``Target`` records of ``case.json``).

    An entry point is a ``Target`` whose structure is ``"entry point"`` (as notebook 02's editor
    stores it, :data:`workbench.case.readiness.ENTRY_STRUCTURE`). An entry belongs to the target
    ``X`` when it is named ``"X entry"`` (or, for a target named ``"X target"``, ``"X entry"``), the
    convention of Slicer markups pairs (:func:`workbench.planning.export.trajectories_from_markups`);
    a case with exactly one target and one entry pairs them whatever their names. Nothing else is
    guessed: no entry is invented, and no entry is matched by distance.

    Returns
    -------
    pairs : list of (Target, Target)
        (target, entry), in the case's target order.
    unplanned : list of dict
        ``{"name": target, "reason": "no entry placed"}`` for each target without an entry.
    unpaired_entries : list of str
        Names of entry points that belong to no target.
    """
    from workbench.case.readiness import ENTRY_STRUCTURE

    targets = [t for t in case.targets if t.structure != ENTRY_STRUCTURE]
    entries = {t.name: t for t in case.targets if t.structure == ENTRY_STRUCTURE}
    if len(targets) == 1 and len(entries) == 1:
        return [(targets[0], next(iter(entries.values())))], [], []
    pairs, unplanned, used = [], [], set()
    for target in targets:
        stem = target.name[: -len(" target")] if target.name.endswith(" target") else target.name
        name = next((n for n in (f"{stem} entry", f"{target.name} entry") if n in entries and n not in used), None)
        if name is None:
            unplanned.append({"name": target.name, "reason": NO_ENTRY})
            continue
        used.add(name)
        pairs.append((target, entries[name]))
    return pairs, unplanned, [name for name in entries if name not in used]


def _skin_normal(entry_lps_mm, label_map, body):
    from workbench.planning.safety import skin_normal_at

    normal = skin_normal_at(label_map, entry_lps_mm) if label_map is not None else None
    if normal is None and body is not None and body.distance_outside_volume_mm([entry_lps_mm])[0] == 0:
        normal = body.outward_normal_at(entry_lps_mm)
    return normal


def _case_target_plan(case, provenance, registration, label_map, body, thresholds):
    """The plan of the case's own targets and entries, the targets left out, and the unpaired entries."""
    from workbench.equipment import shortest_needle
    from workbench.planning.model import Plan, Trajectory

    pairs, unplanned, unpaired = pair_entries(case)
    trajectories = []
    for target, entry in pairs:
        depth_mm = sum((a - b) ** 2 for a, b in zip(target.point_lps_mm, entry.point_lps_mm)) ** 0.5
        try:
            trajectories.append(Trajectory(
                name=target.name,
                structure=target.structure,
                target_lps_mm=target.point_lps_mm,
                entry_lps_mm=entry.point_lps_mm,
                needle=shortest_needle(depth_mm, thresholds.needle_margin_mm),
                skin_normal_lps=_skin_normal(entry.point_lps_mm, label_map, body),
            ))
        except PlanError as exc:
            unplanned.append({"name": target.name, "reason": exc.problem})
    if not trajectories:
        return None, unplanned, unpaired
    plan_id = f"{case.case_id}-targets"[:64]
    title = f"Plan of the targets of {case.title or case.case_id}"
    return Plan(plan_id, tuple(trajectories), provenance, registration, title), unplanned, unpaired


def _ground_truth(case, case_dir: Path):
    """The demo case's :class:`~workbench.io.ground_truth.GroundTruth`, or None if the case has none."""
    from workbench.io.ground_truth import GroundTruthError, read_ground_truth

    path = _attachment_path(case, case_dir, "ground_truth")
    if path is None:
        return None
    try:
        return read_ground_truth(path)
    except GroundTruthError as exc:
        raise PlanError(f"cannot read ground_truth.json ({exc.problem})", path) from None


def _registration(case):
    """The case's current registration as a RegistrationSummary, else its ``transforms`` ReferenceToMri, else None.

    Never the ground truth of a synthetic case, never a registration the quality gate refused
    (:func:`workbench.planning.model.registration_summary` raises PlanError); a doubtful one
    carries its ``quality_warning`` into plan.json and the report.
    """
    from workbench.planning.model import RegistrationSummary, registration_summary

    current = case.current_registration
    if current is not None:
        targets = [t.name for t in case.targets]
        return registration_summary(current, targets)
    if "ReferenceToMri" in case.transforms:
        return RegistrationSummary("ReferenceToMri saved in the case's transforms", case.transforms["ReferenceToMri"])
    return None


def _expert_trajectory(item, label_map, body):
    """A :class:`Trajectory` from an :class:`~workbench.io.ground_truth.ExpertPlan`."""
    from workbench.planning.model import NeedleSpec, Trajectory

    return Trajectory(
        name=item.target.split(" exiting")[0],
        structure=item.target,
        target_lps_mm=item.target_lps_mm,
        entry_lps_mm=item.entry_lps_mm,
        needle=NeedleSpec(item.needle_length_mm, item.needle_gauge),
        injectate_ml=item.injectate_ml,
        approach=item.approach,
        skin_normal_lps=_skin_normal(item.entry_lps_mm, label_map, body),
    )


def _expert_plan(case, case_dir: Path, provenance, registration, label_map, body):
    from workbench.planning.model import Plan

    ground_truth = _ground_truth(case, case_dir)
    if ground_truth is None or not ground_truth.expert_plans:
        raise PlanError("--expert: the case has no expert_plans in a ground_truth.json", case_dir)
    try:
        trajectories = tuple(_expert_trajectory(item, label_map, body) for item in ground_truth.expert_plans)
    except PlanError as exc:
        raise PlanError(f"an expert plan in ground_truth.json is malformed ({exc.problem})", case_dir) from None
    return Plan(f"{case.case_id}-expert", trajectories, provenance, registration, f"Expert plan of {case.title}")


def _ultrasound(case, case_dir: Path, registration):
    from workbench.planning.report import VolumeSampler
    from workbench.reconstruction.reconstruct import reconstruct_from_files

    sweep = next((s for s in case.sweeps if s.device_set is not None), None)
    if sweep is None or registration is None:
        return None
    result = reconstruct_from_files(
        case_dir / sweep.path, case_dir / sweep.device_set.path, spacing_mm=1.0, reference_to_mri=registration.reference_to_mri
    )
    return VolumeSampler.from_reconstruction(result)


def build_plans(
    case_dir: Path,
    out_dir: Path,
    author: str = "",
    with_ultrasound: bool = True,
    *,
    expert: bool = False,
    registration=None,
    thresholds=None,
) -> dict:
    """Plan the case's targets (and saved plans; the expert plans with ``expert``) and write all exports.

    Parameters
    ----------
    case_dir, out_dir : Path
        The case folder; each plan goes to ``out_dir/<plan_id>/``.
    author : str
        Author of the new plans.
    with_ultrasound : bool
        Reconstruct the case's first sweep (in ``Mri`` through the registration) for the report's fused view.
    expert : bool
        Also plan the expert plans of a synthetic case's ``ground_truth.json``.
    registration : workbench.planning.model.RegistrationSummary, optional
        Use this ``ReferenceToMri`` instead of the case's current registration.
    thresholds : workbench.planning.safety.SafetyThresholds, optional

    Returns
    -------
    dict
        What ``workbench plan`` prints: ``registration`` (``"missing"`` or its method, id, FRE
        and TRE), ``plans`` (per plan: ``plan_id``, ``source``, ``status``, ``files``,
        ``trajectories`` with status and reasons), ``blocked`` (one line per blocked trajectory),
        ``unplanned_targets`` (name and reason, e.g. "no entry placed") and ``unpaired_entries``.

    Raises
    ------
    PlanError
        No MRI, or nothing to plan (no target with an entry, no saved plan, no expert plan).
    """
    from workbench.case import load_case
    from workbench.case.labels import read_case_label_map
    from workbench.io.volume import load_volume
    from workbench.planning.export import load_plan, write_plan_bundle
    from workbench.planning.model import Provenance
    from workbench.planning.mri_checks import BodyMask
    from workbench.planning.report import VolumeSampler
    from workbench.planning.safety import SafetyThresholds

    case_dir, out_dir = Path(case_dir), Path(out_dir)
    thresholds = thresholds or SafetyThresholds()
    case = load_case(case_dir)
    if case.mri is None:
        raise PlanError("the case has no MRI", case_dir)
    mri = load_volume(case_dir / case.mri.path)
    body = BodyMask.from_volume(mri)
    label_map = read_case_label_map(case, case_dir)
    if registration is None:
        try:
            registration = _registration(case)
        except PlanError as exc:  # the quality gate refused the case's current registration
            raise PlanError(exc.problem, case_dir / "case.json") from None
    provenance = Provenance(mri_digest=mri.source_digest, author=author)

    plans = []  # (plan, source)
    own, unplanned, unpaired = _case_target_plan(case, provenance, registration, label_map, body, thresholds)
    if own is not None:
        plans.append((own, "case targets"))
    for path in (case_dir / a.path for a in case.attachments if a.role == "plan"):
        saved = load_plan(path)
        plans.append((saved if registration is None else dataclasses.replace(saved, registration=registration), "saved plan"))
    if expert:
        plans.append((_expert_plan(case, case_dir, provenance, registration, label_map, body), "expert plans"))
    if not plans:
        if unplanned:
            names = ", ".join(f"'{u['name']}'" for u in unplanned)
            raise PlanError(
                f"no target has an entry point ({names}): place an entry point named '<target> entry' on the skin (notebook 02)",
                case_dir,
            )
        raise PlanError("the case has no targets and no saved plans: place targets and entry points (notebook 02)", case_dir)

    us = _ultrasound(case, case_dir, registration) if with_ultrasound else None
    mri_sampler = VolumeSampler.from_volume(mri)
    summaries = []
    for plan, source in plans:
        bundle = write_plan_bundle(plan, out_dir / plan.plan_id, label_map, mri_sampler, us, thresholds, body)
        summaries.append(_plan_summary(plan, source, bundle.safety, list(bundle.files)))
    return {
        "registration": "missing" if registration is None else {
            "method": registration.method,
            "registration_id": registration.registration_id,
            "fre_mm": registration.fre_mm,
            "tre_mm": registration.tre_mm,
            **({} if registration.quality_warning is None else {"quality_warning": registration.quality_warning}),
        },
        "plans": summaries,
        "blocked": _blocked(summaries),
        "unplanned_targets": unplanned,
        "unpaired_entries": unpaired,
    }
