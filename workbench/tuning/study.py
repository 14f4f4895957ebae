"""Optuna studies of a registration pipeline, with each trial's cases evaluated as Dask tasks.

:func:`run_study` asks the study for trials on the driver (TPE with ``constant_liar=True``, so
trials running in parallel are spread out), submits one Dask task per (case, start) of the study's
:class:`~workbench.tuning.cases.CaseSet` for each, and tells the study the trial's value as soon as
its tasks are done (the trial's figures go into its user attribute ``figures``). Several trials are in flight
at once so that every worker stays busy.

Storage (:func:`open_storage`): an SQLite file (``sqlite:///path.db``, the default, nothing to set
up) or a PostgreSQL URL (``postgresql://`` or ``postgresql+psycopg://``) shared by drivers on many
machines. Each told trial is committed at once, so a killed driver loses no completed trial; a
rerun with the same study name resumes (``--trials`` is the number of completed trials the study
should reach) and first marks as failed the trials a dead driver on this machine left running.

Cluster (:func:`open_client`): a ``distributed.LocalCluster`` of ``workers`` single-threaded worker
processes, or an existing scheduler by address (``tcp://HOST:PORT``; e.g. one started by
``dask-jobqueue``'s ``SLURMCluster``, see docs/tuning.md). Each task pins SimpleITK and numba to
one thread.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from workbench.tuning.cases import CaseSet, evaluate_start, figures, objective_value, simulate_case
from workbench.tuning.space import Parameter, TuningError, select_parameters

__all__ = ["StudyReport", "DEFAULT_STORAGE", "open_client", "open_storage", "run_study", "study_summary", "load_study"]

#: Default storage: an SQLite file in the working folder.
DEFAULT_STORAGE = "sqlite:///tuning.db"
#: Seconds to wait for an existing scheduler before giving up.
CONNECT_TIMEOUT_S = 5.0
_CASE_ATTR = "workbench_case_set"
_METHOD_ATTR = "workbench_method"


def check_storage_url(url: str) -> str:
    """``"sqlite"`` or ``"postgresql"`` for a storage URL :func:`open_storage` accepts (nothing is opened).

    Raises
    ------
    TuningError
        Any other kind of URL, an SQLite file in a folder that does not exist or that is not SQLite.
    """
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if not path or path == ":memory:":
            raise TuningError(f"storage {url!r}: give an SQLite file (sqlite:///path/to/studies.db); in-memory cannot resume")
        folder = Path(path).expanduser().resolve().parent
        if not folder.is_dir():
            raise TuningError(f"storage {url!r}: folder {folder} does not exist")
        if Path(path).exists() and not _is_sqlite(Path(path)):
            raise TuningError(f"storage {url!r}: {path} is not an SQLite database")
        return "sqlite"
    if url.split("://")[0] in ("postgresql", "postgresql+psycopg", "postgresql+psycopg2"):
        return "postgresql"
    raise TuningError(
        f"storage {url!r} is neither an SQLite file (sqlite:///path.db) nor PostgreSQL (postgresql://user@host/db)"
    )


def open_storage(url: str):
    """An optuna RDBStorage for an SQLite or PostgreSQL URL.

    Raises
    ------
    TuningError
        Any other kind of URL (:func:`check_storage_url`), an unreachable database.
    """
    import optuna
    import sqlalchemy

    if check_storage_url(url) == "sqlite":
        # the driver is the only writer; a longer timeout rides out a reader in the notebook
        engine_kwargs = {"connect_args": {"timeout": 30}}
    else:
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://"):]
        engine_kwargs = {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as exc:
        raise TuningError(f"storage {_redacted(url)}: cannot open ({str(exc).splitlines()[0]})") from None


def _is_sqlite(path: Path) -> bool:
    if path.stat().st_size == 0:
        return True
    with open(path, "rb") as fh:
        return fh.read(16) == b"SQLite format 3\x00"


def _redacted(url: str) -> str:
    """The URL without a password."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest and ":" in rest.split("@")[0]:
        user = rest.split("@")[0].split(":")[0]
        rest = f"{user}:***@" + rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"


def probe_scheduler(scheduler: str) -> None:
    """Raise TuningError unless ``scheduler`` is ``tcp://HOST:PORT`` and accepts a TCP connection within the timeout."""
    if not scheduler.startswith(("tcp://", "tls://")) or ":" not in scheduler.split("://", 1)[1]:
        raise TuningError(f"scheduler address {scheduler!r} is not tcp://HOST:PORT")
    host, _, port = scheduler.split("://", 1)[1].rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError) as exc:
        raise TuningError(f"no Dask scheduler answers at {scheduler} ({type(exc).__name__}: {exc})") from None


def open_client(workers: int = 1, scheduler: str | None = None):
    """A Dask client: on a new LocalCluster of ``workers`` single-threaded processes, or on ``scheduler``.

    Returns
    -------
    (distributed.Client, cluster or None)
        Close both when done (the cluster is None for an existing scheduler).

    Raises
    ------
    TuningError
        An address that is not ``tcp://HOST:PORT`` or a scheduler that does not answer within
        :data:`CONNECT_TIMEOUT_S`.
    """
    import logging

    import dask
    from distributed import Client, LocalCluster

    if scheduler is not None:
        probe_scheduler(scheduler)
        try:
            with dask.config.set({"distributed.comm.timeouts.connect": f"{CONNECT_TIMEOUT_S}s"}):
                return Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s"), None
        except (OSError, TimeoutError) as exc:
            raise TuningError(f"no Dask scheduler answers at {scheduler} within {CONNECT_TIMEOUT_S:g} s ({type(exc).__name__})") from None
        except (MemoryError, ValueError, TypeError, RuntimeError, EOFError) as exc:  # an answer not in Dask's protocol
            raise TuningError(f"{scheduler} is not a Dask scheduler ({type(exc).__name__})") from None
    if workers < 1:
        raise TuningError(f"need at least 1 worker, got {workers}")
    environ = {"OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1, "OPENBLAS_NUM_THREADS": 1, "NUMBA_NUM_THREADS": 1,
               "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": 1}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ, "distributed.worker.daemon": False}):
        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
            silence_logs=logging.ERROR, host="127.0.0.1",
        )
    return Client(cluster), cluster


@dataclass
class StudyReport:
    """What :func:`run_study` did (``--json`` prints :meth:`as_dict`)."""

    study: str
    storage: str
    method: str
    n_trials: int
    best_params: dict
    best_value: float | None
    best_figures: dict
    added: int
    case_set: dict
    elapsed_s: float
    task_s: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "study": self.study, "storage": _redacted(self.storage), "method": self.method, "n_trials": self.n_trials,
            "best_params": self.best_params, "best_value": self.best_value, "best_figures": self.best_figures,
            "added_trials": self.added, "case_set": self.case_set, "elapsed_s": round(self.elapsed_s, 2),
            "objective": "median TRE + 0.5 p90 TRE + 20 mm x (1 - success rate) + 0.1 mm/s x median time (mm, minimised)",
        }


def _driver_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_existing(storage, name: str, method: str, case_set: CaseSet) -> bool:
    """Whether study ``name`` exists; raises TuningError when it tunes another method or other cases."""
    import optuna

    existing = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    if name not in existing:
        return False
    attrs = existing[name].user_attrs
    stored = attrs.get(_CASE_ATTR)
    if attrs.get(_METHOD_ATTR) != method:
        raise TuningError(f"study {name!r} tunes method {attrs.get(_METHOD_ATTR)!r}, not {method!r}; use another --study")
    if stored != case_set.as_dict():
        raise TuningError(f"study {name!r} was created for other cases ({json.dumps(stored)}); use another --study")
    return True


def _create_or_load(storage, name: str, method: str, case_set: CaseSet, sampler_seed: int):
    """The study ``name``: created with its method and case set, or loaded (checked by :func:`_check_existing`)."""
    import optuna

    sampler = optuna.samplers.TPESampler(constant_liar=True, seed=sampler_seed, n_startup_trials=4)
    if _check_existing(storage, name, method, case_set):
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    else:
        study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, direction="minimize")
        study.set_user_attr(_METHOD_ATTR, method)
        study.set_user_attr(_CASE_ATTR, case_set.as_dict())
    return study


def _fail_abandoned(study) -> int:
    """Mark failed the RUNNING trials whose driver (this host) is gone; returns how many."""
    import optuna

    host = socket.gethostname()
    count = 0
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        driver = trial.user_attrs.get("driver", "")
        driver_host, _, pid = driver.rpartition(":")
        if driver_host == host and pid.isdigit() and not _alive(int(pid)):
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            count += 1
    return count


def load_study(storage_url: str, name: str):
    """Load an existing study (for plots and reports)."""
    import optuna

    storage = open_storage(storage_url)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise TuningError(f"no study {name!r} in {_redacted(storage_url)}") from None


def run_study(
    method: str,
    case_set: CaseSet,
    trials: int,
    *,
    parameters=None,
    storage: str = DEFAULT_STORAGE,
    study_name: str | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    client=None,
    seed: int = 0,
    on_trial: Callable[[int, int, dict], None] | None = None,
    stats: dict | None = None,
) -> StudyReport:
    """Run (or resume) a study until it holds ``trials`` completed trials.

    Parameters
    ----------
    method : str
        Benchmark method (``workbench.registration.bench.METHODS``).
    case_set : CaseSet
        The cases and starts every trial is scored on (stored with the study).
    trials : int
        Completed trials the study should hold at the end (a resumed study runs only the rest).
    parameters : iterable, optional
        Which parameters to tune and over which ranges (``"NAME"`` or ``"NAME=LOW:HIGH"``,
        :func:`~workbench.tuning.space.select_parameters`); default: all of the method's.
    storage : str
        SQLite or PostgreSQL URL.
    study_name : str, optional
        Default: the method's name.
    workers, scheduler, client
        A LocalCluster of ``workers`` processes, an existing ``scheduler`` address, or a
        ``distributed.Client`` to use (left open).
    seed : int
        Seeds the sampler.
    on_trial : callable, optional
        ``on_trial(completed, trials, record)`` after each told trial (``record``: number, value,
        params, figures).

    Returns
    -------
    StudyReport

    Raises
    ------
    TuningError
        Bad method, parameter, range, storage, scheduler; a study of another method or other cases.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if trials < 1:
        raise TuningError(f"--trials must be at least 1, got {trials}")
    if scheduler is not None and client is None:
        probe_scheduler(scheduler)
    space: dict[str, Parameter] = select_parameters(method, parameters)
    name = study_name or method
    check_storage_url(storage)
    start_s = time.perf_counter()
    stats = {} if stats is None else stats
    stats.update(task_s=[], cpu_s=[], driver_s=[], cases_ready_s=0.0, trials_s=0.0)
    task_s = stats["task_s"]
    added = 0
    own, cluster = client is None, None
    if own and scheduler is not None:
        client, cluster = open_client(workers, scheduler)  # an unreachable scheduler fails before storage is touched
    try:
        store = open_storage(storage)
        _check_existing(store, name, method, case_set)
        study = _create_or_load(store, name, method, case_set, seed)
        _fail_abandoned(study)
        if _completed(study) < trials:
            if client is None:
                client, cluster = open_client(workers, None)
            added = _optimise(study, method, case_set, space, trials, client, on_trial, stats)
    finally:
        if own and client is not None:
            client.close()
            if cluster is not None:
                cluster.close()
    return _report(study, name, storage, method, case_set, added, time.perf_counter() - start_s, task_s)


def _completed(study) -> int:
    import optuna

    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def _optimise(study, method, case_set: CaseSet, space, trials, client, on_trial, stats) -> int:
    """Ask/tell loop with Dask tasks; returns the number of trials completed here."""
    import optuna
    from distributed import as_completed, wait

    description = case_set.as_dict()
    tasks = case_set.tasks()
    n_workers = max(1, sum(info.get("nthreads", 1) for info in client.scheduler_info()["workers"].values()))
    in_flight_trials = max(1, math.ceil(n_workers / len(tasks))) + 1
    begin_s = time.perf_counter()
    case_futures = [client.submit(simulate_case, description, i, pure=False) for i in range(case_set.cases)]
    wait(case_futures)
    stats["cases_ready_s"] = time.perf_counter() - begin_s
    distributions = {name: p.distribution() for name, p in space.items()}
    pending: dict = {}  # trial number -> [trial, results list, outstanding count]
    futures = as_completed()
    owner: dict = {}  # future key -> trial number

    def launch() -> None:
        tick = time.perf_counter()
        trial = study.ask(distributions)
        trial.set_user_attr("driver", _driver_id())
        values = dict(trial.params)
        pending[trial.number] = [trial, [], len(tasks)]
        for case_index, start_index in tasks:
            future = client.submit(
                evaluate_start, method, values, description, case_index, start_index, case_futures[case_index], pure=False
            )
            owner[future.key] = trial.number
            futures.add(future)
        stats["driver_s"].append(time.perf_counter() - tick)

    def wanted() -> int:
        return trials - _completed(study) - len(pending)

    def launch_more() -> None:
        while wanted() > 0 and len(pending) < in_flight_trials:
            launch()

    try:
        launch_more()
        added = _drain(study, futures, owner, pending, trials, launch_more, on_trial, stats)
        stats["trials_s"] = time.perf_counter() - begin_s - stats["cases_ready_s"]
    except BaseException:
        # a task raised (not a registration failure) or the driver was interrupted: the trials in
        # flight are marked failed, the completed ones stay
        for trial, _results, _left in pending.values():
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise
    finally:
        for future in case_futures:
            future.release()
    return added


def _drain(study, futures, owner, pending, trials, launch_more, on_trial, stats) -> int:
    import optuna

    added = 0
    for future in futures:
        number = owner.pop(future.key)
        entry = pending[number]
        result = future.result()
        stats["task_s"].append(result["task_s"])
        stats["cpu_s"].append(result.get("cpu_s", 0.0))
        entry[1].append(result)
        entry[2] -= 1
        future.release()
        if entry[2]:
            continue
        trial, results, _ = pending.pop(number)
        fig = figures(sorted(results, key=lambda r: (r["case"], r["start"])))
        value = objective_value(fig)
        tick = time.perf_counter()
        trial.set_user_attr("figures", fig)  # one write: the driver's time per trial caps the rate
        study.tell(trial, value, state=optuna.trial.TrialState.COMPLETE)
        stats["driver_s"].append(time.perf_counter() - tick)
        added += 1
        if on_trial is not None:
            on_trial(_completed(study), trials, {"number": number, "value": value, "params": trial.params, "figures": fig})
        launch_more()
    return added


def study_summary(study) -> tuple[dict, float | None, dict]:
    """(best params, best value, best trial's figures) of a study; empty when none completed."""
    try:
        best = study.best_trial
    except ValueError:
        return {}, None, {}
    return dict(best.params), float(best.value), dict(best.user_attrs.get("figures", {}))


def _report(study, name, storage, method, case_set, added, elapsed_s, task_s) -> StudyReport:
    params, value, attrs = study_summary(study)
    return StudyReport(
        study=name, storage=storage, method=method, n_trials=_completed(study), best_params=params, best_value=value,
        best_figures=attrs, added=added, case_set=case_set.as_dict(), elapsed_s=elapsed_s, task_s=task_s,
    )


def evaluate_settings(method: str, settings: dict[str, dict], case_set: CaseSet, client) -> dict[str, dict]:
    """Figures (:func:`~workbench.tuning.cases.figures`) of named parameter settings on ``case_set``, as Dask tasks.

    Parameters
    ----------
    settings : dict of str to dict
        Label -> parameter values (``{}``: the method's defaults).
    client : distributed.Client
    """
    description = case_set.as_dict()
    case_futures = [client.submit(simulate_case, description, i, pure=False) for i in range(case_set.cases)]
    submitted = {
        label: [
            client.submit(evaluate_start, method, values, description, c, s, case_futures[c], pure=False)
            for c, s in case_set.tasks()
        ]
        for label, values in settings.items()
    }
    return {label: figures(client.gather(futures)) for label, futures in submitted.items()}


def compare_held_out(method: str, best_params: dict, case_set: CaseSet, cases: int | None = None, *,
                     workers: int = 1, scheduler: str | None = None, client=None) -> dict:
    """The best setting vs the defaults on held-out cases (never the tuned ones: :meth:`CaseSet.held_out`).

    Returns
    -------
    dict
        ``{"held_out": case set dict, "default": figures, "best": figures, "best_params": ...}``;
        figures as :func:`~workbench.tuning.cases.figures`, with ``"objective"`` added.
    """
    held_out = case_set.held_out(cases)
    tuned_seeds = {spec["seed"] for spec in case_set.case_specs()}
    assert not tuned_seeds & {spec["seed"] for spec in held_out.case_specs()}
    own = client is None
    if own:
        client, cluster = open_client(workers, scheduler)
    try:
        result = evaluate_settings(method, {"default": {}, "best": dict(best_params)}, held_out, client)
    finally:
        if own:
            client.close()
            if cluster is not None:
                cluster.close()
    for fig in result.values():
        fig["objective"] = objective_value(fig)
    return {"held_out": held_out.as_dict(), "best_params": dict(best_params), **result}
