"""DICOM series listing and loading: geometry from IPP/IOP on real and synthetic series."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_factory import AXIAL_HFS, write_series, write_text_file

from workbench.errors import DicomError
from workbench.io.dicom import describe_dicom, list_series, load_dicom_file_series, load_dicom_series, orientation_label
from workbench.io.volume import load_volume

REAL_SERIES = "mri-dicom-dcm_qa_decubitus/HFS/3_t1_fl2d_sag"


def _tags(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """IPP, row cosine, column cosine and PixelSpacing of one file, read with pydicom."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    return (
        np.array([float(v) for v in ds.ImagePositionPatient]),
        iop[:3],
        iop[3:],
        np.array([float(v) for v in ds.PixelSpacing]),
    )


def assert_geometry_matches_tags(volume, files: list[Path]) -> list[int]:
    """Every file's IPP is voxel (0, 0, k), its far in-plane corner maps as the tags say, and
    slice k holds its pixels. Returns the slice index k of each file."""
    voxels = sitk.GetArrayFromImage(volume.image)
    rows, cols = voxels.shape[1:]
    ks = []
    for path in files:
        ipp, row_cos, col_cos, spacing = _tags(path)
        ijk = volume.mri_to_mri_voxel.apply_to_points(ipp)
        k = int(round(ijk[2]))
        np.testing.assert_allclose(ijk, [0, 0, k], atol=1e-6)
        corner_lps = ipp + (cols - 1) * spacing[1] * row_cos + (rows - 1) * spacing[0] * col_cos
        np.testing.assert_allclose(volume.image.TransformIndexToPhysicalPoint((cols - 1, rows - 1, k)), corner_lps, atol=1e-3)
        np.testing.assert_array_equal(voxels[k], pydicom.dcmread(path).pixel_array)
        ks.append(k)
    assert len(set(ks)) == len(ks)
    return ks


def _expected_direction(iop) -> list[float]:
    row_cos, col_cos = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    return list(np.column_stack([row_cos, col_cos, np.cross(row_cos, col_cos)]).ravel())


# -- real data ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_volume(shared_data):
    return load_dicom_series(shared_data / REAL_SERIES)


def test_real_series_geometry_from_tags(shared_data, real_volume):
    files = sorted((shared_data / REAL_SERIES).glob("*.dcm"))
    assert real_volume.size == (256, 256, 35)
    np.testing.assert_allclose(real_volume.spacing_mm, (1.015625, 1.015625, 4.8), atol=1e-4)
    np.testing.assert_allclose(real_volume.direction, [0, 0, -1, 1, 0, 0, 0, -1, 0], atol=1e-9)
    ipp, row_cos, col_cos, spacing = zip(*(_tags(f) for f in files))
    normal = np.cross(row_cos[0], col_cos[0])
    projections = [p @ normal for p in ipp]
    first, last = int(np.argmin(projections)), int(np.argmax(projections))
    np.testing.assert_allclose(real_volume.origin_lps_mm, ipp[first], atol=1e-6)
    np.testing.assert_allclose(real_volume.origin_lps_mm, (81.6, -130, 130), atol=1e-4)
    far_corner_lps = ipp[last] + 255 * spacing[last][1] * row_cos[last] + 255 * spacing[last][0] * col_cos[last]
    np.testing.assert_allclose(real_volume.image.TransformIndexToPhysicalPoint((255, 255, 34)), far_corner_lps, atol=1e-3)
    np.testing.assert_allclose(far_corner_lps, (-81.6, 128.984375, -128.984375), atol=1e-4)
    voxels = sitk.GetArrayViewFromImage(real_volume.image)
    np.testing.assert_array_equal(voxels[34], pydicom.dcmread(files[last]).pixel_array)
    assert voxels.dtype == np.uint16


def test_real_series_every_slice_where_its_tags_say(shared_data, real_volume):
    files = sorted((shared_data / REAL_SERIES).glob("*.dcm"))
    assert sorted(assert_geometry_matches_tags(real_volume, files)) == list(range(35))


def test_real_series_metadata_without_identifiers(shared_data, real_volume):
    meta = real_volume.metadata
    assert meta["source_kind"] == "dicom"
    assert (meta["modality"], meta["patient_position"], meta["series_description"]) == ("MR", "HFS", "t1_fl2d_sag")
    assert (meta["manufacturer"], meta["number_of_slices"], meta["orientation"]) == ("SIEMENS", 35, "sagittal")
    assert meta["rescale"] == {"slope": 1.0, "intercept": 0.0}
    header = pydicom.dcmread(sorted((shared_data / REAL_SERIES).glob("*.dcm"))[0], stop_before_pixels=True)
    text = json.dumps(meta)
    for keyword in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "InstitutionName", "StudyDate", "StationName"):
        assert str(header[keyword].value) not in text, keyword
    assert real_volume.warnings == []


def test_real_series_digest_stable_and_single_file_dispatch(shared_data, real_volume):
    files = sorted((shared_data / REAL_SERIES).glob("*.dcm"))
    again = load_volume(files[7])
    assert again.source_digest == real_volume.source_digest
    assert len(real_volume.source_digest) == 64
    assert again.size == (256, 256, 35)


def test_real_describe_dicom(shared_data):
    info = describe_dicom(shared_data / "mri-dicom-dcm_qa_decubitus/HFS")
    assert json.loads(json.dumps(info)) == info
    assert info["kind"] == "dicom" and info["non_dicom_files"] == 0
    assert info["size"] == [256, 256, 35]
    np.testing.assert_allclose(info["spacing_mm"], [1.015625, 1.015625, 4.8], atol=1e-4)
    np.testing.assert_allclose(info["origin_lps_mm"], [81.6, -130, 130], atol=1e-4)
    assert len(info["series"]) == 1
    entry = info["series"][0]
    assert (entry["files"], entry["size"], entry["orientation"], entry["patient_position"]) == (35, [256, 256, 35], "sagittal", "HFS")
    assert info["selected_series_uid"] == entry["series_uid"]


# -- listing and choosing -------------------------------------------------------------------


def test_list_series_groups_and_chooses_largest(tmp_path):
    big = write_series(tmp_path / "a", n_slices=5, description="big")
    small = write_series(tmp_path / "b", n_slices=3, rows=20, cols=20, description="small")
    write_text_file(tmp_path / "README.txt")
    write_text_file(tmp_path / "DICOMDIR", "index")
    series = list_series(tmp_path)
    assert [s.series_uid for s in series] == [big.series_uid, small.series_uid]
    assert series[0].size == (5, 6, 5) and series[1].size == (20, 20, 3)
    assert series[0].pixel_spacing_mm == (0.7, 0.8)
    assert series[0].orientation == AXIAL_HFS and series[0].orientation_label == "axial"
    assert series[0].files == tuple(sorted(big.files)) and series[0].n_files == 5
    assert (series[0].modality, series[0].description, series[0].has_pixels) == ("MR", "big", True)
    assert not hasattr(series[0], "patient_name")
    assert load_dicom_series(tmp_path).size == (5, 6, 5)
    assert describe_dicom(tmp_path)["non_dicom_files"] == 2
    assert list_series(tmp_path, recursive=False) == []


def test_equal_slice_counts_tie_broken_by_pixels_per_slice(tmp_path):
    write_series(tmp_path / "a", n_slices=3, rows=4, cols=4)
    larger = write_series(tmp_path / "b", n_slices=3, rows=8, cols=4)
    assert describe_dicom(tmp_path)["selected_series_uid"] == larger.series_uid


def test_load_by_uid_and_by_file(tmp_path):
    write_series(tmp_path, n_slices=5, name_prefix="A")
    small = write_series(tmp_path, n_slices=2, name_prefix="B", origin_lps_mm=(0, 0, 100))
    assert load_dicom_series(tmp_path, small.series_uid).size == (5, 6, 2)
    assert load_dicom_file_series(small.files[0]).size == (5, 6, 2)
    with pytest.raises(DicomError, match="no series with SeriesInstanceUID 1.2.3"):
        load_dicom_series(tmp_path, "1.2.3")


def test_non_image_series_is_listed_but_not_loaded(tmp_path):
    def drop_image(k, ds):
        for keyword in ("Rows", "Columns", "PixelData", "Modality"):
            delattr(ds, keyword)
        ds.Modality = "SR"

    report = write_series(tmp_path, n_slices=1, modify=drop_image)
    (info,) = list_series(tmp_path)
    assert (info.has_pixels, info.size, info.modality) == (False, None, "SR")
    with pytest.raises(DicomError, match=r"no image series: only 1 series without pixels \(SR\)"):
        load_dicom_series(tmp_path)
    with pytest.raises(DicomError, match="has no images"):
        load_dicom_series(tmp_path, report.series_uid)


# -- slice order and geometry ---------------------------------------------------------------


def test_order_from_positions_not_names_or_instance_numbers(tmp_path):
    series = write_series(tmp_path, n_slices=7, shuffle_seed=3)
    names = [f.name for f in series.files]
    assert names != sorted(names)  # file names do not follow the geometry
    volume = load_dicom_series(tmp_path)
    assert assert_geometry_matches_tags(volume, series.files) == list(range(7))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(volume.image), series.pixels)
    np.testing.assert_allclose(volume.origin_lps_mm, (-10, 20, 30), atol=1e-6)
    np.testing.assert_allclose(volume.spacing_mm, (0.7, 0.8, 2.5), atol=1e-9)


def test_stack_against_the_normal_starts_at_the_far_end(tmp_path):
    # IPPs step along -normal: the origin is the last-written slice, k still runs along +normal
    series = write_series(tmp_path, n_slices=4, slice_step_mm=-3.0, shuffle_seed=1)
    volume = load_dicom_series(tmp_path)
    np.testing.assert_allclose(volume.origin_lps_mm, series.positions_lps_mm[-1], atol=1e-6)
    np.testing.assert_allclose(volume.direction, _expected_direction(AXIAL_HFS), atol=1e-9)
    assert assert_geometry_matches_tags(volume, series.files) == [3, 2, 1, 0]


@pytest.mark.parametrize(
    "position, iop",
    [
        ("HFP", (-1, 0, 0, 0, -1, 0)),
        ("FFS", (-1, 0, 0, 0, 1, 0)),
        ("FFP", (1, 0, 0, 0, -1, 0)),
        ("HFDR", (0, -1, 0, 1, 0, 0)),
        ("FFDL", (0, 1, 0, 1, 0, 0)),
    ],
)
def test_patient_position_does_not_change_geometry(tmp_path, position, iop):
    series = write_series(tmp_path, n_slices=4, iop=iop, patient_position=position, shuffle_seed=2)
    volume = load_dicom_series(tmp_path)
    assert volume.metadata["patient_position"] == position
    np.testing.assert_allclose(volume.direction, _expected_direction(iop), atol=1e-9)
    np.testing.assert_allclose(volume.origin_lps_mm, series.positions_lps_mm[0], atol=1e-6)
    assert assert_geometry_matches_tags(volume, series.files) == [0, 1, 2, 3]


def test_oblique_series(tmp_path):
    angle = math.radians(20)
    iop = (1, 0, 0, 0, math.cos(angle), math.sin(angle))
    series = write_series(tmp_path, n_slices=5, iop=iop, shuffle_seed=5)
    volume = load_dicom_series(tmp_path)
    assert list_series(tmp_path)[0].orientation_label == "oblique"
    assert volume.metadata["orientation"] == "oblique"
    np.testing.assert_allclose(volume.direction, _expected_direction(iop), atol=1e-7)
    assert assert_geometry_matches_tags(volume, series.files) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    "iop, label",
    [((0, 1, 0, 0, 0, -1), "sagittal"), ((1, 0, 0, 0, 0, -1), "coronal"), ((1, 0, 0, 0, 1, 0), "axial")],
)
def test_orientation_labels(iop, label):
    assert orientation_label(iop) == label


def test_index_lps_mappings(tmp_path):
    write_series(tmp_path, n_slices=3)
    volume = load_dicom_series(tmp_path)
    expected = np.array([[0.7, 0, 0, -10], [0, 0.8, 0, 20], [0, 0, 2.5, 30], [0, 0, 0, 1]])
    np.testing.assert_allclose(volume.mri_voxel_to_mri.matrix, expected, atol=1e-9)
    assert volume.mri_voxel_to_mri.name == "MriVoxelToMri"
    ijk = np.array([[0, 0, 0], [4, 5, 2], [1.5, 2.25, 0.5]])
    points_lps = volume.mri_voxel_to_mri.apply_to_points(ijk)
    np.testing.assert_allclose(points_lps[1], volume.image.TransformIndexToPhysicalPoint((4, 5, 2)), atol=1e-9)
    np.testing.assert_allclose(volume.mri_to_mri_voxel.apply_to_points(points_lps), ijk, atol=1e-9)


def test_rescale_applied_as_float(tmp_path):
    series = write_series(tmp_path, n_slices=3, rescale=(2.0, -100.0))
    volume = load_dicom_series(tmp_path)
    voxels = sitk.GetArrayFromImage(volume.image)
    assert voxels.dtype == np.float32
    np.testing.assert_array_equal(voxels, series.pixels * 2.0 - 100.0)
    assert volume.metadata["rescale"] == {"slope": 2.0, "intercept": -100.0}


def test_single_slice_uses_slice_thickness(tmp_path):
    write_series(tmp_path, n_slices=1)
    volume = load_dicom_series(tmp_path)
    assert volume.size == (5, 6, 1) and volume.spacing_mm[2] == 2.0
    assert "single-slice series: slice spacing 2 mm" in volume.warnings[0]


# -- gaps and spacing -----------------------------------------------------------------------


def test_missing_slice_filled_blank_with_warning(tmp_path):
    series = write_series(tmp_path, n_slices=6, missing=[3], shuffle_seed=4)
    volume = load_dicom_series(tmp_path)
    assert volume.size == (5, 6, 6)
    np.testing.assert_allclose(volume.spacing_mm[2], 2.5, atol=1e-9)
    (warning,) = volume.warnings
    assert "1 slice(s) missing: gap of 5 mm" in warning and "filled with blank (0) slices" in warning
    assert assert_geometry_matches_tags(volume, series.files) == [0, 1, 2, 4, 5]
    assert not sitk.GetArrayFromImage(volume.image)[3].any()
    assert describe_dicom(tmp_path)["size"] == [5, 6, 6]


def test_non_uniform_spacing_refused(tmp_path):
    distances = [0, 2, 4, 5, 7]
    write_series(tmp_path, n_slices=5, positions_lps_mm=[(0, 0, d) for d in distances])
    with pytest.raises(DicomError, match=r"non-uniform slice spacing: steps range from 1 to 2 mm .*allow_nonuniform=True"):
        load_dicom_series(tmp_path)


def test_non_uniform_spacing_resampled_when_allowed(tmp_path):
    distances = [0, 2, 4, 5, 7]
    series = write_series(tmp_path, n_slices=5, positions_lps_mm=[(0, 0, d) for d in distances])
    volume = load_dicom_series(tmp_path, allow_nonuniform=True)
    assert volume.size == (5, 6, 4) and volume.spacing_mm[2] == 2.0
    assert "resampled by linear interpolation onto 4 slices every 2 mm" in volume.warnings[0]
    voxels = sitk.GetArrayFromImage(volume.image)
    np.testing.assert_allclose(voxels[:3], series.pixels[:3])
    np.testing.assert_allclose(voxels[3], (series.pixels[3].astype(float) + series.pixels[4]) / 2)  # z = 6 between 5 and 7


def test_duplicate_positions(tmp_path):
    write_series(tmp_path, n_slices=3, positions_lps_mm=[(0, 0, 0), (0, 0, 2), (0, 0, 2)])
    with pytest.raises(DicomError, match="duplicate slice position: IM000[23].dcm and IM000[23].dcm are both at 2.000 mm"):
        load_dicom_series(tmp_path)


def test_sheared_stack(tmp_path):
    write_series(tmp_path, n_slices=3, positions_lps_mm=[(0, 0, 0), (0, 1, 2), (0, 2, 4)])
    with pytest.raises(DicomError, match=r"not stacked along the slice normal: IM0003.dcm is shifted 2.000 mm"):
        load_dicom_series(tmp_path)


# -- inconsistent series --------------------------------------------------------------------


def test_mixed_orientation_names_files(tmp_path):
    def tilt(k, ds):
        if k == 2:
            ds.ImageOrientationPatient = [1, 0, 0, 0, 0.8, 0.6]

    write_series(tmp_path, n_slices=4, modify=tilt)
    with pytest.raises(DicomError, match=r"mixed orientation: ImageOrientationPatient of IM0003.dcm .* differs from IM0001.dcm .*1 of 4"):
        load_dicom_series(tmp_path)


def test_slices_of_different_size(tmp_path):
    first = write_series(tmp_path, n_slices=3, name_prefix="A")
    write_series(tmp_path, n_slices=1, rows=8, series_uid=first.series_uid, name_prefix="B", origin_lps_mm=(-10, 20, 40))
    with pytest.raises(DicomError, match=r"slices differ in size: A0001.dcm is 5x6 \(columns x rows\) but B0001.dcm is 5x8"):
        load_dicom_series(tmp_path)


def test_pixel_spacing_differs(tmp_path):
    def respace(k, ds):
        if k == 1:
            ds.PixelSpacing = [0.9, 0.7]

    write_series(tmp_path, n_slices=3, modify=respace)
    with pytest.raises(DicomError, match=r"pixel spacing differs: IM0001.dcm has PixelSpacing \[0.8, 0.7\] but IM0002.dcm"):
        load_dicom_series(tmp_path)


def test_missing_position_tag(tmp_path):
    write_series(tmp_path, n_slices=2, modify=lambda k, ds: delattr(ds, "ImagePositionPatient") if k == 1 else None)
    with pytest.raises(DicomError, match=r"IM0002.dcm: ImagePositionPatient is missing"):
        load_dicom_series(tmp_path)


def test_orientation_not_orthonormal(tmp_path):
    write_series(tmp_path, n_slices=2, iop=(1, 0, 0, 0.5, 1, 0))
    with pytest.raises(DicomError, match="is not two orthogonal unit vectors"):
        load_dicom_series(tmp_path)


def test_multi_frame_refused(tmp_path):
    write_series(tmp_path, n_slices=2, modify=lambda k, ds: setattr(ds, "NumberOfFrames", 2))
    with pytest.raises(DicomError, match="multi-frame"):
        load_dicom_series(tmp_path)


def test_truncated_pixel_data_names_file(tmp_path):
    series = write_series(tmp_path, n_slices=4)
    data = series.files[2].read_bytes()
    series.files[2].write_bytes(data[:-20])
    with pytest.raises(DicomError, match=r"IM0003.dcm: cannot decode pixel data \(Explicit VR Little Endian\)"):
        load_dicom_series(tmp_path)


def test_truncated_header_names_file(tmp_path):
    series = write_series(tmp_path, n_slices=4)
    data = series.files[1].read_bytes()
    series.files[1].write_bytes(data[: data.index(b"\xe0\x7f\x10\x00")])  # cut before the PixelData tag
    with pytest.raises(DicomError, match=r"IM0002.dcm: has no pixel data \(the file may be truncated\)"):
        load_dicom_series(tmp_path)


def test_unparseable_file_is_reported_as_warning(tmp_path):
    write_series(tmp_path, n_slices=3)
    corrupt = tmp_path / "broken.dcm"
    corrupt.write_bytes(bytes(128) + b"DICM" + b"\x02\x00\x10\x00UI\x04\x001.23")
    volume = load_dicom_series(tmp_path)
    assert volume.size == (5, 6, 3)
    assert volume.warnings == [
        "broken.dcm could not be read (no SeriesInstanceUID); if it belongs to the loaded series, a slice is missing"
    ]


def test_empty_folder(tmp_path):
    with pytest.raises(DicomError, match=r"no DICOM images found \(0 non-DICOM files\)"):
        load_dicom_series(tmp_path)


def test_folder_of_text_files(tmp_path):
    write_text_file(tmp_path / "notes.txt")
    write_text_file(tmp_path / "sub" / "README")
    with pytest.raises(DicomError, match=r"no DICOM images found \(2 non-DICOM files\)"):
        describe_dicom(tmp_path)


def test_missing_folder(tmp_path):
    with pytest.raises(DicomError, match="nowhere: folder not found"):
        list_series(tmp_path / "nowhere")
    write_text_file(tmp_path / "file.txt")
    with pytest.raises(DicomError, match="not a folder"):
        load_dicom_series(tmp_path / "file.txt")


def test_malformed_position_tag(tmp_path):
    series = write_series(tmp_path, n_slices=2)
    data = series.files[0].read_bytes()
    series.files[0].write_bytes(data.replace(b"-10.000000\\20.000000", b"-10.000000\\2X.000000"))
    with pytest.raises(DicomError, match=r"IM0001.dcm: ImagePositionPatient is malformed"):
        load_dicom_series(tmp_path)


def test_colour_images_refused(tmp_path):
    write_series(tmp_path, n_slices=2, modify=lambda k, ds: setattr(ds, "SamplesPerPixel", 3))
    with pytest.raises(DicomError, match=r"colour images are not supported \(SamplesPerPixel 3\)"):
        load_dicom_series(tmp_path)


def test_load_file_series_errors(tmp_path):
    with pytest.raises(DicomError, match="gone.dcm: file not found"):
        load_dicom_file_series(tmp_path / "gone.dcm")
    series = write_series(tmp_path, n_slices=1, modify=lambda k, ds: delattr(ds, "SeriesInstanceUID"))
    with pytest.raises(DicomError, match="IM0001.dcm: has no SeriesInstanceUID"):
        load_dicom_file_series(series.files[0])
