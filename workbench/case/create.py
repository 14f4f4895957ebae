"""Create a case bundle from a patient's own files: the MRI, tracked sweeps and their device set.

:func:`new_case` is the one place where a case is made from real data; ``workbench new-case``
and notebook 01's "new case" form call it. It reads and checks every input first, builds the
bundle in a hidden staging folder beside ``out_dir`` and renames it into place at the end, so
on any error nothing is left behind (``out_dir`` must be new or an empty folder).

What goes into the bundle (layout: ``docs/case-bundle.md``):

- ``mri/mri.nrrd``: the MRI as a volume in LPS mm (``docs/frames.md``), gzip-compressed, from
  a DICOM series (a folder, with ``series_uid`` choosing among several image series, or one
  ``.dcm`` file of the series) or a NIfTI / NRRD / MetaImage file (NIfTI is RAS on disk and is
  loaded to LPS). Only the voxels and the geometry are written: the header holds no field of
  the source (SimpleITK would otherwise copy every NIfTI header field or metadata entry,
  e.g. ``descrip`` with the acquisition time). DICOM is therefore always de-identified on the
  way in: no name, ID, date, institution or UID reaches the bundle, and text taken from the
  headers (the series description) is kept only when it holds none of the source's
  identifying values (:data:`workbench.identifiers.IDENTIFYING_DICOM_ATTRIBUTES`). A final
  check searches every byte written for those values before the bundle is published.
- ``sweeps/sweep1.igs.mha``, ...: each PLUS sequence file copied byte for byte under a neutral
  name (a detached ``.mhd`` header is rewritten as one ``.igs.mha``), after checking it
  against the device set: the device set has the ``ImageToProbe`` calibration with a
  plausible pixel size, the sweep has ultrasound images, the sweep's transform names and the
  device set's coordinate definitions connect ``Probe`` to ``Reference`` (e.g.
  ``ProbeToTracker`` and ``ReferenceToTracker``, or ``ProbeToReference`` itself), and at least
  one frame is valid (image OK and every transform of the chain OK).
- ``device_sets/<name>.xml``: the device set, byte for byte.
- ``case.json`` with a pseudonymous ``case_id`` (default ``CASE-`` and 8 random hex digits).
  A ``case_id`` equal to the source's PatientID or PatientName (trimmed, any letter case, also
  with other separators: ``Doe^Jane`` / ``doe-jane``) or containing one of them (of at least
  four letters and digits) is refused.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import SimpleITK as sitk

from workbench._atomic import current_umask
from workbench.case.identifiers import identifying_attribute
from workbench.case.model import Attachment, Case, FileRef, MriRef, SweepRef
from workbench.case.storage import CASE_FILE, file_sha256, load_case, save_case
from workbench.errors import CaseBundleError, DeviceSetError, DicomError, SequenceFileError, VolumeError
from workbench.frames import Transform, TransformRepository, is_transform_name, split_transform_name
from workbench.identifiers import IDENTIFYING_DICOM_ATTRIBUTES
from workbench.io.paths import detached_data_file
from workbench.io.volume import without_metadata

__all__ = [
    "CASE_ID_PATTERN",
    "MRI_FILE",
    "CreatedCase",
    "MriSource",
    "SweepCheck",
    "check_sweep",
    "create_case",
    "new_case",
    "random_case_id",
    "read_mri_source",
]

#: Where the MRI volume goes inside the bundle.
MRI_FILE = "mri/mri.nrrd"
#: What ``case.json`` accepts as ``case_id`` (the schema's pattern).
CASE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
#: Pixel sizes of an ``ImageToProbe`` calibration outside this range (mm per pixel) are refused.
PIXEL_SIZE_RANGE_MM = (1e-3, 5.0)

_PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_SEQUENCE_SUFFIXES = (".igs.mha", ".seq.mha", ".igs.nrrd", ".seq.nrrd", ".mha", ".nrrd")
_DETACHED_SUFFIXES = (".mhd", ".nhdr")
_WELL_KNOWN_UID_ROOT = "1.2.840.10008."
_MIN_TEXT_MATCH = 3  # identifying values shorter than this are not searched in text (sex "M", ...)
_MIN_BINARY_MATCH = 5  # ... nor in binary files, where short strings occur by chance
_POSE = "ProbeToReference"


@dataclass(frozen=True)
class MriSource:
    """An MRI read for a new case, with what is needed to keep its identifiers out.

    Attributes
    ----------
    image : SimpleITK.Image
        3D scalar volume in LPS mm (frame ``Mri``), without any metadata entries.
    kind : str
        ``"dicom"``, ``"nifti"``, ``"nrrd"`` or ``"metaimage"``.
    description : str
        Non-identifying text for ``case.json`` (the series description when safe).
    identifying_values : frozenset of str
        Every value of an identifying DICOM attribute and every instance UID found in the
        source headers (empty for volume files).
    patient_names : frozenset of str
        PatientID, PatientName, OtherPatientIDs: what a case id must not be.
    warnings : tuple of str
        From loading (e.g. a missing slice).
    """

    image: sitk.Image
    kind: str
    description: str
    identifying_values: frozenset[str] = frozenset()
    patient_names: frozenset[str] = frozenset()
    warnings: tuple[str, ...] = ()

    @property
    def size_px(self) -> tuple[int, int, int]:
        """Voxels along i, j, k."""
        i, j, k = (int(v) for v in self.image.GetSize())
        return i, j, k

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size along i, j, k, mm."""
        i, j, k = (float(v) for v in self.image.GetSpacing())
        return i, j, k


@dataclass(frozen=True)
class SweepCheck:
    """A sweep checked against its device set.

    Attributes
    ----------
    path : Path
        The source file.
    frames, valid_frames : int
        Frames in the file; frames with an OK image and every transform of the pose chain OK.
    image_size_px : (int, int)
        Width, height of one frame.
    pose_chain : tuple of str
        The stored transforms ``ProbeToReference`` is computed from (e.g.
        ``("ProbeToTracker", "ReferenceToTracker")``).
    image_to_probe : Transform
        The calibration (pixels to mm).
    calibration_error_mm : float or None
        The calibration's ``Error`` attribute.
    invalid : dict of str to int
        Why frames are not valid: ``"image"`` and the name of each chain transform, counts.
    """

    path: Path
    frames: int
    valid_frames: int
    image_size_px: tuple[int, int]
    pose_chain: tuple[str, ...]
    image_to_probe: Transform
    calibration_error_mm: float | None = None
    invalid: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready summary (no path: file names may carry identifiers)."""
        return {
            "frames": self.frames,
            "valid_frames": self.valid_frames,
            "image_size_px": list(self.image_size_px),
            "pose_chain": list(self.pose_chain),
            "invalid": dict(self.invalid),
        }


@dataclass(frozen=True)
class CreatedCase:
    """What :func:`create_case` made: the folder, the case as saved, the sweeps' checks, load warnings."""

    folder: Path
    case: Case
    sweeps: tuple[SweepCheck, ...]
    warnings: tuple[str, ...] = ()


def random_case_id() -> str:
    """A random, non-identifying case id: ``CASE-`` and 8 hex digits (e.g. ``CASE-3f09a2c1``)."""
    return f"CASE-{secrets.token_hex(4)}"


# -- the MRI --------------------------------------------------------------------------------


def read_mri_source(path: str | os.PathLike, series_uid: str | None = None) -> MriSource:
    """Read the MRI of a new case: a DICOM folder or ``.dcm`` file, or a NIfTI/NRRD/MHA volume.

    Parameters
    ----------
    path : str or path-like
    series_uid : str, optional
        Which image series of a DICOM folder: its SeriesInstanceUID, or its number (1, 2...)
        in the listing the "several series" error gives. Needed when the folder holds
        several image series.

    Returns
    -------
    MriSource

    Raises
    ------
    DicomError
        Several image series and no ``series_uid`` (the message lists them by description,
        size and plane, never by identifying values), an unknown one, missing geometry tags
        (ImagePositionPatient, ImageOrientationPatient, PixelSpacing) or any other problem
        loading the series.
    VolumeError
        Missing file, a 2D picture or image, a NIfTI without qform or sform, a volume that is
        not 3D and scalar, non-positive spacing or a singular direction.
    """
    path = Path(path)
    if not path.exists():
        raise VolumeError("MRI not found", path)
    if path.is_dir() or path.suffix.lower() == ".dcm" or _is_dicom_file(path):
        return _read_dicom_source(path, series_uid)
    if path.name.lower().endswith(_PICTURE_SUFFIXES):
        raise VolumeError(
            "a 2D picture has no patient geometry (origin, spacing and orientation in mm); "
            "give a DICOM series or a NIfTI, NRRD or MHA volume",
            path,
        )
    from workbench.io.volume import load_volume

    loaded = load_volume(path)
    kind = str(loaded.metadata.get("source_kind", "volume"))
    image = loaded.image
    if kind == "nifti" and _meta(image, "qform_code") == "0" and _meta(image, "sform_code") == "0":
        raise VolumeError("NIfTI header has neither qform nor sform (both codes 0): no patient geometry", path)
    clean = without_metadata(image)
    _check_geometry(clean, path)
    names = {"nifti": "NIfTI", "nrrd": "NRRD", "metaimage": "MetaImage"}
    return MriSource(clean, kind, f"{names.get(kind, kind)} volume", warnings=tuple(loaded.warnings))


def _read_dicom_source(path: Path, series_uid: str | None) -> MriSource:
    from workbench.io.dicom import load_dicom_series, scan_folder

    folder = path if path.is_dir() else path.parent
    scan = scan_folder(folder, recursive=path.is_dir())
    if path.is_file():
        series_uid = series_uid or _series_of_file(path)
    info = _choose_series(scan, series_uid, path)
    loaded = load_dicom_series(folder, info.series_uid, recursive=path.is_dir())
    identifying, names = _source_identifiers(info.files)
    clean = without_metadata(loaded.image)
    _check_geometry(clean, path)
    parts = [
        _safe_text(info.description, identifying),
        _safe_text(str(loaded.metadata.get("orientation", "")), identifying),
        "DICOM series, de-identified",
    ]
    description = ", ".join(part for part in parts if part)
    warnings = tuple(_safe_text(w, identifying) or "a warning that named the source file was dropped" for w in loaded.warnings)
    return MriSource(clean, "dicom", description, frozenset(identifying), frozenset(names), warnings)


def _series_of_file(path: Path) -> str:
    from workbench.io.dicom import read_dicom_file

    dataset = read_dicom_file(path, stop_before_pixels=True)
    if dataset is None:
        raise DicomError("not a DICOM image file", path)
    if not dataset.get("SeriesInstanceUID"):
        raise DicomError("has no SeriesInstanceUID", path)
    return str(dataset.SeriesInstanceUID)


def _choose_series(scan, series_uid: str | None, path: Path):
    images = scan.image_series
    if not images:
        modalities = ", ".join(sorted({s.modality or "unknown" for s in scan.series})) or "none"
        raise DicomError(f"no DICOM image series found (series without images: {modalities})", path)
    if series_uid is not None:
        choice = series_uid.strip()
        if choice.isdigit() and not any(s.series_uid == choice for s in images):
            number = int(choice)
            if not 1 <= number <= len(images):
                raise DicomError(f"no image series number {number}: {_series_listing(images)}", path)
            return images[number - 1]
        found = next((s for s in images if s.series_uid == choice), None)
        if found is None:
            raise DicomError(f"no image series with that SeriesInstanceUID: {_series_listing(images)}", path)
        return found
    if len(images) > 1:
        raise DicomError(
            f"{len(images)} image series in the folder; choose one with --series N (or its SeriesInstanceUID): "
            f"{_series_listing(images)}",
            path,
        )
    return images[0]


def _series_listing(images) -> str:
    """``1 = 't1_fl2d_sag' (MR, 256x256x35, sagittal); 2 = ...``: no identifying values."""
    items = []
    for number, info in enumerate(images, start=1):
        size = "x".join(str(v) for v in info.size) if info.size else "?"
        plane = info.orientation_label or "unknown plane"
        items.append(f"{number} = {info.description or 'no description'!r} ({info.modality or '?'}, {size}, {plane})")
    return "; ".join(items)


def _source_identifiers(files: Iterable[Path]) -> tuple[set[str], set[str]]:
    """Identifying values and patient names in the headers of ``files``.

    Identifying values: every non-empty value of an attribute of
    :data:`IDENTIFYING_DICOM_ATTRIBUTES`, of StudyDescription, OtherPatientIDs and of every
    instance UID (VR UI, outside the well-known ``1.2.840.10008.`` root), in the data set,
    its sequences and the file meta header, plus the file names' stems.
    """
    import pydicom

    identifying: set[str] = set()
    names: set[str] = set()
    keywords = set(IDENTIFYING_DICOM_ATTRIBUTES) | {"StudyDescription", "OtherPatientIDs"}
    for path in files:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        identifying.add(path.stem)
        elements = list(dataset.file_meta) if hasattr(dataset, "file_meta") else []
        for element in (*elements, *_walk(dataset)):
            if element.VR == "SQ":
                continue
            if element.keyword in keywords or element.VR == "UI":
                for value in _values(element.value):
                    if value and not (element.VR == "UI" and value.startswith(_WELL_KNOWN_UID_ROOT)):
                        identifying.add(value)
        for keyword in ("PatientID", "PatientName", "OtherPatientIDs"):
            for value in _values(dataset.get(keyword, "")):
                if value:
                    names.add(value)
    return identifying, {n for n in names if n}


def _walk(dataset):
    for element in dataset:
        yield element
        if element.VR == "SQ":
            for item in element.value:
                yield from _walk(item)


def _values(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [str(v).strip() for v in value]
    return [str(value).strip()]


def _safe_text(text: str, identifying: Iterable[str]) -> str:
    """``text`` if it holds none of the identifying values (any case) and names no identifying attribute, else ""."""
    lowered = text.lower()
    for value in identifying:
        if len(value) >= _MIN_TEXT_MATCH and value.lower() in lowered:
            return ""
    return "" if identifying_attribute(text) else text


def _check_geometry(image: sitk.Image, path: Path) -> None:
    spacing = np.array(image.GetSpacing(), dtype=float)
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    origin = np.array(image.GetOrigin(), dtype=float)
    if not (np.all(np.isfinite(spacing)) and np.all(spacing > 0)):
        raise VolumeError(f"voxel spacing {spacing.tolist()} mm is not positive: no usable geometry", path)
    if not (np.all(np.isfinite(origin)) and np.all(np.isfinite(direction))) or abs(np.linalg.det(direction)) < 1e-6:
        raise VolumeError("origin or direction is not finite or the direction is singular: no usable geometry", path)


def _meta(image: sitk.Image, key: str) -> str | None:
    return image.GetMetaData(key).strip() if image.HasMetaDataKey(key) else None


def _is_dicom_file(path: Path) -> bool:
    if not path.is_file():
        return False
    with open(path, "rb") as fh:
        head = fh.read(132)
    return head[128:132] == b"DICM"


# -- sweeps ---------------------------------------------------------------------------------


def _read_device_set(path: Path):
    from workbench.io.plus_config import read_device_set

    device_set = read_device_set(path)
    image_to_probe = device_set.image_to_probe()  # DeviceSetError without ImageToProbe
    spacing = image_to_probe.scale[:2]
    low, high = PIXEL_SIZE_RANGE_MM
    if not np.all((spacing > low) & (spacing < high)):
        raise DeviceSetError(
            f"ImageToProbe gives a pixel size of {spacing[0]:.4g} x {spacing[1]:.4g} mm, outside "
            f"{low:g}-{high:g} mm: not an ultrasound calibration in mm",
            path,
        )
    return device_set


def check_sweep(sweep: str | os.PathLike, device_set: str | os.PathLike) -> SweepCheck:
    """Check a tracked sweep against its PLUS device set.

    Parameters
    ----------
    sweep : str or path-like
        PLUS sequence file.
    device_set : str or path-like
        PLUS device-set XML with the ``ImageToProbe`` calibration.

    Returns
    -------
    SweepCheck

    Raises
    ------
    DeviceSetError
        The device set has no ``ImageToProbe`` or an implausible pixel size.
    SequenceFileError
        The sweep cannot be read, has no frames or no images (a tracking-only recording), RF
        instead of B-mode data, transform names that do not connect ``Probe`` to ``Reference``
        with the device set's coordinate definitions, or no valid frame.
    """
    device = _read_device_set(Path(device_set))
    return _check_sweep(Path(sweep), device)


def _check_sweep(path: Path, device) -> SweepCheck:
    from workbench.io.sequence import read_sequence

    sequence = read_sequence(path)
    count = len(sequence)
    if count == 0:
        raise SequenceFileError("sweep has no frames", path)
    if sequence.images is None or sequence.images.size == 0:
        raise SequenceFileError(
            "has no ultrasound images (a tracking-only recording); a sweep needs image frames", path
        )
    sequence.images_mf()  # refuses RF orientations
    fixed = list(device.transform_repository())
    chain = _pose_chain(sequence, fixed, device, path)
    ok = np.asarray(sequence.image_status, dtype=bool).copy()
    invalid = {"image": int(np.count_nonzero(~ok))}
    for name in chain:
        if name in sequence.transforms:
            status = sequence.status_of(name)
            invalid[name] = int(np.count_nonzero(~status))
            ok &= status
    valid = int(np.count_nonzero(ok))
    if valid == 0:
        reasons = ", ".join(f"{n} INVALID in {k}" for n, k in invalid.items() if k) or "no frame passed"
        raise SequenceFileError(f"sweep has zero valid frames of {count} ({reasons})", path)
    image_to_probe = device.image_to_probe()
    error = next((d.error for d in device.coordinate_definitions if d.name == "ImageToProbe"), None)
    width, height = sequence.image_size_px
    return SweepCheck(path, count, valid, (width, height), chain, image_to_probe, error, invalid)


def _pose_chain(sequence, fixed: list[Transform], device, path: Path) -> tuple[str, ...]:
    """The sweep's transforms ``ProbeToReference`` needs; refuse names that do not connect the two frames.

    A transform is needed when ``ProbeToReference`` cannot be computed without it (from the
    sweep's transform names and the device set's coordinate definitions, matrices aside).
    """
    names = [n for n in sequence.transforms if is_transform_name(n)]

    def connects(without: str | None) -> bool:
        repository = TransformRepository()
        for transform in fixed:
            repository.set_transform(transform)
        for name in names:
            if name != without:
                repository.set_transform(Transform.identity(*split_transform_name(name)))
        return repository.has(_POSE)

    if not connects(None):
        device_names = ", ".join(t.name for t in fixed) or "none"
        raise SequenceFileError(
            f"frame names do not match the device set {device.source_path.name}: {_POSE} cannot be computed from the "
            f"sweep's transforms ({', '.join(names) or 'none'}) and the device set's ({device_names}); "
            "a sweep needs e.g. ProbeToTracker and ReferenceToTracker",
            path,
        )
    return tuple(name for name in names if not connects(name))


# -- the bundle -----------------------------------------------------------------------------


def _check_case_id(case_id: str | None, source: MriSource, path: Path) -> str:
    if case_id is None:
        return random_case_id()
    text = case_id.strip()
    if not CASE_ID_PATTERN.match(text):
        raise CaseBundleError(
            f"invalid case id {case_id!r}: use 1-64 letters, digits, '_' or '-', starting with a letter or digit"
        )
    lowered, squeezed = text.lower(), _squeeze(text)
    for name in source.patient_names:
        name, name_squeezed = name.strip().lower(), _squeeze(name)
        if (name and lowered == name) or (name_squeezed and squeezed == name_squeezed) or (
            len(name_squeezed) >= 4 and name_squeezed in squeezed
        ):
            raise CaseBundleError(
                "the case id is a patient identifier of the MRI (its PatientID or PatientName); "
                "use a pseudonym, or leave it out for a random one",
                path,
            )
    if identifying_attribute(text):
        raise CaseBundleError(f"the case id names DICOM identifying attribute {identifying_attribute(text)}")
    return text


def _squeeze(text: str) -> str:
    """Lowercase letters and digits only: ``Doe^Jane`` and ``doe-jane`` both give ``doejane``."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise CaseBundleError("output folder exists and is not empty; give a new or empty folder", out_dir)


def _sweep_name(number: int, source: Path) -> str:
    name = source.name.lower()
    suffix = next((s for s in _SEQUENCE_SUFFIXES if name.endswith(s)), ".igs.mha")
    if suffix in (".mha", ".nrrd"):
        suffix = ".igs" + suffix
    return f"sweep{number}{suffix}"


def new_case(
    out_dir: str | os.PathLike,
    *,
    mri: str | os.PathLike,
    sweeps: Sequence[str | os.PathLike] = (),
    device_set: str | os.PathLike | None = None,
    case_id: str | None = None,
    series_uid: str | None = None,
    title: str = "",
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Create a case bundle in ``out_dir``; return ``out_dir``. Parameters and errors as :func:`create_case`."""
    return create_case(
        out_dir, mri=mri, sweeps=sweeps, device_set=device_set, case_id=case_id,
        series_uid=series_uid, title=title, progress=progress,
    ).folder


def create_case(
    out_dir: str | os.PathLike,
    *,
    mri: str | os.PathLike,
    sweeps: Sequence[str | os.PathLike] = (),
    device_set: str | os.PathLike | None = None,
    case_id: str | None = None,
    series_uid: str | None = None,
    title: str = "",
    progress: Callable[[str], None] | None = None,
) -> CreatedCase:
    """Create a case bundle in ``out_dir`` from an MRI, tracked sweeps and their device set.

    Parameters
    ----------
    out_dir : str or path-like
        New or empty folder; missing parents are created.
    mri : str or path-like
        DICOM folder or ``.dcm`` file, or a ``.nii``/``.nii.gz``/``.nrrd``/``.mha`` volume.
    sweeps : sequence of str or path-like
        PLUS sequence files (``.igs.mha``...), each checked against ``device_set``.
    device_set : str or path-like, optional
        PLUS device-set XML with ``ImageToProbe``; required when ``sweeps`` are given.
        Without sweeps it is kept as an attachment (role ``other``).
    case_id : str, optional
        Pseudonymous id (``^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$``); default :func:`random_case_id`.
        The source's PatientID or PatientName is refused.
    series_uid : str, optional
        The DICOM image series to use (SeriesInstanceUID or its number in the listing).
    title : str
        Free text for ``case.json`` (no identifiers).
    progress : callable, optional
        Called with one line per step.

    Returns
    -------
    CreatedCase
        The folder (``out_dir``), the case as saved and each sweep's check.

    Raises
    ------
    WorkbenchError
        (:class:`CaseBundleError`, :class:`DicomError`, :class:`VolumeError`,
        :class:`SequenceFileError`, :class:`DeviceSetError`) naming the file and the problem;
        nothing is written then.
    """
    out_dir = Path(out_dir)
    say = progress or (lambda message: None)
    _check_out_dir(out_dir)
    mri_path = Path(mri)
    say(f"reading the MRI {mri_path.name}")
    source = read_mri_source(mri_path, series_uid)
    chosen_id = _check_case_id(case_id, source, mri_path)
    device = None
    if device_set is not None:
        say(f"reading the device set {Path(device_set).name}")
        device = _read_device_set(Path(device_set))
    sweep_paths = [Path(s) for s in sweeps]
    if sweep_paths and device is None:
        raise CaseBundleError(
            "a sweep needs the PLUS device set with its ImageToProbe calibration (--device-set)", sweep_paths[0]
        )
    checks = []
    for sweep_path in sweep_paths:
        say(f"checking the sweep {sweep_path.name}")
        check = _check_sweep(sweep_path, device)
        say(f"  {check.valid_frames} of {check.frames} frames valid, pose from {' and '.join(check.pose_chain)}")
        checks.append(check)
    if device is not None:
        _check_name_free_of(device.source_path, source.identifying_values)

    created = _missing_parents(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".new-case", dir=out_dir.parent))
    try:
        say(f"writing the bundle of case {chosen_id}")
        case = _write_bundle(staging, chosen_id, title, source, checks, device)
        saved = save_case(case, staging)
        load_case(staging)  # digests and schema, as any reader will check them
        _check_no_source_identifiers(staging, source.identifying_values, out_dir)
        staging.chmod(0o777 & ~current_umask())  # mkdtemp made it 0700; a case folder gets normal permissions
        if out_dir.exists():
            out_dir.rmdir()  # empty, as checked above
        staging.replace(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in reversed(created):
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    say(f"case written to {out_dir}")
    return CreatedCase(out_dir, saved, tuple(checks), source.warnings)


def _missing_parents(out_dir: Path) -> list[Path]:
    missing = []
    parent = out_dir.absolute().parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    return list(reversed(missing))


def _write_bundle(staging: Path, case_id: str, title: str, source: MriSource, checks: list[SweepCheck], device) -> Case:
    from workbench.io.volume import save_volume

    mri_file = staging / MRI_FILE
    save_volume(source.image, mri_file)
    mri_ref = MriRef(
        path=MRI_FILE,
        sha256=file_sha256(mri_file),
        modality="MR",
        description=source.description,
        size_px=source.size_px,
        spacing_mm=source.spacing_mm,
    )
    device_ref = None
    attachments = []
    if device is not None:
        relative = f"device_sets/{device.source_path.name}"
        device_ref = FileRef(relative, _copy(device.source_path, staging / relative))
        if not checks:
            attachments.append(Attachment("other", relative, device_ref.sha256, "PLUS device set (no sweep yet)"))
    sweep_refs = []
    for number, check in enumerate(checks, start=1):
        relative = f"sweeps/{_sweep_name(number, check.path)}"
        # a header naming a data file (any suffix) is rewritten as one file: a copy would leave its pixels behind
        if check.path.name.lower().endswith(_DETACHED_SUFFIXES) or detached_data_file(check.path, SequenceFileError):
            digest = _rewrite_sequence(check.path, staging / relative)
        else:
            digest = _copy(check.path, staging / relative)
        sweep_refs.append(SweepRef(relative, digest, check.image_to_probe, check.calibration_error_mm, device_ref))
    notes = "Created by `workbench new-case`"
    if source.kind == "dicom":
        notes += " from a DICOM series, de-identified on the way in: only voxels, geometry and the series description are kept"
    notes += ". " + " ".join(
        f"Sweep {n}: {c.valid_frames} of {c.frames} frames valid." for n, c in enumerate(checks, start=1)
    )
    return Case(
        case_id=case_id,
        title=title,
        mri=mri_ref,
        sweeps=sweep_refs,
        attachments=attachments,
        notes=notes.strip(),
    )


def _rewrite_sequence(source: Path, destination: Path) -> str:
    from workbench.io.sequence import read_sequence, write_sequence

    if destination.name.endswith(_DETACHED_SUFFIXES):
        destination = destination.with_name(destination.name.rsplit(".", 1)[0] + ".mha")
    write_sequence(read_sequence(source), destination, compress=True)
    return file_sha256(destination)


def _copy(source: Path, destination: Path) -> str:
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, destination)
    return file_sha256(destination)


def _check_name_free_of(path: Path, identifying: Iterable[str]) -> None:
    if not _safe_text(path.name, identifying):
        raise CaseBundleError("the device set's file name holds an identifying value of the MRI; rename it", path)


def _check_no_source_identifiers(folder: Path, identifying: frozenset[str], report_as: Path) -> None:
    """Refuse a bundle that would hold an identifying value of the source DICOM.

    Searched: every relative file name, ``case.json``, the MRI files and the device sets
    (the sweeps are the user's own PLUS files, copied byte for byte, and may be large).
    Values of at least five characters are searched in every byte, shorter ones (three or
    four) in text only, where they cannot occur by chance in compressed pixels. A match
    must stand alone: not inside a longer word or number.
    """
    if not identifying:
        return
    long_values = [v.encode("utf-8") for v in identifying if len(v) >= _MIN_BINARY_MATCH]
    short_values = [v.encode("utf-8") for v in identifying if _MIN_TEXT_MATCH <= len(v) < _MIN_BINARY_MATCH]
    for member in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = member.relative_to(folder).as_posix()
        searched = [relative.encode("utf-8")]
        if member.name == CASE_FILE or relative.startswith(("mri/", "device_sets/")):
            searched.append(member.read_bytes())
        texts = searched if member.name == CASE_FILE else searched[:1]
        found = any(_occurs(data, v) for data in searched for v in long_values) or any(
            _occurs(text, v) for text in texts for v in short_values
        )
        if found:
            raise CaseBundleError(
                f"{relative} would hold an identifying value of the source DICOM; nothing was written", report_as
            )


def _occurs(data: bytes, value: bytes) -> bool:
    """``value`` occurs in ``data`` (ASCII letters compared case-insensitively for text), not inside a longer token."""
    haystack, needle = data.lower(), value.lower()
    start = haystack.find(needle)
    while start >= 0:
        end = start + len(needle)
        before = haystack[start - 1 : start] if start else b""
        after = haystack[end : end + 1]
        if not (before.isalnum() or before == b".") and not after.isalnum():
            return True
        start = haystack.find(needle, start + 1)
    return False
