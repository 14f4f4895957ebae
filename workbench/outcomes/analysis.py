"""The whole outcome analysis of a procedure log, as tables: :func:`analyse_log`.

Steps: derived outcomes (NRS-WV at 1 h and 7 days, change of gabapentin dose); propensity score
and 1:1 caliper matching (:mod:`workbench.outcomes.matching`); balance before and after; group
comparisons on all procedures and on the matched cohort (:mod:`workbench.outcomes.compare`);
the average treatment effect on the treated from matched pairs; NRS-WV categories; adverse
events; and the re-analysis of the clinical study's published summaries
(:mod:`workbench.outcomes.reanalysis`). :mod:`workbench.outcomes.report` writes it out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from workbench.errors import OutcomesError
from workbench.outcomes.compare import compare_binary, compare_continuous
from workbench.outcomes.matching import (
    DEFAULT_CALIPER_SD,
    DEFAULT_COVARIATES,
    MatchResult,
    PropensityModel,
    balance_table,
    fit_propensity,
    match_nearest,
    matched_effect,
)
from workbench.outcomes.nrs import category_table, nrs_wv
from workbench.outcomes.reanalysis import reanalyse_study

__all__ = ["OUTCOMES", "OutcomesAnalysis", "add_derived_outcomes", "analyse_log"]

#: Outcomes compared: column -> unit. NRS-WV is a fraction (x100 for %).
OUTCOMES = {
    "nrs_1h": "NRS points",
    "nrs_7d": "NRS points",
    "nrs_wv_1h": "fraction of baseline NRS",
    "nrs_wv_7d": "fraction of baseline NRS",
    "operation_time_s": "s",
    "gabapentin_change_g_per_day": "g/day (after - before)",
}


def add_derived_outcomes(log: pd.DataFrame) -> pd.DataFrame:
    """Copy of ``log`` with ``nrs_wv_1h``, ``nrs_wv_7d`` (fractions) and ``gabapentin_change_g_per_day``."""
    out = log.copy()
    out["nrs_wv_1h"] = nrs_wv(out["nrs_baseline"], out["nrs_1h"])
    out["nrs_wv_7d"] = nrs_wv(out["nrs_baseline"], out["nrs_7d"])
    out["gabapentin_change_g_per_day"] = out["gabapentin_after_g_per_day"] - out["gabapentin_before_g_per_day"]
    return out


@dataclass
class OutcomesAnalysis:
    """Everything :func:`analyse_log` found. Tables are pandas DataFrames; see their functions.

    Attributes
    ----------
    log : pandas.DataFrame
        The log with derived outcomes.
    treated, control : str
        Group labels ("treated" is the group the propensity score is the probability of).
    propensity : PropensityModel or None
    match : MatchResult or None
        None when matching was impossible (see ``notes``).
    balance : pandas.DataFrame
    comparisons : pandas.DataFrame
        One row per (``cohort`` in ``all``/``matched``, outcome).
    treatment_effects : pandas.DataFrame
        Matched-pair effect (treated - control) per outcome.
    adverse_events : pandas.DataFrame
        One row per cohort.
    nrs_wv_categories : pandas.DataFrame
    study_reanalysis : pandas.DataFrame
    notes : list of str
        Plain-language findings and caveats, for the report.
    """

    log: pd.DataFrame
    treated: str
    control: str
    caliper_sd: float
    confidence: float
    propensity: PropensityModel | None
    match: MatchResult | None
    balance: pd.DataFrame
    comparisons: pd.DataFrame
    treatment_effects: pd.DataFrame
    adverse_events: pd.DataFrame
    nrs_wv_categories: pd.DataFrame
    study_reanalysis: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    @property
    def matched_log(self) -> pd.DataFrame | None:
        """Rows of the matched cohort (treated then control), or None."""
        if self.match is None or self.match.n_pairs == 0:
            return None
        return self.log.loc[self.match.matched_rows]

    def propensity_table(self) -> pd.DataFrame:
        """``procedure_id``, ``group``, ``propensity_score``, ``propensity_logit``, ``matched`` per row of the two groups."""
        if self.propensity is None:
            return pd.DataFrame(columns=["procedure_id", "group", "propensity_score", "propensity_logit", "matched"])
        rows = self.propensity.index
        matched = set(self.match.matched_rows) if self.match is not None else set()
        return pd.DataFrame(
            {
                "procedure_id": self.log.loc[rows, "procedure_id"].to_numpy(),
                "group": self.log.loc[rows, "group"].to_numpy(),
                "propensity_score": self.propensity.score,
                "propensity_logit": self.propensity.logit,
                "matched": [r in matched for r in rows],
            }
        )

    def pairs_table(self) -> pd.DataFrame:
        """Matched pairs by procedure id, with the logit distance."""
        if self.match is None:
            return pd.DataFrame(columns=["treated_procedure_id", "control_procedure_id", "distance_logit"])
        pairs = self.match.pairs
        return pd.DataFrame(
            {
                "treated_procedure_id": self.log.loc[pairs["treated_row"], "procedure_id"].to_numpy(),
                "control_procedure_id": self.log.loc[pairs["control_row"], "procedure_id"].to_numpy(),
                "distance_logit": pairs["distance_logit"].to_numpy(),
            }
        )


def _comparisons(log: pd.DataFrame, cohort: str, treated: str, control: str, confidence: float, seed: int, notes):
    rows = []
    for outcome, unit in OUTCOMES.items():
        x = log.loc[log["group"] == treated, outcome].dropna()
        y = log.loc[log["group"] == control, outcome].dropna()
        if len(x) < 2 or len(y) < 2:
            notes.append(f"{outcome} ({cohort}): fewer than 2 values in a group, not compared.")
            continue
        result = compare_continuous(x, y, outcome, ("treated", "control"), confidence, seed=seed)
        rows.append({"cohort": cohort, "unit": unit, "treated_group": treated, "control_group": control, **result})
    return rows


def _adverse(log: pd.DataFrame, cohort: str, treated: str, control: str, confidence: float):
    t = log.loc[log["group"] == treated, "adverse_event"].dropna().astype(int)
    c = log.loc[log["group"] == control, "adverse_event"].dropna().astype(int)
    if len(t) == 0 or len(c) == 0:
        return None
    result = compare_binary(int(t.sum()), len(t), int(c.sum()), len(c), "adverse_event", ("treated", "control"), confidence)
    return {"cohort": cohort, "treated_group": treated, "control_group": control, **result}


def analyse_log(
    log: pd.DataFrame,
    treated: str = "fusion",
    control: str = "us",
    *,
    caliper_sd: float = DEFAULT_CALIPER_SD,
    covariates=DEFAULT_COVARIATES,
    confidence: float = 0.95,
    alpha: float = 0.05,
    seed: int = 0,
) -> OutcomesAnalysis:
    """Run the whole analysis on a validated log (:func:`~workbench.outcomes.log.load_log`).

    Matching failures (too few rows, perfect separation) do not stop the analysis: the
    unmatched comparisons are still made and ``notes`` says why there is no matched cohort.

    Parameters
    ----------
    log : pandas.DataFrame
    treated, control : str
        Group labels compared (treated minus control in every difference).
    caliper_sd : float
        Caliper in SDs of the logit of the propensity score.
    covariates : sequence of str
        Log columns of the propensity model.
    confidence : float
        Level of every confidence interval.
    alpha : float
        Significance level used in the notes' wording.
    seed : int
        Seeds the bootstrap CIs.
    """
    if treated == control:
        raise OutcomesError("the treated and control groups must differ")
    log = add_derived_outcomes(log)
    for label in (treated, control):
        if not (log["group"] == label).any():
            groups = ", ".join(sorted(set(log["group"].dropna()))) or "none"
            raise OutcomesError(f"no procedure of group {label!r} in the log (groups: {groups})")
    notes: list[str] = []
    propensity = match = None
    try:
        propensity = fit_propensity(log, treated, control, covariates)
        match = match_nearest(propensity, caliper_sd)
    except OutcomesError as exc:
        notes.append(f"No matched cohort: {exc.problem}")
    balance = balance_table(propensity, match) if propensity is not None else pd.DataFrame()

    two = log[log["group"].isin([treated, control])]
    comparisons = _comparisons(two, "all", treated, control, confidence, seed, notes)
    adverse = [_adverse(two, "all", treated, control, confidence)]
    categories = [category_table(two, c).assign(cohort="all") for c in ("nrs_1h", "nrs_7d")]
    effects = []
    matched = None
    if match is not None and match.n_pairs >= 2:
        matched = log.loc[match.matched_rows]
        comparisons += _comparisons(matched, "matched", treated, control, confidence, seed, notes)
        adverse.append(_adverse(matched, "matched", treated, control, confidence))
        categories += [category_table(matched, c).assign(cohort="matched") for c in ("nrs_1h", "nrs_7d")]
        for outcome, unit in OUTCOMES.items():
            try:
                effects.append({"unit": unit, **matched_effect(log, match, outcome, confidence)})
            except OutcomesError as exc:
                notes.append(exc.problem)
    elif match is not None:
        notes.append(f"Only {match.n_pairs} pair(s) within the caliper ({match.scale}): no matched analysis.")

    analysis = OutcomesAnalysis(
        log=log, treated=treated, control=control, caliper_sd=caliper_sd, confidence=confidence,
        propensity=propensity, match=match, balance=balance,
        comparisons=pd.DataFrame(comparisons), treatment_effects=pd.DataFrame(effects),
        adverse_events=pd.DataFrame([a for a in adverse if a is not None]),
        nrs_wv_categories=pd.concat(categories, ignore_index=True),
        study_reanalysis=pd.DataFrame(reanalyse_study(alpha)), notes=notes,
    )
    analysis.notes = _findings(analysis, alpha) + notes
    return analysis


def _findings(a: OutcomesAnalysis, alpha: float) -> list[str]:
    lines = []
    n_t = int((a.log["group"] == a.treated).sum())
    n_c = int((a.log["group"] == a.control).sum())
    lines.append(f"{len(a.log)} procedures: {n_t} {a.treated}, {n_c} {a.control}.")
    if a.match is not None:
        m = a.match
        lines.append(
            f"Matching 1:1 without replacement on the {m.scale}: {m.n_pairs} pairs; "
            f"{m.n_treated - m.n_pairs} {a.treated} procedure(s) had no {a.control} match within the caliper."
        )
        if len(a.balance) and "smd_after" in a.balance:
            covs = a.balance[a.balance["covariate"] != "propensity_logit"]
            worst = covs.loc[covs["smd_after"].abs().idxmax()]
            lines.append(
                f"Largest |SMD| after matching: {abs(worst['smd_after']):.3f} ({worst['covariate']}); before: "
                f"{covs['smd_before'].abs().max():.3f}. "
                + ("All covariates are balanced (|SMD| < 0.1)." if bool(covs["balanced_after"].all())
                   else "Some covariates remain imbalanced (|SMD| >= 0.1): read the matched comparisons with care.")
            )
    for row in a.treatment_effects.to_dict("records"):
        sig = "significant" if row["p"] < alpha else "not significant"
        lines.append(
            f"Matched-pair effect on {row['outcome']} ({a.treated} - {a.control}): {row['effect']:.3g} {row['unit']}, "
            f"{100 * row['confidence']:.0f} % CI {row['ci_low']:.3g} to {row['ci_high']:.3g} (p = {row['p']:.3g}, {sig})."
        )
    for row in a.study_reanalysis.to_dict("records"):
        lines.append(f"Study re-analysis, {row['outcome']}: {row['verdict']}.")
    return lines
