"""NRS weighted value (NRS-WV) and its response categories.

``NRS-WV = (NRS_before - NRS_after) / NRS_before``: the fraction of the baseline pain that is
gone (1 = pain-free, 0 = unchanged, negative = worse). Categories (lower bounds inclusive):
cured >= 75 %, significant improvement 50-75 %, improved 25-50 %, no effect < 25 %.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["NRS_WV_CATEGORIES", "nrs_wv", "nrs_wv_category", "category_table"]

#: (label, lower bound inclusive, upper bound exclusive) of NRS-WV, as fractions.
NRS_WV_CATEGORIES = (
    ("no effect", -np.inf, 0.25),
    ("improved", 0.25, 0.50),
    ("significant improvement", 0.50, 0.75),
    ("cured", 0.75, np.inf),
)


def nrs_wv(nrs_before, nrs_after) -> np.ndarray:
    """NRS weighted value, a fraction (multiply by 100 for %).

    Parameters
    ----------
    nrs_before, nrs_after : array_like, NRS points (0-10)
        Broadcast together.

    Returns
    -------
    numpy.ndarray of float
        ``(before - after) / before``; NaN where ``before`` is 0 (no pain to relieve) or either is NaN.
    """
    before = np.asarray(nrs_before, dtype=float)
    after = np.asarray(nrs_after, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = (before - after) / before
    return np.where(before > 0, value, np.nan)


def nrs_wv_category(wv) -> pd.Categorical:
    """Category of each NRS-WV (fraction): ordered categorical, NaN stays missing.

    Values are rounded to 12 decimals first so that e.g. (4 - 3) / 4 lands on the 25 % bound.
    """
    values = np.round(np.asarray(wv, dtype=float), 12)
    edges = [NRS_WV_CATEGORIES[0][1]] + [c[2] for c in NRS_WV_CATEGORIES]
    labels = [c[0] for c in NRS_WV_CATEGORIES]
    return pd.cut(values, bins=edges, labels=labels, right=False, ordered=True)


def category_table(log: pd.DataFrame, after_column: str, group_column: str = "group") -> pd.DataFrame:
    """Counts and percentages of NRS-WV categories per group.

    Parameters
    ----------
    log : pandas.DataFrame
        Needs ``nrs_baseline``, ``after_column`` (e.g. ``"nrs_7d"``) and ``group_column``.

    Returns
    -------
    pandas.DataFrame
        One row per (group, category): ``group``, ``category``, ``n``, ``percent`` (of the group's
        rows with a defined NRS-WV), ``timepoint``.
    """
    wv = nrs_wv(log["nrs_baseline"], log[after_column])
    cats = nrs_wv_category(wv)
    frame = pd.DataFrame({"group": log[group_column].to_numpy(), "category": cats})
    frame = frame[~pd.isna(frame["category"])]
    rows = []
    for group in sorted(log[group_column].dropna().unique()):
        sub = frame[frame["group"] == group]
        total = len(sub)
        for label, _, _ in NRS_WV_CATEGORIES:
            n = int((sub["category"] == label).sum())
            rows.append(
                {
                    "timepoint": after_column,
                    "group": group,
                    "category": label,
                    "n": n,
                    "percent": 100.0 * n / total if total else float("nan"),
                }
            )
    return pd.DataFrame(rows)
