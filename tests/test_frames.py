"""Frames and transforms: naming, composition, inversion, points vs vectors, the repository graph."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from workbench.errors import FrameError
from workbench.frames import Transform, TransformRepository, apply, apply_affine, apply_linear, split_transform_name, transform_name


def rigid(rotvec_deg, translation_mm, from_frame, to_frame) -> Transform:
    rotation = Rotation.from_rotvec(np.radians(rotvec_deg)).as_matrix()
    return Transform.from_rotation_translation(rotation, translation_mm, from_frame, to_frame)


def test_names_split_and_join():
    assert split_transform_name("ImageToProbe") == ("Image", "Probe")
    assert split_transform_name("ProbeToTrackerTransform") == ("Probe", "Tracker")
    assert transform_name("Reference", "Mri") == "ReferenceToMri"
    # As PLUS parses names: "To" splits only where a capitalised word follows.
    assert split_transform_name("ToolToTracker") == ("Tool", "Tracker")
    assert split_transform_name("StylusTipToStylus") == ("StylusTip", "Stylus")


@pytest.mark.parametrize(
    "bad", ["ImageProbe", "ToProbe", "ImageTo", "AToBToC", "Image To Probe", "", "Image_To", "ToolToToTracker"]
)
def test_bad_transform_names_rejected(bad):
    with pytest.raises(FrameError, match="invalid transform name|invalid frame name"):
        split_transform_name(bad)


@pytest.mark.parametrize("bad", ["ProbeToReference", "ToTracker", "NeedleTo"])
def test_frame_names_must_not_contain_the_word_to(bad):
    with pytest.raises(FrameError, match="must not contain the word 'To'"):
        Transform(np.eye(4), bad, "Reference")
    assert Transform(np.eye(4), "ToolTip", "Reference").name == "ToolTipToReference"


def test_point_vs_vector_and_scale():
    m = np.diag([0.5, 0.25, 1.0, 1.0])
    m[:3, 3] = [10.0, 20.0, 30.0]
    image_to_probe = Transform(m, "Image", "Probe")
    # A pixel position picks up the translation; a pixel displacement does not.
    np.testing.assert_allclose(image_to_probe.apply_to_points([2, 4, 0]), [11.0, 21.0, 30.0])
    np.testing.assert_allclose(image_to_probe.apply_to_vectors([2, 4, 0]), [1.0, 1.0, 0.0])
    np.testing.assert_allclose(image_to_probe.scale, [0.5, 0.25, 1.0])
    assert not image_to_probe.is_rigid()
    pts = np.array([[0, 0, 0], [1, 1, 1]], float)
    assert image_to_probe.apply_to_points(pts).shape == (2, 3)


def test_composition_chains_and_refuses_mismatch():
    image_to_probe = rigid([0, 0, 90], [1, 2, 3], "Image", "Probe")
    probe_to_reference = rigid([30, 0, 0], [-5, 0, 7], "Probe", "Reference")
    image_to_reference = probe_to_reference @ image_to_probe
    assert image_to_reference.name == "ImageToReference"
    p = np.array([3.0, -4.0, 12.0])
    np.testing.assert_allclose(
        image_to_reference.apply_to_points(p),
        probe_to_reference.apply_to_points(image_to_probe.apply_to_points(p)),
        atol=1e-12,
    )
    with pytest.raises(FrameError, match="cannot compose ImageToProbe @ ProbeToReference"):
        image_to_probe @ probe_to_reference


def test_inverse_round_trip_rigid_and_affine():
    t = rigid([10, -20, 33], [100, -50, 25], "Reference", "Mri")
    inv = t.inverse()
    assert inv.name == "MriToReference"
    np.testing.assert_allclose((inv @ t).matrix, np.eye(4), atol=1e-12)
    a = Transform(np.array([[0.1, 0.01, 0, 5], [0, 0.2, 0, 6], [0, 0, 1, 7], [0, 0, 0, 1]]), "Image", "Probe")
    np.testing.assert_allclose((a @ a.inverse()).matrix, np.eye(4), atol=1e-12)


@pytest.mark.parametrize(
    "matrix, message",
    [
        (np.full((4, 4), np.nan), "NaN or infinity"),
        (np.eye(3), "must be 4x4"),
        (np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]), "last row must be 0 0 0 1"),
        (np.diag([1, 1, 0, 1]), "singular"),
        ([["a"] * 4] * 4, "not numeric"),
    ],
)
def test_bad_matrices_rejected(matrix, message):
    with pytest.raises(FrameError, match=message):
        Transform(matrix, "Probe", "Tracker")


def test_matrix_is_read_only_copy():
    m = np.eye(4)
    t = Transform(m, "Probe", "Tracker")
    m[0, 3] = 99.0
    assert t.matrix[0, 3] == 0.0
    with pytest.raises(ValueError):
        t.matrix[0, 3] = 1.0


def test_repository_composes_and_inverts_like_plus():
    image_to_probe = rigid([0, 0, 90], [1, 2, 3], "Image", "Probe")
    probe_to_tracker = rigid([5, 10, -15], [150, -90, -20], "Probe", "Tracker")
    reference_to_tracker = rigid([-3, 2, 170], [260, 90, 3], "Reference", "Tracker")
    reference_to_mri = rigid([0, 90, 0], [-10, 20, 30], "Reference", "Mri")
    repo = TransformRepository()
    for t in (image_to_probe, probe_to_tracker, reference_to_tracker, reference_to_mri):
        repo.set_transform(t)

    expected = reference_to_mri @ reference_to_tracker.inverse() @ probe_to_tracker @ image_to_probe
    got = repo.get("ImageToMri")
    assert got.name == "ImageToMri"
    np.testing.assert_allclose(got.matrix, expected.matrix, atol=1e-9)
    np.testing.assert_allclose(repo.get("MriToImage").matrix, expected.inverse().matrix, atol=1e-9)
    np.testing.assert_allclose(repo.get("TrackerToTracker").matrix, np.eye(4))
    assert repo.has("ProbeToReference") and not repo.has("ProbeToNeedle")


def test_repository_errors_and_replacement():
    repo = TransformRepository()
    repo.set_transform(rigid([0, 0, 0], [1, 0, 0], "Probe", "Tracker"))
    repo.set_transform(rigid([0, 0, 0], [0, 1, 0], "Needle", "Reference"))
    with pytest.raises(FrameError, match="no stored transform involves frame 'Mri'"):
        repo.get("ProbeToMri")
    with pytest.raises(FrameError, match="are not connected"):
        repo.get("ProbeToReference")
    # Setting the inverse edge replaces the stored one rather than adding a contradiction.
    repo.set_transform(rigid([0, 0, 0], [5, 0, 0], "Tracker", "Probe"))
    assert len(repo) == 2
    np.testing.assert_allclose(repo.get("ProbeToTracker").translation, [-5, 0, 0])
    repo.remove("TrackerToProbe")
    assert len(repo) == 1
    with pytest.raises(FrameError, match="no stored transform"):
        repo.remove("TrackerToProbe")


def test_the_examples_in_the_frames_docstrings_run():
    import doctest

    import workbench.frames

    results = doctest.testmod(workbench.frames, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert results.attempted >= 20  # composition, inverse, points vs vectors, names, the repository
    assert results.failed == 0


def test_apply_affine_is_the_hand_written_expression_bit_for_bit():
    rng = np.random.default_rng(0)
    matrix = rigid([10, -20, 5], [3.0, -4.0, 50.0], "Reference", "Mri").matrix.copy()
    matrix[:3, :3] *= [0.2, 0.3, 1.5]  # scaled, as ImageToProbe
    for points in (rng.normal(0, 100, (1000, 3)), rng.normal(0, 100, (7, 11, 3)), rng.integers(0, 200, (50, 3))):
        by_hand = points @ matrix[:3, :3].T + matrix[:3, 3]
        assert np.array_equal(apply_affine(matrix, points), by_hand)
        assert apply_affine(matrix, points).shape == points.shape
        assert np.array_equal(apply_linear(matrix, points), points @ matrix[:3, :3].T)
    transform = Transform(matrix, "Image", "Probe")
    points = rng.normal(0, 100, (20, 3))
    assert np.array_equal(transform.apply_to_points(points), apply_affine(matrix, points))
    assert np.array_equal(transform.apply_to_vectors(points), apply_linear(matrix, points))
    np.testing.assert_allclose(apply_affine(matrix, [1.0, 2.0, 3.0]), transform.apply_to_points([1.0, 2.0, 3.0]))
    with pytest.raises(FrameError, match="shape"):
        apply_affine(matrix, np.zeros((4, 2)))
    with pytest.raises(FrameError, match="4x4"):
        apply_affine(np.eye(3), np.zeros((4, 3)))


def test_apply_checks_the_frame_of_the_points():
    reference_to_mri = rigid([0, 0, 90], [1, 2, 3], "Reference", "Mri")
    point_reference = np.array([10.0, 0.0, 0.0])
    np.testing.assert_allclose(apply(reference_to_mri, point_reference, from_frame="Reference"), [1.0, 12.0, 3.0], atol=1e-12)
    np.testing.assert_allclose(reference_to_mri.apply_to_points(point_reference, from_frame="Reference"), [1.0, 12.0, 3.0], atol=1e-12)
    np.testing.assert_allclose(reference_to_mri.apply_to_vectors(point_reference, from_frame="Reference"), [0.0, 10.0, 0.0], atol=1e-12)
    with pytest.raises(FrameError, match="cannot apply ReferenceToMri to points in 'Mri'"):
        apply(reference_to_mri, point_reference, from_frame="Mri")
    with pytest.raises(FrameError, match="cannot apply ReferenceToMri to vectors in 'Probe'"):
        reference_to_mri.apply_to_vectors(point_reference, from_frame="Probe")
    with pytest.raises(TypeError):
        apply(reference_to_mri, point_reference)  # the frame is not optional here
