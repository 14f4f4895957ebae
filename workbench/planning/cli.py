"""``workbench plan``: build a case's plans and write every export, or re-check a ``plan.json``.

``workbench plan CASE_DIR --out OUT_DIR [--author TEXT] [--no-ultrasound]``
    Plans saved in the case (attachments of role ``plan``), or else the expert plans of a demo
    case's ``ground_truth.json``; for each plan writes ``OUT_DIR/<plan_id>/``: ``plan.json``,
    ``plan.mrk.json``, ``plan.csv``, ``report.html`` and, with a registration,
    ``registration.tfm`` and ``registration.h5``. Prints a JSON summary.
``workbench plan --check PLAN_JSON [CASE_DIR | --labels LABELS]``
    Validates the plan and re-runs the safety checks (structures and bone need the label map
    of CASE_DIR or LABELS). Prints JSON.

Exit status 0, or 1 when a trajectory is blocked; bad input raises :class:`~workbench.errors.PlanError`
(exit 2 through ``workbench``). Formats: docs/planning.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from workbench.errors import PlanError

__all__ = ["register", "handle"]

EXIT_BLOCKED = 1


def register(subparsers) -> None:
    """Add the ``plan`` sub-command to an ``argparse`` sub-parser collection."""
    p = subparsers.add_parser("plan", help="build a case's puncture plans and exports, or re-check a plan.json")
    p.add_argument("case_dir", nargs="?", type=Path, help="case folder")
    p.add_argument("--out", type=Path, help="output folder for the exports")
    p.add_argument("--check", type=Path, metavar="PLAN_JSON", help="validate a plan.json and re-run its safety checks")
    p.add_argument("--labels", type=Path, help="label map volume for --check (instead of CASE_DIR)")
    p.add_argument("--author", default="", help="author field of new plans")
    p.add_argument("--no-ultrasound", action="store_true", help="skip reconstructing a sweep for the fused view")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    """Run ``workbench plan``; returns the exit status."""
    if args.check is not None:
        summary = _check(args.check, args.case_dir, args.labels)
    elif args.case_dir is None or args.out is None:
        raise PlanError("give CASE_DIR and --out OUT_DIR to build plans, or --check PLAN_JSON")
    else:
        summary = build_plans(args.case_dir, args.out, args.author, not args.no_ultrasound)
    json.dump(summary, sys.stdout, indent=1)
    sys.stdout.write("\n")
    blocked = any(t["status"] == "blocked" for plan in summary["plans"] for t in plan["trajectories"])
    return EXIT_BLOCKED if blocked else 0


def _attachment_path(case, case_dir: Path, role: str) -> Path | None:
    found = next((a for a in case.attachments if a.role == role), None)
    return None if found is None else case_dir / found.path


def _label_map(case_dir: Path | None, labels: Path | None):
    from workbench.anatomy import WORKBENCH_TABLE, LabelMap
    from workbench.case import load_case
    from workbench.io.volume import load_volume

    if labels is None and case_dir is not None:
        labels = _attachment_path(load_case(case_dir, verify_digests=False), case_dir, "label_map")
        if labels is None:
            raise PlanError("the case has no label map attachment", case_dir)
    # A case's label map is in the workbench encoding (the phantom's table); case.json records no other yet.
    return None if labels is None else LabelMap.from_volume(load_volume(labels), WORKBENCH_TABLE)


def _check(plan_path: Path, case_dir: Path | None, labels: Path | None) -> dict:
    from workbench.planning.export import load_plan
    from workbench.planning.safety import check_trajectory

    plan = load_plan(plan_path)
    label_map = _label_map(case_dir, labels)
    reports = {t.name: check_trajectory(t, label_map) for t in plan.trajectories}
    return {"label_map_checked": label_map is not None, "plans": [_plan_summary(plan, reports, [])]}


def _plan_summary(plan, reports, files: list[Path]) -> dict:
    return {
        "plan_id": plan.plan_id,
        "files": [str(f) for f in files],
        "trajectories": [
            {"name": t.name, "status": reports[t.name].status, "reasons": list(reports[t.name].reasons)} for t in plan.trajectories
        ],
    }


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


def _registration(case, ground_truth):
    from workbench.planning.model import RegistrationSummary, registration_summary

    if case.current_registration is not None:  # the registration accepted into the case (case.json registrations)
        return registration_summary(case.current_registration)
    if "ReferenceToMri" in case.transforms:
        return RegistrationSummary("saved in the case", case.transforms["ReferenceToMri"])
    if ground_truth is None:
        return None
    return RegistrationSummary("ground truth of the synthetic case", ground_truth.reference_to_mri)


def _expert_trajectory(item, label_map):
    """A :class:`Trajectory` from an :class:`~workbench.io.ground_truth.ExpertPlan`."""
    from workbench.planning.model import NeedleSpec, Trajectory
    from workbench.planning.safety import skin_normal_at

    return Trajectory(
        name=item.target.split(" exiting")[0],
        structure=item.target,
        target_lps_mm=item.target_lps_mm,
        entry_lps_mm=item.entry_lps_mm,
        needle=NeedleSpec(item.needle_length_mm, item.needle_gauge),
        injectate_ml=item.injectate_ml,
        approach=item.approach,
        skin_normal_lps=skin_normal_at(label_map, item.entry_lps_mm),
    )


def _expert_plan(case, case_dir: Path, ground_truth, provenance, registration, label_map):
    from workbench.planning.model import Plan

    if ground_truth is None or not ground_truth.expert_plans:
        raise PlanError("the case has no saved plans and no expert_plans in a ground_truth.json", case_dir)
    if label_map is None:
        raise PlanError("the case has no label map attachment", case_dir)
    try:
        trajectories = tuple(_expert_trajectory(item, label_map) for item in ground_truth.expert_plans)
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


def build_plans(case_dir: Path, out_dir: Path, author: str = "", with_ultrasound: bool = True) -> dict:
    """Build the case's plans (saved ones, else the expert plans of a demo case) and write all exports.

    Returns the summary ``workbench plan`` prints: per plan its folder, files and safety status.
    """
    from workbench.case import load_case
    from workbench.io.volume import load_volume
    from workbench.planning.export import load_plan
    from workbench.planning.model import Provenance
    from workbench.planning.report import VolumeSampler

    case = load_case(case_dir)
    if case.mri is None:
        raise PlanError("the case has no MRI", case_dir)
    mri = load_volume(case_dir / case.mri.path)
    labels_path = _attachment_path(case, case_dir, "label_map")
    label_map = _label_map(None, labels_path)
    ground_truth = _ground_truth(case, case_dir)
    registration = _registration(case, ground_truth)
    saved = [case_dir / a.path for a in case.attachments if a.role == "plan"]
    if saved:
        plans = [load_plan(p) for p in saved]
    else:
        provenance = Provenance(mri_digest=mri.source_digest, author=author)
        plans = [_expert_plan(case, case_dir, ground_truth, provenance, registration, label_map)]
    us = _ultrasound(case, case_dir, registration) if with_ultrasound else None
    mri_sampler = VolumeSampler.from_volume(mri)
    return {"plans": [_write_exports(plan, out_dir / plan.plan_id, label_map, mri_sampler, us) for plan in plans]}


def _write_exports(plan, folder: Path, label_map, mri, us) -> dict:
    from workbench.planning.export import write_plan_bundle

    bundle = write_plan_bundle(plan, folder, label_map, mri, us)
    return _plan_summary(plan, bundle.safety, list(bundle.files))
