"""The patient-identifier guard of case bundles.

:func:`save_case` and :func:`load_case` (:mod:`workbench.case.storage`) refuse a
``case.json`` whose keys or text name a DICOM identifying attribute, so a bundle never holds
patient identifiers, and :func:`save_case` refuses a referenced DICOM file that is not
de-identified (:func:`check_dicom_deidentified`). The attributes are :data:`workbench.identifiers.IDENTIFYING_DICOM_ATTRIBUTES`,
the very list the anonymiser (:mod:`workbench.anonymize`) removes from DICOM files.
"""

from __future__ import annotations

import re
from pathlib import Path

from workbench.case.schema import json_nodes, json_path
from workbench.errors import CaseBundleError
from workbench.identifiers import IDENTIFYING_DICOM_ATTRIBUTES

__all__ = [
    "IDENTIFYING_DICOM_ATTRIBUTES",
    "check_dicom_deidentified",
    "check_no_identifiers",
    "dicom_files_under",
    "identifying_attribute",
]

_IDENTIFYING_BY_NORMALIZED = {keyword.lower(): keyword for keyword in IDENTIFYING_DICOM_ATTRIBUTES}
_IDENTIFYING_BY_TAG = {tag: keyword for keyword, tag in IDENTIFYING_DICOM_ATTRIBUTES.items()}
_WORD_RE = re.compile(r"[A-Za-z0-9]+(?:[_-]+[A-Za-z0-9]+)*")
_PART_RE = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_TAG_RE = re.compile(r"\(\s*([0-9A-Fa-f]{4})\s*,\s*([0-9A-Fa-f]{4})\s*\)")
#: Keywords that are one plain word (``Date``, ``Time``, ``UID``, ``Allergies``...): counted only as
#: a whole word spelled as the keyword, so ``run_time_s`` or "a long time" stay plain text.
_ONE_WORD_KEYWORDS = frozenset(k for k in IDENTIFYING_DICOM_ATTRIBUTES if len(_PART_RE.findall(k)) == 1)


def identifying_attribute(text: str) -> str | None:
    """The DICOM identifying attribute ``text`` names, if any.

    A keyword of :data:`IDENTIFYING_DICOM_ATTRIBUTES` counts in any letter case, alone or
    as a run of the parts of a longer word, parts being split at ``_``, ``-`` and changes of
    case (``patient_id``, ``patientid``, ``my_PatientID``, ``PatientNameToMri``), but not
    split by spaces (``"patient name withheld"`` is plain text) and not as a fragment of a
    part (``updated`` does not name ``Date``). A keyword that is one plain word (``Date``,
    ``Time``, ``UID``, ``Allergies``...) counts only as a whole word spelled exactly as the
    keyword. A tag counts as ``(gggg,eeee)``.

    Returns
    -------
    str or None
        The attribute's keyword (a key of ``IDENTIFYING_DICOM_ATTRIBUTES``), the longest one
        where several match, or None.
    """
    for word in _WORD_RE.findall(text):
        if word in _ONE_WORD_KEYWORDS:
            return word
        parts = [part.lower() for part in _PART_RE.findall(word)]
        best = None
        for start in range(len(parts)):
            for stop in range(len(parts), start, -1):
                keyword = _IDENTIFYING_BY_NORMALIZED.get("".join(parts[start:stop]))
                if keyword and keyword not in _ONE_WORD_KEYWORDS and (best is None or len(keyword) > len(best)):
                    best = keyword
                    break
        if best:
            return best
    for group, element in _TAG_RE.findall(text):
        keyword = _IDENTIFYING_BY_TAG.get(f"{group},{element}".upper())
        if keyword:
            return keyword
    return None


def check_no_identifiers(document: dict, case_json: Path | None) -> None:
    """Refuse a document with a key or string value that names a DICOM identifying attribute.

    Raises
    ------
    CaseBundleError
        Naming the JSON path and the attribute.
    """
    for parts, value in json_nodes(document):
        if parts and isinstance(parts[-1], str) and (keyword := identifying_attribute(parts[-1])):
            raise CaseBundleError(
                f"{json_path(parts)}: key names DICOM identifying attribute {keyword}; "
                "case bundles hold no patient identifiers",
                case_json,
            )
        if isinstance(value, str) and (keyword := identifying_attribute(value)):
            raise CaseBundleError(
                f"{json_path(parts)} mentions DICOM identifying attribute {keyword}; "
                "case bundles hold no patient identifiers",
                case_json,
            )


#: (file, mtime, size, case id) of DICOM files found de-identified: autosaves do not re-read them.
_DEIDENTIFIED_SEEN: set[tuple[str, int, int, str]] = set()


def dicom_files_under(path: Path) -> list[Path]:
    """The DICOM Part 10 files at ``path`` (a file or a folder searched recursively): ``DICM`` at byte 128."""
    candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    found = []
    for candidate in candidates:
        with open(candidate, "rb") as fh:
            if fh.read(132)[128:132] == b"DICM":
                found.append(candidate)
    return found


def check_dicom_deidentified(path: Path, case_id: str, label: str, case_json: Path | None) -> None:
    """Refuse a DICOM file, or a folder holding DICOM files, that may still identify a patient.

    A DICOM file may be part of a bundle only when it states that the patient's identity was
    removed (``PatientIdentityRemoved`` = ``YES``, as :func:`workbench.anonymize.anonymize_folder`
    writes) or when its PatientName and PatientID are both the case's own pseudonymous
    ``case_id`` (the synthetic series of the demo case). Any other DICOM file carries the
    PatientID, BirthDate and UIDs of a person.

    Parameters
    ----------
    path : Path
        A file or folder inside the case folder.
    case_id : str
        The case's pseudonymous id.
    label : str
        Where ``path`` is referenced, for the message (``"attachments[0]"``).
    case_json : Path or None
        The file named in the error.

    Raises
    ------
    CaseBundleError
        Naming the first such file (relative to ``path`` when it is a folder) and what to do.
    """
    import pydicom

    for member in dicom_files_under(path):
        stat = member.stat()
        key = (str(member.resolve()), stat.st_mtime_ns, stat.st_size, case_id)
        if key in _DEIDENTIFIED_SEEN:
            continue
        try:
            dataset = pydicom.dcmread(
                member, stop_before_pixels=True, specific_tags=["PatientName", "PatientID", "PatientIdentityRemoved"]
            )
        except Exception:  # noqa: BLE001 - pydicom raises many types on corrupt input; unreadable DICOM is refused too
            dataset = None
        removed = dataset is not None and str(dataset.get("PatientIdentityRemoved", "")).strip().upper() == "YES"
        pseudonymous = dataset is not None and all(
            str(dataset.get(keyword, "")).strip() == case_id for keyword in ("PatientName", "PatientID")
        )
        if not (removed or pseudonymous):
            where = member.name if member == path else member.relative_to(path).as_posix()
            raise CaseBundleError(
                f"{label}: DICOM file {where} is not de-identified (no PatientIdentityRemoved = YES and "
                "PatientName/PatientID are not the case id); de-identify it with `workbench anonymize` or make the "
                "case with `workbench new-case`",
                case_json,
            )
        _DEIDENTIFIED_SEEN.add(key)


#: Volume header keys SimpleITK reports that hold geometry or format facts, never free text.
_GEOMETRY_KEY_PREFIXES = ("ITK_", "NRRD_")
#: NIfTI-1 header fields that hold free text (the rest are numbers and codes).
_NIFTI_TEXT_FIELDS = ("descrip", "aux_file", "intent_name", "db_name")


def check_volume_header(path: Path, error_path: Path | None = None) -> None:
    """Refuse a volume file whose header carries text beyond voxels and geometry.

    A NIfTI ``descrip`` can hold the acquisition date and time, an NRRD ``key:=value`` or a MetaIO
    field can hold ``PatientName``. Bundles hold voxels and geometry only (what
    :func:`workbench.io.volume.save_volume` writes), so a header with a non-empty NIfTI text field,
    or an NRRD/MetaIO key that is not a format or geometry field, is refused. Only the header is
    read.

    Raises
    ------
    CaseBundleError
        Naming the file and the header field (not its value).
    """
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return  # not an image SimpleITK reads: the loaders report that themselves
    is_nifti = path.name.lower().endswith((".nii", ".nii.gz"))
    for key in reader.GetMetaDataKeys():
        value = reader.GetMetaData(key).strip()
        if is_nifti:
            problem = key in _NIFTI_TEXT_FIELDS and value
        else:
            problem = not key.startswith(_GEOMETRY_KEY_PREFIXES) and key != "Modality" and bool(value)
        if problem or identifying_attribute(key):
            raise CaseBundleError(
                f"the volume header has a text field {key!r}: case bundles hold voxels and geometry only; "
                "make the case with `workbench new-case` (it writes the MRI without header text)",
                error_path or path,
            )
