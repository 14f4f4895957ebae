"""Parametric lumbar spine phantom: geometry checked against its parameters and published ranges."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from workbench.errors import WorkbenchError
from workbench.phantom.anatomy import (
    SpineParameters,
    build_phantom,
    disc_degeneration_for_age,
    fat_thickness_for_bmi,
    muscle_fat_fraction_for_age,
    vertebra_motion_matrix,
)
from workbench.phantom.labels import BONE_LABELS, LEVEL_NAMES, Label

SPACING_MM = 1.0
BONE = [int(v) for v in BONE_LABELS]
LUMBAR = LEVEL_NAMES[1:6]


@pytest.fixture(scope="module")
def phantom():
    return build_phantom(SpineParameters(spacing_mm=SPACING_MM))


def _voxels_lps(image: sitk.Image, mask: np.ndarray) -> np.ndarray:
    """(N, 3) LPS centres of the voxels where ``mask`` ([z, y, x]) is True."""
    zz, yy, xx = np.nonzero(mask)
    return np.column_stack([xx, yy, zz]) * np.array(image.GetSpacing()) + np.array(image.GetOrigin())


def _arrays(phantom):
    return sitk.GetArrayViewFromImage(phantom.labels), sitk.GetArrayViewFromImage(phantom.levels)


def _run_mm(phantom, start, end, labels, step_mm=0.05) -> float:
    """Length of the segment start-end whose nearest voxel holds one of ``labels``, mm."""
    t = np.arange(0.0, 1.0, step_mm / np.linalg.norm(end - start))
    hits = np.isin(phantom.label_at(start + t[:, None] * (end - start)), [int(v) for v in labels])
    return float(hits.sum() * step_mm)


# -- layout ---------------------------------------------------------------------------------------


def test_grid_is_lps_uint8_with_identity_direction_and_levels_on_the_same_grid(phantom):
    for image in (phantom.labels, phantom.levels):
        assert image.GetPixelID() == sitk.sitkUInt8
        assert image.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
        assert image.GetSpacing() == (SPACING_MM,) * 3
    assert phantom.levels.GetSize() == phantom.labels.GetSize()
    assert phantom.levels.GetOrigin() == phantom.labels.GetOrigin()
    origin = np.array(phantom.labels.GetOrigin())
    extent = (np.array(phantom.labels.GetSize()) - 1) * SPACING_MM
    assert origin[0] <= -120.0 and origin[0] + extent[0] >= 120.0
    assert extent[2] >= 230.0
    l1_top = phantom.vertebra_centres_lps["L1"][2] + 12.0
    assert origin[2] + extent[2] >= l1_top + 15.0
    assert origin[2] <= phantom.vertebra_centres_lps["S1"][2] - 40.0
    # AIR just above the skin at the midline, skin just below it, aorta inside the grid.
    z = phantom.vertebra_centres_lps["L3"][2]
    skin_y = float(phantom.skin_surface_y_mm(0.0, z))
    assert phantom.label_at([0.0, skin_y + 2.0, z])[0] == Label.AIR
    assert phantom.label_at([0.0, skin_y - 1.0, z])[0] == Label.SKIN
    assert (sitk.GetArrayViewFromImage(phantom.labels) == Label.AORTA).sum() > 1000


def test_levels_run_l1_to_s1_down_z_with_l3_at_the_origin(phantom):
    centres_z = [phantom.vertebra_centres_lps[name][2] for name in LEVEL_NAMES[1:]]
    assert np.all(np.diff(centres_z) < -25.0)  # each body centre 25+ mm below the one above
    np.testing.assert_allclose(phantom.vertebra_centres_lps["L3"], [0.0, 0.0, 0.0], atol=1e-9)
    labels, levels = _arrays(phantom)
    level_z = [_voxels_lps(phantom.levels, levels == i)[:, 2].mean() for i in range(1, 7)]
    assert np.all(np.diff(level_z) < 0.0)
    bone = np.isin(labels, BONE)
    assert np.all(levels[bone] > 0) and np.all(levels[~bone] == 0)


def test_disc_heights_are_within_published_ranges(phantom):
    """Mid-disc height along the line between body centres: 7-14 mm (adult lumbar discs,
    Frobin et al. 2001: about 9-12 mm), with a nucleus in the middle."""
    disc = (Label.DISC_ANNULUS, Label.DISC_NUCLEUS)
    heights = []
    for upper, lower in zip(LEVEL_NAMES[1:-1], LEVEL_NAMES[2:]):
        a, b = phantom.vertebra_centres_lps[upper], phantom.vertebra_centres_lps[lower]
        heights.append(_run_mm(phantom, a, b, disc))
        labels_on_line = phantom.label_at(a + np.linspace(0, 1, 400)[:, None] * (b - a))
        assert Label.DISC_NUCLEUS in labels_on_line
    assert all(7.0 <= h <= 14.0 for h in heights), heights
    assert heights[3] > heights[0]  # L4-L5 taller than L1-L2


def test_lordosis_is_the_angle_between_l1_and_s1_endplates(phantom):
    """L1's lower and S1's upper endplate (each fitted to the body voxels touching a disc)."""
    assert _endplate_angle_deg(phantom, "L1", "S1") == pytest.approx(45.0, abs=5.0)
    flatter = build_phantom(SpineParameters(spacing_mm=SPACING_MM, lordosis_deg=25.0))
    assert _endplate_angle_deg(flatter, "L1", "S1") == pytest.approx(25.0, abs=5.0)


def _endplate_angle_deg(phantom, upper: str, lower: str) -> float:
    return math.degrees(math.acos(abs(_endplate_normal(phantom, upper) @ _endplate_normal(phantom, lower))))


def _endplate_normal(phantom, level: str) -> np.ndarray:
    """Normal of the plane through the vertebral body voxels of ``level`` that touch a disc
    (smallest principal axis)."""
    labels, levels = _arrays(phantom)
    body = (labels == Label.VERTEBRAL_BODY) & (levels == LEVEL_NAMES.index(level))
    disc = np.isin(labels, [Label.DISC_ANNULUS, Label.DISC_NUCLEUS])
    touching = np.zeros_like(body)
    for axis in range(3):
        for shift in (-1, 1):
            touching |= np.roll(disc, shift, axis=axis)
    points = _voxels_lps(phantom.labels, body & touching)
    _, vectors = np.linalg.eigh(np.cov((points - points.mean(axis=0)).T))
    return vectors[:, 0]


def test_spinous_process_tips_are_the_most_posterior_bone_of_each_lumbar_level(phantom):
    labels, levels = _arrays(phantom)
    for i, name in enumerate(LUMBAR, start=1):
        tip = phantom.landmarks_lps[f"{name} spinous process tip"]
        bone_y = _voxels_lps(phantom.levels, levels == i)[:, 1]
        assert bone_y.max() <= tip[1] + SPACING_MM / 2
        assert bone_y.max() >= tip[1] - SPACING_MM
        assert phantom.label_at(tip - [0.0, 0.6 * SPACING_MM, 0.0])[0] == Label.SPINOUS_PROCESS
        assert abs(tip[0]) < 1e-6


def test_named_landmarks_sit_on_their_structures(phantom):
    lm = phantom.landmarks_lps
    for name in (
        "L3 spinous process tip",
        "L4 left transverse process tip",
        "L4-L5 right facet joint",
        "L2 body centre",
    ):
        assert lm[name].shape == (3,)
    for level in LUMBAR:
        for side, sign in (("left", 1), ("right", -1)):
            tip = lm[f"{level} {side} transverse process tip"]
            assert np.sign(tip[0]) == sign and 30.0 < abs(tip[0]) < 55.0  # half tip-to-tip span
            inward = tip - [sign * 1.5, 0.0, 0.0]
            assert phantom.label_at(inward)[0] == Label.TRANSVERSE_PROCESS
            assert phantom.label_at(tip + [sign * 1.5, 0.0, 0.0])[0] not in BONE_LABELS
            assert phantom.label_at(lm[f"{level} {side} pedicle"])[0] == Label.PEDICLE
    for upper, lower in zip(LEVEL_NAMES[1:-1], LEVEL_NAMES[2:]):
        for side in ("left", "right"):
            assert phantom.label_at(lm[f"{upper}-{lower} {side} facet joint"])[0] == Label.FACET_JOINT
    for name in LEVEL_NAMES[1:]:
        assert phantom.label_at(lm[f"{name} body centre"])[0] == Label.VERTEBRAL_BODY


def test_skin_markers_lie_on_the_skin_over_the_lumbar_spine(phantom):
    markers = {name: p for name, p in phantom.landmarks_lps.items() if name.startswith("skin marker")}
    assert len(markers) >= 4
    for p in markers.values():
        assert p[1] == pytest.approx(float(phantom.skin_surface_y_mm(p[0], p[2])), abs=1e-9)
        assert phantom.label_at(p - [0.0, 1.0, 0.0])[0] == Label.SKIN
        assert phantom.label_at(p + [0.0, 1.0, 0.0])[0] == Label.AIR
        assert phantom.vertebra_centres_lps["S1"][2] - 1.0 <= p[2] <= phantom.vertebra_centres_lps["L1"][2] + 1.0


# -- targets --------------------------------------------------------------------------------------


def test_targets_for_l3_to_s1_both_sides(phantom):
    expected = {
        f"{level} {side} exiting nerve root, dorsal aspect"
        for level in ("L3", "L4", "L5", "S1")
        for side in ("left", "right")
    }
    assert set(phantom.targets_lps) == expected
    assert set(phantom.skin_entry_hint_lps) == expected


def test_each_target_touches_its_root_and_is_outside_bone(phantom):
    labels, _ = _arrays(phantom)
    neural = _voxels_lps(phantom.labels, np.isin(labels, [Label.NERVE_ROOT, Label.DORSAL_ROOT_GANGLION]))
    for name, target in phantom.targets_lps.items():
        assert phantom.label_at(target)[0] not in BONE_LABELS, name
        assert np.linalg.norm(neural - target, axis=1).min() <= 3.0, name


def test_each_target_is_lateral_and_caudal_to_its_pedicle(phantom):
    for name, target in phantom.targets_lps.items():
        level, side = name.split()[:2]
        pedicle = phantom.landmarks_lps[f"{level} {side} pedicle"]
        assert np.sign(target[0]) == np.sign(pedicle[0]) == (1 if side == "left" else -1)
        assert abs(target[0]) > abs(pedicle[0]) + 1.0, name
        assert target[2] < pedicle[2] - 5.0, name


def test_skin_entry_hints_are_paramedian_on_the_skin_with_a_bone_free_path(phantom):
    for name, entry in phantom.skin_entry_hint_lps.items():
        target = phantom.targets_lps[name]
        assert entry[1] == pytest.approx(float(phantom.skin_surface_y_mm(entry[0], entry[2])), abs=1e-3)
        assert 30.0 <= abs(entry[0]) <= 50.0, name
        assert 40.0 <= np.linalg.norm(entry - target) <= 110.0, name
        assert _run_mm(phantom, target, entry, BONE_LABELS, step_mm=0.25) == 0.0, name


# -- parameters -----------------------------------------------------------------------------------


def _fat_run_mm(phantom, x_mm: float) -> float:
    """Subcutaneous fat crossed going straight down from the skin at (x, L3 centre z), mm."""
    z = phantom.vertebra_centres_lps["L3"][2]
    skin = float(phantom.skin_surface_y_mm(x_mm, z))
    return _run_mm(phantom, np.array([x_mm, skin, z]), np.array([x_mm, skin - 80.0, z]), (Label.FAT,))


def test_fat_thickness_grows_with_bmi(phantom):
    """10 mm at BMI 20, 20 mm at 25, 40 mm at 35 (+-5 % by seed), measured in the label map."""
    assert [fat_thickness_for_bmi(b) for b in (20, 25, 35)] == [10.0, 20.0, 40.0]
    thin = build_phantom(SpineParameters(spacing_mm=SPACING_MM, bmi=20.0))
    obese = build_phantom(SpineParameters(spacing_mm=SPACING_MM, bmi=35.0))
    measured = []
    for ph, nominal in ((thin, 10.0), (phantom, 20.0), (obese, 40.0)):
        assert ph.fat_thickness_mm == pytest.approx(nominal, rel=0.05)
        measured.append(_fat_run_mm(ph, 30.0))
        assert measured[-1] == pytest.approx(ph.fat_thickness_mm, abs=1.5 * SPACING_MM)
    assert measured[0] < measured[1] < measured[2]
    assert thin.labels.GetSize()[0] < phantom.labels.GetSize()[0] < obese.labels.GetSize()[0]  # wider torso


def test_age_drives_muscle_fat_fraction_and_disc_degeneration(phantom):
    assert phantom.muscle_fat_fraction == pytest.approx(0.1375)
    assert phantom.disc_degeneration == pytest.approx(0.3)
    assert muscle_fat_fraction_for_age(70) == pytest.approx(0.225)
    assert disc_degeneration_for_age(25) == 0.0 and disc_degeneration_for_age(90) == 1.0


def test_vertebra_motion_moves_that_level_rigidly_about_its_body_centre():
    levels = ("L3", "L4", "L5")
    rotation_deg, translation_mm = (3.0, -2.0, 4.0), (1.5, -1.0, 2.0)
    base = build_phantom(SpineParameters(spacing_mm=SPACING_MM, levels=levels))
    moved = build_phantom(
        SpineParameters(spacing_mm=SPACING_MM, levels=levels, vertebra_motion={"L4": (rotation_deg, translation_mm)})
    )
    motion = vertebra_motion_matrix(rotation_deg, translation_mm, base.vertebra_centres_lps["L4"])
    points = {**base.landmarks_lps, **base.targets_lps}
    moved_points = {**moved.landmarks_lps, **moved.targets_lps}
    for name, p in points.items():
        follows_l4 = name.startswith(("L4 ", "L3-L4 "))  # a facet joint moves with the vertebra below it
        expected = motion[:3, :3] @ p + motion[:3, 3] if follows_l4 else p
        np.testing.assert_allclose(moved_points[name], expected, atol=1e-9, err_msg=name)
    np.testing.assert_allclose(moved.vertebra_frames_lps["L4"], motion @ base.vertebra_frames_lps["L4"], atol=1e-9)
    # The bone voxels follow: the centroid of L4's level-map voxels moves as predicted within a voxel.
    centroid = [_voxels_lps(ph.levels, sitk.GetArrayViewFromImage(ph.levels) == 4).mean(axis=0) for ph in (base, moved)]
    assert np.linalg.norm(centroid[1] - (motion[:3, :3] @ centroid[0] + motion[:3, 3])) < SPACING_MM
    tip = moved.landmarks_lps["L4 spinous process tip"] - [0.0, 0.6 * SPACING_MM, 0.0]
    assert moved.level_at(tip)[0] == LEVEL_NAMES.index("L4")


def test_vertebra_motion_matrix_rotates_about_the_centre():
    centre = np.array([1.0, 2.0, 3.0])
    m = vertebra_motion_matrix((0.0, 0.0, 90.0), (0.0, 0.0, 5.0), centre)
    np.testing.assert_allclose(m[:3, :3] @ centre + m[:3, 3], centre + [0.0, 0.0, 5.0], atol=1e-12)
    np.testing.assert_allclose(m[:3, :3] @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-12)  # +x -> +y about z
    mx = vertebra_motion_matrix((90.0, 0.0, 0.0), (0.0, 0.0, 0.0), np.zeros(3))
    np.testing.assert_allclose(mx[:3, :3] @ [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], atol=1e-12)


def test_same_parameters_give_identical_bytes_and_seeds_vary_the_anatomy():
    params = SpineParameters(spacing_mm=2.0, seed=3, levels=("L4", "L5", "S1"))
    a, b = build_phantom(params), build_phantom(params)
    for image in ("labels", "levels"):
        assert (
            sitk.GetArrayViewFromImage(getattr(a, image)).tobytes()
            == sitk.GetArrayViewFromImage(getattr(b, image)).tobytes()
        )
    other = build_phantom(SpineParameters(spacing_mm=2.0, seed=4, levels=("L4", "L5", "S1")))
    assert not np.allclose(
        a.landmarks_lps["L4 left transverse process tip"], other.landmarks_lps["L4 left transverse process tip"]
    )
    # Leaving out levels does not move the others.
    full = build_phantom(SpineParameters(spacing_mm=2.0, seed=3))
    np.testing.assert_allclose(full.landmarks_lps["L5 spinous process tip"], a.landmarks_lps["L5 spinous process tip"])
    assert "L3 body centre" not in a.landmarks_lps and set(a.targets_lps) == {
        f"{lvl} {side} exiting nerve root, dorsal aspect" for lvl in ("L4", "L5", "S1") for side in ("left", "right")
    }


def test_label_at_is_nearest_voxel_and_air_outside(phantom):
    inside = phantom.vertebra_centres_lps["L3"]
    far = np.array([1000.0, 0.0, 0.0])
    out = phantom.label_at(np.array([inside, far]))
    assert out.dtype == np.uint8 and out.tolist() == [Label.VERTEBRAL_BODY, Label.AIR]
    assert phantom.label_at(inside).shape == (1,)


@pytest.mark.parametrize(
    "points, message",
    [([[0.0, np.nan, 0.0]], "non-finite"), ([[0.0, 1.0]], "(N, 3)"), ("abc", "(N, 3)")],
)
def test_label_at_rejects_bad_points(phantom, points, message):
    with pytest.raises(WorkbenchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        phantom.label_at(points)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"seed": 1.5}, "seed must be a non-negative integer"),
        ({"levels": ("L1", "T12")}, "unknown phantom level 'T12'"),
        ({"levels": ("L3",)}, "at least two vertebrae"),
        ({"levels": ("L2", "L4")}, "contiguous"),
        ({"levels": ("L4", "L3")}, "contiguous"),
        ({"lordosis_deg": 80.0}, "lordosis_deg must be within 0..70 deg"),
        ({"bmi": 12.0}, "bmi must be within 16..45"),
        ({"age_years": 10}, "age_years must be within 18..90"),
        ({"scoliosis_deg": -30.0}, "scoliosis_deg must be within -20..20"),
        ({"spacing_mm": 0.1}, "spacing_mm must be within 0.25..2"),
        ({"spacing_mm": "1"}, "spacing_mm must be within"),
        ({"vertebra_motion": {"L1": ((0, 0, 0), (0, 0, 0))}, "levels": ("L3", "L4")}, "not among the built levels"),
        ({"vertebra_motion": {"L4": ((0, 0), (0, 0, 0))}}, r"must be \(rotation_deg \(3,\), translation_mm \(3,\)\)"),
        ({"vertebra_motion": {"L4": 5}}, r"must be \(rotation_deg"),
        ({"vertebra_motion": {"L4": ((0, np.inf, 0), (0, 0, 0))}}, "non-finite"),
        ({"vertebra_motion": {"L4": ((0, 0, 30), (0, 0, 0))}}, "too large"),
    ],
)
def test_bad_parameters_are_rejected_with_a_specific_message(kwargs, message):
    with pytest.raises(WorkbenchError, match=message):
        SpineParameters(**kwargs)


def test_build_phantom_needs_spine_parameters():
    with pytest.raises(WorkbenchError, match="needs SpineParameters"):
        build_phantom({"seed": 0})
