"""Re-analysis from published summaries: does the reported p-value follow from mean ± SD and n?

:func:`reanalyse_summary` recomputes Student's and Welch's t-tests from the summaries
(``scipy.stats.ttest_ind_from_stats``) and the SMD (Cohen's d, Hedges' g), and flags a reported
p-value that does not follow. Summaries are rounded in print, so the recomputed p is also given
as a range over every mean and SD moved by half a unit of its last printed decimal
(:func:`reanalyse_summary`'s ``decimals``); a reported p is called inconsistent only when the
whole range disagrees with it. :data:`STUDY_SUMMARIES` holds the clinical study's own numbers.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from workbench.errors import OutcomesError
from workbench.outcomes.compare import cohens_d, compare_binary, d_confidence_interval, hedges_correction

__all__ = [
    "STUDY_ADVERSE_EVENTS",
    "STUDY_SUMMARIES",
    "ContinuousSummary",
    "parse_reported_p",
    "reanalyse_adverse_events",
    "reanalyse_study",
    "reanalyse_summary",
]

_P_RE = re.compile(r"^\s*(?:p\s*)?(<=|>=|<|>|=|≤|≥)?\s*(\d*\.?\d+(?:[eE]-?\d+)?)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class ContinuousSummary:
    """A published comparison of a continuous outcome: mean ± SD (n) per group and the reported p.

    ``mean1, sd1, n1`` and ``mean2, sd2, n2`` are written as printed (the number of decimals
    matters: see :func:`reanalyse_summary`). ``reported_p`` is text such as ``"<0.05"`` or ``"0.03"``.
    """

    outcome: str
    unit: str
    label1: str
    mean1: str
    sd1: str
    n1: int
    label2: str
    mean2: str
    sd2: str
    n2: int
    reported_p: str | None = None
    note: str = ""


#: The clinical study's published summaries (issue 8). The issue names the groups of the 1 h NRS
#: (US first); for operation time it gives the numbers in the same order without naming them.
STUDY_SUMMARIES: tuple[ContinuousSummary, ...] = (
    ContinuousSummary("NRS 1 h after the block", "NRS points", "us", "2.5", "1.0", 10, "fusion", "2.2", "0.9", 10, "<0.05"),
    ContinuousSummary(
        "operation time", "s", "us", "754", "89.05", 10, "fusion", "1516", "134.39", 10, "<0.05",
        note="groups in the order the issue lists them (not named there)",
    ),
)
#: Adverse events of the study: (label, events, n) per group, order as the issue lists them.
STUDY_ADVERSE_EVENTS = (("us", 4, 10), ("fusion", 0, 10))


def parse_reported_p(text: str) -> tuple[str, float]:
    """``"<0.05"`` -> ``("<", 0.05)``; ``"0.03"`` or ``"p = 0.03"`` -> ``("=", 0.03)``."""
    match = _P_RE.match(str(text))
    if not match:
        raise OutcomesError(f"reported p-value {text!r} is not like '<0.05', '>0.05' or '0.031'")
    relation = {"≤": "<=", "≥": ">="}.get(match.group(1) or "=", match.group(1) or "=")
    value = float(match.group(2))
    if not 0 <= value <= 1:
        raise OutcomesError(f"reported p-value {text!r} is not between 0 and 1")
    return relation, value


def _decimals(text: str) -> int:
    text = str(text).strip()
    return len(text.split(".", 1)[1]) if "." in text else 0


def _p_agrees(relation: str, reported: float, p: float, decimals: int) -> bool:
    if relation in ("<", "<="):
        return p < reported or (relation == "<=" and p == reported)
    if relation in (">", ">="):
        return p > reported or (relation == ">=" and p == reported)
    return abs(p - reported) <= 0.5 * 10.0 ** (-decimals) + 1e-12


def reanalyse_summary(
    mean1, sd1, n1: int, mean2, sd2, n2: int, reported_p: str | None = None, *,
    decimals: int | None = None, alpha: float = 0.05, confidence: float = 0.95,
) -> dict:
    """Recompute a two-group comparison from mean, SD and n, and check a reported p.

    Parameters
    ----------
    mean1, sd1, mean2, sd2 : str or float
        As printed; strings keep their decimals (``"1.0"`` has one).
    n1, n2 : int
    reported_p : str, optional
        ``"<0.05"``, ``"0.03"``, ...
    decimals : int, optional
        Printed decimals of every mean and SD; by default each value's own (from its text).
    alpha : float
        Significance level the verdict uses.

    Returns
    -------
    dict
        ``t``, ``df``, ``p`` (Student), ``t_welch``, ``df_welch``, ``p_welch``; ``p_min``, ``p_max``
        (Student, over the rounding box); ``cohens_d`` with CI, ``hedges_g``; ``reported_p``;
        ``consistent`` (None without a reported p) and ``verdict`` (a sentence).
    """
    from scipy import stats

    texts = [str(v) for v in (mean1, sd1, mean2, sd2)]
    values = [float(v) for v in texts]
    if n1 < 2 or n2 < 2 or values[1] < 0 or values[3] < 0:
        raise OutcomesError("each group needs n >= 2 and a non-negative SD")
    m1, s1, m2, s2 = values
    student = stats.ttest_ind_from_stats(m1, s1, n1, m2, s2, n2, equal_var=True)
    welch = stats.ttest_ind_from_stats(m1, s1, n1, m2, s2, n2, equal_var=False)
    half = [0.5 * 10.0 ** -(decimals if decimals is not None else _decimals(t)) for t in texts]
    corners = []
    for signs in itertools.product((-1, 1), repeat=4):
        v = [value + sign * h for value, sign, h in zip(values, signs, half)]
        v[1], v[3] = max(v[1], 1e-12), max(v[3], 1e-12)
        corners.append(float(stats.ttest_ind_from_stats(v[0], v[1], n1, v[2], v[3], n2, equal_var=True).pvalue))
    p_min, p_max = min(corners + [float(student.pvalue)]), max(corners + [float(student.pvalue)])
    d = cohens_d(m1, s1, n1, m2, s2, n2)
    d_low, d_high = d_confidence_interval(d, n1, n2, confidence)
    j = hedges_correction(n1, n2)
    welch_df = (s1**2 / n1 + s2**2 / n2) ** 2 / ((s1**2 / n1) ** 2 / (n1 - 1) + (s2**2 / n2) ** 2 / (n2 - 1))
    out = {
        "mean1": m1, "sd1": s1, "n1": n1, "mean2": m2, "sd2": s2, "n2": n2,
        "t": float(student.statistic), "df": n1 + n2 - 2, "p": float(student.pvalue),
        "t_welch": float(welch.statistic), "df_welch": float(welch_df), "p_welch": float(welch.pvalue),
        "p_min": p_min, "p_max": p_max,
        "cohens_d": d, "cohens_d_ci_low": d_low, "cohens_d_ci_high": d_high,
        "hedges_g": j * d, "confidence": confidence,
        "reported_p": reported_p, "consistent": None,
    }
    significant = student.pvalue < alpha
    if reported_p is None:
        out["verdict"] = f"recomputed {_fmt_p(student.pvalue)} ({'' if significant else 'not '}significant at {alpha:g})"
        return out
    relation, reported = parse_reported_p(reported_p)
    p_decimals = _decimals(str(reported_p).split("=")[-1].lstrip("<>≤≥ "))
    agree_any = any(_p_agrees(relation, reported, p, p_decimals) for p in (p_min, p_max, float(student.pvalue)))
    if relation == "=":
        agree_any = p_min - 0.5 * 10.0**-p_decimals <= reported <= p_max + 0.5 * 10.0**-p_decimals
    out["consistent"] = bool(agree_any)
    if agree_any:
        out["verdict"] = (
            f"consistent: the summaries give {_fmt_p(student.pvalue)} "
            f"(Welch {_fmt_p(welch.pvalue)}); the paper reports p {relation} {reported:g}"
        )
    else:
        out["verdict"] = (
            f"DOES NOT FOLLOW: the summaries give {_fmt_p(student.pvalue)} (Welch {_fmt_p(welch.pvalue)}; "
            f"p from {p_min:.3g} to {p_max:.3g} allowing for rounding), but the paper reports p {relation} {reported:g}"
        )
    return out


def _fmt_p(p: float) -> str:
    return "p < 0.0001" if p < 1e-4 else f"p = {p:.3g}"


def reanalyse_adverse_events(
    groups=STUDY_ADVERSE_EVENTS, reported_p: str | None = None, alpha: float = 0.05
) -> dict:
    """Fisher's exact test, odds ratio and risk difference for ``((label, events, n), (label, events, n))``."""
    (a, e1, n1), (b, e2, n2) = groups
    out = compare_binary(e1, n1, e2, n2, outcome="adverse events", labels=(a, b))
    significant = out["p_fisher"] < alpha
    out["verdict"] = (
        f"Fisher's exact p = {out['p_fisher']:.3g}: {e1}/{n1} vs {e2}/{n2} is "
        f"{'' if significant else 'NOT '}significant at {alpha:g}"
    )
    if reported_p is not None:
        relation, reported = parse_reported_p(reported_p)
        out["reported_p"] = reported_p
        out["consistent"] = _p_agrees(relation, reported, out["p_fisher"], _decimals(str(reported)))
    return out


def reanalyse_study(alpha: float = 0.05) -> list[dict]:
    """Re-analyse :data:`STUDY_SUMMARIES` and :data:`STUDY_ADVERSE_EVENTS`: one dict per row, with
    ``outcome``, ``unit``, the groups, the recomputed numbers and the verdict."""
    rows = []
    for s in STUDY_SUMMARIES:
        result = reanalyse_summary(s.mean1, s.sd1, s.n1, s.mean2, s.sd2, s.n2, s.reported_p, alpha=alpha)
        rows.append(
            {
                "outcome": s.outcome, "unit": s.unit, "test": "Student t from summaries (Welch alongside)",
                "group1": f"{s.label1}: {s.mean1} ± {s.sd1} (n={s.n1})",
                "group2": f"{s.label2}: {s.mean2} ± {s.sd2} (n={s.n2})",
                "note": s.note, **result,
            }
        )
    (a, e1, n1), (b, e2, n2) = STUDY_ADVERSE_EVENTS
    ae = reanalyse_adverse_events(STUDY_ADVERSE_EVENTS, alpha=alpha)
    rows.append(
        {
            "outcome": "adverse events", "unit": "patients with an event", "test": "Fisher's exact",
            "group1": f"{a}: {e1}/{n1}", "group2": f"{b}: {e2}/{n2}",
            "note": "groups in the order the issue lists them",
            "p": ae["p_fisher"], "odds_ratio": ae["odds_ratio"], "odds_ratio_ci_low": ae["odds_ratio_ci_low"],
            "odds_ratio_ci_high": ae["odds_ratio_ci_high"], "risk_difference": ae["risk_difference"],
            "risk_difference_ci_low": ae["risk_difference_ci_low"], "risk_difference_ci_high": ae["risk_difference_ci_high"],
            "reported_p": None, "consistent": None, "verdict": ae["verdict"],
        }
    )
    return rows
