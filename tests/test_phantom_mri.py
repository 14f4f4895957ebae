"""Synthetic T2 SPACE MRI of the phantom and its DICOM series."""

from __future__ import annotations

import dataclasses

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from scipy import ndimage

from workbench.errors import DicomError, WorkbenchError
from workbench.io.dicom import load_dicom_series
from workbench.phantom.anatomy import SpineParameters, build_phantom
from workbench.phantom.labels import BONE_LABELS, CORTEX_THICKNESS_MM, Label
from workbench.phantom.mri import PROTOCOLS, signal_lookup, synthesize_t2, write_dicom_series

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


def _labels_on(image: sitk.Image, phantom) -> np.ndarray:
    """Phantom labels at the MRI voxel centres (nearest), numpy order; AIR outside."""
    resampled = sitk.Resample(phantom.labels, image, sitk.Transform(), sitk.sitkNearestNeighbor, int(Label.AIR))
    return sitk.GetArrayFromImage(resampled)


def _interior(mask: np.ndarray, voxels: int = 1) -> np.ndarray:
    return ndimage.binary_erosion(mask, iterations=voxels)


# -- geometry -------------------------------------------------------------------------------------


def test_seed_protocol_is_the_clinical_coronal_slab(seed_mri):
    assert seed_mri.GetSize() == (184, 184, 80)
    np.testing.assert_allclose(seed_mri.GetSpacing(), (2.283, 2.283, 1.0), atol=1e-3)
    assert seed_mri.GetSpacing()[0] == pytest.approx(420.0 / 184)
    np.testing.assert_allclose(seed_mri.GetDirection(), (1, 0, 0, 0, 0, 1, 0, -1, 0))  # columns: +x, -z, +y
    assert seed_mri.GetPixelID() == sitk.sitkUInt16
    assert sitk.GetArrayViewFromImage(seed_mri).max() <= 4095
    assert seed_mri.GetMetaData("workbench.mri.protocol") == "seed-3d-space"


def test_seed_slab_covers_posterior_elements_roots_and_body_mid_depth(phantom, seed_mri):
    y_first = seed_mri.GetOrigin()[1]
    y_last = y_first + 79.0
    points = [p for name, p in phantom.landmarks_lps.items() if not name.startswith("skin")]
    points += list(phantom.targets_lps.values())
    for p in points:
        assert y_first <= p[1] <= y_last
    centre = np.array(seed_mri.TransformContinuousIndexToPhysicalPoint((np.array(seed_mri.GetSize()) - 1.0) / 2))
    assert centre[0] == pytest.approx(0.0, abs=1e-9)
    assert centre[2] == pytest.approx(np.mean([c[2] for c in phantom.vertebra_centres_lps.values()]))


def test_isotropic_protocol_tiles_the_whole_phantom_in_1mm_axial_voxels(phantom, iso_mri):
    assert iso_mri.GetSpacing() == (1.0, 1.0, 1.0)
    assert iso_mri.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    assert iso_mri.GetSize() == phantom.labels.GetSize()  # 1 mm phantom: one MRI voxel per label voxel
    np.testing.assert_allclose(iso_mri.GetOrigin(), phantom.labels.GetOrigin(), atol=1e-9)


# -- signal ---------------------------------------------------------------------------------------


def _cortex_and_marrow(phantom) -> tuple[np.ndarray, np.ndarray]:
    """Bone voxels within / beyond the cortex thickness (1 voxel at 1 mm) of non-bone."""
    bone = np.isin(sitk.GetArrayViewFromImage(phantom.labels), [int(v) for v in BONE_LABELS])
    radius = int(round(CORTEX_THICKNESS_MM / phantom.labels.GetSpacing()[0]))
    interior = ndimage.minimum_filter(bone.astype(np.uint8), size=2 * radius + 1, mode="nearest").astype(bool)
    return bone & ~interior, interior


def test_t2_contrast_fluid_fat_nucleus_over_muscle_over_cortical_bone(phantom, iso_mri):
    labels = _labels_on(iso_mri, phantom)
    signal = sitk.GetArrayViewFromImage(iso_mri).astype(float)

    def mean(mask):
        return signal[mask].mean()

    muscle = mean(_interior(np.isin(labels, [Label.ERECTOR_SPINAE, Label.MULTIFIDUS, Label.PSOAS])))
    cortex, marrow = _cortex_and_marrow(phantom)
    bright = {
        name: mean(_interior(labels == label))
        for name, label in (("CSF", Label.CSF), ("fat", Label.FAT), ("nucleus", Label.DISC_NUCLEUS))
    }
    assert min(bright.values()) > 1.5 * muscle, bright
    assert muscle > 2.0 * mean(cortex)
    assert mean(cortex) < mean(marrow) < bright["CSF"]  # marrow intermediate
    assert bright["CSF"] == pytest.approx(2000.0, rel=0.25)  # CSF near 2000 of 4095 (bias field +-)


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
    assert mri.shape == (6, 6, 6)  # 1 mm voxels tiling [-0.125, 5.875) mm
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
    assert [f.name for f in files] == [f"IM{k:04d}.dcm" for k in range(1, 81)]
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
    np.testing.assert_allclose(steps, np.tile([0.0, 1.0, 0.0], (79, 1)), atol=1e-6)  # slices advance along +y
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
    assert len(uids) == 80 and all(uid.startswith("2.25.") and len(uid) <= 64 for uid in uids)
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
