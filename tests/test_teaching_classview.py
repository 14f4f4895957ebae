"""The teacher's view: class table, distributions, learning curves, problem cases, CSV, widget (issue 19)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from tests.test_teaching_store import EXPERT, TARGETS, TASK
from workbench.planning.model import NeedleSpec, Trajectory
from workbench.teaching.classview import ClassView
from workbench.teaching.score import score_trajectory
from workbench.teaching.store import open_store

T0 = datetime(2026, 12, 6, 9, 0, tzinfo=timezone.utc)
#: (trainee, case, entry shift mm, target name): t01 improves, t02 stays off, t03 hits the wrong level once.
ATTEMPTS = [
    ("t01", "LIB-A", 15.0, TASK),
    ("t02", "LIB-A", 12.0, TASK),
    ("t03", "LIB-B", 0.0, "L3 left exiting nerve root, dorsal aspect"),
    ("t01", "LIB-B", 6.0, TASK),
    ("t02", "LIB-B", 12.0, TASK),
    ("t03", "LIB-A", 1.0, TASK),
    ("t01", "LIB-A", 0.0, TASK),
]


def _score(case_id: str, shift_mm: float, target: str):
    entry = EXPERT.entry_lps_mm + [shift_mm, 0.0, 0.0] + (TARGETS[target] - TARGETS[TASK])
    trajectory = Trajectory("L4 left", TASK, TARGETS[target], entry, NeedleSpec(90.0, "22G"))
    return score_trajectory(trajectory, TARGETS, EXPERT, case_id=case_id)


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "results.sqlite"
    with open_store(path) as store:
        for minute, (trainee, case_id, shift, target) in enumerate(ATTEMPTS):
            store.submit(trainee, "S1", _score(case_id, shift, target), f"{minute:064x}", when=T0 + timedelta(minutes=minute))
    return path


def test_class_table_curves_and_problem_cases(db):
    with open_store(db) as store:
        view = ClassView.from_store(store, "S1")
    scores = {name: [_score(c, s, t).score for n, c, s, t in ATTEMPTS if n == name] for name in ("t01", "t02", "t03")}
    table = {row["trainee"]: row for row in view.class_table()}
    assert set(table) == {"t01", "t02", "t03"}
    assert table["t01"]["attempts"] == 3 and table["t01"]["cases"] == 2
    assert table["t01"]["mean_score"] == pytest.approx(np.mean(scores["t01"]), abs=0.05)
    assert table["t01"]["last_score"] == pytest.approx(100.0) and table["t01"]["best_score"] == pytest.approx(100.0)
    assert table["t02"]["pass_rate"] == 0.0 and table["t01"]["pass_rate"] == pytest.approx(1 / 3, abs=1e-3)
    assert table["t03"]["wrong_level"] == 1
    curves = view.learning_curves()
    assert [a for a, _ in curves["t01"]] == [1, 2, 3]
    assert [s for _, s in curves["t01"]] == pytest.approx(scores["t01"], abs=0.05)
    assert curves["t01"][0][1] < curves["t01"][1][1] < curves["t01"][2][1]  # learns: 15 -> 6 -> 0 mm
    problems = view.problem_cases()
    assert [p["case_id"] for p in problems] == ["LIB-B", "LIB-A"]  # B: 3 of 3 failed, one wrong level; A: 2 of 4
    assert problems[0]["failed"] == 3 and problems[0]["wrong_level"] == 1
    assert problems[1]["failure_rate"] == pytest.approx(0.5)
    offsets = view.distribution("offset_at_entry_mm")
    across = np.sqrt(1 - (15 / np.hypot(15, 70)) ** 2)  # share of an x shift across the expert line
    assert offsets.shape == (7,) and offsets.max() == pytest.approx(35.0, abs=0.01)  # the wrong level, 35 mm up
    assert np.sort(offsets)[-2] == pytest.approx(15.0 * across, abs=0.01)
    csv_lines = view.to_csv().splitlines()
    assert len(csv_lines) == 8 and csv_lines[1].split(",")[1] == "t01"


def test_figures_and_teacher_widget(db, tmp_path):
    pytest.importorskip("ipywidgets")
    from workbench.widgets._plots import png_size
    from workbench.widgets.teacher import TeacherView

    teacher = TeacherView(db, session="S1", export_dir=tmp_path)
    assert "7 attempts by 3 trainees in session S1" in teacher.status.value
    assert teacher.table.value.count("<tr>") == 4 and "t03" in teacher.table.value
    assert teacher.cases.value.index("LIB-B") < teacher.cases.value.index("LIB-A")
    assert png_size(teacher.distributions.value) == (930, 300)
    assert png_size(teacher.learning.value) == (930, 300)
    path = teacher.export_csv()
    assert path.parent == tmp_path and path.name.startswith("results-S1-") and path.suffix == ".csv"
    assert len(path.read_text().splitlines()) == 8
    assert f"download='{path.name}'" in teacher.link.value and "(7 attempts, one row each)" in teacher.link.value
    with open_store(db) as store:  # a new submission shows after Refresh
        store.submit("t04", "S1", _score("LIB-A", 0.0, TASK), "f" * 64)
    assert len(teacher.refresh().rows) == 8 and "t04" in teacher.table.value
