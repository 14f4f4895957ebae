"""The registration pipeline: the same steps as calling each method, progress per stage, one result.

The surfaces are synthetic: a bumpy posterior "bone" sheet (``Mri``, mm) cut into four levels
along z; the US points are a subsample of it mapped into ``Reference`` by a known
``ReferenceToMri`` plus 0.2 mm noise, with L4 shifted 1 mm (a small posture change).
"""

from __future__ import annotations

import numpy as np
import pytest

from workbench.errors import RegistrationError
from workbench.frames import Transform
from workbench.registration.intensity import rigid_offset
from workbench.registration.landmarks import LandmarkPairs, register_landmarks
from workbench.registration.piecewise import register_piecewise
from workbench.registration.pipeline import (
    REFINEMENTS,
    RegistrationInputs,
    RegistrationSettings,
    per_vertebra_result,
    run_registration_pipeline,
    stage_transform,
)
from workbench.registration.surface import register_icp

LEVELS = ("L3", "L4", "L5", "S1")


def _surface_mri() -> dict[str, np.ndarray]:
    x_mm, z_mm = np.meshgrid(np.arange(-40.0, 40.0, 1.5), np.arange(-80.0, 80.0, 1.5))
    y_mm = 40.0 + 6.0 * np.sin(x_mm / 9.0) * np.cos(z_mm / 13.0) + 4.0 * np.exp(-(x_mm**2) / 60.0)
    points = np.column_stack([x_mm.ravel(), y_mm.ravel(), z_mm.ravel()])
    edges = np.linspace(-80.0, 80.0, len(LEVELS) + 1)
    return {
        level: points[(points[:, 2] >= edges[3 - i]) & (points[:, 2] < edges[4 - i])] for i, level in enumerate(LEVELS)
    }


@pytest.fixture(scope="module")
def scene():
    by_level = _surface_mri()
    truth = Transform(rigid_offset([4.0, -3.0, 10.0, 5.0, 60.0, -10.0], np.zeros(3)), "Reference", "Mri")
    rng = np.random.default_rng(3)
    moved = {level: points + ([0.0, 1.0, 0.0] if level == "L4" else 0.0) for level, points in by_level.items()}
    surface = np.concatenate(list(moved.values()))[::3]
    us_points = truth.inverse().apply_to_points(surface + rng.normal(0.0, 0.2, surface.shape))
    landmarks_mri = np.array([[0, 45, -60], [20, 42, -20], [-20, 44, 20], [5, 46, 60], [-30, 40, -40], [30, 41, 40]], float)
    landmarks_reference = truth.inverse().apply_to_points(landmarks_mri + rng.normal(0.0, 0.8, landmarks_mri.shape))
    pairs = LandmarkPairs([f"lm{i}" for i in range(6)], landmarks_reference, landmarks_mri, [])
    inputs = RegistrationInputs(
        landmarks=pairs,
        targets_mri={"L4 left target": np.array([20.0, 10.0, -10.0])},
        us_points_reference=us_points,
        mri_points=np.concatenate(list(by_level.values())),
        mri_points_by_level=by_level,
    )
    return inputs, truth


def test_the_pipeline_runs_exactly_the_methods_it_chains(scene):
    inputs, truth = scene
    result = run_registration_pipeline(inputs, RegistrationSettings(("bone-icp", "piecewise")))

    pairs = inputs.landmarks
    landmarks = register_landmarks(pairs.names, pairs.points_reference, pairs.points_mri, targets_mri=inputs.targets_mri)
    icp = register_icp(inputs.us_points_reference, inputs.mri_points, landmarks.transform)
    piecewise = register_piecewise(inputs.us_points_reference, inputs.mri_points_by_level, icp)

    assert result.method == "landmarks+bone-icp+piecewise"
    assert np.array_equal(result.transform.matrix, icp.transform.matrix)
    assert np.array_equal(stage_transform(result, "landmarks").matrix, landmarks.transform.matrix)
    assert np.array_equal(stage_transform(result, "bone-icp").matrix, icp.transform.matrix)
    assert np.array_equal(result.metric_trace, icp.metric_trace)
    stages = result.provenance["stages"]
    assert [s["method"] for s in stages] == ["landmarks", "bone-icp"]
    assert stages[0]["fre_mm"] == landmarks.fre_mm and stages[0]["predicted_tre_mm"] == landmarks.predicted_tre_mm
    per_vertebra = per_vertebra_result(result)
    assert set(per_vertebra.transforms) == set(LEVELS) == set(piecewise.transforms)
    for level in LEVELS:
        assert np.array_equal(per_vertebra.transforms[level].matrix, piecewise.transforms[level].matrix)
    assert per_vertebra.fallbacks == piecewise.fallbacks and per_vertebra.point_counts == piecewise.point_counts
    assert np.array_equal(per_vertebra.transform_for_target("L4 left target").matrix, piecewise.transforms["L4"].matrix)
    assert per_vertebra.transform_for_target("no level") is not None
    assert result.run_time_s == pytest.approx(sum(s["run_time_s"] for s in stages) + per_vertebra.run_time_s)
    assert result.fre_mm is None and result.predicted_tre_mm == {}
    # the registration is right: within 1 mm of the truth at the target, per vertebra
    target_reference = truth.inverse().apply_to_points(inputs.targets_mri["L4 left target"] + [0.0, 1.0, 0.0])
    error_mm = np.linalg.norm(per_vertebra.transform_for_target("L4 left target").apply_to_points(target_reference)
                              - inputs.targets_mri["L4 left target"])
    assert error_mm < 1.0
    assert result.to_dict()["provenance"]["per_vertebra"]["transforms"]["L4"] == piecewise.transforms["L4"].to_list()


def test_progress_is_reported_per_step_and_per_icp_stage(scene):
    inputs, _ = scene
    calls = []
    settings = RegistrationSettings(("bone-icp",))
    result = run_registration_pipeline(inputs, settings, lambda f, trace, message: calls.append((f, len(trace), message)))
    fractions = [f for f, _, _ in calls]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    stage_calls = [c for c in calls if "bone-icp: stage" in c[2]]
    schedule = settings.icp.distance_schedule_mm
    assert [c[2] for c in stage_calls] == [f"bone-icp: stage {i + 1}/{len(schedule)}: {d:g} mm" for i, d in enumerate(schedule)]
    assert [c[1] for c in stage_calls] == sorted(c[1] for c in stage_calls) and stage_calls[-1][1] == len(result.metric_trace)
    assert calls[0][2].startswith("landmarks: ")


def test_the_landmark_step_alone_returns_the_landmark_fit(scene):
    inputs, _ = scene
    result = run_registration_pipeline(inputs, RegistrationSettings(refinements=()))
    pairs = inputs.landmarks
    direct = register_landmarks(pairs.names, pairs.points_reference, pairs.points_mri, targets_mri=inputs.targets_mri)
    assert result.method == "landmarks" and result.fre_mm == direct.fre_mm
    assert result.predicted_tre_mm == direct.predicted_tre_mm and result.residuals_mm == direct.residuals_mm
    assert np.array_equal(result.transform.matrix, direct.transform.matrix)
    assert per_vertebra_result(result) is None


def test_without_landmarks_it_starts_from_the_initial_transform(scene):
    inputs, truth = scene
    start = Transform(truth.matrix @ rigid_offset([1.0, 0.0, -1.0, 2.0, 1.0, 0.0], np.zeros(3)), "Reference", "Mri")
    bare = RegistrationInputs(initial=start, us_points_reference=inputs.us_points_reference, mri_points=inputs.mri_points,
                              mri_points_by_level=inputs.mri_points_by_level)
    result = run_registration_pipeline(bare, RegistrationSettings(("bone-icp",)))
    direct = register_icp(inputs.us_points_reference, inputs.mri_points, start)
    assert result.method == "bone-icp" and np.array_equal(result.transform.matrix, direct.transform.matrix)
    # piecewise first: it runs the global ICP itself, whose time is inside the piecewise time
    piecewise = run_registration_pipeline(bare, RegistrationSettings(("piecewise",)))
    assert piecewise.method == "bone-icp+piecewise"
    assert piecewise.run_time_s == pytest.approx(per_vertebra_result(piecewise).run_time_s)


def test_bad_settings_and_missing_inputs_are_refused(scene):
    inputs, truth = scene
    assert REFINEMENTS == ("bone-icp", "bone-robust", "lc2", "lc2-frames", "mattes-mi", "piecewise")
    with pytest.raises(RegistrationError, match="unknown refinement"):
        RegistrationSettings(("icp",))
    with pytest.raises(RegistrationError, match="can only come last"):
        RegistrationSettings(("piecewise", "bone-icp"))
    with pytest.raises(RegistrationError, match="landmarks or an initial ReferenceToMri"):
        run_registration_pipeline(RegistrationInputs(), RegistrationSettings(("bone-icp",)))
    with pytest.raises(RegistrationError, match="nothing to run"):
        run_registration_pipeline(RegistrationInputs(initial=truth), RegistrationSettings(()))
    with pytest.raises(RegistrationError, match="must be ReferenceToMri"):
        run_registration_pipeline(RegistrationInputs(initial=truth.inverse()), RegistrationSettings(("bone-icp",)))
    with pytest.raises(RegistrationError, match="the lc2 step needs the MRI image"):
        run_registration_pipeline(RegistrationInputs(initial=truth), RegistrationSettings(("lc2",)))
    with pytest.raises(RegistrationError, match="the mattes-mi step needs a reconstructed sweep"):
        run_registration_pipeline(RegistrationInputs(initial=truth, mri=object()), RegistrationSettings(("mattes-mi",)))
    with pytest.raises(RegistrationError, match="the bone-icp step needs US bone points"):
        run_registration_pipeline(RegistrationInputs(initial=truth), RegistrationSettings(("bone-icp",)))
    with pytest.raises(RegistrationError, match="no 'lc2' step"):
        stage_transform(run_registration_pipeline(inputs, RegistrationSettings(())), "lc2")


def test_the_benchmark_methods_are_pipeline_runs(scene):
    from workbench.registration import bench

    inputs, truth = scene
    case = bench.RegistrationCase(
        mri=None, us_volume=None, us_mask=None, us_points_reference=inputs.us_points_reference,
        mri_points=inputs.mri_points, reference_to_mri=truth, targets_mri=np.array([[20.0, 10.0, -10.0]]),
        description={}, target_names=("L4 left target",), mri_points_by_level=inputs.mri_points_by_level,
    )
    start = Transform(truth.matrix @ rigid_offset([2.0, 0.0, 0.0, 3.0, -2.0, 1.0], np.zeros(3)), "Reference", "Mri")
    rigid = bench.METHODS["bone-icp"](case, start)
    assert np.array_equal(rigid.transform.matrix, register_icp(case.us_points_reference, case.mri_points, start).transform.matrix)
    per_level = bench.METHODS["bone-icp+piecewise"](case, start)
    direct = register_piecewise(case.us_points_reference, case.mri_points_by_level,
                                register_icp(case.us_points_reference, case.mri_points, start))
    assert np.array_equal(bench.target_errors_mm(per_level, case), bench.target_errors_mm(direct, case))
    assert bench.method_settings("bone-icp+lc2").lc2 == bench.LC2_AFTER_ICP
