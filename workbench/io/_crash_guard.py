"""Run a call into a C library that may crash on a corrupt file in a forked child process.

Some library readers (HDF5 inside ITK) dereference corrupt offsets and die of a signal, where no
Python ``except`` helps and the notebook kernel or CLI dies with them. :func:`run_isolated` runs
such a call in a child made by ``os.fork`` (fast: nothing is re-imported), passes the picklable
result back through a pipe, and turns a crash, a timeout or an exception into a
:class:`~workbench.errors.WorkbenchError` naming the file.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import time
from pathlib import Path
from typing import Any, Callable

from workbench.errors import WorkbenchError

__all__ = ["run_isolated"]


def run_isolated(
    function: Callable[..., Any],
    *args,
    path: Path,
    what: str,
    error: type[WorkbenchError] = WorkbenchError,
    timeout_s: float = 60.0,
) -> Any:
    """``function(*args)`` computed in a forked child; its result must be picklable.

    Raises
    ------
    WorkbenchError
        (``error``) The child raised (its message kept), died of a signal, or ran past ``timeout_s``.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: compute, send, leave without running the parent's cleanup
        os.close(read_fd)
        try:
            outcome = ("ok", function(*args))
        except WorkbenchError as exc:
            outcome = ("error", exc.problem)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent as one line
            outcome = ("error", f"{what}: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
        try:
            data = pickle.dumps(outcome)
        except Exception:  # noqa: BLE001
            data = pickle.dumps(("error", f"{what}: result cannot be passed back"))
        with os.fdopen(write_fd, "wb") as fh:
            fh.write(data)
        os._exit(0)
    os.close(write_fd)
    chunks = []
    deadline = time.monotonic() + timeout_s
    timed_out = False
    with os.fdopen(read_fd, "rb") as fh:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([fh], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fh.fileno(), 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    if timed_out:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    if timed_out:
        raise error(f"{what}: no result after {timeout_s:g} s; refused", path)
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        raise error(f"{what}: the reader crashed ({name}); the file is corrupt", path)
    try:
        kind, value = pickle.loads(b"".join(chunks))
    except Exception:  # noqa: BLE001 - a child that exited without a result
        raise error(f"{what}: the reader ended without a result; the file is corrupt", path) from None
    if kind == "error":
        raise error(value, path)
    return value
