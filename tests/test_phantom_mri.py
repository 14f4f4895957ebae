"""Synthetic T2 SPACE MRI of the phantom and its DICOM series."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from scipy import ndimage

from workbench.errors import DicomError, WorkbenchError
from workbench.io.dicom import load_dicom_series
from workbench.phantom.anatomy import SpineParameters, build_phantom
from workbench.phantom.democase import DEFAULT_DEMO_CASE
from workbench.phantom.labels import BONE_LABELS, MARROW_T2_SIGNAL, Label
from workbench.phantom.mri import (
    PROTOCOLS,
    SKIN_MARGIN_MM,
    planning_skin_y_mm,
    signal_lookup,
    synthesize_t2,
    write_dicom_series,
)

RAYLEIGH_MEAN_OVER_STD = np.sqrt(np.pi / 2) / np.sqrt(2 - np.pi / 2)  # 1.913


@pytest.fixture(scope="module")
def phantom():
    return build_phantom(SpineParameters(spacing_mm=1.0))


@pytest.fixture(scope="module")
def seed_mri(phantom):
    return synthesize_t2(phantom, "seed-3d-space", seed=0)


@pytest.fixture(scope="module")
def iso_mri(phantom):
    return synthesize_t2(phantom, "isotropic-1mm", seed=0)


def _demo_parameters(**changes) -> SpineParameters:
    """The default demo case's anatomy (seed 7, BMI 28, age 55) on a 1 mm label grid."""
    return DEFAULT_DEMO_CASE.spine_parameters(**{"spacing_mm": 1.0, **changes})


@pytest.fixture(scope="module")
def demo_phantom():
    return build_phantom(_demo_parameters())


@pytest.fixture(scope="module")
def demo_mri(demo_phantom):
    return synthesize_t2(demo_phantom, DEFAULT_DEMO_CASE.protocol, seed=DEFAULT_DEMO_CASE.seed)


def _comparison_tool():
    """tools/phantom_vs_real_mri.py as a module (ROIs and contrast measures of docs/phantom.md)."""
    path = Path(__file__).resolve().parents[1] / "tools" / "phantom_vs_real_mri.py"
    spec = importlib.util.spec_from_file_location("phantom_vs_real_mri", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _labels_on(image: sitk.Image, phantom) -> np.ndarray:
    """Phantom labels at the MRI voxel centres (nearest), numpy order; AIR outside."""
    resampled = sitk.Resample(phantom.labels, image, sitk.Transform(), sitk.sitkNearestNeighbor, int(Label.AIR))
    return sitk.GetArrayFromImage(resampled)


def _interior(mask: np.ndarray, voxels: int = 1) -> np.ndarray:
    return ndimage.binary_erosion(mask, iterations=voxels)


# -- geometry -------------------------------------------------------------------------------------


def test_seed_protocol_is_the_clinical_coronal_slab(seed_mri):
    size = seed_mri.GetSize()
    assert size[:2] == (184, 184)
    assert 80 < size[2] < 200  # the study's 80 slices, extended to reach the skin
    np.testing.assert_allclose(seed_mri.GetSpacing(), (2.283, 2.283, 1.0), atol=1e-3)
    assert seed_mri.GetSpacing()[0] == pytest.approx(420.0 / 184)
    np.testing.assert_allclose(seed_mri.GetDirection(), (1, 0, 0, 0, 0, 1, 0, -1, 0))  # columns: +x, -z, +y
    assert seed_mri.GetPixelID() == sitk.sitkUInt16
    assert sitk.GetArrayViewFromImage(seed_mri).max() <= 4095
    assert seed_mri.GetMetaData("workbench.mri.protocol") == "seed-3d-space"


def _extent_lps(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) LPS mm of the voxel centres of an axis-aligned image (any axis order/sign)."""
    corners = np.array(
        [image.TransformIndexToPhysicalPoint([c * (n - 1) for c, n in zip(corner, image.GetSize())])
         for corner in np.ndindex(2, 2, 2)]
    )
    return corners.min(axis=0), corners.max(axis=0)


@pytest.mark.parametrize("protocol", ["seed-3d-space", "isotropic-1mm"])
def test_demo_mri_covers_every_target_entry_and_the_skin_with_10mm_margin(demo_phantom, demo_mri, protocol):
    """Default demo anatomy: every skin entry hint and target is >= 10 mm inside the MRI along
    the slice axis (coronal: y) and in plane; the skin of the planning region is >= 10 mm inside
    (posterior), and the whole of every vertebral body is inside."""
    image = demo_mri if protocol == "seed-3d-space" else synthesize_t2(demo_phantom, protocol, seed=0)
    low, high = _extent_lps(image)
    points = np.array(list(demo_phantom.skin_entry_hint_lps.values()) + list(demo_phantom.targets_lps.values()))
    assert len(points) == 16
    margin_mm = np.minimum(points - low, high - points)
    assert margin_mm.min() >= 10.0, margin_mm.min(axis=0)  # x, y (slice axis of seed-3d-space), z
    entries_y = np.array([p[1] for p in demo_phantom.skin_entry_hint_lps.values()])
    assert high[1] - entries_y.max() >= 25.0  # entries 100-107 mm, slab to >= 132 mm
    assert high[1] - planning_skin_y_mm(demo_phantom) >= SKIN_MARGIN_MM - 1.0 >= 10.0
    labels = sitk.GetArrayViewFromImage(demo_phantom.labels)
    body_rows = np.nonzero(np.any(labels == int(Label.VERTEBRAL_BODY), axis=(0, 2)))[0]
    body_front_y = demo_phantom.labels.GetOrigin()[1] + body_rows[0] * demo_phantom.labels.GetSpacing()[1]
    assert low[1] <= body_front_y - 3.0  # the bodies with their anterior cortex


def test_slab_grows_with_the_fat_of_the_patient():
    lean = synthesize_t2(build_phantom(_demo_parameters(bmi=20.0, levels=("L4", "L5"))), seed=0)
    obese = build_phantom(_demo_parameters(bmi=40.0, levels=("L4", "L5")))
    obese_mri = synthesize_t2(obese, seed=0)
    assert obese_mri.GetSize()[2] - lean.GetSize()[2] >= 30  # 10 + 2 (BMI - 20) mm of fat: +40 mm at BMI 40
    low, high = _extent_lps(obese_mri)
    assert high[1] - planning_skin_y_mm(obese) >= 14.0
    for p in list(obese.skin_entry_hint_lps.values()) + list(obese.targets_lps.values()):
        assert low[1] + 10.0 <= p[1] <= high[1] - 10.0


def test_isotropic_protocol_tiles_the_whole_phantom_in_1mm_axial_voxels(phantom, iso_mri):
    assert iso_mri.GetSpacing() == (1.0, 1.0, 1.0)
    assert iso_mri.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    size = phantom.labels.GetSize()  # 1 mm phantom: one MRI voxel per label voxel, plus the margin behind the skin
    assert iso_mri.GetSize() == (size[0], size[1] + int(SKIN_MARGIN_MM), size[2])
    np.testing.assert_allclose(iso_mri.GetOrigin(), phantom.labels.GetOrigin(), atol=1e-9)


# -- signal ---------------------------------------------------------------------------------------


def _bone_depth(labels: np.ndarray) -> np.ndarray:
    """Chessboard depth of each bone voxel in voxels (1 = on the surface), 0 outside the bone."""
    bone = np.isin(labels, [int(v) for v in BONE_LABELS]).astype(np.uint8)
    depth = np.zeros(bone.shape, dtype=np.int8)
    layer = bone
    for n in range(1, 4):
        depth[layer == 1] = n
        layer = ndimage.minimum_filter(layer, size=3, mode="nearest")
    return depth


def test_t2_contrast_fluid_fat_nucleus_over_muscle_cortex_thin(phantom, iso_mri):
    labels = _labels_on(iso_mri, phantom)
    signal = sitk.GetArrayViewFromImage(iso_mri).astype(float)

    def mean(mask):
        return signal[mask].mean()

    muscle = mean(_interior(np.isin(labels, [Label.ERECTOR_SPINAE, Label.MULTIFIDUS, Label.PSOAS])))
    bright = {
        name: mean(_interior(labels == label))
        for name, label in (("CSF", Label.CSF), ("fat", Label.FAT), ("nucleus", Label.DISC_NUCLEUS))
    }
    assert min(bright.values()) > 3.0 * muscle, bright
    assert bright["CSF"] == pytest.approx(2000.0, rel=0.25)  # CSF near 2000 of 4095 (bias field +-)
    depth = _bone_depth(labels)  # 1 mm label voxels = MRI voxels
    surface, second, marrow = mean(depth == 1), mean(depth == 2), mean(depth == 3)
    assert marrow / bright["CSF"] == pytest.approx(MARROW_T2_SIGNAL, rel=0.15)
    # 0.7 mm cortex partial-volumed in the 1 mm surface voxel; the voxel under it is marrow
    assert 0.3 * marrow < surface < 0.55 * marrow
    assert second == pytest.approx(marrow, rel=0.1)
    annulus = mean(_interior(labels == Label.DISC_ANNULUS))
    assert annulus < 0.5 * bright["nucleus"]


def test_texture_marrow_grain_and_muscle_fat_planes_are_anatomy_not_noise(phantom, iso_mri):
    """Marrow varies beyond the noise; muscle holds bright fat planes (high upper tail) whose
    pattern is the same in an MRI with other noise (seed), and its mean keeps the fat fraction."""
    labels = _labels_on(iso_mri, phantom)
    first = sitk.GetArrayViewFromImage(iso_mri).astype(float)
    other = sitk.GetArrayFromImage(synthesize_t2(phantom, "isotropic-1mm", seed=5)).astype(float)
    noise_sigma = PROTOCOLS["isotropic-1mm"].noise_sigma * 2000.0
    marrow = _bone_depth(labels) == 3
    assert first[marrow].std() > 2.0 * noise_sigma  # grain (12 %) and bias on top of the noise
    muscle = _interior(np.isin(labels, [Label.ERECTOR_SPINAE, Label.MULTIFIDUS]))
    values = first[muscle]
    assert np.percentile(values, 99) > 4.0 * np.median(values)  # fat planes
    assert np.corrcoef(values, other[muscle])[0, 1] > 0.5  # same planes, independent noise
    expected = signal_lookup(phantom)[Label.MULTIFIDUS] * 2000.0
    assert values.mean() == pytest.approx(expected, rel=0.3)  # Rician floor and bias field +-


def test_cauda_equina_roots_are_darker_than_the_csf_around_them(phantom, iso_mri):
    labels = _labels_on(iso_mri, phantom)
    signal = sitk.GetArrayViewFromImage(iso_mri).astype(float)
    csf = _interior(labels == Label.CSF)
    near_csf = ndimage.binary_dilation(labels == Label.CSF, iterations=2)
    roots = (labels == Label.NERVE_ROOT) & near_csf  # cauda equina inside the dural sac
    assert roots.sum() > 500
    assert signal[roots].mean() < 0.7 * signal[csf].mean()


def test_demo_contrasts_match_the_real_t2_lumbar_mri(shared_data, demo_phantom, demo_mri):
    """Mean ROI signal / CSF of the demo MRI within 25 % of the real T2 (docs/phantom.md); the
    muscle of the 55-year-old demo patient (17 % fat) is brighter than the real's, so muscle is
    compared on the same phantom at age 25 (7 % fat, as the real's muscle implies)."""
    tool = _comparison_tool()
    real = tool.contrasts(tool.real_means(tool.load_real(shared_data / "mri-nifti-sct-t2-lumbar" / "t2_lumbar.nii.gz")))
    demo = tool.contrasts(tool.phantom_means(demo_mri, demo_phantom))
    for tissue in ("subcutaneous fat", "disc nucleus", "vertebral marrow"):
        assert demo[tissue][0] == pytest.approx(real[tissue][0], rel=0.25), tissue
    assert real["muscle"][0] == pytest.approx(0.13, abs=0.02)  # the ROIs still sit where docs/phantom.md says
    assert demo["muscle"][0] > real["muscle"][0]
    young = build_phantom(_demo_parameters(age_years=25.0, levels=("L3", "L4", "L5")))
    young_contrasts = tool.contrasts(tool.phantom_means(synthesize_t2(young, seed=7), young))
    assert young_contrasts["muscle"][0] == pytest.approx(real["muscle"][0], rel=0.25)


def test_older_patients_have_brighter_muscle_and_darker_nuclei(phantom):
    older = build_phantom(SpineParameters(spacing_mm=2.0, age_years=75.0, levels=("L4", "L5")))
    young = build_phantom(SpineParameters(spacing_mm=2.0, age_years=25.0, levels=("L4", "L5")))
    assert signal_lookup(older)[Label.MULTIFIDUS] > signal_lookup(young)[Label.MULTIFIDUS]
    assert signal_lookup(older)[Label.DISC_NUCLEUS] < 0.8 * signal_lookup(young)[Label.DISC_NUCLEUS]


def test_partial_volume_averages_the_labels_inside_each_voxel(phantom):
    """A 1 mm voxel a quarter filled with CSF (labels at 0.25 mm) gets a quarter of the CSF signal."""
    values = np.full((24, 24, 24), int(Label.AIR), dtype=np.uint8)
    values[:, :, :9] = Label.CSF  # label voxels 0..8 along x: x < 2.125 mm
    labels = sitk.GetImageFromArray(values)
    labels.SetSpacing((0.25, 0.25, 0.25))
    slab = dataclasses.replace(phantom, labels=labels)
    mri = sitk.GetArrayFromImage(synthesize_t2(slab, "isotropic-1mm", seed=0)).astype(float)
    assert mri.shape == (6, 6 + int(SKIN_MARGIN_MM), 6)  # 1 mm voxels tiling [-0.125, 5.875) mm, + air behind
    mri = mri[:, :6]  # the label map's rows (the rest is the air added behind it)
    full, quarter = mri[:, :, 1].mean(), mri[:, :, 2].mean()  # voxel 2 spans 1.875..2.875 mm
    assert quarter / full == pytest.approx(0.25, abs=0.05)
    assert mri[:, :, 4].mean() < 0.1 * full  # air: noise only


def test_background_is_rician_noise_with_a_rayleigh_shape(phantom, seed_mri):
    air = _interior(_labels_on(seed_mri, phantom) == Label.AIR, 3)
    background = sitk.GetArrayViewFromImage(seed_mri)[air].astype(float)
    assert background.size > 100_000
    assert background.mean() > 0.0
    assert background.mean() / background.std() == pytest.approx(RAYLEIGH_MEAN_OVER_STD, rel=0.15)
    sigma = background.mean() / np.sqrt(np.pi / 2)  # Rayleigh scale
    assert sigma == pytest.approx(PROTOCOLS["seed-3d-space"].noise_sigma * 2000.0, rel=0.1)


def test_synthesis_is_deterministic_per_seed(phantom, seed_mri):
    again = sitk.GetArrayFromImage(synthesize_t2(phantom, "seed-3d-space", seed=0))
    other = sitk.GetArrayFromImage(synthesize_t2(phantom, "seed-3d-space", seed=1)).astype(float)
    first = sitk.GetArrayViewFromImage(seed_mri)
    assert np.array_equal(again, first)
    difference = other - first
    assert np.count_nonzero(difference) > 0.9 * difference.size
    assert abs(difference.mean()) < 0.2 * difference.std()  # different noise and bias, same anatomy


@pytest.mark.parametrize(
    "kwargs, message", [({"protocol": "t1"}, "unknown MRI protocol 't1'"), ({"seed": -2}, "MRI seed")]
)
def test_synthesis_rejects_bad_arguments(phantom, kwargs, message):
    with pytest.raises(WorkbenchError, match=message):
        synthesize_t2(phantom, **kwargs)


# -- DICOM ----------------------------------------------------------------------------------------


def _assert_same_volume(loaded: sitk.Image, image: sitk.Image) -> None:
    assert loaded.GetSize() == image.GetSize()
    np.testing.assert_allclose(loaded.GetSpacing(), image.GetSpacing(), atol=1e-3)
    np.testing.assert_allclose(loaded.GetOrigin(), image.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(loaded.GetDirection(), image.GetDirection(), atol=1e-6)


def test_seed_series_loads_back_with_identical_geometry_and_pixels(seed_mri, tmp_path):
    files = write_dicom_series(seed_mri, tmp_path / "t2", series_description="T2 SPACE COR", case_id="CASE-7", seed=3)
    assert [f.name for f in files] == [f"IM{k:04d}.dcm" for k in range(1, seed_mri.GetSize()[2] + 1)]
    volume = load_dicom_series(tmp_path / "t2")
    _assert_same_volume(volume.image, seed_mri)
    assert np.array_equal(sitk.GetArrayViewFromImage(volume.image), sitk.GetArrayViewFromImage(seed_mri))
    assert volume.metadata["orientation"] == "coronal"
    assert volume.metadata["patient_position"] == "HFP"
    assert volume.metadata["protocol_name"] == "t2_space_cor"


def test_seed_series_tags(seed_mri, tmp_path):
    files = write_dicom_series(seed_mri, tmp_path / "t2", series_description="T2 SPACE COR", case_id="CASE-7", seed=3)
    datasets = [pydicom.dcmread(f) for f in files]
    first = datasets[0]
    assert first.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert first.SOPClassUID == pydicom.uid.MRImageStorage
    assert [float(v) for v in first.ImageOrientationPatient] == [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]
    np.testing.assert_allclose([float(v) for v in first.ImagePositionPatient], seed_mri.GetOrigin(), atol=1e-6)
    steps = np.diff([[float(v) for v in ds.ImagePositionPatient] for ds in datasets], axis=0)
    n_slices = seed_mri.GetSize()[2]
    np.testing.assert_allclose(steps, np.tile([0.0, 1.0, 0.0], (n_slices - 1, 1)), atol=1e-6)  # slices advance along +y
    assert [float(v) for v in first.PixelSpacing] == pytest.approx([420 / 184] * 2)
    assert float(first.SliceThickness) == 1.0 and float(first.SpacingBetweenSlices) == 1.0
    assert (first.Modality, first.MRAcquisitionType, first.PatientPosition) == ("MR", "3D", "HFP")
    assert (first.ProtocolName, first.BitsAllocated, first.BitsStored, first.PixelRepresentation) == (
        "t2_space_cor",
        16,
        12,
        0,
    )
    assert str(first.PatientName) == first.PatientID == "CASE-7"
    assert first.StudyDate == "20000101" and first.PatientBirthDate == ""
    assert "RescaleSlope" not in first
    uids = {ds.SOPInstanceUID for ds in datasets}
    assert len(uids) == n_slices and all(uid.startswith("2.25.") and len(uid) <= 64 for uid in uids)
    assert {ds.FrameOfReferenceUID for ds in datasets} == {first.FrameOfReferenceUID}
    assert {ds.SeriesInstanceUID for ds in datasets} == {first.SeriesInstanceUID}
    again = write_dicom_series(
        seed_mri, tmp_path / "again", series_description="T2 SPACE COR", case_id="CASE-7", seed=3
    )
    assert pydicom.dcmread(again[5]).SOPInstanceUID == datasets[5].SOPInstanceUID
    other = write_dicom_series(
        seed_mri, tmp_path / "other", series_description="T2 SPACE COR", case_id="CASE-7", seed=4
    )
    other_first = pydicom.dcmread(other[0])
    assert other_first.SOPInstanceUID != first.SOPInstanceUID
    assert other_first.FrameOfReferenceUID != first.FrameOfReferenceUID


def test_axial_series_round_trip(iso_mri, tmp_path):
    cropped = iso_mri[40:80, 30:60, 100:112]
    write_dicom_series(cropped, tmp_path / "ax", series_description="T2 SPACE TRA")
    volume = load_dicom_series(tmp_path / "ax")
    _assert_same_volume(volume.image, cropped)
    assert np.array_equal(sitk.GetArrayViewFromImage(volume.image), sitk.GetArrayViewFromImage(cropped))
    assert volume.metadata["orientation"] == "axial"
    assert [float(v) for v in pydicom.dcmread(tmp_path / "ax" / "IM0001.dcm").ImageOrientationPatient] == [
        1,
        0,
        0,
        0,
        1,
        0,
    ]


def test_float_images_are_stored_with_rescale(tmp_path):
    values = np.linspace(-500.0, 1500.0, 4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    image = sitk.GetImageFromArray(values)
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetOrigin((-10.0, 20.0, 5.0))
    write_dicom_series(image, tmp_path / "f", series_description="float")
    ds = pydicom.dcmread(tmp_path / "f" / "IM0001.dcm")
    slope = float(ds.RescaleSlope)
    assert float(ds.RescaleIntercept) == -500.0 and slope == pytest.approx(2000.0 / 65535)
    volume = load_dicom_series(tmp_path / "f")
    _assert_same_volume(volume.image, image)
    np.testing.assert_allclose(sitk.GetArrayViewFromImage(volume.image), values, atol=slope / 2 + 1e-4)


def _left_handed() -> sitk.Image:
    image = sitk.Image(4, 4, 3, sitk.sitkUInt16)
    image.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, -1))
    return image


def _with_nan() -> sitk.Image:
    values = np.zeros((3, 4, 4), dtype=np.float32)
    values[1, 2, 2] = np.nan
    return sitk.GetImageFromArray(values)


@pytest.mark.parametrize(
    "image, kwargs, message",
    [
        (lambda: sitk.Image(4, 4, sitk.sitkUInt16), {}, "3D scalar"),
        (_left_handed, {}, "left-handed"),
        (_with_nan, {}, "non-finite"),
        (
            lambda: sitk.Image(4, 4, 3, sitk.sitkUInt16),
            {"patient_position": "PRONE"},
            "unknown patient position 'PRONE'",
        ),
        (lambda: sitk.Image(4, 4, 3, sitk.sitkUInt16), {"series_description": ""}, "series_description must be"),
        (lambda: sitk.Image(4, 4, 3, sitk.sitkUInt16), {"case_id": "A\\B"}, "case_id must be"),
    ],
)
def test_write_rejects_bad_input(tmp_path, image, kwargs, message):
    arguments = {"series_description": "x", **kwargs}
    with pytest.raises(DicomError, match=message):
        write_dicom_series(image(), tmp_path / "out", **arguments)
    assert not (tmp_path / "out").exists()


def test_write_refuses_a_folder_that_is_not_empty(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.dcm").write_bytes(b"x")
    with pytest.raises(DicomError, match="not empty"):
        write_dicom_series(sitk.Image(4, 4, 3, sitk.sitkUInt16), tmp_path / "out", series_description="x")
