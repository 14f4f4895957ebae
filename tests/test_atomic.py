"""Atomic saves: a failure during a write leaves the previous file intact and no temporary behind."""

from __future__ import annotations

import os

import pytest

from workbench._atomic import atomic_open, atomic_write_bytes, atomic_write_text


def test_write_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "plan.json"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert os.listdir(target.parent) == ["plan.json"]


def test_exception_mid_write_keeps_previous_version(tmp_path):
    target = tmp_path / "case.json"
    atomic_write_bytes(target, b"previous")
    with pytest.raises(RuntimeError, match="crash"):
        with atomic_open(target, "wb") as fh:
            fh.write(b"half of the new ver")
            raise RuntimeError("crash")
    assert target.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["case.json"]


def test_failed_rename_keeps_previous_version(tmp_path, monkeypatch):
    target = tmp_path / "case.json"
    atomic_write_bytes(target, b"previous")

    def broken_replace(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk gone"):
        atomic_write_bytes(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["case.json"]


def test_read_modes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="write modes only"):
        with atomic_open(tmp_path / "x", "r"):
            pass


def test_saved_files_get_umask_permissions_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "plan.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "plan.json").stat().st_mode & 0o777 == 0o644
