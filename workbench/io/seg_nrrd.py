"""3D Slicer segmentation files (``.seg.nrrd``): segments with their names, and where they are.

A ``.seg.nrrd`` is a NRRD label image whose header names the segments::

    Segment0_ID:=Segment_1
    Segment0_Name:=vertebrae_L4
    Segment0_LabelValue:=1
    Segment0_Layer:=0
    Segment0_Extent:=12 40 3 60 0 25

Slicer writes either one 3D labelmap (every segment in layer 0, told apart by its label value)
or, when segments overlap, a 4D file whose first axis (NRRD kind ``list``) holds several layers;
a segment is the voxels of its layer equal to its label value. ``Segment<N>_Extent`` is the
segment's bounding box (index ranges i0 i1 j0 j1 k0 k1) in the reference image's voxel grid
and is only reported here: the voxels come from the image. Missing ``LabelValue`` means 1 and
missing ``Layer`` means 0, as in Slicer.

:func:`read_seg_nrrd` reads such a file into a :class:`SlicerSegmentation`: the 3D geometry
(SimpleITK image, LPS mm; SimpleITK converts a ``right-anterior-superior`` header), the layers,
and per segment its voxel count, mask (:meth:`SlicerSegmentation.mask`) or one label image of
all segments (:meth:`SlicerSegmentation.label_image`, one lookup per layer: no mask per segment
is held, so a segmentation of a hundred structures costs the layers' memory only). It refuses,
naming the file and the segment: no ``Segment<N>_Name`` in the header, a malformed value, a
layer outside the file, two segments with the same layer and value, a value in the image that no
segment names, an empty segment, and voxels that belong to segments of two layers (the
workbench's label maps hold one structure per voxel). Names are returned as written; translating
them into the vocabulary is the importer's job (:mod:`workbench.case.labels`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from workbench.anatomy import LabelMapError
from workbench.io.paths import detached_data_file, require_regular_file

__all__ = ["SlicerSegment", "SlicerSegmentation", "is_seg_nrrd", "read_seg_nrrd"]

_SEGMENT_KEY = re.compile(r"^Segment(\d+)_(\w+)$")
_ITK_PREFIX = re.compile(r"^(itk::ERROR: |ITK ERROR: )?\w+\(0x[0-9a-fA-F]+\): ")


@dataclass(frozen=True)
class SlicerSegment:
    """One segment of a ``.seg.nrrd`` header.

    Attributes
    ----------
    index : int
        N of the ``Segment<N>_`` keys.
    segment_id : str
        ``Segment<N>_ID`` (Slicer's identifier; ``""`` if absent).
    name : str
        ``Segment<N>_Name`` as written.
    label_value : int
        Voxel value of the segment in its layer (``Segment<N>_LabelValue``, default 1).
    layer : int
        Layer (index along the file's first, ``list`` axis; 0 for a 3D file).
    extent_ijk : tuple of 6 int or None
        ``Segment<N>_Extent``: i0 i1 j0 j1 k0 k1 in the reference image's voxel grid.
    """

    index: int
    segment_id: str
    name: str
    label_value: int
    layer: int
    extent_ijk: tuple[int, ...] | None = None

    def describe(self) -> str:
        """``"segment 'vertebrae_L4' (Segment0, layer 0, value 1)"`` for messages."""
        return f"segment {self.name!r} (Segment{self.index}, layer {self.layer}, value {self.label_value})"


@dataclass(frozen=True)
class SlicerSegmentation:
    """A ``.seg.nrrd`` read: geometry, layers and segments.

    Attributes
    ----------
    path : Path
    reference : SimpleITK.Image
        3D image carrying the geometry (origin, spacing, direction in LPS mm).
    layers : (K, J, I, L) int array
        The file's voxels, one 3D layer per index of the last axis (L = 1 for a 3D file).
    segments : tuple of SlicerSegment
        In header order (``Segment0`` first); checked disjoint and not empty.
    voxel_counts : tuple of int
        Voxels of each segment.
    """

    path: Path
    reference: sitk.Image
    layers: np.ndarray
    segments: tuple[SlicerSegment, ...]
    voxel_counts: tuple[int, ...]

    def mask(self, number: int) -> np.ndarray:
        """(K, J, I) bool: where ``segments[number]`` is."""
        segment = self.segments[number]
        return self.layers[..., segment.layer] == segment.label_value

    def label_image(self, values: Sequence[int]) -> np.ndarray:
        """(K, J, I) labels: ``values[n]`` where ``segments[n]`` is, 0 elsewhere (segments are disjoint).

        Parameters
        ----------
        values : sequence of int, one per segment
            Output value of each segment (several segments may share one).
        """
        dtype = np.uint8 if max(values, default=0) < 256 else np.uint16 if max(values) < 65536 else np.int32
        out = np.zeros(self.layers.shape[:3], dtype)
        for layer in range(self.layers.shape[-1]):
            entries = [(s.label_value, v) for s, v in zip(self.segments, values) if s.layer == layer]
            if not entries:
                continue
            lookup = np.zeros(int(self.layers[..., layer].max()) + 1, dtype)
            for label_value, value in entries:
                if label_value < lookup.size:
                    lookup[label_value] = value
            layer_values = lookup[self.layers[..., layer]]
            out = np.maximum(out, layer_values)  # disjoint: at most one layer is non-zero per voxel
        return out


def is_seg_nrrd(path: str | os.PathLike) -> bool:
    """True for a file named ``*.seg.nrrd`` (3D Slicer's segmentation file ending)."""
    path = Path(path)
    return path.name.lower().endswith(".seg.nrrd")


def _int(text: str, path: Path, key: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise LabelMapError(f"{path}: {key} is {text!r}, not an integer") from None


def _segments(reader: sitk.ImageFileReader, path: Path) -> list[SlicerSegment]:
    fields: dict[int, dict[str, str]] = {}
    for key in reader.GetMetaDataKeys():
        match = _SEGMENT_KEY.match(key)
        if match:
            fields.setdefault(int(match.group(1)), {})[match.group(2)] = reader.GetMetaData(key)
    if not any("Name" in entry for entry in fields.values()):
        raise LabelMapError(f"{path}: not a 3D Slicer segmentation (no Segment<N>_Name in its header)")
    segments = []
    for index in sorted(fields):
        entry = fields[index]
        if "Name" not in entry or not entry["Name"].strip():
            raise LabelMapError(f"{path}: Segment{index} has no name (Segment{index}_Name)")
        extent = None
        if entry.get("Extent", "").strip():
            parts = entry["Extent"].split()
            if len(parts) != 6:
                raise LabelMapError(f"{path}: Segment{index}_Extent needs 6 integers (i0 i1 j0 j1 k0 k1), got {entry['Extent']!r}")
            extent = tuple(_int(p, path, f"Segment{index}_Extent") for p in parts)
        segments.append(
            SlicerSegment(
                index=index,
                segment_id=entry.get("ID", "").strip(),
                name=entry["Name"].strip(),
                label_value=_int(entry.get("LabelValue", "1"), path, f"Segment{index}_LabelValue"),
                layer=_int(entry.get("Layer", "0"), path, f"Segment{index}_Layer"),
                extent_ijk=extent,
            )
        )
    return segments


def read_seg_nrrd(path: str | os.PathLike) -> SlicerSegmentation:
    """Read a 3D Slicer ``.seg.nrrd``: its segments (names from the header) and one mask each.

    Parameters
    ----------
    path : str or path-like
        A ``.seg.nrrd`` file: a 3D labelmap (one layer) or a 4D file of layers (first axis).

    Returns
    -------
    SlicerSegmentation
        Geometry in LPS mm, the layers, and the segments (disjoint, none empty).

    Raises
    ------
    LabelMapError
        Naming the file (and the segment): unreadable, not 3D/4D integer, no segment names,
        malformed header values, a layer the file lacks, two segments sharing a layer and value,
        a value no segment names, an empty segment, segments of two layers on one voxel.
    """
    path = require_regular_file(path, LabelMapError, "segmentation file")
    detached_data_file(path, LabelMapError)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        segments = _segments(reader, path)
        image = reader.Execute()
    except RuntimeError as exc:
        lines = [_ITK_PREFIX.sub("", line).strip() for line in str(exc).splitlines()[1:]]
        problem = " -- ".join(line for line in lines if line) or "unreadable"
        raise LabelMapError(f"{path}: cannot read the segmentation ({problem})") from None
    if image.GetDimension() != 3:
        raise LabelMapError(f"{path}: a segmentation must be 3D (or 4D with layers), got {image.GetDimension()}D")
    layers = sitk.GetArrayFromImage(image)  # (K, J, I) or (K, J, I, layers)
    if not np.issubdtype(layers.dtype, np.integer):
        raise LabelMapError(f"{path}: segment values must be integers, the file holds {layers.dtype}")
    if layers.ndim == 3:
        layers = layers[..., np.newaxis]
    n_layers = layers.shape[-1]
    reference = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    reference.SetOrigin(image.GetOrigin())
    reference.SetSpacing(image.GetSpacing())
    reference.SetDirection(image.GetDirection())

    claimed: dict[tuple[int, int], SlicerSegment] = {}
    for segment in segments:
        if not 0 <= segment.layer < n_layers:
            raise LabelMapError(f"{path}: {segment.describe()} is in layer {segment.layer}, the file has {n_layers}")
        if segment.label_value <= 0:
            raise LabelMapError(f"{path}: {segment.describe()} has label value {segment.label_value}; values start at 1")
        key = (segment.layer, segment.label_value)
        if key in claimed:
            raise LabelMapError(f"{path}: {segment.describe()} and {claimed[key].describe()} share layer and value")
        claimed[key] = segment
    for layer in range(n_layers):
        present = np.unique(layers[..., layer])
        unnamed = [int(v) for v in present if v != 0 and (layer, int(v)) not in claimed]
        if unnamed:
            raise LabelMapError(
                f"{path}: layer {layer} holds label values no segment names: " + ", ".join(map(str, unnamed[:10]))
            )
    counts = []
    for segment in segments:
        count = int(np.count_nonzero(layers[..., segment.layer] == segment.label_value))
        if count == 0:
            raise LabelMapError(f"{path}: {segment.describe()} is empty (no voxel)")
        counts.append(count)
    if n_layers > 1:
        named = np.zeros(layers.shape[:3], np.uint8)
        for layer in range(n_layers):
            named += layers[..., layer] != 0  # every non-zero value is a segment's (checked above)
        if (named > 1).any():
            voxel = tuple(np.argwhere(named > 1)[0])
            first, second = [s for s in segments if layers[voxel + (s.layer,)] == s.label_value][:2]
            both = (layers[..., first.layer] == first.label_value) & (layers[..., second.layer] == second.label_value)
            raise LabelMapError(
                f"{path}: overlapping layers: {second.describe()} and {first.describe()} share "
                f"{int(both.sum())} voxels; a label map holds one structure per voxel"
            )
    return SlicerSegmentation(path, reference, layers, tuple(segments), tuple(counts))
