"""De-identify a folder of DICOM files: DICOM PS3.15 Annex E, Basic Application Level Confidentiality Profile.

:func:`anonymize_folder` writes a de-identified copy of every DICOM file. The action of each
attribute is read from PS3.15 Table E.1-1, kept as data in ``workbench/data/ps3.15_e1-1.csv``
(:data:`workbench.identifiers.PROFILE_ATTRIBUTES`, edition
:data:`workbench.identifiers.PROFILE_STANDARD_VERSION`). For every data element, in the data
set and, recursively, in every sequence item that is kept:

1. private elements (odd groups) are removed, curve (50xx) and overlay (60xx) groups too
   (whole groups: Curve Data, Overlay Data and Overlay Comments are ``X`` in the table, and
   an overlay's description and label are free text), and so are command (0000) and file
   meta (0002) elements found inside a data set, where they have no place. With :data:`RETAIN_SAFE_PRIVATE`, the
   numeric elements of :data:`SAFE_PRIVATE_ATTRIBUTES` are kept with their private creator;
2. an attribute of the table gets its action (:func:`resolve_action`): ``X`` removed, ``Z``
   emptied, ``D`` a dummy value of its VR (an empty sequence or empty binary value),
   ``U`` every UID replaced, ``U*`` (of ``X/Z/U*``, sequences of references) the sequence
   kept with only the UIDs (replaced by these same rules) and integers (frame and segment
   numbers) of its items, ``K`` kept. Where the table offers a choice the one taken is fixed:
   ``X/Z``, ``Z/D`` and ``X/Z/D`` give ``Z``; ``X/D`` gives ``X``; ``X/Z/U*`` gives ``U*``;
3. an attribute the table leaves out is judged by its value representation: a UID (VR UI)
   is kept only when it names a class or a coding scheme (``...ClassUID``,
   ``TransferSyntaxUID``...) and is a well-formed UID, every other UID is replaced; a person
   name (PN) is emptied; a date, time or date-time (DA, TM, DT) is removed; anything else is
   kept, and a sequence is kept with its items cleaned by these same rules. Replaced UIDs
   are ``2.25.<integer>`` from a keyed hash (HMAC-SHA-256 with the salt) of the original:
   the same input UID gives the same output UID, so references between files stay
   consistent, and a re-run with the same salt is identical.

Retain options (PS3.15 E.3), named as the table's option columns, change step 2 where the
column says so; none is on by default:

- :data:`RETAIN_LONG_MODIFIED_DATES` "Retain Longitudinal Temporal Information with Modified
  Dates": every date (DA) and the date part of every date-time (DT) the column marks ``C`` is
  shifted by one offset in days for the whole case (times of day are kept), so intervals
  stay exact; LongitudinalTemporalInformationModified is ``MODIFIED`` (else ``REMOVED``).
- :data:`RETAIN_PATIENT_CHARACTERISTICS` "Retain Patient Characteristics": the attributes the
  column marks ``K`` (sex, age, size, weight, ethnic group, smoking and pregnancy status,
  sex neutered) are kept. Those it marks ``C`` (allergies, special needs, patient state,
  pre-medication: free text) get the Basic Profile action, as no text is cleaned here.
- :data:`RETAIN_SAFE_PRIVATE` "Retain Safe Private": see step 1.

PatientName and PatientID become the pseudonymous case id; PatientIdentityRemoved is
``YES``; DeidentificationMethod and its code sequence (DCM 113100 and the options' codes)
name the profile. The file meta header is rebuilt from the de-identified data set and the
128-byte preamble zeroed. Output files are named ``IM00001.dcm``, ``IM00002.dcm``... in the
order of (new SeriesInstanceUID, InstanceNumber, new SOPInstanceUID): no input value ever
becomes a file or folder name. Pixel data and geometry (ImagePositionPatient,
ImageOrientationPatient, PixelSpacing...) are untouched, so the volume's ``source_digest``
is unchanged.

Not done (options beyond those above): Clean Pixel Data (burned-in text), Clean Descriptors
(descriptions are removed, not cleaned), Clean Structured Content, Retain UIDs, Retain Device
or Institution Identity, Retain Full Dates.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pydicom
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

from workbench._atomic import atomic_open
from workbench.errors import DicomError
from workbench.identifiers import IDENTIFYING_DICOM_ATTRIBUTES, PROFILE_ATTRIBUTES, PROFILE_STANDARD_VERSION, ProfileAttribute
from workbench.io.dicom import read_dicom_file

__all__ = [
    "IDENTIFYING_DICOM_ATTRIBUTES",
    "PROFILE_OPTIONS",
    "RETAIN_LONG_MODIFIED_DATES",
    "RETAIN_PATIENT_CHARACTERISTICS",
    "RETAIN_SAFE_PRIVATE",
    "SAFE_PRIVATE_ATTRIBUTES",
    "AnonymizationReport",
    "anonymize_folder",
    "resolve_action",
]

#: Option "Retain Longitudinal Temporal Information with Modified Dates" (PS3.15 E.3.6).
RETAIN_LONG_MODIFIED_DATES = "retain_long_modified_dates"
#: Option "Retain Patient Characteristics" (PS3.15 E.3.4).
RETAIN_PATIENT_CHARACTERISTICS = "retain_patient_characteristics"
#: Option "Retain Safe Private" (PS3.15 E.3.10), limited to :data:`SAFE_PRIVATE_ATTRIBUTES`.
RETAIN_SAFE_PRIVATE = "retain_safe_private"

#: The retain options :func:`anonymize_folder` accepts: name -> (DCM code, code meaning of CID 7050).
PROFILE_OPTIONS: dict[str, tuple[str, str]] = {
    RETAIN_LONG_MODIFIED_DATES: ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    RETAIN_PATIENT_CHARACTERISTICS: ("113108", "Retain Patient Characteristics Option"),
    RETAIN_SAFE_PRIVATE: ("113111", "Retain Safe Private Option"),
}

#: Private attributes kept by :data:`RETAIN_SAFE_PRIVATE`: (private creator, group, element
#: within the block). Kept only when their value is numbers (VR FD, FL, DS, IS, US, SS, UL,
#: SL): Siemens diffusion b-value, gradient direction and b-matrix.
SAFE_PRIVATE_ATTRIBUTES: frozenset[tuple[str, int, int]] = frozenset(
    {("SIEMENS MR HEADER", 0x0019, 0x0C), ("SIEMENS MR HEADER", 0x0019, 0x0E), ("SIEMENS MR HEADER", 0x0019, 0x27)}
)

_BASIC_CHOICE = {"X/Z": "Z", "Z/D": "Z", "X/Z/D": "Z", "X/D": "X", "X/Z/U*": "U*", "C": "X"}
#: UID attributes outside the table kept when well formed: they name classes or schemes, not instances.
_KEPT_UID_KEYWORDS = frozenset({"TransferSyntaxUID", "CodingSchemeUID", "ContextUID", "MappingResourceUID"})
_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_DATE_TIME_VRS = frozenset({"DA", "DT", "TM"})
_REFERENCE_NUMBER_VRS = frozenset({"IS", "US", "UL", "SS", "SL"})
_NUMERIC_VRS = frozenset({"FD", "FL", "DS", "IS", "US", "SS", "UL", "SL"})
_NUMBER_RE = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")
_TIME_RE = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")
_DT_REST_RE = re.compile(r"^(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?([+-]\d{4})?$")
_CASE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DUMMY = {
    "PN": "ANONYMOUS", "DA": "19000101", "TM": "000000", "DT": "19000101000000", "AS": "000D",
    "DS": "0", "IS": "0", "US": 0, "SS": 0, "UL": 0, "SL": 0, "UV": 0, "SV": 0, "FL": 0.0, "FD": 0.0,
}  # fmt: skip
_EMPTY_DUMMY_VRS = frozenset({"SQ", "OB", "OW", "OD", "OF", "OL", "OV", "UN", "UR", "AT"})
_MAX_DATE_OFFSET_DAYS = 36525


def resolve_action(attribute: ProfileAttribute, options: Iterable[str] = ()) -> str:
    """The action workbench takes for a row of Table E.1-1 under the given retain options.

    Parameters
    ----------
    attribute : ProfileAttribute
    options : iterable of str
        Names from :data:`PROFILE_OPTIONS`.

    Returns
    -------
    str
        ``"X"`` remove, ``"Z"`` empty, ``"D"`` dummy value, ``"U"`` replace UIDs, ``"U*"`` keep
        the sequence of references with only the UIDs (replaced) and numbers of its items,
        ``"K"`` keep, ``"S"`` shift the date by the case's offset.
    """
    options = frozenset(options)
    if RETAIN_PATIENT_CHARACTERISTICS in options and attribute.retain_patient_characteristics == "K":
        return "K"
    if RETAIN_LONG_MODIFIED_DATES in options and attribute.retain_long_modified_dates == "C":
        if attribute.vr in ("DA", "DT"):
            return "S"
        if attribute.vr == "TM":
            return "K"
    return _BASIC_CHOICE.get(attribute.basic_profile, attribute.basic_profile)


def _tag_key(tag: BaseTag) -> str:
    return f"{tag.group:04X},{tag.element:04X}"


def _table_row(tag: BaseTag) -> ProfileAttribute | None:
    row = PROFILE_ATTRIBUTES.get(_tag_key(tag))
    if row is None and 0x6000 <= tag.group <= 0x60FF:
        row = PROFILE_ATTRIBUTES.get(f"60XX,{tag.element:04X}")
    return row


@dataclass(frozen=True)
class AnonymizationReport:
    """What :func:`anonymize_folder` did.

    Attributes
    ----------
    case_id : str
        Pseudonym written into PatientName and PatientID.
    files_written : tuple of pathlib.Path
        Output files, ``IM00001.dcm``... in ``out_dir``.
    files_skipped : tuple of pathlib.Path
        Input files not copied: not DICOM, or a DICOMDIR (which indexes the original names).
    uid_map_size : int
        Number of distinct input UIDs replaced.
    options : tuple of str
        Retain options applied (names of :data:`PROFILE_OPTIONS`), sorted.
    """

    case_id: str
    files_written: tuple[Path, ...]
    files_skipped: tuple[Path, ...]
    uid_map_size: int
    options: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """JSON-ready summary. Counts only: input file names can carry identifiers."""
        return {
            "case_id": self.case_id,
            "files_written": len(self.files_written),
            "files_skipped": len(self.files_skipped),
            "uids_replaced": self.uid_map_size,
            "profile": f"DICOM PS3.15 {PROFILE_STANDARD_VERSION} Basic Application Level Confidentiality Profile",
            "options": list(self.options),
        }


class _Deidentifier:
    """Applies the profile to data sets, remembering which UIDs it replaced."""

    def __init__(self, key: bytes, case_id: str, options: frozenset[str], date_offset_days: int):
        self._key = key
        self.case_id = case_id
        self.options = options
        self.date_offset = _dt.timedelta(days=date_offset_days)
        self.replaced_uids: set[str] = set()
        self._actions: dict[str, str] = {tag: resolve_action(row, options) for tag, row in PROFILE_ATTRIBUTES.items()}

    def new_uid(self, uid: str) -> str:
        """``2.25.<128-bit integer>`` from HMAC-SHA-256(salt, uid): stable, unlinkable without the salt."""
        self.replaced_uids.add(uid)
        digest = hmac.new(self._key, b"uid:" + uid.encode("utf-8", "replace"), hashlib.sha256).digest()
        return f"2.25.{int.from_bytes(digest[:16], 'big')}"

    def apply(self, dataset: Dataset) -> None:
        """De-identify ``dataset`` in place and mark it (top level)."""
        transfer_syntax = str(dataset.file_meta.get("TransferSyntaxUID", ""))
        self._clean(dataset)
        dataset.PatientName = self.case_id
        dataset.PatientID = self.case_id
        dataset.PatientIdentityRemoved = "YES"
        dataset.DeidentificationMethod = [f"PS3.15 E.1 Basic Profile (DICOM {PROFILE_STANDARD_VERSION})"] + [
            PROFILE_OPTIONS[name][1] for name in sorted(self.options)
        ]
        codes = []
        for value, meaning in [("113100", "Basic Application Confidentiality Profile")] + [
            PROFILE_OPTIONS[name] for name in sorted(self.options)
        ]:
            code = Dataset()
            code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, "DCM", meaning
            codes.append(code)
        dataset.DeidentificationMethodCodeSequence = codes
        dataset.LongitudinalTemporalInformationModified = (
            "MODIFIED" if RETAIN_LONG_MODIFIED_DATES in self.options else "REMOVED"
        )
        dataset.file_meta = self._file_meta(dataset, transfer_syntax)
        dataset.preamble = bytes(128)  # the original preamble may hold anything (e.g. a TIFF header)

    def _clean(self, dataset: Dataset) -> None:
        creators = {
            (element.tag.group, element.tag.element): str(element.value or "").strip()
            for element in dataset
            if element.tag.is_private and 0x10 <= element.tag.element <= 0xFF
        }
        for element in list(dataset):
            tag = element.tag
            if tag.is_private:
                if not self._safe_private(element, creators):
                    del dataset[tag]
                continue
            if tag.group in (0x0000, 0x0002) or 0x5000 <= tag.group <= 0x50FF or 0x6000 <= tag.group <= 0x60FF:
                del dataset[tag]  # command and file meta elements have no place in a data set; curves; overlays
                continue
            row = _table_row(tag)
            action = self._actions[row.tag] if row is not None else self._default_action(element)
            self._act(dataset, element, action)
        for group, block in creators:  # a private creator stays only with a kept element of its block
            if (group << 16 | block) in dataset and not any(
                e.tag.group == group and e.tag.element >> 8 == block for e in dataset if e.tag.element > 0xFF
            ):
                del dataset[group << 16 | block]

    def _default_action(self, element: DataElement) -> str:
        """Rule 3: an attribute the table leaves out."""
        vr = element.VR
        if vr == "SQ":
            return "R"
        if vr == "UI":
            keyword = keyword_for_tag(element.tag)
            kept = keyword.endswith("ClassUID") or keyword in _KEPT_UID_KEYWORDS
            return "K" if kept and _all_valid_uids(element.value) else "U"
        if vr == "PN":
            return "Z"
        if vr in _DATE_TIME_VRS:
            if RETAIN_LONG_MODIFIED_DATES in self.options:
                return "K" if vr == "TM" else "S"
            return "X"
        return "K"

    def _act(self, dataset: Dataset, element: DataElement, action: str) -> None:
        vr = element.VR
        if action == "K":
            if vr == "TM" and not _all_match(element.value, _TIME_RE):
                del dataset[element.tag]  # a retained time must be a time, nothing else
            return
        if action == "X":
            del dataset[element.tag]
        elif action == "Z":
            element.value = [] if vr == "SQ" else None
        elif action == "D":
            if vr == "UI":
                self._act(dataset, element, "U")
            elif vr == "SQ":
                element.value = []
            elif vr in _EMPTY_DUMMY_VRS:
                element.value = None if vr in ("UR", "AT") else b""
            else:
                element.value = _DUMMY.get(vr, "ANONYMIZED")
        elif action == "U":
            if vr == "SQ":
                self._act(dataset, element, "R")
            elif vr == "UI" and element.value:
                values = list(element.value) if isinstance(element.value, MultiValue) else [element.value]
                new = [self.new_uid(str(uid)) for uid in values]
                element.value = new if isinstance(element.value, MultiValue) else new[0]
            elif vr != "UI":
                del dataset[element.tag]  # a UID attribute read with another VR (UN): nothing to replace
        elif action in ("U*", "R"):
            if vr != "SQ":
                del dataset[element.tag]
                return
            for item in element.value:
                if action == "U*":  # a sequence of references: only its UIDs and numbers (frame, segment) stay
                    for inner in list(item):
                        if inner.VR != "UI" and inner.VR not in _REFERENCE_NUMBER_VRS:
                            del item[inner.tag]
                self._clean(item)
        elif action == "S":
            shifted = self._shift(element) if vr in ("DA", "DT") else None
            if shifted is None:
                del dataset[element.tag]
            else:
                element.value = shifted
        else:  # pragma: no cover - the table holds only the actions above
            raise DicomError(f"unknown profile action {action!r} for {element.tag}")

    def _shift(self, element: DataElement) -> str | list[str] | None:
        """The DA/DT value moved by the case's offset in days; None if any value is not a full date."""
        values = list(element.value) if isinstance(element.value, MultiValue) else [element.value]
        shifted = []
        for value in values:
            text = str(value or "").strip()
            if not text:
                shifted.append("")
                continue
            rest = text[8:]
            if element.VR == "DA" and rest or element.VR == "DT" and not _DT_REST_RE.match(rest):
                return None
            try:
                day = _dt.date(int(text[0:4]), int(text[4:6]), int(text[6:8])) if text[:8].isdigit() else None
            except ValueError:
                day = None
            if day is None:
                return None
            try:
                shifted.append((day + self.date_offset).strftime("%Y%m%d") + rest)
            except OverflowError:
                return None
        return shifted if isinstance(element.value, MultiValue) else shifted[0]

    def _safe_private(self, element: DataElement, creators: dict[tuple[int, int], str]) -> bool:
        if RETAIN_SAFE_PRIVATE not in self.options:
            return False
        tag = element.tag
        safe_creators = {creator for creator, group, _ in SAFE_PRIVATE_ATTRIBUTES if group == tag.group}
        if 0x10 <= tag.element <= 0xFF:
            return creators.get((tag.group, tag.element)) in safe_creators
        creator = creators.get((tag.group, tag.element >> 8))
        if (creator, tag.group, tag.element & 0xFF) not in SAFE_PRIVATE_ATTRIBUTES or element.VR not in _NUMERIC_VRS:
            return False
        if element.VR in ("DS", "IS"):
            return _all_match(element.value, _NUMBER_RE)
        return True

    @staticmethod
    def _file_meta(dataset: Dataset, transfer_syntax: str) -> FileMetaDataset:
        """A fresh file meta header: nothing from the original but the (checked) transfer syntax."""
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = dataset.SOPClassUID
        meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        meta.TransferSyntaxUID = transfer_syntax
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = f"PYDICOM {pydicom.__version__}"[:16]
        return meta


def _values(value) -> list:
    return list(value) if isinstance(value, MultiValue) else [value]


def _all_match(value, pattern: re.Pattern) -> bool:
    return all(pattern.match(str(v or "").strip()) or not str(v or "").strip() for v in _values(value))


def _all_valid_uids(value) -> bool:
    return all(isinstance(v, str) and len(v) <= 64 and _UID_RE.match(v) for v in _values(value))


def anonymize_folder(
    in_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    case_id: str | None = None,
    salt: str | bytes | None = None,
    options: Iterable[str] = (),
    date_offset_days: int | None = None,
) -> AnonymizationReport:
    """Write a de-identified copy of every DICOM file under ``in_dir`` into ``out_dir``.

    Every input header is checked before anything is written. Each output file is written
    atomically, named ``IM00001.dcm``, ``IM00002.dcm``... (never from an input value), all in
    ``out_dir`` itself.

    Parameters
    ----------
    in_dir : str or path-like
        Folder searched recursively; must hold one patient's files.
    out_dir : str or path-like
        Created if needed; must be neither ``in_dir`` nor inside it.
    case_id : str, optional
        Pseudonym for PatientName/PatientID (letters, digits, ``.``, ``_``, ``-``; at most
        64). Default: ``case-`` and 12 hex digits of a keyed hash of the PatientID.
    salt : str or bytes, optional
        Key of the UID, case id and date offset hashes. The same salt gives the same output
        UIDs on every run; keep it secret, or anyone holding it can test a guessed UID.
        Default: a random key, so runs cannot be linked.
    options : iterable of str
        Retain options, names of :data:`PROFILE_OPTIONS` (default: none, the Basic Profile only).
    date_offset_days : int, optional
        With :data:`RETAIN_LONG_MODIFIED_DATES`: days added to every date (negative moves them
        back; at most 100 years either way). Default: between -4017 and -366 days, from a keyed
        hash of the PatientID (the same for every file of the case; the same across runs only
        with the same salt). Keep it secret: it turns the shifted dates back into real ones.

    Returns
    -------
    AnonymizationReport

    Raises
    ------
    DicomError
        ``in_dir`` missing, ``out_dir`` inside it, an invalid ``case_id``, an unknown option,
        an invalid date offset, a corrupt DICOM file (named), a file without SOPInstanceUID,
        SOPClassUID or a well-formed transfer syntax UID, two files with one SOPInstanceUID,
        files from more than one patient, or no DICOM file at all.
    """
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    chosen = frozenset(options)
    unknown = sorted(chosen - set(PROFILE_OPTIONS))
    if unknown:
        raise DicomError(f"unknown de-identification option {unknown[0]!r}; known: {', '.join(PROFILE_OPTIONS)}", in_dir)
    if date_offset_days is not None and (
        not isinstance(date_offset_days, int) or isinstance(date_offset_days, bool) or abs(date_offset_days) > _MAX_DATE_OFFSET_DAYS
    ):
        raise DicomError(f"date offset {date_offset_days!r} is not a whole number of days within ±{_MAX_DATE_OFFSET_DAYS}", in_dir)
    _check_folders(in_dir, out_dir)
    headers, skipped, patient_ids = _classify(in_dir)
    key = salt.encode("utf-8") if isinstance(salt, str) else (salt or secrets.token_bytes(32))
    if case_id is None:
        case_id = "case-" + hmac.new(key, b"case:" + patient_ids[0].encode(), hashlib.sha256).hexdigest()[:12]
    elif not _CASE_ID_RE.match(case_id):
        raise DicomError(f"invalid case id {case_id!r}: use 1-64 letters, digits, '.', '_' or '-'")
    if date_offset_days is None:
        digest = hmac.new(key, b"date-offset:" + patient_ids[0].encode(), hashlib.sha256).digest()
        date_offset_days = -(366 + int.from_bytes(digest[:4], "big") % 3652)
    deidentifier = _Deidentifier(key, case_id, chosen, date_offset_days)
    order = sorted(headers, key=lambda h: (deidentifier.new_uid(h[1]), h[2], deidentifier.new_uid(h[3])))
    deidentifier.replaced_uids.clear()
    written: list[Path] = []
    for number, (path, _, _, _) in enumerate(order, start=1):
        dataset = read_dicom_file(path)
        target = out_dir / f"IM{number:05d}.dcm"
        try:  # pydicom decodes elements lazily: a corrupt one fails here, as one of these
            deidentifier.apply(dataset)
            with atomic_open(target, "wb") as fh:
                dataset.save_as(fh, enforce_file_format=True)
        except DicomError:
            raise
        except Exception as exc:  # noqa: BLE001 - pydicom raises many types (BytesLengthException, NotImplementedError...) on a corrupt element
            problem = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
            raise DicomError(f"cannot de-identify: a corrupt element ({problem})", path) from None
        written.append(target)
    return AnonymizationReport(case_id, tuple(written), tuple(skipped), len(deidentifier.replaced_uids), tuple(sorted(chosen)))


def _check_folders(in_dir: Path, out_dir: Path) -> None:
    if not in_dir.is_dir():
        raise DicomError("input folder not found", in_dir)
    source, target = in_dir.resolve(), out_dir.resolve()
    if target == source or source in target.parents:
        raise DicomError(f"output folder {out_dir} must not be the input folder or inside it", in_dir)


def _classify(in_dir: Path) -> tuple[list[tuple[Path, str, int, str]], list[Path], list[str]]:
    """(path, SeriesInstanceUID, InstanceNumber, SOPInstanceUID) of each DICOM file, skipped files, PatientIDs.

    Reads every header once and checks what a written file needs.
    """
    headers, skipped, patient_ids, seen = [], [], set(), {}
    for path in sorted(p for p in in_dir.rglob("*") if p.is_file()):
        dataset = read_dicom_file(path, stop_before_pixels=True)
        if dataset is None:
            skipped.append(path)
            continue
        sop = str(dataset.get("SOPInstanceUID", "") or "")
        if not sop:
            raise DicomError("has no SOPInstanceUID", path)
        if sop in seen:
            raise DicomError(f"{path.name} and {seen[sop].name} have the same SOPInstanceUID", in_dir)
        seen[sop] = path
        if not _all_valid_uids(str(dataset.get("SOPClassUID", "") or "")):
            raise DicomError("has no well-formed SOPClassUID", path)
        if not _all_valid_uids(str(dataset.file_meta.get("TransferSyntaxUID", "") or "")):
            raise DicomError("has no well-formed TransferSyntaxUID in its file meta header", path)
        try:
            instance = int(str(dataset.get("InstanceNumber", "") or "0").strip() or 0)
        except ValueError:
            instance = 0
        headers.append((path, str(dataset.get("SeriesInstanceUID", "") or ""), instance, sop))
        patient_ids.add(str(dataset.get("PatientID", "")))
    if not headers:
        raise DicomError(f"no DICOM files found ({len(skipped)} other files)", in_dir)
    if len(patient_ids) > 1:
        raise DicomError(f"files of {len(patient_ids)} different patients (PatientID); anonymise one patient per case", in_dir)
    return headers, skipped, sorted(patient_ids)

