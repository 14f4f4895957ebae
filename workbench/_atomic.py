"""Atomic file writes: write to a temporary file beside the target, fsync, rename.

A crash at any point leaves either the previous version or the new one, never a
half-written file. Used by every save in workbench (case bundles, sequence
files, anonymised DICOM, exported plans).

A process killed between creating its temporary file and the rename (SIGKILL, power loss)
leaves ``.<name>.<pid>.<random>.tmp`` beside the target. The next save of that target (and
:func:`workbench.case.load_case`) removes such leftovers with :func:`remove_stale_temporaries`:
those whose writing process no longer runs, and any older than :data:`STALE_AFTER_S`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import IO, Iterator


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on clean exit fsync it and rename it onto ``path``.

    If the block raises, the temporary file is removed and ``path`` is untouched.
    """
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"atomic_open supports write modes only, not {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    fd, tmp_name = tempfile.mkstemp(prefix=temporary_prefix(target), suffix=TEMPORARY_SUFFIX, dir=target.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; saved files get normal permissions
        if "b" in mode:
            fh = os.fdopen(fd, "wb")
        else:
            fh = os.fdopen(fd, "w", encoding=encoding or "utf-8", newline="")
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, target)
        _fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


TEMPORARY_SUFFIX = ".tmp"
#: a temporary file older than this is stale even if a process with its pid runs (pid reuse), s
STALE_AFTER_S = 24 * 3600.0


def temporary_prefix(target: str | os.PathLike) -> str:
    """Name prefix of this process's temporary files for ``target``: ``.<name>.<pid>.``."""
    return f".{Path(target).name}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # a process of another user (or an impossible pid: treated as alive, age decides)
    return True


def remove_stale_temporaries(target: str | os.PathLike) -> list[Path]:
    """Remove temporary files (or staging folders) of interrupted saves of ``target``.

    A leftover is ``.<name>.<pid>.<random>.tmp`` beside ``target`` whose process ``pid`` is gone,
    or any ``.<name>.*.tmp`` older than :data:`STALE_AFTER_S` (also leftovers named before the pid
    was part of the name). Temporaries of this process and of running writers are kept. Errors
    (a read-only folder) are ignored: cleaning is best effort and never fails a save or a load.

    Returns
    -------
    list of Path
        What was removed.
    """
    target = Path(target)
    head = f".{target.name}."
    removed = []
    try:
        candidates = [p for p in target.parent.iterdir() if p.name.startswith(head) and p.name.endswith(TEMPORARY_SUFFIX)]
    except OSError:
        return removed
    now = time.time()
    for candidate in candidates:
        middle = candidate.name[len(head) : -len(TEMPORARY_SUFFIX)]
        pid_text = middle.split(".", 1)[0]
        try:
            age_s = now - candidate.lstat().st_mtime
        except OSError:
            continue
        if pid_text.isdigit() and "." in middle:
            pid = int(pid_text)
            stale = pid != os.getpid() and (not _pid_alive(pid) or age_s > STALE_AFTER_S)
        else:
            stale = age_s > STALE_AFTER_S
        if not stale:
            continue
        try:
            if candidate.is_dir() and not candidate.is_symlink():
                shutil.rmtree(candidate)
            else:
                candidate.unlink()
            removed.append(candidate)
        except OSError:
            pass
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w", encoding=encoding) as fh:
        fh.write(text)


def current_umask() -> int:
    """The process's file-creation mask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable by syncing its directory (no-op where unsupported)."""
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
