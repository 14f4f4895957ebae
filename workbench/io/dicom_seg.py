"""DICOM Segmentation objects (Modality ``SEG``): segments with their descriptions, as boolean masks.

Read with ``highdicom``. Each segment has a ``SegmentLabel`` (free text, e.g. ``vertebra_L4``)
and a ``SegmentedPropertyTypeCodeSequence`` (a coded concept, e.g. SNOMED "Kidney"); both are
returned as written, and the importer (:mod:`workbench.case.labels`) translates them into the
vocabulary. The frames are placed by their own per-frame positions
(``PlanePositionSequence.ImagePositionPatient``, with the shared ``ImageOrientationPatient`` and
``PixelSpacing``): highdicom's :meth:`~highdicom.seg.Segmentation.get_volume` stacks them into a
regular volume (frames the SEG omits because they are empty are filled with zeros) and its
affine (index -> LPS mm) becomes the geometry of a SimpleITK image. DICOM's patient frame is
LPS, so no axis is flipped.

Refused, naming the file (and the segment): not a DICOM file, not a SEG, a FRACTIONAL SEG
(probabilities would have to be thresholded: a guess), frames that do not form one volume, a
segment without voxels, two segments on one voxel (the workbench's label maps hold one
structure per voxel).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from workbench.anatomy import LabelMapError
from workbench.io.paths import require_regular_file

__all__ = ["DicomSegment", "DicomSegmentation", "is_dicom_seg", "read_dicom_seg"]


@dataclass(frozen=True)
class DicomSegment:
    """One item of a SEG's ``SegmentSequence``.

    Attributes
    ----------
    number : int
        ``SegmentNumber`` (1-based).
    label : str
        ``SegmentLabel``.
    property_type : str
        ``CodeMeaning`` of ``SegmentedPropertyTypeCodeSequence`` (``""`` if absent).
    property_code : str
        ``CodingSchemeDesignator:CodeValue`` of the same (``""`` if absent).
    """

    number: int
    label: str
    property_type: str = ""
    property_code: str = ""

    def describe(self) -> str:
        """``"segment 1 'vertebra_L4' (type 'Bone')"`` for messages."""
        kind = f" (type {self.property_type!r})" if self.property_type else ""
        return f"segment {self.number} {self.label!r}{kind}"


@dataclass(frozen=True)
class DicomSegmentation:
    """A DICOM SEG read: geometry, segments and their masks.

    Attributes
    ----------
    path : Path
    reference : SimpleITK.Image
        3D image carrying the stacked frames' geometry (LPS mm): index i along a frame's
        columns, j along its rows, k across frames.
    segments : tuple of DicomSegment
        By segment number.
    masks : tuple of (K, J, I) bool arrays
        ``masks[n]`` is where ``segments[n]`` is; disjoint.
    """

    path: Path
    reference: sitk.Image
    segments: tuple[DicomSegment, ...]
    masks: tuple[np.ndarray, ...]


def is_dicom_seg(path: str | os.PathLike) -> bool:
    """True for a regular file that reads as DICOM with Modality ``SEG`` (header only)."""
    import pydicom

    path = Path(path)
    if not path.is_file():
        return False
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"])
    except Exception:  # noqa: BLE001 - any unreadable file is simply not a DICOM SEG
        return False
    return str(getattr(header, "Modality", "")) == "SEG"


def _code(item, attribute: str) -> tuple[str, str]:
    sequence = getattr(item, attribute, None)
    if not sequence:
        return "", ""
    code = sequence[0]
    return str(getattr(code, "CodeMeaning", "")), f"{getattr(code, 'CodingSchemeDesignator', '')}:{getattr(code, 'CodeValue', '')}"


def _geometry(affine: np.ndarray, spatial_shape: tuple[int, int, int], path: Path) -> sitk.Image:
    """A SimpleITK image whose (i, j, k) = highdicom's (column, row, slice) under ``affine``."""
    columns = affine[:3, :3]  # columns: slice, row, column directions times spacing
    axes_ijk = [columns[:, 2], columns[:, 1], columns[:, 0]]
    spacing = [float(np.linalg.norm(a)) for a in axes_ijk]
    if spacing[2] == 0.0:  # one frame: no step across frames; any unit normal keeps the positions
        normal = np.cross(axes_ijk[0], axes_ijk[1])
        axes_ijk[2] = normal / np.linalg.norm(normal)
        spacing[2] = 1.0
    if min(spacing) <= 0.0:
        raise LabelMapError(f"{path}: the SEG's frames have no usable pixel spacing")
    direction = np.stack([a / s for a, s in zip(axes_ijk, spacing)], axis=1)
    image = sitk.Image([int(spatial_shape[2]), int(spatial_shape[1]), int(spatial_shape[0])], sitk.sitkUInt8)
    image.SetSpacing(spacing)
    image.SetOrigin([float(v) for v in affine[:3, 3]])
    image.SetDirection([float(v) for v in direction.ravel()])
    return image


def read_dicom_seg(path: str | os.PathLike) -> DicomSegmentation:
    """Read a DICOM SEG file: its segments' descriptions and one mask each, placed by frame positions.

    Parameters
    ----------
    path : str or path-like
        A DICOM Segmentation (BINARY, or LABELMAP whose pixel values are segment numbers) file.

    Returns
    -------
    DicomSegmentation
        Geometry in LPS mm (the stacked frames) and (K, J, I) bool masks, one per segment.

    Raises
    ------
    LabelMapError
        Naming the file: not DICOM, not a SEG, FRACTIONAL, frames that are not one volume,
        an empty segment, overlapping segments.
    """
    import highdicom as hd
    import pydicom

    path = require_regular_file(path, LabelMapError, "DICOM SEG file")
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"])
    except Exception as exc:  # noqa: BLE001 - pydicom raises InvalidDicomError, OSError, ... on a bad file
        raise LabelMapError(f"{path}: not a DICOM file ({type(exc).__name__}: {exc})") from None
    if str(getattr(header, "Modality", "")) != "SEG":
        raise LabelMapError(f"{path}: not a DICOM SEG (Modality {getattr(header, 'Modality', 'missing')!s})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            seg = hd.seg.segread(path)
    except Exception as exc:  # noqa: BLE001 - pydicom/highdicom raise many types on a bad file
        raise LabelMapError(f"{path}: not a readable DICOM Segmentation ({type(exc).__name__}: {exc})") from None
    if str(seg.SegmentationType) == "FRACTIONAL":
        raise LabelMapError(f"{path}: a FRACTIONAL DICOM SEG holds probabilities; export a BINARY or LABELMAP SEG")
    segments = []
    for item in seg.SegmentSequence:
        meaning, code = _code(item, "SegmentedPropertyTypeCodeSequence")
        segments.append(DicomSegment(int(item.SegmentNumber), str(getattr(item, "SegmentLabel", "")).strip(), meaning, code))
    segments = sorted((s for s in segments if s.number != 0), key=lambda s: s.number)  # 0: a LABELMAP's background
    if not segments:
        raise LabelMapError(f"{path}: the SEG describes no segment")
    labelmap = str(seg.SegmentationType) == "LABELMAP"  # one frame per position, pixel values are segment numbers
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if labelmap:
                volume = seg.get_volume(combine_segments=True, relabel=False, allow_missing_positions=True)
            else:
                volume = seg.get_volume(combine_segments=False, allow_missing_positions=True,
                                        segment_numbers=[s.number for s in segments])
    except Exception as exc:  # noqa: BLE001 - highdicom raises ValueError/RuntimeError on irregular frames
        raise LabelMapError(f"{path}: the SEG's frames do not form one volume ({exc})") from None
    array = np.asarray(volume.array)  # (slices, rows, columns, segments), or (slices, rows, columns) of numbers
    if labelmap:
        array = np.stack([array == s.number for s in segments], axis=-1)
    elif array.ndim == 3:
        array = array[..., np.newaxis]
    reference = _geometry(np.asarray(volume.affine, float), array.shape[:3], path)
    masks = []
    owner = np.full(array.shape[:3], -1, np.int32)
    for number, segment in enumerate(segments):
        mask = array[..., number] > 0
        if not mask.any():
            raise LabelMapError(f"{path}: {segment.describe()} is empty (no voxel)")
        taken = mask & (owner >= 0)
        if taken.any():
            other = segments[int(owner[taken].flat[0])]
            raise LabelMapError(
                f"{path}: {segment.describe()} and {other.describe()} overlap in {int(taken.sum())} voxels; "
                "a label map holds one structure per voxel"
            )
        owner[mask] = number
        masks.append(mask)
    return DicomSegmentation(path, reference, tuple(segments), tuple(masks))
