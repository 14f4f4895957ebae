"""Propensity score, 1:1 nearest-neighbour matching with a caliper, and covariate balance.

The propensity score is the probability of being in the treated group given the covariates,
fitted by logistic regression (``statsmodels.api.Logit``). Matching is on the *logit* of the
score: 1:1, nearest neighbour, without replacement, within a caliper of ``caliper_sd`` times
the standard deviation of the logit over all rows of the two groups (default 0.05). Pairs are
taken closest first over all treated-control pairs (greedy on distance, deterministic).
Balance is the standardised mean difference (SMD) of each covariate before and after matching.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from workbench.errors import OutcomesError
from workbench.outcomes.log import DISEASE_TYPES

__all__ = [
    "DEFAULT_CALIPER_SD",
    "DEFAULT_COVARIATES",
    "MatchResult",
    "PropensityModel",
    "balance_table",
    "covariate_matrix",
    "fit_propensity",
    "love_plot",
    "match_nearest",
    "matched_effect",
    "smd",
]

#: Caliper, in standard deviations of the logit of the propensity score.
DEFAULT_CALIPER_SD = 0.05
#: Log columns the propensity model adjusts for (``sex`` as a male indicator, ``disease_type`` one-hot).
DEFAULT_COVARIATES = ("sex", "age_years", "disease_duration_weeks", "nrs_baseline", "bmi_kg_m2", "disease_type")
#: SMD below which a covariate is usually called balanced.
BALANCE_THRESHOLD = 0.1


def covariate_matrix(log: pd.DataFrame, covariates=DEFAULT_COVARIATES) -> pd.DataFrame:
    """Numeric covariates, one column each: ``sex`` -> ``sex_male`` (0/1), ``disease_type`` -> one
    0/1 column per type (``disease_type=<type>``), numbers as they are (their log units).

    Returns
    -------
    pandas.DataFrame
        Same index as ``log``, float columns.
    """
    out = {}
    for name in covariates:
        if name not in log.columns:
            raise OutcomesError(f"covariate {name!r} is not a column of the log")
        column = log[name]
        if column.isna().any():
            row = int(np.flatnonzero(column.isna().to_numpy())[0]) + 1
            raise OutcomesError(f"row {row}, column {name!r}: a covariate is empty")
        if name == "sex":
            out["sex_male"] = (column == "M").astype(float)
        elif name == "disease_type":
            for disease in DISEASE_TYPES:
                out[f"disease_type={disease}"] = (column == disease).astype(float)
        else:
            out[name] = column.astype(float)
    return pd.DataFrame(out, index=log.index)


@dataclass
class PropensityModel:
    """A fitted propensity model.

    Attributes
    ----------
    treated : numpy.ndarray of bool, (n,)
        Row is in the treated group.
    score : numpy.ndarray, (n,)
        Propensity score, probability (0-1).
    logit : numpy.ndarray, (n,)
        ``log(score / (1 - score))``, the matching scale.
    coefficients : pandas.DataFrame
        Per model term: ``coef`` and ``std_err`` on the covariates standardised to mean 0, SD 1
        (so that terms compare), ``p``.
    terms : list of str
        Terms of the model (the reference disease type and constant columns are dropped).
    index : pandas.Index
        Index of the rows (those of the two groups) in the log.
    """

    treated: np.ndarray
    score: np.ndarray
    logit: np.ndarray
    coefficients: pd.DataFrame
    terms: list[str]
    index: pd.Index
    covariates: pd.DataFrame = field(repr=False)


def _two_groups(log: pd.DataFrame, treated: str, control: str) -> pd.DataFrame:
    groups = set(log["group"].dropna())
    for label in (treated, control):
        if label not in groups:
            raise OutcomesError(f"no row of group {label!r}; groups in the log: {', '.join(sorted(groups)) or 'none'}")
    return log[log["group"].isin([treated, control])]


def fit_propensity(
    log: pd.DataFrame, treated: str = "fusion", control: str = "us", covariates=DEFAULT_COVARIATES
) -> PropensityModel:
    """Fit ``P(group == treated | covariates)`` by logistic regression (statsmodels Logit).

    Rows of other groups are ignored. Covariates are standardised before the fit (the scores
    do not change); terms without variation and the first disease type present (the reference)
    are dropped.

    Raises
    ------
    OutcomesError
        A group is missing, too few rows, or the fit fails (perfect separation, no convergence).
    """
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import ConvergenceWarning, PerfectSeparationError, PerfectSeparationWarning

    rows = _two_groups(log, treated, control)
    x = covariate_matrix(rows, covariates)
    disease_cols = [c for c in x.columns if c.startswith("disease_type=")]
    present = [c for c in disease_cols if x[c].sum() > 0]
    design = x.drop(columns=[c for c in disease_cols if c not in present[1:]])
    design = design.loc[:, design.std(ddof=0) > 0]
    y = (rows["group"] == treated).to_numpy(dtype=float)
    if len(rows) < design.shape[1] + 3:
        raise OutcomesError(
            f"{len(rows)} procedures are too few for a propensity model with {design.shape[1]} terms"
        )
    standardised = (design - design.mean()) / design.std(ddof=0)
    exog = sm.add_constant(standardised, has_constant="add")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PerfectSeparationWarning)
        warnings.simplefilter("error", ConvergenceWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            fit = sm.Logit(y, exog).fit(disp=0, maxiter=200)
        except (PerfectSeparationError, PerfectSeparationWarning):
            raise OutcomesError(
                "the propensity model cannot be fitted: the covariates separate the groups perfectly "
                "(no overlap, so no matching is possible)"
            ) from None
        except (ConvergenceWarning, np.linalg.LinAlgError) as exc:
            raise OutcomesError(f"the propensity model does not converge ({exc})") from None
    linear = np.asarray(exog.to_numpy() @ fit.params.to_numpy(), dtype=float)
    score = 1.0 / (1.0 + np.exp(-linear))
    coefficients = pd.DataFrame({"coef": fit.params, "std_err": fit.bse, "p": fit.pvalues})
    return PropensityModel(
        treated=y.astype(bool),
        score=score,
        logit=linear,
        coefficients=coefficients,
        terms=list(design.columns),
        index=rows.index,
        covariates=x,
    )


@dataclass
class MatchResult:
    """Matched pairs and how they were found.

    Attributes
    ----------
    pairs : pandas.DataFrame
        ``treated_row``, ``control_row`` (index labels in the log), ``distance_logit``
        (absolute difference of the logits), sorted by ``treated_row``.
    caliper_sd : float
        Caliper as asked, in SDs of the logit of the propensity score.
    sd_logit : float
        SD (ddof 1) of the logit over all rows of the two groups.
    caliper_logit : float
        ``caliper_sd * sd_logit``, logit units: the largest distance accepted.
    n_treated, n_control : int
        Rows of each group before matching.
    scale : str
        The matching scale in words.
    """

    pairs: pd.DataFrame
    caliper_sd: float
    sd_logit: float
    caliper_logit: float
    n_treated: int
    n_control: int
    scale: str

    @property
    def n_pairs(self) -> int:
        return len(self.pairs)

    @property
    def matched_rows(self) -> pd.Index:
        """Index labels of every matched row (treated and control)."""
        return pd.Index(list(self.pairs["treated_row"]) + list(self.pairs["control_row"]))


def match_nearest(model: PropensityModel, caliper_sd: float = DEFAULT_CALIPER_SD) -> MatchResult:
    """1:1 nearest-neighbour matching without replacement on the logit of the propensity score.

    Every treated-control pair within the caliper is a candidate; candidates are accepted
    closest first (ties by row order), each row used at most once. Treated rows with no
    control within the caliper stay unmatched.

    Parameters
    ----------
    model : PropensityModel
    caliper_sd : float
        Caliper in SDs of the logit of the score (> 0; ``inf`` for no caliper).
    """
    if not (caliper_sd > 0):
        raise OutcomesError(f"the caliper must be a positive number of SDs of the logit, got {caliper_sd!r}")
    logit_t = model.logit[model.treated]
    logit_c = model.logit[~model.treated]
    rows_t = model.index[model.treated]
    rows_c = model.index[~model.treated]
    sd_logit = float(np.std(model.logit, ddof=1))
    caliper_logit = caliper_sd * sd_logit
    distance = np.abs(logit_t[:, None] - logit_c[None, :])
    ti, ci = np.nonzero(distance <= caliper_logit)
    order = np.lexsort((ci, ti, distance[ti, ci]))
    used_t = np.zeros(len(logit_t), bool)
    used_c = np.zeros(len(logit_c), bool)
    pairs = []
    for k in order:
        t, c = ti[k], ci[k]
        if used_t[t] or used_c[c]:
            continue
        used_t[t] = used_c[c] = True
        pairs.append((rows_t[t], rows_c[c], float(distance[t, c])))
    frame = pd.DataFrame(pairs, columns=["treated_row", "control_row", "distance_logit"])
    frame = frame.sort_values("treated_row", kind="stable").reset_index(drop=True)
    return MatchResult(
        pairs=frame,
        caliper_sd=float(caliper_sd),
        sd_logit=sd_logit,
        caliper_logit=float(caliper_logit),
        n_treated=int(model.treated.sum()),
        n_control=int((~model.treated).sum()),
        scale=(
            f"logit of the propensity score; caliper {caliper_sd:g} SD of the logit "
            f"(SD {sd_logit:.4g}) = {caliper_logit:.4g} logit units"
        ),
    )


def smd(treated_values, control_values, binary: bool | None = None) -> float:
    """Standardised mean difference, treated minus control.

    ``(mean_t - mean_c) / sqrt((var_t + var_c) / 2)`` with sample variances (ddof 1); for a 0/1
    covariate ``(p_t - p_c) / sqrt((p_t (1 - p_t) + p_c (1 - p_c)) / 2)``. ``binary`` defaults
    to "all values are 0 or 1". 0 when both groups are constant and equal; ±inf when constant
    and different.
    """
    t = np.asarray(treated_values, dtype=float)
    c = np.asarray(control_values, dtype=float)
    if binary is None:
        binary = bool(np.isin(np.concatenate([t, c]), (0.0, 1.0)).all())
    mt, mc = t.mean(), c.mean()
    if binary:
        pooled = (mt * (1 - mt) + mc * (1 - mc)) / 2.0
    else:
        pooled = (t.var(ddof=1) + c.var(ddof=1)) / 2.0
    diff = mt - mc
    if pooled <= 0:
        return 0.0 if diff == 0 else float(np.copysign(np.inf, diff))
    return float(diff / np.sqrt(pooled))


def balance_table(model: PropensityModel, match: MatchResult | None = None) -> pd.DataFrame:
    """Means and SMD of every covariate column (all disease types) before and after matching.

    Returns
    -------
    pandas.DataFrame
        ``covariate``, ``mean_treated_before``, ``mean_control_before``, ``smd_before``, and with
        ``match`` the same ``_after`` columns (matched rows only) and ``balanced_after``
        (``|smd_after| < 0.1``). The propensity score's logit is the last row.
    """
    x = model.covariates.copy()
    x["propensity_logit"] = model.logit
    treated = pd.Series(model.treated, index=model.index)
    rows = []
    for name in x.columns:
        values = x[name]
        binary = name == "sex_male" or name.startswith("disease_type=")
        row = {
            "covariate": name,
            "mean_treated_before": float(values[treated].mean()),
            "mean_control_before": float(values[~treated].mean()),
            "smd_before": smd(values[treated], values[~treated], binary),
        }
        if match is not None and match.n_pairs:
            vt = values.loc[match.pairs["treated_row"]]
            vc = values.loc[match.pairs["control_row"]]
            row.update(
                mean_treated_after=float(vt.mean()),
                mean_control_after=float(vc.mean()),
                smd_after=smd(vt, vc, binary) if match.n_pairs > 1 else float("nan"),
            )
            row["balanced_after"] = bool(abs(row["smd_after"]) < BALANCE_THRESHOLD)
        rows.append(row)
    return pd.DataFrame(rows)


def matched_effect(log: pd.DataFrame, match: MatchResult, outcome: str, confidence: float = 0.95) -> dict:
    """Average treatment effect on the treated from matched pairs: mean of paired differences.

    Paired t-test (``scipy.stats.ttest_rel``) on treated minus control over pairs where both
    have ``outcome``; its confidence interval is that of the mean difference.

    Returns
    -------
    dict
        ``outcome``, ``n_pairs``, ``effect`` (outcome units), ``ci_low``, ``ci_high``, ``p``, ``test``.
    """
    from scipy import stats

    t = log.loc[match.pairs["treated_row"], outcome].to_numpy(dtype=float)
    c = log.loc[match.pairs["control_row"], outcome].to_numpy(dtype=float)
    keep = np.isfinite(t) & np.isfinite(c)
    t, c = t[keep], c[keep]
    if len(t) < 2:
        raise OutcomesError(f"fewer than 2 matched pairs with {outcome!r}: no treatment effect")
    result = stats.ttest_rel(t, c)
    ci = result.confidence_interval(confidence)
    return {
        "outcome": outcome,
        "n_pairs": int(len(t)),
        "effect": float(np.mean(t - c)),
        "ci_low": float(ci.low),
        "ci_high": float(ci.high),
        "confidence": confidence,
        "p": float(result.pvalue),
        "test": "paired t-test over matched pairs (treated - control)",
    }


def love_plot(balance: pd.DataFrame, title: str = "Covariate balance"):
    """Love plot: |SMD| of each covariate before and after matching, with the 0.1 line.

    Returns a :class:`matplotlib.figure.Figure` (Agg canvas; no pyplot, no display needed).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(balance["covariate"])
    y = np.arange(len(names))
    fig = Figure(figsize=(6.0, 0.35 * len(names) + 1.4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(np.abs(balance["smd_before"]), y, marker="o", facecolors="none", edgecolors="tab:red", label="before")
    if "smd_after" in balance:
        ax.scatter(np.abs(balance["smd_after"]), y, marker="o", color="tab:blue", label="after matching")
    ax.axvline(BALANCE_THRESHOLD, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("|standardised mean difference|")
    ax.set_title(title)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    return fig
