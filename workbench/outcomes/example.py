"""A synthetic procedure log with confounding and a known treatment effect.

:func:`simulate_cohort` draws patients whose chance of getting the treated guidance rises with
age, baseline pain, BMI and postherpetic neuralgia, and whose outcomes depend on the same
covariates plus a fixed additive treatment effect (:class:`CohortSpec`). A naive comparison
is therefore biased; propensity matching should recover the effect. The example log shipped
with the package (:func:`example_log_path`) is ``simulate_cohort(EXAMPLE_SPEC)``, rewritten by
:func:`write_example_log`. Synthetic: no real patient is in it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.outcomes.log import COLUMN_NAMES, DISEASE_TYPES, save_log, validate_log

__all__ = ["CohortSpec", "EXAMPLE_SPEC", "example_log_path", "simulate_cohort", "write_example_log"]


@dataclass(frozen=True)
class CohortSpec:
    """Parameters of a simulated cohort.

    Attributes
    ----------
    n : int
        Procedures (one per patient).
    seed : int
    treated, control : str
        Group labels.
    treated_fraction : float
        Roughly the fraction treated, for average covariates (confounding moves it per patient).
    confounding : float
        Scales how strongly covariates drive treatment choice (0: randomised).
    effect_nrs_1h, effect_nrs_7d : float
        Additive treatment effect on the latent NRS at 1 h / 7 days, NRS points (negative = less pain).
    effect_operation_time_s : float
        Additive effect on operation time, s.
    adverse_event_risk_treated, adverse_event_risk_control : float
        Probability of an adverse event.
    integer_nrs : bool
        Round NRS to whole points (as recorded clinically); False keeps the latent values
        (still clipped to 0-10) so effects are exactly additive.
    """

    n: int = 300
    seed: int = 20240501
    treated: str = "fusion"
    control: str = "us"
    treated_fraction: float = 0.35
    confounding: float = 1.0
    effect_nrs_1h: float = -0.8
    effect_nrs_7d: float = -1.0
    effect_operation_time_s: float = -300.0
    adverse_event_risk_treated: float = 0.03
    adverse_event_risk_control: float = 0.15
    integer_nrs: bool = True


#: The spec of the example log shipped with the package.
EXAMPLE_SPEC = CohortSpec()


def simulate_cohort(spec: CohortSpec = EXAMPLE_SPEC) -> pd.DataFrame:
    """Draw a procedure log (validated, :data:`~workbench.outcomes.log.COLUMN_NAMES` columns).

    Returns
    -------
    pandas.DataFrame
        One row per procedure; ids ``P0001``..., ``SIM0001``...; times in May-June 2024 (UTC).
    """
    rng = np.random.default_rng(spec.seed)
    n = spec.n
    sex_male = rng.random(n) < 0.45
    disease = rng.choice(len(DISEASE_TYPES), size=n, p=[0.5, 0.3, 0.2])
    phn = disease == 2
    age = np.clip(rng.normal(58, 11, n) + 8 * phn, 25, 90).round()
    duration = np.clip(np.exp(rng.normal(np.log(12), 0.8, n)), 1, 520).round(1)
    bmi = np.clip(rng.normal(25.5, 3.5, n), 16, 45).round(1)
    nrs_baseline = np.clip(np.round(rng.normal(6.5, 1.2, n)), 3, 10)

    base = np.log(spec.treated_fraction / (1 - spec.treated_fraction))
    linear = base + spec.confounding * (
        0.05 * (age - 60) + 0.5 * (nrs_baseline - 6.5) + 0.12 * (bmi - 25.5) + 0.6 * phn - 0.2 * sex_male
    )
    treated = rng.random(n) < 1 / (1 + np.exp(-linear))

    def nrs(latent):
        latent = np.clip(latent, 0, 10)
        return np.round(latent) if spec.integer_nrs else latent

    nrs_1h = nrs(
        0.35 * nrs_baseline + 0.015 * (age - 60) + 0.3 * phn + spec.effect_nrs_1h * treated + rng.normal(0, 0.7, n)
    )
    nrs_7d = nrs(
        0.55 * nrs_baseline + 0.03 * (age - 60) + 0.6 * phn + 0.05 * (bmi - 25.5)
        + spec.effect_nrs_7d * treated + rng.normal(0, 0.9, n)
    )
    operation_time_s = np.clip(
        1200 + 25 * (bmi - 25.5) + 4 * (age - 60) + spec.effect_operation_time_s * treated + rng.normal(0, 120, n),
        120, 14000,
    ).round()
    gabapentin_before = rng.choice([0.0, 0.3, 0.6, 0.9, 1.2, 1.8], size=n, p=[0.15, 0.2, 0.25, 0.2, 0.1, 0.1])
    relief = np.clip((nrs_baseline - nrs_7d) / nrs_baseline, 0, 1)
    gabapentin_after = (gabapentin_before * (1 - 0.6 * relief)).round(2)
    risk = np.where(treated, spec.adverse_event_risk_treated, spec.adverse_event_risk_control)
    adverse = (rng.random(n) < risk).astype(int)
    start = np.datetime64("2024-05-02T08:00:00")
    times = start + np.sort(rng.integers(0, 60 * 24 * 3600, n)).astype("timedelta64[s]")

    frame = pd.DataFrame(
        {
            "procedure_id": [f"SIM{i + 1:04d}" for i in range(n)],
            "patient_id": [f"P{i + 1:04d}" for i in range(n)],
            "case_id": None,
            "plan_id": None,
            "procedure_utc": [f"{t}Z" for t in times.astype("datetime64[s]")],
            "group": np.where(treated, spec.treated, spec.control),
            "sex": np.where(sex_male, "M", "F"),
            "age_years": age,
            "disease_duration_weeks": duration,
            "bmi_kg_m2": bmi,
            "disease_type": [DISEASE_TYPES[d] for d in disease],
            "nrs_baseline": nrs_baseline,
            "nrs_1h": nrs_1h,
            "nrs_7d": nrs_7d,
            "operation_time_s": operation_time_s,
            "gabapentin_before_g_per_day": gabapentin_before,
            "gabapentin_after_g_per_day": gabapentin_after,
            "adverse_event": adverse,
        },
        columns=list(COLUMN_NAMES),
    )
    return validate_log(frame.astype(object))


def example_log_path() -> Path:
    """Path of the example log shipped with the package (``workbench/outcomes/data/example_log.csv``)."""
    return Path(str(resources.files("workbench.outcomes") / "data" / "example_log.csv"))


def write_example_log(path: str | os.PathLike | None = None) -> Path:
    """(Re)write the example log (default: the shipped file) from :data:`EXAMPLE_SPEC`; returns its path."""
    return save_log(simulate_cohort(EXAMPLE_SPEC), path or example_log_path())
