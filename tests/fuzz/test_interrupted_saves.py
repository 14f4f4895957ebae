"""Temporary files of interrupted saves are removed by the next save or load of the same target."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from workbench._atomic import STALE_AFTER_S, atomic_write_text, remove_stale_temporaries, temporary_prefix
from workbench.case import Case, load_case, save_case

_KILLED_WRITER = """
import sys, time
from workbench._atomic import atomic_open
with atomic_open(sys.argv[1], "w") as fh:
    fh.write("half of a case.json")
    fh.flush()
    print("writing", flush=True)
    time.sleep(60)
"""


def _killed_mid_save(target) -> list[str]:
    """Start a save of ``target`` in a child, SIGKILL it while its temporary file exists; the leftovers."""
    child = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "writing"
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    return sorted(p.name for p in target.parent.iterdir() if p.name.endswith(".tmp"))


def test_next_save_removes_the_temporary_of_a_killed_save(tmp_path):
    folder = tmp_path / "case"
    save_case(Case(case_id="T1"), folder)
    before = (folder / "case.json").read_text()
    leftovers = _killed_mid_save(folder / "case.json")
    assert len(leftovers) == 1 and leftovers[0].startswith(".case.json.")
    assert (folder / "case.json").read_text() == before  # the killed save changed nothing
    save_case(Case(case_id="T1", title="saved again"), folder)
    assert sorted(p.name for p in folder.iterdir()) == ["case.json"]
    assert load_case(folder).title == "saved again"


def test_next_load_removes_the_temporary_of_a_killed_save(tmp_path):
    folder = tmp_path / "case"
    save_case(Case(case_id="T2"), folder)
    assert len(_killed_mid_save(folder / "case.json")) == 1
    assert load_case(folder).case_id == "T2"
    assert sorted(p.name for p in folder.iterdir()) == ["case.json"]


def test_temporaries_of_running_writers_and_other_files_are_kept(tmp_path):
    target = tmp_path / "plan.json"
    atomic_write_text(target, "{}")
    ours = tmp_path / f"{temporary_prefix(target)}abc.tmp"  # this process: a save in progress
    ours.write_text("in progress")
    other = tmp_path / ".other.json.1.abc.tmp"  # another target's temporary
    other.write_text("x")
    old_unnamed = tmp_path / ".plan.json.abcdefgh.tmp"  # written before the pid was in the name
    old_unnamed.write_text("x")
    recent_unnamed = tmp_path / ".plan.json.zyxwvuts.tmp"
    recent_unnamed.write_text("x")
    stale = time.time() - STALE_AFTER_S - 60
    os.utime(old_unnamed, (stale, stale))
    assert remove_stale_temporaries(target) == [old_unnamed]
    assert ours.exists() and other.exists() and recent_unnamed.exists()
