"""The headless demo registers, accepts the result into a working copy of the demo case and plans with it."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from workbench.case import load_case, path_sha256
from workbench.demo import run_demo
from workbench.io.ground_truth import read_ground_truth
from tests.test_demo import SMALL_CASE
from workbench.phantom.democase import default_demo_case
from workbench.planning.export import read_registration_transform
from workbench.registration.landmarks import pair_landmarks


def test_demo_plans_with_the_registration_it_accepted_and_leaves_the_cache_alone(tmp_path, demo_cache, monkeypatch):
    monkeypatch.setenv("WORKBENCH_SHARED_DATA", str(tmp_path / "nowhere"))  # the synthetic part only
    cached = default_demo_case(SMALL_CASE)
    digest_before = path_sha256(cached)
    stream = io.StringIO()
    summary = run_demo(tmp_path / "demo", stream=stream, demo_spec=SMALL_CASE)["demo_case"]
    assert path_sha256(cached) == digest_before  # not a byte of the cached case changed
    assert load_case(cached).registrations == []
    assert Path(summary["case"]) == cached and Path(summary["working_case"]) == tmp_path / "demo" / "demo-case"

    # the working copy's case.json holds the accepted registration, current
    case = load_case(summary["working_case"])
    saved = case.current_registration
    assert [r.registration_id for r in case.registrations] == [saved.registration_id] == [summary["registration"]["registration_id"]]
    assert saved.method == "landmarks+bone-icp+piecewise"
    assert saved.run_time_s > 0 and saved.parameters  # the ICP settings of the last rigid step

    # plan.json records that registration: id, method, FRE, largest predicted TRE, its ReferenceToMri
    plan_dir = tmp_path / "demo" / "plans" / summary["plans"][0]["plan_id"]
    document = json.loads((plan_dir / "plan.json").read_text())["registration"]
    assert document["registration_id"] == saved.registration_id and document["method"] == saved.method
    assert document["ReferenceToMri"] == saved.reference_to_mri.to_list()
    assert document["fre_mm"] is not None and document["fre_mm"] == saved.fre_mm
    assert document["tre_mm"] == max(saved.tre_mm.values())
    assert np.array_equal(read_registration_transform(plan_dir / "registration.h5").matrix.round(9),
                          saved.reference_to_mri.matrix.round(9))
    assert saved.registration_id in (plan_dir / "report.html").read_text()

    # the FRE is that of the saved ReferenceToMri on the case's paired landmarks, recomputed here
    pairs = pair_landmarks(case.landmarks)
    moved = saved.reference_to_mri.apply_to_points(pairs.points_reference)
    assert document["fre_mm"] == pytest.approx(np.sqrt(np.mean(np.sum((moved - pairs.points_mri) ** 2, axis=1))), abs=1e-12)
    assert 0.3 < document["fre_mm"] < 3.0  # the demo's landmarks carry localisation noise
    # the TRE is the landmark fit's prediction at the case's targets (the refinement started from it)
    assert set(saved.tre_mm) == {t.name for t in case.targets} and len(saved.tre_mm) == 8
    assert saved.provenance["tre_basis"] == "predicted (Fitzpatrick) for the landmark fit this refinement started from"

    # not the ground truth: the registration differs from it, and is measured against it
    truth = read_ground_truth(Path(summary["working_case"]) / "ground_truth.json")
    assert not np.allclose(saved.reference_to_mri.matrix, truth.reference_to_mri.matrix, atol=1e-3)
    error_mm = saved.provenance["median_error_vs_ground_truth_mm"]
    assert error_mm == pytest.approx(summary["registration"]["icp_median_tre_mm"], abs=1e-12) and error_mm < 3.0
    assert f"registration {saved.registration_id}: landmarks+bone-icp+piecewise, FRE {saved.fre_mm:.2f} mm" in stream.getvalue()
