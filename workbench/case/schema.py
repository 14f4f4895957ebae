"""The ``case.json`` document: JSON Schema validation, schema versions and their migrations.

Every version's schema (draft 2020-12) is package data in ``workbench/schemas/``
(:data:`SCHEMA_FILES`). A document of an older version is validated against its own schema
and then migrated, one version at a time, through :data:`MIGRATIONS`; a newer one is
refused. Error messages name the JSON path (``landmarks[2].point_mm``). Layout, versions and
migrations: ``docs/case-bundle.md``.
"""

from __future__ import annotations

import functools
import json
import math
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from workbench.case.model import CURRENT_SCHEMA_VERSION
from workbench.errors import CaseBundleError
from workbench.validation import check_affine, check_coordinates_mm, check_int_range, check_spacing_mm

#: no MRI has more voxels along one axis (a 0.1 mm, 1 m scan would have 10,000)
_MAX_VOXELS_PER_AXIS = 100_000

__all__ = [
    "CURRENT_SCHEMA_VERSION",
    "MIGRATIONS",
    "SCHEMA_FILES",
    "check_finite",
    "check_schema",
    "check_timestamps",
    "check_unique_names",
    "json_nodes",
    "json_path",
    "migrate",
    "schema_version",
]

#: schema version -> its JSON Schema file in ``workbench/schemas/``.
SCHEMA_FILES = {0: "case.schema.v0.json", 1: "case.schema.v1.json", 2: "case.schema.json"}


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


def _migrate_1_to_2(document: dict) -> dict:
    """Version 1 -> 2.

    Registrations become part of the case: ``registrations`` is new (empty: a version-1 file
    recorded none) and ``current_registration_id`` is null. ``transforms`` is kept as it was
    (a ``ReferenceToMri`` there is not a recorded registration: it has no method or errors).
    """
    return {**document, "schema_version": 2, "registrations": [], "current_registration_id": None}


# version N -> function turning a valid version-N document into a version-(N+1) document
MIGRATIONS: dict[int, Callable[[dict], dict]] = {0: _migrate_0_to_1, 1: _migrate_1_to_2}


def migrate(document: dict, version: int) -> dict:
    """Migrate a valid version-``version`` document to :data:`CURRENT_SCHEMA_VERSION`."""
    while version < CURRENT_SCHEMA_VERSION:
        document = MIGRATIONS[version](document)
        version += 1
    return document


def schema_version(document: dict, case_json: Path) -> int:
    """The ``schema_version`` of a document, refusing a missing, unknown or newer one."""
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


@functools.cache
def _validator(version: int) -> Draft202012Validator:
    text = resources.files("workbench").joinpath("schemas", SCHEMA_FILES[version]).read_text(encoding="utf-8")
    return Draft202012Validator(json.loads(text))


# -- document walking --------------------------------------------------------------------


def json_path(parts) -> str:
    """``landmarks[2].point_mm`` from the keys and indices ``("landmarks", 2, "point_mm")``."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def json_nodes(value, parts: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """Every value in a JSON document with its path, depth first."""
    yield parts, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from json_nodes(item, (*parts, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from json_nodes(item, (*parts, index))


# -- validation --------------------------------------------------------------------------


def check_finite(document: dict, case_json: Path) -> None:
    """Refuse NaN and infinity anywhere in the document."""
    for parts, value in json_nodes(document):
        if isinstance(value, float) and not math.isfinite(value):
            raise CaseBundleError(f"{json_path(parts)} is {value}; numbers in case.json must be finite", case_json)


def check_schema(document: dict, version: int, case_json: Path) -> None:
    """Validate against the JSON Schema of ``version``; the error names the JSON path."""
    error = best_match(_validator(version).iter_errors(document))
    if error is not None:
        raise CaseBundleError(
            f"case.json does not match schema version {version} at {json_path(error.absolute_path)}: {error.message}",
            case_json,
        )


def check_physical(document: dict, case_json: Path) -> None:
    """Refuse values the schema allows but no scanner, tracker or plan produces (:mod:`workbench.validation`).

    Points within 10 m; transforms finite with last row 0 0 0 1, translation within 10 m and
    an invertible linear part (``image_to_probe`` scales pixels to mm); registrations rigid
    (rotation orthonormal to 1e-4); MRI spacing 1e-3..100 mm and sizes that fit in memory.
    Run after :func:`check_schema`, so the shapes are right; the message names the JSON path.
    """
    mri = document.get("mri")
    if isinstance(mri, dict):
        if mri.get("spacing_mm") is not None:
            check_spacing_mm(mri["spacing_mm"], "mri.spacing_mm", case_json, CaseBundleError)
        for axis, size in enumerate(mri.get("size_px") or []):
            check_int_range(size, 1, _MAX_VOXELS_PER_AXIS, f"mri.size_px[{axis}]", case_json, CaseBundleError)
    for index, sweep in enumerate(document.get("sweeps") or []):
        check_affine(sweep.get("image_to_probe"), f"sweeps[{index}].image_to_probe", case_json, CaseBundleError)
    for index, landmark in enumerate(document.get("landmarks") or []):
        check_coordinates_mm(landmark.get("point_mm"), f"landmarks[{index}].point_mm", case_json, CaseBundleError)
    for index, target in enumerate(document.get("targets") or []):
        check_coordinates_mm(target.get("point_lps_mm"), f"targets[{index}].point_lps_mm", case_json, CaseBundleError)
    for name, matrix in (document.get("transforms") or {}).items():
        check_affine(matrix, f"transforms.{name}", case_json, CaseBundleError, rigid=_is_rigid(name))
    for index, registration in enumerate(document.get("registrations") or []):
        check_affine(
            registration.get("reference_to_mri"), f"registrations[{index}].reference_to_mri", case_json, CaseBundleError,
            rigid=True,
        )  # fmt: skip


def _is_rigid(name: str) -> bool:
    """True for a transform between two mm frames (no ``Image``/``Pixel`` frame, which carries a scale)."""
    return "Image" not in name and "Pixel" not in name


def check_timestamps(document: dict, case_json: Path) -> None:
    """Refuse ``created_utc``/``modified_utc`` that match the schema's pattern but are not real times."""
    for key in ("created_utc", "modified_utc"):
        try:
            datetime.fromisoformat(document[key])
        except ValueError:
            raise CaseBundleError(f"{key} {document[key]!r} is not a valid date and time", case_json) from None


def check_unique_names(document: dict, case_json: Path) -> None:
    """Refuse two landmarks of one frame with the same name or pair label, two targets of one name,
    two registrations of one id, or a ``current_registration_id`` that names no registration."""
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
    ids = [registration["registration_id"] for registration in document.get("registrations", [])]
    for index, registration_id in enumerate(ids):
        if registration_id in ids[:index]:
            raise CaseBundleError(f"registrations[{index}]: another registration has id {registration_id!r}", case_json)
    current = document.get("current_registration_id")
    if current is not None and current not in ids:
        raise CaseBundleError(f"current_registration_id {current!r} names no entry of registrations", case_json)
