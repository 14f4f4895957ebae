"""DICOM de-identification: nothing identifying survives, UIDs stay consistent, geometry unchanged."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.datadict import dictionary_VR, tag_for_keyword
from dicom_factory import IDENTIFIERS, NESTED_PERSON, PRIVATE_VALUE, write_series, write_text_file

import workbench.case
from workbench import anonymize, identifiers
from workbench.anonymize import (
    PROFILE_OPTIONS,
    RETAIN_LONG_MODIFIED_DATES,
    RETAIN_PATIENT_CHARACTERISTICS,
    RETAIN_SAFE_PRIVATE,
    anonymize_folder,
    resolve_action,
)
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
    assert ds.DeidentificationMethod == "PS3.15 E.1 Basic Profile (DICOM 2026c)"
    assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100"]
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"
    assert ds.preamble == bytes(128) and report.files_written[0].read_bytes()[:128] == bytes(128)
    assert report.to_dict()["options"] == []
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
    # named by a counter, in InstanceNumber order within the series: never from an input value
    assert [p.name for p in report.files_written] == [f"IM{n:05d}.dcm" for n in range(1, 36)]
    assert [int(ds.InstanceNumber) for ds in outputs] == list(range(1, 36))
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
    sops = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in report.files_written}
    other_sops = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in other.files_written}
    assert len(sops) == len(other_sops) == 35 and not sops & other_sops


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
        assert "PersonName" not in item and len(item) == 2  # a reference (X/Z/U*): its class and instance UIDs only
    # each file references the next one: the reference must follow the remapped SOPInstanceUID
    by_old_sop = {pydicom.dcmread(f).SOPInstanceUID: f for f in series.files}
    written_by_instance = {}
    for path in report.files_written:
        ds = pydicom.dcmread(path)
        written_by_instance[ds.InstanceNumber] = ds
    for original in series.files:
        old = pydicom.dcmread(original)
        target = pydicom.dcmread(by_old_sop[old.ReferencedImageSequence[0].ReferencedSOPInstanceUID])
        written = written_by_instance[old.InstanceNumber]
        assert written.ReferencedImageSequence[0].ReferencedSOPInstanceUID == written_by_instance[target.InstanceNumber].SOPInstanceUID
    assert load_dicom_series(tmp_path / "out").source_digest == load_dicom_series(tmp_path / "in").source_digest


# -- the table (PS3.15 E.1-1 as data) and the identifying attributes shared with the case guard --


def test_profile_table_is_the_standard_table():
    rows = identifiers.PROFILE_ATTRIBUTES
    assert identifiers.PROFILE_STANDARD_VERSION == "2026c"
    assert len(rows) == 655
    counts = {}
    for row in rows.values():
        counts[row.basic_profile] = counts.get(row.basic_profile, 0) + 1
    assert counts == {"X": 415, "D": 93, "U": 55, "Z": 42, "X/D": 23, "X/Z": 11, "X/Z/D": 8, "Z/D": 6, "X/Z/U*": 2}
    expected = {
        "0010,0010": ("PatientName", "PN", "Z"), "0010,0020": ("PatientID", "LO", "Z/D"),
        "0008,0018": ("SOPInstanceUID", "UI", "U"), "0002,0003": ("MediaStorageSOPInstanceUID", "UI", "U"),
        "0040,0555": ("AcquisitionContextSequence", "SQ", "X/Z"), "0008,1140": ("ReferencedImageSequence", "SQ", "X/Z/U*"),
        "0008,1084": ("AdmittingDiagnosesCodeSequence", "SQ", "X"), "0012,0010": ("ClinicalTrialSponsorName", "LO", "D"),
        "0040,A353": ("AddressTrial", "ST", "X"), "0010,2155": ("PatientTelecomInformation", "LT", "X"),
        "0038,0300": ("CurrentPatientLocation", "LO", "X"), "0040,0010": ("ScheduledStationName", "SH", "X"),
        "0050,001B": ("ContainerComponentID", "LO", "X"), "FFFC,FFFC": ("DataSetTrailingPadding", "OB", "X"),
        "50XX,XXXX": ("", "", "X"), "60XX,3000": ("", "", "X"), "60XX,4000": ("", "", "X"),
    }  # fmt: skip
    for tag, (keyword, vr, action) in expected.items():
        row = rows[tag]
        assert (row.keyword, row.vr, row.basic_profile) == (keyword, vr, action), tag
    text = (Path(identifiers.__file__).parent / identifiers.PROFILE_TABLE_FILE).read_text().splitlines()
    assert text[0].startswith("# DICOM PS3.15 2026c Table E.1-1")


def test_option_columns():
    rows = {row.keyword: row for row in identifiers.PROFILE_ATTRIBUTES.values() if row.keyword}
    kept = {k for k, row in rows.items() if row.retain_patient_characteristics == "K"}
    assert kept == {"PatientSex", "PatientAge", "PatientSize", "PatientWeight", "EthnicGroup", "SmokingStatus",
                    "PregnancyStatus", "PatientSexNeutered"}  # fmt: skip
    shifted = {k for k, row in rows.items() if row.retain_long_modified_dates == "C"}
    assert len(shifted) == 168
    assert {"StudyDate", "SeriesDate", "AcquisitionDateTime", "ContentTime", "Date"} <= shifted
    assert not {"PatientBirthDate", "PatientBirthTime", "PatientName"} & shifted


def test_resolve_action_of_each_choice():
    rows = {row.keyword: row for row in identifiers.PROFILE_ATTRIBUTES.values() if row.keyword}
    basic = {k: resolve_action(rows[k]) for k in ("PatientName", "PatientID", "AcquisitionDate", "InstanceCreationTime",
                                                  "SeriesDate", "ReferencedImageSequence", "SOPInstanceUID",
                                                  "ClinicalTrialSponsorName", "PatientAge")}  # fmt: skip
    assert basic == {"PatientName": "Z", "PatientID": "Z", "AcquisitionDate": "Z", "InstanceCreationTime": "Z",
                     "SeriesDate": "X", "ReferencedImageSequence": "U*", "SOPInstanceUID": "U",
                     "ClinicalTrialSponsorName": "D", "PatientAge": "X"}  # fmt: skip
    both = set(PROFILE_OPTIONS)
    assert resolve_action(rows["PatientAge"], both) == "K"
    assert resolve_action(rows["Allergies"], both) == "X"  # C (clean free text) is not done: basic action
    assert resolve_action(rows["StudyDate"], both) == "S" and resolve_action(rows["AcquisitionDateTime"], both) == "S"
    assert resolve_action(rows["StudyTime"], both) == "K"
    assert resolve_action(rows["PatientBirthDate"], both) == "Z"
    assert resolve_action(rows["TimezoneOffsetFromUTC"], both) == "X"  # C on a non-date VR: basic action


def test_anonymizer_and_case_guard_share_one_identifier_list():
    shared = identifiers.IDENTIFYING_DICOM_ATTRIBUTES
    assert anonymize.IDENTIFYING_DICOM_ATTRIBUTES is shared
    assert case_identifiers.IDENTIFYING_DICOM_ATTRIBUTES is shared
    assert workbench.case.IDENTIFYING_DICOM_ATTRIBUTES is shared
    table = {row.keyword: row.tag for row in identifiers.PROFILE_ATTRIBUTES.values() if row.keyword and row.basic_profile != "K"}
    assert dict(shared) == table and len(shared) == 652
    for keyword, tag in shared.items():
        if tag_for_keyword(keyword) is not None:  # 25 attributes are newer than pydicom's dictionary
            assert f"{tag_for_keyword(keyword):08X}" == tag.replace(",", ""), keyword
        assert case_identifiers.identifying_attribute(keyword) == keyword
        assert case_identifiers.identifying_attribute(f"({tag})") == keyword
    assert sum(tag_for_keyword(k) is None for k in shared) == 25


def _identifying_value(keyword: str) -> str:
    """A distinctive value of the attribute's VR (UIDs are left to the factory)."""
    vr = dictionary_VR(keyword)
    return {"PN": f"Secret^{keyword[:20]}", "DA": "19610317", "TM": "101112", "AS": "062Y", "CS": "F"}.get(
        vr, f"S-{keyword[:12]}"
    )


def test_every_identifying_attribute_is_removed_or_replaced(tmp_path):
    keywords = [k for k in identifiers.IDENTIFYING_DICOM_ATTRIBUTES if tag_for_keyword(k) is not None
                and dictionary_VR(k) in ("PN", "DA", "TM", "AS", "CS", "LO", "SH", "LT", "ST", "UT")]  # fmt: skip
    assert len(keywords) > 300

    def modify(k, dataset):
        for keyword in keywords:
            setattr(dataset, keyword, _identifying_value(keyword))

    series = write_series(tmp_path / "in", n_slices=2, modify=modify)
    report = anonymize_folder(tmp_path / "in", tmp_path / "out", case_id="CASE-1")
    written = {pydicom.dcmread(path).InstanceNumber: pydicom.dcmread(path) for path in report.files_written}
    for original_path in series.files:
        original = pydicom.dcmread(original_path)
        ds = written[original.InstanceNumber]
        for keyword in keywords:
            assert original[keyword].value, keyword  # the input really carries every attribute
            if keyword not in ds:
                continue  # removed
            after = ds[keyword].value
            if keyword in ("PatientName", "PatientID"):
                assert after == "CASE-1"
            else:
                assert after in ("", None, "ANONYMIZED", "ANONYMOUS", "19000101", "000000", "000D"), (keyword, after)
        data = Path(ds.filename).read_bytes()
        for keyword in keywords:
            if len(str(original[keyword].value)) > 3:
                assert str(original[keyword].value).encode() not in data, keyword


# -- output names never come from input values ----------------------------------------------------


def test_traversal_uid_never_becomes_a_path(tmp_path):
    evil = "1.2.840.10008.99/../../../X"

    def modify(k, ds):
        ds.SOPInstanceUID = f"{evil}{k}"
        ds.file_meta.MediaStorageSOPInstanceUID = f"{evil}{k}"
        ds.SeriesInstanceUID = "1.2.840.10008.5.1.4.1.1.4"  # a well-known UID used as an instance UID

    work = tmp_path / "a" / "b" / "c"
    write_series(work / "in", n_slices=2, modify=modify)
    report = anonymize_folder(work / "in", work / "out", case_id="CASE-1")
    assert sorted(p.name for p in (work / "out").iterdir()) == ["IM00001.dcm", "IM00002.dcm"]
    outside_input = sorted(p for p in tmp_path.rglob("*") if p.is_file() and work / "in" not in p.parents)
    assert outside_input == sorted(report.files_written)
    for path in report.files_written:
        ds = pydicom.dcmread(path)
        assert ds.SOPInstanceUID.startswith("2.25.") and ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.SeriesInstanceUID.startswith("2.25.")  # instance UIDs are always replaced, whatever their root
        assert b"10008.99" not in path.read_bytes() and b"/.." not in path.read_bytes()


# -- retain options -----------------------------------------------------------------------------


def _dated(k, ds):
    ds.StudyDate, ds.SeriesDate, ds.StudyTime = "20230914", "20230915", "101112.131415"
    ds.AcquisitionDateTime = "20230916081500.25+0100"
    ds.PatientBirthDate = "19610317"
    ds.PatientSex, ds.PatientAge, ds.PatientSize, ds.PatientWeight = "F", "062Y", "1.68", "61.5"
    ds.Allergies = "Penicillin (Doe family)"
    ds.CalibrationDate = "2023.09.01"  # old ACR-NEMA form: not a DA that can be shifted, removed


def test_retain_modified_dates_shifts_every_date_by_one_offset(tmp_path):
    write_series(tmp_path / "in", n_slices=2, modify=_dated)
    report = anonymize_folder(tmp_path / "in", tmp_path / "out", options=[RETAIN_LONG_MODIFIED_DATES], date_offset_days=-100)
    assert report.options == (RETAIN_LONG_MODIFIED_DATES,)
    for path in report.files_written:
        ds = pydicom.dcmread(path)
        assert (ds.StudyDate, ds.SeriesDate) == ("20230606", "20230607")  # 14 Sep 2023 - 100 days = 6 Jun 2023
        assert ds.AcquisitionDateTime == "20230608081500.25+0100"
        assert ds.StudyTime == "101112.131415"  # times of day are kept
        assert ds.PatientBirthDate == ""  # not a longitudinal date: basic profile (Z)
        assert "CalibrationDate" not in ds and "PatientAge" not in ds and ds.PatientSex == ""
        assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
        assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100", "113107"]
        assert list(ds.DeidentificationMethod) == [
            "PS3.15 E.1 Basic Profile (DICOM 2026c)", "Retain Longitudinal Temporal Information Modified Dates Option"
        ]


def test_default_date_offset_is_one_per_case_and_keyed(tmp_path):
    write_series(tmp_path / "in", n_slices=3, modify=_dated)
    offsets = []
    for salt in ("a", "a", "b"):
        out = tmp_path / f"out-{len(offsets)}"
        report = anonymize_folder(tmp_path / "in", out, salt=salt, options=[RETAIN_LONG_MODIFIED_DATES])
        days = {(np.datetime64("2023-09-14") - np.datetime64(_iso(pydicom.dcmread(p).StudyDate))).astype(int)
                for p in report.files_written}  # fmt: skip
        assert len(days) == 1
        offsets.append(days.pop())
    assert offsets[0] == offsets[1] != offsets[2]
    assert all(366 <= d <= 4017 for d in offsets)


def _iso(da: str) -> str:
    return f"{da[:4]}-{da[4:6]}-{da[6:]}"


def test_retain_patient_characteristics(tmp_path):
    write_series(tmp_path / "in", n_slices=1, modify=_dated)
    report = anonymize_folder(tmp_path / "in", tmp_path / "out", options=[RETAIN_PATIENT_CHARACTERISTICS])
    ds = pydicom.dcmread(report.files_written[0])
    assert (ds.PatientSex, ds.PatientAge, ds.PatientSize, ds.PatientWeight) == ("F", "062Y", 1.68, 61.5)
    assert "Allergies" not in ds and ds.StudyDate == "" and "SeriesDate" not in ds
    assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100", "113108"]
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"


def test_retain_safe_private_keeps_numbers_only(tmp_path):
    def modify(k, ds):
        block = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
        block.add_new(0x0C, "IS", "1000")  # B_value: safe
        block.add_new(0x0E, "FD", [0.0, 0.6, 0.8])  # gradient direction: safe
        block.add_new(0x27, "LO", "Doe^Jane")  # a safe slot holding text: not kept
        block.add_new(0x08, "CS", "DOE")  # not on the safe list

    write_series(tmp_path / "in", n_slices=1, modify=modify)
    plain = anonymize_folder(tmp_path / "in", tmp_path / "plain")
    assert not any(e.tag.is_private for e in pydicom.dcmread(plain.files_written[0]))
    kept = anonymize_folder(tmp_path / "in", tmp_path / "kept", options=[RETAIN_SAFE_PRIVATE])
    ds = pydicom.dcmread(kept.files_written[0])
    private = {(e.tag.group, e.tag.element & 0xFF): e.value for e in ds if e.tag.is_private and e.tag.element > 0xFF}
    assert private == {(0x0019, 0x0C): 1000, (0x0019, 0x0E): [0.0, 0.6, 0.8]}
    data = kept.files_written[0].read_bytes()
    assert b"ACME PRIVATE" not in data and b"Doe^Jane" not in data and b"DOE" not in data


def test_refuses_unknown_option_and_bad_offset(tmp_path):
    write_series(tmp_path / "in", n_slices=1)
    with pytest.raises(DicomError, match="unknown de-identification option 'retain_everything'"):
        anonymize_folder(tmp_path / "in", tmp_path / "out", options=["retain_everything"])
    with pytest.raises(DicomError, match=r"date offset 1000000.0 is not a whole number of days within ±36525"):
        anonymize_folder(tmp_path / "in", tmp_path / "out", date_offset_days=1e6)
    assert not (tmp_path / "out").exists()


# -- the generator of the table -------------------------------------------------------------------


def test_generator_reads_the_source_lists():
    spec = importlib.util.spec_from_file_location("make_ps315_table", Path(__file__).parents[1] / "tools" / "make_ps315_table.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    source = (
        "D_TAGS = [\n    (0x0012, 0x0010),  # Clinical Trial Sponsor Name\n]\n"
        "X_TAGS = [\n    (0x5000, 0x0000, 0xFF00, 0x0000),  # Curve Data\n    (\n        0x6000,\n        0x4000,\n"
        "        0xFF00,\n        0xFFFF,\n    ),  # Overlay Comments\n]\n"
        "X_Z_U_STAR_TAGS = [(0x0008, 0x1140)]  # Referenced Image Sequence\n"
    )
    assert tool.kitware_rows(source) == [
        ("0012,0010", "Clinical Trial Sponsor Name", "D"), ("50XX,XXXX", "Curve Data", "X"),
        ("60XX,4000", "Overlay Comments", "X"), ("0008,1140", "Referenced Image Sequence", "X/Z/U*"),
    ]  # fmt: skip
    assert tool.keyword_from_name("Patient's Sex Neutered") == "PatientSexNeutered"
    assert tool.keyword_from_name("Name to Use") == "NameToUse"


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
