"""Inputs the first fuzzing campaign (issue 21) found: each now ends in a clear WorkbenchError.

Readers that could crash the process run through ``run_isolated`` (a forked child), so a
regression fails this test instead of killing pytest.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.encaps import encapsulate

from workbench.anonymize import anonymize_folder
from workbench.case import Case, load_case, save_case
from workbench.errors import CaseBundleError, DeviceSetError, DicomError, PlanError, WorkbenchError
from workbench.io._crash_guard import run_isolated
from workbench.io.itk_transform import describe_transform
from workbench.io.markups import describe_markups
from workbench.io.plus_config import read_device_set
from workbench.io.volume import describe_volume, load_volume
from workbench.planning.export import load_plan

DICOM_SERIES = "mri-dicom-dcm_qa_decubitus/HFS/3_t1_fl2d_sag"
SPINE_CONFIG = "plus-spine-phantom-freehand/PlusDeviceSet_VolumeReconstructionOnly_SpinePhantom_NN_MEAN.xml"


def _problem(function, path: Path) -> str:
    """The WorkbenchError message of ``function(path)`` run in a forked child (a crash is an error too)."""
    with pytest.raises(WorkbenchError) as info:
        run_isolated(function, path, path=path, what="reader")
    return info.value.problem


def _metaimage(tmp_path: Path, **fields: str) -> Path:
    header = {
        "ObjectType": "Image", "NDims": "3", "BinaryData": "True", "CompressedData": "False",
        "TransformMatrix": "1 0 0 0 1 0 0 0 1", "Offset": "0 0 0", "ElementSpacing": "1 1 1",
        "DimSize": "2 3 4", "ElementType": "MET_UCHAR",
    }  # fmt: skip
    header.update(fields)
    text = "".join(f"{k} = {v}\n" for k, v in header.items()) + "ElementDataFile = LOCAL\n"
    path = tmp_path / "volume.mha"
    path.write_bytes(text.encode() + bytes(24))
    return path


def test_a_valid_metaimage_loads(tmp_path):
    image = load_volume(_metaimage(tmp_path)).image
    assert image.GetSize() == (2, 3, 4) and image.GetSpacing() == (1.0, 1.0, 1.0)


@pytest.mark.parametrize(
    "fields, problem",
    [
        ({"NDims": "1000"}, "NDims: 1000 is outside 1..5"),
        ({"DimSize": "2 3"}, "DimSize: expected 3 integers, got 2"),
        ({"DimSize": "2 -3 4"}, "DimSize: size '-3' is not a positive integer"),
        ({"DimSize": "100000 100000 100000"}, "DimSize: needs"),
        ({"DimSize": "20 30 40"}, "need 24000 bytes of voxels; the file holds 24"),
        ({"ElementSpacing": "0 1 1"}, "ElementSpacing: spacing 0 mm is outside 0.001..100 mm"),
        ({"ElementSpacing": "nan 1 1"}, "ElementSpacing: holds NaN or infinity"),
        ({"Offset": "1e300 0 0"}, "Offset: coordinate 1e+300 mm is farther than 10 m"),
        ({"TransformMatrix": "1 0 0 0 1 0 0 0 2"}, "TransformMatrix: not orthonormal"),
        ({"ElementType": "MET_BOGUS"}, "ElementType: 'MET_BOGUS' is not a known MetaImage element type"),
        ({"ElementNumberOfChannels": "100000"}, "ElementNumberOfChannels: 100000 is outside 1..64"),
    ],
)
def test_metaimage_headers_that_crashed_or_fooled_itk(tmp_path, fields, problem):
    path = _metaimage(tmp_path, **fields)
    assert problem in _problem(load_volume, path)
    assert problem in _problem(describe_volume, path)


@pytest.mark.parametrize(
    "line, problem",
    [
        ("endian: AAAA", "endian: 'AAAA', expected little or big"),  # killed the process (signal 11)
        ("dimension: 1000", "dimension: 1000 is outside 1..5"),
        ("space directions: (0,0,0) (0,1,0) (0,0,1)", "space directions: spacing 0 mm is outside"),
        ("space origin: (1e300,0,0)", "space origin: coordinate 1e+300 mm"),
        ("encoding: bzip9", "encoding: 'bzip9' is not supported"),
        ("bogus field: 1", "unknown field 'bogus field'"),
    ],
)
def test_nrrd_headers_that_crashed_or_fooled_itk(tmp_path, line, problem):
    image = sitk.GetImageFromArray(np.zeros((4, 3, 2), dtype=np.int16))
    good = tmp_path / "good.nrrd"
    sitk.WriteImage(image, str(good))
    head, _, data = good.read_bytes().partition(b"\n\n")
    key = line.split(":")[0].encode()
    lines = [entry for entry in head.split(b"\n") if not entry.startswith(key + b":")]
    path = tmp_path / "bad.nrrd"
    path.write_bytes(b"\n".join([*lines, line.encode()]) + b"\n\n" + data)
    assert load_volume(good).image.GetSize() == (2, 3, 4)
    assert problem in _problem(load_volume, path)


def test_nifti_header_fields_are_checked(tmp_path, shared_data):
    import gzip
    import struct

    source = shared_data / "spine-crops-tptbox-mri-ct/sample_mri/sub-mri_seg-vert_label-6_msk.nii.gz"
    raw = bytearray(gzip.decompress(source.read_bytes()))
    for offset, fmt, value, problem in (
        (40, "<h", 9, "dim[0]: 9 is outside 1..7"),
        (42, "<h", -5, "has a size below 1"),
        (70, "<h", 3, "datatype: 3 is not a NIfTI data type"),
        (80, "<f", 3e3, "pixdim: spacing 3000 mm is outside"),
        (108, "<f", 1e30, "vox_offset"),
    ):
        bad = bytearray(raw)
        struct.pack_into(fmt, bad, offset, value)
        path = tmp_path / "bad.nii"
        path.write_bytes(bytes(bad))
        assert problem in _problem(load_volume, path), problem


def test_device_set_with_unknown_encoding_or_huge_values(tmp_path, shared_data):
    text = (shared_data / SPINE_CONFIG).read_text()
    cases = {
        '<?xml version="1.0" encoding="no-such-encoding"?>\n' + text: "cannot decode the XML",
        '<?xml version="1.0" encoding="utf-16"?>\n' + text: "encoding specified in XML declaration is incorrect",
        text.replace('OutputSpacing="0.5 0.5 0.5"', 'OutputSpacing="0.5 0.5 0.5" OutputExtent="0 99999 0 99999 0 99999"'):
            "OutputExtent: needs",
        text.replace('StickLengthLimit="9"', 'StickLengthLimit="100000"'): "StickLengthLimit: 100000 is outside 1..63",
        text.replace('OutputSpacing="0.5 0.5 0.5"', 'OutputSpacing="1e-9 0.5 0.5"'): "OutputSpacing: spacing 1e-09 mm",
        text.replace("15.3978", "1e300"): r"Matrix translation: coordinate 1e\+300 mm",
        text.replace('NumberOfThreads="1"', 'NumberOfThreads="' + "9" * 5000 + '"'): "NumberOfThreads must be an integer",
    }
    for index, (content, problem) in enumerate(cases.items()):
        path = tmp_path / f"config{index}.xml"
        path.write_text(content, encoding="utf-8")
        with pytest.raises(DeviceSetError, match=problem):
            read_device_set(path)


def _dicom_copy(tmp_path: Path, shared_data: Path) -> tuple[Path, list[Path]]:
    folder = tmp_path / "in"
    folder.mkdir()
    files = []
    for source in sorted((shared_data / DICOM_SERIES).glob("*.dcm"))[:3]:
        files.append(Path(shutil.copy(source, folder / source.name)))
    return folder, files


def test_dicom_without_sop_class_or_with_compressed_pixels(tmp_path, shared_data):
    folder, files = _dicom_copy(tmp_path, shared_data)
    dataset = pydicom.dcmread(files[1])
    del dataset.SOPClassUID
    dataset.save_as(files[1], enforce_file_format=False)
    with pytest.raises(DicomError, match="has no well-formed SOPClassUID"):
        anonymize_folder(folder, tmp_path / "out", case_id="C1", salt=b"s")
    shutil.copy(shared_data / DICOM_SERIES / files[1].name, files[1])
    dataset = pydicom.dcmread(files[0])
    dataset.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.50"  # JPEG Baseline, pixels not JPEG
    dataset.PixelData = encapsulate([bytes(dataset.PixelData)])
    dataset.save_as(files[0], enforce_file_format=False)
    with pytest.raises(DicomError, match=r"cannot decode pixel data \(JPEG Baseline"):
        load_volume(folder)


def test_dicom_corrupt_element_is_refused_by_the_anonymiser(tmp_path, shared_data):
    folder, files = _dicom_copy(tmp_path, shared_data)
    data = bytearray(files[2].read_bytes())
    at = data.index(b"\x10\x00\x10\x00PN")  # PatientName: its VR bytes made unknown
    data[at + 4 : at + 6] = b"We"
    files[2].write_bytes(bytes(data))
    expected = r"0003_.*: cannot de-identify: a corrupt element \(Unknown Value Representation 'We' in tag \(0010,0010\)\)"
    with pytest.raises(DicomError, match=expected):
        anonymize_folder(folder, tmp_path / "out", case_id="C1", salt=b"s")


@pytest.mark.parametrize(
    "edit, problem",
    [
        (lambda t: t.replace("[1.5, -20.25, 33.0]", "[1.5, " + "9" * 5000 + ", 33.0]"), "an integer with 5000 digits"),
        (lambda t: t.replace('"title": "t"', '"title": ' + "[" * 5000 + "]" * 5000), "nests 5001 levels deep"),
        (lambda t: t.replace("[1.5, -20.25, 33.0]", "[1.5, -20.25, 1e300]"), r"landmarks\[0\].point_mm: coordinate 1e\+300 mm is farther"),
    ],
)
def test_case_json_huge_numbers_and_deep_nesting(tmp_path, edit, problem):
    from workbench.case import Landmark

    folder = tmp_path / "case"
    save_case(Case(case_id="F1", title="t", landmarks=[Landmark("p", "Mri", (1.5, -20.25, 33.0))]), folder)
    case_json = folder / "case.json"
    edited = edit(case_json.read_text())
    assert edited != case_json.read_text()
    case_json.write_text(edited)
    with pytest.raises(CaseBundleError, match=problem):
        load_case(folder)


def test_plan_and_markups_wrong_types_and_far_points(tmp_path, shared_data):
    from workbench.fuzzing.formats import _example_plan
    from workbench.planning.export import write_markups, write_plan_json

    plan_path = write_plan_json(_example_plan(), tmp_path / "plan.json")
    text = plan_path.read_text()
    plan_path.write_text(text.replace("-3.0,", "1e300,", 1))
    with pytest.raises(PlanError, match=r"trajectories\[0\]\.(target|entry)_lps_mm: coordinate 1e\+300 mm"):
        load_plan(plan_path)
    markups = write_markups(_example_plan(), tmp_path / "plan.mrk.json")
    original = markups.read_text()
    for edited, problem in (
        (original.replace('"controlPoints": [', '"controlPoints": ["text", ', 1), r"markups\[0\].controlPoints\[0\] is not a JSON object"),
        (original.replace('"position": [', '"position": [1e300, ', 1), r"position is not 3 numbers"),
    ):
        markups.write_text(edited)
        with pytest.raises(WorkbenchError, match=problem):
            describe_markups(markups)


def test_corrupt_hdf5_transform_is_refused_not_fatal(tmp_path, shared_data):
    data = bytearray((shared_data / "itk-slicer-transforms/TpsTransform.h5").read_bytes())
    rng = np.random.default_rng(3)
    path = tmp_path / "t.h5"
    for _ in range(20):  # flipped bytes in the HDF5 structure: errors or values, never a dead process
        bad = bytearray(data)
        for at in rng.integers(8, len(bad), 4):
            bad[at] ^= 0xFF
        path.write_bytes(bytes(bad))
        try:
            describe_transform(path)
        except WorkbenchError:
            pass
    path.write_bytes(b"#Insight Transform Fil\xa0 V1.0\n")  # neither text magic nor HDF5
    with pytest.raises(WorkbenchError, match="not an ITK transform file"):
        describe_transform(path)
