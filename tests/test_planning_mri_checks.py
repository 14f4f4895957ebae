"""Label-free checks against the MRI alone: body mask, target/entry inside the MRI, entry on the skin, path through air.

On a synthetic MRI with a known skin (a flat back at P = 49.5 mm, 1 mm voxels, LPS = index) and on the
real SCT lumbar T2 (``../shared/data/mri-nifti-sct-t2-lumbar``).
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from workbench.frames import apply_affine
from workbench.io.volume import load_volume
from workbench.planning.model import NeedleSpec, Trajectory
from workbench.planning.mri_checks import BodyMask, check_path
from workbench.planning.safety import SafetyThresholds, check_trajectory

SIZE_IJK = (80, 100, 60)
SKIN_P_MM = 49.5  # body voxels have P <= 49 (centres), air behind: the surface is the face at 49.5
TARGET = (40.0, 10.0, 30.0)
NEEDLE = NeedleSpec(90.0, "22G")


def body_image() -> sitk.Image:
    """A T2-like MRI of a flat back: tissue (fat 300, muscle 120) for P < 49.5 mm, noisy air behind.

    An enclosed dark cavity (a bowel-gas stand-in, value 3) sits at P 15-25 mm; 1 mm voxels, origin 0, LPS = index.
    """
    rng = np.random.default_rng(7)
    voxels_kji = np.abs(rng.normal(0.0, 4.0, SIZE_IJK[::-1]))  # Rician-like air noise
    voxels_kji[:, :50, :] = 120.0 + rng.normal(0.0, 10.0, (SIZE_IJK[2], 50, SIZE_IJK[0]))
    voxels_kji[:, 44:50, :] = 300.0  # bright subcutaneous fat under the skin
    voxels_kji[20:40, 15:26, 30:50] = 3.0
    image = sitk.GetImageFromArray(voxels_kji.astype(np.float32))
    image.SetSpacing((1.0, 1.0, 1.0))
    return image


@pytest.fixture(scope="module")
def body() -> BodyMask:
    return BodyMask.from_image(body_image())


def _trajectory(entry, target=TARGET, needle=NEEDLE) -> Trajectory:
    return Trajectory("L4 right", "nerve root", target, entry, needle)


def _by_name(results) -> dict:
    return {r.name: r for r in results}


def test_the_body_mask_finds_the_skin_and_fills_the_enclosed_cavity(body):
    line_mri = np.array([[40.0, p, 30.0] for p in np.arange(30.0, 69.0, 0.25)])
    distance_mm = body.surface_distance_mm(line_mri)
    skin_p_mm = line_mri[np.argmax(distance_mm > 0), 1]
    # the 1 mm smoothing and the threshold at the foot of the air peak put the mask's skin up to 2.5 mm out
    assert SKIN_P_MM <= skin_p_mm <= SKIN_P_MM + 2.5
    # distance grows 1 mm per mm behind the skin
    assert np.diff(distance_mm[line_mri[:, 1] > 55.0]) == pytest.approx(0.25, abs=1e-3)
    assert body.mask_kji[30, 20, 40]  # the dark cavity inside the body is body
    assert not body.mask_kji[30, 60, 40]
    assert body.outward_normal_at((40.0, SKIN_P_MM, 30.0)) == pytest.approx((0.0, 1.0, 0.0), abs=1e-6)


def test_a_target_half_a_metre_outside_the_mri_is_blocked_with_the_distance(body):
    results = _by_name(check_path(_trajectory((40.0, 50.0, 530.0), target=(40.0, 10.0, 559.5)), body))
    target = results["target inside the MRI"]
    assert (target.status, target.value_mm) == ("blocked", pytest.approx(500.0, abs=1e-9))  # box ends at z 59.5
    assert target.detail == "target is 500.0 mm outside the MRI volume"
    assert results["entry inside the MRI"].value_mm == pytest.approx(470.5, abs=1e-9)
    report = check_trajectory(_trajectory((40.0, 50.0, 530.0), target=(40.0, 10.0, 559.5)), None, body=body)
    assert report.status == "blocked"
    assert "target is 500.0 mm outside the MRI volume" in report.reasons
    assert "not checked: path through air (the path lies outside the MRI)" in report.reasons


def test_an_entry_30_mm_in_the_air_is_blocked_off_the_skin_and_through_air(body):
    results = _by_name(check_path(_trajectory((40.0, SKIN_P_MM + 30.0, 30.0)), body))
    skin, air = results["entry on the skin"], results["path through air"]
    assert skin.status == air.status == "blocked"
    assert 27.5 <= skin.value_mm <= 30.0  # the mask's skin lies up to 2.5 mm behind the true one
    assert 27.5 <= air.value_mm <= 30.0
    assert air.detail.startswith(f"path through air {air.value_mm:.1f} mm (outside the body; tolerance 5 mm)")
    assert skin.detail.startswith(f"entry is {skin.value_mm:.1f} mm outside the skin, in the air")


def test_an_entry_on_the_skin_passes_and_one_deep_under_it_is_blocked(body):
    on_skin = _by_name(check_path(_trajectory((40.0, SKIN_P_MM, 30.0)), body))
    assert [r.status for r in on_skin.values()] == ["ok"] * 4
    assert -2.5 <= on_skin["entry on the skin"].value_mm <= 0.0
    assert on_skin["path through air"].value_mm == 0.0
    deep = _by_name(check_path(_trajectory((40.0, SKIN_P_MM - 20.0, 30.0)), body))
    assert deep["entry on the skin"].status == "blocked"
    assert -22.5 <= deep["entry on the skin"].value_mm <= -20.0
    assert "under the skin surface" in deep["entry on the skin"].detail
    assert deep["path through air"].status == "ok"


def test_the_skin_tolerance_is_a_threshold_and_unrun_checks_are_never_ok(body):
    entry = (40.0, SKIN_P_MM + 8.0, 30.0)
    assert _by_name(check_path(_trajectory(entry), body, 5.0))["entry on the skin"].status == "blocked"
    assert _by_name(check_path(_trajectory(entry), body, 12.0))["entry on the skin"].status == "ok"
    strict = check_trajectory(_trajectory(entry), None, SafetyThresholds(skin_tolerance_mm=12.0), body)
    assert strict.status == "incomplete"  # only the label map's checks are not checked: at best incomplete
    assert strict.reasons == ("not checked: critical structures and bone (no label map)",)
    unrun = check_path(_trajectory(entry), None)
    assert {r.status for r in unrun} == {"not checked"}
    assert unrun[0].reason == "not checked: target inside the MRI (no MRI given)"


def test_an_mri_of_nothing_but_noise_reports_the_body_checks_as_not_checked():
    flat = sitk.Image(20, 20, 20, sitk.sitkFloat32)
    body = BodyMask.from_image(flat)
    results = _by_name(check_path(_trajectory((5.0, 15.0, 5.0), target=(5.0, 5.0, 5.0)), body))
    assert results["target inside the MRI"].status == "ok"
    assert results["entry on the skin"].status == "not checked"


# -- the real SCT lumbar T2 ----------------------------------------------------------------------------

#: A line of the real image looked at by eye (sagittal slice i = 19, axial row k = 100): along j
#: (posterior -> anterior) the raw values are 14, 18, 44, 176, 138 at j = 41..45, so the skin's outer
#: edge (half maximum between air ~5 and skin 176) is at j = 43.4: LPS y = 150.94 - 43.4 = 107.5 mm.
REAL_LINE_I, REAL_LINE_K, REAL_SKIN_J = 19, 100, 43.4


@pytest.fixture(scope="module")
def real(shared_data):
    volume = load_volume(shared_data / "mri-nifti-sct-t2-lumbar" / "t2_lumbar.nii.gz")
    return volume, BodyMask.from_volume(volume)


def test_the_real_mri_body_mask_puts_the_skin_within_3_mm_of_the_image_edge(real):
    volume, body = real
    line_ijk = np.array([[REAL_LINE_I, j, REAL_LINE_K] for j in np.arange(0.0, 120.0, 0.25)])
    line_mri = apply_affine(body.mri_voxel_to_mri, line_ijk)
    raw = sitk.GetArrayFromImage(volume.image)[REAL_LINE_K, 41:46, REAL_LINE_I]
    assert raw.tolist() == [14, 18, 44, 176, 138]  # the line this test was written against
    skin_mri = line_mri[np.argmax(body.surface_distance_mm(line_mri) < 0)]
    expected_mri = apply_affine(body.mri_voxel_to_mri, np.array([[REAL_LINE_I, REAL_SKIN_J, REAL_LINE_K]]))[0]
    assert expected_mri[1] == pytest.approx(107.5, abs=0.05)
    assert abs(skin_mri[1] - expected_mri[1]) < 3.0  # measured: 1.7 mm behind the half-maximum edge
    # the anterior abdominal wall is body too: nothing between the back and j = 190 is outside
    assert body.mask_kji[REAL_LINE_K, 50:190, REAL_LINE_I].all()


def test_on_the_real_mri_an_entry_on_the_skin_passes_and_30_mm_behind_it_is_blocked(real):
    _, body = real
    skin_mri = apply_affine(body.mri_voxel_to_mri, np.array([[REAL_LINE_I, REAL_SKIN_J, REAL_LINE_K]]))[0]
    target_mri = skin_mri - np.array([0.0, 45.0, 0.0])  # 45 mm anterior: the paraspinal muscles
    on_skin = _by_name(check_path(_trajectory(skin_mri, target=target_mri), body))
    assert [r.status for r in on_skin.values()] == ["ok"] * 4, on_skin
    behind = _by_name(check_path(_trajectory(skin_mri + [0.0, 30.0, 0.0], target=target_mri), body))
    assert behind["path through air"].status == "blocked"
    assert behind["path through air"].value_mm == pytest.approx(30.0, abs=3.0)
    assert behind["entry on the skin"].status == "blocked"
