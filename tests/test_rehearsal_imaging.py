"""Rehearsal imaging (issue 18): probe placement on the skin, and what the live B-mode shows.

Numbers checked: needle brightness against insertion angle, the in-plane shaft at the pixels it
projects to, the out-of-plane dot, the tip hidden outside the elevational slab, fluid darker
than muscle with enhancement beneath, and the probe geometry (plane through the needle path
within 0.5 mm, orthonormal ImageToMri with the probe's pixel spacing).

The imager's scatterers are fixed to the anatomy and its noise to the image, so two frames at one
pose differ only by what was added: the tests subtract the frame without the needle (or fluid)
to see exactly what it drew.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from phantom_toys import build_toy_phantom

from workbench.anatomy import LabelMap
from workbench.frames import apply_affine
from workbench.phantom.anatomy import SpineParameters, build_phantom
from workbench.phantom.labels import PHANTOM_TABLE
from workbench.phantom.ultrasound import LINEAR_L14_5
from workbench.rehearsal.imaging import (
    ImagingError,
    RehearsalImager,
    needle_visibility,
    tip_visibility,
)
from workbench.rehearsal.injectate import Bolus, InjectateState
from workbench.rehearsal.needle import NeedleState
from workbench.rehearsal.probe import (
    REHEARSAL_PROBE,
    ProbePlacementError,
    ProbePose,
    SkinSurface,
    image_to_mri,
    poses_along_sweep,
    snap_to_needle_plane,
)

ELEVATION_FWHM_MM = 4.0
LINEAR_256 = dataclasses.replace(LINEAR_L14_5, line_count=256)
#: Toy back: no bone beyond z = 40 mm; muscle from about 14 mm to 75 mm deep.
NO_BONE_Z_MM = 70.0


@pytest.fixture(scope="module")
def toy_map() -> LabelMap:
    return LabelMap(build_toy_phantom(spacing_mm=1.0).labels, PHANTOM_TABLE)


@pytest.fixture(scope="module")
def toy_skin(toy_map) -> SkinSurface:
    return SkinSurface(toy_map)


@pytest.fixture(scope="module")
def linear_imager(toy_map) -> RehearsalImager:
    return RehearsalImager(toy_map, LINEAR_256, elevation_fwhm_mm=ELEVATION_FWHM_MM)


@pytest.fixture(scope="module")
def convex_imager(toy_map) -> RehearsalImager:
    return RehearsalImager(toy_map, REHEARSAL_PROBE, elevation_fwhm_mm=ELEVATION_FWHM_MM)


@pytest.fixture(scope="module")
def phantom():
    return build_phantom(SpineParameters(levels=("L3", "L4"), spacing_mm=1.0))


def pixel_to_mri(image_to_mri: np.ndarray, column: float, row: float, z_px: float = 0.0) -> np.ndarray:
    """(3,) Mri mm of an Image pixel."""
    return apply_affine(image_to_mri, np.array([column, row, z_px], dtype=float))


def mri_to_pixel(image_to_mri: np.ndarray, points_mri: np.ndarray) -> np.ndarray:
    """(N, 3) Image pixels (column, row, z) of (N, 3) Mri points, mm."""
    return apply_affine(np.linalg.inv(image_to_mri), np.atleast_2d(points_mri))


def in_plane_needle(matrix: np.ndarray, probe, angle_deg: float, entry_px, depth_mm: float) -> NeedleState:
    """A 22G needle in the image plane from pixel ``entry_px``, ``angle_deg`` below image +x."""
    spacing = probe.pixel_spacing_mm
    x_axis, y_axis = matrix[:3, 0] / spacing, matrix[:3, 1] / spacing
    direction = math.cos(math.radians(angle_deg)) * x_axis + math.sin(math.radians(angle_deg)) * y_axis
    return NeedleState(pixel_to_mri(matrix, *entry_px), direction, depth_mm, 90.0, 22)


def shaft_pixels(matrix: np.ndarray, needle: NeedleState, trim: float = 0.1) -> np.ndarray:
    """(N, 2) integer (column, row) pixels of the projected shaft, ends trimmed by ``trim``."""
    points = needle.shaft_points_mri(0.2)
    keep = slice(int(trim * len(points)), int((1 - trim) * len(points)))
    return np.rint(mri_to_pixel(matrix, points[keep])[:, :2]).astype(int)


def toy_pose_matrix(skin, probe, x_mm=0.0, z_mm=NO_BONE_Z_MM, rotation_deg=0.0) -> np.ndarray:
    return image_to_mri(ProbePose(x_mm, z_mm, rotation_deg), probe, skin)


# -- needle visibility -------------------------------------------------------------------------


def test_needle_visibility_falls_monotonically_with_angle():
    angles = np.linspace(0.0, 90.0, 91)
    values = needle_visibility(angles)
    assert np.all(np.diff(values) < 0)
    assert needle_visibility(0.0) == pytest.approx(1.0, abs=1e-9)
    assert needle_visibility(30.0) == pytest.approx(0.33, abs=0.01)
    assert needle_visibility(60.0) == pytest.approx(0.013, abs=0.005)
    assert needle_visibility(-30.0) == pytest.approx(needle_visibility(30.0))  # a line has no sign
    assert needle_visibility(150.0) == pytest.approx(needle_visibility(30.0))


def test_in_plane_needle_brightness_falls_with_insertion_angle(toy_skin, linear_imager):
    """Linear probe (the beam is the same on every line): shaft brightness over tissue at 0/30/60 deg."""
    matrix = toy_pose_matrix(toy_skin, LINEAR_256)
    plain = linear_imager.render(matrix).astype(float)
    rises = {}
    for angle_deg in (0.0, 30.0, 60.0):
        needle = in_plane_needle(matrix, LINEAR_256, angle_deg, (40, 60), 24.0)
        frame = linear_imager.render(matrix, needle).astype(float)
        pixels = shaft_pixels(matrix, needle)
        rises[angle_deg] = float(np.median(frame[pixels[:, 1], pixels[:, 0]] - plain[pixels[:, 1], pixels[:, 0]]))
    assert rises[0.0] > rises[30.0] + 15 > rises[60.0] + 30
    assert rises[0.0] > 60  # a bright line: over 13 dB above the muscle (4.6 grey levels per dB)
    assert rises[60.0] < 25  # a steep needle hardly shows


def test_in_plane_needle_is_a_line_on_the_projected_shaft(toy_skin, convex_imager):
    probe = REHEARSAL_PROBE
    matrix = toy_pose_matrix(toy_skin, probe)
    needle = in_plane_needle(matrix, probe, 20.0, (150, 40), 50.0)
    plain = convex_imager.render(matrix).astype(float)
    added = convex_imager.render(matrix, needle).astype(float) - plain
    pixels = shaft_pixels(matrix, needle, trim=0.05)
    on_shaft = added[pixels[:, 1], pixels[:, 0]]
    assert np.mean(on_shaft > 30) > 0.9  # the line is continuous along the shaft
    # Where the needle added brightness: on the shaft or in its comet tail (up to 6 diameters
    # = 4.3 mm below it along the beam), nowhere else.
    rows, columns = np.nonzero(added > 30)
    start_px, end_px = mri_to_pixel(matrix, np.stack([needle.entry_mri, needle.tip_mri]))[:, :2]
    along = end_px - start_px
    t = np.clip(((np.stack([columns, rows], 1) - start_px) @ along) / (along @ along), 0, 1)
    nearest = start_px + t[:, None] * along
    distance_mm = np.linalg.norm(np.stack([columns, rows], 1) - nearest, axis=1) * probe.pixel_spacing_mm
    below = rows >= nearest[:, 1] - 1
    assert np.mean((distance_mm < 1.5) | (below & (distance_mm < 6.0))) > 0.97
    assert len(rows) > 0.8 * len(pixels)


def test_out_of_plane_needle_shows_only_the_dot_where_it_crosses_the_slab(toy_skin, convex_imager):
    """The plane crosses a shallow needle at right angles: one compact dot, at the crossing."""
    probe = REHEARSAL_PROBE
    sagittal = toy_pose_matrix(toy_skin, probe, rotation_deg=90.0)  # image x superior, plane x = 0
    # Needle along patient x (across the plane) 30 mm deep, 20 deg down, tip 15 mm beyond the plane.
    direction = np.array([-math.cos(math.radians(20)), -math.sin(math.radians(20)), 0.0])
    crossing = pixel_to_mri(sagittal, 255.5, 150.0)
    entry = crossing - 40.0 * direction
    needle = NeedleState(entry, direction, 55.0, 90.0, 22)
    added = convex_imager.render(sagittal, needle).astype(float) - convex_imager.render(sagittal).astype(float)
    rows, columns = np.nonzero(added > 30)
    assert len(rows) > 10
    spacing = probe.pixel_spacing_mm
    # A dot: no wider than the lateral beam and the shaft's slant through the slab, and only
    # the comet tail (<= 4.3 mm) plus the pulse below it.
    assert (columns.max() - columns.min()) * spacing < 6.0
    assert (rows.max() - rows.min()) * spacing < 7.0
    assert abs(columns.mean() - 255.5) * spacing < 1.5
    assert abs(rows.min() - 150.0) * spacing < 2.0
    assert tip_visibility(sagittal, probe, needle, ELEVATION_FWHM_MM) < 1e-3


def test_tip_hidden_outside_the_slab_and_seen_like_the_shaft_inside_it(toy_skin, convex_imager):
    probe = REHEARSAL_PROBE
    sagittal = toy_pose_matrix(toy_skin, probe, rotation_deg=90.0)
    direction = np.array([-math.cos(math.radians(20)), -math.sin(math.radians(20)), 0.0])
    crossing = pixel_to_mri(sagittal, 255.5, 150.0)
    entry = crossing - 40.0 * direction
    plain = convex_imager.render(sagittal).astype(float)
    near = np.s_[140:175, 235:277]

    def dot(depth_mm):
        needle = NeedleState(entry, direction, depth_mm, 90.0, 22)
        added = convex_imager.render(sagittal, needle).astype(float) - plain
        return float(added[near].max()), tip_visibility(sagittal, probe, needle, ELEVATION_FWHM_MM)

    short_of_plane = dot(40.0 - 2.0 * ELEVATION_FWHM_MM / math.cos(math.radians(20)))  # tip 8 mm before the plane
    tip_in_slab = dot(40.0 + 0.5)  # tip 0.5 mm past the plane
    shaft_through = dot(55.0)  # tip 15 mm past: the dot is shaft
    assert short_of_plane[0] < 5 and short_of_plane[1] < 1e-3  # nothing shows: the tip is hidden
    assert tip_in_slab[1] > 0.5 and shaft_through[1] < 1e-3
    # The tip's dot and the shaft's dot look alike (within 25 grey levels of each other).
    assert tip_in_slab[0] > 40 and abs(tip_in_slab[0] - shaft_through[0]) < 25


def test_elevational_thickness_shows_a_needle_beside_the_plane(toy_skin, linear_imager):
    """A 30 deg needle parallel to the plane, offset across it: 0 and 1.5 mm show, 4 mm (twice FWHM/2) fades."""
    matrix = toy_pose_matrix(toy_skin, LINEAR_256)
    plain = linear_imager.render(matrix).astype(float)
    spacing = LINEAR_256.pixel_spacing_mm
    rises = []
    for offset_mm in (0.0, 1.5, 4.0):
        needle = in_plane_needle(matrix, LINEAR_256, 30.0, (40, 60), 24.0)
        needle = dataclasses.replace(needle, entry_mri=needle.entry_mri + offset_mm * matrix[:3, 2] / spacing)
        frame = linear_imager.render(matrix, needle).astype(float)
        pixels = shaft_pixels(matrix, needle)  # its projection onto the plane
        rises.append(float(np.median(frame[pixels[:, 1], pixels[:, 0]] - plain[pixels[:, 1], pixels[:, 0]])))
    assert rises[0] > rises[1] + 8  # 1.5 mm off: dimmer (beam profile 0.46) ...
    assert rises[1] > 80  # ... but still a clear line: the slice has a thickness
    assert rises[2] < 30 and rises[1] - rises[2] > 50  # 4 mm off (profile 0.06): it fades into the speckle


# -- injectate ---------------------------------------------------------------------------------


def test_fluid_is_darker_than_muscle_with_enhancement_beneath(toy_skin, convex_imager):
    probe = REHEARSAL_PROBE
    matrix = toy_pose_matrix(toy_skin, probe)
    centre = pixel_to_mri(matrix, 255.5, 110.0)  # ~33 mm deep, in the erector spinae
    bolus = Bolus(centre, np.eye(3), np.array([8.0, 5.0, 8.0]), 1.3, "intramuscular")
    plain = convex_imager.render(matrix).astype(float)
    frame = convex_imager.render(matrix, injectate=InjectateState((bolus,))).astype(float)
    rows, columns = np.mgrid[0 : probe.height_px, 0 : probe.width_px]
    points = apply_affine(matrix, np.stack([columns.ravel(), rows.ravel(), np.zeros(rows.size)], 1))
    local = (points - centre) / np.array([8.0, 5.0, 8.0])
    radius = np.sqrt(np.sum(local**2, axis=1)).reshape(rows.shape)
    inside = radius < 0.8
    ring = (radius > 1.4) & (radius < 2.0) & (rows < 110)  # muscle around and above it
    fluid_grey, muscle_grey = frame[inside].mean(), frame[ring].mean()
    assert muscle_grey - fluid_grey > 60, (fluid_grey, muscle_grey)
    # Posterior enhancement: the muscle beneath the fluid is brighter than without it.
    beneath = (np.abs(columns - 255.5) < 8) & (rows > 160) & (rows < 200)
    assert frame[beneath].mean() - plain[beneath].mean() > 3.0


# -- probe geometry ----------------------------------------------------------------------------


def test_image_to_mri_is_orthogonal_with_the_probe_pixel_spacing(phantom):
    skin = SkinSurface(phantom.label_map)
    probe = REHEARSAL_PROBE
    for pose in (ProbePose(20.0, -10.0), ProbePose(-30.0, -25.0, 90.0, 8.0, -5.0), ProbePose(35.0, -20.0, 30.0, -12.0)):
        matrix = image_to_mri(pose, probe, skin)
        columns = matrix[:3, :3] / probe.pixel_spacing_mm
        np.testing.assert_allclose(columns.T @ columns, np.eye(3), atol=1e-9)
        assert np.linalg.det(columns) == pytest.approx(1.0, abs=1e-9)  # right-handed: z = x cross y
        np.testing.assert_array_equal(matrix[3], [0, 0, 0, 1])
        # The transducer face centre is pressed 1 mm into the skin along the normal.
        face_mri = pixel_to_mri(matrix, *probe.transducer_origin_px)
        skin_mri = skin.point_mri(pose.centre_x_mm, pose.centre_z_mm)
        normal = skin.normal_mri(pose.centre_x_mm, pose.centre_z_mm)
        np.testing.assert_allclose(face_mri, skin_mri - 1.0 * normal, atol=1e-6)
    transverse = image_to_mri(ProbePose(20.0, -10.0), probe, skin)[:3, 0] / probe.pixel_spacing_mm
    sagittal = image_to_mri(ProbePose(20.0, -10.0, 90.0), probe, skin)[:3, 0] / probe.pixel_spacing_mm
    assert transverse[0] > 0.97 and sagittal[2] > 0.97  # marker to patient left / superior


def test_skin_surface_follows_the_phantom_skin_and_any_label_encoding(phantom):
    skin = SkinSurface(phantom.label_map)
    x, z = np.meshgrid(np.linspace(-60, 60, 13), np.linspace(-50, 20, 8))
    error_mm = skin.height_mm(x, z) - phantom.skin_surface_y_mm(x, z)
    assert np.nanmax(np.abs(error_mm)) < 1.0  # one voxel
    # The same anatomy with other label values and its own table: the same skin.
    array = phantom.label_map.array.astype(np.int16) + 100
    table = {value + 100: name for value, name in PHANTOM_TABLE.items()}
    imported = LabelMap(array, table, phantom.label_map.mri_voxel_to_mri.matrix)
    np.testing.assert_allclose(SkinSurface(imported).height_mm(x, z), skin.height_mm(x, z))
    with pytest.raises(ProbePlacementError, match="off the back"):
        skin.point_mri(400.0, 0.0)


def test_imported_label_encoding_renders_the_same_frame(phantom):
    array = phantom.label_map.array.astype(np.int16) + 100
    table = {value + 100: name for value, name in PHANTOM_TABLE.items()}
    imported = LabelMap(array, table, phantom.label_map.mri_voxel_to_mri.matrix)
    skin = SkinSurface(phantom.label_map)
    matrix = image_to_mri(ProbePose(30.0, -15.0), REHEARSAL_PROBE, skin)
    native = RehearsalImager(phantom.label_map, REHEARSAL_PROBE, elevation_fwhm_mm=3.0).render(matrix)
    foreign = RehearsalImager(imported, REHEARSAL_PROBE, elevation_fwhm_mm=3.0).render(matrix)
    np.testing.assert_array_equal(native, foreign)
    assert native[REHEARSAL_PROBE.imaging_mask()].mean() > 30  # tissue, not a black frame


@pytest.mark.parametrize("prefer", ["transverse", "sagittal"])
def test_snap_to_needle_plane_puts_the_whole_path_in_the_image(phantom, prefer):
    skin = SkinSurface(phantom.label_map)
    probe = REHEARSAL_PROBE
    for name, target in phantom.targets_lps.items():
        for entry in (phantom.skin_entry_hint_lps[name], skin.point_mri(target[0] + 40.0 * np.sign(target[0]), target[2] + 10.0)):
            pose = snap_to_needle_plane(entry, target, probe, skin, prefer=prefer)
            matrix = image_to_mri(pose, probe, skin)
            path = np.linspace(entry, target, 50)
            pixels = mri_to_pixel(matrix, path)
            assert np.max(np.abs(pixels[:, 2])) * probe.pixel_spacing_mm < 0.5, name
            # Target and most of the path inside the fan.
            mask = probe.imaging_mask()
            columns, rows = np.rint(pixels[:, 0]).astype(int), np.rint(pixels[:, 1]).astype(int)
            valid = (rows >= 0) & (rows < probe.height_px) & (columns >= 0) & (columns < probe.width_px)
            assert valid[-1] and mask[rows[-1], columns[-1]], name
            assert np.mean(valid & mask[np.clip(rows, 0, probe.height_px - 1), np.clip(columns, 0, probe.width_px - 1)]) > 0.8
            needle = NeedleState(entry, (target - entry) / np.linalg.norm(target - entry), np.linalg.norm(target - entry), 120.0, 22)
            assert tip_visibility(matrix, probe, needle, ELEVATION_FWHM_MM) > 0.99
            axis = 2 if prefer == "transverse" else 0  # plane normal closest to the preferred one
            elevation = matrix[:3, 2] / probe.pixel_spacing_mm
            assert abs(elevation[axis]) > 0.8, (name, elevation)


def test_sweep_poses_interpolate_between_start_and_end(phantom):
    skin = SkinSurface(phantom.label_map)
    start, end = ProbePose(25.0, -40.0, 90.0), ProbePose(25.0, 10.0, 90.0, 10.0)
    poses = poses_along_sweep((start, end), REHEARSAL_PROBE, skin, frame_count=11)
    assert len(poses) == 11
    np.testing.assert_allclose(poses[0], image_to_mri(start, REHEARSAL_PROBE, skin))
    np.testing.assert_allclose(poses[-1], image_to_mri(end, REHEARSAL_PROBE, skin))
    faces = np.array([pixel_to_mri(m, *REHEARSAL_PROBE.transducer_origin_px) for m in poses])
    np.testing.assert_allclose(np.diff(faces[:, 2]), 5.0, atol=0.3)  # 50 mm in 10 steps along z


def test_imager_rejects_a_pose_of_another_probe(toy_map, toy_skin, convex_imager):
    matrix = toy_pose_matrix(toy_skin, LINEAR_256)
    with pytest.raises(ImagingError, match="pixels"):
        convex_imager.render(matrix)
    with pytest.raises(ImagingError, match="elevation_fwhm_mm"):
        RehearsalImager(toy_map, REHEARSAL_PROBE, elevation_fwhm_mm=0.0)
    with pytest.raises(ImagingError, match="odd"):
        RehearsalImager(toy_map, REHEARSAL_PROBE, elevation_fwhm_mm=4.0, elevation_planes=4)


def test_benchmark_reports_the_rate_and_the_setting():
    from workbench.rehearsal.bench import run_rehearsal_benchmark

    result = run_rehearsal_benchmark(frames=2, lines=64, spacing_mm=1.0)
    assert result["lines"] == 64 and result["elevation_fwhm_mm"] == 4.0
    assert result["image_size_px"] == [REHEARSAL_PROBE.width_px, REHEARSAL_PROBE.height_px]
    assert result["frames_per_s"] > 0 and result["ms_per_frame_median"] == pytest.approx(1e3 / result["frames_per_s"], rel=0.01)
    assert result["cpu_count"] >= 1 and "load_average_1min" in result


def test_recorded_sweep_poses_compose_tracking_calibration_and_registration():
    from workbench.frames import Transform
    from workbench.io.sequence import TrackedSequence
    from workbench.phantom.ultrasound import rotation_matrices

    probe_to_reference = np.tile(np.eye(4), (3, 1, 1))
    probe_to_reference[:, :3, :3] = rotation_matrices(np.array([[0.0, 0.1, 0.0], [0.2, 0.0, 0.0], [0.0, 0.0, 0.3]]))
    probe_to_reference[:, :3, 3] = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]
    sequence = TrackedSequence(
        images=None, timestamps_s=np.arange(3.0), transforms={"ProbeToReference": probe_to_reference},
        transform_status={"ProbeToReference": np.array([True, False, True])},
    )
    rotation = rotation_matrices(np.array([0.0, 0.0, 0.5]))
    reference_to_mri = Transform.from_rotation_translation(rotation, (10.0, 90.0, -20.0), "Reference", "Mri")
    image_to_probe = REHEARSAL_PROBE.image_to_probe()
    poses = poses_along_sweep(sequence, image_to_probe=image_to_probe, reference_to_mri=reference_to_mri)
    assert len(poses) == 2  # the INVALID frame is left out
    for pose, index in zip(poses, (0, 2), strict=True):
        expected = reference_to_mri.matrix @ probe_to_reference[index] @ image_to_probe.matrix
        np.testing.assert_allclose(pose, expected, atol=1e-9)
    with pytest.raises(ProbePlacementError, match="reference_to_mri"):
        poses_along_sweep(sequence, image_to_probe=image_to_probe)


def test_speckle_moves_with_the_anatomy(toy_skin, linear_imager):
    """Slide the probe 2 mm: the muscle speckle follows (shifted frames correlate), unshifted it does not."""
    spacing = LINEAR_256.pixel_spacing_mm
    shift_px = int(round(2.0 / spacing))
    matrix = toy_pose_matrix(toy_skin, LINEAR_256)
    slid = matrix.copy()
    slid[:3, 3] += shift_px * matrix[:3, 0]  # the same plane, 2 mm towards the marked side
    first = linear_imager.render(matrix).astype(float)
    second = linear_imager.render(slid).astype(float)
    window = np.s_[150:350, 60 : 260 - shift_px]  # muscle, away from the fan edges
    moved = np.s_[150:350, 60 + shift_px : 260]
    following = np.corrcoef(first[moved].ravel(), second[window].ravel())[0, 1]
    in_place = np.corrcoef(first[window].ravel(), second[window].ravel())[0, 1]
    assert following > 0.6 and in_place < following - 0.3, (following, in_place)


def test_fluid_beside_the_plane_shows_in_part_through_the_slice_thickness(toy_skin, convex_imager):
    """A 5 mm-radius pool centred 0, 4 and 10 mm across the plane: full, partial, no darkening."""
    probe = REHEARSAL_PROBE
    matrix = toy_pose_matrix(toy_skin, probe)
    across_mri = matrix[:3, 2] / probe.pixel_spacing_mm
    plain = convex_imager.render(matrix).astype(float)
    radius_px = 1.5 / probe.pixel_spacing_mm  # inside the wall, which crosses the plane 3 mm out at 4 mm
    rows, columns = np.mgrid[0 : probe.height_px, 0 : probe.width_px]
    footprint = np.hypot(columns - 255.5, rows - 110.0) < radius_px
    drops = []
    for offset_mm in (0.0, 4.0, 10.0):
        centre = pixel_to_mri(matrix, 255.5, 110.0) + offset_mm * across_mri
        pool = InjectateState((Bolus(centre, np.eye(3), np.full(3, 5.0), 0.5, "intramuscular"),))
        frame = convex_imager.render(matrix, injectate=pool).astype(float)
        drops.append(float(plain[footprint].mean() - frame[footprint].mean()))
    assert drops[0] > 60  # the whole beam in fluid: anechoic
    assert 10 < drops[1] < drops[0] - 40  # 77 % of the beam (planes at 0, -2.3 and -4.9 mm): hypoechoic
    assert abs(drops[2]) < 1e-9  # beyond the beam: nothing
