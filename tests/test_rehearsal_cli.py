"""``workbench rehearse``: a scripted attempt on a case, metrics.json with the issue's keys, the log row, errors."""

from __future__ import annotations

import json

import pytest

from workbench.cli import main
from workbench.rehearsal.events import PUNCTURE_TYPES

#: The keys issue 18 asks metrics.json to have.
ISSUE_KEYS = {"tip_to_target_mm", "events", "path_length_mm", "punctures", "redirections", "tip_visible_fraction",
              "frechet_to_expert_mm", "time_s"}
COVARIATES = ["sex=F", "age_years=55", "disease_duration_weeks=20", "bmi_kg_m2=28", "disease_type=radiculopathy",
              "nrs_baseline=7"]


def rehearse(*argv: str) -> int:
    return main(["rehearse", *argv])


def test_follow_plan_writes_metrics_recording_and_two_log_rows(small_demo_case, tmp_path, capsys):
    from workbench.outcomes.log import load_log
    from workbench.rehearsal.recording import read_recording

    log = tmp_path / "log.csv"
    values = [arg for item in COVARIATES for arg in ("--log-value", item)]
    assert rehearse(str(small_demo_case), "--target", "L4 right", "--follow-plan", "--out", str(tmp_path / "a"),
                    "--log", str(log), *values) == 0
    printed = json.loads(capsys.readouterr().out)
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert ISSUE_KEYS <= set(metrics)
    assert metrics["tip_to_target_mm"] < 1.0
    assert not [e for e in metrics["events"] if e["type"] in PUNCTURE_TYPES]
    assert metrics["punctures"] == 1 and metrics["redirections"] == 0
    assert printed["tip_to_target_mm"] == metrics["tip_to_target_mm"]
    sequence = read_recording(tmp_path / "a" / "recording.seq.mha")
    assert sequence.timestamps_s[-1] == pytest.approx(metrics["time_s"], abs=1e-3)
    # a second attempt appends a second row (distinct procedure ids)
    assert rehearse(str(small_demo_case), "--target", "L4 right", "--follow-plan", "--no-inject",
                    "--out", str(tmp_path / "b"), "--log", str(log), *values) == 0
    rows = load_log(log)
    assert len(rows) == 2 and list(rows["group"]) == ["rehearsal", "rehearsal"]
    assert list(rows["adverse_event"]) == [0, 0]
    assert rows["operation_time_s"].iloc[0] == pytest.approx(metrics["time_s"], abs=1e-3)


def test_deviation_across_the_canal_reports_a_dura_event(small_demo_case, tmp_path, capsys):
    assert rehearse(str(small_demo_case), "--target", "L3 left", "--follow-plan", "--deviation-deg", "20",
                    "--deviation-azimuth-deg", "20", "--no-inject", "--out", str(tmp_path)) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [e["type"] for e in metrics["events"]] == ["dura_puncture"]
    assert metrics["events"][0]["structure"] == "dura" and metrics["events"][0]["time_s"] > 0
    assert metrics["frechet_to_expert_mm"] > 10.0


def test_bad_input_exits_2_naming_the_file_or_target(small_demo_case, tmp_path, capsys):
    from workbench.case import Case, Target, save_case

    assert rehearse(str(tmp_path / "missing"), "--target", "x", "--follow-plan", "--out", str(tmp_path / "o")) == 2
    assert f"{tmp_path / 'missing'}: no case.json" in capsys.readouterr().err
    assert rehearse(str(small_demo_case), "--target", "T12 left", "--follow-plan", "--out", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert "case.json: 'T12 left' is not a target" in err and "L4 left exiting nerve root" in err
    save_case(Case(case_id="NO-LABELS-02", targets=[Target("t", "x", (0.0, 0.0, 0.0))]), tmp_path / "bare")
    assert rehearse(str(tmp_path / "bare"), "--target", "t", "--follow-plan", "--out", str(tmp_path / "o")) == 2
    assert f"{tmp_path / 'bare' / 'case.json'}: the case has no label map" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
