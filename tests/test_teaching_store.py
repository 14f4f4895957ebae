"""The results store: SQLite and PostgreSQL through the packaged Alembic migrations, concurrent
writers, pseudonyms only (issue 19)."""

from __future__ import annotations

import json
import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import sqlalchemy as sa

from workbench.io.ground_truth import ExpertPlan
from workbench.planning.model import NeedleSpec, Trajectory
from workbench.teaching import TeachingError
from workbench.teaching.score import score_trajectory
from workbench.teaching.store import VERSION_TABLE, check_pseudonym, database_url, open_store, pseudonym

TASK = "L4 left exiting nerve root, dorsal aspect"
TARGETS = {
    TASK: np.array([20.0, 10.0, 0.0]),
    "L3 left exiting nerve root, dorsal aspect": np.array([20.0, 10.0, 35.0]),
    "L4 right exiting nerve root, dorsal aspect": np.array([-20.0, 10.0, 0.0]),
}
EXPERT = ExpertPlan(TASK, TARGETS[TASK], np.array([35.0, 80.0, 0.0]), 71.6, 90.0, "22G", 6.0, "paramedian in-plane")


def _score(entry_shift_mm: float = 0.0):
    trajectory = Trajectory(
        "L4 left", TASK, EXPERT.target_lps_mm, EXPERT.entry_lps_mm + [entry_shift_mm, 0.0, 0.0], NeedleSpec(90.0, "22G")
    )
    return score_trajectory(trajectory, TARGETS, EXPERT, case_id="LIB-001-01")


def _submit_many(db: str, trainee: str, count: int) -> list[int]:
    with open_store(db) as store:
        return [store.submit(trainee, "S1", _score(float(i % 5)), f"{i:064x}") for i in range(count)]


def test_sqlite_store_round_trip_and_csv(tmp_path):
    db = tmp_path / "results.sqlite"
    with open_store(db) as store:
        first = store.submit("t01", "S1", _score(0.0), "a" * 64)
        second = store.submit("t02", "S1", _score(15.0), "b" * 64)
        rows = store.results()
        csv_path = store.write_csv(tmp_path / "results.csv")
    assert (first, second) == (1, 2)
    assert [r["trainee"] for r in rows] == ["t01", "t02"]
    assert rows[0]["score"] == pytest.approx(100.0) and rows[0]["passed"] is True
    # 15 mm along x; the expert line runs along (-15, -70, 0): the part across it is 15 sin(angle)
    cos_angle = 15.0 / np.hypot(15.0, 70.0)
    assert rows[1]["offset_at_entry_mm"] == pytest.approx(15.0 * np.sqrt(1 - cos_angle**2), abs=0.01)
    assert rows[1]["score"] < 60.0 and rows[1]["passed"] is False
    assert rows[1]["metrics"]["z_scores"]["offset_at_entry_mm"] > 2.0
    lines = csv_path.read_text().splitlines()
    assert lines[0].startswith("id,trainee,session,case_id,kind,submitted_utc")
    assert len(lines) == 3 and ",t02,S1,LIB-001-01,plan," in lines[2]
    # reopening runs the migrations again: nothing to do, nothing lost
    with open_store(db) as store:
        assert len(store.results()) == 2
        assert store.results(session="other") == []
    engine = sa.create_engine(database_url(db))
    with engine.connect() as connection:
        assert connection.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").scalar() == "0002_rehearsal_attempts"
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        columns = {row[1] for row in connection.exec_driver_sql("PRAGMA table_info(attempts)")}
    engine.dispose()
    # no DICOM identifying attribute and no free-text author/plan column
    assert not columns & {"PatientName", "PatientID", "patient_name", "author", "plan_json", "title"}


@pytest.mark.parametrize("bad", ["John Smith", "john@example.org", "", "a" * 40, "John.Smith", "t 01"])
def test_trainee_must_be_a_pseudonym(tmp_path, bad):
    with pytest.raises(TeachingError, match="not a pseudonym"):
        check_pseudonym(bad)
    with open_store(tmp_path / "r.sqlite") as store, pytest.raises(TeachingError):
        store.submit(bad, "S1", _score(), "a" * 64)
        assert store.results() == []


def test_pseudonym_is_stable_and_accepted():
    a, b = pseudonym("Jane Doe", "secret"), pseudonym(" jane doe ", "secret")
    assert a == b and a.startswith("t-") and len(a) == 14 and check_pseudonym(a) == a
    assert pseudonym("Jane Doe", "other") != a


def test_attempt_kind_must_match_the_score(tmp_path):
    with open_store(tmp_path / "r.sqlite") as store:
        with pytest.raises(TeachingError, match="a plan score cannot be stored as a rehearsal attempt"):
            store.submit("t01", "S1", _score(), "a" * 64, kind="rehearsal")
        with pytest.raises(TeachingError, match="kind 'video' is not accepted"):
            store.submit("t01", "S1", _score(), "a" * 64, kind="video")


def test_sqlite_concurrent_processes_lose_nothing(tmp_path):
    db = str(tmp_path / "results.sqlite")  # first open happens inside the workers: the migration races too
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        ids = pool.starmap(_submit_many, [(db, f"t{n:02d}", 15) for n in range(4)])
    with ThreadPoolExecutor(4) as executor:
        ids += list(executor.map(lambda n: _submit_many(db, f"u{n:02d}", 10), range(4)))
    flat = [i for chunk in ids for i in chunk]
    with open_store(db) as store:
        rows = store.results()
    assert len(flat) == len(set(flat)) == 100
    assert len(rows) == 100 and sorted(r["id"] for r in rows) == sorted(flat)
    assert {r["trainee"] for r in rows} == {f"t{n:02d}" for n in range(4)} | {f"u{n:02d}" for n in range(4)}


def _first_open(db: str, barrier) -> tuple[str, int, int]:
    barrier.wait()  # every process opens the new file at the same moment
    with open_store(db) as store:
        attempt = store.submit("t01", "S1", _score(), "b" * 64)
        with store.engine.connect() as connection:
            mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
            busy_ms = connection.exec_driver_sql("PRAGMA busy_timeout").scalar()
    return str(mode), int(busy_ms), attempt


def test_sqlite_concurrent_first_opens_wait_instead_of_failing(tmp_path):
    """Six processes open one new SQLite file at once, three times over: the first switches it to
    WAL under the migration lock, the others wait (busy timeout on every connection); each stores
    its attempt (CI once failed here with "database is locked" while WAL was set on every connect)."""
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(6) as pool:
        for round_ in range(3):
            db = str(tmp_path / f"results-{round_}.sqlite")
            barrier = manager.Barrier(6)
            answers = pool.starmap(_first_open, [(db, barrier)] * 6)
            assert [a[:2] for a in answers] == [("wal", 30_000)] * 6
            assert sorted(a[2] for a in answers) == [1, 2, 3, 4, 5, 6]
            with open_store(db) as store:
                assert len(store.results()) == 6


def test_unsupported_or_unreachable_database(tmp_path):
    with pytest.raises(TeachingError, match="unsupported"):
        open_store("mysql://x@localhost/db")
    with pytest.raises(TeachingError, match="does not exist"):
        open_store(tmp_path / "missing" / "r.sqlite")


def test_teaching_app_results_database_and_session(tmp_path, capsys):
    """``workbench teach --library``: the database is created (or migrated) before the app starts,
    a wrong one fails then; --db/--session need --library."""
    import re

    from workbench.cli import main
    from workbench.teach import teaching_results

    db, session = teaching_results(tmp_path, None, None)
    assert db == str(tmp_path / "results.sqlite") and (tmp_path / "results.sqlite").is_file()
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", session)
    with open_store(db) as store:
        assert store.results() == []
    assert teaching_results(tmp_path, str(tmp_path / "other.sqlite"), "am-1", create=False) == (str(tmp_path / "other.sqlite"), "am-1")
    assert not (tmp_path / "other.sqlite").exists()  # --dry-run creates nothing
    with pytest.raises(TeachingError, match="session 'a b'"):
        teaching_results(tmp_path, None, "a b")
    with pytest.raises(TeachingError, match="cannot open the results database"):
        teaching_results(tmp_path, "postgresql://nobody@127.0.0.1:1/none", "S1")
    assert main(["teach", "--db", str(tmp_path / "x.sqlite"), "--dry-run"]) == 2
    assert "--db and --session need --library" in capsys.readouterr().err


def test_postgresql_store_with_concurrent_writers(postgres_schema_url):
    barrier = threading.Barrier(6)

    def worker(n: int) -> list[int]:
        barrier.wait()  # every worker opens (and migrates) at the same moment
        return _submit_many(postgres_schema_url, f"t{n:02d}", 12)

    with ThreadPoolExecutor(6) as executor:
        chunks = list(executor.map(worker, range(6)))
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        chunks += pool.starmap(_submit_many, [(postgres_schema_url, f"p{n:02d}", 10) for n in range(2)])
    flat = [i for chunk in chunks for i in chunk]
    with open_store(postgres_schema_url) as store:
        rows = store.results()
        csv_text = store.results_csv()
    assert len(flat) == len(set(flat)) == 92 and len(rows) == 92
    scores = sorted({round(r["score"], 1) for r in rows})
    assert scores[-1] == pytest.approx(100.0) and scores[0] < 100.0
    assert csv_text.count("\n") == 93
    engine = sa.create_engine(postgres_schema_url)
    with engine.connect() as connection:
        assert connection.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").scalar() == "0002_rehearsal_attempts"
    engine.dispose()


def test_database_urls(tmp_path):
    assert database_url(tmp_path / "r.sqlite") == f"sqlite:///{(tmp_path / 'r.sqlite').resolve()}"
    assert database_url("postgresql://u@h:5/db") == "postgresql+psycopg://u@h:5/db"
    assert database_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert database_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"


def test_results_cli_and_one_line_errors(tmp_path, capsys):
    from workbench.cli import main

    db = tmp_path / "results.sqlite"
    with open_store(db) as store:
        store.submit("t01", "S1", _score(0.0), "a" * 64)
        store.submit("t02", "S2", _score(15.0), "b" * 64)
    assert main(["results", "--db", str(db), "--session", "S2", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["trainee"] == "t02" and row["passed"] is False and row["offset_at_entry_mm"] == pytest.approx(14.67, abs=0.01)
    assert main(["results", "--db", "mysql://x@h/db"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["library", "build", str(tmp_path / "lib"), "--cases", "0"]) == 2
    assert "--cases must be an integer 1..100" in capsys.readouterr().err
