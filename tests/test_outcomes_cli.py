"""``workbench outcomes`` end to end: tables and a self-contained HTML report from the example log."""

from __future__ import annotations

import base64
import json
import re

import pandas as pd
import pytest
from scipy import stats

from workbench.cli import main
from workbench.outcomes.analysis import analyse_log
from workbench.outcomes.example import CohortSpec, example_log_path, simulate_cohort
from workbench.outcomes.report import TABLE_FILES, write_report


def test_cli_writes_tables_and_a_self_contained_report(tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["outcomes", str(example_log_path()), "--out", str(out), "--caliper-sd", "0.1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert sorted(p.name for p in out.iterdir()) == sorted([*TABLE_FILES, "report.html"]) == summary["files"]
    assert summary["n_procedures"] == 300
    assert summary["caliper"]["sd"] == 0.1 and "0.1 SD of the logit" in summary["caliper"]["scale"]

    propensity = pd.read_csv(out / "propensity.csv")
    assert propensity["matched"].sum() == 2 * summary["n_pairs"]
    sd = propensity["propensity_logit"].std(ddof=1)
    assert summary["caliper"]["logit_units"] == pytest.approx(0.1 * sd, rel=1e-9)
    pairs = pd.read_csv(out / "matched_pairs.csv")
    assert len(pairs) == summary["n_pairs"] and (pairs["distance_logit"] <= 0.1 * sd + 1e-12).all()

    comparisons = pd.read_csv(out / "comparisons.csv")
    log = pd.read_csv(example_log_path())
    row = comparisons[(comparisons.cohort == "all") & (comparisons.outcome == "operation_time_s")].iloc[0]
    t = log.loc[log.group == "fusion", "operation_time_s"]
    c = log.loc[log.group == "us", "operation_time_s"]
    assert row["p_welch"] == pytest.approx(stats.ttest_ind(t, c, equal_var=False).pvalue, rel=1e-9)
    assert row["mean_difference"] == pytest.approx(t.mean() - c.mean(), rel=1e-12)

    effects = pd.read_csv(out / "treatment_effects.csv").set_index("outcome")
    assert effects.loc["nrs_7d", "ci_low"] <= -1.0 <= effects.loc["nrs_7d", "ci_high"]  # the example's true effect
    study = pd.read_csv(out / "study_reanalysis.csv").set_index("outcome")
    assert study.loc["NRS 1 h after the block", "p"] == pytest.approx(0.4897, abs=1e-4)

    html = (out / "report.html").read_text()
    assert not re.search(r"(?:src|href)\s*=\s*['\"](?!data:)", html) and "http" not in html and "<script" not in html
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) >= 3 and all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert "DOES NOT FOLLOW" in html and "p = 0.49" in html and "paper reports p &lt; 0.05" in html
    assert "Fisher&#x27;s exact p = 0.0867" in html and "NOT significant" in html


def test_cli_reanalyse_study_prints_json(capsys):
    assert main(["outcomes", "--reanalyse-study"]) == 0
    rows = json.loads(capsys.readouterr().out)["study_reanalysis"]
    assert [r["consistent"] for r in rows] == [False, True, None]
    assert rows[2]["odds_ratio"] is None  # infinite conditional odds ratio -> null in JSON
    assert rows[2]["p"] == pytest.approx(stats.fisher_exact([[4, 6], [0, 10]]).pvalue, rel=1e-12)


def test_cli_bad_log_exits_2_naming_row_and_column(tmp_path, capsys):
    lines = example_log_path().read_text().splitlines()[:4]
    cells = lines[2].split(",")
    cells[7] = "140"  # age_years
    lines[2] = ",".join(cells)
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    assert main(["outcomes", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{path}: row 2 (line 3), column 'age_years': 140 is outside 18-110 years" in err
    assert not (tmp_path / "o").exists()
    assert main(["outcomes"]) == 2
    assert "give LOG and --out DIR" in capsys.readouterr().err


def test_cli_write_example_matches_the_shipped_log(tmp_path, capsys):
    assert main(["outcomes", "--write-example", str(tmp_path / "ex.csv")]) == 0
    assert (tmp_path / "ex.csv").read_bytes() == example_log_path().read_bytes()


def test_small_cohort_without_overlap_still_reports_unmatched_comparisons(tmp_path):
    log = simulate_cohort(CohortSpec(n=40, seed=9))
    log.loc[:, "group"] = ["fusion" if a > 58 else "us" for a in log["age_years"]]
    analysis = analyse_log(log)
    assert analysis.match is None and any("separate the groups perfectly" in n for n in analysis.notes)
    assert set(analysis.comparisons["cohort"]) == {"all"}
    assert len(analysis.treatment_effects) == 0


def test_log_without_outcomes_yet_gives_matching_and_says_what_was_not_compared(tmp_path):
    log = simulate_cohort(CohortSpec(n=80, seed=4))
    for column in ("nrs_1h", "nrs_7d", "operation_time_s", "gabapentin_before_g_per_day", "gabapentin_after_g_per_day"):
        log[column] = float("nan")
    log["adverse_event"] = pd.array([None] * len(log), dtype="Int64")
    analysis = analyse_log(log)
    assert analysis.match is not None and analysis.match.n_pairs >= 2
    assert len(analysis.comparisons) == 0 and len(analysis.adverse_events) == 0
    assert sum("fewer than 2 values in a group, not compared" in n for n in analysis.notes) == 12
    summary = write_report(analysis, tmp_path)
    assert (tmp_path / "report.html").is_file() and summary["n_pairs"] == analysis.match.n_pairs
