"""Planted PHI: a distinct marker in every attribute of PS3.15 Table E.1-1, none survives, byte for byte.

A copy of the real series ``mri-dicom-dcm_qa_decubitus`` (read in place, written into
``tmp_path``) gets, in every file, a marker of the attribute's own VR in every attribute of
the table (:data:`workbench.identifiers.PROFILE_ATTRIBUTES`, 652 with a tag, plus curve data,
overlay data and comments), again inside sequences (a kept one, a code item in every
sequence of the table), in private blocks, in the file meta header, in the 128-byte
preamble and in the file and folder names. ``workbench anonymize`` and ``new-case`` then run
on it, and every byte they write (and print) is searched for every marker.
"""

from __future__ import annotations

import datetime as dt
import re
import struct
from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from workbench.anonymize import PROFILE_OPTIONS
from workbench.case.create import new_case
from workbench.cli import main
from workbench.identifiers import PROFILE_ATTRIBUTES

SERIES = "mri-dicom-dcm_qa_decubitus/HFS/3_t1_fl2d_sag"
NAME_MARKER = "ZQNAMEDOE"
PREAMBLE_MARKER = b"ZQPREAMBLE-Doe-Jane-".ljust(128, b"#")
_STRING_VRS = {"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR"}
_BINARY_VRS = {"OB", "OW", "OD", "OF", "OL", "OV", "UN"}
_NUMBER_VRS = {"US", "SS", "UL", "SL", "FL", "FD", "UV", "SV", "AT"}


def _marker(index: int, vr: str) -> object:
    """A value of ``vr`` that can be found byte-wise and belongs to attribute ``index`` alone."""
    day = dt.date(1931, 1, 1) + dt.timedelta(days=index)
    return {
        "DA": day.strftime("%Y%m%d"),
        "TM": f"101112.{index:06d}",
        "DT": f"{day:%Y%m%d}101112.{index:06d}",
        "AS": f"{index % 1000:03d}D",
        "DS": f"77{index:04d}.5",
        "IS": f"77{index:04d}",
        "UI": f"1.2.826.0.1.3680043.99.{index}",
        "PN": f"ZQ{index:04d}Q^DOE",
    }.get(vr, f"ZQ{index:04d}Q")


def _command_elements() -> tuple[bytes, dict[str, object]]:
    """Explicit VR little endian bytes of every group-0000 attribute of the table, with their markers."""
    data, planted = b"", {}
    for index, row in enumerate(sorted(PROFILE_ATTRIBUTES.values(), key=lambda r: r.tag)):
        if not row.tag.startswith("0000,"):
            continue
        assert row.vr == "UI", row.keyword
        value = _marker(index, "UI").encode()
        planted[value.decode()] = row.keyword
        value += b"\0" * (len(value) % 2)
        data += struct.pack("<HH", 0, int(row.tag[5:], 16)) + b"UI" + struct.pack("<H", len(value)) + value
    return data, planted


def _splice(path: Path, elements: bytes) -> None:
    """Insert data elements at the start of the data set of a Part 10 file (explicit VR LE, after the file meta)."""
    raw = path.read_bytes()
    assert raw[128:132] == b"DICM" and raw[132:136] == b"\x02\x00\x00\x00" and raw[136:138] == b"UL"
    start = 132 + 12 + struct.unpack("<I", raw[140:144])[0]
    path.write_bytes(raw[:start] + elements + raw[start:])


def _searchable(value: object) -> bytes | None:
    """The bytes to look for, or None for a binary number (too short to search; checked by structure)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return None


def _code_item(index: int) -> Dataset:
    item = Dataset()
    item.CodeValue = f"ZQ{index:04d}C"
    item.CodingSchemeDesignator = "99ZQ"
    item.CodeMeaning = f"ZQ{index:04d}M Doe"
    return item


def _plant(ds: Dataset, instance: int) -> dict[str, object]:
    """Plant a marker in every table attribute of ``ds``; return marker -> attribute (for messages)."""
    planted: dict[str, object] = {}
    for index, row in enumerate(sorted(PROFILE_ATTRIBUTES.values(), key=lambda r: r.tag)):
        if "X" in row.tag:
            continue
        tag = int(row.tag.replace(",", ""), 16)
        if tag >> 16 == 0x0002:  # file meta: planted below
            continue
        if tag >> 16 == 0x0000:  # command elements: pydicom will not write them, spliced into the bytes by _splice
            continue
        vr = row.vr
        if vr == "SQ":
            if tag in ds:  # e.g. the real Referenced Image Sequence: its references stay, one code item more
                ds[tag].value.append(_code_item(index))
            else:
                ds.add(DataElement(tag, "SQ", DicomSequence([_code_item(index)])))
            for suffix in ("C", "M Doe"):
                planted[f"ZQ{index:04d}{suffix}"] = row.keyword
            continue
        value = _marker(index, vr)
        if row.keyword == "SOPInstanceUID":
            value = f"1.2.840.10008.99/../../../ZQ{instance}"  # a traversal attempt under the DICOM root
        if vr in _BINARY_VRS:
            value = f"ZQ{index:04d}QB".encode()
        elif vr in _NUMBER_VRS:
            value = 0x5A51_0000 + index if vr in ("UL", "SL") else 7
        elif vr not in _STRING_VRS and vr not in {"DA", "TM", "DT", "AS", "DS", "IS", "UI"}:
            raise AssertionError(f"no marker for VR {vr} ({row.keyword})")
        ds.add(DataElement(tag, vr, value))
        if (key := _searchable(value)) is not None:
            planted[key.decode()] = row.keyword
    # repeating groups: curve data, overlay data and comments (and an overlay description)
    ds.add(DataElement(0x50003000, "OB", b"ZQCURVEDATA-Doe"))
    ds.add(DataElement(0x60003000, "OW", b"ZQOVERLAYDATA-Doe"))
    ds.add(DataElement(0x60004000, "LT", "ZQOVERLAYCOMMENT Doe"))
    ds.add(DataElement(0x60000022, "LO", "ZQOVERLAYDESC Doe"))
    # inside a sequence that is kept (Referenced Image Sequence, X/Z/U*) and one the table does not name
    ref = ds.ReferencedImageSequence[0]
    ref.PatientName, ref.InstitutionName, ref.StudyDate = "ZQNESTPN^DOE", "ZQNESTINST", "19330303"
    ref.AcquisitionContextSequence = [_code_item(9001)]
    anatomy = Dataset()
    anatomy.CodeValue, anatomy.CodingSchemeDesignator, anatomy.CodeMeaning = "T-D0146", "SRT", "Lumbar spine"
    anatomy.OperatorsName = "ZQNESTOP^DOE"
    anatomy.AdmittingDiagnosesCodeSequence = [_code_item(9002)]
    ds.AnatomicRegionSequence = [anatomy]
    planted.update({m: "nested" for m in ("ZQNESTPN^DOE", "ZQNESTINST", "19330303", "ZQNESTOP^DOE")})
    planted.update({f"ZQ{i}{s}": "nested code" for i in (9001, 9002) for s in ("C", "M Doe")})
    # private blocks: a text one and a Siemens one with a text element off the safe list
    block = ds.private_block(0x0029, "ZQ PRIVATE CREATOR", create=True)
    block.add_new(0x10, "LO", "ZQPRIVATE-Doe-Jane")
    siemens = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    siemens.add_new(0x08, "LO", "ZQSIEMENSTEXT")
    # file meta and preamble
    ds.file_meta.SourceApplicationEntityTitle = "ZQSRCAE"
    ds.file_meta.ImplementationVersionName = "ZQIMPLVER"
    ds.file_meta.PrivateInformationCreatorUID = "1.2.826.0.1.3680043.99.77"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.preamble = PREAMBLE_MARKER
    planted.update({m: "repeating group" for m in ("ZQCURVEDATA-Doe", "ZQOVERLAYDATA-Doe", "ZQOVERLAYCOMMENT Doe", "ZQOVERLAYDESC Doe")})
    planted.update({m: "private" for m in ("ZQPRIVATE-Doe-Jane", "ZQ PRIVATE CREATOR", "ZQSIEMENSTEXT")})
    planted.update({m: "file meta" for m in ("ZQSRCAE", "ZQIMPLVER", "1.2.826.0.1.3680043.99.77")})
    planted[PREAMBLE_MARKER[:20].decode()] = "preamble"
    return planted


@pytest.fixture(scope="module")
def planted_series(shared_data, tmp_path_factory):
    """(folder, markers, original UIDs): the planted copy; markers maps each marker to its attribute."""
    folder = tmp_path_factory.mktemp("planted") / f"{NAME_MARKER}_Doe_Jane" / "ZQSERIESDIR"
    folder.mkdir(parents=True)
    markers: dict[str, object] = {NAME_MARKER: "folder name", "ZQSERIESDIR": "folder name"}
    uids: set[str] = set()
    command, command_markers = _command_elements()
    markers.update(command_markers)
    for number, source in enumerate(sorted((shared_data / SERIES).glob("*.dcm")), start=1):
        ds = pydicom.dcmread(source)  # read in place, written only into tmp_path
        uids |= {str(e.value) for e in ds.iterall() if e.VR == "UI" and not e.keyword.endswith("ClassUID")}
        markers.update(_plant(ds, number))
        markers[f"1.2.840.10008.99/../../../ZQ{number}"] = "SOPInstanceUID"
        name = f"ZQFILE{number:03d}_Doe.dcm"
        markers[f"ZQFILE{number:03d}"] = "file name"
        ds.save_as(folder / name, enforce_file_format=True)
        _splice(folder / name, command)
    assert len(list(folder.iterdir())) == 35
    assert len(markers) > 700
    return folder, markers, uids


def _hits(data: bytes, markers: dict[str, object]) -> list[tuple[str, object]]:
    """Markers found in ``data``; digit-only markers count only where no digit or dot touches them."""
    found = []
    for marker, where in markers.items():
        raw = marker.encode()
        if re.fullmatch(rb"[0-9.]+", raw):
            if re.search(rb"(?<![0-9.])" + re.escape(raw) + rb"(?![0-9])", data):
                found.append((marker, where))
        elif raw in data:
            found.append((marker, where))
    return found


def _leaks(blobs: list[tuple[str, bytes]], markers: dict[str, object], uids) -> dict[str, list]:
    """Name -> markers and original UIDs found in that blob (empty when nothing leaked)."""
    leaks = {}
    for name, data in blobs:
        found = _hits(data, markers) + [(uid, "original UID") for uid in uids if uid.encode() in data]
        if found:
            leaks[name] = found
    return leaks


def _every_byte(root: Path) -> list[tuple[str, bytes]]:
    return [(p.relative_to(root).as_posix(), p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()]


def test_every_table_attribute_was_planted(planted_series):
    folder, markers, _ = planted_series
    ds = pydicom.dcmread(next(folder.iterdir()))
    tags = {f"{e.tag.group:04X},{e.tag.element:04X}" for e in ds} | {f"{e.tag.group:04X},{e.tag.element:04X}" for e in ds.file_meta}
    missing = [r.keyword for r in PROFILE_ATTRIBUTES.values() if "X" not in r.tag and r.tag not in tags]
    assert missing == []
    assert ds.preamble == PREAMBLE_MARKER
    assert _hits(next(folder.iterdir()).read_bytes(), {"ZQ0100Q": 0, PREAMBLE_MARKER[:20].decode(): 0})  # the search works


@pytest.mark.parametrize("retain", [False, True], ids=["basic", "all-options"])
def test_workbench_anonymize_leaves_no_marker(planted_series, tmp_path, capsys, retain):
    folder, markers, uids = planted_series
    source = folder.parent.parent
    out = tmp_path / "out"
    argv = ["anonymize", str(source), str(out)]
    if retain:
        argv += [arg for name in PROFILE_OPTIONS for arg in ("--retain", name)]
    assert main(argv) == 0
    printed = capsys.readouterr()
    files = _every_byte(out)
    assert [name for name, _ in files] == [f"IM{n:05d}.dcm" for n in range(1, 36)]
    assert [p for p in source.parent.rglob("*") if "ZQ" in p.name and source not in p.parents and p != source] == []
    expected_kept = {}
    if retain:  # what the options keep, with their exact planted values; everything else must be gone
        planted = pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True)
        ds = pydicom.dcmread(out / "IM00001.dcm")
        for row in PROFILE_ATTRIBUTES.values():
            if row.retain_patient_characteristics == "K" or (row.vr == "TM" and row.retain_long_modified_dates == "C"):
                expected_kept[row.keyword] = planted[row.keyword].value
        assert len(expected_kept) == 8 + 52  # patient characteristics, times of day
        assert {k: ds[k].value for k in expected_kept} == expected_kept  # kept, exactly as planted
        assert ds.PatientAge.endswith("D") and ds.StudyTime.startswith("101112.")
        markers = {m: w for m, w in markers.items() if w not in expected_kept}
    assert _leaks([*files, ("stdout", printed.out.encode()), ("stderr", printed.err.encode())], markers, uids) == {}
    for path in out.iterdir():
        ds = pydicom.dcmread(path)
        assert ds.preamble == bytes(128) and ds.PatientIdentityRemoved == "YES"
        assert not any(e.tag.is_private for e in ds.iterall())


def test_new_case_bundle_leaves_no_marker(planted_series, tmp_path, capsys):
    folder, markers, uids = planted_series
    bundle = new_case(tmp_path / "case", mri=folder)
    printed = capsys.readouterr()
    files = _every_byte(bundle)
    assert any(name == "case.json" for name, _ in files)
    assert _leaks([*files, ("stdout", printed.out.encode())], markers, uids) == {}


def test_plan_exports_of_the_planted_case_leave_no_marker(planted_series, tmp_path, capsys):
    """The same search over everything `workbench plan` writes for a target and entry on the planted case."""
    import dataclasses

    import numpy as np

    from workbench.case import Target, load_case, save_case
    from workbench.case.readiness import ENTRY_STRUCTURE
    from workbench.io.volume import load_volume

    folder, markers, uids = planted_series
    bundle = new_case(tmp_path / "case", mri=folder)
    case = load_case(bundle)
    mri = load_volume(bundle / case.mri.path)
    centre_lps = mri.mri_voxel_to_mri.apply_to_points((np.array(mri.size) - 1) / 2.0)
    targets = [Target("T", "nerve root", tuple(centre_lps)), Target("T entry", ENTRY_STRUCTURE, tuple(centre_lps + [0.0, 0.0, 50.0]))]
    save_case(dataclasses.replace(case, targets=targets), bundle)
    capsys.readouterr()
    assert main(["plan", str(bundle), "--out", str(tmp_path / "exports"), "--no-ultrasound"]) == 0
    printed = capsys.readouterr()
    files = _every_byte(tmp_path / "exports")
    assert {"plan.json", "plan.mrk.json", "plan.csv", "report.html"} <= {Path(name).name for name, _ in files}
    assert _leaks([*files, ("stdout", printed.out.encode()), ("stderr", printed.err.encode())], markers, uids) == {}
