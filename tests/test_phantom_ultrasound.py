"""B-mode simulation: probe geometry and calibration, exact placement, realism in numbers."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest
import SimpleITK as sitk
from phantom_toys import bone_ridges_px, build_toy_phantom

from workbench.errors import FrameError, VolumeError, WorkbenchError
from workbench.frames import Transform
from workbench.phantom.labels import Label
from workbench.phantom.ultrasound import (
    CURVILINEAR_C5_2,
    LINEAR_L14_5,
    ProbeModel,
    UltrasoundSimulator,
    rotation_matrices,
    simulate_frame,
)

PROBES = pytest.mark.parametrize("probe", [CURVILINEAR_C5_2, LINEAR_L14_5], ids=lambda p: p.name)


@pytest.fixture(scope="module")
def toy():
    return build_toy_phantom()


def transducer_pose(probe: ProbeModel, origin_lps, marker_lps, beam_lps=(0.0, -1.0, 0.0)) -> Transform:
    """``ImageToMri`` for a transducer centred at ``origin_lps`` with the given marker and beam axes."""
    x_axis, y_axis = np.asarray(marker_lps, float), np.asarray(beam_lps, float)
    rotation = np.stack([x_axis, y_axis, np.cross(x_axis, y_axis)], axis=1)
    transducer_to_mri = Transform.from_rotation_translation(rotation, origin_lps, "Transducer", "Mri")
    return transducer_to_mri @ probe.image_to_transducer()


def transverse_over_block(probe: ProbeModel) -> Transform:
    return transducer_pose(probe, (0.0, -1.0, 0.0), (1.0, 0.0, 0.0))


#: Marks pixels outside the imaged region in :func:`labels_of_pixels`.
NOT_IMAGED = 255


def labels_of_pixels(toy, image_to_lps: Transform, probe: ProbeModel) -> np.ndarray:
    """(H, W) label under each pixel centre; NOT_IMAGED outside the fan or rectangle."""
    rows, columns = np.mgrid[0 : probe.height_px, 0 : probe.width_px]
    pixels = np.stack([columns.ravel(), rows.ravel(), np.zeros(rows.size)], axis=1)
    labels = toy.label_at(image_to_lps.apply_to_points(pixels)).reshape(rows.shape)
    labels[~probe.imaging_mask()] = NOT_IMAGED
    return labels


# -- probe models -------------------------------------------------------------------------


def test_c5_2_fan_geometry_in_pixels():
    probe = CURVILINEAR_C5_2
    spacing = probe.pixel_spacing_mm
    # The fan (65 deg, 50 mm radius, 100 mm deep) is as wide as the image: 2 * 150 * sin(32.5 deg) / 511.
    assert spacing == pytest.approx(2 * 150.0 * math.sin(math.radians(32.5)) / 511)
    assert probe.fan_angles_deg == (-32.5, 32.5)
    origin_x, origin_y = probe.fan_origin_px
    assert origin_x == 255.5
    assert origin_y == pytest.approx(-50.0 * math.cos(math.radians(32.5)) / spacing)
    assert probe.fan_radius_start_px == pytest.approx(50.0 / spacing)
    assert probe.fan_radius_stop_px == pytest.approx(150.0 / spacing)
    # Top corners of the fan touch row 0; the deepest point lies inside the image.
    assert origin_y + probe.fan_radius_stop_px < probe.height_px - 1


@PROBES
def test_imaging_mask_area_and_clip_rectangle(probe):
    mask = probe.imaging_mask()
    spacing = probe.pixel_spacing_mm
    if probe.is_curvilinear:
        outer, inner = probe.radius_mm + probe.depth_mm, probe.radius_mm
        area_mm2 = math.radians(probe.fan_angle_deg) / 2 * (outer**2 - inner**2)
    else:
        area_mm2 = probe.aperture_mm * probe.depth_mm
    assert mask.sum() * spacing**2 == pytest.approx(area_mm2, rel=0.01)
    (x0, y0), (width, height) = probe.clip_rectangle
    rows, columns = np.nonzero(mask)
    assert (x0, y0, x0 + width, y0 + height) == (columns.min(), rows.min(), columns.max(), rows.max())


@PROBES
def test_image_to_transducer_puts_the_face_centre_at_the_origin(probe):
    image_to_transducer = probe.image_to_transducer()
    spacing = probe.pixel_spacing_mm
    np.testing.assert_allclose(image_to_transducer.scale, [spacing] * 3)
    np.testing.assert_allclose(image_to_transducer.apply_to_points((*probe.transducer_origin_px, 0.0)), 0.0, atol=1e-9)
    # One row down is one pixel deeper along the beam (+y), one column one pixel towards the marker (+x).
    np.testing.assert_allclose(
        image_to_transducer.apply_to_vectors([[1, 0, 0], [0, 1, 0]]), [[spacing, 0, 0], [0, spacing, 0]]
    )
    if probe.is_curvilinear:
        np.testing.assert_allclose(
            image_to_transducer.apply_to_points((*probe.fan_origin_px, 0.0)), (0.0, -probe.radius_mm, 0.0), atol=1e-9
        )


@PROBES
def test_image_to_probe_is_the_sensor_mount_composed_with_the_pixel_scale(probe):
    image_to_probe = probe.image_to_probe()
    assert image_to_probe.name == "ImageToProbe"
    probe_to_transducer = probe.probe_to_transducer()
    assert probe_to_transducer.is_rigid(1e-12)
    np.testing.assert_allclose(
        (probe_to_transducer @ image_to_probe).matrix, probe.image_to_transducer().matrix, atol=1e-12
    )
    # The sensor sits on the handle several cm from the face, turned: not a trivial calibration.
    assert np.linalg.norm(probe.sensor_offset_mm) > 40.0
    angle_deg = math.degrees(math.acos((np.trace(probe_to_transducer.linear) - 1) / 2))
    assert angle_deg > 30.0
    np.testing.assert_allclose(image_to_probe.scale, [probe.pixel_spacing_mm] * 3)


def test_rotation_matrices_follow_the_right_hand_rule():
    quarter_turn_about_z = rotation_matrices(np.array([0.0, 0.0, math.pi / 2]))
    np.testing.assert_allclose(quarter_turn_about_z @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-12)
    many = rotation_matrices(np.random.default_rng(0).normal(size=(50, 3)))
    np.testing.assert_allclose(many @ np.swapaxes(many, 1, 2), np.broadcast_to(np.eye(3), (50, 3, 3)), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(many), 1.0)
    np.testing.assert_array_equal(rotation_matrices(np.zeros(3)), np.eye(3))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"kind": "phased"}, "probe kind 'phased' is unknown"),
        ({"centre_frequency_mhz": 0.0}, "probe centre_frequency_mhz must be a positive number"),
        ({"depth_mm": float("nan")}, "probe depth_mm must be a positive number"),
        ({"width_px": 8}, "probe width_px must be an integer of at least 16"),
        ({"line_count": 100.5}, "probe line_count must be an integer of at least 16"),
        ({"fan_angle_deg": 150.0}, "probe fan_angle_deg must be in (0, 120]"),
        ({"radius_mm": 0.0}, "probe radius_mm must be a positive number"),
        ({"sensor_offset_mm": (1.0, 2.0)}, "probe sensor_offset_mm must be 3 finite numbers"),
    ],
)
def test_probe_model_rejects_bad_values(changes, message):
    with pytest.raises(WorkbenchError, match=re.escape(message)):
        dataclasses.replace(CURVILINEAR_C5_2, **changes)


def test_linear_probe_needs_an_aperture():
    with pytest.raises(WorkbenchError, match="probe aperture_mm must be a positive number"):
        dataclasses.replace(LINEAR_L14_5, aperture_mm=-1.0)


# -- geometry of the frames ---------------------------------------------------------------


@PROBES
@pytest.mark.parametrize("view", ["transverse", "sagittal"])
def test_bone_surface_pixels_map_onto_the_bone_boundary(toy, probe, view):
    """Noise-free frame: every bone ridge pixel, placed through ImageToMri, is within 1 mm of the bone."""
    if view == "transverse":
        image_to_lps = transverse_over_block(probe)
    else:  # paramedian sagittal, tilted 10 degrees towards the midline
        beam = (-math.sin(math.radians(10)), -math.cos(math.radians(10)), 0.0)
        image_to_lps = transducer_pose(probe, (15.0, -1.3, 0.0), (0.0, 0.0, 1.0), beam)
    frame = simulate_frame(toy.labels, image_to_lps, probe, noise=False)
    ridges = bone_ridges_px(frame, int(20 / probe.pixel_spacing_mm))
    points_lps = image_to_lps.apply_to_points(np.column_stack([ridges, np.zeros(len(ridges))]))
    columns_over_bone = (labels_of_pixels(toy, image_to_lps, probe) == Label.LAMINA).any(axis=0)
    assert len(ridges) >= 0.9 * np.count_nonzero(columns_over_bone)
    assert toy.distance_to_bone_surface_mm(points_lps).max() < 1.0


def test_csf_tube_appears_where_the_labels_put_it(toy):
    """Lateral placement too: the anechoic lumen's centroid maps to the tube axis within 1 mm."""
    probe = CURVILINEAR_C5_2
    image_to_lps = transverse_over_block(probe)
    frame = simulate_frame(toy.labels, image_to_lps, probe, noise=False)
    centre_x, centre_y = toy.tube_centre_xy_mm
    expected_px = image_to_lps.inverse().apply_to_points((centre_x, centre_y, 0.0))
    rows, columns = np.mgrid[0 : frame.shape[0], 0 : frame.shape[1]]
    near = np.hypot(columns - expected_px[0], rows - expected_px[1]) * probe.pixel_spacing_mm < 10.0
    dark = near & (frame < 10)
    centroid_lps = image_to_lps.apply_to_points((columns[dark].mean(), rows[dark].mean(), 0.0))
    assert np.hypot(centroid_lps[0] - centre_x, centroid_lps[1] - centre_y) < 1.0
    # The 2 mm wide beam blurs the side walls into the lumen: the dark core is narrower than the tube.
    lumen_area_mm2 = math.pi * toy.tube_radius_mm**2
    assert 0.25 * lumen_area_mm2 < dark.sum() * probe.pixel_spacing_mm**2 < lumen_area_mm2


@PROBES
def test_pixels_outside_the_imaged_region_are_black(toy, probe):
    frame = simulate_frame(toy.labels, transverse_over_block(probe), probe, rng=1)
    assert frame.shape == (probe.height_px, probe.width_px) and frame.dtype == np.uint8
    mask = probe.imaging_mask()
    assert not frame[~mask].any()
    assert frame[mask].mean() > 20


def test_probe_in_air_gives_a_black_frame(toy):
    probe = CURVILINEAR_C5_2
    above_the_back = transducer_pose(probe, (0.0, 200.0, 0.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0))
    assert not simulate_frame(toy.labels, above_the_back, probe, noise=False).any()


# -- realism ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def transverse_frame(toy):
    """A noisy C5-2 transverse frame over the bone block and the label under each pixel."""
    probe = CURVILINEAR_C5_2
    image_to_lps = transverse_over_block(probe)
    frame = simulate_frame(toy.labels, image_to_lps, probe, rng=7).astype(float)
    labels = labels_of_pixels(toy, image_to_lps, probe)
    rows, columns = np.mgrid[0 : frame.shape[0], 0 : frame.shape[1]]
    points_lps = image_to_lps.apply_to_points(np.stack([columns.ravel(), rows.ravel(), 0 * rows.ravel()], axis=1))
    return frame, labels, points_lps.reshape(*frame.shape, 3)


def test_bone_echo_is_brighter_than_the_tissue_above_it(toy, transverse_frame):
    frame, labels, points_lps = transverse_frame
    x, y = points_lps[..., 0], points_lps[..., 1]
    over_block = np.abs(x) < toy.bone_half_width_mm - 5
    bone_surface = over_block & (np.abs(y - toy.bone_top_y_mm) < 0.5)
    muscle_above = over_block & (labels == Label.ERECTOR_SPINAE) & (y > toy.bone_top_y_mm + 3)
    assert frame[bone_surface].mean() > 200
    assert frame[bone_surface].mean() > frame[muscle_above].mean() + 80


def test_shadow_below_bone_is_darker_than_the_tissue_above_it(toy, transverse_frame):
    frame, labels, points_lps = transverse_frame
    x, y = points_lps[..., 0], points_lps[..., 1]
    over_block = np.abs(x) < toy.bone_half_width_mm - 5
    shadow = over_block & (y < toy.bone_bottom_y_mm) & (labels != NOT_IMAGED)
    muscle_above = over_block & (labels == Label.ERECTOR_SPINAE) & (y > toy.bone_top_y_mm + 3)
    assert frame[shadow].mean() < 0.3 * frame[muscle_above].mean()
    beside_block_same_depth = (np.abs(x) > toy.bone_half_width_mm + 15) & (y < toy.bone_bottom_y_mm) & (y > -75)
    assert frame[shadow].mean() < 0.3 * frame[beside_block_same_depth & (labels == Label.ERECTOR_SPINAE)].mean()


def test_fat_is_darker_than_muscle_and_csf_is_anechoic(toy, transverse_frame):
    """The model: subcutaneous fat backscatters 0.20, muscle 0.35 (labels.TISSUE), CSF 0.01."""
    frame, labels, points_lps = transverse_frame
    depth_y = points_lps[..., 1]
    fat = labels == Label.FAT
    muscle_below_fat = (labels == Label.ERECTOR_SPINAE) & (depth_y > -30)
    assert frame[fat].mean() < frame[muscle_below_fat].mean() - 10
    centre_x, centre_y = toy.tube_centre_xy_mm
    lumen_core = np.hypot(points_lps[..., 0] - centre_x, depth_y - centre_y) < toy.tube_radius_mm - 3.0
    assert frame[lumen_core].mean() < 15


def test_fatty_muscle_is_more_echogenic(toy):
    probe = CURVILINEAR_C5_2
    image_to_lps = transverse_over_block(probe)
    labels = labels_of_pixels(toy, image_to_lps, probe)
    lean = simulate_frame(toy.labels, image_to_lps, probe, noise=False)
    fatty = simulate_frame(toy.labels, image_to_lps, probe, noise=False, muscle_fat_fraction=0.5)
    # Muscle within the displayed range (not in the shadow, not saturated).
    muscle = (labels == Label.ERECTOR_SPINAE) & (lean > 30) & (lean < 200)
    # Backscatter 0.35 -> 0.575: +4.3 dB, 20 grey levels at 55 dB over 255.
    assert fatty[muscle].mean() - lean[muscle].mean() == pytest.approx(20 * math.log10(0.575 / 0.35) * 255 / 55, abs=3)
    fat = labels == Label.FAT  # unchanged, but for the blur of the brighter muscle at the fascia
    assert abs(fatty[fat].mean() - lean[fat].mean()) < 1.0


def test_speckle_is_seeded_and_has_rayleigh_statistics(toy):
    probe = CURVILINEAR_C5_2
    image_to_lps = transverse_over_block(probe)
    simulator = UltrasoundSimulator(toy.labels, probe)
    first, again, other = (simulator.frame(image_to_lps, rng=seed) for seed in (3, 3, 4))
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    # Log-compressed Rayleigh speckle has a grey-level standard deviation of 5.57 dB.
    labels = labels_of_pixels(toy, image_to_lps, probe)
    clean = simulator.frame(image_to_lps, noise=False).astype(float)
    region = (labels == Label.FAT) & (clean > 30) & (clean < 225)
    residual_db = (first[region] - clean[region]) * probe.dynamic_range_db / 255
    assert np.std(residual_db) == pytest.approx(5.57, rel=0.25)


# -- bad input ----------------------------------------------------------------------------


def test_labels_must_be_a_simpleitk_image():
    with pytest.raises(VolumeError, match="labels image must be a SimpleITK.Image, got ndarray"):
        UltrasoundSimulator(np.zeros((4, 4, 4), np.uint8), CURVILINEAR_C5_2)


def test_labels_must_be_3d():
    with pytest.raises(VolumeError, match="labels image must be a 3D scalar image, got 2D"):
        UltrasoundSimulator(sitk.Image(8, 8, sitk.sitkUInt8), CURVILINEAR_C5_2)


def test_labels_must_be_uint8():
    with pytest.raises(VolumeError, match="labels image must have uint8 pixels, got 32-bit float"):
        UltrasoundSimulator(sitk.Image(8, 8, 8, sitk.sitkFloat32), CURVILINEAR_C5_2)


def test_labels_must_be_phantom_labels():
    array = np.zeros((4, 4, 4), np.uint8)
    array[0, 0, :2] = (200, 99)
    with pytest.raises(VolumeError, match="labels image holds values that are not phantom labels: 99, 200"):
        UltrasoundSimulator(sitk.GetImageFromArray(array), CURVILINEAR_C5_2)


@pytest.mark.parametrize("fraction", [-0.1, 1.5, "high"])
def test_muscle_fat_fraction_must_be_a_fraction(toy, fraction):
    with pytest.raises(WorkbenchError, match="muscle_fat_fraction must be in \\[0, 1\\]"):
        UltrasoundSimulator(toy.labels, CURVILINEAR_C5_2, muscle_fat_fraction=fraction)


def test_probe_must_be_a_probe_model(toy):
    with pytest.raises(WorkbenchError, match="probe must be a ProbeModel, got str"):
        UltrasoundSimulator(toy.labels, "C5-2")


def test_image_to_lps_must_map_image_to_mri(toy):
    simulator = UltrasoundSimulator(toy.labels, CURVILINEAR_C5_2)
    with pytest.raises(FrameError, match="image_to_lps must map Image to Mri, got ImageToReference"):
        simulator.frame(Transform(np.eye(4), "Image", "Reference"))
    with pytest.raises(FrameError, match="image_to_lps must be a Transform, got ndarray"):
        simulator.frame(np.eye(4))
