"""Volume files (NIfTI, NRRD, MetaImage): LPS geometry round trips, describe, errors, atomic saves."""

from __future__ import annotations

import gzip
import json
import math
import struct

import numpy as np
import pytest
import SimpleITK as sitk
from dicom_factory import write_series

from workbench.errors import DicomError, VolumeError
from workbench.io.volume import LoadedVolume, describe_volume, load_volume, save_volume

ORIGIN_LPS_MM = (12.5, -30.25, 41.0)
SPACING_MM = (0.75, 1.25, 3.0)


def _rotation_direction() -> tuple[float, ...]:
    """An oblique, proper rotation (25 degrees about z, then 10 about x), row major."""
    a, b = math.radians(25), math.radians(10)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    return tuple((rx @ rz).ravel())


def _test_image() -> sitk.Image:
    voxels = (np.arange(4 * 5 * 6).reshape(4, 5, 6) * 7 - 300).astype(np.int16)  # (k, j, i)
    image = sitk.GetImageFromArray(voxels)
    image.SetOrigin(ORIGIN_LPS_MM)
    image.SetSpacing(SPACING_MM)
    image.SetDirection(_rotation_direction())
    return image


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".nii.gz", ".nii", ".mhd", ".nhdr"])
def test_round_trip_keeps_lps_geometry_and_values(tmp_path, suffix):
    image = _test_image()
    path = save_volume(image, tmp_path / f"vol{suffix}")
    volume = load_volume(path)
    assert volume.size == (6, 5, 4)
    np.testing.assert_allclose(volume.origin_lps_mm, ORIGIN_LPS_MM, atol=1e-4)
    np.testing.assert_allclose(volume.spacing_mm, SPACING_MM, atol=1e-4)
    np.testing.assert_allclose(volume.direction, _rotation_direction(), atol=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(volume.image), sitk.GetArrayFromImage(image))
    expected_lps = image.TransformIndexToPhysicalPoint((5, 4, 3))
    np.testing.assert_allclose(volume.mri_voxel_to_mri.apply_to_points([5, 4, 3]), expected_lps, atol=1e-4)
    assert volume.metadata["pixel_type"] == "int16"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left


def test_nifti_on_disk_is_ras(tmp_path):
    image = _test_image()
    path = save_volume(image, tmp_path / "vol.nii.gz")
    header = gzip.decompress(path.read_bytes())[:348]
    qoffset = struct.unpack("<3f", header[268:280])
    np.testing.assert_allclose(qoffset, (-ORIGIN_LPS_MM[0], -ORIGIN_LPS_MM[1], ORIGIN_LPS_MM[2]), atol=1e-4)
    srow = np.array(struct.unpack("<12f", header[280:328])).reshape(3, 4)
    lps_affine = np.reshape(_rotation_direction(), (3, 3)) @ np.diag(SPACING_MM)
    np.testing.assert_allclose(srow[:, :3], np.diag([-1, -1, 1]) @ lps_affine, atol=1e-4)
    volume = load_volume(path)
    np.testing.assert_allclose(volume.origin_lps_mm, ORIGIN_LPS_MM, atol=1e-4)
    np.testing.assert_allclose(volume.direction, _rotation_direction(), atol=1e-4)
    assert volume.metadata["source_kind"] == "nifti"


def test_dicom_to_nifti_keeps_geometry(tmp_path):
    write_series(tmp_path / "dicom", n_slices=4, iop=(0, 1, 0, 0, 0, -1), shuffle_seed=1)
    dicom = load_volume(tmp_path / "dicom")
    nifti = load_volume(save_volume(dicom, tmp_path / "vol.nii.gz"))
    np.testing.assert_allclose(nifti.mri_voxel_to_mri.matrix, dicom.mri_voxel_to_mri.matrix, atol=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(nifti.image), sitk.GetArrayFromImage(dicom.image))


def test_describe_volume(tmp_path):
    path = save_volume(_test_image(), tmp_path / "vol.mha")
    info = describe_volume(path)
    assert json.loads(json.dumps(info)) == info
    assert (info["kind"], info["path"], info["size"]) == ("volume", str(path), [6, 5, 4])
    assert (info["pixel_type"], info["components"]) == ("int16", 1)
    np.testing.assert_allclose(info["spacing_mm"], SPACING_MM, atol=1e-9)
    np.testing.assert_allclose(info["origin_lps_mm"], ORIGIN_LPS_MM, atol=1e-9)
    np.testing.assert_allclose(info["direction"], _rotation_direction(), atol=1e-9)


def test_describe_vector_volume(tmp_path):
    image = sitk.Image([3, 2, 2], sitk.sitkVectorFloat32, 3)
    info = describe_volume(save_volume(image, tmp_path / "field.nrrd"))
    assert (info["pixel_type"], info["components"], info["size"]) == ("float32", 3, [3, 2, 2])
    with pytest.raises(VolumeError, match="expected a scalar volume, got 3 components per voxel"):
        load_volume(tmp_path / "field.nrrd")


def test_describe_two_dimensional_image(tmp_path):
    sitk.WriteImage(sitk.Image([7, 3], sitk.sitkUInt8), str(tmp_path / "mask.png"))
    info = describe_volume(tmp_path / "mask.png")
    assert (info["size"], info["direction"], info["pixel_type"]) == ([7, 3], [1.0, 0.0, 0.0, 1.0], "uint8")
    (tmp_path / "notes.txt").write_text("text")
    with pytest.raises(VolumeError, match=r"notes.txt: cannot read volume: Unable to determine ImageIO reader"):
        describe_volume(tmp_path / "notes.txt")


def test_two_dimensional_image_refused(tmp_path):
    save_volume(sitk.Image([4, 3], sitk.sitkUInt8), tmp_path / "frame.mha")
    with pytest.raises(VolumeError, match="expected a 3D volume, got a 2D image"):
        load_volume(tmp_path / "frame.mha")


def test_digest_depends_on_values_and_geometry(tmp_path):
    image = _test_image()
    path = save_volume(image, tmp_path / "vol.nrrd")
    digest = load_volume(path).source_digest
    assert load_volume(path).source_digest == digest
    assert LoadedVolume(image, {}).source_digest == LoadedVolume(image, {}).source_digest
    changed = sitk.Image(image)
    changed[0, 0, 0] = 1
    moved = sitk.Image(image)
    moved.SetOrigin((0.0, 0.0, 0.0))
    assert len({LoadedVolume(img, {}).source_digest for img in (image, changed, moved)}) == 3


def test_save_replaces_atomically_and_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = save_volume(_test_image(), tmp_path / "vol.nrrd")
    before = path.read_bytes()

    def failing_write(*args, **kwargs):
        raise RuntimeError("Exception thrown in SimpleITK ImageFileWriter_Execute: x.cxx:1:\nITK ERROR: NrrdImageIO(0x1): disk full")

    monkeypatch.setattr(sitk, "WriteImage", failing_write)
    with pytest.raises(VolumeError, match="vol.nrrd: cannot write volume: disk full"):
        save_volume(_test_image(), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["vol.nrrd"]


def test_save_rejects_bad_input(tmp_path):
    with pytest.raises(VolumeError, match="unsupported volume file type"):
        save_volume(_test_image(), tmp_path / "vol.png")
    with pytest.raises(VolumeError, match="cannot save a ndarray"):
        save_volume(np.zeros((2, 2, 2)), tmp_path / "vol.nrrd")


def test_load_errors(tmp_path):
    with pytest.raises(VolumeError, match="nothing.nii.gz: file or folder not found"):
        load_volume(tmp_path / "nothing.nii.gz")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    with pytest.raises(VolumeError, match="image.png: unsupported volume file type"):
        load_volume(tmp_path / "image.png")
    (tmp_path / "bad.nrrd").write_text("NRRD0004\ntype: float\n")
    with pytest.raises(VolumeError, match=r"bad.nrrd: .*no \"data file\" given"):
        load_volume(tmp_path / "bad.nrrd")
    with pytest.raises(VolumeError, match="missing.mha: file not found"):
        describe_volume(tmp_path / "missing.mha")
    (tmp_path / "notes.dcm").write_text("not dicom")
    with pytest.raises(DicomError, match="notes.dcm: not a DICOM image file"):
        load_volume(tmp_path / "notes.dcm")
    (tmp_path / "garbage.nii.gz").write_bytes(b"garbage")
    with pytest.raises(VolumeError, match="garbage.nii.gz: cannot read volume: "):
        load_volume(tmp_path / "garbage.nii.gz")
    error = pytest.raises(VolumeError, describe_volume, tmp_path / "garbage.nii.gz").value
    assert "\n" not in str(error) and ".cxx" not in str(error)


def test_save_volume_writes_no_source_metadata(shared_data, tmp_path):
    """The real SCT NIfTI's header text (descrip: acquisition time) never reaches a saved volume."""
    import SimpleITK as sitk

    source = shared_data / "mri-nifti-sct-t2-lumbar" / "t2_lumbar.nii.gz"
    loaded = load_volume(source)
    assert "descrip" in loaded.image.GetMetaDataKeys()
    descrip = loaded.image.GetMetaData("descrip").strip()
    for suffix in (".nrrd", ".nii.gz", ".mha"):
        out = save_volume(loaded, tmp_path / f"copy{suffix}")
        reread = sitk.ReadImage(str(out))
        assert reread.GetMetaData("descrip").strip() == "" if reread.HasMetaDataKey("descrip") else True
        if descrip and suffix != ".nii.gz":
            assert descrip.encode() not in out.read_bytes()
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(reread), sitk.GetArrayViewFromImage(loaded.image))
        np.testing.assert_allclose(reread.GetOrigin(), loaded.image.GetOrigin(), atol=1e-4)
    assert "descrip" in loaded.image.GetMetaDataKeys()  # the loaded volume itself is untouched
