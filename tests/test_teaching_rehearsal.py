"""Rehearsal attempts in the teaching results (issue 19 with issue 18): scored from metrics.json
against expert-anchored thresholds, stored beside plans (SQLite and PostgreSQL, migration 0002),
shown in the class view. Teaching reads only the JSON; the tests use the real simulator to make it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from workbench.cli import main
from workbench.teaching import TeachingError
from workbench.teaching.classview import ClassView
from workbench.teaching.score import PASS_Z, rehearsal_expert_records, score_rehearsal
from workbench.teaching.store import PLAN_GEOMETRY_COLUMNS, _engine, database_url, migrate, open_store

CASE = "LIB-001-01"
TASK = "L4 left exiting nerve root, dorsal aspect"  # the library's task of LIB-001-01 (seed 1)


@pytest.fixture(scope="module")
def attempts(teaching_library, tmp_path_factory):
    """metrics.json of two scripted rehearsal attempts of the case's task: along the expert path,
    and with the entry 15 mm to the patient's left (aimed at the same target)."""
    from workbench.rehearsal.attempt import scripted_attempt
    from workbench.rehearsal.scene import load_scene
    from workbench.teaching.library import read_library

    assert next(e.task for e in read_library(teaching_library) if e.case_id == CASE) == TASK
    scene = load_scene(teaching_library / CASE)
    folder = tmp_path_factory.mktemp("rehearsal")
    paths = {}
    for name, offset_mm in (("expert", 0.0), ("moved", 15.0)):
        result = scripted_attempt(scene, TASK, entry_offset_mm=offset_mm)
        paths[name] = result.write(folder / name)["metrics"]
    return paths


def _metrics(path) -> dict:
    return json.loads(open(path, encoding="utf-8").read())


def test_expert_rehearsal_passes_and_a_15_mm_entry_scores_lower(teaching_library, attempts, tmp_path, capsys):
    db = tmp_path / "results.sqlite"
    out = {}
    for trainee, name in (("t01", "expert"), ("t02", "moved")):
        args = ["submit", "--db", str(db), "--trainee", trainee, "--session", "R1", "--case", str(teaching_library / CASE),
                "--attempt", str(attempts[name]), "--json"]
        assert main(args) == 0
        out[name] = json.loads(capsys.readouterr().out)
    expert, moved = out["expert"], out["moved"]
    assert expert["attempt_kind"] == "rehearsal" and expert["passed"] and expert["score"] >= 90.0
    assert expert["tip_to_target_mm"] == pytest.approx(0.0, abs=1.0)
    assert moved["frechet_to_expert_mm"] == pytest.approx(15.0, abs=1.0)  # the entry moved 15 mm
    assert moved["z_scores"]["frechet_to_expert_mm"] > PASS_Z and moved["sub_scores"]["frechet_to_expert_mm"] == 0.0
    assert not moved["passed"] and moved["score"] <= expert["score"] - 20.0
    with open_store(db) as store:
        rows = store.results("R1")
    assert [(r["trainee"], r["kind"], r["case_id"]) for r in rows] == [("t01", "rehearsal", CASE), ("t02", "rehearsal", CASE)]
    assert all(r[c] is None for r in rows for c in PLAN_GEOMETRY_COLUMNS)
    assert rows[1]["score"] == pytest.approx(moved["score"], abs=1e-9)
    assert main(["results", "--db", str(db)]) == 0 and capsys.readouterr().out.count(" rehearsal ") == 2


def test_expert_records_of_the_rehearsal_metrics():
    records = rehearsal_expert_records()
    tip, frechet = records["tip_to_target_mm"], records["frechet_to_expert_mm"]
    assert tip.mean() == pytest.approx(1.60, abs=0.1)  # Maxwell, 1 mm per axis: mean 2 sqrt(2/pi)
    assert np.all(frechet >= tip) and frechet.mean() == pytest.approx(2.9, abs=0.3)  # >= the Rayleigh mean 2.51 of the entry
    assert 0.0 <= records["tip_visible_fraction"].min() and records["tip_visible_fraction"].max() <= 1.0


def test_dangers_wrong_level_and_bad_input(attempts):
    base = _metrics(attempts["expert"])
    good = score_rehearsal(base, case_id=CASE, task=TASK)
    assert good.passed and good.safety_status == "ok"
    dura = score_rehearsal({**base, "events": [{"type": "dura_puncture", "structure": "DURA", "time_s": 30.0}]},
                           case_id=CASE, task=TASK)
    assert dura.safety_status == "blocked" and not dura.passed and dura.score <= 30.0
    nerve = score_rehearsal({**base, "events": [{"type": "nerve_contact", "structure": "NERVE_ROOT", "time_s": 30.0}]},
                            case_id=CASE, task=TASK)
    assert nerve.safety_status == "warning" and nerve.score == pytest.approx(good.score - 10.0, abs=1e-6)
    wrong = score_rehearsal({**base, "target": "L3 left exiting nerve root, dorsal aspect"}, case_id=CASE, task=TASK)
    assert wrong.wrong_level and not wrong.passed and wrong.score <= 20.0
    epidural = score_rehearsal({**base, "injection_compartment": "epidural"}, case_id=CASE, task=TASK)
    assert not epidural.passed and any("epidural" in f for f in epidural.findings)
    blind = score_rehearsal({**base, "tip_visible_fraction": None}, case_id=CASE, task=TASK)
    assert blind.sub_scores["tip_visible_fraction"] == 0.0 and not blind.passed
    assert blind.score == pytest.approx(good.score - 15.0, abs=1e-6)  # weight 0.15 of a sub-score of 100
    with pytest.raises(TeachingError, match="missing frechet_to_expert_mm"):
        score_rehearsal({k: v for k, v in base.items() if k != "frechet_to_expert_mm"}, case_id=CASE, task=TASK)
    with pytest.raises(TeachingError, match="must be a finite number"):
        score_rehearsal({**base, "time_s": "slow"}, case_id=CASE, task=TASK)


def _plan_score():
    from tests.test_teaching_store import _score

    return _score(0.0)


def _upgrade_with_both_kinds(db: str, attempts) -> list[dict]:
    """A database at revision 0001 holding one plan is upgraded by open_store (0002) and takes a rehearsal."""
    engine = _engine(database_url(db))
    migrate(engine, "0001_attempts")
    engine.dispose()
    with open_store(db) as store:  # upgrades to head
        store.submit("t01", "R2", _plan_score(), "a" * 64)
        store.submit("t01", "R2", score_rehearsal(_metrics(attempts["moved"]), case_id=CASE, task=TASK), "b" * 64)
        store.submit("t02", "R2", score_rehearsal(_metrics(attempts["expert"]), case_id=CASE, task=TASK), "c" * 64)
        return store.results("R2")


def _check_class_view(rows) -> None:
    view = ClassView(tuple(rows))
    table = {r["trainee"]: r for r in view.class_table()}
    assert (table["t01"]["attempts"], table["t01"]["rehearsals"]) == (2, 1) and table["t01"]["median_offset_mm"] is not None
    assert (table["t02"]["attempts"], table["t02"]["rehearsals"]) == (1, 1) and table["t02"]["median_offset_mm"] is None
    assert view.distribution("offset_at_entry_mm").shape == (1,)  # plans only
    assert np.sort(view.distribution("tip_to_target_mm")) == pytest.approx([0.0, 0.0], abs=1.0)
    figure = view.figure("distributions")
    assert len(figure.axes) == 5  # score, angle, entry, target offsets and the rehearsal's tip to target
    assert len(view.to_csv().splitlines()) == 4


def test_sqlite_upgrade_keeps_plans_and_stores_rehearsals(attempts, tmp_path):
    rows = _upgrade_with_both_kinds(str(tmp_path / "old.sqlite"), attempts)
    assert [r["kind"] for r in rows] == ["plan", "rehearsal", "rehearsal"]
    _check_class_view(rows)


def test_postgresql_upgrade_keeps_plans_and_stores_rehearsals(attempts, postgres_schema_url):
    rows = _upgrade_with_both_kinds(postgres_schema_url, attempts)
    assert [r["kind"] for r in rows] == ["plan", "rehearsal", "rehearsal"]
    _check_class_view(rows)
