"""Case bundles: a folder with ``case.json`` and the volumes and sweeps it references.

``case.json`` follows a versioned JSON Schema (draft 2020-12,
``workbench/schemas/case.schema.json``). Files are referenced by '/'-separated paths
relative to the case folder, each with its SHA-256. The schema forbids unknown keys
everywhere, and :func:`save_case` and :func:`load_case` also refuse any key or text that
names a DICOM identifying attribute, so a bundle never holds patient identifiers.
Older schema versions are migrated on load through :data:`MIGRATIONS`; a newer one is
refused. Layout, fields and rules: ``docs/case-bundle.md``; frames: ``docs/frames.md``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Callable, Iterator

import numpy as np
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from workbench import __version__
from workbench._atomic import atomic_open, atomic_write_text
from workbench.errors import CaseBundleError, FrameError
from workbench.frames import Transform

__all__ = [
    "CASE_FILE",
    "CURRENT_SCHEMA_VERSION",
    "FILE_KINDS",
    "IDENTIFYING_DICOM_ATTRIBUTES",
    "MIGRATIONS",
    "SCHEMA_FILES",
    "ATTACHMENT_ROLES",
    "Attachment",
    "Case",
    "FileRef",
    "Landmark",
    "MriRef",
    "SweepRef",
    "Target",
    "add_file",
    "describe_case",
    "file_sha256",
    "path_sha256",
    "load_case",
    "save_case",
]

CASE_FILE = "case.json"
CURRENT_SCHEMA_VERSION = 1
SCHEMA_FILES = {0: "case.schema.v0.json", 1: "case.schema.json"}
# kind of file -> sub-folder of the bundle it is copied into by add_file
FILE_KINDS = {"mri": "mri", "sweep": "sweeps", "device_set": "device_sets"}

# DICOM attributes that identify a patient, a visit or a site (PS3.15 basic profile subset):
# keyword -> tag. None of them, by keyword or tag, may appear in a case bundle.
IDENTIFYING_DICOM_ATTRIBUTES = {
    "PatientName": "0010,0010",
    "PatientID": "0010,0020",
    "IssuerOfPatientID": "0010,0021",
    "PatientBirthDate": "0010,0030",
    "PatientBirthTime": "0010,0032",
    "PatientSex": "0010,0040",
    "OtherPatientIDs": "0010,1000",
    "OtherPatientNames": "0010,1001",
    "PatientBirthName": "0010,1005",
    "PatientAge": "0010,1010",
    "PatientAddress": "0010,1040",
    "PatientMotherBirthName": "0010,1060",
    "MedicalRecordLocator": "0010,1090",
    "PatientTelephoneNumbers": "0010,2154",
    "InstitutionName": "0008,0080",
    "InstitutionAddress": "0008,0081",
    "InstitutionalDepartmentName": "0008,1040",
    "ReferringPhysicianName": "0008,0090",
    "PhysiciansOfRecord": "0008,1048",
    "PerformingPhysicianName": "0008,1050",
    "NameOfPhysiciansReadingStudy": "0008,1060",
    "OperatorsName": "0008,1070",
    "AccessionNumber": "0008,0050",
    "StationName": "0008,1010",
    "DeviceSerialNumber": "0018,1000",
    "StudyID": "0020,0010",
    "StudyDate": "0008,0020",
    "StudyTime": "0008,0030",
    "StudyInstanceUID": "0020,000D",
    "SeriesInstanceUID": "0020,000E",
    "SOPInstanceUID": "0008,0018",
}
_IDENTIFYING_BY_NORMALIZED = {keyword.lower(): keyword for keyword in IDENTIFYING_DICOM_ATTRIBUTES}
_IDENTIFYING_RE = re.compile("|".join(sorted(_IDENTIFYING_BY_NORMALIZED, key=len, reverse=True)))
_IDENTIFYING_BY_TAG = {tag: keyword for keyword, tag in IDENTIFYING_DICOM_ATTRIBUTES.items()}
_WORD_RE = re.compile(r"[A-Za-z0-9_-]+")
_TAG_RE = re.compile(r"\(\s*([0-9A-Fa-f]{4})\s*,\s*([0-9A-Fa-f]{4})\s*\)")

_COPY_CHUNK = 1 << 20


def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- model ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FileRef:
    """A file inside the bundle: '/'-separated ``path`` relative to the case folder and its ``sha256``."""

    path: str
    sha256: str


@dataclass(frozen=True)
class MriRef:
    """The planning MRI volume of the case.

    Attributes
    ----------
    path, sha256 : str
        Volume file inside the bundle (e.g. ``"mri/t2_sag.nii.gz"``) and its SHA-256.
    modality : str
        DICOM modality code, ``"MR"``.
    description : str
        Free text such as the series description (no identifiers).
    size_px : (3,) tuple of int or None
        Voxels along i, j, k.
    spacing_mm : (3,) tuple of float or None
        Voxel size along i, j, k.
    """

    path: str
    sha256: str
    modality: str = "MR"
    description: str = ""
    size_px: tuple[int, int, int] | None = None
    spacing_mm: tuple[float, float, float] | None = None


@dataclass(frozen=True)
class SweepRef:
    """A tracked ultrasound sweep (PLUS sequence file) and the calibration used with it.

    Attributes
    ----------
    path, sha256 : str
        Sequence file inside the bundle and its SHA-256.
    image_to_probe : Transform
        ``ImageToProbe`` calibration, pixels to mm (see docs/frames.md).
    calibration_error_mm : float or None
        The calibration's error as reported by PLUS (``Error`` attribute).
    device_set : FileRef or None
        The PLUS device-set XML the calibration came from, if it is in the bundle.
    """

    path: str
    sha256: str
    image_to_probe: Transform
    calibration_error_mm: float | None = None
    device_set: FileRef | None = None


@dataclass(frozen=True)
class Landmark:
    """A named point in the ``Mri`` (LPS) or ``Reference`` frame, mm.

    Landmarks of the two frames that mark the same anatomical point share a ``pair``
    label; paired-point registration uses those pairs. See docs/frames.md.
    """

    name: str
    frame: str
    point_mm: tuple[float, float, float]
    pair: str | None = None


@dataclass(frozen=True)
class Target:
    """A planned injection target: ``point_lps_mm`` in the ``Mri`` frame (LPS, mm)."""

    name: str
    structure: str
    point_lps_mm: tuple[float, float, float]


#: What an attachment is for (``Attachment.role``).
ATTACHMENT_ROLES = ("label_map", "ground_truth", "mri_dicom", "preview", "plan", "report", "other")


@dataclass(frozen=True)
class Attachment:
    """Any other file (or folder) of the bundle: label map, ground truth, previews, a DICOM series.

    Attributes
    ----------
    role : str
        One of :data:`ATTACHMENT_ROLES`.
    path, sha256 : str
        Relative path and digest (:func:`path_sha256`: the file's SHA-256, or for a folder the
        SHA-256 of its manifest of relative names and file digests).
    description : str
        Free text, no identifiers.
    """

    role: str
    path: str
    sha256: str
    description: str = ""


@dataclass
class Case:
    """A planning case as stored in ``case.json``.

    Attributes
    ----------
    case_id : str
        Pseudonymous identifier, ``^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$``.
    title, notes : str
        Free text, without patient identifiers.
    created_utc, modified_utc : str
        ISO 8601 UTC times of the bundle (``2024-05-01T09:30:00Z``), not DICOM dates.
        :func:`save_case` sets ``modified_utc``.
    mri : MriRef or None
    sweeps : list of SweepRef
    landmarks : list of Landmark
    targets : list of Target
    transforms : dict of str to Transform
        Keyed by ``FromToTo`` name, e.g. ``"ReferenceToMri"``.
    attachments : list of Attachment
        Label maps, ground truth, previews, DICOM series folders.
    software : str
        Version of workbench that saved the case.
    schema_version : int
        Always :data:`CURRENT_SCHEMA_VERSION` in memory (older files are migrated on load).

    Transforms compare by identity, so compare cases with :meth:`to_dict`.
    """

    case_id: str
    title: str = ""
    created_utc: str = field(default_factory=_utc_now)
    modified_utc: str = field(default_factory=_utc_now)
    mri: MriRef | None = None
    sweeps: list[SweepRef] = field(default_factory=list)
    landmarks: list[Landmark] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    transforms: dict[str, Transform] = field(default_factory=dict)
    attachments: list[Attachment] = field(default_factory=list)
    notes: str = ""
    software: str = __version__
    schema_version: int = CURRENT_SCHEMA_VERSION

    def to_dict(self) -> dict:
        """The ``case.json`` document (not yet validated; :func:`save_case` validates it).

        Raises
        ------
        CaseBundleError
            If a point is not numeric or a transform is not a :class:`Transform` of the
            name it is stored under.
        """
        document: dict[str, Any] = {
            "schema_version": self.schema_version,
            "case_id": self.case_id,
            "title": self.title,
            "created_utc": self.created_utc,
            "modified_utc": self.modified_utc,
            "software": self.software,
        }
        if self.mri is not None:
            document["mri"] = _mri_to_dict(self.mri)
        document["sweeps"] = [_sweep_to_dict(sweep, i) for i, sweep in enumerate(self.sweeps)]
        document["landmarks"] = [_landmark_to_dict(landmark, i) for i, landmark in enumerate(self.landmarks)]
        document["targets"] = [_target_to_dict(target, i) for i, target in enumerate(self.targets)]
        document["transforms"] = {
            name: _matrix_list(transform, name, f"transforms.{name}") for name, transform in self.transforms.items()
        }
        document["attachments"] = [dataclasses.asdict(a) for a in self.attachments]
        document["notes"] = self.notes
        return document

    @classmethod
    def from_dict(cls, document: dict, path: Path | None = None) -> "Case":
        """Build from a schema-valid current-version document (as :func:`load_case` does).

        Raises
        ------
        CaseBundleError
            If a matrix is not a valid transform (singular, last row not ``0 0 0 1``).
        """
        mri = document.get("mri")
        return cls(
            case_id=document["case_id"],
            title=document.get("title", ""),
            created_utc=document["created_utc"],
            modified_utc=document["modified_utc"],
            mri=None if mri is None else _mri_from_dict(mri),
            sweeps=[_sweep_from_dict(sweep, i, path) for i, sweep in enumerate(document["sweeps"])],
            landmarks=[_landmark_from_dict(landmark) for landmark in document["landmarks"]],
            targets=[Target(t["name"], t["structure"], _point(t["point_lps_mm"])) for t in document["targets"]],
            transforms={
                name: _transform_from_list(name, values, f"transforms.{name}", path)
                for name, values in document["transforms"].items()
            },
            attachments=[Attachment(**a) for a in document.get("attachments", [])],
            notes=document.get("notes", ""),
            software=document["software"],
            schema_version=document["schema_version"],
        )


# -- serialisation helpers ---------------------------------------------------------------


def _numbers(values, what: str) -> list[float]:
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        raise CaseBundleError(f"{what} must be numbers, got {values!r}") from None


def _matrix_list(transform: Transform, name: str, what: str) -> list[float]:
    if not isinstance(transform, Transform) or transform.name != name:
        raise CaseBundleError(f"{what} must be a Transform named {name}, got {transform!r}")
    return transform.to_list()


def _transform_from_list(name: str, values: list[float], what: str, path: Path | None) -> Transform:
    try:
        return Transform.from_name(name, np.reshape(values, (4, 4)))
    except FrameError as exc:
        raise CaseBundleError(f"{what}: {exc.problem}", path) from None


def _point(values: list[float]) -> tuple[float, float, float]:
    x, y, z = (float(v) for v in values)
    return x, y, z


def _mri_to_dict(mri: MriRef) -> dict:
    document: dict[str, Any] = {
        "path": mri.path,
        "sha256": mri.sha256,
        "modality": mri.modality,
        "description": mri.description,
    }
    if mri.size_px is not None:
        document["size_px"] = list(mri.size_px)
    if mri.spacing_mm is not None:
        document["spacing_mm"] = _numbers(mri.spacing_mm, "mri.spacing_mm")
    return document


def _mri_from_dict(document: dict) -> MriRef:
    size_px = document.get("size_px")
    spacing_mm = document.get("spacing_mm")
    return MriRef(
        path=document["path"],
        sha256=document["sha256"],
        modality=document["modality"],
        description=document.get("description", ""),
        size_px=None if size_px is None else tuple(int(n) for n in size_px),
        spacing_mm=None if spacing_mm is None else _point(spacing_mm),
    )


def _sweep_to_dict(sweep: SweepRef, index: int) -> dict:
    document: dict[str, Any] = {
        "path": sweep.path,
        "sha256": sweep.sha256,
        "image_to_probe": _matrix_list(sweep.image_to_probe, "ImageToProbe", f"sweeps[{index}].image_to_probe"),
    }
    if sweep.calibration_error_mm is not None:
        document["calibration_error_mm"] = sweep.calibration_error_mm
    if sweep.device_set is not None:
        document["device_set"] = {"path": sweep.device_set.path, "sha256": sweep.device_set.sha256}
    return document


def _sweep_from_dict(document: dict, index: int, path: Path | None) -> SweepRef:
    device_set = document.get("device_set")
    return SweepRef(
        path=document["path"],
        sha256=document["sha256"],
        image_to_probe=_transform_from_list(
            "ImageToProbe", document["image_to_probe"], f"sweeps[{index}].image_to_probe", path
        ),
        calibration_error_mm=document.get("calibration_error_mm"),
        device_set=None if device_set is None else FileRef(device_set["path"], device_set["sha256"]),
    )


def _landmark_to_dict(landmark: Landmark, index: int) -> dict:
    document = {
        "name": landmark.name,
        "frame": landmark.frame,
        "point_mm": _numbers(landmark.point_mm, f"landmarks[{index}].point_mm"),
    }
    if landmark.pair is not None:
        document["pair"] = landmark.pair
    return document


def _landmark_from_dict(document: dict) -> Landmark:
    return Landmark(document["name"], document["frame"], _point(document["point_mm"]), document.get("pair"))


def _target_to_dict(target: Target, index: int) -> dict:
    return {
        "name": target.name,
        "structure": target.structure,
        "point_lps_mm": _numbers(target.point_lps_mm, f"targets[{index}].point_lps_mm"),
    }


# -- schema versions and migration -------------------------------------------------------


def _migrate_0_to_1(document: dict) -> dict:
    """Version 0 -> 1.

    Landmarks were an object ``name -> [x, y, z]`` of MRI points; they become a list of
    ``Mri`` landmarks in the same order. ``reference_to_mri`` moves into ``transforms``
    as ``"ReferenceToMri"``. ``targets`` is new (empty); the MRI gains ``modality`` ``"MR"``.
    """
    migrated = {key: value for key, value in document.items() if key not in ("landmarks", "reference_to_mri")}
    migrated["schema_version"] = 1
    if "mri" in document:
        migrated["mri"] = {**document["mri"], "modality": "MR"}
    migrated["landmarks"] = [
        {"name": name, "frame": "Mri", "point_mm": point} for name, point in document["landmarks"].items()
    ]
    migrated["targets"] = []
    migrated["transforms"] = {"ReferenceToMri": document["reference_to_mri"]} if "reference_to_mri" in document else {}
    return migrated


# version N -> function turning a valid version-N document into a version-(N+1) document
MIGRATIONS: dict[int, Callable[[dict], dict]] = {0: _migrate_0_to_1}


def _migrate(document: dict, version: int) -> dict:
    while version < CURRENT_SCHEMA_VERSION:
        document = MIGRATIONS[version](document)
        version += 1
    return document


@functools.cache
def _validator(version: int) -> Draft202012Validator:
    text = resources.files("workbench").joinpath("schemas", SCHEMA_FILES[version]).read_text(encoding="utf-8")
    return Draft202012Validator(json.loads(text))


def _json_path(parts) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


# -- validation --------------------------------------------------------------------------


def _nodes(value, parts: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """Every value in a JSON document with its path, depth first."""
    yield parts, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _nodes(item, (*parts, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nodes(item, (*parts, index))


def _check_finite(document: dict, case_json: Path) -> None:
    for parts, value in _nodes(document):
        if isinstance(value, float) and not math.isfinite(value):
            raise CaseBundleError(f"{_json_path(parts)} is {value}; numbers in case.json must be finite", case_json)


def _check_schema(document: dict, version: int, case_json: Path) -> None:
    error = best_match(_validator(version).iter_errors(document))
    if error is not None:
        raise CaseBundleError(
            f"case.json does not match schema version {version} at {_json_path(error.absolute_path)}: {error.message}",
            case_json,
        )


def _identifying_attribute(text: str) -> str | None:
    """The DICOM identifying attribute ``text`` names, if any.

    A keyword counts in any letter case, with ``_`` or ``-`` between its parts and inside
    a longer word (``patient_id``, ``PatientNameToMri``), but not split by spaces
    (``"patient name withheld"`` is plain text). A tag counts as ``(gggg,eeee)``.
    """
    for word in _WORD_RE.findall(text):
        match = _IDENTIFYING_RE.search(word.replace("_", "").replace("-", "").lower())
        if match:
            return _IDENTIFYING_BY_NORMALIZED[match.group()]
    for group, element in _TAG_RE.findall(text):
        keyword = _IDENTIFYING_BY_TAG.get(f"{group},{element}".upper())
        if keyword:
            return keyword
    return None


def _check_no_identifiers(document: dict, case_json: Path | None) -> None:
    for parts, value in _nodes(document):
        if parts and isinstance(parts[-1], str) and (keyword := _identifying_attribute(parts[-1])):
            raise CaseBundleError(
                f"{_json_path(parts)}: key names DICOM identifying attribute {keyword}; "
                "case bundles hold no patient identifiers",
                case_json,
            )
        if isinstance(value, str) and (keyword := _identifying_attribute(value)):
            raise CaseBundleError(
                f"{_json_path(parts)} mentions DICOM identifying attribute {keyword}; "
                "case bundles hold no patient identifiers",
                case_json,
            )


def _check_timestamps(document: dict, case_json: Path) -> None:
    for key in ("created_utc", "modified_utc"):
        try:
            datetime.fromisoformat(document[key])
        except ValueError:
            raise CaseBundleError(f"{key} {document[key]!r} is not a valid date and time", case_json) from None


def _check_unique_names(document: dict, case_json: Path) -> None:
    seen: set[tuple[str, str, str]] = set()
    for index, landmark in enumerate(document["landmarks"]):
        for label in ("name", "pair"):
            if label not in landmark:
                continue
            key = (label, landmark["frame"], landmark[label])
            if key in seen:
                raise CaseBundleError(
                    f"landmarks[{index}]: another {landmark['frame']} landmark has {label} {landmark[label]!r}",
                    case_json,
                )
            seen.add(key)
    names = [target["name"] for target in document["targets"]]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise CaseBundleError(f"targets[{index}]: another target is named {name!r}", case_json)


def _check_document(document: dict, case_json: Path) -> Case:
    """Validate a current-version document completely and build the :class:`Case`."""
    _check_finite(document, case_json)
    _check_schema(document, CURRENT_SCHEMA_VERSION, case_json)
    _check_no_identifiers(document, case_json)
    _check_timestamps(document, case_json)
    _check_unique_names(document, case_json)
    return Case.from_dict(document, case_json)


def _file_refs(case: Case) -> Iterator[tuple[str, str, str, bool]]:
    """(label, relative path, sha256, folder allowed) of everything the case references."""
    if case.mri is not None:
        yield "mri", case.mri.path, case.mri.sha256, False
    for index, sweep in enumerate(case.sweeps):
        yield f"sweeps[{index}]", sweep.path, sweep.sha256, False
        if sweep.device_set is not None:
            yield f"sweeps[{index}].device_set", sweep.device_set.path, sweep.device_set.sha256, False
    for index, attachment in enumerate(case.attachments):
        yield f"attachments[{index}]", attachment.path, attachment.sha256, True


def _resolve_inside(root: Path, relative: str, label: str, case_json: Path) -> Path:
    """The file ``relative`` names inside the (resolved) case folder ``root``, refusing escapes."""
    where = f"{label}.path {relative!r}"
    if "\\" in relative:
        raise CaseBundleError(f"{where} contains '\\'; paths in case.json use '/'", case_json)
    posix = PurePosixPath(relative)
    if posix.is_absolute() or PureWindowsPath(relative).drive:
        raise CaseBundleError(f"{where} is absolute; paths in case.json are relative to the case folder", case_json)
    if ".." in posix.parts:
        raise CaseBundleError(f"{where} contains '..'; files must stay inside the case folder", case_json)
    target = (root / posix).resolve()
    if not target.is_relative_to(root):
        raise CaseBundleError(f"{where} leads outside the case folder through a symbolic link", case_json)
    return target


def _check_files(case: Case, folder: Path, case_json: Path, verify_digests: bool) -> None:
    root = folder.resolve()
    for label, relative, sha256, folder_allowed in _file_refs(case):
        target = _resolve_inside(root, relative, label, case_json)
        if not (target.is_file() or (folder_allowed and target.is_dir())):
            kind = "a file or folder" if folder_allowed else "a file"
            raise CaseBundleError(f"{label}.path {relative!r} is not {kind} in the case folder", case_json)
        if verify_digests:
            actual = path_sha256(target)
            if actual != sha256:
                raise CaseBundleError(
                    f"{label}.path {relative!r} has SHA-256 {actual[:16]}..., case.json records "
                    f"{sha256[:16]}...: the file changed after it was added",
                    case_json,
                )


# -- reading ----------------------------------------------------------------------------


def _read_document(folder: Path) -> tuple[dict, Path]:
    if not folder.is_dir():
        raise CaseBundleError("case folder not found", folder)
    case_json = folder / CASE_FILE
    if not case_json.is_file():
        raise CaseBundleError(f"no {CASE_FILE} in the case folder", folder)
    try:
        document = json.loads(case_json.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise CaseBundleError("case.json is not UTF-8 text", case_json) from None
    except json.JSONDecodeError as exc:
        raise CaseBundleError(
            f"case.json is not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", case_json
        ) from None
    except OSError as exc:
        raise CaseBundleError(f"cannot read case.json ({exc.strerror or exc})", case_json) from None
    if not isinstance(document, dict):
        raise CaseBundleError("case.json must hold a JSON object", case_json)
    return document, case_json


def _schema_version(document: dict, case_json: Path) -> int:
    version = document.get("schema_version")
    if type(version) is not int:
        raise CaseBundleError(f"case.json has no integer schema_version (got {version!r})", case_json)
    if version > CURRENT_SCHEMA_VERSION:
        raise CaseBundleError(
            f"case.json is schema version {version}, this workbench reads up to {CURRENT_SCHEMA_VERSION}; "
            "upgrade workbench",
            case_json,
        )
    if version not in SCHEMA_FILES:
        raise CaseBundleError(f"case.json has unknown schema_version {version}", case_json)
    return version


def _load(folder: Path, verify_digests: bool) -> tuple[Case, int]:
    """The case and the schema version of its file (before migration)."""
    document, case_json = _read_document(folder)
    version = _schema_version(document, case_json)
    if version < CURRENT_SCHEMA_VERSION:
        _check_finite(document, case_json)
        _check_schema(document, version, case_json)
        document = _migrate(document, version)
    case = _check_document(document, case_json)
    _check_files(case, folder, case_json, verify_digests)
    return case, version


def load_case(folder: str | Path, verify_digests: bool = True) -> Case:
    """Load the case in ``folder``, migrating an older ``case.json`` to the current version.

    Parameters
    ----------
    folder : str or Path
        The case folder (holding ``case.json``).
    verify_digests : bool
        Recompute the SHA-256 of every referenced file and refuse a mismatch (default).
        ``False`` only checks that the files exist, which is faster for large volumes.

    Returns
    -------
    Case
        With ``schema_version`` = :data:`CURRENT_SCHEMA_VERSION`.

    Raises
    ------
    CaseBundleError
        Missing folder or case.json, invalid JSON, NaN or infinity, a schema violation
        (the message names the JSON path), identifying DICOM attributes, a path that is
        absolute, contains ``..`` or leaves the folder through a symbolic link, a missing
        file, a digest mismatch, or a schema version newer than this workbench.
    """
    case, _ = _load(Path(folder), verify_digests)
    return case


def describe_case(folder: str | Path) -> dict:
    """Describe a case folder for ``workbench info`` (``kind`` = ``"case"``); JSON-ready.

    Loads the case with digest verification; ``schema_version`` is that of the file.
    """
    folder = Path(folder)
    case, version = _load(folder, verify_digests=True)
    mri = case.mri
    return {
        "kind": "case",
        "path": str(folder),
        "case_id": case.case_id,
        "title": case.title,
        "schema_version": version,
        "created_utc": case.created_utc,
        "modified_utc": case.modified_utc,
        "software": case.software,
        "mri": None
        if mri is None
        else {
            "path": mri.path,
            "modality": mri.modality,
            "description": mri.description,
            "size_px": None if mri.size_px is None else list(mri.size_px),
            "spacing_mm": None if mri.spacing_mm is None else list(mri.spacing_mm),
        },
        "sweeps": {"count": len(case.sweeps), "paths": [sweep.path for sweep in case.sweeps]},
        "landmarks": len(case.landmarks),
        "targets": len(case.targets),
        "transforms": sorted(case.transforms),
        "attachments": {role: sum(a.role == role for a in case.attachments) for role in sorted({a.role for a in case.attachments})},
    }


# -- writing ----------------------------------------------------------------------------


def save_case(case: Case, folder: str | Path) -> Case:
    """Validate ``case`` and write ``folder/case.json`` atomically.

    The document is checked completely (schema, finite numbers, no identifying DICOM
    attributes, safe relative paths to files that exist in ``folder``) before anything
    is written; the write goes to a temporary file that is fsynced and renamed over
    ``case.json``, so a crash leaves the previous ``case.json`` intact.

    Parameters
    ----------
    case : Case
    folder : str or Path
        The case folder; created if missing.

    Returns
    -------
    Case
        The case as saved: ``modified_utc`` now, ``software`` this workbench version,
        current ``schema_version``. ``case`` itself is not changed.

    Raises
    ------
    CaseBundleError
        If the case is invalid (nothing is written) or the file cannot be written.
    """
    folder = Path(folder)
    case_json = folder / CASE_FILE
    saved = dataclasses.replace(
        case, schema_version=CURRENT_SCHEMA_VERSION, modified_utc=_utc_now(), software=__version__
    )
    document = saved.to_dict()
    _check_document(document, case_json)
    _check_files(saved, folder, case_json, verify_digests=False)
    text = _json_text(document) + "\n"
    try:
        atomic_write_text(case_json, text)
    except OSError as exc:
        raise CaseBundleError(f"cannot write case.json ({exc.strerror or exc})", case_json) from exc
    return saved


def _json_text(value, depth: int = 0) -> str:
    """JSON indented by two spaces, with lists of numbers (points, matrices) kept on one line."""
    inner = "  " * (depth + 1)
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(key, ensure_ascii=False)}: {_json_text(item, depth + 1)}" for key, item in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + "  " * depth + "}"
    if isinstance(value, list) and any(isinstance(item, (dict, list, str)) for item in value):
        items = [inner + _json_text(item, depth + 1) for item in value]
        return "[\n" + ",\n".join(items) + "\n" + "  " * depth + "]"
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, lowercase hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_COPY_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def path_sha256(path: str | Path) -> str:
    """SHA-256 of a file, or of a folder's manifest.

    A folder's manifest lists every file below it as ``<relative posix path>\t<sha256>\n``
    in sorted order, so the digest changes when any file is added, removed, renamed or edited.
    """
    path = Path(path)
    if not path.is_dir():
        return file_sha256(path)
    manifest = hashlib.sha256()
    for member in sorted(p for p in path.rglob("*") if p.is_file()):
        manifest.update(f"{member.relative_to(path).as_posix()}\t{file_sha256(member)}\n".encode())
    return manifest.hexdigest()


def add_file(case_folder: str | Path, src_path: str | Path, kind: str) -> tuple[str, str]:
    """Copy a volume, sweep or device set into the bundle; return its relative path and SHA-256.

    The file goes to ``<kind folder>/<file name>`` (:data:`FILE_KINDS`), written
    atomically. Adding the same content again is a no-op; a different file of the same
    name is refused rather than overwritten.

    Parameters
    ----------
    case_folder : str or Path
    src_path : str or Path
        A single file. Detached-header formats (``.mhd``, ``.nhdr``) keep their pixels
        in a second file and are refused: save them as ``.mha``/``.nrrd``/``.nii.gz``.
    kind : {"mri", "sweep", "device_set"}

    Returns
    -------
    (str, str)
        The '/'-separated path relative to ``case_folder`` and the file's SHA-256,
        ready for :class:`MriRef`, :class:`SweepRef` or :class:`FileRef`.
    """
    folder, source = Path(case_folder), Path(src_path)
    if kind not in FILE_KINDS:
        raise CaseBundleError(f"unknown file kind {kind!r}; expected one of {', '.join(FILE_KINDS)}")
    if not source.is_file():
        raise CaseBundleError("no such file to add to the case", source)
    if source.name.lower().endswith((".mhd", ".nhdr")):
        raise CaseBundleError(
            "detached-header files keep their pixels in a second file; save as .mha, .nrrd or .nii.gz first", source
        )
    relative = f"{FILE_KINDS[kind]}/{source.name}"
    destination = folder / relative
    if destination.exists():
        digest = file_sha256(destination)
        if digest != file_sha256(source):
            raise CaseBundleError(f"{relative} already exists with other content; rename the file to add it", folder)
        return relative, digest
    try:
        return relative, _copy_atomically(source, destination)
    except OSError as exc:
        raise CaseBundleError(f"cannot copy into the case folder ({exc.strerror or exc})", destination) from exc


def _copy_atomically(source: Path, destination: Path) -> str:
    """Copy ``source`` to ``destination`` atomically; return the SHA-256 of the bytes copied."""
    digest = hashlib.sha256()
    with open(source, "rb") as src, atomic_open(destination, "wb") as dst:
        while chunk := src.read(_COPY_CHUNK):
            digest.update(chunk)
            dst.write(chunk)
    return digest.hexdigest()
