"""Write an :class:`~workbench.outcomes.analysis.OutcomesAnalysis` as CSV tables and one HTML report.

The report is self-contained: plots are PNGs embedded as ``data:`` URIs, styles inline, no
script and no external URL. It holds only what the log holds (pseudonymous ids, no names).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from workbench import __version__
from workbench._atomic import atomic_open, atomic_write_text
from workbench.outcomes.analysis import OutcomesAnalysis
from workbench.outcomes.matching import love_plot
from workbench.outcomes.nrs import NRS_WV_CATEGORIES

__all__ = ["TABLE_FILES", "figure_png", "propensity_plot", "nrs_wv_plot", "write_report"]

#: CSV file -> what it holds.
TABLE_FILES = {
    "balance.csv": "covariate means and SMD before and after matching",
    "propensity.csv": "propensity score and its logit per procedure, and whether it was matched",
    "matched_pairs.csv": "matched pairs by procedure id, with their logit distance",
    "comparisons.csv": "t-tests (Student, Welch), Mann-Whitney, effect sizes per outcome and cohort",
    "treatment_effects.csv": "matched-pair effect (treated - control) per outcome",
    "adverse_events.csv": "Fisher's exact test, odds ratio, risk difference per cohort",
    "nrs_wv_categories.csv": "NRS-WV categories per group, time point and cohort",
    "study_reanalysis.csv": "re-analysis of the clinical study's published summaries",
}


def figure_png(fig) -> bytes:
    """PNG bytes of a matplotlib Figure (Agg canvas, 100 dpi)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def propensity_plot(analysis: OutcomesAnalysis):
    """Histograms of the logit of the propensity score per group, all rows and matched rows."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    table = analysis.propensity_table()
    fig = Figure(figsize=(7.0, 3.0))
    FigureCanvasAgg(fig)
    bins = np.histogram_bin_edges(table["propensity_logit"], bins=20) if len(table) else 10
    for k, (title, rows) in enumerate((("all", table), ("matched", table[table["matched"]]))):
        ax = fig.add_subplot(1, 2, k + 1)
        for group, colour in ((analysis.treated, "tab:blue"), (analysis.control, "tab:orange")):
            ax.hist(rows.loc[rows["group"] == group, "propensity_logit"], bins=bins, alpha=0.6, color=colour, label=group)
        ax.set_title(f"{title} procedures")
        ax.set_xlabel("logit of the propensity score")
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def nrs_wv_plot(analysis: OutcomesAnalysis, cohort: str = "all"):
    """Stacked bars: percentage of each NRS-WV category per group, at 1 h and 7 days."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    table = analysis.nrs_wv_categories
    table = table[table["cohort"] == cohort]
    fig = Figure(figsize=(7.0, 3.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    bars = [(t, g) for t in ("nrs_1h", "nrs_7d") for g in (analysis.treated, analysis.control)]
    colours = ("#d9d9d9", "#9ecae1", "#4292c6", "#08519c")
    bottom = np.zeros(len(bars))
    for (label, _, _), colour in zip(NRS_WV_CATEGORIES, colours):
        values = np.array(
            [
                table.loc[(table["timepoint"] == t) & (table["group"] == g) & (table["category"] == label), "percent"].sum()
                for t, g in bars
            ]
        )
        ax.bar(range(len(bars)), values, bottom=bottom, color=colour, label=label)
        bottom += values
    ax.set_xticks(range(len(bars)), [f"{g}\n{'1 h' if t == 'nrs_1h' else '7 d'}" for t, g in bars])
    ax.set_ylabel("% of procedures")
    ax.set_title(f"NRS-WV categories ({cohort} procedures)")
    ax.legend(fontsize="small", bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    return fig


def _img(fig, alt: str) -> str:
    data = base64.b64encode(figure_png(fig)).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _fmt(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return ""
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        return f"{value:.4g}"
    if value is None or value is pd.NA:
        return ""
    return str(value)


def _table(frame: pd.DataFrame, columns: list[str] | None = None) -> str:
    if frame is None or len(frame) == 0:
        return "<p><em>none</em></p>"
    columns = [c for c in (columns or list(frame.columns)) if c in frame.columns]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(row[c]))}</td>" for c in columns) + "</tr>"
        for _, row in frame.iterrows()
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_STYLE = """
body{font-family:sans-serif;max-width:72em;margin:1em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.85em}
th,td{border:1px solid #bbb;padding:.2em .4em;text-align:right}th{background:#eee}
td:first-child,th:first-child{text-align:left}
.flag{background:#fde0dd;border-left:4px solid #c51b8a;padding:.4em .8em}
.ok{background:#e5f5e0;border-left:4px solid #31a354;padding:.4em .8em}
"""


def _html(analysis: OutcomesAnalysis, source: str) -> str:
    a = analysis
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>Outcome analysis</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Outcome analysis of the procedure log</h1>",
        f"<p>Log: {html.escape(source)} &middot; treated group <b>{html.escape(a.treated)}</b>, control group "
        f"<b>{html.escape(a.control)}</b>; differences are treated minus control; "
        f"{100 * a.confidence:.0f} % confidence intervals &middot; workbench {html.escape(__version__)}</p>",
        "<h2>Findings</h2><ul>",
    ]
    for note in a.notes:
        cls = " class='flag'" if "DOES NOT FOLLOW" in note or "NOT significant" in note else ""
        parts.append(f"<li{cls}>{html.escape(note)}</li>")
    parts.append("</ul>")

    parts.append("<h2>Re-analysis of the clinical study's published summaries</h2>")
    parts.append(
        "<p>t-tests recomputed from mean &plusmn; SD and n (scipy.stats.ttest_ind_from_stats); "
        "the p range allows every printed mean and SD to be off by half a unit of its last decimal. "
        "Adverse events: Fisher's exact test.</p>"
    )
    for row in a.study_reanalysis.to_dict("records"):
        cls = "flag" if (row.get("consistent") is False or "NOT" in row["verdict"]) else "ok"
        parts.append(f"<p class='{cls}'><b>{html.escape(row['outcome'])}</b>: {html.escape(row['verdict'])}</p>")
    parts.append(
        _table(
            a.study_reanalysis,
            ["outcome", "unit", "group1", "group2", "t", "df", "p", "p_welch", "p_min", "p_max", "cohens_d",
             "cohens_d_ci_low", "cohens_d_ci_high", "hedges_g", "odds_ratio", "odds_ratio_ci_low",
             "risk_difference", "risk_difference_ci_low", "risk_difference_ci_high", "reported_p", "consistent", "note"],
        )
    )

    parts.append("<h2>Propensity score and matching</h2>")
    if a.match is not None:
        parts.append(
            f"<p>Logistic regression (statsmodels Logit) of group on {html.escape(', '.join(a.propensity.terms))}. "
            f"Matching: 1:1 nearest neighbour without replacement on the {html.escape(a.match.scale)}. "
            f"{a.match.n_pairs} pairs from {a.match.n_treated} {html.escape(a.treated)} and "
            f"{a.match.n_control} {html.escape(a.control)} procedures.</p>"
        )
        parts.append(_img(propensity_plot(a), "propensity score histograms"))
        parts.append("<h3>Balance (standardised mean differences)</h3>")
        parts.append(_table(a.balance))
        parts.append(_img(love_plot(a.balance), "love plot"))
    else:
        parts.append("<p class='flag'>No matched cohort (see findings).</p>")

    parts.append("<h2>Group comparisons</h2>")
    parts.append(
        "<p>Student and Welch t-tests with the CI of the mean difference, Mann&ndash;Whitney U, Cohen's d and "
        "Hedges' g (CI from the noncentral t), rank-biserial correlation (bootstrap CI). NRS-WV = "
        "(NRS before &minus; NRS after) / NRS before, a fraction.</p>"
    )
    parts.append(
        _table(
            a.comparisons,
            ["cohort", "outcome", "unit", "n_treated", "n_control", "mean_treated", "sd_treated", "mean_control",
             "sd_control", "mean_difference", "mean_difference_ci_low_student", "mean_difference_ci_high_student",
             "p_student", "p_welch", "p_mann_whitney", "hedges_g", "hedges_g_ci_low", "hedges_g_ci_high",
             "rank_biserial", "rank_biserial_ci_low", "rank_biserial_ci_high"],
        )
    )
    if len(a.treatment_effects):
        parts.append("<h3>Matched-pair treatment effect (paired t over pairs)</h3>")
        parts.append(_table(a.treatment_effects, ["outcome", "unit", "n_pairs", "effect", "ci_low", "ci_high", "p"]))
    parts.append("<h3>Adverse events</h3>")
    parts.append(
        _table(
            a.adverse_events,
            ["cohort", "events_treated", "n_treated", "events_control", "n_control", "p_fisher", "odds_ratio",
             "odds_ratio_ci_low", "odds_ratio_ci_high", "risk_difference", "risk_difference_ci_low",
             "risk_difference_ci_high"],
        )
    )
    parts.append("<h2>NRS-WV categories</h2>")
    parts.append(
        "<p>cured &ge; 75 %, significant improvement 50&ndash;75 %, improved 25&ndash;50 %, no effect &lt; 25 % "
        "(lower bounds inclusive).</p>"
    )
    parts.append(_img(nrs_wv_plot(a, "all"), "NRS-WV categories"))
    if a.matched_log is not None:
        parts.append(_img(nrs_wv_plot(a, "matched"), "NRS-WV categories, matched"))
    parts.append(_table(a.nrs_wv_categories))
    parts.append("<h2>Files</h2><ul>")
    for name, what in TABLE_FILES.items():
        parts.append(f"<li>{html.escape(name)}: {html.escape(what)}</li>")
    parts.append("</ul></body></html>\n")
    return "\n".join(parts)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_open(path, "w") as fh:
        frame.to_csv(fh, index=False, lineterminator="\n")


def write_report(analysis: OutcomesAnalysis, out_dir: str | os.PathLike, source: str = "") -> dict:
    """Write :data:`TABLE_FILES` and ``report.html`` into ``out_dir`` (created); every file atomically.

    Returns
    -------
    dict
        JSON-ready summary: ``out_dir``, ``files``, ``n_pairs``, ``caliper``, ``notes``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = {
        "balance.csv": analysis.balance,
        "propensity.csv": analysis.propensity_table(),
        "matched_pairs.csv": analysis.pairs_table(),
        "comparisons.csv": analysis.comparisons,
        "treatment_effects.csv": analysis.treatment_effects,
        "adverse_events.csv": analysis.adverse_events,
        "nrs_wv_categories.csv": analysis.nrs_wv_categories,
        "study_reanalysis.csv": analysis.study_reanalysis,
    }
    for name, frame in tables.items():
        _write_csv(frame, out / name)
    atomic_write_text(out / "report.html", _html(analysis, source))
    m = analysis.match
    return {
        "out_dir": str(out),
        "files": sorted([*tables, "report.html"]),
        "n_procedures": int(len(analysis.log)),
        "n_pairs": None if m is None else m.n_pairs,
        "caliper": None if m is None else {"sd": m.caliper_sd, "logit_units": m.caliper_logit, "scale": m.scale},
        "notes": analysis.notes,
    }


def summary_json(summary: dict) -> str:
    """``summary`` as JSON (non-finite numbers become null)."""

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(summary), indent=1, allow_nan=False)
