"""The case data model: what a ``case.json`` holds, as frozen data classes, and their dict form.

Pure data: no files, no schema validation, no identifier checks (those are
:mod:`workbench.case.storage`, :mod:`workbench.case.schema` and
:mod:`workbench.case.identifiers`). Layers that only need the classes (registration, the
widgets' point lists) import them from here. Frames: ``docs/frames.md``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from workbench import __version__
from workbench.errors import CaseBundleError, FrameError
from workbench.frames import Transform

__all__ = [
    "ATTACHMENT_ROLES",
    "CURRENT_SCHEMA_VERSION",
    "MIN_LANDMARK_PAIRS",
    "Attachment",
    "Case",
    "FileRef",
    "Landmark",
    "MriRef",
    "REGISTRATION_ID_PATTERN",
    "SavedRegistration",
    "SweepRef",
    "Target",
    "new_registration_id",
    "undo_registration",
    "with_registration",
]

#: The ``schema_version`` that :meth:`Case.to_dict` writes and every in-memory case has.
CURRENT_SCHEMA_VERSION = 2

#: Paired-point registration needs at least this many landmark pairs (Mri and Reference): a rigid
#: transform in 3-D needs three non-collinear point pairs.
MIN_LANDMARK_PAIRS = 3


def utc_now() -> str:
    """The current UTC time as ISO 8601 to the second, ``2024-05-01T09:30:00Z``."""
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
        Relative path and digest (:func:`~workbench.case.storage.path_sha256`: the file's SHA-256, or for a folder the
        SHA-256 of its manifest of relative names and file digests).
    description : str
        Free text, no identifiers.
    """

    role: str
    path: str
    sha256: str
    description: str = ""


#: Pattern of a :attr:`SavedRegistration.registration_id` (like a case id).
REGISTRATION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


@dataclass(frozen=True, eq=False)
class SavedRegistration:
    """A registration accepted into the case: ``ReferenceToMri`` with how it was made and how good it is.

    Every accepted registration (the landmark fit or an automatic refinement) is kept in
    :attr:`Case.registrations`, oldest first; :attr:`Case.current_registration_id` says which one
    plans, exports and the 3D scene use. Build one from a registration result with
    :func:`workbench.registration.result.saved_registration`. Frames: docs/frames.md.

    Attributes
    ----------
    registration_id : str
        Unique within the case, :data:`REGISTRATION_ID_PATTERN` (default from
        :func:`new_registration_id`: ``reg-<UTC time>-<8 hex>``).
    method : str
        The pipeline steps, e.g. ``"landmarks"`` or ``"landmarks+bone-icp"``.
    reference_to_mri : Transform
        ``ReferenceToMri``: Reference (patient reference sensor, mm) to Mri (LPS, mm).
    created_utc : str
        When it was accepted, ISO 8601 UTC (``2024-05-01T09:30:00Z``).
    parameters : dict
        The method's parameters as plain JSON values.
    fre_mm : float or None
        Fiducial registration error of this ``ReferenceToMri`` on the case's paired landmarks
        (RMS distance, mm); None without landmark pairs.
    tre_mm : dict of str to float, or None
        Predicted target registration error per target name, mm (Fitzpatrick, from the landmark
        fit; ``provenance["tre_basis"]`` says which fit); None where not predicted.
    run_time_s : float or None
        Wall-clock time of the registration run, s.
    message : str
        The registration's one-line summary for the user.
    software : str
        ``"workbench <version>"`` that computed it.
    provenance : dict
        Inputs and steps (landmark names, stages with their ``ReferenceToMri``, ...), plain JSON.

    Numbers must be finite; ``parameters`` and ``provenance`` hold only JSON values (tuples
    become lists). Compare with :meth:`to_dict` (transforms compare by identity).
    """

    registration_id: str
    method: str
    reference_to_mri: Transform
    created_utc: str = field(default_factory=utc_now)
    parameters: dict = field(default_factory=dict)
    fre_mm: float | None = None
    tre_mm: dict[str, float] | None = None
    run_time_s: float | None = None
    message: str = ""
    software: str = f"workbench {__version__}"
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        what = f"registration {self.registration_id!r}"
        if not isinstance(self.registration_id, str) or not re.match(REGISTRATION_ID_PATTERN, self.registration_id):
            raise CaseBundleError(f"registration id {self.registration_id!r} must match {REGISTRATION_ID_PATTERN}")
        if not isinstance(self.reference_to_mri, Transform) or self.reference_to_mri.name != "ReferenceToMri":
            raise CaseBundleError(f"{what}: reference_to_mri must be a ReferenceToMri Transform, got {self.reference_to_mri!r}")
        if not np.isfinite(self.reference_to_mri.matrix).all():
            raise CaseBundleError(f"{what}: ReferenceToMri holds a non-finite number")
        for name in ("fre_mm", "run_time_s"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _length(value, f"{what}: {name}"))
        if self.tre_mm is not None:
            tre_mm = {str(target): _length(value, f"{what}: tre_mm[{target!r}]") for target, value in dict(self.tre_mm).items()}
            object.__setattr__(self, "tre_mm", tre_mm)
        object.__setattr__(self, "parameters", _json_value(dict(self.parameters), f"{what}: parameters"))
        object.__setattr__(self, "provenance", _json_value(dict(self.provenance), f"{what}: provenance"))

    def to_dict(self) -> dict:
        """The ``case.json`` entry (``registrations[i]``)."""
        return {
            "registration_id": self.registration_id,
            "method": self.method,
            "reference_to_mri": self.reference_to_mri.to_list(),
            "created_utc": self.created_utc,
            "parameters": self.parameters,
            "fre_mm": self.fre_mm,
            "tre_mm": None if self.tre_mm is None else dict(self.tre_mm),
            "run_time_s": self.run_time_s,
            "message": self.message,
            "software": self.software,
            "provenance": self.provenance,
        }

    @classmethod
    def from_dict(cls, document: dict, what: str = "registration", path: Path | None = None) -> "SavedRegistration":
        """Build from a schema-valid ``registrations[i]`` entry.

        Raises
        ------
        CaseBundleError
            If the matrix is not a valid transform (singular, last row not ``0 0 0 1``).
        """
        return cls(
            registration_id=document["registration_id"],
            method=document["method"],
            reference_to_mri=_transform_from_list("ReferenceToMri", document["reference_to_mri"], f"{what}.reference_to_mri", path),
            created_utc=document["created_utc"],
            parameters=document.get("parameters", {}),
            fre_mm=document.get("fre_mm"),
            tre_mm=document.get("tre_mm"),
            run_time_s=document.get("run_time_s"),
            message=document.get("message", ""),
            software=document["software"],
            provenance=document.get("provenance", {}),
        )


def new_registration_id(created_utc: str | None = None) -> str:
    """A fresh registration id, ``reg-<YYYYMMDDThhmmss>-<8 random hex>`` (unique in practice, no patient data)."""
    import secrets

    stamp = re.sub(r"[^0-9T]", "", (created_utc or utc_now()).split(".")[0])
    return f"reg-{stamp}-{secrets.token_hex(4)}"


def _length(value, what: str) -> float:
    """A finite, non-negative number as float."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise CaseBundleError(f"{what} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise CaseBundleError(f"{what} must be a finite number >= 0, got {value}")
    return value


def _json_value(value, what: str):
    """``value`` as plain JSON (dicts with string keys, lists, str, finite numbers, bool, None)."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(float(value)):
            raise CaseBundleError(f"{what} is {float(value)}; numbers in case.json must be finite")
        return float(value)
    if isinstance(value, dict):
        return {str(key): _json_value(item, f"{what}.{key}") for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_value(item, f"{what}[{index}]") for index, item in enumerate(value)]
    raise CaseBundleError(f"{what} is a {type(value).__name__}, not a JSON value")


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
        :func:`~workbench.case.storage.save_case` sets ``modified_utc``.
    mri : MriRef or None
    sweeps : list of SweepRef
    landmarks : list of Landmark
    targets : list of Target
    transforms : dict of str to Transform
        Keyed by ``FromToTo`` name, e.g. ``"ReferenceToMri"``.
    attachments : list of Attachment
        Label maps, ground truth, previews, DICOM series folders.
    registrations : list of SavedRegistration
        Every accepted registration, oldest first; never shortened (undo only moves
        :attr:`current_registration_id`). See :func:`with_registration`, :func:`undo_registration`.
    current_registration_id : str or None
        The registration that plans, exports and the 3D scene use (:attr:`current_registration`);
        None when none is current (none accepted yet, or undone past the first).
    software : str
        Version of workbench that saved the case.
    schema_version : int
        Always :data:`CURRENT_SCHEMA_VERSION` in memory (older files are migrated on load).

    Transforms compare by identity, so compare cases with :meth:`to_dict`.
    """

    case_id: str
    title: str = ""
    created_utc: str = field(default_factory=utc_now)
    modified_utc: str = field(default_factory=utc_now)
    mri: MriRef | None = None
    sweeps: list[SweepRef] = field(default_factory=list)
    landmarks: list[Landmark] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    transforms: dict[str, Transform] = field(default_factory=dict)
    attachments: list[Attachment] = field(default_factory=list)
    notes: str = ""
    software: str = __version__
    schema_version: int = CURRENT_SCHEMA_VERSION
    registrations: list[SavedRegistration] = field(default_factory=list)
    current_registration_id: str | None = None

    @property
    def current_registration(self) -> SavedRegistration | None:
        """The registration in use (:attr:`current_registration_id`), or None.

        Raises
        ------
        CaseBundleError
            If the id names no registration of :attr:`registrations`.
        """
        if self.current_registration_id is None:
            return None
        found = next((r for r in self.registrations if r.registration_id == self.current_registration_id), None)
        if found is None:
            raise CaseBundleError(f"current_registration_id {self.current_registration_id!r} names no saved registration")
        return found

    def to_dict(self) -> dict:
        """The ``case.json`` document (not yet validated; :func:`~workbench.case.storage.save_case` validates it).

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
        document["registrations"] = [_registration_to_dict(r, i) for i, r in enumerate(self.registrations)]
        document["current_registration_id"] = self.current_registration_id
        document["notes"] = self.notes
        return document

    @classmethod
    def from_dict(cls, document: dict, path: Path | None = None) -> "Case":
        """Build from a schema-valid current-version document (as :func:`~workbench.case.storage.load_case` does).

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
            registrations=[
                SavedRegistration.from_dict(r, f"registrations[{i}]", path) for i, r in enumerate(document.get("registrations", []))
            ],
            current_registration_id=document.get("current_registration_id"),
        )


# -- registration history -----------------------------------------------------------------


def with_registration(case: Case, saved: SavedRegistration) -> Case:
    """``case`` with ``saved`` appended to its registrations and made current (``case`` is not changed).

    Raises
    ------
    CaseBundleError
        ``saved`` is not a :class:`SavedRegistration`, or its id is already in the history.
    """
    if not isinstance(saved, SavedRegistration):
        raise CaseBundleError(f"with_registration needs a SavedRegistration, got {type(saved).__name__}")
    if any(r.registration_id == saved.registration_id for r in case.registrations):
        raise CaseBundleError(f"registration id {saved.registration_id!r} is already in the case's history")
    return dataclasses.replace(case, registrations=[*case.registrations, saved], current_registration_id=saved.registration_id)


def undo_registration(case: Case) -> Case:
    """``case`` with the registration before the current one in the history made current.

    The history is never shortened: the undone registration stays in
    :attr:`Case.registrations`. Undoing the first one leaves no registration current.
    ``case`` is not changed.

    Raises
    ------
    CaseBundleError
        Nothing to undo: no registration is current.
    """
    current = case.current_registration
    if current is None:
        if case.registrations:
            raise CaseBundleError(
                f"no registration to undo: none of the {len(case.registrations)} saved registrations is current"
            )
        raise CaseBundleError("no registration to undo: none has been accepted")
    index = next(i for i, r in enumerate(case.registrations) if r is current)
    previous = None if index == 0 else case.registrations[index - 1].registration_id
    return dataclasses.replace(case, current_registration_id=previous)


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



def _registration_to_dict(saved: SavedRegistration, index: int) -> dict:
    if not isinstance(saved, SavedRegistration):
        raise CaseBundleError(f"registrations[{index}] must be a SavedRegistration, got {type(saved).__name__}")
    return saved.to_dict()
