"""De-identify a folder of DICOM files (PS3.15 Annex E Basic Application Level Confidentiality Profile).

:func:`anonymize_folder` writes a de-identified copy of every DICOM file. For every data
element, in the data set and, recursively, in every sequence item:

1. private elements (odd groups) and curve (50xx) and overlay (60xx) groups are removed;
2. an element named in :data:`PROFILE_ACTIONS` gets its profile action: ``Z`` (kept, emptied)
   or ``X`` (removed). Where the table offers a choice (``X/Z``, ``Z/D``, ``X/Z/D``, ``X/D``)
   ``Z`` is taken when offered, else ``X``; the ``D`` (dummy value) alternative is never needed.
   An attribute of :data:`workbench.identifiers.IDENTIFYING_DICOM_ATTRIBUTES` (the list the
   case-bundle guard refuses) that the table leaves out and that is not a UID is removed (``X``);
3. otherwise by value representation, so that attributes the table leaves out are safe too:
   every UID (VR UI) is replaced by ``2.25.<integer>`` from a keyed hash (HMAC-SHA-256 with
   the salt) of the original -- the same input UID always gives the same output UID, so
   references between files stay consistent and a re-run with the same salt is identical --
   except SOP/transfer syntax class UIDs and well-known DICOM UIDs (``1.2.840.10008.*``);
   every remaining person name (PN) is emptied; every remaining date, date-time or time
   (DA, DT, TM) is removed.

Dates and times are therefore emptied (StudyDate, StudyTime, ContentDate...) or removed,
never shifted: workbench needs no absolute or relative acquisition time (slices are placed
by ImagePositionPatient), and removal leaks nothing. LongitudinalTemporalInformationModified
is set to ``REMOVED``.

PatientName and PatientID become the pseudonymous case id; PatientIdentityRemoved is
``YES``; DeidentificationMethod and its code sequence (DCM 113100) name the profile. The file
meta header is rebuilt (dropping e.g. the source AE title, which often names the scanner).
Pixel data and geometry tags (ImagePositionPatient, ImageOrientationPatient, PixelSpacing,
...) are untouched, so the volume's ``source_digest`` is unchanged.

Not done (options of the profile beyond the basic one): cleaning burned-in text in pixels,
keeping descriptors (SeriesDescription and ProtocolName are removed by the basic profile).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

import workbench
from workbench._atomic import atomic_open
from workbench.errors import DicomError
from workbench.identifiers import IDENTIFYING_DICOM_ATTRIBUTES
from workbench.io.dicom import read_dicom_file

__all__ = ["PROFILE_ACTIONS", "AnonymizationReport", "anonymize_folder"]

#: Actions of PS3.15 Table E.1-1 (Basic Profile column) for the attributes it names that are
#: not UIDs (UIDs are handled by rule 3 of the module docstring). ``X`` remove, ``Z`` empty,
#: ``D`` dummy value; ``A/B`` lets the de-identifier choose per IOD.
PROFILE_ACTIONS: dict[str, str] = {
    # patient
    "PatientName": "Z", "PatientID": "Z", "IssuerOfPatientID": "X", "PatientBirthDate": "Z",
    "PatientBirthTime": "X", "PatientSex": "Z", "PatientAge": "X", "PatientSize": "X", "PatientWeight": "X",
    "PatientAddress": "X", "PatientTelephoneNumbers": "X", "PatientMotherBirthName": "X", "OtherPatientIDs": "X",
    "OtherPatientIDsSequence": "X", "OtherPatientNames": "X", "PatientBirthName": "X", "MilitaryRank": "X",
    "BranchOfService": "X", "EthnicGroup": "X", "Occupation": "X", "AdditionalPatientHistory": "X",
    "PatientComments": "X", "MedicalRecordLocator": "X", "MedicalAlerts": "X", "Allergies": "X",
    "CountryOfResidence": "X", "RegionOfResidence": "X", "PregnancyStatus": "X", "SmokingStatus": "X",
    "PatientReligiousPreference": "X", "ResponsiblePerson": "X", "ResponsibleOrganization": "X",
    "PatientInsurancePlanCodeSequence": "X", "PatientState": "X", "SpecialNeeds": "X", "LastMenstrualDate": "X",
    "PatientSexNeutered": "X/Z", "PatientTransportArrangements": "X",
    # study and request
    "StudyDate": "Z", "StudyTime": "Z", "AccessionNumber": "Z", "StudyID": "Z", "StudyDescription": "X",
    "ReferringPhysicianName": "Z", "ReferringPhysicianAddress": "X", "ReferringPhysicianTelephoneNumbers": "X",
    "ReferringPhysicianIdentificationSequence": "X", "ConsultingPhysicianName": "X", "PhysiciansOfRecord": "X",
    "PhysiciansOfRecordIdentificationSequence": "X", "NameOfPhysiciansReadingStudy": "X",
    "PhysiciansReadingStudyIdentificationSequence": "X", "RequestingPhysician": "X", "RequestingService": "X",
    "AdmittingDiagnosesDescription": "X", "AdmissionID": "X", "IssuerOfAdmissionIDSequence": "X",
    "ReasonForStudy": "X", "RequestedProcedureDescription": "X", "RequestedProcedureID": "X",
    "RequestAttributesSequence": "X", "StudyComments": "X", "InterpretationAuthor": "X",
    "ReferencedPatientSequence": "X", "ReferencedStudySequence": "X/Z",
    # series, equipment, procedure step
    "SeriesDate": "X/D", "SeriesTime": "X/D", "AcquisitionDate": "X/Z", "AcquisitionTime": "X/Z",
    "AcquisitionDateTime": "X/D", "ContentDate": "Z/D", "ContentTime": "Z/D", "InstanceCreationDate": "X/D",
    "InstanceCreationTime": "X/Z/D", "OverlayDate": "X", "OverlayTime": "X", "CurveDate": "X", "CurveTime": "X",
    "TimezoneOffsetFromUTC": "X", "InstitutionName": "X/Z/D", "InstitutionAddress": "X",
    "InstitutionalDepartmentName": "X", "InstitutionCodeSequence": "X/Z/D", "StationName": "X/Z/D",
    "DeviceSerialNumber": "X/Z/D", "DetectorID": "X/Z/D", "GantryID": "X/Z/D", "PlateID": "X/Z/D",
    "CassetteID": "X/Z/D", "SoftwareVersions": "X/Z/D", "PerformingPhysicianName": "X",
    "PerformingPhysicianIdentificationSequence": "X", "OperatorsName": "X", "OperatorIdentificationSequence": "X",
    "SeriesDescription": "X", "ProtocolName": "X/D", "ContrastBolusAgent": "Z/D",
    "AcquisitionDeviceProcessingDescription": "X/D", "PerformedProcedureStepStartDate": "X",
    "PerformedProcedureStepStartTime": "X", "PerformedProcedureStepEndDate": "X",
    "PerformedProcedureStepEndTime": "X", "PerformedProcedureStepID": "X",
    "PerformedProcedureStepDescription": "X", "CommentsOnThePerformedProcedureStep": "X",
    "PerformedLocation": "X", "PerformedStationName": "X", "PerformedStationAETitle": "X",
    "ScheduledProcedureStepID": "X", "ScheduledProcedureStepDescription": "X",
    "ScheduledPerformingPhysicianName": "X", "ReferencedPerformedProcedureStepSequence": "X/Z/D",
    # free text and history
    "ImageComments": "X", "DerivationDescription": "X", "FrameComments": "X", "AcquisitionComments": "X",
    "TextString": "X", "ContentSequence": "X", "ModifiedAttributesSequence": "X",
    "OriginalAttributesSequence": "X",
}  # fmt: skip

#: UID attributes kept as they are: they name classes or coding schemes, not instances.
_KEPT_UID_KEYWORDS = frozenset({"TransferSyntaxUID", "CodingSchemeUID", "ContextUID", "MappingResourceUID"})
_WELL_KNOWN_UID_ROOT = "1.2.840.10008."
_DATE_TIME_VRS = frozenset({"DA", "DT", "TM"})
_CASE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DEID_METHOD = f"PS3.15 E.1 Basic Profile (workbench {workbench.__version__})"
_BASIC_PROFILE_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")


def _resolve_action(code: str) -> str:
    options = code.split("/")
    return "Z" if "Z" in options else "X"


def _action_by_tag() -> dict[int, str]:
    """Tag -> resolved action, ``"X"`` or ``"Z"``.

    :data:`PROFILE_ACTIONS`, plus ``"X"`` for every identifying attribute
    (:data:`IDENTIFYING_DICOM_ATTRIBUTES`) the table leaves out, UIDs excepted (rule 3 replaces
    them): every attribute the case-bundle guard refuses is removed, emptied or replaced here.
    """
    actions = {tag_for_keyword(kw): _resolve_action(code) for kw, code in PROFILE_ACTIONS.items()}
    for keyword in IDENTIFYING_DICOM_ATTRIBUTES:
        tag = tag_for_keyword(keyword)
        if tag not in actions and dictionary_VR(tag) != "UI":
            actions[tag] = "X"
    return actions


_ACTION_BY_TAG: dict[int, str] = _action_by_tag()


@dataclass(frozen=True)
class AnonymizationReport:
    """What :func:`anonymize_folder` did.

    Attributes
    ----------
    case_id : str
        Pseudonym written into PatientName and PatientID.
    files_written : tuple of pathlib.Path
        Output files, named ``<new SOPInstanceUID>.dcm``.
    files_skipped : tuple of pathlib.Path
        Input files not copied: not DICOM, or a DICOMDIR (which indexes the original names).
    uid_map_size : int
        Number of distinct input UIDs replaced.
    """

    case_id: str
    files_written: tuple[Path, ...]
    files_skipped: tuple[Path, ...]
    uid_map_size: int

    def to_dict(self) -> dict:
        """JSON-ready summary. Counts only: input file names can carry identifiers."""
        return {
            "case_id": self.case_id,
            "files_written": len(self.files_written),
            "files_skipped": len(self.files_skipped),
            "uids_replaced": self.uid_map_size,
        }


class _Deidentifier:
    """Applies the profile to data sets, remembering which UIDs it replaced."""

    def __init__(self, key: bytes, case_id: str):
        self._key = key
        self.case_id = case_id
        self.replaced_uids: set[str] = set()

    def new_uid(self, uid: str) -> str:
        """``2.25.<128-bit integer>`` from HMAC-SHA-256(salt, uid): stable, unlinkable without the salt."""
        self.replaced_uids.add(uid)
        digest = hmac.new(self._key, b"uid:" + uid.encode("ascii", "replace"), hashlib.sha256).digest()
        return f"2.25.{int.from_bytes(digest[:16], 'big')}"

    def apply(self, dataset: Dataset) -> None:
        """De-identify ``dataset`` in place and mark it (top level)."""
        self._clean(dataset)
        dataset.PatientName = self.case_id
        dataset.PatientID = self.case_id
        dataset.PatientIdentityRemoved = "YES"
        dataset.DeidentificationMethod = _DEID_METHOD
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = _BASIC_PROFILE_CODE
        dataset.DeidentificationMethodCodeSequence = [code]
        dataset.LongitudinalTemporalInformationModified = "REMOVED"
        dataset.file_meta = self._file_meta(dataset)
        dataset.preamble = bytes(128)  # the original preamble may hold anything (e.g. a TIFF header)

    def _clean(self, dataset: Dataset) -> None:
        for element in list(dataset):
            tag = element.tag
            action = _ACTION_BY_TAG.get(tag)
            if tag.is_private or _is_curve_or_overlay(tag) or action == "X":
                del dataset[tag]
            elif action == "Z":
                element.value = [] if element.VR == "SQ" else None
            elif element.VR == "SQ":
                for item in element.value:
                    self._clean(item)
            elif element.VR == "UI" and element.value:
                element.value = self._replace_uids(tag, element.value)
            elif element.VR == "PN":
                element.value = None
            elif element.VR in _DATE_TIME_VRS:
                del dataset[tag]

    def _replace_uids(self, tag: BaseTag, value: str | MultiValue) -> str | list[str]:
        keyword = keyword_for_tag(tag)
        if keyword.endswith("ClassUID") or keyword in _KEPT_UID_KEYWORDS:
            return value
        values = list(value) if isinstance(value, MultiValue) else [value]
        replaced = [uid if str(uid).startswith(_WELL_KNOWN_UID_ROOT) else self.new_uid(str(uid)) for uid in values]
        return replaced if isinstance(value, MultiValue) else replaced[0]

    @staticmethod
    def _file_meta(dataset: Dataset) -> FileMetaDataset:
        """A fresh file meta header: nothing from the original but the transfer syntax."""
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = dataset.SOPClassUID
        meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        meta.TransferSyntaxUID = dataset.file_meta.TransferSyntaxUID
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = f"PYDICOM {pydicom.__version__}"[:16]
        return meta


def anonymize_folder(
    in_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    case_id: str | None = None,
    salt: str | bytes | None = None,
) -> AnonymizationReport:
    """Write a de-identified copy of every DICOM file under ``in_dir`` into ``out_dir``.

    Every input header is checked before anything is written. Each output file is
    written atomically and named ``<new SOPInstanceUID>.dcm`` (original names and folder
    names can carry identifiers), all in ``out_dir`` itself.

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
        Key of the UID and case id hashes. The same salt gives the same output UIDs on
        every run; keep it secret, or anyone holding it can test a guessed UID. Default: a
        random key, so runs cannot be linked.

    Returns
    -------
    AnonymizationReport

    Raises
    ------
    DicomError
        ``in_dir`` missing, ``out_dir`` inside it, an invalid ``case_id``, a corrupt DICOM
        file (named), a file without SOPInstanceUID, two files with one SOPInstanceUID,
        files from more than one patient, or no DICOM file at all.
    """
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    _check_folders(in_dir, out_dir)
    dicom_files, skipped, patient_ids = _classify(in_dir)
    key = salt.encode("utf-8") if isinstance(salt, str) else (salt or secrets.token_bytes(32))
    if case_id is None:
        case_id = "case-" + hmac.new(key, b"case:" + patient_ids[0].encode(), hashlib.sha256).hexdigest()[:12]
    elif not _CASE_ID_RE.match(case_id):
        raise DicomError(f"invalid case id {case_id!r}: use 1-64 letters, digits, '.', '_' or '-'")
    deidentifier = _Deidentifier(key, case_id)
    written: dict[Path, Path] = {}
    for path in dicom_files:
        dataset = read_dicom_file(path)
        deidentifier.apply(dataset)
        target = out_dir / f"{dataset.SOPInstanceUID}.dcm"
        if target in written:
            raise DicomError(f"{path.name} and {written[target].name} have the same SOPInstanceUID", in_dir)
        with atomic_open(target, "wb") as fh:
            dataset.save_as(fh, enforce_file_format=True)
        written[target] = path
    return AnonymizationReport(case_id, tuple(written), tuple(skipped), len(deidentifier.replaced_uids))


def _check_folders(in_dir: Path, out_dir: Path) -> None:
    if not in_dir.is_dir():
        raise DicomError("input folder not found", in_dir)
    source, target = in_dir.resolve(), out_dir.resolve()
    if target == source or source in target.parents:
        raise DicomError(f"output folder {out_dir} must not be the input folder or inside it", in_dir)


def _classify(in_dir: Path) -> tuple[list[Path], list[Path], list[str]]:
    """DICOM files, skipped files and the distinct PatientIDs, reading every header once."""
    dicom_files, skipped, patient_ids = [], [], set()
    for path in sorted(p for p in in_dir.rglob("*") if p.is_file()):
        dataset = read_dicom_file(path, stop_before_pixels=True)
        if dataset is None:
            skipped.append(path)
            continue
        if not dataset.get("SOPInstanceUID"):
            raise DicomError("has no SOPInstanceUID", path)
        dicom_files.append(path)
        patient_ids.add(str(dataset.get("PatientID", "")))
    if not dicom_files:
        raise DicomError(f"no DICOM files found ({len(skipped)} other files)", in_dir)
    if len(patient_ids) > 1:
        raise DicomError(f"files of {len(patient_ids)} different patients (PatientID); anonymise one patient per case", in_dir)
    return dicom_files, skipped, sorted(patient_ids)


def _is_curve_or_overlay(tag: BaseTag) -> bool:
    return 0x5000 <= tag.group <= 0x50FF or 0x6000 <= tag.group <= 0x60FF
