"""Two-group comparisons with effect sizes and confidence intervals, and a power helper.

Continuous outcomes: Student's and Welch's t-tests (``scipy.stats.ttest_ind``, with the
confidence interval of the mean difference), Mann-Whitney U (``scipy.stats.mannwhitneyu``),
Cohen's d and Hedges' g (CI by inverting the noncentral t distribution) and the rank-biserial
correlation (CI by bootstrap, ``scipy.stats.bootstrap``). Binary outcomes (adverse events):
Fisher's exact test, the conditional maximum-likelihood odds ratio with its exact CI
(``scipy.stats.contingency.odds_ratio``) and the risk difference with Newcombe's CI
(``statsmodels.stats.proportion.confint_proportions_2indep``). Power and sample size:
``statsmodels.stats.power``.
"""

from __future__ import annotations

import math

import numpy as np

from workbench.errors import OutcomesError

__all__ = [
    "compare_binary",
    "compare_continuous",
    "cohens_d",
    "d_confidence_interval",
    "hedges_correction",
    "power_two_proportions",
    "power_two_sample_t",
    "rank_biserial",
    "sample_size_two_proportions",
    "sample_size_two_sample_t",
]


def hedges_correction(n1: int, n2: int) -> float:
    """Small-sample factor J with ``g = J d``: ``exp(lgamma(df/2) - log(sqrt(df/2)) - lgamma((df-1)/2))``, df = n1 + n2 - 2."""
    df = n1 + n2 - 2
    return math.exp(math.lgamma(df / 2) - math.log(math.sqrt(df / 2)) - math.lgamma((df - 1) / 2))


def cohens_d(mean1: float, sd1: float, n1: int, mean2: float, sd2: float, n2: int) -> float:
    """Cohen's d, ``(mean1 - mean2) / pooled SD`` with the pooled SD of Student's t-test."""
    pooled = math.sqrt(((n1 - 1) * sd1**2 + (n2 - 1) * sd2**2) / (n1 + n2 - 2))
    return (mean1 - mean2) / pooled


def d_confidence_interval(d: float, n1: int, n2: int, confidence: float = 0.95) -> tuple[float, float]:
    """CI of Cohen's d by inverting the noncentral t distribution of Student's t statistic.

    ``t = d sqrt(n1 n2 / (n1 + n2))`` has a noncentral t distribution with df ``n1 + n2 - 2``;
    the CI's bounds are the noncentrality parameters putting ``t`` at the upper and lower
    ``(1 - confidence) / 2`` tails, scaled back to d.
    """
    from scipy import optimize, stats

    df = n1 + n2 - 2
    scale = math.sqrt(n1 * n2 / (n1 + n2))
    t = d * scale
    alpha = 1 - confidence

    def bound(target: float) -> float:
        f = lambda ncp: stats.nct.cdf(t, df, ncp) - target  # noqa: E731 - decreasing in ncp
        step = 1.0
        while not (f(t - step) > 0 > f(t + step)) and step < 1e3:  # widen until the root is bracketed
            step *= 2.0
        return optimize.brentq(f, t - step, t + step, xtol=1e-10)

    return bound(1 - alpha / 2) / scale, bound(alpha / 2) / scale


def rank_biserial(x, y) -> float:
    """Rank-biserial correlation ``P(X > Y) - P(X < Y)`` from Mann-Whitney U (ties count half)."""
    from scipy import stats

    u = stats.mannwhitneyu(x, y, alternative="two-sided").statistic
    return float(2.0 * u / (len(x) * len(y)) - 1.0)


def _clean(values, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    if len(arr) < 2:
        raise OutcomesError(f"{what}: fewer than 2 values")
    return arr


def compare_continuous(
    x, y, outcome: str = "outcome", labels: tuple[str, str] = ("treated", "control"),
    confidence: float = 0.95, bootstrap_resamples: int = 2000, seed: int = 0,
) -> dict:
    """Compare a continuous outcome between two independent groups (x minus y).

    Parameters
    ----------
    x, y : array_like
        Values of the two groups, in the outcome's unit; NaN are dropped.
    outcome : str
        Name used in the result and in errors.
    labels : (str, str)
        Names of the groups of ``x`` and ``y``.
    confidence : float
    bootstrap_resamples, seed : int
        Bootstrap of the rank-biserial CI (reproducible with ``seed``).

    Returns
    -------
    dict
        ``n_*``, ``mean_*``, ``sd_*``, ``median_*``; ``mean_difference`` with Student CI;
        ``t_student``, ``df_student``, ``p_student``; ``t_welch``, ``df_welch``, ``p_welch`` and
        Welch CI; ``u``, ``p_mann_whitney``; ``cohens_d``, ``hedges_g`` with CIs;
        ``rank_biserial`` with bootstrap CI.
    """
    from scipy import stats

    x = _clean(x, f"{outcome} ({labels[0]})")
    y = _clean(y, f"{outcome} ({labels[1]})")
    n1, n2 = len(x), len(y)
    student = stats.ttest_ind(x, y, equal_var=True)
    welch = stats.ttest_ind(x, y, equal_var=False)
    ci_s = student.confidence_interval(confidence)
    ci_w = welch.confidence_interval(confidence)
    mw = stats.mannwhitneyu(x, y, alternative="two-sided")
    sd1, sd2 = float(np.std(x, ddof=1)), float(np.std(y, ddof=1))
    a, b = labels
    out = {
        "outcome": outcome,
        f"n_{a}": n1, f"n_{b}": n2,
        f"mean_{a}": float(np.mean(x)), f"mean_{b}": float(np.mean(y)),
        f"sd_{a}": sd1, f"sd_{b}": sd2,
        f"median_{a}": float(np.median(x)), f"median_{b}": float(np.median(y)),
        "mean_difference": float(np.mean(x) - np.mean(y)),
        "confidence": confidence,
        "mean_difference_ci_low_student": float(ci_s.low), "mean_difference_ci_high_student": float(ci_s.high),
        "t_student": float(student.statistic), "df_student": float(student.df), "p_student": float(student.pvalue),
        "t_welch": float(welch.statistic), "df_welch": float(welch.df), "p_welch": float(welch.pvalue),
        "mean_difference_ci_low_welch": float(ci_w.low), "mean_difference_ci_high_welch": float(ci_w.high),
        "u": float(mw.statistic), "p_mann_whitney": float(mw.pvalue),
    }
    if sd1 == 0 and sd2 == 0:
        d = lo = hi = float("nan")
    else:
        d = cohens_d(np.mean(x), sd1, n1, np.mean(y), sd2, n2)
        lo, hi = d_confidence_interval(d, n1, n2, confidence)
    j = hedges_correction(n1, n2)
    out.update(cohens_d=d, cohens_d_ci_low=lo, cohens_d_ci_high=hi, hedges_g=j * d, hedges_g_ci_low=j * lo, hedges_g_ci_high=j * hi)
    r = rank_biserial(x, y)

    def statistic(u, v, axis=-1):
        u_stat = stats.mannwhitneyu(u, v, alternative="two-sided", axis=axis).statistic
        return 2.0 * u_stat / (u.shape[axis] * v.shape[axis]) - 1.0

    boot = stats.bootstrap(
        (x, y), statistic, n_resamples=bootstrap_resamples, confidence_level=confidence, method="percentile",
        rng=np.random.default_rng(seed), vectorized=True,
    )
    out.update(
        rank_biserial=r,
        rank_biserial_ci_low=float(boot.confidence_interval.low),
        rank_biserial_ci_high=float(boot.confidence_interval.high),
    )
    return out


def compare_binary(
    events1: int, n1: int, events2: int, n2: int, outcome: str = "adverse_event",
    labels: tuple[str, str] = ("treated", "control"), confidence: float = 0.95,
) -> dict:
    """Compare the proportion of rows with an event between two groups (group 1 vs group 2).

    Returns
    -------
    dict
        Counts and proportions; ``p_fisher`` (two-sided Fisher's exact test); ``odds_ratio``
        (conditional MLE, may be 0 or inf) with exact CI; ``sample_odds_ratio``;
        ``risk_difference`` (proportion 1 minus 2) with Newcombe's score CI.
    """
    from scipy import stats
    from scipy.stats.contingency import odds_ratio
    from statsmodels.stats.proportion import confint_proportions_2indep

    for events, n in ((events1, n1), (events2, n2)):
        if not (0 <= events <= n and n > 0):
            raise OutcomesError(f"{outcome}: {events} events of {n} is not a valid count")
    table = [[events1, n1 - events1], [events2, n2 - events2]]
    fisher = stats.fisher_exact(table, alternative="two-sided")
    conditional = odds_ratio(table, kind="conditional")
    ci_or = conditional.confidence_interval(confidence)
    rd_low, rd_high = confint_proportions_2indep(
        events1, n1, events2, n2, method="newcomb", compare="diff", alpha=1 - confidence
    )
    a, b = labels
    return {
        "outcome": outcome,
        f"events_{a}": int(events1), f"n_{a}": int(n1), f"events_{b}": int(events2), f"n_{b}": int(n2),
        f"proportion_{a}": events1 / n1, f"proportion_{b}": events2 / n2,
        "p_fisher": float(fisher.pvalue),
        "sample_odds_ratio": float(fisher.statistic),
        "odds_ratio": float(conditional.statistic),
        "odds_ratio_ci_low": float(ci_or.low), "odds_ratio_ci_high": float(ci_or.high),
        "risk_difference": events1 / n1 - events2 / n2,
        "risk_difference_ci_low": float(rd_low), "risk_difference_ci_high": float(rd_high),
        "confidence": confidence,
    }


def power_two_sample_t(effect_size: float, n_per_group: float, alpha: float = 0.05, ratio: float = 1.0) -> float:
    """Power of a two-sided two-sample t-test for Cohen's d ``effect_size`` (``TTestIndPower``)."""
    from statsmodels.stats.power import TTestIndPower

    return float(TTestIndPower().power(effect_size=effect_size, nobs1=n_per_group, alpha=alpha, ratio=ratio))


def sample_size_two_sample_t(effect_size: float, power: float = 0.8, alpha: float = 0.05, ratio: float = 1.0) -> int:
    """Smallest n of group 1 (group 2: ``ratio`` times it) giving ``power`` for Cohen's d, rounded up."""
    from statsmodels.stats.power import TTestIndPower

    if effect_size == 0:
        raise OutcomesError("an effect size of 0 cannot be detected at any sample size")
    n = TTestIndPower().solve_power(effect_size=abs(effect_size), alpha=alpha, power=power, ratio=ratio)
    return int(math.ceil(float(np.asarray(n).item()) - 1e-9))


def power_two_proportions(p1: float, p2: float, n_per_group: float, alpha: float = 0.05, ratio: float = 1.0) -> float:
    """Power of a two-sided two-proportion z-test (Cohen's h, ``NormalIndPower``)."""
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    h = proportion_effectsize(p1, p2)
    return float(NormalIndPower().power(effect_size=h, nobs1=n_per_group, alpha=alpha, ratio=ratio))


def sample_size_two_proportions(p1: float, p2: float, power: float = 0.8, alpha: float = 0.05, ratio: float = 1.0) -> int:
    """Smallest n of group 1 for a two-proportion z-test to reach ``power`` (Cohen's h), rounded up."""
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    if p1 == p2:
        raise OutcomesError("equal proportions cannot be told apart at any sample size")
    h = abs(proportion_effectsize(p1, p2))
    n = NormalIndPower().solve_power(effect_size=h, alpha=alpha, power=power, ratio=ratio)
    return int(math.ceil(float(np.asarray(n).item()) - 1e-9))
