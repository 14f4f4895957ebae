"""Teaching library and scores on real generated library cases (issue 19).

One library of three cases (a plain one, a sacralised L5 and a lumbarised S1: the wrong-level
traps) is built once per test session (tests/conftest.py); every test reads it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from workbench.anatomy import Label
from workbench.case import load_case
from workbench.cli import main
from workbench.io.ground_truth import read_ground_truth
from workbench.planning.export import load_plan, write_plan_json
from workbench.teaching import TeachingError
from workbench.teaching.library import difficulty_rating, read_library
from workbench.teaching.score import PASS_Z, score_plan


@pytest.fixture(scope="module")
def library(teaching_library):
    return teaching_library  # built once per test session (tests/conftest.py), shared with the browser test


def _label_at(image: sitk.Image, point_lps) -> int:
    index = image.TransformPhysicalPointToIndex([float(v) for v in point_lps])
    return int(image[index])


def test_library_index_features_and_difficulty(library, capsys):
    entries = read_library(library)
    assert [e.case_id for e in entries] == ["LIB-001-01", "LIB-001-02", "LIB-001-03"]
    plain, trap, other_trap = entries
    assert other_trap.features["transitional"] == "lumbarised-S1" and other_trap.task.startswith("L5 ")
    assert plain.features["transitional"] == "none"
    assert trap.features["transitional"] == "sacralised-L5" and trap.task.startswith("L5 ")
    for entry in entries:
        f = entry.features
        assert 18.0 <= f["bmi"] <= 40.0
        assert f["scoliosis_deg"] == 0.0 or 10.0 <= abs(f["scoliosis_deg"]) <= 20.0
        assert f["foraminal_stenosis"] == 0.0 or 0.3 <= f["foraminal_stenosis"] <= 1.0
        assert 1.0 <= f["posture_rotation_deg"] <= 4.0 and 0.5 <= f["posture_translation_mm"] <= 2.0
        assert 1.0 <= entry.difficulty <= 5.0 and entry.difficulty == difficulty_rating(f)
        case = load_case(library / entry.case_id)  # an ordinary case bundle, digests verified
        assert case.case_id == entry.case_id
        truth = read_ground_truth(library / entry.case_id / "ground_truth.json")
        assert truth.spec.get("transitional", "none") == f["transitional"]
        expert = next(p for p in truth.expert_plans if p.target == entry.task)
        assert f["task_depth_mm"] == pytest.approx(expert.insertion_depth_mm, abs=0.05)
    # the trap's transitional vertebra adds 1.5 of the 6 weight units: 1 point of the 1..5 scale
    no_trap = dict(trap.features, transitional="none")
    assert trap.difficulty - difficulty_rating(no_trap) == pytest.approx(1.0, abs=0.051)
    assert main(["library", "list", str(library), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["cases"]
    assert [c["case_id"] for c in listed] == ["LIB-001-01", "LIB-001-02", "LIB-001-03"]
    assert listed[1]["description"].count("sacralised-L5") == 1


def test_sacralised_l5_has_bone_in_the_l5_s1_disc_space(library):
    centres = {}
    for case_id in ("LIB-001-01", "LIB-001-02"):
        truth = read_ground_truth(library / case_id / "ground_truth.json")
        labels = sitk.ReadImage(str(library / case_id / "labels" / "labels.nrrd"))
        l5, s1 = truth.landmarks_mri["L5 body centre"], truth.landmarks_mri["S1 body centre"]
        l4 = truth.landmarks_mri["L4 body centre"]
        centres[case_id] = (_label_at(labels, (l5 + s1) / 2), _label_at(labels, (l4 + l5) / 2))
    disc = {int(Label.DISC_ANNULUS), int(Label.DISC_NUCLEUS)}
    assert centres["LIB-001-01"][0] in disc and centres["LIB-001-01"][1] in disc
    assert centres["LIB-001-02"][0] == int(Label.VERTEBRAL_BODY)  # fused: counting up from it is one level off
    assert centres["LIB-001-02"][1] in disc


def _moved_plan(library, case_id: str, tmp_path, shift_mm: float):
    plan = load_plan(library / f"{case_id}.expert.plan.json")
    trajectory = plan.trajectories[0]
    direction = trajectory.direction_lps
    across = np.cross(direction, [0.0, 0.0, 1.0])
    across /= np.linalg.norm(across)
    moved = dataclasses.replace(trajectory, entry_lps_mm=tuple(np.add(trajectory.entry_lps_mm, shift_mm * across)))
    path = tmp_path / f"moved_{shift_mm:g}.plan.json"
    write_plan_json(dataclasses.replace(plan, trajectories=(moved,)), path)
    return path, trajectory


@pytest.mark.parametrize("case_id", ["LIB-001-01", "LIB-001-02", "LIB-001-03"])
def test_expert_plan_passes_and_a_15_mm_entry_move_scores_lower(library, tmp_path, case_id):
    expert = score_plan(library / case_id, library / f"{case_id}.expert.plan.json")
    assert expert.passed and expert.score >= 90.0
    assert expert.metrics["offset_mm"] == pytest.approx(0.0, abs=1e-6)
    assert expert.safety_status != "blocked" and not expert.wrong_level

    path, trajectory = _moved_plan(library, case_id, tmp_path, 15.0)
    moved = score_plan(library / case_id, path)
    depth = trajectory.insertion_depth_mm
    assert moved.metrics["offset_at_entry_mm"] == pytest.approx(15.0, abs=0.01)
    assert moved.metrics["offset_at_target_mm"] == pytest.approx(0.0, abs=0.01)
    assert moved.metrics["offset_mm"] == pytest.approx(15.0, abs=0.01)
    assert moved.metrics["angle_deviation_deg"] == pytest.approx(np.degrees(np.arctan2(15.0, depth)), abs=0.01)
    assert moved.z_scores["offset_at_entry_mm"] > PASS_Z and moved.sub_scores["offset_at_entry_mm"] == 0.0
    assert not moved.passed and moved.score <= 60.0 and moved.score < expert.score - 30.0


def test_wrong_level_is_detected_on_the_trap_case(library, tmp_path, capsys):
    entry = read_library(library)[1]
    truth = read_ground_truth(library / entry.case_id / "ground_truth.json")
    side = entry.task.split()[1]
    one_up = next(p for p in truth.expert_plans if p.target == f"L4 {side} exiting nerve root, dorsal aspect")
    plan = load_plan(library / f"{entry.case_id}.expert.plan.json")
    wrong = dataclasses.replace(
        plan.trajectories[0], target_lps_mm=tuple(one_up.target_lps_mm), entry_lps_mm=tuple(one_up.entry_lps_mm)
    )
    path = tmp_path / "wrong_level.plan.json"
    write_plan_json(dataclasses.replace(plan, trajectories=(wrong,)), path)
    assert main(["score", "--case", str(library / entry.case_id), "--plan", str(path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["wrong_level"] is True and result["wrong_side"] is False
    assert result["passed"] is False and result["score"] <= 20.0
    assert any(line.startswith("wrong level: the target is at L4") for line in result["findings"])
    assert {"score", "passed", "angle_deviation_deg", "offset_at_target_mm", "offset_at_entry_mm", "findings"} <= set(result)


def test_submit_and_results_through_the_cli(library, tmp_path, capsys):
    case = library / "LIB-001-01"
    good, (moved, _) = library / "LIB-001-01.expert.plan.json", _moved_plan(library, "LIB-001-01", tmp_path, 15.0)
    db = tmp_path / "results.sqlite"
    for trainee, plan in (("t01", good), ("t02", moved), ("t01", moved)):
        args = ["submit", "--db", str(db), "--trainee", trainee, "--session", "S1", "--case", str(case), "--plan", str(plan)]
        assert main([*args, "--json"]) == 0
    capsys.readouterr()
    assert main(["results", "--db", str(db), "--csv", str(tmp_path / "r.csv")]) == 0
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert len(lines) == 4 and lines[1].split(",")[1:3] == ["t01", "S1"]
    args = ["submit", "--db", str(db), "--trainee", "jane@example.org", "--session", "S1", "--case", str(case), "--plan", str(good)]
    assert main(args) == 2
    assert "not a pseudonym" in capsys.readouterr().err


def test_score_errors_are_one_line(library, tmp_path, capsys):
    with pytest.raises(TeachingError, match="no ground_truth.json"):
        score_plan(tmp_path, library / "LIB-001-01.expert.plan.json")
    assert main(["score", "--case", str(library / "LIB-001-01"), "--plan", str(tmp_path / "none.json")]) == 2
    assert "no such plan file" in capsys.readouterr().err
    assert main(["library", "list", str(tmp_path)]) == 2
    assert "not a case library" in capsys.readouterr().err


def test_teaching_notebook_runs_headless_on_the_library(library, tmp_path):
    from tests.notebook_runner import execute_notebook

    source = Path(__file__).resolve().parents[1] / "notebooks" / "09_teaching_session.ipynb"
    outputs, work = execute_notebook(source, library / "LIB-001-01", tmp_path / "nb", timeout_s=300)
    text = "".join(o["output"].get("text", "") for o in outputs if o["output"].get("output_type") == "stream")
    assert "LIB-001-02: difficulty" in text and "task L5 " in text
    assert "18 attempts stored" in text  # 3 simulated trainees x 3 cases x 2 attempts
    assert "18 attempts by 3 trainees in session demo-session" in text
    assert "exported 18 attempts to results-demo-session-" in text
    widget_views = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o["output"].get("data", {})]
    assert widget_views, "the teacher's view was not displayed as a widget"


def test_trainee_submit_panel_scores_stores_and_overlays(library, tmp_path):
    pytest.importorskip("ipywidgets")
    from workbench.teaching.store import open_store
    from workbench.widgets._plots import png_size
    from workbench.widgets.teacher import SubmitPanel

    moved, _ = _moved_plan(library, "LIB-001-01", tmp_path, 15.0)
    db = tmp_path / "panel.sqlite"
    panel = SubmitPanel(library / "LIB-001-01", lambda: moved, db=db, session="S2")
    panel.trainee.value = "Jane Doe"
    assert panel.submit() is None and "not a pseudonym" in panel.result.value
    panel.trainee.value = "t09"
    score = panel.submit()
    assert score is not None and not score.passed
    assert f"Score {score.score:.0f} / 100, not passed" in panel.result.value and "offset at entry" in panel.result.value
    assert png_size(panel.overlay.value) == (930, 460) and panel.overlay.layout.display is None
    # both paths on the MRI: in the axial view the entries lie 15 mm apart (the move is across the
    # needle and horizontal), the targets coincide; in the expert's needle plane the move is out of plane
    needle_plane, axial = panel.last_views
    scale = axial["figure_px_per_mm"]
    assert np.linalg.norm(np.subtract(axial["yours_px"][0], axial["expert_px"][0])) == pytest.approx(15.0 * scale, abs=1.0)
    assert np.linalg.norm(np.subtract(axial["yours_px"][1], axial["expert_px"][1])) < 1.0
    assert np.linalg.norm(np.subtract(needle_plane["yours_px"][0], needle_plane["expert_px"][0])) < 1.0
    with open_store(db) as store:
        (row,) = store.results()
    assert (row["trainee"], row["session"], row["case_id"]) == ("t09", "S2", "LIB-001-01")
    assert row["offset_at_entry_mm"] == pytest.approx(15.0, abs=0.01)

    class PlanPage:  # what the plan page's PlanPanel offers: export() -> the files written
        def export(self):
            return [tmp_path / "report.html", expert_copy]

    expert_copy = tmp_path / "plan.json"
    expert_copy.write_bytes((library / "LIB-001-01.expert.plan.json").read_bytes())
    page = PlanPage()
    from_page = SubmitPanel.for_plan_panel(library / "LIB-001-01", page, db=db, session="S2", check_safety=False)
    from_page.trainee.value = "t09"
    assert from_page.submit().passed and "Score 100 / 100, passed" in from_page.result.value


@pytest.fixture(scope="module")
def session_scores(library, tmp_path_factory):
    """A session: 3 trainees x 3 cases x 2 attempts (the entry 12, 6 mm off for t02; t03 one level
    up on the traps at first), scored with the safety checks."""
    from workbench.teaching.score import score_plan

    work = tmp_path_factory.mktemp("session")
    scores = []
    for attempt, shift in enumerate((12.0, 6.0)):
        for trainee in ("t01", "t02", "t03"):
            for entry in read_library(library):
                path, _ = _moved_plan(library, entry.case_id, work, shift if trainee == "t02" else 0.0)
                if trainee == "t03" and attempt == 0 and entry.features["transitional"] != "none":
                    truth = read_ground_truth(library / entry.case_id / "ground_truth.json")
                    up = next(p for p in truth.expert_plans if p.target == entry.task.replace("L5", "L4"))
                    plan = load_plan(path)
                    wrong = dataclasses.replace(
                        plan.trajectories[0], target_lps_mm=tuple(up.target_lps_mm), entry_lps_mm=tuple(up.entry_lps_mm)
                    )
                    path = work / f"t03_{entry.case_id}.plan.json"
                    write_plan_json(dataclasses.replace(plan, trajectories=(wrong,)), path)
                scores.append((trainee, score_plan(library / entry.case_id, path)))
    return scores


def _run_session(db, scores) -> list[dict]:
    from concurrent.futures import ThreadPoolExecutor

    from workbench.teaching.classview import ClassView
    from workbench.teaching.store import open_store

    def submit(item):
        index, (trainee, score) = item
        with open_store(db) as store:
            return store.submit(trainee, "E2E", score, f"{index:064x}")

    with ThreadPoolExecutor(6) as pool:  # the class submits at once
        ids = list(pool.map(submit, enumerate(scores)))
    with open_store(db) as store:
        view = ClassView.from_store(store, "E2E")
    assert len(set(ids)) == len(scores) == 18 and len(view.rows) == 18
    return view


def _check_session(view) -> None:
    table = {row["trainee"]: row for row in view.class_table()}
    assert table["t01"]["pass_rate"] == 1.0 and table["t01"]["mean_score"] >= 90.0
    assert table["t02"]["pass_rate"] == 0.0 and table["t02"]["mean_score"] < table["t01"]["mean_score"] - 20.0
    assert table["t03"]["wrong_level"] == 2 and table["t03"]["pass_rate"] == pytest.approx(4 / 6, abs=1e-3)
    worst = view.problem_cases()[0]
    assert worst["case_id"] in ("LIB-001-02", "LIB-001-03") and worst["wrong_level"] == 1


def test_a_session_of_three_trainees_end_to_end_in_sqlite(session_scores, tmp_path):
    _check_session(_run_session(tmp_path / "results.sqlite", session_scores))


def test_a_session_of_three_trainees_end_to_end_in_postgresql(session_scores, postgres_schema_url):
    _check_session(_run_session(postgres_schema_url, session_scores))
