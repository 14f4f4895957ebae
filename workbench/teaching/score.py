"""Score a trainee's plan against the expert's, anchored on expert records (docs/teaching.md).

Geometry (all in the ``Mri`` frame, LPS mm; the expert line runs from the expert's skin entry
``E`` through the target ``T``, unit direction ``d``):

- ``angle_deviation_deg``: angle between the trainee's and the expert's needle directions;
- ``offset_at_entry_mm`` / ``offset_at_target_mm``: perpendicular distance of the trainee's
  entry / target from the expert line; ``offset_mm``, the larger of the two, is the headline
  (as plan-vs-executed trajectory studies report it);
- ``target_error_mm``: trainee target to expert target; ``depth_error_mm``: trainee insertion
  depth minus the expert's (signed);
- ``wrong_level`` / ``wrong_side``: the case's target nearest the trainee's target is at another
  level / side than the task's;
- safety (:func:`workbench.planning.safety.check_trajectory` on the case's label map and MRI
  body mask) and needle choice (the shortest catalogue needle that reaches with the margin).

Expert anchoring: :data:`EXPERT_RECORDS` synthetic expert plans are drawn around the expert
plan with the variation of :data:`EXPERT_ENTRY_SD_MM` (per axis, in the plane across the needle:
where experts put the entry on the skin) and :data:`EXPERT_TARGET_SD_MM` (per axis, where they put
the tip); each metric of the trainee becomes a z-score against those records' mean and standard
deviation and a percentile (share of expert records at or below it). A metric passes at
``z <= PASS_Z``; its sub-score is 100 at or below the expert mean, 50 at the pass threshold and 0
at twice it. The score is the weighted mean of the sub-scores (:data:`METRIC_WEIGHTS`), capped at
:data:`WRONG_LEVEL_CAP` for a wrong level or side and :data:`BLOCKED_CAP` for a blocked path, less
:data:`WARNING_PENALTY` for a safety warning the expert's own plan does not have.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbench.teaching import TeachingError

__all__ = [
    "EXPERT_ENTRY_SD_MM",
    "EXPERT_RECORDS",
    "EXPERT_TARGET_SD_MM",
    "METRIC_WEIGHTS",
    "PASS_Z",
    "PlanScore",
    "REHEARSAL_WEIGHTS",
    "RehearsalScore",
    "expert_records",
    "load_rehearsal_metrics",
    "rehearsal_expert_records",
    "line_metrics",
    "score_plan",
    "score_rehearsal",
    "score_trajectory",
]

#: Simulated expert variation, mm per axis: entry across the needle, and target.
EXPERT_ENTRY_SD_MM = 2.0
EXPERT_TARGET_SD_MM = 1.0
EXPERT_RECORDS = 400
#: A metric passes when its z-score against the expert records is at most this.
PASS_Z = 2.0
METRIC_WEIGHTS = {"angle_deviation_deg": 0.25, "offset_at_entry_mm": 0.15, "offset_at_target_mm": 0.4, "abs_depth_error_mm": 0.2}
WRONG_LEVEL_CAP = 20.0
BLOCKED_CAP = 30.0
WARNING_PENALTY = 10.0


def _perpendicular_mm(points: np.ndarray, entry: np.ndarray, direction: np.ndarray) -> np.ndarray:
    rel = np.atleast_2d(points) - entry
    return np.linalg.norm(rel - (rel @ direction)[:, None] * direction, axis=1)


def line_metrics(expert_entry, expert_target, entries, targets) -> dict[str, np.ndarray]:
    """The geometric metrics of (N,) trajectories against the expert line.

    Parameters
    ----------
    expert_entry, expert_target : (3,) float, LPS mm
    entries, targets : (N, 3) or (3,) float, LPS mm

    Returns
    -------
    dict of str to (N,) float
        ``angle_deviation_deg``, ``offset_at_entry_mm``, ``offset_at_target_mm``, ``offset_mm``,
        ``target_error_mm``, ``depth_error_mm``, ``abs_depth_error_mm``.
    """
    e, t = np.asarray(expert_entry, float), np.asarray(expert_target, float)
    entries, targets = np.atleast_2d(np.asarray(entries, float)), np.atleast_2d(np.asarray(targets, float))
    expert_depth = float(np.linalg.norm(t - e))
    d = (t - e) / expert_depth
    vectors = targets - entries
    depths = np.linalg.norm(vectors, axis=1)
    cosine = np.clip((vectors @ d) / depths, -1.0, 1.0)
    at_entry = _perpendicular_mm(entries, e, d)
    at_target = _perpendicular_mm(targets, e, d)
    return {
        "angle_deviation_deg": np.degrees(np.arccos(cosine)),
        "offset_at_entry_mm": at_entry,
        "offset_at_target_mm": at_target,
        "offset_mm": np.maximum(at_entry, at_target),
        "target_error_mm": np.linalg.norm(targets - t, axis=1),
        "depth_error_mm": depths - expert_depth,
        "abs_depth_error_mm": np.abs(depths - expert_depth),
    }


def expert_records(expert_entry, expert_target, n: int = EXPERT_RECORDS, seed: int = 0) -> dict[str, np.ndarray]:
    """Metrics of ``n`` simulated expert plans around the expert's (see the module docstring).

    The entry moves by N(0, EXPERT_ENTRY_SD_MM) along two axes across the expert direction; the
    target by N(0, EXPERT_TARGET_SD_MM) along all three. Deterministic for a seed.
    """
    e, t = np.asarray(expert_entry, float), np.asarray(expert_target, float)
    d = (t - e) / np.linalg.norm(t - e)
    a = np.cross(d, [1.0, 0.0, 0.0] if abs(d[0]) < 0.9 else [0.0, 1.0, 0.0])
    a /= np.linalg.norm(a)
    b = np.cross(d, a)
    rng = np.random.default_rng(seed)
    across = rng.normal(0.0, EXPERT_ENTRY_SD_MM, (n, 2))
    entries = e + across[:, :1] * a + across[:, 1:] * b
    targets = t + rng.normal(0.0, EXPERT_TARGET_SD_MM, (n, 3))
    return line_metrics(e, t, entries, targets)


@dataclass(frozen=True, kw_only=True)
class _Score:
    """What every attempt's score holds (plan or rehearsal): the figures of the module docstring."""

    case_id: str
    task: str
    score: float
    passed: bool
    wrong_level: bool
    wrong_side: bool
    metrics: dict
    z_scores: dict
    percentiles: dict
    sub_scores: dict
    safety_status: str
    findings: list[str] = field(default_factory=list)

    def _common_dict(self) -> dict:
        """The keys both kinds of score export, in one place."""
        return {
            "case_id": self.case_id,
            "task": self.task,
            "attempt_kind": self.attempt_kind,
            "score": self.score,
            "passed": self.passed,
            "wrong_level": self.wrong_level,
            "wrong_side": self.wrong_side,
            "safety_status": self.safety_status,
            "z_scores": self.z_scores,
            "percentiles": self.percentiles,
            "sub_scores": self.sub_scores,
            "findings": list(self.findings),
        }


@dataclass(frozen=True, kw_only=True)
class PlanScore(_Score):
    """The score of one trainee trajectory against the expert's (attributes as in the module docstring).

    ``metrics`` holds the geometric metrics (mm, deg); ``z_scores``, ``percentiles`` and
    ``sub_scores`` the expert-anchored figures per scored metric; ``findings`` one line each.
    """

    trajectory: str
    needle: dict
    attempt_kind: str = "plan"
    trainee_entry_lps_mm: tuple = ()
    trainee_target_lps_mm: tuple = ()
    expert_entry_lps_mm: tuple = ()
    expert_target_lps_mm: tuple = ()

    def to_dict(self) -> dict:
        m = self.metrics
        return {
            **self._common_dict(),
            "trajectory": self.trajectory,
            "angle_deviation_deg": m["angle_deviation_deg"],
            "offset_at_entry_mm": m["offset_at_entry_mm"],
            "offset_at_target_mm": m["offset_at_target_mm"],
            "offset_mm": m["offset_mm"],
            "target_error_mm": m["target_error_mm"],
            "depth_error_mm": m["depth_error_mm"],
            "needle": self.needle,
            "thresholds": {"pass_z": PASS_Z, "weights": METRIC_WEIGHTS, "expert_entry_sd_mm": EXPERT_ENTRY_SD_MM,
                           "expert_target_sd_mm": EXPERT_TARGET_SD_MM, "expert_records": EXPERT_RECORDS},
            "trainee_entry_lps_mm": list(self.trainee_entry_lps_mm),
            "trainee_target_lps_mm": list(self.trainee_target_lps_mm),
            "expert_entry_lps_mm": list(self.expert_entry_lps_mm),
            "expert_target_lps_mm": list(self.expert_target_lps_mm),
        }


def _level_side(name: str) -> tuple[str, str]:
    words = name.split()
    return (words[0], words[1]) if len(words) >= 2 else (name, "")


def _sub_score(z: float) -> float:
    return float(np.clip(100.0 - 50.0 * max(z, 0.0) / PASS_Z, 0.0, 100.0))


def _seed_for(case_id: str, task: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{case_id}|{task}".encode()).digest()[:4], "big")


def score_trajectory(
    trajectory,
    targets_mri: dict[str, np.ndarray],
    expert,
    *,
    case_id: str,
    safety=None,
    expert_safety=None,
) -> PlanScore:
    """Score one :class:`~workbench.planning.model.Trajectory` against an
    :class:`~workbench.io.ground_truth.ExpertPlan` (the task).

    Parameters
    ----------
    trajectory : Trajectory
        The trainee's, LPS mm.
    targets_mri : dict of str to (3,) float
        Every target of the case (for the wrong-level/side check), LPS mm.
    expert : ExpertPlan
    case_id : str
    safety : SafetyReport, optional
        The trainee trajectory's safety report; without one the safety status is "not checked".
    expert_safety : SafetyReport, optional
        The expert trajectory's: a warning the expert's plan has too (e.g. an entry outside the
        MRI's field of view) is listed but costs nothing.
    """
    from workbench.equipment import NEEDLE_MARGIN_MM, shortest_needle

    e, t = np.asarray(expert.entry_lps_mm, float), np.asarray(expert.target_lps_mm, float)
    entry, target = np.asarray(trajectory.entry_lps_mm, float), np.asarray(trajectory.target_lps_mm, float)
    metrics = {k: float(v[0]) for k, v in line_metrics(e, t, entry, target).items()}
    records = expert_records(e, t, seed=_seed_for(case_id, expert.target))
    z_scores, percentiles, subs = {}, {}, {}
    for name in METRIC_WEIGHTS:
        values = records[name]
        sd = float(values.std(ddof=1)) or 1e-9
        z = (metrics[name] - float(values.mean())) / sd
        z_scores[name] = round(z, 3)
        percentiles[name] = round(100.0 * float(np.mean(values <= metrics[name])), 1)
        subs[name] = round(_sub_score(z), 1)
    score = sum(METRIC_WEIGHTS[k] * subs[k] for k in METRIC_WEIGHTS) / sum(METRIC_WEIGHTS.values())
    findings = [
        f"{name.replace('_', ' ')}: {metrics[name]:.1f} (expert z {z_scores[name]:+.1f}) is beyond the pass threshold (z <= {PASS_Z:g})"
        for name in METRIC_WEIGHTS
        if z_scores[name] > PASS_Z
    ]
    passed = not findings

    nearest = min(targets_mri, key=lambda k: float(np.linalg.norm(np.asarray(targets_mri[k]) - target)))
    (task_level, task_side), (hit_level, hit_side) = _level_side(expert.target), _level_side(nearest)
    wrong_level, wrong_side = hit_level != task_level, hit_side != task_side
    if wrong_level:
        findings.append(f"wrong level: the target is at {hit_level} ({nearest}); the task is {task_level}")
    if wrong_side:
        findings.append(f"wrong side: the target is on the {hit_side}; the task is on the {task_side}")
    if wrong_level or wrong_side:
        score, passed = min(score, WRONG_LEVEL_CAP), False

    status = "not checked" if safety is None else safety.status
    if safety is not None and safety.status == "blocked":
        score, passed = min(score, BLOCKED_CAP), False
        findings += [f"safety blocked: {reason}" for reason in safety.reasons]
    elif safety is not None and safety.status == "warning":
        if expert_safety is None or expert_safety.status != "warning":
            score = max(score - WARNING_PENALTY, 0.0)
            findings += [f"safety warning: {reason}" for reason in safety.reasons]
        else:
            findings += [f"safety warning (the expert's plan has it too): {reason}" for reason in safety.reasons]

    depth = float(np.linalg.norm(target - entry))
    needed = shortest_needle(depth, NEEDLE_MARGIN_MM)
    needle = {
        "length_mm": float(trajectory.needle.length_mm),
        "gauge": trajectory.needle.gauge,
        "recommended_length_mm": float(needed.length_mm),
        "expert_length_mm": float(expert.needle_length_mm),
        "margin_mm": round(float(trajectory.needle.length_mm) - depth, 1),
    }
    if trajectory.needle.length_mm < depth + NEEDLE_MARGIN_MM:
        findings.append(
            f"needle too short: {trajectory.needle.length_mm:g} mm for a {depth:.0f} mm path "
            f"(keep {NEEDLE_MARGIN_MM:g} mm outside the skin; take {needed.length_mm:g} mm)"
        )
        passed = False
    elif trajectory.needle.length_mm > needed.length_mm:
        findings.append(f"needle longer than needed: {trajectory.needle.length_mm:g} mm where {needed.length_mm:g} mm reaches")
    return PlanScore(
        case_id=case_id,
        task=expert.target,
        trajectory=trajectory.name,
        score=round(float(score), 1),
        passed=bool(passed),
        wrong_level=bool(wrong_level),
        wrong_side=bool(wrong_side),
        metrics={k: round(v, 2) for k, v in metrics.items()},
        z_scores=z_scores,
        percentiles=percentiles,
        sub_scores=subs,
        safety_status=status,
        needle=needle,
        findings=findings,
        trainee_entry_lps_mm=tuple(map(float, entry)),
        trainee_target_lps_mm=tuple(map(float, target)),
        expert_entry_lps_mm=tuple(map(float, e)),
        expert_target_lps_mm=tuple(map(float, t)),
    )


def _pick_trajectory(plan, expert, path: Path):
    if not plan.trajectories:
        raise TeachingError("the plan has no trajectory to score", path)
    same = [t for t in plan.trajectories if t.structure == expert.target]
    if len(plan.trajectories) == 1:
        return plan.trajectories[0]
    if same:
        return same[0]
    target = np.asarray(expert.target_lps_mm, float)
    return min(plan.trajectories, key=lambda t: float(np.linalg.norm(np.asarray(t.target_lps_mm) - target)))


def score_plan(case_dir: str | Path, plan_path: str | Path, task: str | None = None, *, check_safety: bool = True) -> PlanScore:
    """Score the ``plan.json`` at ``plan_path`` for the case at ``case_dir``.

    Parameters
    ----------
    case_dir : str or Path
        A case with a ``ground_truth.json`` (expert plans): a library case or a demo case.
    plan_path : str or Path
        The trainee's ``plan.json`` (schema: workbench/schemas/plan.schema.json).
    task : str, optional
        The expert target to score against; default: the library's task for the case
        (``library.json`` beside it), else the target the plan's trajectory names, else the
        expert target nearest the plan's first target.
    check_safety : bool
        Run the safety checks on the case's label map and MRI (a few seconds).

    Raises
    ------
    TeachingError
        The case has no expert plans, the plan has no trajectory, or the task is unknown.
    """
    from workbench.io.ground_truth import read_ground_truth
    from workbench.planning.export import load_plan
    from workbench.teaching.library import library_case_for

    case_dir, plan_path = Path(case_dir), Path(plan_path)
    truth_path = case_dir / "ground_truth.json"
    if not truth_path.is_file():
        raise TeachingError("the case has no ground_truth.json with expert plans to score against", case_dir)
    ground_truth = read_ground_truth(truth_path)
    experts = {p.target: p for p in ground_truth.expert_plans}
    if not experts:
        raise TeachingError("the case's ground_truth.json has no expert plans", truth_path)
    plan = load_plan(plan_path)
    if not plan.trajectories:
        raise TeachingError("the plan has no trajectory to score", plan_path)
    if task is None:
        entry = library_case_for(case_dir)
        task = entry.task if entry is not None else None
    if task is None:
        named = [t.structure for t in plan.trajectories if t.structure in experts]
        if named:
            task = named[0]
        else:
            first = np.asarray(plan.trajectories[0].target_lps_mm, float)
            task = min(experts, key=lambda k: float(np.linalg.norm(np.asarray(experts[k].target_lps_mm) - first)))
    if task not in experts:
        raise TeachingError(f"no expert plan for task {task!r}; the case has: {', '.join(sorted(experts))}", case_dir)
    expert = experts[task]
    trajectory = _pick_trajectory(plan, expert, plan_path)
    safety, expert_safety = _safety(case_dir, trajectory, expert) if check_safety else (None, None)
    case_id = case_dir.resolve().name
    from workbench.case import load_case
    from workbench.errors import WorkbenchError

    try:
        case_id = load_case(case_dir, verify_digests=False).case_id
    except WorkbenchError:  # no readable case.json: the folder name names the case
        pass
    return score_trajectory(
        trajectory, dict(ground_truth.targets_mri), expert, case_id=case_id, safety=safety, expert_safety=expert_safety
    )


@functools.lru_cache(maxsize=4)
def _case_safety_inputs(case_dir: str, _case_json_mtime_ns: int):
    """The label map and MRI body mask of a case, read once per process and case.json version
    (a class submits many plans of the same few cases; reading them costs about 1.3 s)."""
    from workbench.case import load_case
    from workbench.case.labels import read_case_label_map
    from workbench.io.volume import load_volume
    from workbench.planning.mri_checks import BodyMask

    folder = Path(case_dir)
    case = load_case(folder, verify_digests=False)
    label_map = read_case_label_map(case, folder)
    body = BodyMask.from_volume(load_volume(folder / case.mri.path)) if case.mri is not None else None
    return label_map, body, {}


def _safety(case_dir: Path, trajectory, expert):
    """Safety reports of the trainee's and the expert's trajectories (one label map and body mask;
    the expert's report is kept with them)."""
    from workbench.planning.model import NeedleSpec, Trajectory
    from workbench.planning.safety import check_trajectory

    folder = Path(case_dir).resolve()
    label_map, body, expert_reports = _case_safety_inputs(str(folder), (folder / "case.json").stat().st_mtime_ns)
    key = (expert.target, tuple(np.round(expert.entry_lps_mm, 6)), tuple(np.round(expert.target_lps_mm, 6)))
    if key not in expert_reports:
        expert_trajectory = Trajectory(
            "expert", expert.target, expert.target_lps_mm, expert.entry_lps_mm,
            NeedleSpec(expert.needle_length_mm, expert.needle_gauge),
        )
        expert_reports[key] = check_trajectory(expert_trajectory, label_map, body=body)
    return check_trajectory(trajectory, label_map, body=body), expert_reports[key]




# -- rehearsal attempts (issue 18) ---------------------------------------------------------------

#: Scored metrics of a rehearsal attempt (``metrics.json`` of ``workbench rehearse``): name ->
#: (weight, higher is better). The expert reference of each is :func:`rehearsal_expert_records`.
REHEARSAL_WEIGHTS = {
    "tip_to_target_mm": (0.35, False),
    "frechet_to_expert_mm": (0.25, False),
    "tip_visible_fraction": (0.15, True),
    "redirections": (0.10, False),
    "punctures": (0.05, False),
    "time_s": (0.10, False),
}
#: Assumed expert performance where no expert geometry defines it (mean, SD): a teaching
#: judgement, stated in docs/teaching.md; real expert recordings would replace it.
REHEARSAL_EXPERT_ASSUMED = {
    "tip_visible_fraction": (0.85, 0.075),
    "redirections": (1.0, 1.0),
    "punctures": (1.0, 0.5),
    "time_s": (120.0, 45.0),
}
#: Events that make an attempt unsafe (capped at :data:`BLOCKED_CAP`, not passed) and events that
#: cost :data:`WARNING_PENALTY` once.
REHEARSAL_CRITICAL_EVENTS = ("dura_puncture", "vessel_puncture", "kidney_puncture", "intravascular_injection", "epidural_injection")
REHEARSAL_WARNING_EVENTS = ("nerve_contact",)
#: Where the injectate of a nerve-root block belongs.
REHEARSAL_TARGET_COMPARTMENTS = ("paravertebral",)


def rehearsal_expert_records(n: int = EXPERT_RECORDS, seed: int = 0) -> dict[str, np.ndarray]:
    """Simulated expert values of the rehearsal metrics, ``(n,)`` each.

    ``tip_to_target_mm``: the norm of the expert tip spread (:data:`EXPERT_TARGET_SD_MM` per axis,
    as for plans); ``frechet_to_expert_mm``: for two straight paths the discrete Frechet distance
    is the larger endpoint distance, so ``max(|entry spread|, |tip spread|)`` with the entry spread
    :data:`EXPERT_ENTRY_SD_MM` per axis across the needle; the others: normal with
    :data:`REHEARSAL_EXPERT_ASSUMED` (counts and fractions clipped to their ranges).
    """
    rng = np.random.default_rng(seed)
    tip = np.linalg.norm(rng.normal(0.0, EXPERT_TARGET_SD_MM, (n, 3)), axis=1)
    entry = np.linalg.norm(rng.normal(0.0, EXPERT_ENTRY_SD_MM, (n, 2)), axis=1)
    records = {"tip_to_target_mm": tip, "frechet_to_expert_mm": np.maximum(tip, entry)}
    for name, (mean, sd) in REHEARSAL_EXPERT_ASSUMED.items():
        values = rng.normal(mean, sd, n)
        records[name] = np.clip(values, 0.0, 1.0) if name == "tip_visible_fraction" else np.maximum(values, 0.0)
    return records


@dataclass(frozen=True, kw_only=True)
class RehearsalScore(_Score):
    """The score of one rehearsal attempt (``metrics.json``) against expert records.

    ``metrics`` holds the attempt's metrics as given (JSON values); ``z_scores``, ``percentiles``
    and ``sub_scores`` the expert-anchored figures per metric of :data:`REHEARSAL_WEIGHTS`.
    """

    attempt_kind: str = "rehearsal"

    def to_dict(self) -> dict:
        m = self.metrics
        return {
            **self._common_dict(),
            "tip_to_target_mm": m.get("tip_to_target_mm"),
            "frechet_to_expert_mm": m.get("frechet_to_expert_mm"),
            "rehearsal_metrics": m,
        }


def _number(metrics: dict, name: str, source) -> float | None:
    value = metrics.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise TeachingError(f"rehearsal metric {name!r} must be a finite number or null, not {value!r}", source)
    return float(value)


def score_rehearsal(metrics: dict, *, case_id: str, task: str, source=None) -> RehearsalScore:
    """Score a rehearsal attempt's metrics (the ``metrics.json`` dict of issue 18) for ``task``.

    Each metric of :data:`REHEARSAL_WEIGHTS` becomes a z-score against
    :func:`rehearsal_expert_records` (sign turned for ``tip_visible_fraction``: less is worse),
    a percentile and a sub-score as for plans (pass at ``z <= PASS_Z``); a metric that is null
    (no needle, no imaging plane) scores 0 and fails. The score is their weighted mean, then capped
    at :data:`WRONG_LEVEL_CAP` when the attempt's ``target`` is at another level or side than
    ``task``, at :data:`BLOCKED_CAP` after a critical event (:data:`REHEARSAL_CRITICAL_EVENTS`),
    less :data:`WARNING_PENALTY` after a nerve contact; an injection outside
    :data:`REHEARSAL_TARGET_COMPARTMENTS` fails the attempt.

    Raises
    ------
    TeachingError
        ``metrics`` is not a dict of the issue-18 keys with numbers (``source`` names the file).
    """
    if not isinstance(metrics, dict):
        raise TeachingError("rehearsal metrics must be a JSON object", source)
    missing = [name for name in (*REHEARSAL_WEIGHTS, "events") if name not in metrics]
    if missing:
        raise TeachingError(f"not a rehearsal metrics.json: missing {', '.join(missing)}", source)
    events = metrics["events"]
    if not isinstance(events, list) or not all(isinstance(e, dict) and isinstance(e.get("type"), str) for e in events):
        raise TeachingError("rehearsal metric 'events' must be a list of objects with a 'type'", source)
    records = rehearsal_expert_records(seed=_seed_for(case_id, task))
    z_scores, percentiles, sub_scores, findings = {}, {}, {}, []
    all_within = True
    for name, (_weight, higher_is_better) in REHEARSAL_WEIGHTS.items():
        value = _number(metrics, name, source)
        if value is None:
            z_scores[name], percentiles[name], sub_scores[name] = None, None, 0.0
            all_within = False
            findings.append(f"{name}: not measured in this attempt (scores 0)")
            continue
        reference = records[name]
        sign = -1.0 if higher_is_better else 1.0
        z = sign * (value - float(reference.mean())) / max(float(reference.std()), 1e-9)
        z_scores[name] = round(z, 3)
        percentiles[name] = round(100.0 * float(np.mean(reference <= value)), 1)
        sub_scores[name] = round(_sub_score(z), 2)
        if z > PASS_Z:
            all_within = False
            findings.append(f"{name} = {value:g}: beyond two expert SDs (z = {z:.1f})")
    score = sum(REHEARSAL_WEIGHTS[name][0] * sub_scores[name] for name in REHEARSAL_WEIGHTS)
    score /= sum(weight for weight, _ in REHEARSAL_WEIGHTS.values())
    target = str(metrics.get("target") or task)
    (level, side), (task_level, task_side) = _level_side(target), _level_side(task)
    wrong_level, wrong_side = level != task_level, side != task_side
    if wrong_level or wrong_side:
        score = min(score, WRONG_LEVEL_CAP)
        findings.append(f"wrong {'level' if wrong_level else 'side'}: the attempt aimed at {target}, the task is {task}")
    types = [e["type"] for e in events]
    critical = sorted({t for t in types if t in REHEARSAL_CRITICAL_EVENTS})
    safety_status = "ok"
    if critical:
        score, safety_status = min(score, BLOCKED_CAP), "blocked"
        findings.append("critical: " + ", ".join(t.replace("_", " ") for t in critical))
    elif any(t in REHEARSAL_WARNING_EVENTS for t in types):
        score, safety_status = max(score - WARNING_PENALTY, 0.0), "warning"
        findings.append("warning: nerve contact")
    compartment = metrics.get("injection_compartment")
    injected = _number(metrics, "injected_ml", source) if "injected_ml" in metrics else None
    wrong_compartment = bool(injected) and compartment not in REHEARSAL_TARGET_COMPARTMENTS
    if wrong_compartment:
        findings.append(f"injectate in the {compartment} compartment, not {' or '.join(REHEARSAL_TARGET_COMPARTMENTS)}")
    passed = all_within and not (wrong_level or wrong_side or critical or wrong_compartment)
    return RehearsalScore(
        case_id=case_id, task=task, score=round(float(np.clip(score, 0.0, 100.0)), 2), passed=bool(passed),
        wrong_level=bool(wrong_level), wrong_side=bool(wrong_side), metrics=dict(metrics), z_scores=z_scores,
        percentiles=percentiles, sub_scores=sub_scores, safety_status=safety_status, findings=findings,
    )


def load_rehearsal_metrics(path: str | Path) -> dict:
    """The dict of a rehearsal attempt's ``metrics.json`` (at most 1 MB), read with the limits of
    :func:`workbench.io.json_io.read_json_limited`.

    Raises
    ------
    TeachingError
        Missing, too large or not JSON (the message names the file).
    """
    from workbench.io.json_io import read_json_limited

    return read_json_limited(path, error=TeachingError, what="rehearsal metrics file", max_bytes=1_000_000)
