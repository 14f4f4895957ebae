"""`workbench info` on every file of ../shared/data, and the CLI's bad-input contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.cli import main
from tests.conftest import SHARED_DATA

DOC_SUFFIXES = {".md", ".txt", ""}  # README.md, PROVENANCE.md, License.txt, LICENSE: not data


def _expected_kind(path: Path) -> str | None:
    name = path.name.lower()
    if path.suffix.lower() in DOC_SUFFIXES or name.startswith("license"):
        return None
    if name == "tpstransform.h5":
        return None  # thin-plate spline: SimpleITK cannot read it; a clean error is the right answer
    if name.endswith(".dcm"):
        return "dicom"
    if name.endswith(".xml"):
        return "device_set"
    if name.endswith((".igs.mha", ".igs.nrrd")):
        return "sequence"
    if name.endswith((".mha", ".png", ".nii.gz", ".nii", ".nrrd")):
        return "volume"
    if name.endswith((".tfm", ".h5")):
        return "transform"
    if name.endswith(".mrk.json"):
        return "markups"
    if name.endswith(".json"):
        return "json_schema"
    raise AssertionError(f"test does not know what {path} is")


ALL_FILES = sorted(p for p in SHARED_DATA.rglob("*") if p.is_file()) if SHARED_DATA.is_dir() else []


def run_info(path: Path, capsys) -> tuple[int, dict | None, str]:
    code = main(["info", str(path)])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else None), captured.err


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: str(p.relative_to(SHARED_DATA)))
def test_info_on_every_shared_file(path, capsys):
    expected = _expected_kind(path)
    code, info, err = run_info(path, capsys)
    if expected is None:
        assert code == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0] and "Traceback" not in err
        return
    assert code == 0, err
    assert info["kind"] == expected
    if expected == "sequence":
        assert info["frames"] > 0 and len(info["image_size_px"]) == 2
        assert all(set(v) == {"ok", "invalid"} for v in info["transforms"].values())
        assert len(info["timestamp_range_s"]) == 2
    if expected in ("volume", "dicom"):
        assert len(info["spacing_mm"]) == len(info["size"]) == len(info["origin_lps_mm"])
        assert len(info["direction"]) == len(info["size"]) ** 2
    if expected == "dicom":
        assert len(info["series"]) == 1


def test_info_dicom_folder_geometry(shared_data, capsys):
    code, info, _ = run_info(shared_data / "mri-dicom-dcm_qa_decubitus" / "HFS", capsys)
    assert code == 0
    assert info["size"] == [256, 256, 35]
    assert info["spacing_mm"] == pytest.approx([1.015625, 1.015625, 4.8], abs=1e-4)
    assert info["direction"] == pytest.approx([0, 0, -1, 1, 0, 0, 0, -1, 0], abs=1e-6)


def test_info_spine_sweep_contract(shared_data, capsys):
    code, info, _ = run_info(shared_data / "plus-spine-phantom-freehand" / "SpinePhantomFreehand.igs.mha", capsys)
    assert code == 0
    assert info["frames"] == 21 and info["image_size_px"] == [820, 616]
    assert info["transforms"]["ProbeToTracker"] == {"ok": 21, "invalid": 0}
    assert info["timestamp_range_s"] == pytest.approx([215.102186, 216.947186])


def test_info_nwire_invalid_counts(shared_data, capsys):
    for name in ("NwirePhantomFreehand.igs.mha", "NwirePhantomFreehand.igs.nrrd"):
        code, info, _ = run_info(shared_data / "plus-nwire-freehand" / name, capsys)
        assert code == 0 and info["frames"] == 97
        assert info["transforms"]["StylusToTracker"] == {"ok": 0, "invalid": 97}


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file or folder"),
        (b"ObjectType = Image\nNDims = 3\nSeq_Frame0000_Timestamp = 1\n", "test.igs.mha"),
        (b"\x00\x01garbage", "unknown kind of file"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, content, message):
    path = tmp_path / ("test.igs.mha" if content and content.startswith(b"Object") else "test.bin")
    if content is not None:
        path.write_bytes(content)
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", "info", str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and str(path) in lines[0]


def test_anonymize_command_then_info_on_the_copy(shared_data, tmp_path):
    source = shared_data / "mri-dicom-dcm_qa_decubitus" / "HFS"
    out = tmp_path / "anon"
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", "anonymize", str(source), str(out), "--case-id", "PVB-001"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["case_id"] == "PVB-001" and report["files_written"] == 35
    proc = subprocess.run([sys.executable, "-m", "workbench", "info", str(out)], capture_output=True, text=True)
    info = json.loads(proc.stdout)
    assert info["kind"] == "dicom" and info["size"] == [256, 256, 35]
    # Refusing to write the copy inside the source is a one-line error, exit 2.
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", "anonymize", str(out), str(out / "again")], capture_output=True, text=True
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def test_info_on_a_case_folder(shared_data, tmp_path, capsys):
    import io

    from workbench.demo import _public_data_part, _Steps

    _public_data_part(tmp_path, _Steps(io.StringIO()), shared_data)
    code, info, _ = run_info(tmp_path / "case", capsys)
    assert code == 0 and info["kind"] == "case" and info["sweeps"]["count"] == 1
    code, info_json, _ = run_info(tmp_path / "case" / "case.json", capsys)
    assert info_json == info


def test_a_broken_pipe_to_a_worker_is_an_error_not_a_silenced_stdout(monkeypatch):
    """Only a reader of our own stdout going away is quiet; a worker's pipe breaking propagates
    (the old handler pointed fd 1 at /dev/null for any BrokenPipeError, silencing the caller too)."""
    import argparse
    import os

    import workbench.cli as cli

    def broken(args):
        raise BrokenPipeError(32, "Broken pipe")  # as from a multiprocessing connection to a dead worker

    parser = argparse.ArgumentParser()
    parser.set_defaults(func=broken, command="probe")
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    stdout_before = os.fstat(1)
    with pytest.raises(BrokenPipeError):
        cli.main([])
    after = os.fstat(1)
    assert (after.st_dev, after.st_ino) == (stdout_before.st_dev, stdout_before.st_ino), "fd 1 was redirected"
