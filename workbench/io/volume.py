"""3D volumes (MRI) in LPS millimetres: loading, saving and describing.

:func:`load_volume` reads a DICOM series (a folder or one of its ``.dcm`` files) or a
NIfTI / NRRD / MetaImage file and returns a :class:`LoadedVolume`, whose ``image`` is a
``SimpleITK.Image`` with origin, spacing and direction in the patient LPS frame ``Mri``.
The voxel index frame is ``MriVoxel``; ``LoadedVolume.mri_voxel_to_mri`` maps it to ``Mri``.
See docs/frames.md.

NIfTI stores RAS on disk; SimpleITK converts it to LPS when reading and back when writing,
so nothing in workbench ever sees RAS.

SimpleITK opens a detached data file itself (``ElementDataFile`` of a ``.mhd``/``.mha``,
``data file`` of a ``.nhdr``/``.nrrd``), wherever the header points; so the header's reference
is checked first (:func:`workbench.io.paths.detached_data_file`): a bare file name beside the
header, a regular file, not a link. A FIFO or device is refused before it is opened.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from workbench._atomic import TEMPORARY_SUFFIX, remove_stale_temporaries, temporary_prefix
from workbench.errors import VolumeError
from workbench.io.loaded_volume import LoadedVolume, compute_source_digest
from workbench.io.image_header import check_image_header
from workbench.io.paths import detached_data_file, require_regular_file
from workbench.validation import check_image_geometry

__all__ = [
    "VOLUME_SUFFIXES",
    "LoadedVolume",
    "compute_source_digest",
    "describe_volume",
    "load_volume",
    "save_volume",
    "volume_suffix",
    "without_metadata",
]

#: File name endings read and written by SimpleITK, and the format each one is.
VOLUME_SUFFIXES: dict[str, str] = {
    ".nii.gz": "nifti",
    ".nii": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "metaimage",
    ".mhd": "metaimage",
}

_SITK_PREFIX = re.compile(r"^(?:(?:itk::|sitk::|ITK )ERROR:\s*)?(?:\w+\(0x[0-9a-fA-F]+\):\s*)?(?:\[\w+\]\s*)?")

_SCALAR_TYPES = ("UInt8", "Int8", "UInt16", "Int16", "UInt32", "Int32", "UInt64", "Int64", "Float32", "Float64")
#: numpy dtype name of one voxel component, by SimpleITK pixel ID (scalar and vector images).
_DTYPE_BY_PIXEL_ID: dict[int, str] = {
    getattr(sitk, f"sitk{prefix}{name}"): name.lower() for name in _SCALAR_TYPES for prefix in ("", "Vector")
}


def volume_suffix(path: str | os.PathLike) -> str | None:
    """The volume file ending of ``path`` (``".nii.gz"``, ``".nrrd"``...) or None if not a volume file."""
    name = Path(path).name.lower()
    return next((suffix for suffix in VOLUME_SUFFIXES if name.endswith(suffix)), None)


def load_volume(path: str | os.PathLike) -> LoadedVolume:
    """Load an MRI volume from a DICOM series or a volume file.

    Parameters
    ----------
    path : str or path-like
        A folder of DICOM files (its largest image series is loaded, see
        :func:`workbench.io.dicom.load_dicom_series`), a ``.dcm`` file (the series it
        belongs to, from its folder), or a ``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``,
        ``.mha`` or ``.mhd`` file holding one 3D scalar volume. A detached data file must sit
        beside its header (a bare file name).

    Returns
    -------
    LoadedVolume
        Image in LPS mm (frame ``Mri``, see docs/frames.md).

    Raises
    ------
    VolumeError
        Missing or unsupported file, not a regular file, a header whose data file is not a
        regular file beside it, unreadable file, not a 3D scalar volume.
    DicomError
        The DICOM series cannot be loaded.
    """
    path = Path(path)
    if not path.exists():
        raise VolumeError("file or folder not found", path)
    if path.is_dir() or path.suffix.lower() == ".dcm":
        from workbench.io import dicom  # dicom sits above loaded_volume, beside this module

        return dicom.load_dicom_series(path) if path.is_dir() else dicom.load_dicom_file_series(path)
    image = _read_image(path)
    if image.GetDimension() != 3:
        raise VolumeError(f"expected a 3D volume, got a {image.GetDimension()}D image", path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise VolumeError(
            f"expected a scalar volume, got {image.GetNumberOfComponentsPerPixel()} components per voxel", path
        )
    metadata = {
        "source_kind": VOLUME_SUFFIXES[volume_suffix(path)],
        "pixel_type": _pixel_type(image.GetPixelID()),
    }
    return LoadedVolume(image=image, metadata=metadata, source_path=path)


def describe_volume(path: str | os.PathLike) -> dict[str, Any]:
    """Geometry and pixel type of an image file, read from its header only (for ``workbench info``).

    Any format SimpleITK reads is described (volumes, and 2D images such as ``.png``, whose
    lists then have 2 or 4 entries); only :func:`load_volume` insists on a 3D volume.

    Returns
    -------
    dict
        JSON-serialisable: ``kind`` ("volume"), ``path``, ``size`` (voxels along i, j, k),
        ``spacing_mm``, ``origin_lps_mm`` (mm, LPS), ``direction`` (row major),
        ``pixel_type`` (numpy dtype name of one component) and ``components`` (per voxel).

    Raises
    ------
    VolumeError
        Missing, unsupported or unreadable file.
    """
    path = _checked_file(path)
    suffix = volume_suffix(path)
    if suffix is not None:
        check_image_header(path, suffix)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    with _sitk_errors(path, "cannot read"):
        reader.ReadImageInformation()
    if suffix is not None:
        _check_geometry(reader.GetSize(), reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection(), path)
    return {
        "kind": "volume",
        "path": str(path),
        "size": [int(v) for v in reader.GetSize()],
        "spacing_mm": [float(v) for v in reader.GetSpacing()],
        "origin_lps_mm": [float(v) for v in reader.GetOrigin()],
        "direction": [float(v) for v in reader.GetDirection()],
        "pixel_type": _pixel_type(reader.GetPixelID()),
        "components": int(reader.GetNumberOfComponents()),
    }


def save_volume(image_or_loaded: sitk.Image | LoadedVolume, path: str | os.PathLike) -> Path:
    """Write a volume atomically; the format follows the file ending.

    Only voxels and geometry are written: the metadata SimpleITK read from a source file (a NIfTI
    ``descrip`` can hold the acquisition date and time, DICOM-derived keys names and UIDs) is
    dropped, so a saved volume never carries identifying text.

    The image is written under its final name into a temporary folder beside ``path``
    (so detached ``.mhd``/``.nhdr`` headers name the right data file), then each file is
    moved into place with ``os.replace``, data files before the header. A failure leaves
    any previous file at ``path`` untouched.

    Parameters
    ----------
    image_or_loaded : SimpleITK.Image or LoadedVolume
        The volume; its LPS geometry is written as is (NIfTI gets RAS on disk via SimpleITK).
    path : str or path-like
        Target ending in ``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha`` or ``.mhd``.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    VolumeError
        Unsupported ending, not an image, or the write failed.
    """
    path = Path(path)
    image = image_or_loaded.image if isinstance(image_or_loaded, LoadedVolume) else image_or_loaded
    if not isinstance(image, sitk.Image):
        raise VolumeError(f"cannot save a {type(image).__name__}: expected a SimpleITK.Image or LoadedVolume", path)
    _require_suffix(path)
    image = without_metadata(image)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)  # staging folders of interrupted saves
    staging = Path(tempfile.mkdtemp(prefix=temporary_prefix(path), suffix=TEMPORARY_SUFFIX, dir=path.parent))
    try:
        with _sitk_errors(path, "cannot write"):
            sitk.WriteImage(image, str(staging / path.name), useCompression=True)
        header = staging / path.name
        for written in sorted(staging.iterdir(), key=lambda p: p == header):
            _fsync_file(written)
            os.replace(written, path.parent / written.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def without_metadata(image: sitk.Image) -> sitk.Image:
    """``image``'s voxels and geometry only: a copy (voxels shared until written) with every metadata key erased."""
    keys = image.GetMetaDataKeys()
    if not keys:
        return image
    clean = sitk.Image(image)
    for key in keys:
        clean.EraseMetaData(key)
    return clean


def _checked_file(path: str | os.PathLike) -> Path:
    """``path`` once it is a regular file whose detached data file (if any) sits beside it."""
    path = require_regular_file(path, VolumeError)
    detached_data_file(path, VolumeError)
    return path


def _read_image(path: Path) -> sitk.Image:
    _require_suffix(path)
    _checked_file(path)
    check_image_header(path, volume_suffix(path))  # before ITK, which trusts headers to the point of crashing
    with _sitk_errors(path, "cannot read"):
        image = sitk.ReadImage(str(path))
    _check_geometry(image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection(), path)
    return image


def _check_geometry(size, spacing, origin, direction, path: Path) -> None:
    """Spacing 1e-3..100 mm, origin within 10 m, orthonormal directions (:mod:`workbench.validation`)."""
    check_image_geometry(size, spacing, origin, direction, path, VolumeError, what="volume")


def _require_suffix(path: Path) -> None:
    if volume_suffix(path) is None:
        raise VolumeError(
            f"unsupported volume file type (expected one of {', '.join(VOLUME_SUFFIXES)} or a DICOM folder)", path
        )


@contextlib.contextmanager
def _sitk_errors(path: Path, what: str):
    """Turn SimpleITK's multi-line RuntimeError into a one-line :class:`VolumeError`."""
    try:
        yield
    except RuntimeError as exc:
        raise VolumeError(f"{what} volume: {_sitk_problem(exc)}", path) from None


def _sitk_problem(exc: RuntimeError) -> str:
    """The informative part of a SimpleITK/ITK exception text, in one line.

    The first line names SimpleITK's source location and is dropped; ITK's
    ``ITK ERROR: NrrdImageIO(0x...):`` prefixes are stripped; of the remaining lines the
    first (what failed) and the last (the innermost cause) are kept.
    """
    lines = [_SITK_PREFIX.sub("", line).strip() for line in str(exc).splitlines()[1:]]
    lines = [line for line in lines if line] or ["unknown SimpleITK error"]
    kept = lines[:1] + lines[-1:] if len(lines) > 1 else lines
    return " -- ".join(kept)


def _pixel_type(pixel_id: int) -> str:
    return _DTYPE_BY_PIXEL_ID.get(pixel_id) or sitk.GetPixelIDValueAsString(pixel_id)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())
