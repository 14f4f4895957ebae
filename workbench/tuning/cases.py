"""The fixed, seeded case set of a study and the evaluation of one parameter setting on one case start.

A study tunes on :class:`CaseSet`: ``cases`` simulated cases
(:func:`workbench.registration.bench.simulate_registration_case`, seeds ``seed .. seed + cases - 1``,
BMI uniform 22-35 from the seed) and ``starts`` random initial misalignments per case (translation
up to 20 mm, rotation up to 15 deg, as ``workbench bench registration``). The set is a pure
function of its description (:meth:`CaseSet.as_dict`), so every trial of a study, on any worker,
sees the same cases and starts; the study stores the description and refuses to run on another.
Held-out cases (:meth:`CaseSet.held_out`) use seeds from :data:`HELD_OUT_SEED_OFFSET` on, never
the tuned ones.

One Dask task = one (case, start) evaluation (:func:`evaluate_start`): the pipeline with the trial's
settings, TRE at each nerve-root target (mm), run time (s). Figures of a trial (:func:`figures`):
median and 90th-percentile TRE over all targets of all starts, success rate over all targets
(TRE < 3 mm) and the median run time. Ideal-simulation figures (profile ``"ideal"``) are an upper
bound of the accuracy on real data.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import asdict, dataclass

import numpy as np

from workbench.tuning.space import TuningError

__all__ = ["CaseSet", "HELD_OUT_SEED_OFFSET", "PROFILES", "evaluate_start", "figures", "objective_value", "simulate_case"]

#: Held-out cases start at ``seed + HELD_OUT_SEED_OFFSET`` (a study would need this many cases to reach them).
HELD_OUT_SEED_OFFSET = 100_000
#: Simulation profiles: "ideal" (the simulator's defaults, an upper bound) and "realistic" (every
#: error source of ``workbench.phantom.error_model.ErrorSources.realistic``, drawn per case seed).
PROFILES = ("ideal", "realistic")
#: Trial TRE above this counts as this in the objective (a failure is infinite), mm.
TRE_CAP_MM = 50.0
#: Objective weights (see :func:`objective_value`).
P90_WEIGHT, FAILURE_WEIGHT_MM, TIME_WEIGHT_MM_PER_S = 0.5, 20.0, 0.1


def profile_supported(profile: str) -> bool:
    """Whether the registration benchmark's case simulator takes ``profile`` (``"ideal"`` always works)."""
    from workbench.registration.bench import simulate_registration_case

    return profile == "ideal" or "errors" in inspect.signature(simulate_registration_case).parameters


@dataclass(frozen=True)
class CaseSet:
    """The simulated cases and starts of a study.

    Attributes
    ----------
    cases : int
        Simulated cases.
    starts : int
        Random initial misalignments per case.
    seed : int
        Case ``i`` has phantom seed ``seed + i``; the starts and BMIs are drawn from it too.
    profile : str
        Simulation profile (:data:`PROFILES`).
    spacing_mm : float
        Phantom and reconstruction voxel size, mm (1.0 as the benchmark; 2 mm for quick runs).
    max_offset_mm, max_rotation_deg : float
        Size of the misalignments.
    """

    cases: int = 2
    starts: int = 2
    seed: int = 0
    profile: str = "ideal"
    spacing_mm: float = 1.0
    max_offset_mm: float = 20.0
    max_rotation_deg: float = 15.0

    def __post_init__(self) -> None:
        if self.cases < 1 or self.starts < 1:
            raise TuningError(f"a study needs at least 1 case and 1 start, got {self.cases} and {self.starts}")
        if self.profile not in PROFILES:
            raise TuningError(f"unknown profile {self.profile!r}; choose from {', '.join(PROFILES)}")
        if not profile_supported(self.profile):
            raise TuningError(
                f"profile {self.profile!r} needs simulate_registration_case(errors=...), which this version lacks"
            )
        if not 0.5 <= self.spacing_mm <= 2.0:
            raise TuningError(f"case spacing must be within 0.5..2 mm, got {self.spacing_mm:g}")

    def as_dict(self) -> dict:
        """JSON description (stored with the study; equal descriptions mean equal cases)."""
        return asdict(self)

    def case_specs(self) -> list[dict]:
        """Per case: ``{"index", "seed", "bmi"}`` (BMI uniform 22-35 from the study seed)."""
        rng = np.random.default_rng([self.seed, 20])
        return [{"index": i, "seed": self.seed + i, "bmi": round(float(rng.uniform(22.0, 35.0)), 2)} for i in range(self.cases)]

    def held_out(self, cases: int | None = None) -> CaseSet:
        """A disjoint case set (seeds from ``seed + HELD_OUT_SEED_OFFSET``) of the same kind."""
        from dataclasses import replace

        return replace(self, cases=cases or self.cases, seed=self.seed + HELD_OUT_SEED_OFFSET)

    def tasks(self) -> list[tuple[int, int]]:
        """Every (case index, start index) a trial evaluates."""
        return [(case, start) for case in range(self.cases) for start in range(self.starts)]


_CASE_CACHE: dict = {}


def pin_threads() -> None:
    """One thread for SimpleITK, numba and the BLAS in this process (one task per worker thread)."""
    import SimpleITK as sitk

    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(1)
    try:
        import numba

        numba.set_num_threads(1)
    except (ImportError, ValueError):  # pragma: no cover - numba missing or its layer refuses
        pass


def simulate_case(case_set: dict, index: int):
    """Simulate case ``index`` of ``case_set`` (a :meth:`CaseSet.as_dict`); cached per process.

    Returns
    -------
    (RegistrationCase, list of (3,) float arrays)
        The case and its ``starts`` initial ``ReferenceToMri`` matrices ((4, 4), ``Reference`` to ``Mri``).
    """
    from workbench.registration.bench import random_misalignment, simulate_registration_case

    key = (tuple(sorted(case_set.items())), index)
    if key in _CASE_CACHE:
        return _CASE_CACHE[key]
    pin_threads()
    spec = CaseSet(**case_set).case_specs()[index]
    kwargs = {"phantom_spacing_mm": case_set["spacing_mm"], "volume_spacing_mm": case_set["spacing_mm"]}
    if case_set["profile"] == "realistic":
        from workbench.phantom.error_model import ErrorSources

        kwargs["errors"] = ErrorSources.realistic()
    case = simulate_registration_case(spec["seed"], spec["bmi"], **kwargs)
    rng = np.random.default_rng([case_set["seed"], 21, index])
    centre = case.reference_to_mri.inverse().apply_to_points(case.targets_mri.mean(axis=0))
    starts = [
        case.reference_to_mri.matrix @ random_misalignment(rng, centre, case_set["max_offset_mm"], case_set["max_rotation_deg"])[0]
        for _ in range(case_set["starts"])
    ]
    if len(_CASE_CACHE) > 8:
        _CASE_CACHE.clear()
    _CASE_CACHE[key] = (case, starts)
    return case, starts


def evaluate_start(method: str, values: dict, case_set: dict, case_index: int, start_index: int, case=None) -> dict:
    """Run ``method`` with parameter ``values`` on one (case, start); the unit of work of a Dask task.

    Parameters
    ----------
    method : str
        Benchmark method (``workbench.registration.bench.METHODS``).
    values : dict
        Parameter name -> value (``workbench.tuning.space``); empty: the defaults.
    case_set : dict
        :meth:`CaseSet.as_dict`.
    case_index, start_index : int
    case : (RegistrationCase, starts), optional
        The simulated case (a Dask future's result); simulated here (and cached) when None.

    Returns
    -------
    dict
        ``case``, ``start``, ``errors_mm`` (per target, mm; ``inf`` where the registration raised),
        ``time_s`` (registration time), ``task_s`` (the whole task, s), ``cpu_s`` (its process CPU time,
        s), ``failed`` (bool), ``message``.
    """
    from workbench.errors import RegistrationError
    from workbench.frames import Transform
    from workbench.registration.bench import pipeline_inputs, target_errors_mm
    from workbench.registration.pipeline import run_registration_pipeline
    from workbench.tuning.space import settings_for

    start_s, start_cpu_s = time.perf_counter(), time.process_time()
    pin_threads()
    case, starts = case if case is not None else simulate_case(case_set, case_index)
    initial = Transform(starts[start_index], "Reference", "Mri")
    try:
        settings = settings_for(method, values)
        inputs = pipeline_inputs(case, initial)
        if "bone-robust" in settings.refinements:  # the robust ICP also needs how its points were measured
            from dataclasses import replace

            from workbench.registration.robust_bench import case_beam_points

            inputs = replace(inputs, us_beam_points=case_beam_points(case))
        result = run_registration_pipeline(inputs, settings)
        errors = [float(v) for v in target_errors_mm(result, case)]
        run_s, failed, message = float(result.run_time_s), False, result.message
    except RegistrationError as exc:
        errors, run_s, failed, message = [float("inf")] * len(case.targets_mri), time.perf_counter() - start_s, True, str(exc)
    return {
        "case": case_index, "start": start_index, "errors_mm": errors, "time_s": run_s,
        "task_s": time.perf_counter() - start_s, "cpu_s": time.process_time() - start_cpu_s, "failed": failed,
        "message": message,
    }


def figures(evaluations: list[dict]) -> dict:
    """The benchmark figures of one trial's evaluations.

    Returns
    -------
    dict
        ``median_tre_mm``, ``p90_tre_mm`` (over all targets of all starts, mm; None if all failed),
        ``success_rate`` (fraction of targets with TRE < 3 mm), ``median_time_s``, ``failures``
        (starts whose registration raised), ``case_tre_mm`` (per case: mean TRE over its starts and
        targets, mm, None where a start failed), ``evaluations``.
    """
    from workbench.registration.bench import SUCCESS_TRE_MM

    errors = np.array([e for ev in evaluations for e in ev["errors_mm"]], dtype=float)
    finite = np.isfinite(errors)
    per_case: dict[int, list[float]] = {}
    for ev in evaluations:
        per_case.setdefault(ev["case"], []).extend(ev["errors_mm"])

    def rounded(value):
        return round(float(value), 4) if np.isfinite(value) else None

    return {
        "median_tre_mm": rounded(np.median(errors)) if errors.size else None,
        "p90_tre_mm": rounded(np.percentile(errors, 90, method="higher")) if errors.size else None,
        "success_rate": round(float(np.mean(errors < SUCCESS_TRE_MM)), 4) if errors.size else 0.0,
        "median_time_s": round(float(np.median([ev["time_s"] for ev in evaluations])), 4),
        "failures": int(sum(ev["failed"] for ev in evaluations)),
        "finite_fraction": round(float(finite.mean()), 4) if errors.size else 0.0,
        "case_tre_mm": {str(k): rounded(np.mean(v)) for k, v in sorted(per_case.items())},
        "evaluations": len(evaluations),
    }


def objective_value(fig: dict) -> float:
    """The value a study minimises (mm-like score) from :func:`figures`.

    ``median TRE + 0.5 x p90 TRE + 20 mm x (1 - success rate) + 0.1 mm/s x median time``, TREs
    capped at :data:`TRE_CAP_MM` (a failed start counts as the cap).
    """
    median = min(fig["median_tre_mm"] if fig["median_tre_mm"] is not None else TRE_CAP_MM, TRE_CAP_MM)
    p90 = min(fig["p90_tre_mm"] if fig["p90_tre_mm"] is not None else TRE_CAP_MM, TRE_CAP_MM)
    return float(
        median + P90_WEIGHT * p90 + FAILURE_WEIGHT_MM * (1.0 - fig["success_rate"]) + TIME_WEIGHT_MM_PER_S * fig["median_time_s"]
    )
