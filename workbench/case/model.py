"""The case data model: what a ``case.json`` holds, as frozen data classes, and their dict form.

Pure data: no files, no schema validation, no identifier checks (those are
:mod:`workbench.case.storage`, :mod:`workbench.case.schema` and
:mod:`workbench.case.identifiers`). Layers that only need the classes (registration, the
widgets' point lists) import them from here. Frames: ``docs/frames.md``.
"""

from __future__ import annotations

import dataclasses
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
    "Attachment",
    "Case",
    "FileRef",
    "Landmark",
    "MriRef",
    "SweepRef",
    "Target",
]

#: The ``schema_version`` that :meth:`Case.to_dict` writes and every in-memory case has.
CURRENT_SCHEMA_VERSION = 1


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

