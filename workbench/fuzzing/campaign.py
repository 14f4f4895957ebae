"""Run a mutation campaign in worker subprocesses, counting crashes and hangs instead of dying of them.

Each input is generated inside the worker from ``(seed, format, index)`` (so the parent never
holds the bytes and any input can be reproduced with :func:`write_input`), written to a fresh
folder, and handed to the format's reader (:mod:`workbench.fuzzing.formats`). The worker sends
back one outcome:

- ``clean_error``: a :class:`~workbench.errors.WorkbenchError` (the intended refusal);
- ``accepted``: the reader returned and the validation layer passed what it returned;
- ``garbage``: the reader returned something the validation layer refuses (accepted silently);
- ``uncaught``: any other exception (a bug).

The parent counts two more: ``crashes`` (the worker died, e.g. of a signal inside a C library;
the worker is restarted) and ``hangs`` (no outcome within the per-input timeout; the worker is
killed and restarted). Workers run with one thread per library and an address-space limit, so a
file that asks for more memory than the limit allows must be refused by the size checks.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import shutil
import signal
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

__all__ = ["OUTCOMES", "inputs_per_format", "run_campaign", "run_one", "write_input"]

OUTCOMES = ("clean_error", "accepted", "garbage", "uncaught")
#: address space a worker may add to what it holds after importing the readers
WORKER_MEMORY_HEADROOM_BYTES = 3 << 30


def inputs_per_format(total: int, formats: list[str] | None = None) -> dict[str, int]:
    """Split ``total`` inputs over the formats by their weights (each gets at least one)."""
    from workbench.fuzzing.formats import FORMATS

    names = formats or list(FORMATS)
    weights = np.array([FORMATS[name].weight for name in names])
    counts = np.maximum(1, np.floor(total * weights / weights.sum()).astype(int))
    counts[0] += max(0, total - int(counts.sum()))
    return dict(zip(names, (int(c) for c in counts)))


class _Worker:
    """State of one worker process: base inputs per format, built once."""

    def __init__(self, shared: Path, workdir: Path):
        self.shared = shared
        self.workdir = workdir
        self.bases: dict[str, list] = {}

    def bases_of(self, name: str):
        from workbench.fuzzing.formats import FORMATS

        if name not in self.bases:
            folder = self.workdir / "bases" / name
            folder.mkdir(parents=True, exist_ok=True)
            self.bases[name] = FORMATS[name].bases(self.shared, folder)
            if not self.bases[name]:
                raise RuntimeError(f"no base input for format {name} (shared data at {self.shared}?)")
        return self.bases[name]

    def files(self, name: str, seed: int, index: int) -> tuple[dict[str, bytes], str, str]:
        from workbench.fuzzing.formats import FORMATS

        rng = np.random.default_rng([seed, list(FORMATS).index(name), index])
        bases = self.bases_of(name)
        base = bases[int(rng.integers(len(bases)))]
        return FORMATS[name].mutate(base, rng), base.main, base.name


def run_one(worker: _Worker, name: str, seed: int, index: int) -> tuple[str, str]:
    """Generate input ``index`` of ``name`` and run its reader; (outcome, detail)."""
    import warnings

    from workbench.errors import WorkbenchError
    from workbench.fuzzing.formats import FORMATS

    folder = worker.workdir / "input"
    shutil.rmtree(folder, ignore_errors=True)
    files, main, base = worker.files(name, seed, index)
    for relative, data in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(data)
    fmt = FORMATS[name]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = fmt.run(folder, main)
    except WorkbenchError as exc:
        return "clean_error", str(exc).replace(str(folder), "<input>")[:300]
    except Exception as exc:  # noqa: BLE001 - anything else is what the campaign looks for
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return "uncaught", f"{type(exc).__name__}: {str(exc)[:160]} at {Path(where.filename).name}:{where.lineno} (base {base})"
    try:
        fmt.check(result, folder / main)
    except WorkbenchError as exc:
        return "garbage", f"{str(exc).replace(str(folder), '<input>')[:300]} (base {base})"
    return "accepted", ""


def write_input(name: str, seed: int, index: int, out_dir: str | os.PathLike, shared: Path | None = None) -> Path:
    """Write input ``index`` of format ``name`` into ``out_dir`` (to reproduce a finding); returns the file the reader opens."""
    from workbench.fuzzing.formats import default_shared_data

    out_dir = Path(out_dir)
    worker = _Worker(shared or default_shared_data(), Path(tempfile.mkdtemp(prefix="wb-fuzz-")))
    try:
        files, main, _ = worker.files(name, seed, index)
    finally:
        shutil.rmtree(worker.workdir, ignore_errors=True)
    for relative, data in files.items():
        (out_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        (out_dir / relative).write_bytes(data)
    return out_dir / main


def _limit_worker() -> None:
    """One thread per library and a bounded address space for a worker process."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            size = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
        limit = size + WORKER_MEMORY_HEADROOM_BYTES
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    except (OSError, ValueError, StopIteration):
        pass
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _worker_main(conn, shared: str, workdir: str) -> None:
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
        os.environ[variable] = "1"
    import workbench.fuzzing.formats  # noqa: F401 - import the readers before the memory limit

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)  # C libraries (HDF5, GDCM) print diagnostics of every broken file

    _limit_worker()
    worker = _Worker(Path(shared), Path(workdir))
    conn.send(("ready", ""))
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        if task[0] == "prepare":  # build a format's bases (and import its readers) outside the timed inputs
            try:
                worker.bases_of(task[1])
                conn.send(("ready", ""))
            except Exception as exc:  # noqa: BLE001 - reported to the parent, which stops the campaign
                conn.send(("failed", f"{type(exc).__name__}: {str(exc)[:200]}"))
            continue
        name, seed, index = task
        try:
            conn.send(run_one(worker, name, seed, index))
        except Exception as exc:  # noqa: BLE001 - a failure of the harness itself is reported, not raised
            conn.send(("uncaught", f"harness: {type(exc).__name__}: {str(exc)[:160]}"))


#: how long a worker may take to start or to build a format's bases (not part of any input's time), s
_SETUP_TIMEOUT_S = 600.0


class _Process:
    def __init__(self, context, shared: Path, workdir: Path, name: str):
        self.parent, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child, str(shared), str(workdir)), daemon=True)
        self.process.start()
        child.close()
        self._await_ready("start")
        self.prepare(name)

    def prepare(self, name: str) -> None:
        """Have the worker build the bases of format ``name`` before its inputs are timed."""
        self.parent.send(("prepare", name))
        self._await_ready(f"prepare {name}")

    def _await_ready(self, what: str) -> None:
        if not self.parent.poll(_SETUP_TIMEOUT_S):
            self.stop(kill=True)
            raise RuntimeError(f"fuzz worker did not {what} within {_SETUP_TIMEOUT_S:g} s")
        kind, detail = self.parent.recv()
        if kind != "ready":
            self.stop(kill=True)
            raise RuntimeError(f"fuzz worker could not {what}: {detail}")

    def stop(self, kill: bool = False) -> None:
        if kill and self.process.is_alive():
            os.kill(self.process.pid, signal.SIGKILL)
        else:
            try:
                self.parent.send(None)
            except (BrokenPipeError, OSError):
                pass
        self.process.join(5)
        if self.process.is_alive():
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.join()
        self.parent.close()


def run_campaign(
    total: int,
    *,
    seed: int = 0,
    formats: list[str] | None = None,
    timeout_s: float = 10.0,
    shared: Path | None = None,
    examples: int = 5,
    progress=None,
) -> dict:
    """Run ``total`` mutated inputs over the formats in one worker subprocess.

    Parameters
    ----------
    total : int
        Inputs in all, split by :func:`inputs_per_format`.
    seed : int
        Makes the campaign reproducible (input ``i`` of a format depends on seed, format, i).
    formats : list of str, optional
        Names of :data:`workbench.fuzzing.formats.FORMATS` (default all).
    timeout_s : float
        An input without an outcome after this long counts as a hang (s).
    shared : Path, optional
        Shared data folder (default ``$WORKBENCH_SHARED_DATA`` or ``../shared/data``).
    examples : int
        Findings kept per format and bad outcome (index and message), to reproduce them.
    progress : callable, optional
        ``progress(done, total)``.

    Returns
    -------
    dict
        JSON-ready: ``inputs``, ``seed``, ``seconds``, ``totals`` and ``formats`` (per format:
        inputs, clean_errors, accepted, garbage_accepted, uncaught, crashes, hangs, examples).
    """
    from workbench.fuzzing.formats import default_shared_data

    shared = Path(shared or default_shared_data())
    plan = inputs_per_format(total, formats)
    context = mp.get_context("spawn")
    workdir = Path(tempfile.mkdtemp(prefix="wb-fuzz-"))
    keys = {"clean_error": "clean_errors", "accepted": "accepted", "garbage": "garbage_accepted", "uncaught": "uncaught"}
    columns = ("inputs", "clean_errors", "accepted", "garbage_accepted", "uncaught", "crashes", "hangs")
    report = {name: {**dict.fromkeys(columns, 0), "examples": []} for name in plan}
    started = time.monotonic()
    done = 0
    names = list(plan)
    worker = _Process(context, shared, workdir, names[0])
    try:
        for name, count in plan.items():
            entry = report[name]
            if name != names[0]:
                worker.prepare(name)
            for index in range(count):
                outcome, detail = _one(worker, name, seed, index, timeout_s)
                if outcome in ("crash", "hang"):
                    worker.stop(kill=True)
                    worker = _Process(context, shared, workdir, name)
                    entry["crashes" if outcome == "crash" else "hangs"] += 1
                else:
                    entry[keys[outcome]] += 1
                entry["inputs"] += 1
                if outcome not in ("clean_error", "accepted") and len(entry["examples"]) < examples * 4:
                    kept = [e for e in entry["examples"] if e["outcome"] == outcome]
                    if len(kept) < examples:
                        entry["examples"].append({"outcome": outcome, "index": index, "detail": detail})
                done += 1
                if progress is not None:
                    progress(done, total)
    finally:
        worker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    totals = {column: sum(entry[column] for entry in report.values()) for column in columns}
    return {
        "benchmark": "fuzz",
        "inputs": totals["inputs"],
        "seed": seed,
        "timeout_s": timeout_s,
        "seconds": round(time.monotonic() - started, 1),
        "totals": totals,
        "formats": report,
    }


def _one(worker: _Process, name: str, seed: int, index: int, timeout_s: float) -> tuple[str, str]:
    try:
        worker.parent.send((name, seed, index))
        if worker.parent.poll(timeout_s):
            return worker.parent.recv()
    except (EOFError, BrokenPipeError, ConnectionResetError, OSError):
        pass
    worker.process.join(0.5)
    if worker.process.is_alive():
        return "hang", f"no outcome after {timeout_s:g} s"
    code = worker.process.exitcode
    signame = signal.Signals(-code).name if code is not None and code < 0 else f"exit {code}"
    return "crash", f"worker died ({signame})"
