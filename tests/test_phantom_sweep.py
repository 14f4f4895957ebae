"""Tracked freehand sweeps: exact geometry through the written PLUS files, noise, determinism."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest
from phantom_toys import bone_ridges_px, build_toy_phantom

from workbench.errors import DeviceSetError, FrameError, WorkbenchError
from workbench.frames import Transform
from workbench.io.plus_config import read_device_set
from workbench.io.sequence import read_sequence
from workbench.phantom.labels import BONE_LABELS
from workbench.phantom.sweep import (
    SweepSpec,
    default_reference_to_mri,
    default_tracker_to_mri,
    plan_sweep,
    simulate_sweep,
)
from workbench.phantom.ultrasound import CURVILINEAR_C5_2, LINEAR_L14_5

#: A coarse probe for tests that do not look at anatomy in the pixels.
SMALL_PROBE = dataclasses.replace(CURVILINEAR_C5_2, width_px=96, height_px=72, line_count=32)
NOISE_FREE = dict(image_noise=False, tracker_noise_mm=0.0, tracker_noise_deg=0.0, dropped_frame_fraction=0.0)


@pytest.fixture(scope="module")
def toy():
    return build_toy_phantom()


@pytest.fixture(scope="module")
def ground_truth(toy):
    """(ReferenceToMri over the sacrum region, TrackerToMri beside the table)."""
    return default_reference_to_mri(toy, z_mm=-70.0), default_tracker_to_mri(toy, z_mm=0.0)


def short_spec(**changes) -> SweepSpec:
    """A 2 s sweep at 5 frames/s over the bone block (11 frames)."""
    fields = dict(start_z_mm=-20.0, end_z_mm=20.0, speed_mm_s=20.0, frame_rate_hz=5.0, probe=SMALL_PROBE)
    return SweepSpec(**{**fields, **changes})


def simulate(anatomy, spec, ground_truth, **kwargs):
    reference_to_mri, tracker_to_mri = ground_truth
    return simulate_sweep(anatomy, spec, reference_to_mri=reference_to_mri, tracker_to_mri=tracker_to_mri, **kwargs)


def plan(anatomy, spec, ground_truth):
    reference_to_mri, tracker_to_mri = ground_truth
    return plan_sweep(anatomy, spec, reference_to_mri=reference_to_mri, tracker_to_mri=tracker_to_mri)


def bone_points_from_files(sequence_path, device_set_path, reference_to_mri: Transform) -> list[np.ndarray]:
    """Per frame: bone ridge pixels mapped to Mri through the transforms read back from the files."""
    sequence = read_sequence(sequence_path)
    device_set = read_device_set(device_set_path)
    image_to_probe = device_set.image_to_probe()
    spacing_mm = device_set.coordinate_definitions[0].pixel_spacing_mm[0]
    points = []
    for index, image in enumerate(sequence.images_mf()):
        repository = sequence.repository(index)
        repository.set_transform(image_to_probe)
        repository.set_transform(reference_to_mri)
        image_to_mri = repository.get("ImageToMri")
        ridges_px = bone_ridges_px(image, int(20 / spacing_mm))
        points.append(image_to_mri.apply_to_points(np.column_stack([ridges_px, np.zeros(len(ridges_px))])))
    return points


# -- geometry ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, probe, lateral_offset_mm",
    [("paramedian-sagittal", CURVILINEAR_C5_2, 12.0), ("transverse", LINEAR_L14_5, 5.0)],
)
def test_bone_surface_pixels_land_on_the_bone_through_the_written_files(
    toy, ground_truth, tmp_path, kind, probe, lateral_offset_mm
):
    """No image or tracker noise; wobble, tilt and breathing on: ImageToProbe, ProbeToTracker,
    inv(ReferenceToTracker) and ReferenceToMri place every bone ridge within 1 mm of the bone."""
    spec = short_spec(
        kind=kind,
        probe=probe,
        lateral_offset_mm=lateral_offset_mm,
        tilt_deg=8.0,
        breathing_amplitude_mm=2.0,
        **NOISE_FREE,
    )
    sweep = simulate(toy, spec, ground_truth)
    paths = sweep.write(tmp_path, "geometry")
    per_frame = bone_points_from_files(*paths, ground_truth[0])
    assert len(per_frame) == 11
    assert min(len(points) for points in per_frame) > 0.2 * probe.width_px
    distances_mm = toy.distance_to_bone_surface_mm(np.concatenate(per_frame))
    assert distances_mm.max() < 1.0


def test_real_anatomy_bone_surfaces_land_on_bone(ground_truth, tmp_path):
    """The same check on workbench.phantom.anatomy's spine (L3-L4, 0.5 mm), transverse."""
    from workbench.phantom.anatomy import SpineParameters, build_phantom

    phantom = build_phantom(SpineParameters(levels=("L3", "L4"), spacing_mm=0.5))
    reference_to_mri = default_reference_to_mri(phantom, z_mm=-30.0)
    tracker_to_mri = default_tracker_to_mri(phantom, z_mm=0.0)
    spec = SweepSpec.between_levels(
        phantom, "L4", "L3", margin_mm=0.0, kind="transverse", speed_mm_s=36.0, frame_rate_hz=4.0, **NOISE_FREE
    )
    sweep = simulate_sweep(
        phantom,
        spec,
        reference_to_mri=reference_to_mri,
        tracker_to_mri=tracker_to_mri,
        muscle_fat_fraction=phantom.muscle_fat_fraction,
    )
    points_lps = np.concatenate(bone_points_from_files(*sweep.write(tmp_path, "real"), reference_to_mri))
    assert len(points_lps) > 200
    distances_mm = _distance_to_bone_boundary_mm(phantom.labels, points_lps)
    # Percentiles, not the maximum: over a spinous process tip the supraspinous ligament's echo
    # merges with the bone's, and the ridge finder takes the centre of both.
    assert np.median(distances_mm) < 0.5
    assert np.percentile(distances_mm, 95) < 1.0


def _distance_to_bone_boundary_mm(labels_image, points_lps: np.ndarray, search_mm: float = 3.0) -> np.ndarray:
    """Approximate distance (mm) from each point to the bone/non-bone boundary of the label map.

    The nearest voxel centre on the other side of the boundary from the point's own voxel, less
    half a voxel (isotropic grid), searched within ``search_mm``; farther is reported as
    ``search_mm``.
    """
    import SimpleITK as sitk

    array = sitk.GetArrayViewFromImage(labels_image)
    spacing_mm = labels_image.GetSpacing()[0]
    origin_lps = np.array(labels_image.GetOrigin())
    reach = int(math.ceil(search_mm / spacing_mm))
    offsets = np.stack(np.meshgrid(*[np.arange(-reach, reach + 1)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    own = np.rint((points_lps - origin_lps) / spacing_mm).astype(int)
    neighbours = np.clip(own[:, None, :] + offsets[None], 0, np.array(labels_image.GetSize()) - 1)
    is_bone = np.isin(array[neighbours[..., 2], neighbours[..., 1], neighbours[..., 0]], list(BONE_LABELS))
    own_is_bone = is_bone[:, len(offsets) // 2]
    centres_lps = origin_lps + neighbours * spacing_mm
    distances_mm = np.linalg.norm(centres_lps - points_lps[:, None, :], axis=2) - spacing_mm / 2
    across = is_bone != own_is_bone[:, None]
    return np.minimum(np.where(across, distances_mm, np.inf).min(axis=1), search_mm)


def test_probe_rests_on_the_skin_beam_anterior(toy, ground_truth):
    spec = SweepSpec(
        start_z_mm=-40.0, end_z_mm=40.0, side="left", lateral_offset_mm=30.0, tilt_deg=15.0, probe=SMALL_PROBE
    )
    poses = plan(toy, spec, ground_truth)
    transducer_to_mri = poses.probe_to_mri @ SMALL_PROBE.probe_to_transducer().inverse().matrix
    origins = transducer_to_mri[:, :3, 3]
    press_mm = toy.skin_surface_y_mm(origins[:, 0], origins[:, 2]) - origins[:, 1]
    assert 0.2 <= press_mm.min() and press_mm.max() < 3.5
    assert np.mean(origins[:, 0]) == pytest.approx(30.0, abs=1.0)
    assert origins[0, 2] == pytest.approx(-40.0, abs=4.0) and origins[-1, 2] == pytest.approx(40.0, abs=4.0)
    # Beam (y axis) tilted 15 deg from the inward skin normal, towards the midline (-x); marker cranial.
    normals = np.column_stack([origins[:, 0] / 400.0, np.ones(len(origins)), np.zeros(len(origins))])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    beams, markers = transducer_to_mri[:, :3, 1], transducer_to_mri[:, :3, 0]
    tilt_deg = np.degrees(np.arccos(np.sum(beams * -normals, axis=1)))
    assert np.mean(tilt_deg) == pytest.approx(15.0, abs=1.5) and np.all(np.abs(tilt_deg - 15.0) < 7.0)
    assert np.all(beams[:, 0] < 0)
    assert np.all(markers[:, 2] > math.cos(math.radians(10)))


def test_transverse_sweep_marker_points_left(toy, ground_truth):
    spec = SweepSpec(kind="transverse", side="right", lateral_offset_mm=10.0, probe=SMALL_PROBE)
    poses = plan(toy, spec, ground_truth)
    transducer_to_mri = poses.probe_to_mri @ SMALL_PROBE.probe_to_transducer().inverse().matrix
    assert np.all(transducer_to_mri[:, 0, 0] > math.cos(math.radians(10)))
    assert np.all(transducer_to_mri[:, 1, 1] < -math.cos(math.radians(10)))
    assert np.mean(transducer_to_mri[:, 0, 3]) == pytest.approx(-10.0, abs=1.0)


def test_breathing_moves_tracker_readings_but_not_reference_to_mri(toy, ground_truth):
    spec = short_spec(breathing_amplitude_mm=2.0, breathing_period_s=2.0, frame_rate_hz=25.0, **NOISE_FREE)
    poses = plan(toy, spec, ground_truth)
    reference_in_tracker = poses.true_reference_to_tracker()[:, :3, 3]
    travel_mm = np.linalg.norm(reference_in_tracker - reference_in_tracker.mean(axis=0), axis=1)
    assert travel_mm.max() == pytest.approx(2.0, abs=0.05)
    # Probe relative to the reference sensor is the probe on the patient: breathing cancels.
    probe_to_reference = np.linalg.inv(poses.true_reference_to_tracker()) @ poses.true_probe_to_tracker()
    expected = ground_truth[0].inverse().matrix @ poses.probe_to_mri
    np.testing.assert_allclose(probe_to_reference, expected, atol=1e-9)
    # Without tracker noise the readings are the truth.
    np.testing.assert_allclose(poses.probe_to_tracker, poses.true_probe_to_tracker(), atol=1e-12)


def test_procedure_labels_are_imaged_while_reference_to_mri_stays(toy, ground_truth, tmp_path):
    """Posture change: the frames show the procedure-time bone (5 mm higher), the truth stays MRI-time."""
    moved = build_toy_phantom(bone_top_y_mm=-40.0)
    spec = short_spec(probe=CURVILINEAR_C5_2, lateral_offset_mm=10.0, frame_rate_hz=1.0, **NOISE_FREE)
    sweep = simulate(toy, spec, ground_truth, procedure_labels=moved.labels)
    assert sweep.reference_to_mri.allclose(ground_truth[0], atol=0.0)
    points_lps = np.concatenate(bone_points_from_files(*sweep.write(tmp_path, "moved"), ground_truth[0]))
    over_top = moved.bone_top_at(points_lps[:, 0], points_lps[:, 2])
    assert over_top.sum() > 500
    assert np.abs(points_lps[over_top, 1] - -40.0).max() < 1.0


# -- noise and dropped frames -------------------------------------------------------------------


@pytest.mark.parametrize("noise_mm, noise_deg", [(0.5, 0.3), (1.2, 0.8)])
def test_tracker_noise_has_the_configured_rms(toy, ground_truth, noise_mm, noise_deg):
    spec = SweepSpec(
        start_z_mm=-50.0,
        end_z_mm=50.0,
        speed_mm_s=1.0,
        tracker_noise_mm=noise_mm,
        tracker_noise_deg=noise_deg,
        probe=SMALL_PROBE,
    )
    poses = plan(toy, spec, ground_truth)
    assert len(poses.timestamps_s) == 2501
    for measured, true in (
        (poses.probe_to_tracker, poses.true_probe_to_tracker()),
        (poses.reference_to_tracker, poses.true_reference_to_tracker()),
    ):
        error = np.linalg.inv(true) @ measured
        translation_rms_mm = np.sqrt(np.mean(np.sum(error[:, :3, 3] ** 2, axis=1)))
        cos_angle = np.clip((np.trace(error[:, :3, :3], axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)
        rotation_rms_deg = np.degrees(np.sqrt(np.mean(np.arccos(cos_angle) ** 2)))
        assert translation_rms_mm == pytest.approx(noise_mm, rel=0.2)
        assert rotation_rms_deg == pytest.approx(noise_deg, rel=0.2)


@pytest.mark.parametrize("fraction", [0.02, 0.1])
def test_dropped_frames_follow_the_configured_fraction(toy, ground_truth, fraction):
    spec = SweepSpec(
        start_z_mm=-50.0, end_z_mm=50.0, speed_mm_s=1.0, dropped_frame_fraction=fraction, probe=SMALL_PROBE
    )
    ok = plan(toy, spec, ground_truth).probe_to_tracker_ok
    assert 1.0 - ok.mean() == pytest.approx(fraction, abs=4 * math.sqrt(fraction * (1 - fraction) / len(ok)))


def test_dropped_frames_are_written_invalid_with_their_matrix(toy, ground_truth, tmp_path):
    sweep = simulate(toy, short_spec(dropped_frame_fraction=0.3, frame_rate_hz=10.0), ground_truth)
    status = sweep.poses.probe_to_tracker_ok
    assert 0 < np.count_nonzero(~status) < len(status)
    sequence = read_sequence(sweep.write(tmp_path, "drops")[0])
    np.testing.assert_array_equal(sequence.status_of("ProbeToTracker"), status)
    assert sequence.status_of("ReferenceToTracker").all()
    np.testing.assert_array_equal(sequence.transforms["ProbeToTracker"], sweep.poses.probe_to_tracker)
    dropped = int(np.flatnonzero(~status)[0])
    with pytest.raises(FrameError, match="ProbeToTracker is INVALID"):
        sequence.transform("ProbeToTracker", dropped)


# -- files ------------------------------------------------------------------------------------------


def test_same_seed_same_bytes(toy, ground_truth, tmp_path):
    written = []
    for folder, seed in (("a", 5), ("b", 5), ("c", 6)):
        sweep = simulate(toy, short_spec(seed=seed), ground_truth)
        written.append([path.read_bytes() for path in sweep.write(tmp_path / folder, "sweep")])
    assert written[0] == written[1]
    assert written[0][0] != written[2][0]


@pytest.mark.parametrize(
    "probe",
    [SMALL_PROBE, dataclasses.replace(LINEAR_L14_5, width_px=64, height_px=80, line_count=32)],
    ids=["curvilinear", "linear"],
)
def test_written_files_read_back_with_the_same_numbers(toy, ground_truth, tmp_path, probe):
    sweep = simulate(toy, short_spec(probe=probe), ground_truth)
    sequence_path, device_set_path = sweep.write(tmp_path, "round-trip")
    assert (sequence_path.name, device_set_path.name) == ("round-trip.igs.mha", "round-trip_DeviceSet.xml")
    sequence = read_sequence(sequence_path)
    assert sequence.image_orientation == "MF"
    np.testing.assert_array_equal(sequence.images, sweep.sequence.images)
    np.testing.assert_array_equal(sequence.timestamps_s, np.arange(11) / 5.0)
    for name in ("ProbeToTracker", "ReferenceToTracker"):
        np.testing.assert_array_equal(sequence.transforms[name], sweep.sequence.transforms[name])
        np.testing.assert_array_equal(sequence.status_of(name), sweep.sequence.status_of(name))

    device_set = read_device_set(device_set_path)
    np.testing.assert_array_equal(device_set.image_to_probe().matrix, probe.image_to_probe().matrix)
    assert device_set.coordinate_definitions[0].date == "010125_120000"
    [device] = device_set.devices
    assert (device.device_type, device.data_sources) == ("SavedDataSource", (("Video", "Video"),))
    config = device_set.volume_reconstruction
    assert config.output_spacing_mm == (0.5, 0.5, 0.5)
    assert config.image_to_reference_name == "ImageToReference"
    assert (config.clip_rectangle_origin_px, config.clip_rectangle_size_px) == probe.clip_rectangle
    assert (config.interpolation, config.compounding_mode, config.fill_holes) == ("LINEAR", "MEAN", True)
    assert [element.type for element in config.hole_filling_elements] == ["GAUSSIAN", "STICK"]
    if probe.is_curvilinear:
        assert config.fan_angles_deg == probe.fan_angles_deg
        assert config.fan_origin_px == probe.fan_origin_px
        assert (config.fan_radius_start_px, config.fan_radius_stop_px) == (
            probe.fan_radius_start_px,
            probe.fan_radius_stop_px,
        )
    else:
        assert not config.fan_clipping_applied


def test_device_set_xml_names_the_sequence_and_spacing(toy, ground_truth, tmp_path):
    sweep = simulate(toy, short_spec(), ground_truth)
    path = tmp_path / "custom.xml"
    path.write_text(sweep.device_set_xml(volume_spacing_mm=0.8, sequence_file="other.igs.mha"))
    assert read_device_set(path).volume_reconstruction.output_spacing_mm == (0.8, 0.8, 0.8)
    assert 'SequenceFile="other.igs.mha"' in path.read_text()


def test_progress_is_reported_after_every_frame(toy, ground_truth):
    calls = []
    simulate(toy, short_spec(), ground_truth, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(done, 11) for done in range(1, 12)]


# -- spec -------------------------------------------------------------------------------------------


def test_frame_count_and_timestamps():
    spec = SweepSpec(start_z_mm=30.0, end_z_mm=-30.0, speed_mm_s=12.0, frame_rate_hz=25.0)
    assert spec.duration_s == pytest.approx(5.0)
    assert spec.frame_count == 126


def test_paramedian_and_transverse_default_offsets():
    assert SweepSpec().lateral_offset_mm == 30.0
    assert SweepSpec(kind="transverse").lateral_offset_mm == 0.0


def test_between_levels_extends_by_the_margin(toy):
    spec = SweepSpec.between_levels(toy, "L5", "L4", margin_mm=10.0, speed_mm_s=20.0)
    assert (spec.start_z_mm, spec.end_z_mm, spec.speed_mm_s) == (-35.0, 35.0, 20.0)
    downwards = SweepSpec.between_levels(toy, "L4", "L5", margin_mm=5.0)
    assert (downwards.start_z_mm, downwards.end_z_mm) == (30.0, -30.0)


def test_between_levels_rejects_unknown_levels(toy):
    with pytest.raises(WorkbenchError, match="level 'S1' is not in the anatomy \\(it has L4, L5\\)"):
        SweepSpec.between_levels(toy, "L4", "S1")
    with pytest.raises(WorkbenchError, match="anatomy has no vertebra_centres_lps"):
        SweepSpec.between_levels(object(), "L4", "L5")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"kind": "coronal"}, "sweep kind 'coronal' is unknown"),
        ({"side": "up"}, "sweep side 'up' is unknown"),
        ({"speed_mm_s": 0.0}, "sweep speed_mm_s must be above 0"),
        ({"frame_rate_hz": -25.0}, "sweep frame_rate_hz must be above 0"),
        ({"tracker_noise_mm": -0.5}, "sweep tracker_noise_mm must be at least 0"),
        ({"tilt_deg": float("inf")}, "sweep tilt_deg must be a finite number"),
        ({"jitter_deg": "1"}, "sweep jitter_deg must be a finite number"),
        ({"dropped_frame_fraction": 1.0}, "sweep dropped_frame_fraction must be below 1"),
        ({"end_z_mm": -60.0}, "sweep start_z_mm and end_z_mm are equal"),
        ({"probe": "C5-2"}, "sweep probe must be a ProbeModel, got str"),
        ({"seed": -1}, "sweep seed must be a non-negative integer"),
    ],
)
def test_sweep_spec_rejects_bad_values(changes, message):
    with pytest.raises(WorkbenchError, match=re.escape(message)):
        SweepSpec(**changes)


def test_ground_truth_transforms_must_be_rigid_and_named(toy, ground_truth):
    reference_to_mri, tracker_to_mri = ground_truth
    spec = short_spec()
    with pytest.raises(FrameError, match="reference_to_mri must map Reference to Mri, got TrackerToMri"):
        plan_sweep(toy, spec, reference_to_mri=tracker_to_mri, tracker_to_mri=tracker_to_mri)
    with pytest.raises(FrameError, match="tracker_to_mri must be rigid"):
        plan_sweep(
            toy,
            spec,
            reference_to_mri=reference_to_mri,
            tracker_to_mri=Transform(np.diag([2.0, 1, 1, 1]), "Tracker", "Mri"),
        )
    with pytest.raises(FrameError, match="tracker_to_mri must be a Transform, got ndarray"):
        plan_sweep(toy, spec, reference_to_mri=reference_to_mri, tracker_to_mri=np.eye(4))


def test_sweep_off_the_back_is_refused(ground_truth):
    class NarrowBack:
        labels = None

        def skin_surface_y_mm(self, x_mm, z_mm):
            return np.where(np.abs(np.asarray(z_mm)) < 10.0, 0.0, np.nan) + 0 * np.asarray(x_mm)

    with pytest.raises(WorkbenchError, match="no skin surface at x = 30.0 mm, z = -60.0 mm: the sweep leaves the back"):
        plan(NarrowBack(), SweepSpec(jitter_mm=0.0), ground_truth)


def test_bad_names_and_spacings_are_refused(toy, ground_truth, tmp_path):
    sweep = simulate(toy, short_spec(frame_rate_hz=1.0), ground_truth)
    with pytest.raises(WorkbenchError, match="sweep name '../up' must start with a letter or digit"):
        sweep.write(tmp_path, "../up")
    with pytest.raises(DeviceSetError, match="volume_spacing_mm must be a positive number, got 0"):
        sweep.device_set_xml(volume_spacing_mm=0)
    with pytest.raises(WorkbenchError, match="spec must be a SweepSpec, got dict"):
        simulate(toy, {"kind": "transverse"}, ground_truth)


def test_default_ground_truth_poses_are_realistic(toy):
    reference_to_mri = default_reference_to_mri(toy, z_mm=-70.0, x_mm=5.0)
    assert reference_to_mri.is_rigid(1e-12) and not np.allclose(reference_to_mri.linear, np.eye(3))
    np.testing.assert_allclose(reference_to_mri.translation, [5.0, toy.skin_surface_y_mm(5.0, -70.0) + 4.0, -70.0])
    tracker_to_mri = default_tracker_to_mri(toy, z_mm=0.0)
    assert tracker_to_mri.is_rigid(1e-12)
    # Probe positions over the lumbar back lie in an EM field generator's volume (50-550 mm).
    for probe_lps in ([30.0, 0.0, -60.0], [-30.0, 0.0, 60.0]):
        assert 150.0 < np.linalg.norm(tracker_to_mri.inverse().apply_to_points(probe_lps)) < 550.0
