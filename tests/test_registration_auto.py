"""Automatic registration: bone points, ICP, LC2 and the Mattes MI baseline on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from workbench.errors import RegistrationError
from workbench.frames import Transform
from workbench.phantom.anatomy import SpineParameters, build_phantom
from workbench.anatomy import BONE_LABELS, WORKBENCH_TABLE, Label, LabelMap
from workbench.phantom.mri import synthesize_t2
from workbench.registration.intensity import lc2_similarity, register_lc2, register_mattes, rigid_offset
from workbench.registration.params import BonePointParameters, IcpParameters, Lc2Parameters, MattesParameters
from workbench.registration.surface import mri_bone_points, register_icp, us_bone_points

TRUE_MATRIX = rigid_offset([4.0, -6.0, 20.0, 0.0, 0.0, 0.0], np.zeros(3))


@pytest.fixture(scope="module")
def phantom():
    return build_phantom(SpineParameters(seed=3, spacing_mm=1.0, levels=("L3", "L4", "L5")))


@pytest.fixture(scope="module")
def mri(phantom):
    return synthesize_t2(phantom, seed=3)


def _truth(phantom) -> Transform:
    """A ReferenceToMri whose Reference origin sits above the L4 lamina."""
    matrix = TRUE_MATRIX.copy()
    matrix[:3, 3] = phantom.vertebra_centres_lps["L4"] + [0.0, 40.0, 0.0]
    return Transform(matrix, "Reference", "Mri")


def _rotation_deg(matrix: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(matrix[:3, :3]) - 1) / 2, -1, 1))))


@pytest.fixture(scope="module")
def us_like(phantom):
    """A noise-free 'US' volume in Reference made from the phantom's labels: grey per tissue,
    bright bone surface. (60 x 50 x 60) mm at 1 mm, covering L4's posterior elements."""
    truth = _truth(phantom)
    grey = np.full(256, 40.0)
    grey[[Label.FAT, Label.SKIN]] = 90.0
    grey[[Label.ERECTOR_SPINAE, Label.MULTIFIDUS]] = 60.0
    grey[[int(label) for label in BONE_LABELS]] = 10.0
    grey[Label.LIGAMENT] = 120.0
    image = sitk.Image([60, 50, 60], sitk.sitkFloat32)
    image.SetOrigin((-30.0, -40.0, -30.0))
    index_kji = np.indices((60, 50, 60)).reshape(3, -1).T
    points_reference = index_kji[:, ::-1] + np.array(image.GetOrigin())
    labels = phantom.label_at(truth.apply_to_points(points_reference)).reshape(60, 50, 60)
    bone = np.isin(labels, [int(label) for label in BONE_LABELS]).astype(np.float32)
    surface = np.clip(bone - np.roll(bone, -1, axis=1), 0, 1)  # bone voxels with soft tissue behind (+y)
    array = grey[labels] + 200.0 * surface
    from scipy import ndimage

    volume = sitk.GetImageFromArray(ndimage.gaussian_filter(array, 0.7).astype(np.float32))
    volume.CopyInformation(image)
    return volume, truth


# -- bone points and ICP ----------------------------------------------------------------------


def test_mri_bone_points_are_posterior_faces_of_bone(phantom):
    points = mri_bone_points(phantom.label_map)
    assert len(points) > 1000
    # Half a voxel behind each point is soft tissue, half a voxel in front is bone.
    behind = phantom.label_at(points + [0.0, 0.5, 0.0])
    inside = phantom.label_at(points - [0.0, 0.5, 0.0])
    assert np.isin(inside, [int(v) for v in BONE_LABELS]).all()
    assert not np.isin(behind, [int(v) for v in BONE_LABELS]).any()


# Point-to-point ICP on voxel-lattice points has staircase local minima about a voxel apart, so
# it is given a sub-voxel offset; point-to-plane recovers a 4 mm / 2.7 deg one.
@pytest.mark.parametrize(
    "point_to_plane, offset", [(True, [2.0, -1.0, 1.5, 3.0, -2.0, 2.0]), (False, [0.3, -0.2, 0.2, 0.3, -0.2, 0.2])]
)
def test_icp_on_exact_surface_points_recovers_the_transform(phantom, point_to_plane, offset):
    truth = _truth(phantom)
    points_mri = mri_bone_points(phantom.label_map)
    near_l4 = np.linalg.norm(points_mri - phantom.vertebra_centres_lps["L4"], axis=1) < 45
    points_reference = truth.inverse().apply_to_points(points_mri[near_l4][::3])
    initial = Transform(truth.matrix @ rigid_offset(offset, np.zeros(3)), "Reference", "Mri")
    params = IcpParameters(trim_fraction=1.0, restart_offset_mm=0.0, point_to_plane=point_to_plane)
    result = register_icp(points_reference, points_mri, initial, params)
    error = np.linalg.inv(truth.matrix) @ result.transform.matrix
    assert result.method == "bone-icp" and result.transform.name == "ReferenceToMri"
    # docs/registration.md: on exact surface points it recovers the transform to < 1e-6 mm.
    moved_mri = result.transform.apply_to_points(points_reference, from_frame="Reference")
    assert np.abs(moved_mri - points_mri[near_l4][::3]).max() < 1e-6
    assert np.linalg.norm(error[:3, 3]) < 1e-6
    assert _rotation_deg(error) < 1e-6
    assert result.metric_trace[-1] < 1e-6 < result.metric_trace[0]
    assert result.converged


def test_icp_converged_is_false_when_the_last_stage_runs_out_of_iterations(phantom):
    truth = _truth(phantom)
    points_mri = mri_bone_points(phantom.label_map)
    near_l4 = np.linalg.norm(points_mri - phantom.vertebra_centres_lps["L4"], axis=1) < 45
    points_reference = truth.inverse().apply_to_points(points_mri[near_l4][::3])
    initial = Transform(truth.matrix @ rigid_offset([2.0, -1.0, 1.5, 3.0, -2.0, 2.0], np.zeros(3)), "Reference", "Mri")
    # One stage, one step from a 4 mm offset: that step moves the points by millimetres, so not converged.
    hurried = IcpParameters(distance_schedule_mm=(20.0,), trim_fraction=1.0, restart_offset_mm=0.0, max_iterations=1)
    result = register_icp(points_reference, points_mri, initial, hurried)
    assert not result.converged and "stopped at max_iterations (1)" in result.message
    assert len(result.metric_trace) == 1


def test_us_bone_points_find_a_ridge_with_a_shadow():
    # One frame: soft tissue (grey 80), a bright line at row 200 and shadow below; 0.2 mm pixels.
    frame = np.full((400, 100), 80, dtype=np.uint8)
    frame[198:203] = 250
    frame[203:] = 5
    image_to_probe = Transform(np.diag([0.2, 0.2, 0.2, 1.0]), "Image", "Probe")
    pose = np.eye(4)
    pose[:3, 3] = [10.0, 0.0, 0.0]
    points = us_bone_points(frame[None], image_to_probe, pose[None], BonePointParameters(column_step=10))
    assert len(points) == 10
    np.testing.assert_allclose(points[:, 1], 200 * 0.2, atol=0.2)
    np.testing.assert_allclose(points[:, 0], 10.0 + np.arange(0, 100, 10) * 0.2)


# -- LC2 and Mattes ------------------------------------------------------------------------------


def test_lc2_is_maximal_at_the_truth(mri, us_like):
    volume, truth = us_like
    at_truth = lc2_similarity(mri, volume, truth)
    for offset in ([5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0]):
        moved = Transform(truth.matrix @ rigid_offset(np.r_[0, 0, 0, offset], np.zeros(3)), "Reference", "Mri")
        assert at_truth > lc2_similarity(mri, volume, moved) + 0.02
    assert 0.25 < at_truth <= 1.0  # the label-made "US" is only partly a linear combination


def test_lc2_recovers_a_5_mm_3_deg_offset(mri, us_like):
    volume, truth = us_like
    offset = rigid_offset([3.0 / np.sqrt(2), 0.0, 3.0 / np.sqrt(2), 3.0, 4.0, 0.0], np.zeros(3))  # 3 deg, 5 mm
    initial = Transform(truth.matrix @ offset, "Reference", "Mri")
    params = Lc2Parameters(levels_mm=(4.0, 2.0), patch_radius_vox=2)
    result = register_lc2(mri, volume, initial, params=params)
    targets_reference = np.array([[0.0, -30.0, 0.0], [20.0, -25.0, 15.0], [-20.0, -25.0, -15.0]])
    estimated, true = result.transform.apply_to_points(targets_reference), truth.apply_to_points(targets_reference)
    tre_mm = np.linalg.norm(estimated - true, axis=1)
    # Noise-free, but the 'US' is not exactly a linear combination of MRI and its gradient:
    # 1.5 mm is the stated tolerance.
    assert tre_mm.max() < 1.5
    assert result.method == "lc2" and result.transform.name == "ReferenceToMri"
    assert len(result.metric_trace) > 20
    final = lc2_similarity(mri, volume, result.transform, params=params)
    assert final > lc2_similarity(mri, volume, initial, params=params) + 0.05


def test_mattes_runs_and_returns_reference_to_mri(mri, us_like):
    volume, truth = us_like
    initial = Transform(truth.matrix @ rigid_offset([0, 0, 0, 3.0, 0, 0], np.zeros(3)), "Reference", "Mri")
    result = register_mattes(mri, volume, initial, params=MattesParameters(iterations=30))
    assert result.method == "mattes-mi" and result.transform.name == "ReferenceToMri"
    assert result.transform.is_rigid(1e-6)
    assert 0 < len(result.metric_trace) <= 60
    assert np.all(np.isfinite(result.metric_trace))


# -- bad input ---------------------------------------------------------------------------------


def test_empty_mask_is_refused(mri, us_like):
    volume, truth = us_like
    with pytest.raises(RegistrationError, match="US mask is empty"):
        register_lc2(mri, volume, truth, us_mask=np.zeros((60, 50, 60), bool))


def test_mask_of_another_shape_is_refused(mri, us_like):
    volume, truth = us_like
    with pytest.raises(RegistrationError, match=r"us_mask has shape \(5, 5, 5\)"):
        register_mattes(mri, volume, truth, us_mask=np.ones((5, 5, 5), bool))


def test_wrong_initial_transform_is_refused(mri, us_like):
    volume, truth = us_like
    with pytest.raises(RegistrationError, match="must be ReferenceToMri, got MriToReference"):
        register_lc2(mri, volume, truth.inverse())


def test_frames_without_bone_give_a_clear_error():
    image_to_probe = Transform(np.diag([0.2, 0.2, 0.2, 1.0]), "Image", "Probe")
    with pytest.raises(RegistrationError, match="no bone surface found in 2 frames"):
        us_bone_points(np.full((2, 400, 100), 60, np.uint8), image_to_probe, np.stack([np.eye(4)] * 2))


def test_mismatched_frames_and_poses_are_refused():
    image_to_probe = Transform(np.diag([0.2, 0.2, 0.2, 1.0]), "Image", "Probe")
    with pytest.raises(RegistrationError, match="3 frames but probe_to_reference has shape"):
        us_bone_points(np.zeros((3, 40, 10), np.uint8), image_to_probe, np.stack([np.eye(4)] * 2))


def test_label_map_without_bone_is_refused():
    with pytest.raises(RegistrationError, match="no bone voxels"):
        mri_bone_points(LabelMap(sitk.Image([5, 5, 5], sitk.sitkUInt8), WORKBENCH_TABLE))
    with pytest.raises(RegistrationError, match="needs a workbench.anatomy.LabelMap"):
        mri_bone_points(sitk.Image([5, 5, 5], sitk.sitkUInt8))  # values mean nothing without a table


def test_icp_refuses_empty_points_and_too_few_pairs():
    identity = Transform.identity("Reference", "Mri")
    with pytest.raises(RegistrationError, match="points_reference is empty"):
        register_icp(np.zeros((0, 3)), np.ones((10, 3)), identity)
    far = np.random.default_rng(0).normal(size=(50, 3))
    with pytest.raises(RegistrationError, match="ICP found only 0 point pairs within 20 mm"):
        register_icp(far, far + 100.0, identity)


def test_bad_parameters_are_refused():
    with pytest.raises(RegistrationError, match="LC2 patch_radius_vox must be a positive number"):
        Lc2Parameters(patch_radius_vox=0)
    with pytest.raises(RegistrationError, match="ICP trim_fraction must be within"):
        IcpParameters(trim_fraction=1.5)
    with pytest.raises(RegistrationError, match="one entry per level"):
        MattesParameters(shrink_factors=(4, 2, 1))
