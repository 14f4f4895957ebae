"""Outcome statistics: NRS-WV, propensity matching on a cohort with a known effect, tests and effect
sizes against scipy/statsmodels, and the clinical study's re-analysis checked against scipy directly."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from workbench.errors import OutcomesError
from workbench.outcomes.compare import (
    compare_binary,
    compare_continuous,
    power_two_proportions,
    power_two_sample_t,
    sample_size_two_proportions,
    sample_size_two_sample_t,
)
from workbench.outcomes.example import CohortSpec, simulate_cohort
from workbench.outcomes.matching import balance_table, fit_propensity, match_nearest, matched_effect, smd
from workbench.outcomes.nrs import nrs_wv, nrs_wv_category
from workbench.outcomes.reanalysis import parse_reported_p, reanalyse_study, reanalyse_summary

# -- NRS-WV ------------------------------------------------------------------------------------


def test_nrs_wv_and_category_bounds():
    wv = nrs_wv([8, 8, 4, 6, 10, 0, 5], [2, 0, 3, 3, 7.5, 0, 6])
    np.testing.assert_allclose(wv[:5], [0.75, 1.0, 0.25, 0.5, 0.25], atol=1e-15)
    assert math.isnan(wv[5]) and wv[6] == pytest.approx(-0.2)
    cats = list(nrs_wv_category([0.75, 0.7499, 0.5, 0.4999, 0.25, 0.2499, -0.2, 1.0, np.nan]))
    assert cats[:8] == ["cured", "significant improvement", "significant improvement", "improved", "improved",
                        "no effect", "no effect", "cured"]
    assert isinstance(cats[8], float) and math.isnan(cats[8])


# -- matching on a simulated cohort with a known effect ------------------------------------------

SPEC = CohortSpec(n=600, seed=1, integer_nrs=False, treated_fraction=0.3)


@pytest.fixture(scope="module")
def matched():
    log = simulate_cohort(SPEC)
    model = fit_propensity(log)
    return log, model, match_nearest(model, caliper_sd=0.05)


def test_matching_recovers_the_known_effect_within_its_ci(matched):
    log, _, match = matched
    for outcome, truth in (("nrs_7d", SPEC.effect_nrs_7d), ("operation_time_s", SPEC.effect_operation_time_s)):
        effect = matched_effect(log, match, outcome)
        assert effect["ci_low"] <= truth <= effect["ci_high"], (outcome, effect)
        assert effect["ci_high"] - effect["ci_low"] < 0.6 * abs(truth)
    # the confounded naive difference misses the truth by far more than the matched CI's half-width
    naive = log.loc[log.group == "fusion", "nrs_7d"].mean() - log.loc[log.group == "us", "nrs_7d"].mean()
    effect = matched_effect(log, match, "nrs_7d")
    assert abs(naive - SPEC.effect_nrs_7d) > 3 * (effect["ci_high"] - effect["ci_low"]) / 2


def test_matching_balances_covariates(matched):
    _, model, match = matched
    balance = balance_table(model, match)
    covariates = balance[balance["covariate"] != "propensity_logit"]
    assert covariates["smd_before"].abs().max() > 0.5  # the cohort is confounded
    assert covariates["smd_after"].abs().max() < 0.1
    assert bool(covariates["balanced_after"].all())


def test_matching_is_one_to_one_within_the_caliper(matched):
    _, model, match = matched
    pairs = match.pairs
    assert pairs["treated_row"].is_unique and pairs["control_row"].is_unique
    assert match.caliper_logit == pytest.approx(0.05 * np.std(model.logit, ddof=1), rel=1e-12)
    assert (pairs["distance_logit"] <= match.caliper_logit).all()
    logit = dict(zip(model.index, model.logit))
    np.testing.assert_allclose(
        pairs["distance_logit"], [abs(logit[t] - logit[c]) for t, c in zip(pairs.treated_row, pairs.control_row)]
    )
    assert "0.05 SD of the logit" in match.scale
    assert 0 < match.n_pairs <= match.n_treated
    wider = match_nearest(model, caliper_sd=0.5)
    assert wider.n_pairs >= match.n_pairs and wider.caliper_logit == pytest.approx(10 * match.caliper_logit)


def test_propensity_scores_are_those_of_statsmodels_logit(matched):
    import statsmodels.api as sm

    log, model, _ = matched
    x = model.covariates.drop(columns=["disease_type=lumbar_disc_herniation"])
    fit = sm.Logit((log["group"] == "fusion").astype(float), sm.add_constant(x)).fit(disp=0)
    np.testing.assert_allclose(model.score, fit.predict(), atol=1e-8)


def test_nearest_neighbour_on_a_hand_made_example():
    from workbench.outcomes.matching import MatchResult, PropensityModel  # noqa: F401
    import pandas as pd

    logit = np.array([0.0, 1.0, 0.05, 0.9, 3.0, 0.98])
    treated = np.array([True, True, False, False, False, False])
    model = PropensityModel(treated, 1 / (1 + np.exp(-logit)), logit, pd.DataFrame(), [], pd.RangeIndex(6), pd.DataFrame())
    match = match_nearest(model, caliper_sd=0.1 / np.std(logit, ddof=1))  # caliper 0.1 logit units
    assert list(zip(match.pairs.treated_row, match.pairs.control_row)) == [(0, 2), (1, 5)]
    with pytest.raises(OutcomesError, match="positive number"):
        match_nearest(model, caliper_sd=0)


def test_smd_formulas():
    t, c = np.array([1.0, 2, 3, 4]), np.array([2.0, 3, 5, 6])
    assert smd(t, c) == pytest.approx((2.5 - 4) / math.sqrt((np.var(t, ddof=1) + np.var(c, ddof=1)) / 2))
    assert smd([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx((0.5 - 0.25) / math.sqrt((0.25 + 0.1875) / 2))
    assert smd([1, 1], [1, 1]) == 0.0 and smd([1, 1], [0, 0]) == math.inf


def test_separated_groups_give_a_clear_error():
    log = simulate_cohort(CohortSpec(n=60, seed=3))
    log.loc[:, "group"] = np.where(log["age_years"] > log["age_years"].median(), "fusion", "us")
    with pytest.raises(OutcomesError, match="separate the groups perfectly"):
        fit_propensity(log)
    with pytest.raises(OutcomesError, match="no row of group 'xray'"):
        fit_propensity(log, treated="xray")


# -- comparisons -------------------------------------------------------------------------------


def test_continuous_comparison_matches_scipy():
    rng = np.random.default_rng(5)
    x, y = rng.normal(3.0, 1.0, 25), rng.normal(2.0, 1.5, 30)
    r = compare_continuous(x, y, "nrs_7d", ("a", "b"))
    s, w = stats.ttest_ind(x, y), stats.ttest_ind(x, y, equal_var=False)
    assert r["p_student"] == pytest.approx(s.pvalue, rel=1e-12) and r["p_welch"] == pytest.approx(w.pvalue, rel=1e-12)
    assert r["mean_difference_ci_low_welch"] == pytest.approx(w.confidence_interval().low, rel=1e-12)
    assert r["p_mann_whitney"] == pytest.approx(stats.mannwhitneyu(x, y).pvalue, rel=1e-12)
    pooled = math.sqrt(((24) * np.var(x, ddof=1) + 29 * np.var(y, ddof=1)) / 53)
    assert r["cohens_d"] == pytest.approx((x.mean() - y.mean()) / pooled, rel=1e-12)
    assert r["hedges_g"] == pytest.approx(r["cohens_d"] * (1 - 3 / (4 * 53 - 1)), rel=1e-3)
    # the noncentral-t CI puts the observed t at the 2.5 % and 97.5 % points
    scale = math.sqrt(25 * 30 / 55)
    t_obs = r["cohens_d"] * scale
    assert stats.nct.cdf(t_obs, 53, r["cohens_d_ci_low"] * scale) == pytest.approx(0.975, abs=1e-6)
    assert stats.nct.cdf(t_obs, 53, r["cohens_d_ci_high"] * scale) == pytest.approx(0.025, abs=1e-6)
    u = stats.mannwhitneyu(x, y).statistic
    assert r["rank_biserial"] == pytest.approx(2 * u / (25 * 30) - 1, rel=1e-12)
    assert r["rank_biserial_ci_low"] < r["rank_biserial"] < r["rank_biserial_ci_high"]


def test_binary_comparison_matches_scipy_and_statsmodels():
    from statsmodels.stats.proportion import confint_proportions_2indep

    r = compare_binary(4, 10, 0, 10, labels=("us", "fusion"))
    assert r["p_fisher"] == pytest.approx(stats.fisher_exact([[4, 6], [0, 10]]).pvalue, rel=1e-12)
    assert r["p_fisher"] == pytest.approx(0.0867, abs=5e-5)
    assert r["odds_ratio"] == math.inf and r["odds_ratio_ci_low"] == pytest.approx(
        stats.contingency.odds_ratio([[4, 6], [0, 10]]).confidence_interval().low, rel=1e-12)
    low, high = confint_proportions_2indep(4, 10, 0, 10, method="newcomb", compare="diff")
    assert (r["risk_difference"], r["risk_difference_ci_low"], r["risk_difference_ci_high"]) == pytest.approx((0.4, low, high))
    with pytest.raises(OutcomesError, match="not a valid count"):
        compare_binary(11, 10, 0, 10)


def test_power_and_sample_size():
    from statsmodels.stats.power import TTestIndPower

    assert sample_size_two_sample_t(0.5) == 64  # the textbook figure for d = 0.5, 80 %, two-sided 0.05
    assert power_two_sample_t(0.5, 64) == pytest.approx(TTestIndPower().power(0.5, 64, 0.05), rel=1e-12)
    assert power_two_sample_t(0.5, 64) >= 0.8 > power_two_sample_t(0.5, 63)
    # the study's 1 h NRS (d about 0.32) with n = 10 per group had little power
    assert power_two_sample_t(0.3154, 10) == pytest.approx(0.105, abs=0.01)
    n = sample_size_two_proportions(0.4, 0.0)
    assert power_two_proportions(0.4, 0.0, n) >= 0.8 > power_two_proportions(0.4, 0.0, n - 1)
    with pytest.raises(OutcomesError):
        sample_size_two_sample_t(0.0)


# -- re-analysis of the study's published summaries ---------------------------------------------


def test_nrs_1h_does_not_give_the_reported_p():
    r = reanalyse_summary("2.5", "1.0", 10, "2.2", "0.9", 10, "<0.05")
    direct = stats.ttest_ind_from_stats(2.5, 1.0, 10, 2.2, 0.9, 10)
    assert r["t"] == pytest.approx(direct.statistic, rel=1e-12) and r["p"] == pytest.approx(direct.pvalue, rel=1e-12)
    assert r["p"] == pytest.approx(0.49, abs=0.005)
    welch = stats.ttest_ind_from_stats(2.5, 1.0, 10, 2.2, 0.9, 10, equal_var=False)
    assert r["p_welch"] == pytest.approx(welch.pvalue, rel=1e-12)
    # even the most favourable rounding of the printed numbers leaves p far above 0.05
    extreme = stats.ttest_ind_from_stats(2.55, 0.95, 10, 2.15, 0.85, 10)
    assert r["p_min"] == pytest.approx(extreme.pvalue, rel=1e-12) and r["p_min"] > 0.3
    assert r["consistent"] is False and r["verdict"].startswith("DOES NOT FOLLOW")
    assert r["cohens_d"] == pytest.approx(0.3 / math.sqrt((1.0 + 0.81) / 2), rel=1e-12)


def test_operation_time_stays_highly_significant():
    r = reanalyse_summary("754", "89.05", 10, "1516", "134.39", 10, "<0.05")
    direct = stats.ttest_ind_from_stats(754, 89.05, 10, 1516, 134.39, 10)
    assert r["p"] == pytest.approx(direct.pvalue, rel=1e-12) and r["t"] == pytest.approx(direct.statistic, rel=1e-12)
    assert r["p"] < 1e-10 and r["p_max"] < 1e-10 and r["consistent"] is True
    assert r["cohens_d"] < -6


def test_study_table_and_adverse_events():
    rows = {row["outcome"]: row for row in reanalyse_study()}
    assert rows["NRS 1 h after the block"]["consistent"] is False
    assert rows["operation time"]["consistent"] is True
    ae = rows["adverse events"]
    assert ae["p"] == pytest.approx(stats.fisher_exact([[4, 6], [0, 10]]).pvalue, rel=1e-12)
    assert ae["p"] == pytest.approx(0.087, abs=0.001) and "NOT significant" in ae["verdict"]


@pytest.mark.parametrize(
    "text, expected", [("<0.05", ("<", 0.05)), ("p = 0.031", ("=", 0.031)), ("≤0.01", ("<=", 0.01)), (">0.05", (">", 0.05))]
)
def test_reported_p_parsing(text, expected):
    assert parse_reported_p(text) == expected


def test_exact_reported_p_within_rounding_is_consistent():
    p = stats.ttest_ind_from_stats(5.0, 2.0, 20, 3.5, 2.0, 20).pvalue
    assert reanalyse_summary("5.0", "2.0", 20, "3.5", "2.0", 20, f"{p:.3f}")["consistent"] is True
    assert reanalyse_summary("5.0", "2.0", 20, "3.5", "2.0", 20, "0.5")["consistent"] is False
    with pytest.raises(OutcomesError, match="not like"):
        parse_reported_p("significant")
