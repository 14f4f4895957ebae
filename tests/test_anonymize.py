"""DICOM de-identification: nothing identifying survives, UIDs stay consistent, geometry unchanged."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.datadict import dictionary_VR, tag_for_keyword
from dicom_factory import IDENTIFIERS, NESTED_PERSON, PRIVATE_VALUE, write_series, write_text_file

import workbench.case
from workbench import anonymize, identifiers
from workbench.anonymize import anonymize_folder
from workbench.case import identifiers as case_identifiers
from workbench.errors import DicomError
from workbench.io.dicom import load_dicom_series

REAL_SERIES = "mri-dicom-dcm_qa_decubitus/HFS"
SALT = "test-salt"


def _uid_values(dataset: pydicom.Dataset) -> set[str]:
    """Every instance UID in a data set (recursively); class and well-known DICOM UIDs excluded."""
    found: set[str] = set()

    def visit(ds, element):
        value = str(element.value or "")
        if element.VR == "UI" and value and not element.keyword.endswith("ClassUID") and not value.startswith("1.2.840.10008."):
            found.add(value)

    dataset.walk(visit)
    return found


@pytest.fixture(scope="module")
def real_run(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("anon") / "out"
    report = anonymize_folder(shared_data / REAL_SERIES, out, salt=SALT)
    return report, out


def test_real_no_identifying_value_in_output_bytes(shared_data, real_run):
    report, out = real_run
    originals = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted((shared_data / REAL_SERIES).rglob("*.dcm"))]
    first = originals[0]
    secrets_ = {str(first[k].value) for k in ("PatientID", "InstitutionName", "InstitutionAddress", "StudyDate",
                                              "StationName", "PatientBirthDate", "StudyDescription")}
    secrets_ |= {"Rorden", "Columbia", first.file_meta.SourceApplicationEntityTitle.strip()}
    for ds in originals:
        secrets_ |= _uid_values(ds) | _uid_values(ds.file_meta)
    assert len(secrets_) > 40
    assert len(report.files_written) == 35
    for path in report.files_written:
        data = path.read_bytes()
        leaked = [value for value in secrets_ if value.encode() in data]
        assert leaked == [], (path.name, leaked)


def test_real_profile_applied(shared_data, real_run):
    report, out = real_run
    ds = pydicom.dcmread(report.files_written[0])
    assert str(ds.PatientName) == str(ds.PatientID) == report.case_id
    assert re.fullmatch(r"case-[0-9a-f]{12}", report.case_id)
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.DeidentificationMethod.startswith("PS3.15 E.1 Basic Profile")
    assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    for keyword in ("StudyDate", "PatientSex", "PatientBirthDate", "DeviceSerialNumber", "AcquisitionTime", "ContentDate"):
        assert ds[keyword].value in ("", None), keyword  # Z: kept, emptied
    for keyword in ("PatientAge", "PatientWeight", "SeriesDate", "InstanceCreationDate", "InstitutionAddress",
                    "StudyDescription", "SeriesDescription", "PerformedProcedureStepID"):
        assert keyword not in ds, keyword
    assert not any(element.tag.is_private for element in ds.iterall())
    assert "SourceApplicationEntityTitle" not in ds.file_meta
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
    assert (ds.Modality, ds.Manufacturer, ds.PatientPosition) == ("MR", "SIEMENS", "HFS")


def test_real_uids_remapped_consistently(shared_data, real_run):
    report, out = real_run
    originals = sorted((shared_data / REAL_SERIES).rglob("*.dcm"))
    outputs = [pydicom.dcmread(p, stop_before_pixels=True) for p in report.files_written]
    for keyword in ("SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID"):
        (new,) = {str(ds[keyword].value) for ds in outputs}
        assert new.startswith("2.25.") and len(new) <= 64
    assert all(p.name == f"{ds.SOPInstanceUID}.dcm" for p, ds in zip(report.files_written, outputs))
    # the same referenced localizer UID maps to the same new UID in every file
    inputs = [pydicom.dcmread(p, stop_before_pixels=True) for p in originals]
    refs_in = {tuple(str(r.ReferencedSOPInstanceUID) for r in ds.ReferencedImageSequence) for ds in inputs}
    refs_out = {tuple(str(r.ReferencedSOPInstanceUID) for r in ds.ReferencedImageSequence) for ds in outputs}
    assert len(refs_out) == len(refs_in) == 1
    distinct_refs = len(set(next(iter(refs_in))))
    assert report.uid_map_size == 35 + 3 + distinct_refs  # SOP instances, study/series/frame of reference, references
    assert report.files_skipped == ()


def test_real_geometry_and_pixels_unchanged(shared_data, real_run):
    report, out = real_run
    before, after = load_dicom_series(shared_data / REAL_SERIES), load_dicom_series(out)
    assert after.source_digest == before.source_digest
    assert after.size == before.size
    np.testing.assert_array_equal(after.origin_lps_mm, before.origin_lps_mm)
    np.testing.assert_array_equal(after.spacing_mm, before.spacing_mm)
    np.testing.assert_array_equal(after.direction, before.direction)


def test_same_salt_is_reproducible_other_salt_is_not(shared_data, real_run, tmp_path):
    report, out = real_run
    again = anonymize_folder(shared_data / REAL_SERIES, tmp_path / "again", salt=SALT)
    assert again.case_id == report.case_id
    assert [p.name for p in again.files_written] == [p.name for p in report.files_written]
    assert again.files_written[3].read_bytes() == report.files_written[3].read_bytes()
    other = anonymize_folder(shared_data / REAL_SERIES, tmp_path / "other", salt=b"another salt", case_id="PVB-007")
    assert other.case_id == "PVB-007"
    assert not {p.name for p in other.files_written} & {p.name for p in report.files_written}


# -- synthetic ------------------------------------------------------------------------------


def test_synthetic_identifiers_private_overlays_and_nesting(tmp_path):
    series = write_series(tmp_path / "in" / "Doe_Jane_PID-8675309", n_slices=4)
    write_text_file(tmp_path / "in" / "README.txt", "Patient Doe^Jane\n")
    report = anonymize_folder(tmp_path / "in", tmp_path / "out", case_id="CASE-1")
    assert report.files_skipped == (tmp_path / "in" / "README.txt",)
    assert sorted(p.parent for p in report.files_written) == [tmp_path / "out"] * 4
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in report.files_written)
    for path in report.files_written:
        data = path.read_bytes()
        for value in [*IDENTIFIERS.values(), PRIVATE_VALUE, NESTED_PERSON, series.study_uid, series.series_uid]:
            assert value.encode() not in data, (path.name, value)
        ds = pydicom.dcmread(path)
        assert not any(0x6000 <= element.tag.group <= 0x60FF for element in ds)
        item = ds.ReferencedImageSequence[0]
        assert item.PersonName == "" and len(item) == 3  # class UID, instance UID, emptied name; private gone
    # each file references the next one: the reference must follow the remapped SOPInstanceUID
    by_old_sop = {pydicom.dcmread(f).SOPInstanceUID: f for f in series.files}
    new_sop_of = {}
    for path in report.files_written:
        ds = pydicom.dcmread(path)
        new_sop_of[ds.InstanceNumber] = ds.SOPInstanceUID
    for original in series.files:
        old = pydicom.dcmread(original)
        target = pydicom.dcmread(by_old_sop[old.ReferencedImageSequence[0].ReferencedSOPInstanceUID])
        written = pydicom.dcmread(tmp_path / "out" / f"{new_sop_of[old.InstanceNumber]}.dcm")
        assert written.ReferencedImageSequence[0].ReferencedSOPInstanceUID == new_sop_of[target.InstanceNumber]
    assert load_dicom_series(tmp_path / "out").source_digest == load_dicom_series(tmp_path / "in").source_digest


# -- the identifying attributes shared with the case-bundle guard ------------------------------


def test_anonymizer_and_case_guard_share_one_identifier_list():
    shared = identifiers.IDENTIFYING_DICOM_ATTRIBUTES
    assert anonymize.IDENTIFYING_DICOM_ATTRIBUTES is shared
    assert case_identifiers.IDENTIFYING_DICOM_ATTRIBUTES is shared
    assert workbench.case.IDENTIFYING_DICOM_ATTRIBUTES is shared
    for keyword, tag in shared.items():
        assert f"{tag_for_keyword(keyword):08X}" == tag.replace(",", ""), keyword
        assert case_identifiers.identifying_attribute(keyword) == keyword
        assert case_identifiers.identifying_attribute(f"({tag})") == keyword


def _identifying_value(keyword: str) -> str:
    """A distinctive value of the attribute's VR (UIDs are left to the factory)."""
    vr = dictionary_VR(keyword)
    return {"PN": f"Secret^{keyword[:20]}", "DA": "19610317", "TM": "101112", "AS": "062Y", "CS": "F"}.get(
        vr, f"S-{keyword[:12]}"
    )


def test_every_identifying_attribute_is_removed_or_replaced(tmp_path):
    def modify(k, dataset):
        for keyword in identifiers.IDENTIFYING_DICOM_ATTRIBUTES:
            if dictionary_VR(keyword) != "UI":
                setattr(dataset, keyword, _identifying_value(keyword))

    series = write_series(tmp_path / "in", n_slices=2, modify=modify)
    report = anonymize_folder(tmp_path / "in", tmp_path / "out", case_id="CASE-1")
    written = {pydicom.dcmread(path).InstanceNumber: pydicom.dcmread(path) for path in report.files_written}
    for original_path in series.files:
        original = pydicom.dcmread(original_path)
        ds = written[original.InstanceNumber]
        for keyword in identifiers.IDENTIFYING_DICOM_ATTRIBUTES:
            before = original[keyword].value
            assert before, keyword  # the input really carries every attribute
            if keyword not in ds:
                continue  # removed
            after = ds[keyword].value
            if dictionary_VR(keyword) == "UI":
                assert after and after != before, keyword
            elif keyword in ("PatientName", "PatientID"):
                assert after == "CASE-1"
            else:
                assert not after, (keyword, after)  # emptied
        data = Path(ds.filename).read_bytes()
        for keyword in identifiers.IDENTIFYING_DICOM_ATTRIBUTES:
            if len(str(original[keyword].value)) > 3:
                assert str(original[keyword].value).encode() not in data, keyword


def test_an_identifying_attribute_the_profile_table_leaves_out_is_removed(monkeypatch):
    manufacturer = tag_for_keyword("Manufacturer")
    assert manufacturer not in anonymize._ACTION_BY_TAG
    monkeypatch.setattr(
        anonymize, "IDENTIFYING_DICOM_ATTRIBUTES", {**identifiers.IDENTIFYING_DICOM_ATTRIBUTES, "Manufacturer": "0008,0070"}
    )
    assert anonymize._action_by_tag()[manufacturer] == "X"


def test_dicomdir_skipped(tmp_path):
    write_series(tmp_path / "in", n_slices=2)
    media_directory_storage = "1.2.840.10008.1.3.10"
    write_series(
        tmp_path / "dirsrc", n_slices=1, modify=lambda k, ds: setattr(ds.file_meta, "MediaStorageSOPClassUID", media_directory_storage)
    )
    dicomdir = next((tmp_path / "dirsrc").iterdir()).rename(tmp_path / "in" / "DICOMDIR")
    report = anonymize_folder(tmp_path / "in", tmp_path / "out")
    assert report.files_skipped == (dicomdir,) and len(report.files_written) == 2


def test_refuses_output_inside_input(tmp_path):
    write_series(tmp_path / "in", n_slices=1)
    for out in (tmp_path / "in", tmp_path / "in" / "anon"):
        with pytest.raises(DicomError, match="must not be the input folder or inside it"):
            anonymize_folder(tmp_path / "in", out)
    assert not (tmp_path / "in" / "anon").exists()


def test_refuses_invalid_case_id(tmp_path):
    write_series(tmp_path / "in", n_slices=1)
    with pytest.raises(DicomError, match=r"invalid case id 'Doe\^Jane'"):
        anonymize_folder(tmp_path / "in", tmp_path / "out", case_id="Doe^Jane")


def test_refuses_two_patients(tmp_path):
    write_series(tmp_path / "in" / "a", n_slices=1)
    write_series(tmp_path / "in" / "b", n_slices=1, modify=lambda k, ds: setattr(ds, "PatientID", "OTHER"))
    with pytest.raises(DicomError, match="files of 2 different patients"):
        anonymize_folder(tmp_path / "in", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_refuses_folder_without_dicom(tmp_path):
    write_text_file(tmp_path / "in" / "notes.txt")
    with pytest.raises(DicomError, match=r"no DICOM files found \(1 other files\)"):
        anonymize_folder(tmp_path / "in", tmp_path / "out")
    with pytest.raises(DicomError, match="input folder not found"):
        anonymize_folder(tmp_path / "missing", tmp_path / "out")


def test_refuses_file_without_sop_instance_uid(tmp_path):
    write_series(tmp_path / "in", n_slices=2, modify=lambda k, ds: delattr(ds, "SOPInstanceUID") if k == 1 else None)
    with pytest.raises(DicomError, match="IM0002.dcm: has no SOPInstanceUID"):
        anonymize_folder(tmp_path / "in", tmp_path / "out")


def test_refuses_duplicate_sop_instance_uid(tmp_path):
    series = write_series(tmp_path / "in", n_slices=1)
    (tmp_path / "in" / "copy.dcm").write_bytes(series.files[0].read_bytes())
    with pytest.raises(DicomError, match="have the same SOPInstanceUID"):
        anonymize_folder(tmp_path / "in", tmp_path / "out")


def test_corrupt_dicom_file_named(tmp_path):
    write_series(tmp_path / "in", n_slices=1)

    def deflate(k, ds):
        ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian

    broken = write_series(tmp_path / "src", n_slices=1, modify=deflate).files[0]
    data = broken.read_bytes()
    Path(tmp_path / "in" / "broken.dcm").write_bytes(data[:-40] + b"\xff" * 40)
    with pytest.raises(DicomError, match=r"broken.dcm: cannot read DICOM file: Error -\d while decompressing"):
        anonymize_folder(tmp_path / "in", tmp_path / "out")
