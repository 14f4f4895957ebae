"""workbench reconstruct / bench reconstruct: outputs, progress and clean failures."""

from __future__ import annotations

import io
import json

import pytest

from workbench.cli import build_parser
from workbench.errors import ReconstructionError
from workbench.reconstruction.bench import run_reconstruction_benchmark
from workbench.reconstruction.cli import ProgressReporter
from workbench.reconstruction.compare import compare_files

SPINE = "plus-spine-phantom-freehand"


def _run(argv):
    """Parse with the real `workbench` parser and call the handler (errors propagate)."""
    args = build_parser().parse_args(argv)
    return args.func(args)


def _reconstruct_args(shared_data, out, config="NN_MEAN", *extra):
    folder = shared_data / SPINE
    return [
        "reconstruct",
        str(folder / "SpinePhantomFreehand.igs.mha"),
        "--plus-config",
        str(folder / f"PlusDeviceSet_VolumeReconstructionOnly_SpinePhantom_{config}.xml"),
        "--out",
        str(out),
        *extra,
    ]


def test_reconstruct_writes_plus_volume_and_reports(shared_data, tmp_path, capsys):
    out = tmp_path / "nn_mean.mha"
    assert _run(_reconstruct_args(shared_data, out, "NN_MEAN", "--accumulation-out", str(tmp_path / "acc.mha"))) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["size_px"] == [147, 106, 105] and summary["frames_inserted"] == 21
    assert summary["holes_filled"] == 528554 and summary["voxels_covered"] == 362069
    # not a terminal: plain progress lines, the last one complete
    assert captured.err.strip().splitlines()[-1] == "reconstruct: 21/21 frames (100%)"
    reference = shared_data / SPINE / "vtkVolumeReconstructorTestNNMEANvolumeRef.mha"
    comparison = compare_files(out, reference)
    assert comparison.geometry_equal and comparison.fraction_equal == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acc.mha", "nn_mean.mha"]


def test_reconstruct_overrides(shared_data, tmp_path, capsys):
    out = tmp_path / "coarse.mha"
    argv = _reconstruct_args(
        shared_data,
        out,
        "NN_MEAN",
        "--spacing-mm",
        "1.0",
        "--interpolation",
        "linear",
        "--compounding",
        "maximum",
        "--no-fill-holes",
    )
    assert _run(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["spacing_mm"] == [1.0, 1.0, 1.0] and summary["size_px"] == [74, 54, 53]
    assert summary["holes_filled"] == 0


def test_reconstruct_over_memory_limit_leaves_no_file(shared_data, tmp_path):
    out = tmp_path / "too_big.mha"
    with pytest.raises(ReconstructionError, match="over the memory limit of 0.50 GiB"):
        _run(_reconstruct_args(shared_data, out, "NN_MEAN", "--spacing-mm", "0.05", "--max-memory-gib", "0.5"))
    assert list(tmp_path.iterdir()) == []


def test_bad_spacing_is_an_error(shared_data, tmp_path):
    with pytest.raises(ReconstructionError, match="--spacing-mm takes 1 or 3 numbers"):
        _run(_reconstruct_args(shared_data, tmp_path / "x.mha", "NN_MEAN", "--spacing-mm", "1", "2"))
    with pytest.raises(ReconstructionError, match="output spacing must be"):
        _run(_reconstruct_args(shared_data, tmp_path / "x.mha", "NN_MEAN", "--spacing-mm", "-1"))


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_a_bar_on_a_terminal_and_lines_otherwise():
    terminal = _Terminal()
    bar = ProgressReporter(terminal, "reconstruct")
    for done in range(1, 5):
        bar(done, 4)
    assert terminal.getvalue().count("\r") == 4 and terminal.getvalue().endswith("4/4 frames\n")
    assert "[###############---------------] 2/4" in terminal.getvalue()
    plain = io.StringIO()
    lines = ProgressReporter(plain, "reconstruct")
    for done in range(1, 101):
        lines(done, 100)
    assert len(plain.getvalue().splitlines()) == 11  # 1 % then every 10 %


def test_benchmark_reports_speed_and_memory():
    report = run_reconstruction_benchmark(frames=6, width=64, height=48)
    assert report["pixels"] == 6 * 64 * 48 and report["frame_block_bytes"] == 64 * 48
    for case in ("nearest_mean_fill_holes", "linear_mean"):
        result = report[case]
        assert result["seconds"] > 0 and result["mpixel_per_s"] > 0
        assert result["output_volume_bytes"] == result["output_voxels"]
        # volume + uint16 accumulation buffer = 3x the volume, plus about a frame of bookkeeping
        assert 3 * result["output_volume_bytes"] <= result["peak_memory_bytes"]
        assert result["peak_memory_bytes"] <= 3 * result["output_volume_bytes"] + 64 * 48 + 32 * 1024


def test_image_to_reference_transform_picks_the_output_frame(shared_data, tmp_path, capsys):
    argv = _reconstruct_args(
        shared_data, tmp_path / "tracker.mha", "LN_MAXI", "--image-to-reference-transform", "ImageToTracker"
    )
    assert _run(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frame"] == "Tracker" and summary["frames_inserted"] == 21
    assert summary["size_px"] != [147, 106, 105]  # the tracker's axes, not the reference's
    with pytest.raises(ReconstructionError, match="invalid image-to-reference transform name"):
        _run(_reconstruct_args(shared_data, tmp_path / "x.mha", "LN_MAXI", "--image-to-reference-transform", "Image"))


def test_main_cli_runs_the_benchmark_and_compare(shared_data):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "workbench", "bench", "reconstruct", "--frames", "3", "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["frames"] == 3 and report["nearest_mean_fill_holes"]["mpixel_per_s"] > 0
    reference = shared_data / SPINE / "vtkVolumeReconstructorTestNNMEANvolumeRef.mha"
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", "compare", str(reference), str(reference)], capture_output=True, text=True
    )
    comparison = json.loads(proc.stdout)
    assert comparison["geometry_equal"] and comparison["fraction_equal"] == 1.0 and comparison["ncc"] == 1.0
