"""Registration tuning (workbench.tuning, ``workbench tune``): search space, studies on a LocalCluster,
SQLite and PostgreSQL storage, resuming (also after SIGKILL of the driver), and bad input (exit 2).

Cases are tiny (1 simulated case at 2 mm, 2 starts) so a study of a few trials takes seconds; the
figures are checked against the ideal-simulation accuracy of bone-surface ICP (an upper bound of
the accuracy on real data): median TRE < 1.5 mm and every target below 3 mm for the best trial.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy.exc import SQLAlchemyError

from workbench.registration.bench import METHODS
from workbench.tuning import CaseSet, TuningError, method_parameters, run_study, select_parameters
from workbench.tuning.cases import figures, objective_value
from workbench.tuning.space import settings_for

TINY = CaseSet(cases=1, starts=2, seed=3, spacing_mm=2.0)
TINY_ARGS = ["--cases", "1", "--starts", "2", "--seed", "3", "--case-spacing-mm", "2"]
PARAMS = ["icp.trim_fraction=0.5:1.0", "icp.restart_offset_mm=0:12"]
PARAM_ARGS = [arg for p in PARAMS for arg in ("--param", p)]


def _cli(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "workbench", "tune", *args], capture_output=True, text=True, timeout=timeout)


def _trials(storage: str, study: str):
    import optuna

    return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)


def _complete(trials):
    import optuna

    return [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]


# -- search space ---------------------------------------------------------------------------------


def test_every_method_has_a_search_space_from_its_dataclasses():
    for method in METHODS:
        space = method_parameters(method)
        assert space, method
        for p in space.values():
            assert p.kind == "bool" or p.low < p.high, p
    icp = method_parameters("bone-icp")
    assert (icp["icp.trim_fraction"].low, icp["icp.trim_fraction"].high) == (0.3, 1.0)  # declared range
    assert icp["icp.max_iterations"].kind == "int" and (icp["icp.max_iterations"].low, icp["icp.max_iterations"].high) == (15, 60)
    assert "mattes.seed" not in method_parameters("mattes-mi")
    # nested dataclasses are tunable too, and the values reach the pipeline's settings
    frames = method_parameters("lc2-frames")
    assert "lc2_frames.bone.shadow_ratio" in frames
    settings = settings_for("bone-icp+lc2-frames", {"lc2_frames.bone.shadow_ratio": 0.3, "icp.trim_fraction": 0.55})
    assert settings.lc2_frames.bone.shadow_ratio == 0.3 and settings.icp.trim_fraction == 0.55
    assert settings.refinements == ("bone-icp", "lc2-frames")


def test_selected_ranges_are_checked():
    chosen = select_parameters("bone-icp", ["icp.trim_fraction=0.5:0.9", "icp.point_to_plane"])
    assert (chosen["icp.trim_fraction"].low, chosen["icp.trim_fraction"].high) == (0.5, 0.9)
    assert set(chosen) == {"icp.trim_fraction", "icp.point_to_plane"}
    for bad in (["icp.nope"], ["icp.trim_fraction=0.9:0.5"], ["icp.max_iterations=10:10.5"], ["icp.trim_fraction=a:b"]):
        with pytest.raises(TuningError):
            select_parameters("bone-icp", bad)
    with pytest.raises(TuningError, match="unknown method"):
        method_parameters("icp-deluxe")


def test_objective_combines_the_benchmark_figures():
    evaluations = [
        {"case": 0, "start": 0, "errors_mm": [1.0, 2.0], "time_s": 1.0, "failed": False},
        {"case": 0, "start": 1, "errors_mm": [float("inf"), float("inf")], "time_s": 0.5, "failed": True},
    ]
    fig = figures(evaluations)
    assert fig["median_tre_mm"] is None  # 2 of 4 targets failed: the median is infinite
    assert fig["success_rate"] == 0.5 and fig["failures"] == 1 and fig["case_tre_mm"] == {"0": None}
    # capped at 50 mm: 50 + 0.5 x 50 + 20 x 0.5 + 0.1 x 0.75
    assert objective_value(fig) == pytest.approx(50 + 25 + 10 + 0.075)


# -- studies ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_cluster():
    """One LocalCluster (1 worker process, 1 thread) for the in-process studies: the worker keeps the simulated case."""
    from workbench.tuning.study import open_client

    client, cluster = open_client(1)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def sqlite_study(tmp_path_factory, local_cluster):
    folder = tmp_path_factory.mktemp("tune")
    storage = f"sqlite:///{folder / 'studies.db'}"
    seen = []
    report = run_study("bone-icp", TINY, 3, parameters=PARAMS, storage=storage, study_name="icp", client=local_cluster,
                       on_trial=lambda done, total, record: seen.append((done, total, record["value"])))
    assert len(local_cluster.scheduler_info()["workers"]) == 1
    return folder, storage, report, seen


def test_a_study_runs_three_trials_on_a_local_cluster_into_sqlite(sqlite_study):
    folder, storage, report, seen = sqlite_study
    assert report.n_trials == 3 and report.added == 3 and [s[:2] for s in seen] == [(1, 3), (2, 3), (3, 3)]
    trials = _complete(_trials(storage, "icp"))
    assert len(trials) == 3
    assert report.best_value == pytest.approx(min(t.value for t in trials))
    best = min(trials, key=lambda t: t.value)
    assert report.best_params == best.params and set(best.params) == {"icp.trim_fraction", "icp.restart_offset_mm"}
    assert 0.5 <= best.params["icp.trim_fraction"] <= 1.0 and 0.0 <= best.params["icp.restart_offset_mm"] <= 12.0
    # each trial's value is the objective of its own recorded figures
    for t in trials:
        assert t.value == pytest.approx(objective_value(t.user_attrs["figures"]), abs=1e-9)
        assert t.user_attrs["figures"]["evaluations"] == 2
    # ICP on ideal simulated cases (upper bound): sub-1.5 mm median, every target under 3 mm
    assert report.best_figures["median_tre_mm"] < 1.5 and report.best_figures["success_rate"] == 1.0
    assert report.best_figures["case_tre_mm"]["0"] < 1.5


def test_a_second_call_resumes_the_study_and_adds_trials(sqlite_study):
    folder, storage, report, _ = sqlite_study
    before = {t.number: t.value for t in _complete(_trials(storage, "icp"))}
    done = _cli("--method", "bone-icp", *TINY_ARGS, *PARAM_ARGS, "--trials", "5", "--storage", storage, "--study", "icp", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["n_trials"] == 5 and out["added_trials"] == 2 and out["study"] == "icp" and out["storage"] == storage
    assert out["best_value"] == pytest.approx(min(t.value for t in _complete(_trials(storage, "icp"))))
    after = {t.number: t.value for t in _complete(_trials(storage, "icp"))}
    assert {n: after[n] for n in before} == before  # the earlier trials are kept as they were
    # same target again: nothing to do, nothing changes
    again = _cli("--method", "bone-icp", *TINY_ARGS, *PARAM_ARGS, "--trials", "5", "--storage", storage, "--study", "icp", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["added_trials"] == 0


def test_a_killed_driver_loses_no_completed_trial(tmp_path):
    storage = f"sqlite:///{tmp_path / 'kill.db'}"
    args = ["--method", "bone-icp", *TINY_ARGS, *PARAM_ARGS, "--storage", storage, "--study", "k", "--json"]
    driver = subprocess.Popen([sys.executable, "-m", "workbench", "tune", *args, "--trials", "12"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        completed = []
        while time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.5)
            try:
                completed = _complete(_trials(storage, "k"))
            except (KeyError, SQLAlchemyError):  # the study or its tables may not exist yet
                continue
            if len(completed) >= 2:
                break
        assert driver.poll() is None, "the driver ended before it could be killed"
        assert len(completed) >= 2
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    kept = {t.number: t.value for t in _complete(_trials(storage, "k"))}
    assert len(kept) >= 2
    target = len(kept) + 2
    done = _cli(*args, "--trials", str(target))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["n_trials"] == target
    trials = _trials(storage, "k")
    after = {t.number: t.value for t in _complete(trials)}
    assert {n: after[n] for n in kept} == kept and len(after) == target
    # the trials the killed driver left running were marked failed, none is left running
    assert all(t.state.name in ("COMPLETE", "FAIL") for t in trials)


def _bad(tmp_path: Path, study_storage: str):
    return {
        "unknown method": ["--method", "icp-deluxe"],
        "unknown parameter": ["--method", "bone-icp", "--param", "icp.nope"],
        "empty range": ["--method", "bone-icp", "--param", "icp.trim_fraction=0.9:0.5"],
        "storage of another kind": ["--method", "bone-icp", "--storage", "mysql://root@127.0.0.1/studies"],
        "unreachable scheduler": ["--method", "bone-icp", "--scheduler", "tcp://127.0.0.1:9", "--storage", study_storage, "--study", "icp"],
        "other cases": ["--method", "bone-icp", "--cases", "2", "--case-spacing-mm", "2", "--storage", study_storage, "--study", "icp"],
        "other method": ["--method", "mattes-mi", *TINY_ARGS, "--storage", study_storage, "--study", "icp"],
    }


def test_bad_input_exits_2_with_one_line_and_overwrites_nothing(sqlite_study, tmp_path, capsys, monkeypatch):
    from workbench.cli import main

    folder, storage, _, _ = sqlite_study
    database = folder / "studies.db"
    monkeypatch.chdir(tmp_path)  # where the default storage would go
    for what, args in _bad(tmp_path, storage).items():
        before = database.read_bytes()
        start = time.monotonic()
        code = main(["tune", *args, "--trials", "1", "--json"])
        elapsed = time.monotonic() - start
        out, err = capsys.readouterr()
        assert code == 2, f"{what}: {code} {err}"
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("workbench tune: error: "), f"{what}: {err}"
        assert out == ""
        assert database.read_bytes() == before, f"{what} changed the study database"
        if what == "unreachable scheduler":
            assert "tcp://127.0.0.1:9" in lines[0] and elapsed < 10.0
    assert not (tmp_path / "tuning.db").exists()
    # the same through the console command: one line on stderr, exit 2
    done = _cli("--method", "icp-deluxe", "--json", timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "unknown method 'icp-deluxe'" in done.stderr


# -- PostgreSQL -------------------------------------------------------------------------------------


@pytest.fixture
def postgres_url():
    url = os.environ.get("WORKBENCH_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("WORKBENCH_REQUIRE_POSTGRES") == "1":
            pytest.fail("WORKBENCH_TEST_POSTGRES_URL is not set but WORKBENCH_REQUIRE_POSTGRES=1", pytrace=False)
        pytest.skip("no PostgreSQL server (set WORKBENCH_TEST_POSTGRES_URL; CI does)")
    return url


def test_a_study_in_postgresql_resumes(postgres_url, local_cluster):
    import optuna

    name = f"icp-{uuid.uuid4().hex[:8]}"
    try:
        first = run_study("bone-icp", TINY, 2, parameters=PARAMS, storage=postgres_url, study_name=name, client=local_cluster)
        assert first.n_trials == 2
        values = {t.number: t.value for t in _complete(_trials(postgres_url, name))}
        second = run_study("bone-icp", TINY, 3, parameters=PARAMS, storage=postgres_url, study_name=name, client=local_cluster)
        assert second.n_trials == 3 and second.added == 1
        after = {t.number: t.value for t in _complete(_trials(postgres_url, name))}
        assert {n: after[n] for n in values} == values
        assert second.best_value == pytest.approx(min(after.values()))
        assert second.best_figures["median_tre_mm"] < 1.5
        with pytest.raises(TuningError, match="other cases"):
            run_study("bone-icp", CaseSet(cases=2, spacing_mm=2.0), 3, parameters=PARAMS, storage=postgres_url, study_name=name)
    finally:
        try:
            optuna.delete_study(study_name=name, storage=postgres_url.replace("postgresql://", "postgresql+psycopg://", 1))
        except KeyError:
            pass


def test_the_plots_are_pngs_with_content(sqlite_study):
    import io

    import numpy as np
    from PIL import Image

    from workbench.tuning import plots
    from workbench.tuning.study import load_study

    _, storage, report, _ = sqlite_study
    study = load_study(storage, "icp")
    comparison = {"default": {"case_tre_mm": {"0": 1.2}}, "best": {"case_tre_mm": {"0": 0.4}}}
    for draw in (plots.history_png, plots.importance_png, plots.parallel_png, plots.case_tre_png):
        image = np.asarray(Image.open(io.BytesIO(draw(study))).convert("L"), dtype=float)
        assert image.shape[0] >= 360 and image.shape[1] >= 640, draw.__name__
        assert image.var() > 100, draw.__name__  # drawn, not blank
    held = np.asarray(Image.open(io.BytesIO(plots.held_out_png(comparison))).convert("L"), dtype=float)
    assert held.shape == (360, 640) and held.var() > 100
