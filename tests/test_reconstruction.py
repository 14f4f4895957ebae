"""Volume reconstruction against PLUS's own outputs, and its geometry, clipping and error rules."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from workbench.errors import DeviceSetError, ReconstructionError
from workbench.frames import Transform
from workbench.io.plus_config import HoleFillingElement, VolumeReconstructionConfig, read_device_set
from workbench.io.sequence import read_sequence
from workbench.reconstruction import kernels
from workbench.reconstruction.clipping import clip_extent, extent_corner_box, paste_mask, paste_runs
from workbench.reconstruction.compare import compare_files, compare_volumes
from workbench.reconstruction.reconstruct import _fill_holes, reconstruct_from_files, reconstruct_volume

SPINE = "plus-spine-phantom-freehand"
SWEEP = "SpinePhantomFreehand.igs.mha"
CONFIG = "PlusDeviceSet_VolumeReconstructionOnly_SpinePhantom_{}.xml"
#: PLUS's reference grid for the spine sweep at 0.5 mm (vtkVolumeReconstructorTest*volumeRef.mha).
SPINE_SIZE = (147, 106, 105)
SPINE_ORIGIN_MM = (-74.5217, 165.573, 29.072)


@pytest.fixture(scope="module")
def spine(shared_data):
    folder = shared_data / SPINE
    device_set = read_device_set(folder / CONFIG.format("NN_MEAN"))
    return folder, read_sequence(folder / SWEEP), device_set.image_to_probe()


def _config(folder: Path, name: str) -> VolumeReconstructionConfig:
    return read_device_set(folder / CONFIG.format(name)).volume_reconstruction


def _reconstruct(spine, name, **changes):
    folder, sequence, image_to_probe = spine
    config = dataclasses.replace(_config(folder, name), **changes)
    return reconstruct_volume(sequence, image_to_probe, config)


# -- agreement with PLUS ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config, reference",
    [
        ("NN_MEAN", "vtkVolumeReconstructorTestNNMEANvolumeRef.mha"),
        ("LN_MAXI", "vtkVolumeReconstructorTestLNMAXIvolumeRef.mha"),
    ],
)
def test_matches_plus_reference_volumes_voxel_for_voxel(spine, config, reference):
    folder = spine[0]
    result = _reconstruct(spine, config)
    comparison = compare_volumes(result.to_sitk(), sitk.ReadImage(str(folder / reference)))
    assert comparison.geometry_equal
    assert comparison.size_a == list(SPINE_SIZE)
    assert comparison.max_origin_difference_mm < 1e-3
    assert comparison.fraction_within_2 >= 0.99 and comparison.ncc >= 0.99
    assert comparison.fraction_equal == 1.0  # PLUS's arithmetic reproduced exactly
    assert (result.frames_inserted, result.frames_skipped) == (21, 0)


def test_nn_mean_hole_filling_counts(spine):
    result = _reconstruct(spine, "NN_MEAN")
    assert int(result.covered.sum()) == 362069
    assert result.holes_filled == 528554
    assert int(np.count_nonzero(result.volume)) == 406763  # PLUS's non-zero voxels


def test_reconstruction_only_config_matches_older_sample_with_truncated_extent(spine, shared_data):
    folder = spine[0]
    sample = sitk.ReadImage(str(folder / "SpinePhantomFreehandReconstructed.mha"))
    config = folder / "PlusDeviceSet_SpinePhantomFreehandReconstructionOnly.xml"
    old = reconstruct_from_files(folder / SWEEP, config, extent_rounding="truncate")
    assert compare_volumes(old.to_sitk(), sample).geometry_equal
    assert compare_volumes(old.to_sitk(), sample).fraction_equal == 1.0
    current = reconstruct_from_files(folder / SWEEP, config)
    assert current.grid.size_px == SPINE_SIZE  # one slice more than the 147x106x104 sample
    assert np.array_equal(current.volume[:104], old.volume)


def test_nwire_sample_is_the_linear_unoptimized_config_with_truncated_extent(shared_data):
    folder = shared_data / "plus-nwire-freehand"
    result = reconstruct_from_files(
        folder / "NwirePhantomFreehand.igs.mha",
        folder / "PlusDeviceSet_NwirePhantomFreehand_vtkVolumeReconstructorTest2.xml",
        extent_rounding="truncate",
    )
    comparison = compare_volumes(
        result.to_sitk(), sitk.ReadImage(str(folder / "NwirePhantomFreehandReconstructed.mha"))
    )
    assert comparison.geometry_equal and comparison.fraction_equal == 1.0
    assert result.frames_inserted == 97  # the StylusToTracker INVALID in every frame is not needed


def test_configs_without_reference_have_plus_geometry_and_consistent_values(spine):
    nearest_max = _reconstruct(spine, "NN_MAXI", fill_holes=False)
    nearest_mean = _reconstruct(spine, "NN_MEAN", fill_holes=False)
    linear_latest = _reconstruct(spine, "LN_LATE")
    linear_max = _reconstruct(spine, "LN_MAXI")
    for result in (nearest_max, linear_latest):
        assert result.grid.size_px == SPINE_SIZE
        assert np.allclose(result.grid.origin_mm, SPINE_ORIGIN_MM, atol=1e-3)
    # nearest neighbour: same voxels reached whatever the compounding; max >= mean there
    assert np.array_equal(nearest_max.covered, nearest_mean.covered)
    assert np.all(nearest_max.volume >= nearest_mean.volume)
    # LATEST writes wherever MAXIMUM can (weight >= 1/8), whatever the value
    assert np.all(linear_latest.covered[linear_max.covered])
    assert np.all(linear_latest.volume <= linear_max.volume)


def test_nearest_maximum_equals_an_independent_fixed_point_splat(spine):
    folder, sequence, image_to_probe = spine
    result = _reconstruct(spine, "NN_MAXI", fill_holes=False)
    expected = np.zeros(result.grid.shape, dtype=np.uint8)
    rows, cols = np.mgrid[0:616, 0:820]
    for k in range(len(sequence)):
        image_to_reference = (
            np.linalg.inv(sequence.transforms["ReferenceToTracker"][k])
            @ sequence.transforms["ProbeToTracker"][k]
            @ image_to_probe.matrix
        )
        to_voxel = image_to_reference.copy()
        to_voxel[:3, 3] -= result.grid.origin_mm
        to_voxel[:3] /= 0.5
        fixed = np.rint(to_voxel[:3] * 2**14).astype(np.int64)
        index = (fixed[:, [0]] * cols.ravel() + fixed[:, [1]] * rows.ravel() + fixed[:, [3]] + 2**13) >> 14
        inside = np.all((index >= 0) & (index < np.array(result.grid.size_px)[:, None]), axis=0)
        i, j, kk = index[:, inside]
        np.maximum.at(expected, (kk, j, i), sequence.images[k].ravel()[inside])
    assert np.array_equal(result.volume, expected)


def test_partial_and_no_optimization_agree_with_fixed_point(spine):
    # doubles instead of 14-bit fixed point move pixels by < 0.03 voxel: a few land in another
    # voxel, and the truncated running mean of the voxels they touch shifts a little
    full = _reconstruct(spine, "NN_MEAN", fill_holes=False)
    for optimization in ("PARTIAL", "NONE"):
        other = _reconstruct(spine, "NN_MEAN", fill_holes=False, optimization=optimization)
        assert np.count_nonzero(full.covered ^ other.covered) < 0.02 * np.count_nonzero(full.covered)
        both = full.covered & other.covered
        difference = np.abs(full.volume[both].astype(int) - other.volume[both])
        assert np.mean(difference <= 2) > 0.97


# -- frames, poses, output frame ---------------------------------------------------------------


def test_invalid_frames_are_skipped_and_counted(spine):
    folder, sequence, image_to_probe = spine
    config = _config(folder, "NN_MEAN")
    status = np.ones(len(sequence), dtype=bool)
    status[[3, 7]] = False
    marked = dataclasses.replace(sequence, transform_status={**sequence.transform_status, "ProbeToTracker": status})
    result = reconstruct_volume(marked, image_to_probe, config)
    assert (result.frames_inserted, result.frames_skipped) == (19, 2)
    keep = np.flatnonzero(status)
    subset = dataclasses.replace(
        sequence,
        images=sequence.images[keep],
        timestamps_s=sequence.timestamps_s[keep],
        transforms={name: m[keep] for name, m in sequence.transforms.items()},
        transform_status={name: s[keep] for name, s in sequence.transform_status.items()},
        image_status=sequence.image_status[keep],
        frame_indices=sequence.frame_indices[keep],
    )
    assert np.array_equal(result.volume, reconstruct_volume(subset, image_to_probe, config).volume)


def test_image_orientation_is_undone_before_pasting(spine):
    folder, sequence, image_to_probe = spine
    flipped = dataclasses.replace(sequence, images=sequence.images[:, ::-1, ::-1].copy(), image_orientation="UN")
    config = _config(folder, "LN_MAXI")
    assert np.array_equal(
        reconstruct_volume(flipped, image_to_probe, config).volume,
        reconstruct_volume(sequence, image_to_probe, config).volume,
    )


def test_mri_output_frame_follows_reference_to_mri(spine):
    folder, sequence, image_to_probe = spine
    config = _config(folder, "NN_MAXI")
    shift_mm = np.array([10.0, -20.0, 5.0])
    reference_to_mri = Transform.from_rotation_translation(np.eye(3), shift_mm, "Reference", "Mri")
    in_mri = reconstruct_volume(sequence, image_to_probe, config, reference_to_mri=reference_to_mri)
    in_reference = reconstruct_volume(sequence, image_to_probe, config)
    assert in_mri.grid.frame == "Mri" and in_reference.grid.frame == "Reference"
    assert np.allclose(np.subtract(in_mri.grid.origin_mm, in_reference.grid.origin_mm), shift_mm, atol=1e-9)
    assert compare_volumes(in_mri.to_sitk(), in_reference.to_sitk()).fraction_equal > 0.9999


def test_skip_interval_pastes_every_nth_frame_on_the_full_grid(spine):
    result = _reconstruct(spine, "NN_MAXI", skip_interval=5)
    assert result.frames_inserted == 5  # frames 0, 5, 10, 15, 20
    assert result.grid.size_px == SPINE_SIZE


# -- clipping ----------------------------------------------------------------------------------


def test_clip_rectangle_is_inclusive_and_clamped():
    config = VolumeReconstructionConfig(
        (0.5,) * 3, clip_rectangle_origin_px=(167, 62), clip_rectangle_size_px=(495, 488)
    )
    assert clip_extent(config, 820, 616) == (167, 662, 62, 550)
    assert extent_corner_box(config, 820, 616) == (167.0, 662.0, 62.0, 550.0)
    whole = VolumeReconstructionConfig((0.5,) * 3, clip_rectangle_size_px=(820, 616))
    assert clip_extent(whole, 820, 616) == (0, 819, 0, 615)
    assert clip_extent(VolumeReconstructionConfig((0.5,) * 3), 820, 616) == (0, 819, 0, 615)
    assert int(paste_mask(config, 820, 616, unoptimized=False).sum()) == 496 * 489


FAN = VolumeReconstructionConfig(
    (0.5,) * 3,
    clip_rectangle_origin_px=(192, 16),
    clip_rectangle_size_px=(420, 580),
    fan_angles_deg=(-45.0, 45.0),
    fan_origin_px=(380.0, 20.0),
    fan_radius_start_px=120.0,
    fan_radius_stop_px=360.0,
)


def test_fan_rows_follow_plus_optimized_bounds():
    runs = paste_runs(FAN, 820, 616, unoptimized=False)
    # 200 px deep: edges at 380 -/+ 200, one pixel inside; no start-radius gap
    assert runs[220].tolist() == [192, 579, 820, -1]
    # 100 px deep: edges 281..479, gap inside the 120 px start radius: 380 -/+ 66.3
    assert runs[120].tolist() == [281, 479, 315, 445]
    # beyond the stop radius (360 px) nothing is pasted
    assert runs[20 + 361].tolist() == [0, -1, 820, -1]


def test_fan_pixels_follow_plus_unoptimized_test():
    mask = paste_mask(FAN, 820, 616, unoptimized=True)
    assert not mask[120, 430]  # 50 px aside, 100 deep: inside the start radius
    assert mask[120, 450]  # 70 px aside, 100 deep: 122 px from the apex
    assert mask[120, 479]
    # exactly on the 45 degree edge: tan(45 deg) is 0.9999999999999999 in doubles, so out
    assert not mask[120, 480]
    runs = paste_runs(FAN, 820, 616, unoptimized=True)
    rebuilt = np.zeros_like(mask)
    for row, (start, stop, gap_start, gap_stop) in enumerate(runs):
        rebuilt[row, start : stop + 1] = True
        rebuilt[row, gap_start : gap_stop + 1] = False
    assert np.array_equal(rebuilt, mask)


def test_fan_clipping_only_removes_coverage(spine):
    folder, sequence, image_to_probe = spine
    plain = _config(folder, "LN_MAXI")
    fan = dataclasses.replace(plain, fan_angles_deg=(-20.0, 20.0), fan_origin_px=(410.0, 0.0), fan_radius_stop_px=500.0)
    clipped = reconstruct_volume(sequence, image_to_probe, fan)
    full = reconstruct_volume(sequence, image_to_probe, plain)
    assert clipped.grid == full.grid  # the grid follows the clip rectangle, not the fan
    assert 0 < clipped.covered.sum() < 0.8 * full.covered.sum()
    assert not np.any(clipped.covered & ~full.covered)


# -- hole filling ------------------------------------------------------------------------------


def _line_with_hole():
    volume = np.zeros((1, 1, 5), dtype=np.uint8)
    accumulation = np.zeros((1, 1, 5), dtype=np.uint16)
    volume[0, 0, [0, 4]] = (10, 50)
    accumulation[0, 0, [0, 4]] = 256
    return volume, accumulation


def test_stick_filling_uses_plus_weights():
    volume, accumulation = _line_with_hole()
    filled = _fill_holes(
        volume, accumulation, (HoleFillingElement("STICK", stick_length_limit=9, number_of_sticks_to_use=1),)
    )
    assert filled == 3
    # PLUS weighs the far end by (near distance + 1) / (sum of distances + 1): 26, 34, 42, not 20, 30, 40
    assert volume[0, 0].tolist() == [10, 26, 34, 42, 50]


def test_stick_length_limit_counts_both_ends():
    # a stick spans at most StickLengthLimit - 1 steps in all: known voxels 4 apart need 5
    for limit, expected in ((4, [10, 0, 0, 0, 50]), (5, [10, 26, 34, 42, 50])):
        volume, accumulation = _line_with_hole()
        _fill_holes(
            volume, accumulation, (HoleFillingElement("STICK", stick_length_limit=limit, number_of_sticks_to_use=1),)
        )
        assert volume[0, 0].tolist() == expected


def test_gaussian_filling_needs_the_known_ratio():
    volume = np.full((3, 3, 3), 90, dtype=np.uint8)
    accumulation = np.full((3, 3, 3), 256, dtype=np.uint16)
    volume[1, 1, 1], accumulation[1, 1, 1] = 0, 0
    for ratio, expected in ((0.5, 90), (0.99, 0)):
        element = HoleFillingElement("GAUSSIAN", size=3, stdev=1.0, minimum_known_voxels_ratio=ratio)
        trial = volume.copy()
        _fill_holes(trial, accumulation, (element,))
        assert trial[1, 1, 1] == expected


def test_elements_are_tried_in_order():
    volume, accumulation = _line_with_hole()
    elements = (
        HoleFillingElement("GAUSSIAN", size=3, stdev=1.0, minimum_known_voxels_ratio=0.5),
        HoleFillingElement("NEAREST_NEIGHBOR", size=3, minimum_known_voxels_ratio=0.0),
    )
    assert _fill_holes(volume, accumulation, elements) == 2  # the middle hole has no known neighbour
    assert volume[0, 0].tolist() == [10, 10, 0, 50, 50]


def test_accumulation_buffer_keeps_the_holes(spine):
    result = _reconstruct(spine, "NN_MEAN")
    assert result.accumulation.dtype == np.uint16
    assert set(np.unique(result.accumulation[result.covered] % 256).tolist()) == {0}
    assert np.count_nonzero(result.volume[~result.covered]) > 0  # holes were filled in the volume


# -- bad input ---------------------------------------------------------------------------------


def test_no_valid_frame_is_an_error(spine):
    folder, sequence, image_to_probe = spine
    invalid = {name: np.zeros(len(sequence), dtype=bool) for name in sequence.transforms}
    with pytest.raises(ReconstructionError, match="no frame has a valid ImageToReference"):
        reconstruct_volume(
            dataclasses.replace(sequence, transform_status=invalid), image_to_probe, _config(folder, "NN_MEAN")
        )


def test_device_set_without_image_to_probe_is_an_error(spine, tmp_path):
    folder = spine[0]
    text = (folder / CONFIG.format("NN_MEAN")).read_text()
    start = text.index('<Transform From="Image"')
    stripped = tmp_path / "no_calibration.xml"
    stripped.write_text(text[:start] + text[text.index("/>", start) + 2 :])
    with pytest.raises(DeviceSetError, match="no ImageToProbe"):
        reconstruct_from_files(folder / SWEEP, stripped)


def test_grid_over_the_memory_limit_is_an_error(spine):
    folder, sequence, image_to_probe = spine
    with pytest.raises(ReconstructionError, match="over the memory limit"):
        reconstruct_volume(sequence, image_to_probe, _config(folder, "NN_MEAN"), memory_limit_bytes=1_000_000)


def test_unsupported_settings_are_errors(spine):
    folder, sequence, image_to_probe = spine
    config = _config(folder, "NN_MEAN")
    with pytest.raises(ReconstructionError, match="IMPORTANCEMASK is not supported"):
        reconstruct_volume(sequence, image_to_probe, dataclasses.replace(config, compounding_mode="IMPORTANCEMASK"))
    with pytest.raises(ReconstructionError, match="EnableFanAnglesAutoDetect"):
        reconstruct_volume(sequence, image_to_probe, dataclasses.replace(config, enable_fan_angles_auto_detect=True))
    with pytest.raises(ReconstructionError, match="pixel type float64"):
        floats = dataclasses.replace(sequence, images=sequence.images.astype(np.float64))
        reconstruct_volume(floats, image_to_probe, config)
    with pytest.raises(ReconstructionError, match="not a B-mode orientation"):
        reconstruct_volume(dataclasses.replace(sequence, image_orientation="FM"), image_to_probe, config)


def test_write_is_atomic_and_keeps_geometry(spine, tmp_path):
    result = _reconstruct(spine, "LN_MAXI")
    path = result.write(tmp_path / "volume.mha")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["volume.mha"]
    written = sitk.ReadImage(str(path))
    assert written.GetSize() == SPINE_SIZE
    assert np.allclose(written.GetOrigin(), result.grid.origin_mm) and written.GetSpacing() == (0.5, 0.5, 0.5)
    assert compare_files(path, spine[0] / "vtkVolumeReconstructorTestLNMAXIvolumeRef.mha").fraction_equal == 1.0
    accumulation = sitk.ReadImage(str(result.write(tmp_path / "acc.mha", accumulation=True)))
    assert accumulation.GetPixelIDTypeAsString() == "16-bit unsigned integer"


def test_kernel_constants_match_plus():
    assert kernels.plus_round(2.5) == 3 and kernels.plus_round(-2.5) == -2
    assert kernels.plus_round(2.4999999) == 3  # PLUS's 2**-17 tolerance
    assert kernels.plus_floor(2.9999999) == 3 and kernels.plus_floor(-0.5) == -1


def test_float32_frames_keep_exact_values_and_untruncated_means(spine):
    folder, sequence, image_to_probe = spine
    floats = dataclasses.replace(sequence, images=sequence.images.astype(np.float32))
    for name in ("LN_LATE", "NN_MAXI"):
        config = dataclasses.replace(_config(folder, name), fill_holes=False)
        as_float = reconstruct_volume(floats, image_to_probe, config)
        as_bytes = reconstruct_volume(sequence, image_to_probe, config)
        assert as_float.volume.dtype == np.float32
        assert np.array_equal(as_float.volume, as_bytes.volume.astype(np.float32))
    config = dataclasses.replace(_config(folder, "NN_MEAN"), fill_holes=False)
    float_mean = reconstruct_volume(floats, image_to_probe, config)
    byte_mean = reconstruct_volume(sequence, image_to_probe, config)
    excess = (float_mean.volume - byte_mean.volume)[byte_mean.covered]
    # integer running means truncate at every insertion: on this sweep 2.3 grey levels low on average
    assert excess.min() > -1e-3 and 2.0 < excess.mean() < 2.7
