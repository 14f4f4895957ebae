"""The registration accuracy benchmark: JSON structure, numbers and the CLI hook."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from workbench.errors import WorkbenchError
from workbench.registration import bench
from workbench.registration.bench import random_misalignment, register_bench, run_registration_benchmark

SUMMARY_KEYS = {"median_tre_mm", "p90_tre_mm", "success_rate", "median_time_s", "trials", "failures"}


@pytest.fixture(scope="module")
def tiny_results():
    return run_registration_benchmark(cases=1, trials=2, seed=0, methods=("bone-icp",))


def test_tiny_benchmark_has_the_documented_structure(tiny_results):
    assert tiny_results["cases"] == 1 and tiny_results["trials"] == 2
    assert set(tiny_results["methods"]) == {"bone-icp"}
    icp = tiny_results["methods"]["bone-icp"]
    assert SUMMARY_KEYS | {"by_offset"} == set(icp)
    assert set(icp["by_offset"]) == {"0-10", "10-20"}
    assert all(SUMMARY_KEYS == set(row) for row in icp["by_offset"].values())
    assert icp["trials"] == 2 == sum(row["trials"] for row in icp["by_offset"].values())
    json.dumps(tiny_results)  # JSON-ready


def test_tiny_benchmark_numbers_are_plausible(tiny_results):
    icp = tiny_results["methods"]["bone-icp"]
    # Bone ICP on a noise-free-image, tracker-noise case: sub-millimetre at the nerve roots.
    assert 0.0 < icp["median_tre_mm"] <= icp["p90_tre_mm"] < 1.5
    assert icp["success_rate"] == 1.0 and icp["failures"] == 0
    assert 0.0 < icp["median_time_s"] < 10.0
    (case,) = tiny_results["case_descriptions"]
    assert case["seed"] == 0 and 22.0 <= case["bmi"] <= 35.0


def test_misalignments_stay_within_20_mm_and_15_deg():
    rng = np.random.default_rng(1)
    centre = np.array([10.0, 20.0, 30.0])
    for _ in range(50):
        matrix, translation_mm, rotation_deg = random_misalignment(rng, centre)
        assert 0 <= translation_mm < 20 and 0 <= rotation_deg < 15
        np.testing.assert_allclose(np.linalg.norm(matrix[:3, :3] @ centre + matrix[:3, 3] - centre), translation_mm)
        angle = np.degrees(np.arccos(np.clip((np.trace(matrix[:3, :3]) - 1) / 2, -1, 1)))
        assert angle == pytest.approx(rotation_deg, abs=1e-6)


def test_unknown_method_and_empty_runs_are_refused():
    with pytest.raises(WorkbenchError, match="unknown registration method"):
        run_registration_benchmark(1, 1, methods=("magic",))
    with pytest.raises(WorkbenchError, match="at least 1 case and 1 trial"):
        run_registration_benchmark(0, 1)


def test_cli_hook_adds_registration_with_its_options(monkeypatch, capsys):
    parser = argparse.ArgumentParser()
    register_bench(parser.add_subparsers(dest="benchmark"))
    args = parser.parse_args(["registration", "--cases", "2", "--trials", "4", "--json"])
    assert (args.cases, args.trials, args.json, args.seed) == (2, 4, True, 0)
    canned = {"methods": {}, "cases": 2, "trials": 4}
    monkeypatch.setattr(bench, "run_registration_benchmark", lambda *a, **k: canned)
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out) == canned


def test_cli_offers_lc2_on_frames_and_its_icp_refinement():
    parser = argparse.ArgumentParser()
    register_bench(parser.add_subparsers(dest="benchmark"))
    args = parser.parse_args(["registration", "--methods", "lc2-frames", "bone-icp+lc2-frames"])
    assert args.methods == ["lc2-frames", "bone-icp+lc2-frames"]
    default = parser.parse_args(["registration"])
    assert default.methods == ["bone-icp", "lc2-frames", "mattes-mi"] == list(bench.DEFAULT_METHODS)
