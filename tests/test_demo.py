"""The headless demo pipeline (`make demo-headless`, `workbench demo`)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest

from workbench.case import load_case
from workbench.demo import DEMO_CASE_ID, MRI_SUBDIR, image_corners_px, run_demo
from workbench.errors import WorkbenchError
from workbench.io.sequence import read_sequence
from workbench.io.volume import load_volume
from workbench.phantom.democase import DemoCaseSpec

#: A quick demo case (one transverse sweep, no posture change); the demo tests share its cache.
SMALL_CASE = DemoCaseSpec(seed=3, sweep_speed_mm_s=90.0, sweeps=("transverse",), posture_change=False)

IDENTIFYING = ("PatientID", "PatientBirthDate", "InstitutionName", "StudyDate", "StudyInstanceUID", "SeriesInstanceUID")


def test_demo_runs_end_to_end_and_keeps_identifiers_out(shared_data, tmp_path, demo_cache):
    stream = io.StringIO()
    summary = run_demo(tmp_path / "demo", shared_data=shared_data, stream=stream, demo_spec=SMALL_CASE)
    log = stream.getvalue()
    assert log.count("\n[") + log.startswith("[") == 14, log  # 7 steps on the demo case, 7 on public data

    # the synthetic part: the cached case was opened and its sweep reconstructed
    assert Path(summary["demo_case"]["case"]).parent == demo_cache
    volume = load_volume(summary["demo_case"]["sweep_volume"])
    assert summary["demo_case"]["frames_inserted"] > 20 and min(volume.size) > 10
    assert summary["demo_case"]["targets"] == 8
    # registration from the case's noisy landmarks lands near the ground truth at the targets
    assert summary["demo_case"]["registration"]["landmarks_median_tre_mm"] < 2.0
    assert summary["demo_case"]["registration"]["icp_median_tre_mm"] < 3.0
    # no posture change in the small case: the per-vertebra transforms stay near the rigid one
    # (measured: rigid 0.33-0.42 mm, per vertebra 0.13-0.92 mm per level)
    registration = summary["demo_case"]["registration"]
    rigid, piecewise = registration["icp_tre_by_level_mm"], registration["piecewise_tre_by_level_mm"]
    assert set(rigid) == set(piecewise) == {"L3", "L4", "L5", "S1"}
    assert all(piecewise[level] < 1.5 and abs(piecewise[level] - rigid[level]) < 1.0 for level in rigid), registration
    plan = summary["demo_case"]["plans"][0]
    assert len(plan["trajectories"]) == 8 and any(f.endswith("report.html") for f in plan["files"])

    case = load_case(tmp_path / "demo" / "case")
    assert case.case_id == DEMO_CASE_ID == summary["public_data"]["case_id"]
    assert case.mri.size_px == (256, 256, 35)
    sweep = read_sequence(tmp_path / "demo" / "case" / case.sweeps[0].path)
    assert len(sweep) == 21 and sweep.image_size_px == (820, 616)
    np.testing.assert_allclose(case.sweeps[0].image_to_probe.matrix[0, 3], 15.3978)

    mri = load_volume(tmp_path / "demo" / "case" / case.mri.path)
    np.testing.assert_allclose(mri.spacing_mm, [1.015625, 1.015625, 4.8], atol=1e-4)
    np.testing.assert_allclose(mri.origin_lps_mm, [81.6, -130.0, 130.0], atol=1e-3)

    first = pydicom.dcmread(next((shared_data / MRI_SUBDIR).rglob("*.dcm")), stop_before_pixels=True)
    secrets = [str(first.get(k)) for k in IDENTIFYING if first.get(k)]
    assert len(secrets) >= 4
    for path in (tmp_path / "demo").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for secret in secrets:
                assert secret.encode() not in data, f"{secret!r} leaked into {path}"


def test_demo_without_public_data_runs_the_synthetic_part(tmp_path, demo_cache, monkeypatch):
    monkeypatch.setenv("WORKBENCH_SHARED_DATA", str(tmp_path / "nowhere"))
    stream = io.StringIO()
    summary = run_demo(tmp_path / "demo", stream=stream, demo_spec=SMALL_CASE)
    assert set(summary) == {"demo_case"}
    assert "Public data not found" in stream.getvalue()
    with pytest.raises(WorkbenchError, match="shared demo data not found"):
        run_demo(tmp_path / "demo", shared_data=tmp_path / "nowhere", stream=io.StringIO(), demo_spec=SMALL_CASE)


def test_demo_refuses_a_folder_it_did_not_make(shared_data, tmp_path):
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(WorkbenchError, match="not made by `workbench demo`"):
        run_demo(tmp_path, shared_data=shared_data, stream=io.StringIO())
    assert (tmp_path / "mine.txt").read_text() == "user data"


def test_image_corners_are_pixel_centres():
    np.testing.assert_array_equal(image_corners_px(820, 616)[3], [819, 615, 0])
