"""The teaching case library: varied synthetic cases with expert plans and a difficulty rating.

``workbench library build OUT_DIR --cases N [--seed S]`` writes ``OUT_DIR/<case_id>/`` (an
ordinary case bundle made by :func:`workbench.phantom.democase.generate_demo_case`, expert plans
in its ``ground_truth.json``), ``OUT_DIR/<case_id>.expert.plan.json`` (the expert plan of the
case's task as a ``plan.json``) and ``OUT_DIR/library.json`` (the index: per case its features,
task and difficulty). ``workbench library list DIR`` prints the index.

What varies (each case draws from its own seed; docs/teaching.md):

- BMI uniform 18-40 kg/m^2 (fat thickness 6-50 mm: depth and ultrasound quality);
- scoliosis in half of the cases: coronal L1-S1 (Cobb) angle 10-20 deg, either side (the
  phantom's validated range ends at 20 deg; 10-30 was asked for, see docs/teaching.md);
- a lumbosacral transitional vertebra in two cases of three: sacralised L5 and lumbarised S1
  alternate (the wrong-level trap: counting up from the sacrum lands one level off), and the
  task of such a case is the L5 root (next to the anomaly);
- degenerative foraminal narrowing in half of the cases, grade 0.3-1;
- posture change between MRI and procedure: per-vertebra rotation bound 1-4 deg and
  translation bound 0.5-2 mm.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from workbench._atomic import atomic_write_text
from workbench.teaching import TeachingError

__all__ = [
    "LIBRARY_INDEX",
    "LibraryCase",
    "build_library",
    "case_features",
    "difficulty_rating",
    "expert_plan_for",
    "library_case_for",
    "read_library",
]

#: The index file of a library folder.
LIBRARY_INDEX = "library.json"
LIBRARY_FORMAT = "workbench-case-library"
LIBRARY_VERSION = 1
#: Sweeps of a library case: one paramedian sweep keeps a case at about 10-20 s to generate.
LIBRARY_SWEEPS = ("paramedian-sagittal-left",)
#: Weights of the difficulty rating (docs/teaching.md); the sum of the weights is the maximum.
DIFFICULTY_WEIGHTS = {"bmi": 1.5, "scoliosis": 1.0, "transitional": 1.5, "stenosis": 1.0, "posture": 1.0}


@dataclass(frozen=True)
class LibraryCase:
    """One entry of ``library.json``.

    Attributes
    ----------
    case_id : str
        Folder name under the library and the bundle's case id.
    task : str
        The target the trainee plans: a key of the case's expert plans
        (e.g. ``"L5 left exiting nerve root, dorsal aspect"``).
    features : dict
        ``bmi`` (kg/m^2), ``scoliosis_deg`` (coronal L1-S1 angle), ``transitional``,
        ``foraminal_stenosis`` (0..1), ``posture_rotation_deg`` and ``posture_translation_mm``
        (bounds of the per-vertebra posture change), ``age_years``, ``fat_thickness_mm``,
        ``task_depth_mm`` (expert entry to target).
    difficulty : float
        1 (easy) .. 5 (hard), :func:`difficulty_rating`.
    seed : int
    """

    case_id: str
    task: str
    features: dict
    difficulty: float
    seed: int

    @property
    def difficulty_label(self) -> str:
        return "easy" if self.difficulty < 2.34 else ("moderate" if self.difficulty < 3.67 else "hard")


def difficulty_rating(features: dict) -> float:
    """Difficulty 1..5 from a case's features (docs/teaching.md).

    ``1 + 4 * sum(w_i * f_i) / sum(w_i)`` with, each in 0..1:
    ``f_bmi = clip((BMI - 22) / 16)`` (depth, ultrasound attenuation), ``f_scoliosis =
    |Cobb| / 20``, ``f_transitional = 1`` for a transitional vertebra (the wrong-level trap),
    ``f_stenosis`` = the foraminal narrowing grade, ``f_posture = (rotation_bound / 4 deg +
    translation_bound / 2 mm) / 2``; weights :data:`DIFFICULTY_WEIGHTS`. Rounded to 0.1.
    """
    f = {
        "bmi": float(np.clip((float(features["bmi"]) - 22.0) / 16.0, 0.0, 1.0)),
        "scoliosis": float(np.clip(abs(float(features["scoliosis_deg"])) / 20.0, 0.0, 1.0)),
        "transitional": 0.0 if features["transitional"] == "none" else 1.0,
        "stenosis": float(np.clip(float(features["foraminal_stenosis"]), 0.0, 1.0)),
        "posture": float(
            np.clip(
                (float(features["posture_rotation_deg"]) / 4.0 + float(features["posture_translation_mm"]) / 2.0) / 2.0,
                0.0,
                1.0,
            )
        ),
    }
    total = sum(DIFFICULTY_WEIGHTS[k] * f[k] for k in f) / sum(DIFFICULTY_WEIGHTS.values())
    return round(1.0 + 4.0 * total, 1)


def case_features(index: int, seed: int) -> tuple[dict, str]:
    """The features and the task of library case ``index`` (see the module docstring).

    Returns
    -------
    features : dict
        As :attr:`LibraryCase.features`, without the measured ``fat_thickness_mm`` and ``task_depth_mm``.
    task : str
        ``"<level> <side> exiting nerve root, dorsal aspect"``.
    """
    rng = np.random.default_rng([seed, index, 19])
    transitional = ("none", "sacralised-L5", "lumbarised-S1")[index % 3]
    scoliosis = float(rng.uniform(10.0, 20.0) * rng.choice([-1.0, 1.0])) if rng.random() < 0.5 else 0.0
    stenosis = float(rng.uniform(0.3, 1.0)) if rng.random() < 0.5 else 0.0
    features = {
        "bmi": round(float(rng.uniform(18.0, 40.0)), 1),
        "age_years": round(float(rng.uniform(35.0, 80.0)), 0),
        "scoliosis_deg": round(scoliosis, 1),
        "transitional": transitional,
        "foraminal_stenosis": round(stenosis, 2),
        "posture_rotation_deg": round(float(rng.uniform(1.0, 4.0)), 2),
        "posture_translation_mm": round(float(rng.uniform(0.5, 2.0)), 2),
    }
    level = "L5" if transitional != "none" else str(rng.choice(["L3", "L4", "L5"]))
    side = str(rng.choice(["left", "right"]))
    return features, f"{level} {side} exiting nerve root, dorsal aspect"


def _spec(case_id: str, index: int, seed: int, features: dict, sweep_speed_mm_s: float = 30.0):
    from workbench.phantom.democase import DemoCaseSpec

    return DemoCaseSpec(
        seed=int(seed) * 1000 + index,
        bmi=features["bmi"],
        age_years=features["age_years"],
        posture_change=True,
        max_posture_rotation_deg=features["posture_rotation_deg"],
        max_posture_translation_mm=features["posture_translation_mm"],
        sweeps=LIBRARY_SWEEPS,
        sweep_speed_mm_s=sweep_speed_mm_s,
        case_id=case_id,
        scoliosis_deg=features["scoliosis_deg"],
        transitional=features["transitional"],
        foraminal_stenosis=features["foraminal_stenosis"],
    )


def expert_plan_for(case_dir: str | Path, task: str | None = None):
    """The expert :class:`~workbench.planning.model.Plan` of a case (its ``ground_truth.json``),
    only the ``task`` trajectory when one is named.

    Raises
    ------
    TeachingError
        The case has no ground truth with expert plans, or none for ``task``.
    """
    from workbench.io.ground_truth import read_ground_truth
    from workbench.planning.model import NeedleSpec, Plan, Provenance, Trajectory

    case_dir = Path(case_dir)
    path = case_dir / "ground_truth.json"
    if not path.is_file():
        raise TeachingError("the case has no ground_truth.json with expert plans (not a library case)", case_dir)
    ground_truth = read_ground_truth(path)
    experts = [p for p in ground_truth.expert_plans if task is None or p.target == task]
    if not experts:
        raise TeachingError(f"the case has no expert plan for {task!r}", path)
    trajectories = tuple(
        Trajectory(
            name=p.target.split(" exiting")[0],
            structure=p.target,
            target_lps_mm=p.target_lps_mm,
            entry_lps_mm=p.entry_lps_mm,
            needle=NeedleSpec(p.needle_length_mm, p.needle_gauge),
            injectate_ml=p.injectate_ml,
            approach=p.approach,
        )
        for p in experts
    )
    return Plan(f"{case_dir.name}-expert", trajectories, Provenance(author="expert"), None, "Expert plan")


def _check_case_id(case_id: str) -> str:
    from workbench.case.create import CASE_ID_PATTERN  # the rule every case id follows

    if not CASE_ID_PATTERN.fullmatch(case_id):
        raise TeachingError(f"library case id {case_id!r} must be letters, digits, '_' or '-'")
    return case_id


def build_library(
    out_dir: str | Path,
    cases: int,
    seed: int = 1,
    progress: Callable[[str], None] | None = None,
    *,
    sweep_speed_mm_s: float = 30.0,
) -> list[LibraryCase]:
    """Generate ``cases`` library cases into ``out_dir`` (new, empty, or a library to extend).

    Cases already in the index are kept (a rerun after an interruption continues); the index is
    rewritten atomically after each case.

    Parameters
    ----------
    out_dir : str or Path
    cases : int
        1..100.
    seed : int
        Seeds every case's features and anatomy; the same seed gives the same library.
    progress : callable(str), optional
    sweep_speed_mm_s : float
        Probe speed of the simulated sweep (fewer frames when faster; 30 mm/s gives about 125).

    Returns
    -------
    list of LibraryCase
    """
    from workbench.io.ground_truth import read_ground_truth
    from workbench.phantom.democase import generate_demo_case
    from workbench.planning.export import write_plan_json

    if isinstance(cases, bool) or not isinstance(cases, int) or not 1 <= cases <= 100:
        raise TeachingError(f"--cases must be an integer 1..100, not {cases!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31 // 1000:
        raise TeachingError(f"--seed must be an integer 0..{2**31 // 1000 - 1}, not {seed!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise TeachingError("library folder is a file", out_dir)
    existing = read_library(out_dir) if (out_dir / LIBRARY_INDEX).is_file() else []
    if not existing and out_dir.is_dir() and any(out_dir.iterdir()):
        raise TeachingError("folder exists, is not empty and holds no library.json; choose a new folder", out_dir)
    entries = {entry.case_id: entry for entry in existing}
    say = progress or (lambda message: None)
    for index in range(cases):
        case_id = _check_case_id(f"LIB-{seed:03d}-{index + 1:02d}")
        if case_id in entries:
            continue
        features, task = case_features(index, seed)
        case_dir = out_dir / case_id
        if case_dir.exists():  # a case folder without an index entry: interrupted after generation
            import shutil

            shutil.rmtree(case_dir)
        say(f"case {index + 1}/{cases} ({case_id}): {_describe(features)}")
        generate_demo_case(case_dir, _spec(case_id, index, seed, features, sweep_speed_mm_s), progress=None)
        ground_truth = read_ground_truth(case_dir / "ground_truth.json")
        expert = next(p for p in ground_truth.expert_plans if p.target == task)
        features = {
            **features,
            "fat_thickness_mm": round(float(ground_truth.fat_thickness_mm), 1),
            "task_depth_mm": round(float(expert.insertion_depth_mm), 1),
        }
        write_plan_json(expert_plan_for(case_dir, task), out_dir / f"{case_id}.expert.plan.json")
        entries[case_id] = LibraryCase(case_id, task, features, difficulty_rating(features), int(seed) * 1000 + index)
        _write_index(out_dir, list(entries.values()))
    return sorted(entries.values(), key=lambda e: e.case_id)


def _describe(features: dict) -> str:
    parts = [f"BMI {features['bmi']:g}"]
    if features["scoliosis_deg"]:
        parts.append(f"scoliosis {features['scoliosis_deg']:+g} deg")
    if features["transitional"] != "none":
        parts.append(features["transitional"])
    if features["foraminal_stenosis"]:
        parts.append(f"foraminal narrowing {features['foraminal_stenosis']:g}")
    parts.append(f"posture change <= {features['posture_rotation_deg']:g} deg / {features['posture_translation_mm']:g} mm")
    return ", ".join(parts)


def _write_index(out_dir: Path, entries: list[LibraryCase]) -> None:
    document = {
        "format": LIBRARY_FORMAT,
        "version": LIBRARY_VERSION,
        "difficulty_weights": DIFFICULTY_WEIGHTS,
        "cases": [
            {**asdict(e), "difficulty_label": e.difficulty_label, "description": _describe(e.features)}
            for e in sorted(entries, key=lambda e: e.case_id)
        ],
    }
    atomic_write_text(out_dir / LIBRARY_INDEX, json.dumps(document, indent=2) + "\n")


def read_library(folder: str | Path) -> list[LibraryCase]:
    """The cases of a library folder's ``library.json``.

    Raises
    ------
    TeachingError
        No index, not JSON, or not a case library.
    """
    folder = Path(folder)
    path = folder / LIBRARY_INDEX
    if not path.is_file():
        raise TeachingError(f"not a case library (no {LIBRARY_INDEX})", folder)
    from workbench.io.json_io import read_json_limited

    document = read_json_limited(path, error=TeachingError, what="library index")
    if not isinstance(document, dict) or document.get("format") != LIBRARY_FORMAT:
        raise TeachingError(f"not a case library index (no \"format\": \"{LIBRARY_FORMAT}\")", path)
    try:
        return [
            LibraryCase(
                _check_case_id(str(c["case_id"])), str(c["task"]), dict(c["features"]), float(c["difficulty"]), int(c["seed"])
            )
            for c in document["cases"]
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise TeachingError(f"library index entry is malformed ({exc!r})", path) from None


def library_case_for(case_dir: str | Path) -> LibraryCase | None:
    """The library entry of a case folder (from ``library.json`` in its parent), or None."""
    case_dir = Path(case_dir).resolve()
    if not (case_dir.parent / LIBRARY_INDEX).is_file():
        return None
    return next((e for e in read_library(case_dir.parent) if e.case_id == case_dir.name), None)


