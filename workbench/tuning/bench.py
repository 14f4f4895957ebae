"""``workbench bench tune``: how registration tuning scales with Dask workers.

Measured, on simulated cases (``spacing_mm`` 2 mm by default, so a run takes minutes):

1. **Plain loop** (no Dask, no Optuna): the trial tasks of ``trials`` fixed settings run one after
   another in this process; ``t_task`` = mean time of one (case, start) evaluation.
2. **Dask path**, 1 local worker: the same settings and tasks submitted to a LocalCluster and
   gathered; the per-task overhead is ``(Dask wall time - sum of the tasks' own times) / tasks``
   (scheduling, serialisation, transfer of the result: what a plain loop does not do), reported
   absolute and as a fraction of the task time (goal <= 5 %); ``versus_loop_per_task_s`` compares
   with the loop's wall time instead (it also holds any change in machine load between the runs).
3. **Studies** (ask/tell on the driver, SQLite storage in a temporary folder) with each of
   ``worker_counts`` local workers: trials per hour over the trials after the cases were
   simulated, and parallel efficiency = rate(W) / (W x rate(1)).

Model of a study on W workers (documented in docs/tuning.md):
``trial time = t_task x tasks_per_trial / W + overhead_per_task x tasks_per_trial / W``, and the
driver (ask + tell, serial) caps the rate at ``1 / t_driver`` trials per second::

    trials_per_hour(W) = 3600 / max(tasks x (t_task + overhead) / W, t_driver)

extrapolated to 64 workers. It assumes the tasks of a trial are independent, that there are at
least W tasks in flight (the driver keeps ceil(W / tasks) + 1 trials running) and that every
worker holds the cases (simulated once per worker, not counted). Before each timing every process
runs one untimed evaluation (imports, numba JIT compilation).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["run_tuning_benchmark", "throughput_model"]

#: Goal for the Dask path's overhead per task, as a fraction of the task's time.
OVERHEAD_GOAL = 0.05
#: Goal for the parallel efficiency at 2 workers on 2 cores.
EFFICIENCY_GOAL = 0.80


def throughput_model(task_s: float, overhead_s: float, tasks_per_trial: int, workers: int, driver_s: float) -> float:
    """Trials per hour on ``workers`` workers (see the module docstring)."""
    trial_s = tasks_per_trial * (task_s + overhead_s) / workers
    return 3600.0 / max(trial_s, driver_s, 1e-9)


def _settings(method: str, parameters, trials: int, seed: int) -> list[dict]:
    """``trials`` fixed parameter settings drawn uniformly from the selected ranges."""
    from workbench.tuning.space import select_parameters

    rng = np.random.default_rng([seed, 22])
    space = select_parameters(method, parameters)
    out = []
    for _ in range(trials):
        values = {}
        for name, p in space.items():
            if p.kind == "bool":
                values[name] = bool(rng.integers(2))
            elif p.kind == "int":
                values[name] = int(rng.integers(int(p.low), int(p.high) + 1))
            else:
                values[name] = float(rng.uniform(p.low, p.high))
        out.append(values)
    return out


def _warm(client, method: str, description: dict, cases: int) -> list:
    """Simulate the cases on every worker and run one evaluation there (imports, JIT): not timed.

    Returns the futures of the cases on the first worker.
    """
    from workbench.tuning.cases import evaluate_start, simulate_case

    addresses = list(client.scheduler_info()["workers"])
    first = []
    for index, address in enumerate(addresses):
        futures = [client.submit(simulate_case, description, i, pure=False, workers=[address]) for i in range(cases)]
        client.gather(client.submit(evaluate_start, method, {}, description, 0, 0, futures[0], pure=False, workers=[address]))
        if index == 0:
            first = futures
    return first


def _study_rate(method, case_set, trials, parameters, workers, seed, storage, say) -> dict:
    """One study of ``trials`` trials on ``workers`` warmed-up local workers: its rate and timings."""
    from workbench.tuning.study import open_client, run_study

    stats: dict = {}
    say(f"study with {workers} worker(s): {trials} trials")
    client, cluster = open_client(workers)
    try:
        _warm(client, method, case_set.as_dict(), case_set.cases)
        report = run_study(method, case_set, trials, parameters=parameters, storage=storage, client=client,
                           seed=seed, stats=stats)
    finally:
        client.close()
        cluster.close()
    rate = 3600.0 * report.n_trials / stats["trials_s"]
    say(f"  {rate:.0f} trials/h")
    return {
        "workers": workers, "trials": report.n_trials, "trials_s": round(stats["trials_s"], 2),
        "cases_ready_s": round(stats["cases_ready_s"], 2), "trials_per_hour": round(rate, 1),
        "mean_task_s": round(float(np.mean(stats["task_s"])), 4),
        # CPU time of a task: unchanged between worker counts when a slower wall time comes from
        # other processes competing for the cores
        "mean_task_cpu_s": round(float(np.mean(stats["cpu_s"])), 4),
        "driver_s_per_trial": round(float(np.sum(stats["driver_s"])) / max(1, report.n_trials), 4),
    }


def run_tuning_benchmark(
    method: str = "bone-icp",
    cases: int = 2,
    starts: int = 2,
    trials: int = 6,
    worker_counts=(1, 2),
    spacing_mm: float = 2.0,
    parameters=None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    repeats: int = 1,
) -> dict:
    """Measure the plain loop, the Dask overhead and study throughput; fit the model (module docstring).

    Parameters
    ----------
    parameters : iterable of str, optional
        Parameters to tune (default for ``"bone-icp"``: ``icp.trim_fraction`` over 0.5..1.0,
        whose run time barely depends on the value, so the rates compare like with like;
        other methods: all their parameters).
    repeats : int
        Studies per worker count, in alternating order; the fastest of each counts (a shared
        machine's load only ever slows a run down).

    Returns
    -------
    dict
        ``loop`` (``task_s``, ``tasks``), ``overhead`` (``per_task_s``, ``fraction``, ``goal``,
        ``met``), ``measured`` (per worker count: ``trials_per_hour``, ``parallel_efficiency``,
        ``trials``, ``trials_s``, ``driver_s``), ``model`` (``trials_per_hour`` per W in 1, 2, 4,
        8, 16, 32, 64, ``trials_per_hour_64``, formula), the case set and ``cpu_count``.
    """
    import os

    from workbench.tuning.cases import CaseSet, evaluate_start, pin_threads, simulate_case
    from workbench.tuning.study import open_client

    say = progress or (lambda message: None)
    if parameters is None and method == "bone-icp":
        parameters = ["icp.trim_fraction=0.5:1.0"]
    case_set = CaseSet(cases=cases, starts=starts, seed=seed, spacing_mm=spacing_mm)
    description = case_set.as_dict()
    tasks = case_set.tasks()
    settings = _settings(method, parameters, trials, seed)

    say(f"plain loop: simulating {cases} case(s)")
    pin_threads()
    simulated = [simulate_case(description, i) for i in range(cases)]
    evaluate_start(method, {}, description, 0, 0, simulated[0])  # warm-up: imports and JIT compilation
    loop_start = time.perf_counter()
    loop_task_s = []
    for values in settings:
        for case_index, start_index in tasks:
            result = evaluate_start(method, values, description, case_index, start_index, simulated[case_index])
            loop_task_s.append(result["task_s"])
    loop_wall_s = time.perf_counter() - loop_start
    n_tasks = len(loop_task_s)
    task_s = loop_wall_s / n_tasks
    say(f"plain loop: {n_tasks} tasks in {loop_wall_s:.1f} s ({task_s:.3f} s a task)")

    say("Dask path, 1 worker: same tasks")
    client, cluster = open_client(1)
    try:
        futures = _warm(client, method, description, cases)
        dask_start = time.perf_counter()
        submitted = [
            client.submit(evaluate_start, method, values, description, c, s, futures[c], pure=False)
            for values in settings for c, s in tasks
        ]
        dask_results = client.gather(submitted)
        dask_wall_s = time.perf_counter() - dask_start
    finally:
        client.close()
        cluster.close()
    dask_compute_s = float(sum(r["task_s"] for r in dask_results))
    # per task: the Dask wall time beyond the tasks' own compute time, measured in the same run (so a
    # change of machine load between the loop and the Dask run does not count as overhead)
    overhead_s = max(0.0, (dask_wall_s - dask_compute_s) / n_tasks)
    fraction = overhead_s / (dask_compute_s / n_tasks)
    versus_loop_s = (dask_wall_s - loop_wall_s) / n_tasks
    say(f"Dask path: {dask_wall_s:.1f} s, overhead {overhead_s * 1e3:.1f} ms a task ({fraction:.1%})")

    measured: dict[int, dict] = {}
    order = list(worker_counts)
    with tempfile.TemporaryDirectory(prefix="workbench-bench-tune-") as folder:
        for repeat in range(repeats):
            # alternate the order (1, 2, 2, 1, ...) so a drift in machine load hits both counts alike
            for workers in order if repeat % 2 == 0 else order[::-1]:
                row = _study_rate(method, case_set, trials, parameters, workers, seed,
                                  f"sqlite:///{Path(folder) / f'w{workers}-r{repeat}.db'}", say)
                row["repeats"] = repeat + 1
                if workers not in measured or row["trials_per_hour"] > measured[workers]["trials_per_hour"]:
                    measured[workers] = row
    measured = [measured[w] for w in order]
    base = next((row["trials_per_hour"] / row["workers"] for row in measured if row["workers"] == 1), None)
    for row in measured:
        row["parallel_efficiency"] = round(row["trials_per_hour"] / (row["workers"] * base), 3) if base else None
    driver_s = float(np.mean([row["driver_s_per_trial"] for row in measured]))
    model = {str(w): round(throughput_model(task_s, overhead_s, len(tasks), w, driver_s), 1) for w in (1, 2, 4, 8, 16, 32, 64)}
    two = next((row for row in measured if row["workers"] == 2), None)
    return {
        "benchmark": "tune",
        "method": method,
        "case_set": description,
        "tasks_per_trial": len(tasks),
        "cpu_count": os.cpu_count(),
        "loop": {"tasks": n_tasks, "wall_s": round(loop_wall_s, 3), "task_s": round(task_s, 4)},
        "overhead": {
            "dask_wall_s": round(dask_wall_s, 3), "dask_compute_s": round(dask_compute_s, 3),
            "per_task_s": round(overhead_s, 4), "fraction": round(fraction, 4),
            "versus_loop_per_task_s": round(versus_loop_s, 4),
            "definition": "(Dask wall - sum of the tasks' own times in that run) / tasks; versus_loop: "
                          "(Dask wall - plain loop wall) / tasks, which also holds any change of machine load",
            "goal": OVERHEAD_GOAL, "met": bool(fraction <= OVERHEAD_GOAL),
        },
        "measured": measured,
        "efficiency_at_2": {
            "value": two["parallel_efficiency"] if two else None, "goal": EFFICIENCY_GOAL,
            "met": bool(two and two["parallel_efficiency"] is not None and two["parallel_efficiency"] >= EFFICIENCY_GOAL),
        },
        "model": {
            "formula": "trials/h(W) = 3600 / max(tasks_per_trial x (task_s + overhead_s) / W, driver_s)",
            "task_s": round(task_s, 4), "overhead_s": round(overhead_s, 4), "driver_s": round(driver_s, 4),
            "trials_per_hour": model, "trials_per_hour_64": model["64"],
        },
    }
