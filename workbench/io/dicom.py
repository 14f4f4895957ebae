"""DICOM MR series: find the series in a folder and load one as an LPS volume.

Geometry comes from the tags alone, never from file names or InstanceNumber:

- slices are sorted by the projection of ImagePositionPatient (IPP) on the slice normal
  ``n = row_cosine x column_cosine`` (both from ImageOrientationPatient, IOP);
- origin = IPP of the first slice after sorting; direction columns = row cosine, column
  cosine, normal; spacing = (PixelSpacing[1], PixelSpacing[0], step between IPPs along n).
  SliceThickness is not the slice spacing and is not used for it.

IPP and IOP are already in the patient LPS frame (``Mri``), whatever the PatientPosition
(HFS, HFP, FFS, FFP, HFDR, HFDL, FFDR, FFDL): the position is recorded in the metadata and
changes nothing in the geometry. See docs/frames.md.

Only non-identifying facts leave this module: :class:`SeriesInfo` and the volume metadata
hold no names, IDs, dates, institutions or UIDs other than the SeriesInstanceUID needed to
choose a series.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from workbench.errors import DicomError
from workbench.io.loaded_volume import LoadedVolume
from workbench.io.paths import require_regular_file

__all__ = [
    "FolderScan",
    "SeriesInfo",
    "describe_dicom",
    "list_series",
    "load_dicom_file_series",
    "load_dicom_series",
    "orientation_label",
    "read_dicom_file",
    "scan_folder",
]

#: Media Storage SOP Class of a DICOMDIR (an index of a file set, not an image).
MEDIA_STORAGE_DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"

_IOP_TOLERANCE = 1e-4  # largest difference of an IOP component between slices of one stack
_UNIT_VECTOR_TOLERANCE = 1e-3  # IOP cosines: |length - 1| and |row . column| at most this
_PLANE_TOLERANCE_DEG = 1.0  # a normal within this angle of an axis is "axial"/"coronal"/"sagittal"
_DUPLICATE_TOLERANCE_MM = 0.01  # slices closer than this along the normal are at the same position
_SPACING_TOLERANCE_REL = 0.01  # steps within 1 % of the median step are uniform...
_SPACING_TOLERANCE_MIN_MM = 1e-3  # ...or within this, whichever is larger
_MISSING_SLICE_FACTOR = 1.5  # a step over 1.5 x the median step is a gap of missing slices
_INPLANE_TOLERANCE_PX = 0.05  # in-plane shift of a slice's IPP, in pixels, still counted as stacked

_PLANE_LABELS = ("sagittal", "coronal", "axial")  # by the LPS axis the slice normal is closest to


@dataclass(frozen=True)
class SeriesInfo:
    """One series found in a folder, without identifying fields.

    Attributes
    ----------
    series_uid : str
        SeriesInstanceUID (the key to load it with).
    description, modality, patient_position : str
        SeriesDescription, Modality, PatientPosition ("" when absent).
    size : (3,) tuple of int or None
        (columns, rows, number of files) of an image series; None without pixels.
    pixel_spacing_mm : (2,) tuple of float or None
        Spacing along i (between columns) and along j (between rows), mm: DICOM
        PixelSpacing reversed. None when absent.
    orientation : (6,) tuple of float or None
        ImageOrientationPatient of the first file: row cosine, column cosine (LPS).
    orientation_label : str or None
        "axial", "coronal", "sagittal" (normal within 1 degree of an axis) or "oblique".
    has_pixels : bool
        True for an image series (Rows and Columns present), False for SR, PR, ...
    files : tuple of pathlib.Path
        The series' files, sorted by path.
    """

    series_uid: str
    description: str
    modality: str
    size: tuple[int, int, int] | None
    pixel_spacing_mm: tuple[float, float] | None
    orientation: tuple[float, ...] | None
    orientation_label: str | None
    patient_position: str
    has_pixels: bool
    files: tuple[Path, ...]

    @property
    def n_files(self) -> int:
        """Number of files in the series."""
        return len(self.files)


@dataclass(frozen=True)
class FolderScan:
    """Everything found in a folder: the series and the files that are not part of one.

    Attributes
    ----------
    folder : pathlib.Path
    series : tuple of SeriesInfo
        Image series first, most files first, then most pixels per slice, then by UID:
        ``series[0]`` is what :func:`load_dicom_series` loads by default.
    non_dicom_files : tuple of pathlib.Path
        Files that are not DICOM, and DICOMDIR index files.
    unreadable_files : tuple of (pathlib.Path, str)
        DICOM files whose header could not be read or that lack a SeriesInstanceUID, with why.
    """

    folder: Path
    series: tuple[SeriesInfo, ...]
    non_dicom_files: tuple[Path, ...]
    unreadable_files: tuple[tuple[Path, str], ...]

    @property
    def image_series(self) -> tuple[SeriesInfo, ...]:
        """The series with pixels, in the same order."""
        return tuple(info for info in self.series if info.has_pixels)

    def unreadable_warnings(self) -> list[str]:
        """One line per unreadable file, for the warnings of a loaded series."""
        return [
            f"{path.name} could not be read ({why}); if it belongs to the loaded series, a slice is missing"
            for path, why in self.unreadable_files
        ]


@dataclass(frozen=True)
class _Slice:
    """What the geometry needs from one image file."""

    path: Path
    rows: int
    cols: int
    position_lps_mm: np.ndarray  # (3,) ImagePositionPatient
    orientation: np.ndarray  # (6,) ImageOrientationPatient
    pixel_spacing_mm: np.ndarray  # (2,) DICOM order: between rows, between columns
    nominal_spacing_mm: float | None  # SpacingBetweenSlices or SliceThickness, for a single slice only
    slope: float
    intercept: float


@dataclass(frozen=True)
class _StackPlan:
    """How the sorted slices become a volume.

    ``sources[k]`` says where output slice k comes from: ``(lower, upper, weight)`` indexes
    ``slices`` (the value is ``(1 - weight) * lower + weight * upper``; weight 0 copies
    ``lower``), or None for a blank slice standing in for a missing one.
    """

    slices: list[_Slice]
    origin_lps_mm: np.ndarray  # (3,)
    direction: np.ndarray  # (3, 3), columns: row cosine, column cosine, normal
    spacing_mm: np.ndarray  # (3,) along i, j, k
    sources: list[tuple[int, int, float] | None]
    warnings: list[str]

    @property
    def interpolates(self) -> bool:
        return any(src is not None and src[2] != 0.0 for src in self.sources)


# -- reading files -------------------------------------------------------------------------


def read_dicom_file(path: str | os.PathLike, *, stop_before_pixels: bool = False) -> Dataset | None:
    """Read one DICOM Part 10 file; None if it is not DICOM or is a DICOMDIR.

    Parameters
    ----------
    path : str or path-like
    stop_before_pixels : bool
        Read the header only.

    Raises
    ------
    DicomError
        The file starts like DICOM but cannot be parsed, or cannot be opened.
    """
    path = require_regular_file(path, DicomError)  # a FIFO or device would block pydicom
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=False)
    except InvalidDicomError:
        return None
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types (EOFError, struct.error, ValueError...) on corrupt input
        raise DicomError(f"cannot read DICOM file: {_one_line(exc)}", path) from None
    media_class = dataset.file_meta.get("MediaStorageSOPClassUID") if hasattr(dataset, "file_meta") else None
    if path.name.upper() == "DICOMDIR" or media_class == MEDIA_STORAGE_DIRECTORY_SOP_CLASS:
        return None
    return dataset


def scan_folder(folder: str | os.PathLike, *, recursive: bool = True) -> FolderScan:
    """Read the header of every file in ``folder`` and group the DICOM files by series.

    Non-DICOM files and DICOMDIR are skipped quietly and counted; DICOM files whose header
    is corrupt are listed in ``unreadable_files``.

    Raises
    ------
    DicomError
        ``folder`` does not exist or is not a folder.
    """
    folder = _require_folder(folder)
    groups: dict[str, tuple[Dataset, list[Path]]] = {}  # series UID -> (first header, files)
    non_dicom: list[Path] = []
    unreadable: list[tuple[Path, str]] = []
    for path in _iter_files(folder, recursive):
        try:
            dataset = read_dicom_file(path, stop_before_pixels=True)
        except DicomError as exc:
            unreadable.append((path, exc.problem))
            continue
        if dataset is None:
            non_dicom.append(path)
        elif not dataset.get("SeriesInstanceUID"):
            unreadable.append((path, "no SeriesInstanceUID"))
        else:
            groups.setdefault(str(dataset.SeriesInstanceUID), (dataset, []))[1].append(path)
    series = sorted((_series_info(uid, *group) for uid, group in groups.items()), key=_default_choice_key)
    return FolderScan(folder, tuple(series), tuple(non_dicom), tuple(unreadable))


def list_series(folder: str | os.PathLike, *, recursive: bool = True) -> list[SeriesInfo]:
    """The DICOM series in ``folder``, image series first (see :attr:`FolderScan.series`).

    Raises
    ------
    DicomError
        ``folder`` does not exist or is not a folder.
    """
    return list(scan_folder(folder, recursive=recursive).series)


def orientation_label(iop: np.ndarray | tuple[float, ...]) -> str:
    """Name the slice plane: sagittal, coronal or axial when the slice normal is within
    1 degree of the LPS x, y or z axis, else oblique.

    Parameters
    ----------
    iop : (6,) float array
        ImageOrientationPatient: row cosine then column cosine, LPS.
    """
    iop = np.asarray(iop, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    normal /= np.linalg.norm(normal)
    axis = int(np.argmax(np.abs(normal)))
    if abs(normal[axis]) < math.cos(math.radians(_PLANE_TOLERANCE_DEG)):
        return "oblique"
    return _PLANE_LABELS[axis]


# -- loading -------------------------------------------------------------------------------


def load_dicom_series(
    folder: str | os.PathLike,
    series_uid: str | None = None,
    *,
    allow_nonuniform: bool = False,
    recursive: bool = True,
) -> LoadedVolume:
    """Load one DICOM image series as a volume in LPS mm.

    Parameters
    ----------
    folder : str or path-like
        Folder searched for DICOM files (with sub-folders when ``recursive``).
    series_uid : str, optional
        SeriesInstanceUID to load. Default: the image series with the most files; ties
        go to the larger slice (rows x columns), then to the smaller UID.
    allow_nonuniform : bool
        Non-uniform slice steps raise :class:`DicomError` by default. When True the slices
        are resampled by linear interpolation along the normal onto a uniform grid with
        the median step, so every voxel stays where the tags put it (values between
        acquired slices are interpolated; a warning says so).

    Returns
    -------
    LoadedVolume
        ``image`` in the ``Mri`` frame (LPS, mm; see docs/frames.md). Values have
        RescaleSlope/Intercept applied: the stored integer type when every slice has
        slope 1 and intercept 0 and nothing is interpolated, else float32.

    Notes
    -----
    Missing slices (a step of about 2, 3... times the median step, anything over 1.5 times)
    do not stop loading: each is replaced by a blank (0) slice, so the geometry of all
    acquired slices stays exact, and a warning names the gap. Interpolating across the gap
    would invent anatomy; a blank slice is visibly not data.

    Raises
    ------
    DicomError
        No image series, unknown UID, a corrupt or truncated file (named), slices of
        different size, pixel spacing or orientation (files named), two slices at one
        position, a sheared stack, non-uniform spacing (unless ``allow_nonuniform``),
        multi-frame or colour images, missing geometry tags.
    """
    scan = scan_folder(folder, recursive=recursive)
    info = _select_series(scan, series_uid)
    datasets = {path: _read_image_file(path, with_pixels=True) for path in info.files}
    plan = _plan_stack([_slice_from_dataset(path, ds) for path, ds in datasets.items()], allow_nonuniform)
    voxels = _stack_pixels(plan, datasets)
    image = sitk.GetImageFromArray(voxels)
    image.SetSpacing([float(v) for v in plan.spacing_mm])
    image.SetOrigin([float(v) for v in plan.origin_lps_mm])
    image.SetDirection([float(v) for v in plan.direction.ravel()])
    first = datasets[plan.slices[0].path]
    return LoadedVolume(
        image=image,
        metadata=_metadata(first, info, plan, voxels.dtype),
        warnings=plan.warnings + scan.unreadable_warnings(),
        source_path=scan.folder,
    )


def load_dicom_file_series(path: str | os.PathLike, *, allow_nonuniform: bool = False) -> LoadedVolume:
    """Load the series that the DICOM file ``path`` belongs to, from the files in its folder.

    Raises
    ------
    DicomError
        ``path`` is missing, not DICOM, has no SeriesInstanceUID, or the series cannot be loaded.
    """
    path = require_regular_file(path, DicomError)
    dataset = read_dicom_file(path, stop_before_pixels=True)
    if dataset is None:
        raise DicomError("not a DICOM image file", path)
    if not dataset.get("SeriesInstanceUID"):
        raise DicomError("has no SeriesInstanceUID", path)
    return load_dicom_series(
        path.parent, str(dataset.SeriesInstanceUID), allow_nonuniform=allow_nonuniform, recursive=False
    )


def describe_dicom(folder: str | os.PathLike) -> dict[str, Any]:
    """Summary of a DICOM folder for ``workbench info``, from headers only (no pixels read).

    Returns
    -------
    dict
        JSON-serialisable: ``kind`` ("dicom"), ``path``, ``series`` (per series:
        ``series_uid``, ``description``, ``modality``, ``files`` (count), ``size``,
        ``orientation`` (label), ``patient_position``), and for the series loaded by
        default: ``selected_series_uid``, ``size`` (voxels i, j, k), ``spacing_mm``,
        ``origin_lps_mm`` (LPS mm), ``direction`` (9 numbers, row major), ``warnings``;
        plus ``non_dicom_files`` (count).

    Raises
    ------
    DicomError
        As :func:`load_dicom_series` for geometry problems of the default series.
    """
    scan = scan_folder(folder)
    info = _select_series(scan, None)
    headers = [_slice_from_dataset(path, _read_image_file(path, with_pixels=False)) for path in info.files]
    plan = _plan_stack(headers, allow_nonuniform=False)
    return {
        "kind": "dicom",
        "path": str(scan.folder),
        "series": [
            {
                "series_uid": entry.series_uid,
                "description": entry.description,
                "modality": entry.modality,
                "files": entry.n_files,
                "size": list(entry.size) if entry.size else None,
                "orientation": entry.orientation_label,
                "patient_position": entry.patient_position,
            }
            for entry in scan.series
        ],
        "selected_series_uid": info.series_uid,
        "size": [headers[0].cols, headers[0].rows, len(plan.sources)],
        "spacing_mm": [float(v) for v in plan.spacing_mm],
        "origin_lps_mm": [float(v) for v in plan.origin_lps_mm],
        "direction": [float(v) for v in plan.direction.ravel()],
        "warnings": plan.warnings + scan.unreadable_warnings(),
        "non_dicom_files": len(scan.non_dicom_files),
    }


# -- scanning helpers ----------------------------------------------------------------------


def _require_folder(folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    if not folder.exists():
        raise DicomError("folder not found", folder)
    if not folder.is_dir():
        raise DicomError("not a folder", folder)
    return folder


def _iter_files(folder: Path, recursive: bool) -> list[Path]:
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(path for path in candidates if path.is_file())


def _series_info(series_uid: str, first: Dataset, files: list[Path]) -> SeriesInfo:
    rows, cols = _number(first, "Rows", None), _number(first, "Columns", None)
    has_pixels = rows is not None and cols is not None
    iop = _numbers(first, "ImageOrientationPatient", 6)
    spacing = _numbers(first, "PixelSpacing", 2)
    return SeriesInfo(
        series_uid=series_uid,
        description=str(first.get("SeriesDescription", "")),
        modality=str(first.get("Modality", "")),
        size=(int(cols), int(rows), len(files)) if has_pixels else None,
        pixel_spacing_mm=(float(spacing[1]), float(spacing[0])) if spacing is not None else None,
        orientation=tuple(float(v) for v in iop) if iop is not None else None,
        orientation_label=_safe_orientation_label(iop),
        patient_position=str(first.get("PatientPosition", "")),
        has_pixels=has_pixels,
        files=tuple(files),
    )


def _safe_orientation_label(iop: np.ndarray | None) -> str | None:
    """Label for a listing: None when IOP is absent or degenerate (loading reports that)."""
    if iop is None or np.linalg.norm(np.cross(iop[:3], iop[3:])) < 0.5:
        return None
    return orientation_label(iop)


def _default_choice_key(info: SeriesInfo) -> tuple:
    pixels_per_slice = info.size[0] * info.size[1] if info.size else 0
    return (not info.has_pixels, -info.n_files, -pixels_per_slice, info.series_uid)


def _select_series(scan: FolderScan, series_uid: str | None) -> SeriesInfo:
    if series_uid is not None:
        info = next((entry for entry in scan.series if entry.series_uid == series_uid), None)
        if info is None:
            raise DicomError(f"no series with SeriesInstanceUID {series_uid} ({len(scan.series)} series found)", scan.folder)
        if not info.has_pixels:
            raise DicomError(f"series {series_uid} has no images (modality {info.modality or 'unknown'})", scan.folder)
        return info
    if scan.image_series:
        return scan.image_series[0]
    if scan.series:
        modalities = ", ".join(sorted({entry.modality or "unknown" for entry in scan.series}))
        raise DicomError(f"no image series: only {len(scan.series)} series without pixels ({modalities})", scan.folder)
    unreadable = f", {len(scan.unreadable_files)} unreadable DICOM files" if scan.unreadable_files else ""
    raise DicomError(f"no DICOM images found ({len(scan.non_dicom_files)} non-DICOM files{unreadable})", scan.folder)


# -- geometry ------------------------------------------------------------------------------


def _read_image_file(path: Path, *, with_pixels: bool) -> Dataset:
    dataset = read_dicom_file(path, stop_before_pixels=not with_pixels)
    if dataset is None:
        raise DicomError("is no longer a DICOM file (changed while loading?)", path)
    if with_pixels and "PixelData" not in dataset:
        raise DicomError("has no pixel data (the file may be truncated)", path)
    return dataset


def _slice_from_dataset(path: Path, dataset: Dataset) -> _Slice:
    if _number(dataset, "NumberOfFrames", 1.0) > 1:
        raise DicomError("multi-frame (enhanced) DICOM images are not supported; export single-frame slices", path)
    if _number(dataset, "SamplesPerPixel", 1.0) != 1:
        raise DicomError(f"colour images are not supported (SamplesPerPixel {dataset.SamplesPerPixel})", path)
    nominal = _number(dataset, "SpacingBetweenSlices", 0.0) or _number(dataset, "SliceThickness", 0.0)
    return _Slice(
        path=path,
        rows=int(_required_numbers(path, dataset, "Rows", 1)[0]),
        cols=int(_required_numbers(path, dataset, "Columns", 1)[0]),
        position_lps_mm=_required_numbers(path, dataset, "ImagePositionPatient", 3),
        orientation=_required_numbers(path, dataset, "ImageOrientationPatient", 6),
        pixel_spacing_mm=_required_numbers(path, dataset, "PixelSpacing", 2),
        nominal_spacing_mm=nominal if nominal > 0 else None,
        slope=_number(dataset, "RescaleSlope", 1.0),
        intercept=_number(dataset, "RescaleIntercept", 0.0),
    )


def _numbers(dataset: Dataset, keyword: str, count: int) -> np.ndarray | None:
    """``count`` finite numbers from a tag, or None when absent, empty or malformed."""
    value = dataset.get(keyword)
    if value is None or value == "":
        return None
    values = value if isinstance(value, (MultiValue, list, tuple)) else [value]
    try:
        numbers = np.array([float(v) for v in values], dtype=float)
    except (TypeError, ValueError):
        return None
    return numbers if numbers.shape == (count,) and np.all(np.isfinite(numbers)) else None


def _number(dataset: Dataset, keyword: str, default: float | None) -> float | None:
    """One number from a tag, or ``default`` when absent, empty or malformed."""
    numbers = _numbers(dataset, keyword, 1)
    return float(numbers[0]) if numbers is not None else default


def _required_numbers(path: Path, dataset: Dataset, keyword: str, count: int) -> np.ndarray:
    numbers = _numbers(dataset, keyword, count)
    if numbers is None:
        state = "missing" if dataset.get(keyword) in (None, "") else f"malformed ({dataset.get(keyword)!r})"
        raise DicomError(f"{keyword} is {state}; {count} finite number(s) are needed for the geometry", path)
    return numbers


def _plan_stack(slices: list[_Slice], allow_nonuniform: bool) -> _StackPlan:
    """Check that the slices form one regular stack and say how to build the volume."""
    _check_consistent(slices)
    row_cosine, col_cosine = _unit_cosines(slices[0])
    normal = np.cross(row_cosine, col_cosine)
    normal /= np.linalg.norm(normal)
    distances = np.array([s.position_lps_mm @ normal for s in slices])
    order = np.argsort(distances, kind="stable")
    slices = [slices[i] for i in order]
    distances = distances[order]
    _check_no_duplicates(slices, distances)
    _check_stacked_along_normal(slices, distances, normal)
    step_mm, sources, warnings = _slice_sources(slices, distances, allow_nonuniform)
    spacing = slices[0].pixel_spacing_mm
    return _StackPlan(
        slices=slices,
        origin_lps_mm=slices[0].position_lps_mm,
        direction=np.column_stack([row_cosine, col_cosine, normal]) + 0.0,  # + 0.0 turns -0.0 into 0.0
        spacing_mm=np.array([spacing[1], spacing[0], step_mm]),
        sources=sources,
        warnings=warnings,
    )


def _check_consistent(slices: list[_Slice]) -> None:
    first = slices[0]
    for other in slices[1:]:
        if (other.rows, other.cols) != (first.rows, first.cols):
            raise DicomError(
                f"slices differ in size: {first.path.name} is {first.cols}x{first.rows} (columns x rows) "
                f"but {other.path.name} is {other.cols}x{other.rows}",
                first.path.parent,
            )
    for other in slices[1:]:
        if not np.allclose(other.pixel_spacing_mm, first.pixel_spacing_mm, rtol=0, atol=1e-4):
            raise DicomError(
                f"pixel spacing differs: {first.path.name} has PixelSpacing {_fmt(first.pixel_spacing_mm)} "
                f"but {other.path.name} has {_fmt(other.pixel_spacing_mm)}",
                first.path.parent,
            )
    differing = [s for s in slices[1:] if not np.allclose(s.orientation, first.orientation, rtol=0, atol=_IOP_TOLERANCE)]
    if differing:
        raise DicomError(
            f"mixed orientation: ImageOrientationPatient of {differing[0].path.name} ({_fmt(differing[0].orientation)}) "
            f"differs from {first.path.name} ({_fmt(first.orientation)}); {len(differing)} of {len(slices)} files differ",
            first.path.parent,
        )


def _unit_cosines(first: _Slice) -> tuple[np.ndarray, np.ndarray]:
    row_cosine, col_cosine = first.orientation[:3], first.orientation[3:]
    lengths = np.array([np.linalg.norm(row_cosine), np.linalg.norm(col_cosine)])
    if np.any(np.abs(lengths - 1.0) > _UNIT_VECTOR_TOLERANCE) or abs(row_cosine @ col_cosine) > _UNIT_VECTOR_TOLERANCE:
        raise DicomError(
            f"ImageOrientationPatient {_fmt(first.orientation)} is not two orthogonal unit vectors", first.path
        )
    return row_cosine / lengths[0], col_cosine / lengths[1]


def _check_no_duplicates(slices: list[_Slice], distances: np.ndarray) -> None:
    steps = np.diff(distances)
    duplicate = np.flatnonzero(steps < _DUPLICATE_TOLERANCE_MM)
    if duplicate.size:
        a, b = slices[duplicate[0]], slices[duplicate[0] + 1]
        raise DicomError(
            f"duplicate slice position: {a.path.name} and {b.path.name} are both at {distances[duplicate[0]]:.3f} mm "
            f"along the slice normal ({duplicate.size} duplicates; several echoes or time points in one series?)",
            a.path.parent,
        )


def _check_stacked_along_normal(slices: list[_Slice], distances: np.ndarray, normal: np.ndarray) -> None:
    origin = slices[0].position_lps_mm
    positions = np.array([s.position_lps_mm for s in slices])
    offsets_mm = np.linalg.norm(positions - origin - np.outer(distances - distances[0], normal), axis=1)
    worst = int(np.argmax(offsets_mm))
    if offsets_mm[worst] > _INPLANE_TOLERANCE_PX * float(np.min(slices[0].pixel_spacing_mm)):
        raise DicomError(
            f"slices are not stacked along the slice normal: {slices[worst].path.name} is shifted "
            f"{offsets_mm[worst]:.3f} mm in-plane from {slices[0].path.name} (gantry tilt or sheared stacks are not supported)",
            slices[0].path.parent,
        )


def _slice_sources(
    slices: list[_Slice], distances: np.ndarray, allow_nonuniform: bool
) -> tuple[float, list[tuple[int, int, float] | None], list[str]]:
    """Slice step (mm), where each output slice comes from, and warnings."""
    if len(slices) == 1:
        step_mm = slices[0].nominal_spacing_mm or 1.0
        source = "SpacingBetweenSlices/SliceThickness" if slices[0].nominal_spacing_mm else "a default of 1 mm"
        return step_mm, [(0, 0, 0.0)], [f"single-slice series: slice spacing {step_mm:g} mm taken from {source}"]
    steps = np.diff(distances)
    median = float(np.median(steps))
    tolerance = max(_SPACING_TOLERANCE_MIN_MM, _SPACING_TOLERANCE_REL * median)
    if np.all(np.abs(steps - median) <= tolerance):
        step_mm = float(distances[-1] - distances[0]) / (len(slices) - 1)
        return step_mm, [(k, k, 0.0) for k in range(len(slices))], []
    multiples = np.maximum(np.round(steps / median), 1)
    if np.all(np.abs(steps - multiples * median) <= tolerance):
        return _fill_missing(slices, steps, multiples, median)
    if not allow_nonuniform:
        widest = int(np.argmax(np.abs(steps - median)))
        raise DicomError(
            f"non-uniform slice spacing: steps range from {steps.min():.4g} to {steps.max():.4g} mm "
            f"(median {median:.4g} mm; {steps[widest]:.4g} mm between {slices[widest].path.name} and "
            f"{slices[widest + 1].path.name}); pass allow_nonuniform=True to resample onto a uniform grid",
            slices[0].path.parent,
        )
    return _resample_uniform(distances, steps, median)


def _fill_missing(
    slices: list[_Slice], steps: np.ndarray, multiples: np.ndarray, median: float
) -> tuple[float, list[tuple[int, int, float] | None], list[str]]:
    """Blank slices in the gaps of a stack whose steps are whole multiples of the median step."""
    sources: list[tuple[int, int, float] | None] = [(0, 0, 0.0)]
    warnings = []
    for k, multiple in enumerate(multiples.astype(int)):
        if multiple > 1:
            warnings.append(
                f"{multiple - 1} slice(s) missing: gap of {steps[k]:.4g} mm between {slices[k].path.name} and "
                f"{slices[k + 1].path.name} (slice spacing {median:.4g} mm); filled with blank (0) slices, geometry kept"
            )
        sources.extend([None] * (multiple - 1) + [(k + 1, k + 1, 0.0)])
    step_mm = float(np.sum(steps)) / float(np.sum(multiples))
    return step_mm, sources, warnings


def _resample_uniform(
    distances: np.ndarray, steps: np.ndarray, median: float
) -> tuple[float, list[tuple[int, int, float] | None], list[str]]:
    """Linear interpolation weights onto slices every ``median`` mm from the first slice.

    The grid stops at the last acquired slice (never extrapolates past it).
    """
    count = int(np.floor((distances[-1] - distances[0]) / median + _SPACING_TOLERANCE_REL)) + 1
    targets = distances[0] + median * np.arange(count)
    lower = np.clip(np.searchsorted(distances, targets, side="right") - 1, 0, len(distances) - 2)
    weights = np.clip((targets - distances[lower]) / (distances[lower + 1] - distances[lower]), 0.0, 1.0)
    sources = [(int(i), int(i) + 1, float(w)) for i, w in zip(lower, weights)]
    warning = (
        f"non-uniform slice spacing (steps {steps.min():.4g} to {steps.max():.4g} mm): resampled by linear "
        f"interpolation onto {count} slices every {median:.4g} mm"
    )
    return median, sources, [warning]


# -- pixels and metadata -------------------------------------------------------------------


def _stack_pixels(plan: _StackPlan, datasets: dict[Path, Dataset]) -> np.ndarray:
    """(K, rows, columns) array of rescaled values, K = number of output slices."""
    identity = all(s.slope == 1.0 and s.intercept == 0.0 for s in plan.slices)
    frames = [_pixel_array(s, datasets[s.path]) for s in plan.slices]
    if not identity or plan.interpolates:
        frames = [frame.astype(np.float32) * s.slope + s.intercept for frame, s in zip(frames, plan.slices)]
    first = plan.slices[0]
    voxels = np.zeros((len(plan.sources), first.rows, first.cols), dtype=frames[0].dtype)
    for k, source in enumerate(plan.sources):
        if source is None:
            continue
        lower, upper, weight = source
        voxels[k] = frames[lower] if weight == 0.0 else (1.0 - weight) * frames[lower] + weight * frames[upper]
    return voxels


def _pixel_array(header: _Slice, dataset: Dataset) -> np.ndarray:
    try:
        pixels = dataset.pixel_array
    except Exception as exc:  # noqa: BLE001 - pydicom's decoders raise many types on corrupt or unsupported data
        syntax = dataset.file_meta.get("TransferSyntaxUID", "unknown transfer syntax")
        name = getattr(syntax, "name", str(syntax))
        raise DicomError(f"cannot decode pixel data ({name}): {_one_line(exc)}", header.path) from None
    return pixels  # (rows, columns): single-frame, single-sample was checked with the header


def _metadata(first: Dataset, info: SeriesInfo, plan: _StackPlan, dtype: np.dtype) -> dict[str, Any]:
    """Non-identifying facts about the series (no names, IDs, dates, institutions, UIDs)."""
    slopes = sorted({s.slope for s in plan.slices})
    intercepts = sorted({s.intercept for s in plan.slices})
    return {
        "source_kind": "dicom",
        "modality": info.modality,
        "series_description": info.description,
        "protocol_name": str(first.get("ProtocolName", "")),
        "series_number": _number(first, "SeriesNumber", None),
        "patient_position": info.patient_position,
        "manufacturer": str(first.get("Manufacturer", "")),
        "manufacturer_model": str(first.get("ManufacturerModelName", "")),
        "body_part_examined": str(first.get("BodyPartExamined", "")),
        "magnetic_field_strength_t": _number(first, "MagneticFieldStrength", None),
        "slice_thickness_mm": _number(first, "SliceThickness", None),
        "number_of_slices": len(plan.slices),
        "orientation": orientation_label(plan.slices[0].orientation),
        "rescale": {
            "slope": slopes[0] if len(slopes) == 1 else slopes,
            "intercept": intercepts[0] if len(intercepts) == 1 else intercepts,
        },
        "pixel_type": np.dtype(dtype).name,
    }


def _fmt(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{float(v):.6g}" for v in values) + "]"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
