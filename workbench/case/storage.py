"""Case bundle storage: the case folder on disk, ``case.json`` and the files it references.

A case bundle is a folder with ``case.json`` and the volumes, sweeps and attachments it
references by '/'-separated paths relative to the folder, each with its SHA-256
(:func:`path_sha256`). :func:`load_case` and :func:`save_case` validate the document
completely: schema and versions (:mod:`workbench.case.schema`, older versions migrated on
load, a newer one refused), finite numbers, unique names, and no key or text naming a DICOM
identifying attribute (:mod:`workbench.case.identifiers`), so a bundle never holds patient
identifiers. Saves are atomic. Layout, fields and rules: ``docs/case-bundle.md``; frames:
``docs/frames.md``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Iterator

from workbench import __version__
from workbench._atomic import atomic_open, atomic_write_text, remove_stale_temporaries
from workbench.case.identifiers import check_dicom_deidentified, check_no_identifiers, check_volume_header, dicom_files_under
from workbench.case.model import CURRENT_SCHEMA_VERSION, Case, utc_now
from workbench.case.schema import (
    check_finite,
    check_physical,
    check_schema,
    check_timestamps,
    check_unique_names,
    migrate,
    schema_version,
)
from workbench.errors import CaseBundleError
from workbench.io.json_io import read_json_limited
from workbench.io.paths import contained, detached_data_file, regular_files_below, require_regular_file

__all__ = [
    "CASE_FILE",
    "FILE_KINDS",
    "HeaderOnlyDigestWarning",
    "add_file",
    "describe_case",
    "file_sha256",
    "load_case",
    "path_sha256",
    "save_case",
]

CASE_FILE = "case.json"
# kind of file -> sub-folder of the bundle it is copied into by add_file
FILE_KINDS = {"mri": "mri", "sweep": "sweeps", "device_set": "device_sets"}

_COPY_CHUNK = 1 << 20


class HeaderOnlyDigestWarning(UserWarning):
    """A volume or sweep header with a detached data file whose recorded digest covers the header only.

    Bundles written before digests covered detached data files recorded the header's SHA-256
    alone. Such a bundle still loads (nothing is rewritten behind the user's back), with this
    warning naming the data file that is not verified; adding the file again records a full
    digest.
    """


# -- validation --------------------------------------------------------------------------


def _check_document(document: dict, case_json: Path) -> Case:
    """Validate a current-version document completely and build the :class:`Case`."""
    check_finite(document, case_json)
    check_schema(document, CURRENT_SCHEMA_VERSION, case_json)
    check_no_identifiers(document, case_json)
    check_timestamps(document, case_json)
    check_unique_names(document, case_json)
    case = Case.from_dict(document, case_json)
    check_physical(document, case_json)  # after from_dict, whose messages name a malformed matrix first
    return case


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


def _resolve_inside(folder: Path, relative: str, label: str, case_json: Path, folder_allowed: bool = False) -> Path:
    """The file ``relative`` names inside the case folder, by the one containment rule.

    The case.json wording for '\\', drive letters, absolute paths and '..' first, then
    :func:`workbench.io.paths.contained`: no component below the case folder may be a symbolic
    link, and an existing target must be a regular file (or a real folder where allowed).
    A missing target is left to the caller.
    """
    where = f"{label}.path {relative!r}"
    if "\\" in relative:
        raise CaseBundleError(f"{where} contains '\\'; paths in case.json use '/'", case_json)
    posix = PurePosixPath(relative)
    if posix.is_absolute() or PureWindowsPath(relative).drive:
        raise CaseBundleError(f"{where} is absolute; paths in case.json are relative to the case folder", case_json)
    if ".." in posix.parts:
        raise CaseBundleError(f"{where} contains '..'; files must stay inside the case folder", case_json)
    return contained(
        folder, relative, error=CaseBundleError, label=where, error_path=case_json,
        allow_folder=folder_allowed, must_exist=False,
    )  # fmt: skip


def _check_files(case: Case, folder: Path, case_json: Path, verify_digests: bool, check_dicom: bool = False) -> None:
    for label, relative, sha256, folder_allowed in _file_refs(case):
        where = f"{label}.path {relative!r}"
        target = _resolve_inside(folder, relative, label, case_json, folder_allowed)
        if not (target.is_file() or (folder_allowed and target.is_dir())):
            kind = "a file or folder" if folder_allowed else "a file"
            raise CaseBundleError(f"{where} is not {kind} in the case folder", case_json)
        # links and FIFOs below a folder, and a header's data file outside its folder, are
        # refused on every load, digests verified or not
        if target.is_dir():
            regular_files_below(target, error=CaseBundleError, label=where, error_path=case_json)
        else:
            detached_data_file(target, CaseBundleError)
        if check_dicom:
            check_dicom_deidentified(target, case.case_id, where, case_json)
        if verify_digests:
            _verify_digest(target, sha256, where, case_json)


def _verify_digest(target: Path, recorded: str, where: str, case_json: Path) -> None:
    """Refuse a file whose digest differs from ``recorded``; accept a header-only digest with a warning."""
    actual = path_sha256(target)
    if actual == recorded:
        return
    data_file = None if target.is_dir() else detached_data_file(target, CaseBundleError)
    if data_file is not None and file_sha256(target) == recorded:
        warnings.warn(
            HeaderOnlyDigestWarning(
                f"{case_json}: {where} records the SHA-256 of its header only; its data file "
                f"{data_file.name} is not verified (add the file again to record a digest of both)"
            ),
            stacklevel=5,
        )
        return
    raise CaseBundleError(
        f"{where} has SHA-256 {actual[:16]}..., case.json records "
        f"{recorded[:16]}...: the file changed after it was added",
        case_json,
    )


# -- reading ----------------------------------------------------------------------------


def _read_document(folder: Path) -> tuple[dict, Path]:
    if not folder.is_dir():
        raise CaseBundleError("case folder not found", folder)
    case_json = folder / CASE_FILE
    if not (case_json.exists() or case_json.is_symlink()):
        raise CaseBundleError(f"no {CASE_FILE} in the case folder", folder)
    case_json = contained(folder, CASE_FILE, error=CaseBundleError, label=CASE_FILE, error_path=case_json)
    document = read_json_limited(case_json, error=CaseBundleError, what="case.json", keep_non_finite=True)
    if not isinstance(document, dict):
        raise CaseBundleError("case.json must hold a JSON object", case_json)
    return document, case_json


def _load(folder: Path, verify_digests: bool) -> tuple[Case, int]:
    """The case and the schema version of its file (before migration)."""
    document, case_json = _read_document(folder)
    version = schema_version(document, case_json)
    if version < CURRENT_SCHEMA_VERSION:
        check_finite(document, case_json)
        check_schema(document, version, case_json)
        document = migrate(document, version)
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
        absolute, contains ``..`` or passes through a symbolic link below the folder, a
        referenced file that is missing or not a regular file (FIFO, device, socket), a link
        or such a file below a referenced folder, a volume or sweep header whose detached data
        file is not a bare file name beside it, a digest mismatch, or a schema version newer
        than this workbench.

    Warns
    -----
    HeaderOnlyDigestWarning
        A header with a detached data file whose recorded digest covers the header only
        (written before digests covered data files); it loads, the data file unverified.
    """
    case, _ = _load(Path(folder), verify_digests)
    remove_stale_temporaries(Path(folder) / CASE_FILE)  # of a save that was interrupted
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
    attributes, safe relative paths to files that exist in ``folder``, no referenced DICOM
    file that is not de-identified) before anything is written; the write goes to a temporary file that is fsynced and renamed over
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
        case, schema_version=CURRENT_SCHEMA_VERSION, modified_utc=utc_now(), software=__version__
    )
    document = saved.to_dict()
    _check_document(document, case_json)
    _check_files(saved, folder, case_json, verify_digests=False, check_dicom=True)
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
    """SHA-256 of a file, of a header and its detached data file, or of a folder's manifest.

    A folder's manifest lists every file below it as ``<relative posix path>\t<sha256>\n``
    in sorted order, so the digest changes when any file is added, removed, renamed or edited;
    a symbolic link, FIFO, device or socket below the folder is refused, never followed.
    A MetaIO or NRRD header that keeps its data in a second file (``ElementDataFile = x.raw``,
    ``data file: x.raw``) is digested as the manifest of the two, header first
    (``<header name>\t<sha256>\n<data file name>\t<sha256>\n``), so the digest covers the
    voxels too; a file with attached data is digested as its bytes.

    Raises
    ------
    CaseBundleError
        A link or non-regular file below the folder; a header whose data file is not a
        regular file beside it.
    """
    path = Path(path)
    if path.is_dir():
        members = [(m.relative_to(path).as_posix(), m) for m in regular_files_below(path, error=CaseBundleError)]
    else:
        data_file = detached_data_file(path, CaseBundleError)
        if data_file is None:
            return file_sha256(path)
        members = [(path.name, path), (data_file.name, data_file)]
    manifest = hashlib.sha256()
    for name, member in members:
        manifest.update(f"{name}\t{file_sha256(member)}\n".encode())
    return manifest.hexdigest()


def add_file(case_folder: str | Path, src_path: str | Path, kind: str) -> tuple[str, str]:
    """Copy a volume, sweep or device set into the bundle; return its relative path and SHA-256.

    The file goes to ``<kind folder>/<file name>`` (:data:`FILE_KINDS`), written
    atomically. Adding the same content again is a no-op; a different file of the same
    name is refused rather than overwritten.

    Parameters
    ----------
    case_folder : str or Path
        The bundle; its kind folder (``sweeps/``...) and an existing file of the same name
        must be real, not symbolic links (:func:`workbench.io.paths.contained`).
    src_path : str or Path
        A single regular file, not DICOM (refused: see ``workbench new-case``). Detached-header
        files (``.mhd``, ``.nhdr``, or any header naming a data file) keep their pixels in a second
        file and are refused: save them as ``.mha``/``.nrrd``/``.nii.gz``.
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
    if not source.exists():
        raise CaseBundleError("no such file to add to the case", source)
    require_regular_file(source, CaseBundleError, "file to add")
    if source.suffix.lower() == ".dcm" or dicom_files_under(source):
        raise CaseBundleError(
            "DICOM files are never copied into a case as they are (they carry the patient's identifiers and UIDs); "
            "make the case with `workbench new-case`, which de-identifies the MRI",
            source,
        )
    if source.name.lower().endswith((".mhd", ".nhdr")) or detached_data_file(source, CaseBundleError) is not None:
        raise CaseBundleError(
            "detached-header files keep their pixels in a second file; save as .mha, .nrrd or .nii.gz first", source
        )
    if kind == "mri":
        check_volume_header(source)
    relative = f"{FILE_KINDS[kind]}/{source.name}"
    # never through a link: a sweeps/ folder (or an existing file) that is a symbolic link is refused
    destination = contained(folder, relative, error=CaseBundleError, label=relative, error_path=folder, must_exist=False)
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
