"""Paired-point registration: exact recovery, weights, reflections, errors, TRE formula vs Monte Carlo,
FRE is not TRE, leave-one-out outliers, and the demo case against its ground truth."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from workbench.case import Landmark, load_case
from workbench.errors import FrameError, RegistrationError
from workbench.frames import Transform
from workbench.registration.landmarks import (
    estimate_fle_mm,
    leave_one_out_mm,
    pair_landmarks,
    pixel_to_reference,
    predicted_tre_mm,
    register_landmarks,
    rigid_fit,
    stylus_tip_in_reference,
)

#: A lumbar-spine-like landmark layout in the Reference frame, mm: spinous and transverse process
#: tips of three levels and two skin markers.
SPINE_LANDMARKS_MM = np.array(
    [
        [0.0, 0.0, 0.0],
        [-35.0, 20.0, 2.0],
        [35.0, 20.0, -2.0],
        [0.0, 2.0, 35.0],
        [-38.0, 22.0, 36.0],
        [37.0, 21.0, 34.0],
        [0.0, 1.0, -35.0],
        [-34.0, 19.0, -33.0],
        [36.0, 20.0, -36.0],
        [20.0, -30.0, 10.0],
    ]
)
#: Three landmarks on a line and one off it.
COLLINEAR_PLUS_ONE_MM = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [20.0, 0.0, 0.0], [5.0, 15.0, 0.0]])
NAN_AT_ROW_3 = np.arange(30).reshape(10, 3) == 10
NAMES = [f"landmark {i}" for i in range(len(SPINE_LANDMARKS_MM))]


def _truth(seed: int = 1) -> Transform:
    rotation = Rotation.from_euler("xyz", [25.0, -40.0, 70.0], degrees=True).as_matrix()
    translation_mm = np.random.default_rng(seed).uniform(-200.0, 200.0, 3)
    return Transform.from_rotation_translation(rotation, translation_mm, "Reference", "Mri")


def _rotation_error_deg(a: Transform, b: Transform) -> float:
    """Angle of the relative rotation (from its rotation vector: accurate near zero, unlike arccos)."""
    return float(np.degrees(Rotation.from_matrix(a.linear.T @ b.linear).magnitude()))


# -- the fit --------------------------------------------------------------------------------


def test_noise_free_fit_recovers_the_transform_exactly():
    truth = _truth()
    fit = rigid_fit(SPINE_LANDMARKS_MM, truth.apply_to_points(SPINE_LANDMARKS_MM))
    assert fit.name == "ReferenceToMri"
    assert fit.is_rigid(1e-12)
    assert np.linalg.norm(fit.translation - truth.translation) < 1e-9
    assert _rotation_error_deg(fit, truth) < 1e-6
    assert np.allclose(fit.matrix, truth.matrix, atol=1e-10)


def test_equal_weights_give_the_unweighted_fit_and_a_tiny_weight_removes_a_landmark():
    rng = np.random.default_rng(5)
    truth = _truth()
    mri = truth.apply_to_points(SPINE_LANDMARKS_MM) + rng.normal(0.0, 1.0, SPINE_LANDMARKS_MM.shape)
    unweighted = rigid_fit(SPINE_LANDMARKS_MM, mri)
    assert np.allclose(rigid_fit(SPINE_LANDMARKS_MM, mri, np.full(10, 2.5)).matrix, unweighted.matrix, atol=1e-12)

    mri[4] += [15.0, -10.0, 5.0]  # a grossly wrong landmark
    weights = np.ones(10)
    weights[4] = 1e-12
    without = rigid_fit(np.delete(SPINE_LANDMARKS_MM, 4, axis=0), np.delete(mri, 4, axis=0))
    assert np.allclose(rigid_fit(SPINE_LANDMARKS_MM, mri, weights).matrix, without.matrix, atol=1e-8)
    assert not np.allclose(rigid_fit(SPINE_LANDMARKS_MM, mri).matrix, without.matrix, atol=0.1)


def test_planar_landmarks_give_a_proper_rotation_where_naive_svd_reflects():
    planar_mm = np.array([[0.0, 0.0, 0.0], [60.0, 0.0, 0.0], [0.0, 40.0, 0.0], [50.0, 35.0, 0.0]])
    naive_reflections = 0
    for seed in range(20):
        truth = Transform.from_rotation_translation(
            Rotation.random(random_state=seed).as_matrix(), [10.0, -20.0, 30.0], "Reference", "Mri"
        )
        mri = truth.apply_to_points(planar_mm)
        u, _, vt = np.linalg.svd((planar_mm - planar_mm.mean(0)).T @ (mri - mri.mean(0)))
        naive_reflections += np.linalg.det(vt.T @ u.T) < 0
        fit = rigid_fit(planar_mm, mri)
        assert np.linalg.det(fit.linear) == pytest.approx(1.0, abs=1e-12)
        assert np.allclose(fit.matrix, truth.matrix, atol=1e-9)
    assert naive_reflections > 0  # the configuration does exercise the reflection fix


def test_mirrored_landmarks_give_the_best_proper_rotation_not_the_mirror():
    mirrored = SPINE_LANDMARKS_MM * [-1.0, 1.0, 1.0]
    fit = rigid_fit(SPINE_LANDMARKS_MM, mirrored)
    assert np.linalg.det(fit.linear) == pytest.approx(1.0, abs=1e-12)
    assert fit.is_rigid(1e-12)


@pytest.mark.parametrize(
    "reference, mri, weights, message",
    [
        (SPINE_LANDMARKS_MM[:2], SPINE_LANDMARKS_MM[:2], None, "3 landmark pairs needed, got 2"),
        (SPINE_LANDMARKS_MM[:4], SPINE_LANDMARKS_MM[:3], None, "4 Reference landmarks but 3 Mri landmarks"),
        (SPINE_LANDMARKS_MM[:, :2], SPINE_LANDMARKS_MM[:, :2], None, "must have shape (N, 3), got (10, 2)"),
        (COLLINEAR_PLUS_ONE_MM[:3], COLLINEAR_PLUS_ONE_MM[1:], None, "Reference landmarks are collinear"),
        (np.outer(np.arange(5.0), [1, 2, 3]) + 1e-5, np.eye(5, 3), None, "Reference landmarks are collinear"),
        (SPINE_LANDMARKS_MM[:3], np.zeros((3, 3)), None, "Mri landmarks coincide"),
        (np.where(NAN_AT_ROW_3, np.nan, SPINE_LANDMARKS_MM), SPINE_LANDMARKS_MM, None, "contain NaN or infinity (row 3)"),
        (SPINE_LANDMARKS_MM, np.full((10, 3), np.inf), None, "Mri landmarks contain NaN or infinity"),
        ([["a", "b", "c"]] * 3, SPINE_LANDMARKS_MM[:3], None, "Reference landmarks are not numeric"),
        (SPINE_LANDMARKS_MM, SPINE_LANDMARKS_MM, -np.ones(10), "weights must not be negative, got -1"),
        (SPINE_LANDMARKS_MM, SPINE_LANDMARKS_MM, np.zeros(10), "3 landmark pairs with a positive weight needed, got 0"),
        (SPINE_LANDMARKS_MM, SPINE_LANDMARKS_MM, np.ones(9), "weights must have shape (10,)"),
        (SPINE_LANDMARKS_MM, SPINE_LANDMARKS_MM, [np.nan] * 10, "weights contain NaN or infinity"),
        (SPINE_LANDMARKS_MM, SPINE_LANDMARKS_MM, ["x"] * 10, "weights are not numeric"),
        # Weights that leave only collinear landmarks: the one off the line weighs nothing.
        (COLLINEAR_PLUS_ONE_MM, COLLINEAR_PLUS_ONE_MM, [1, 1, 1, 0], "Reference landmarks are collinear"),
    ],
)
def test_bad_landmarks_raise_a_registration_error(reference, mri, weights, message):
    with pytest.raises(RegistrationError) as info:
        rigid_fit(reference, mri, weights)
    assert message in str(info.value)


# -- where landmarks come from ----------------------------------------------------------------


def test_pair_landmarks_matches_by_label_and_reports_the_unpaired():
    landmarks = [
        Landmark("L3 spinous", "Mri", (1.0, 2.0, 3.0), pair="L3 SP"),
        Landmark("L4 spinous", "Mri", (4.0, 5.0, 6.0), pair="L4 SP"),
        Landmark("L5 spinous", "Mri", (7.0, 8.0, 9.0), pair="L5 SP"),
        Landmark("sacrum", "Mri", (0.0, 0.0, 0.0)),
        Landmark("picked L4", "Reference", (14.0, 15.0, 16.0), pair="L4 SP"),
        Landmark("picked L3", "Reference", (11.0, 12.0, 13.0), pair="L3 SP"),
        Landmark("picked S1", "Reference", (20.0, 21.0, 22.0), pair="S1 SP"),
    ]
    pairs = pair_landmarks(landmarks)
    assert pairs.names == ["L3 SP", "L4 SP"]
    assert pairs.points_reference.tolist() == [[11.0, 12.0, 13.0], [14.0, 15.0, 16.0]]
    assert pairs.points_mri.tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    assert [landmark.name for landmark in pairs.unpaired] == ["sacrum", "L5 spinous", "picked S1"]
    empty = pair_landmarks([])
    assert empty.names == [] and empty.points_mri.shape == (0, 3) and empty.unpaired == []


@pytest.mark.parametrize(
    "landmarks, message",
    [
        ([Landmark("a", "Tracker", (0.0, 0.0, 0.0), pair="a")], "landmark 'a' is in frame 'Tracker'"),
        (
            [Landmark("a", "Mri", (0.0, 0.0, 0.0), pair="x"), Landmark("b", "Mri", (1.0, 0.0, 0.0), pair="x")],
            "two Mri landmarks have the pair label 'x'",
        ),
    ],
)
def test_pair_landmarks_rejects_other_frames_and_duplicate_labels(landmarks, message):
    with pytest.raises(RegistrationError, match=message):
        pair_landmarks(landmarks)


def _rotation_z_90() -> np.ndarray:
    return np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def test_pixels_map_through_calibration_and_tracking_to_reference():
    image_to_probe = Transform.from_name("ImageToProbe", [[0.2, 0, 0, -10], [0, 0.3, 0, 5], [0, 0, 1, 0], [0, 0, 0, 1]])
    probe_to_reference = Transform.from_rotation_translation(_rotation_z_90(), [100.0, 0.0, 50.0], "Probe", "Reference")
    # pixel (100, 50) -> Probe (10, 20, 0) mm -> rotated (-20, 10, 0) -> shifted (80, 10, 50)
    points = pixel_to_reference([[100.0, 50.0], [50.0, 0.0]], image_to_probe, probe_to_reference)
    assert np.allclose(points, [[80.0, 10.0, 50.0], [95.0, 0.0, 50.0]], atol=1e-12)


def test_pixel_to_reference_checks_its_transforms_and_pixels():
    image_to_probe = Transform.identity("Image", "Probe")
    probe_to_reference = Transform.identity("Probe", "Reference")
    with pytest.raises(FrameError, match="expected the ProbeToReference transform, got ProbeToTracker"):
        pixel_to_reference([[0.0, 0.0]], image_to_probe, Transform.identity("Probe", "Tracker"))
    with pytest.raises(FrameError, match="expected the ImageToProbe transform, got ndarray"):
        pixel_to_reference([[0.0, 0.0]], np.eye(4), probe_to_reference)
    with pytest.raises(RegistrationError, match=r"pixel coordinates must have shape \(N, 2\), got \(3,\)"):
        pixel_to_reference([1.0, 2.0, 3.0], image_to_probe, probe_to_reference)


def test_stylus_tip_is_the_translation_of_stylus_tip_to_reference():
    rotation_x_90 = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    stylus_to_reference = Transform.from_rotation_translation(rotation_x_90, [10.0, 20.0, 30.0], "Stylus", "Reference")
    stylus_tip_to_stylus = Transform.from_rotation_translation(np.eye(3), [0.0, 0.0, 150.0], "StylusTip", "Stylus")
    tip_mm = stylus_tip_in_reference(stylus_to_reference @ stylus_tip_to_stylus)
    assert np.allclose(tip_mm, [10.0, -130.0, 30.0], atol=1e-12)
    with pytest.raises(FrameError, match="expected the StylusTipToReference transform, got StylusToReference"):
        stylus_tip_in_reference(stylus_to_reference)


# -- error analysis: formula vs Monte Carlo ------------------------------------------------


def _monte_carlo(points_mm, fle_mm, targets_mm, trials, seed):
    """FRE (trials,) and TRE (trials, M) of fits to landmarks perturbed by isotropic Gaussian FLE."""
    rng = np.random.default_rng(seed)
    truth = _truth(seed)
    mri = truth.apply_to_points(points_mm)
    targets_mri = truth.apply_to_points(targets_mm)
    sd_per_axis_mm = fle_mm / np.sqrt(3.0)
    fre, tre = np.empty(trials), np.empty((trials, len(targets_mm)))
    for trial in range(trials):
        picked = points_mm + rng.normal(0.0, sd_per_axis_mm, points_mm.shape)
        fit = rigid_fit(picked, mri)
        fre[trial] = np.sqrt(np.mean(np.sum((fit.apply_to_points(picked) - mri) ** 2, axis=1)))
        tre[trial] = np.linalg.norm(fit.apply_to_points(targets_mm) - targets_mri, axis=1)
    return fre, tre


def test_predicted_tre_agrees_with_monte_carlo_near_and_far_from_the_landmarks():
    fle_mm = 2.0
    centroid = SPINE_LANDMARKS_MM.mean(axis=0)
    targets_mm = centroid + np.array([[3.0, 5.0, 0.0], [0.0, 60.0, 20.0], [150.0, 100.0, -80.0]])
    fre, tre = _monte_carlo(SPINE_LANDMARKS_MM, fle_mm, targets_mm, trials=2000, seed=11)
    measured_mm = np.sqrt(np.mean(tre**2, axis=0))
    predicted = predicted_tre_mm(SPINE_LANDMARKS_MM, fle_mm, targets_mm)
    assert predicted[0] == pytest.approx(fle_mm / np.sqrt(10), rel=0.02)  # ~FLE/sqrt(N) at the centroid
    assert predicted[2] > 3 * predicted[0]
    assert np.allclose(measured_mm, predicted, rtol=0.05), (measured_mm, predicted)
    # <FRE^2> = (1 - 2/N) FLE^2, so the FLE estimated from the FRE is unbiased in the mean square.
    assert np.sqrt(np.mean(fre**2)) == pytest.approx(fle_mm * np.sqrt(1 - 2 / 10), rel=0.03)
    assert estimate_fle_mm(np.sqrt(np.mean(fre**2)), 10) == pytest.approx(fle_mm, rel=0.03)


def test_predicted_tre_is_invariant_under_rigid_motion_and_scales_with_fle():
    targets_mm = np.array([[0.0, 0.0, 0.0], [100.0, -50.0, 200.0]])
    truth = _truth()
    here = predicted_tre_mm(SPINE_LANDMARKS_MM, 1.0, targets_mm)
    there = predicted_tre_mm(truth.apply_to_points(SPINE_LANDMARKS_MM), 1.0, truth.apply_to_points(targets_mm))
    assert np.allclose(here, there, rtol=1e-12)
    assert np.allclose(predicted_tre_mm(SPINE_LANDMARKS_MM, 3.0, targets_mm), 3.0 * here, rtol=1e-12)


@pytest.mark.parametrize(
    "points, fle_mm, targets, message",
    [
        (SPINE_LANDMARKS_MM, -1.0, np.zeros((1, 3)), r"FLE \(mm\) must be a finite, non-negative number, got -1.0"),
        (SPINE_LANDMARKS_MM, np.nan, np.zeros((1, 3)), r"FLE \(mm\) must be a finite, non-negative number, got nan"),
        (SPINE_LANDMARKS_MM, 1.0, np.zeros(3), r"targets must have shape \(N, 3\), got \(3,\)"),
        (SPINE_LANDMARKS_MM[:2], 1.0, np.zeros((1, 3)), "3 landmark pairs needed, got 2"),
        (np.outer(np.arange(4.0), [0, 0, 1]), 1.0, np.zeros((1, 3)), "landmarks are collinear"),
    ],
)
def test_predicted_tre_rejects_bad_input(points, fle_mm, targets, message):
    with pytest.raises(RegistrationError, match=message):
        predicted_tre_mm(points, fle_mm, targets)


def test_fre_is_not_tre():
    """Four skin markers within 20 mm of each other; the nerve root 120 mm away (docs/registration.md)."""
    cluster_mm = np.array([[0.0, 0.0, 0.0], [20.0, 0.0, 0.0], [0.0, 20.0, 0.0], [10.0, 10.0, 8.0]])
    far_target_mm = np.array([[10.0, 10.0, 120.0]])
    fre, tre = _monte_carlo(cluster_mm, 1.0, far_target_mm, trials=2000, seed=3)
    rms_fre_mm, rms_tre_mm = np.sqrt(np.mean(fre**2)), np.sqrt(np.mean(tre[:, 0] ** 2))
    assert rms_fre_mm == pytest.approx(np.sqrt(0.5), rel=0.05)  # (1 - 2/N) FLE^2 with N = 4
    assert rms_tre_mm > 8.0 * rms_fre_mm
    assert rms_tre_mm == pytest.approx(predicted_tre_mm(cluster_mm, 1.0, far_target_mm)[0], rel=0.1)
    # A small FRE does not promise a small TRE: the two are uncorrelated across registrations.
    assert abs(np.corrcoef(fre, tre[:, 0])[0, 1]) < 0.1
    assert np.mean(tre[fre < np.percentile(fre, 10), 0]) > 0.8 * np.mean(tre[:, 0])


# -- register_landmarks ------------------------------------------------------------------------


def _noisy_pairs(seed: int, sd_per_axis_mm: float = 1.0):
    truth = _truth(seed)
    rng = np.random.default_rng(seed)
    picked_mm = SPINE_LANDMARKS_MM + rng.normal(0.0, sd_per_axis_mm, SPINE_LANDMARKS_MM.shape)
    return truth, picked_mm, truth.apply_to_points(SPINE_LANDMARKS_MM)


def test_register_landmarks_reports_fre_residuals_leave_one_out_and_predicted_tre():
    truth, picked_mm, mri = _noisy_pairs(seed=2)
    targets = {"near": truth.apply_to_points([0.0, 10.0, 0.0]), "far": truth.apply_to_points([0.0, 300.0, 0.0])}
    result = register_landmarks(NAMES, picked_mm, mri, targets_mri=targets)
    assert result.method == "landmarks" and result.transform.name == "ReferenceToMri" and result.converged
    residuals = np.linalg.norm(result.transform.apply_to_points(picked_mm) - mri, axis=1)
    assert list(result.residuals_mm) == NAMES
    assert np.allclose(list(result.residuals_mm.values()), residuals, atol=1e-12)
    assert result.fre_mm == pytest.approx(np.sqrt(np.mean(residuals**2)), rel=1e-12)
    assert result.provenance["fle_source"] == "estimated from FRE"
    assert result.provenance["fle_mm"] == pytest.approx(result.fre_mm * np.sqrt(10 / 8), rel=1e-12)
    expected_tre = predicted_tre_mm(mri, result.provenance["fle_mm"], list(targets.values()))
    assert np.allclose(list(result.predicted_tre_mm.values()), expected_tre, rtol=1e-12)
    assert result.predicted_tre_mm["far"] > 5 * result.predicted_tre_mm["near"]
    loo = leave_one_out_mm(picked_mm, mri)
    without_3 = rigid_fit(np.delete(picked_mm, 3, axis=0), np.delete(mri, 3, axis=0))
    assert loo[3] == pytest.approx(np.linalg.norm(without_3.apply_to_points(picked_mm[3]) - mri[3]), rel=1e-12)
    assert list(result.provenance["leave_one_out_mm"].values()) == pytest.approx(loo.tolist(), rel=1e-12)
    assert np.all(loo > residuals)  # a landmark left out is predicted worse than it is fitted
    assert result.provenance["outliers"] == []
    assert "FRE is not TRE" in result.message
    json.dumps(result.to_dict(), allow_nan=False)  # the whole result is plain JSON

    given = register_landmarks(NAMES, picked_mm, mri, fle_mm=np.sqrt(3.0), targets_mri=targets)
    assert given.provenance["fle_source"] == "given" and given.parameters["fle_mm"] == pytest.approx(np.sqrt(3.0))
    expected_tre = predicted_tre_mm(mri, np.sqrt(3.0), list(targets.values()))
    assert np.allclose(list(given.predicted_tre_mm.values()), expected_tre, rtol=1e-12)


def test_leave_one_out_flags_a_displaced_landmark_and_nothing_in_clean_data():
    for seed in range(20):
        _, picked_mm, mri = _noisy_pairs(seed)
        assert register_landmarks(NAMES, picked_mm, mri).provenance["outliers"] == [], seed
    _, picked_mm, mri = _noisy_pairs(seed=4)
    picked_mm[6] += [6.0, -8.0, 0.0]  # 10 mm off: a mislabelled or badly picked landmark
    result = register_landmarks(NAMES, picked_mm, mri)
    assert result.provenance["outliers"] == ["landmark 6"]
    loo = result.provenance["leave_one_out_mm"]
    assert loo["landmark 6"] > 3 * np.median(list(loo.values()))
    assert "likely outliers: landmark 6 (leave-one-out" in result.message


def test_leave_one_out_is_none_where_the_others_cannot_define_a_transform():
    reference = COLLINEAR_PLUS_ONE_MM  # without the last landmark the others are collinear
    result = register_landmarks(["a", "b", "c", "d"], reference, reference)
    assert result.provenance["leave_one_out_mm"]["d"] is None
    assert result.provenance["leave_one_out_mm"]["a"] == pytest.approx(0.0, abs=1e-9)
    three = register_landmarks(["a", "b", "d"], reference[[0, 1, 3]], reference[[0, 1, 3]])
    assert three.provenance["leave_one_out_mm"] == {} and three.provenance["outliers"] == []
    assert "no leave-one-out check with only 3 landmarks" in three.message


@pytest.mark.parametrize(
    "names, kwargs, message",
    [
        (NAMES[:9], {}, "9 names for 10 landmark pairs"),
        (["a", "b", "a", "c", "b", *NAMES[5:]], {}, "landmark names must be unique; repeated: 'a', 'b'"),
        (NAMES, {"outlier_threshold": 0.0}, "outlier_threshold must be a finite, positive number, got 0.0"),
        (NAMES, {"outlier_threshold": "high"}, "outlier_threshold must be a finite, positive number, got 'high'"),
        (NAMES, {"fle_mm": -2.0}, r"FLE \(mm\) must be a finite, non-negative number, got -2.0"),
    ],
)
def test_register_landmarks_rejects_bad_arguments(names, kwargs, message):
    with pytest.raises(RegistrationError, match=message):
        register_landmarks(names, SPINE_LANDMARKS_MM, SPINE_LANDMARKS_MM, **kwargs)


def test_weighted_registration_says_its_tre_prediction_assumes_equal_weights():
    _, picked_mm, mri = _noisy_pairs(seed=8)
    weights = np.linspace(1.0, 2.0, 10)
    result = register_landmarks(NAMES, picked_mm, mri, weights=weights)
    assert np.allclose(result.transform.matrix, rigid_fit(picked_mm, mri, weights).matrix, atol=1e-12)
    assert result.parameters["weights"] == pytest.approx((weights / weights.sum()).tolist())
    assert "weighted fit: predicted TRE assumes equal weights" in result.message


# -- the demo case ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_case(tmp_path_factory):
    from workbench.phantom.democase import DemoCaseSpec, generate_demo_case

    spec = DemoCaseSpec(seed=3, sweep_speed_mm_s=90.0, sweeps=("transverse",), posture_change=False)
    return generate_demo_case(tmp_path_factory.mktemp("landmarks") / "case", spec)


def test_demo_case_landmark_registration_meets_its_ground_truth(demo_case):
    case = load_case(demo_case)
    ground_truth = json.loads((demo_case / "ground_truth.json").read_text())
    truth = Transform.from_name("ReferenceToMri", np.reshape(ground_truth["ReferenceToMri"], (4, 4)))
    targets_mri = {name: np.array(point) for name, point in ground_truth["targets_mri"].items()}

    pairs = pair_landmarks(case.landmarks)
    assert len(pairs.names) == len(ground_truth["landmarks_reference_exact"]) == 32
    assert {landmark.frame for landmark in pairs.unpaired} == {"Mri"}  # MRI-only landmarks
    result = register_landmarks(pairs.names, pairs.points_reference, pairs.points_mri, targets_mri=targets_mri)

    points_mri = np.array(list(targets_mri.values()))
    points_reference = truth.inverse().apply_to_points(points_mri)
    measured_mm = np.linalg.norm(result.transform.apply_to_points(points_reference) - points_mri, axis=1)
    predicted_mm = np.array([result.predicted_tre_mm[name] for name in targets_mri])
    assert measured_mm.max() < 3.0
    rms_measured_mm, rms_predicted_mm = np.sqrt(np.mean(measured_mm**2)), np.sqrt(np.mean(predicted_mm**2))
    assert 0.5 < rms_measured_mm / rms_predicted_mm < 2.0, (measured_mm, predicted_mm)
    # 1 mm per axis of localisation error is an FLE of sqrt(3) mm; the FRE-based estimate finds it.
    fle_mm = np.sqrt(3.0) * ground_truth["reference_landmark_fle_mm"]
    assert result.provenance["fle_mm"] == pytest.approx(fle_mm, rel=0.25)
    assert result.provenance["outliers"] == []
