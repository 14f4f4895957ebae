"""PLUS sequence files: tracked ultrasound frames with per-frame transforms, read and written.

A sequence file is a MetaIO image (``.igs.mha``, ``.seq.mha``, ``.mha``; or ``.mhd`` with a
``.raw`` / ``.zraw`` data file beside it) or a NRRD image (``.igs.nrrd``, ``.seq.nrrd``,
``.nrrd``) whose last axis is time, plus one set of ``Seq_FrameNNNN_<Name>`` fields per frame:

- ``<From>To<To>Transform``: 16 numbers, the row-major 4x4 matrix mapping column vectors in
  ``<From>`` to ``<To>`` (translation in the unit of ``<To>``, mm for tracker frames; the
  ``Image`` frame is in pixels). See docs/frames.md.
- ``<From>To<To>TransformStatus``: ``OK`` or ``INVALID`` (a missing status means OK). An INVALID
  frame still carries a matrix (identity or junk): it is kept, marked, and never used.
- ``Timestamp`` (s), ``ImageStatus`` (``Status`` in NRRD), and any other field (``FrameNumber``,
  ``UnfilteredTimestamp``, ...), kept verbatim so that a read file writes back unchanged.

Files as PLUS writes them are read, not refused:

- A field given more than once (e.g. ``Kinds`` twice) keeps its last value, as PLUS's readers
  and MetaIO do, with a :class:`SequenceFileWarning` naming the file, the field and the values.
- Tracking-only recordings (a stylus or tracker alone): ``DimSize = 0 0 N`` (or ``1 1 N``) with
  ``ElementType = MET_OTHER`` (NRRD ``type: none``) and no pixel data. They read as a
  :class:`TrackedSequence` whose :attr:`~TrackedSequence.has_images` is False, images of shape
  (N, 0, 0) and every image status INVALID; whatever needs images raises
  ``"tracking-only sequence: no images"`` naming the file. They are written back the same way.

Pixels are returned as stored: frames in file order, rows and columns as in the file, in the
file's ``UltrasoundImageOrientation`` (``MF``, ``MFA``, ...) -- nothing is flipped here.
Reference: PLUS "Sequence file" and "Ultrasound image orientation" pages.
"""

from __future__ import annotations

import contextlib
import operator
import os
import re
import warnings
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbench._atomic import atomic_open
from workbench.errors import FrameError, SequenceFileError
from workbench.frames import Transform, TransformRepository, is_transform_name, split_transform_name
from workbench.io import _seq_metaio, _seq_nrrd
from workbench.io.paths import require_regular_file
from workbench.validation import MAX_COORDINATE_MM
from workbench.io._seq_common import (
    ParsedHeader,
    PixelLayout,
    RepeatedField,
    SequenceFileWarning,
    check_data_size,
    decode_header,
    encode_pixels,
    format_float,
    has_control_characters,
    parse_float,
    read_header_bytes,
    read_pixels,
)

__all__ = [
    "IMAGE_ORIENTATIONS",
    "TRACKING_ONLY",
    "SequenceFileWarning",
    "TrackedSequence",
    "describe_sequence",
    "pose_series",
    "read_sequence",
    "write_sequence",
]

#: Ultrasound image orientations PLUS knows (2D B-mode, 2D RF, 3D B-mode; XX = not ultrasound).
IMAGE_ORIENTATIONS = frozenset(
    {"MF", "MN", "UF", "UN", "FM", "NM", "FU", "NU", "MFA", "MNA", "UFA", "UNA", "MFD", "MND", "UFD", "UND", "XX"}
)
#: Orientation assumed when a file does not state one (PLUS's internal 2D B-mode orientation).
DEFAULT_IMAGE_ORIENTATION = "MF"
#: Largest allowed max |R^T R - I| of the rotation part of an OK transform between mm frames.
ORTHONORMAL_TOLERANCE = 1e-3
# scale factors a transform to or from a pixel frame may carry (mm per pixel of any ultrasound image, and back)
_MIN_PIXEL_SCALE = 1e-4
_MAX_PIXEL_SCALE = 1e4
#: Start of the error raised when something needs the images of a sequence that has none.
TRACKING_ONLY = "tracking-only sequence: no images"
#: Repeated fields warned about one by one; beyond this, one more warning counts the rest.
_MAX_REPEAT_WARNINGS = 20

_ORIENTATION_FIELD = "UltrasoundImageOrientation"
_TIMESTAMP_FIELD = "Timestamp"
_TRANSFORM_SUFFIX = "Transform"
_STATUS_SUFFIX = "TransformStatus"
_FRAME_PREFIX = "Seq_Frame"
_FRAME_FIELD_RE = re.compile(r"Seq_Frame(\d+)_(.+)", re.ASCII | re.DOTALL)
_MAX_FRAME_INDEX = 10**9 - 1
_MAX_LISTED_GAPS = 1000
_LAST_ROW = np.array([0.0, 0.0, 0.0, 1.0])
_LAST_ROW_TOLERANCE = 1e-9


@dataclass(eq=False)
class TrackedSequence:
    """A tracked recording: N frames, each with a timestamp, poses and (unless tracking-only) an image.

    A *tracking-only* sequence (a stylus or tracker recording, PLUS's ``DimSize = 0 0 N``,
    ``ElementType = MET_OTHER``) has no image: :attr:`has_images` is False, :attr:`images` has
    shape (N, 0, 0) (None is accepted when building one), :attr:`image_size_px` is (0, 0), every
    :attr:`image_status` is False, and :meth:`images_mf` / :meth:`require_images` raise
    ``SequenceFileError("tracking-only sequence: no images ...")`` naming the file.

    Attributes
    ----------
    images : (N, H, W) array, (N, H, W, C) for multi-channel pixels, or None
        Pixels in file order and file orientation, dtype as stored (native byte order).
        Tracking-only files read as a uint8 array of shape (N, 0, 0); None is accepted when
        building or writing one.
    timestamps_s : (N,) float array, s
        ``Seq_FrameNNNN_Timestamp`` (PLUS's filtered acquisition time).
    transforms : dict of str to (N, 4, 4) float64 array
        Per-frame matrices by transform name without the ``Transform`` suffix
        (``"ProbeToTracker"``); row-major, p_To = M @ p_From, translation in mm of the
        to-frame (pixels for ``Image``). See docs/frames.md. INVALID frames keep the
        matrix found in the file (NaN where it was missing or unreadable).
    transform_status : dict of str to (N,) bool array
        True where the transform's status is OK. Defaults to all OK.
    image_status : (N,) bool array
        True where ``ImageStatus`` (NRRD: ``Status``) is OK or absent. Defaults to all OK, or
        all False for a tracking-only sequence (there is no image to be OK, whatever the file says).
    frame_fields : dict of str to list of (str or None)
        Every other per-frame field (``FrameNumber``, ``UnfilteredTimestamp``, ...), one value
        per frame (None where a frame lacks it), kept verbatim for round trips.
    header : dict of str to str
        Non-frame, non-layout header fields in file order (``UltrasoundImageType``, MetaIO's
        ``ElementSpacing``/``Offset``/..., custom fields), MetaIO spelling. The orientation
        lives in :attr:`image_orientation`, not here.
    image_orientation : str
        ``UltrasoundImageOrientation`` of the pixels (``"MF"``, ``"MFA"``, ...); ``"MF"`` when
        the file does not say.
    frame_indices : (N,) int array
        The ``NNNN`` of ``Seq_FrameNNNN`` for each frame, increasing; gaps show dropped frames.
        Defaults to 0..N-1.
    source_path : Path or None
        File this sequence was read from.
    """

    images: np.ndarray | None
    timestamps_s: np.ndarray
    transforms: dict[str, np.ndarray] = field(default_factory=dict)
    transform_status: dict[str, np.ndarray] = field(default_factory=dict)
    image_status: np.ndarray | None = None
    frame_fields: dict[str, list[str | None]] = field(default_factory=dict)
    header: dict[str, str] = field(default_factory=dict)
    image_orientation: str = DEFAULT_IMAGE_ORIENTATION
    frame_indices: np.ndarray | None = None
    source_path: Path | None = None

    def __post_init__(self) -> None:
        count = len(self.timestamps_s)
        if self.image_status is None:
            self.image_status = np.full(count, self.has_images, dtype=bool)
        if self.frame_indices is None:
            self.frame_indices = np.arange(count)
        defaults = {name: np.ones(count, dtype=bool) for name in self.transforms}
        self.transform_status = {**defaults, **self.transform_status}

    def __len__(self) -> int:
        return len(self.timestamps_s)

    @property
    def has_images(self) -> bool:
        """False for a tracking-only sequence: no frame has pixels (``images`` None or (N, 0, 0))."""
        shape = getattr(self.images, "shape", ())
        return len(shape) >= 3 and shape[1] * shape[2] > 0

    @property
    def image_size_px(self) -> tuple[int, int]:
        """(width, height) of one frame in pixels; (0, 0) without images."""
        if not self.has_images:
            return (0, 0)
        return (int(self.images.shape[2]), int(self.images.shape[1]))

    def require_images(self, purpose: str = "this step") -> np.ndarray:
        """:attr:`images`, or a clear error if the sequence is tracking-only.

        Parameters
        ----------
        purpose : str
            What needs the images, for the message (``"volume reconstruction"``).

        Raises
        ------
        SequenceFileError
            ``"<file>: tracking-only sequence: no images (<purpose> needs ultrasound frames; ...)"``.
        """
        if not self.has_images:
            transforms = ", ".join(self.transforms) or "none"
            raise SequenceFileError(
                f"{TRACKING_ONLY} ({purpose} needs ultrasound frames; this recording holds "
                f"{len(self)} frame{'s' if len(self) != 1 else ''} of transforms only: {transforms})",
                self.source_path,
            )
        return self.images

    def images_mf(self) -> np.ndarray:
        """Pixels flipped into the ``MF`` orientation of the ``Image`` frame (docs/frames.md).

        ``ImageToProbe`` calibrations apply to MF images; PLUS flips frames to MF when it reads
        them, and so must anyone who maps pixels through a calibration. A ``U`` (unmarked) first
        letter reverses the columns, an ``N`` (near) second letter reverses the rows; the third
        letter of 3D orientations (``MFA``) concerns the elevation axis and changes nothing for
        2D frames. Returns a view, not a copy.

        Returns
        -------
        (N, H, W) or (N, H, W, C) array
            Same dtype as :attr:`images`; row 0 is nearest the transducer, column 0 on the
            unmarked side.

        Raises
        ------
        SequenceFileError
            For RF orientations (``FM``, ``NM``, ...), which are not B-mode images, or a
            tracking-only sequence (``"tracking-only sequence: no images"``).
        """
        self.require_images("an MF-oriented image")
        orientation = self.image_orientation
        if orientation == "XX":
            return self.images
        if orientation[0] not in "MU" or orientation[1] not in "FN":
            raise SequenceFileError(
                f"image orientation {orientation} is RF data (scan lines along x), not a B-mode image",
                self.source_path,
            )
        images = self.images
        if orientation[0] == "U":
            images = images[:, :, ::-1]
        if orientation[1] == "N":
            images = images[:, ::-1, :]
        return images

    def transform(self, name: str, index: int) -> Transform:
        """The transform ``name`` (e.g. ``"ProbeToTracker"``) of frame ``index`` (0..N-1).

        Raises
        ------
        FrameError
            If the sequence has no such transform, ``index`` is out of range, or the
            transform's status in that frame is INVALID.
        """
        if name not in self.transforms:
            available = ", ".join(self.transforms) or "none"
            raise FrameError(f"sequence has no transform {name!r} (it has: {available})", self.source_path)
        frame = self._frame_label(index)
        if not self.status_of(name)[index]:
            raise FrameError(f"{name} is INVALID in {frame}: INVALID poses are kept but never used", self.source_path)
        return Transform.from_name(name, self.transforms[name][index])

    def repository(self, index: int) -> TransformRepository:
        """A :class:`~workbench.frames.TransformRepository` with the OK transforms of frame ``index``.

        INVALID transforms are left out. So are transforms whose names break the project's
        frame-name rule (e.g. PLUS's ``ToolToTracker``: "Tool" contains "To"); they stay
        available in :attr:`transforms`.
        """
        self._frame_label(index)
        repository = TransformRepository()
        for name, matrices in self.transforms.items():
            if self.status_of(name)[index] and is_transform_name(name):
                repository.set_transform(Transform.from_name(name, matrices[index]))
        return repository

    def status_of(self, name: str) -> np.ndarray:
        """(N,) bool OK flags of transform ``name``; all OK if :attr:`transform_status` lacks it."""
        if name in self.transform_status:
            return np.asarray(self.transform_status[name], dtype=bool)
        return np.ones(len(self), dtype=bool)

    def _frame_label(self, index: int) -> str:
        """``"frame 3 (Seq_Frame0004)"``; raises FrameError if ``index`` is out of range."""
        index = operator.index(index)
        if not 0 <= index < len(self):
            raise FrameError(f"frame index {index} out of range: the sequence has {len(self)} frames", self.source_path)
        return f"frame {index} ({_FRAME_PREFIX}{int(self.frame_indices[index]):04d})"


def pose_series(sequence: TrackedSequence, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The transform ``name`` in every frame, composed from the sequence's own transforms.

    ``"StylusToReference"`` from a stylus recording holding ``StylusToTracker`` and
    ``ReferenceToTracker`` is ``inv(ReferenceToTracker) @ StylusToTracker`` per frame. The
    chain is the shortest one through the sequence's transform names (the same for every
    frame); edges walked backwards are inverted with a full 4x4 inverse, as PLUS does. A
    transform stored under ``name`` itself is returned as is. Works on tracking-only sequences.

    Parameters
    ----------
    sequence : TrackedSequence
    name : str
        ``FromToTo`` name, e.g. ``"StylusToReference"``, ``"ProbeToReference"``.

    Returns
    -------
    matrices : (N, 4, 4) float64 array
        Row-major, p_To = M @ p_From, translation in mm of ``To`` (pixels for ``Image``);
        NaN in frames that are not valid.
    valid : (N,) bool array
        True where every transform of the chain is OK (and finite) in that frame.

    Raises
    ------
    FrameError
        If ``name`` is not a ``FromToTo`` name or its two frames are not connected by the
        sequence's transforms (the message lists them and names the file).
    """
    count = len(sequence)
    if name in sequence.transforms:
        chain = [(name, False)]
    else:
        source, target = split_transform_name(name)
        if source == target:
            return np.tile(np.eye(4), (count, 1, 1)), np.ones(count, dtype=bool)
        chain = _transform_chain(sequence, source, target)
        if chain is None:
            available = ", ".join(sequence.transforms) or "none"
            raise FrameError(
                f"cannot compute {name}: the sequence's transforms ({available}) do not connect "
                f"{source!r} to {target!r}",
                sequence.source_path,
            )
    matrices = np.tile(np.eye(4), (count, 1, 1))
    valid = np.ones(count, dtype=bool)
    for step_name, inverted in chain:
        step = np.asarray(sequence.transforms[step_name], dtype=float)
        ok = sequence.status_of(step_name) & np.isfinite(step).all(axis=(1, 2))
        oriented = np.full_like(step, np.nan)
        try:
            oriented[ok] = np.linalg.inv(step[ok]) if inverted else step[ok]
        except np.linalg.LinAlgError:
            raise FrameError(f"{step_name} is singular in a frame whose status is OK", sequence.source_path) from None
        matrices = oriented @ matrices
        valid &= ok
    matrices[~valid] = np.nan
    return matrices, valid


def _transform_chain(sequence: TrackedSequence, source: str, target: str) -> list[tuple[str, bool]] | None:
    """Shortest chain of (transform name, walked backwards) from ``source`` to ``target``, or None."""
    neighbours: dict[str, list[tuple[str, str, bool]]] = {}
    for name in sequence.transforms:
        if not is_transform_name(name):
            continue
        a, b = split_transform_name(name)
        neighbours.setdefault(a, []).append((b, name, False))
        neighbours.setdefault(b, []).append((a, name, True))
    previous: dict[str, tuple[str, str, bool] | None] = {source: None}
    queue = deque([source])
    while queue and target not in previous:
        frame = queue.popleft()
        for following, name, inverted in neighbours.get(frame, []):
            if following not in previous:
                previous[following] = (frame, name, inverted)
                queue.append(following)
    if target not in previous:
        return None
    chain: list[tuple[str, bool]] = []
    frame = target
    while previous[frame] is not None:
        frame, name, inverted = previous[frame]
        chain.append((name, inverted))
    return chain[::-1]


# -- reading ------------------------------------------------------------------------------


def read_sequence(path: str | os.PathLike) -> TrackedSequence:
    """Read a PLUS sequence file (MetaIO ``.mha``/``.mhd`` or NRRD, compressed or not).

    Parameters
    ----------
    path : str or path-like
        The ``.igs.mha`` / ``.seq.mha`` / ``.mha`` / ``.mhd`` / ``.igs.nrrd`` / ``.seq.nrrd`` /
        ``.nrrd`` file, a regular file (a FIFO or device is refused). A detached data file
        (``ElementDataFile``) must be a bare file name beside the header; an absolute path,
        one with ``../`` or a symbolic link is refused before anything is read.

    Returns
    -------
    TrackedSequence

    Raises
    ------
    SequenceFileError
        If the file is missing, not a regular file, malformed, names a data file outside its
        folder, or its data disagree with its header; the message names the field and frame.

    Warns
    -----
    SequenceFileWarning
        For each field given more than once (the last value is used, as PLUS does).
    """
    path = Path(path)
    with _os_errors_as_sequence_errors(path):
        sequence, parsed, repeated = _read_fields(path)
        sequence.images = read_pixels(parsed.layout, parsed.location, path)
    _warn_repeated(repeated, path)
    return sequence


def describe_sequence(path: str | os.PathLike) -> dict:
    """Summarise a sequence file for ``workbench info`` without decoding its pixels.

    All header and per-frame fields are parsed and validated as :func:`read_sequence` does;
    the pixel data are only checked for size (exactly when uncompressed).

    Returns
    -------
    dict
        JSON-ready: ``kind`` ("sequence"), ``path``, ``container`` ("metaio" or "nrrd"),
        ``frames``, ``tracking_only`` (True for a recording of transforms without images),
        ``image_size_px`` ([width, height], [0, 0] tracking-only), ``channels`` and
        ``pixel_type`` (numpy name, e.g. "uint8"; both None tracking-only),
        ``image_orientation``, ``compressed``, ``transforms`` ({name: {"ok": n, "invalid":
        m}}), ``timestamp_range_s`` ([first, last] in s), ``image_status`` ({"ok",
        "invalid"}), ``frame_index_gaps`` (missing Seq_Frame indices from 0 on, at most the
        first 1000), ``frame_index_gap_count`` (all of them) and ``repeated_fields`` (one line
        per field given more than once, see :func:`read_sequence`).
    """
    path = Path(path)
    with _os_errors_as_sequence_errors(path):
        sequence, parsed, repeated = _read_fields(path)
        check_data_size(parsed.layout, parsed.location, path)
    _warn_repeated(repeated, path)
    layout = parsed.layout
    indices = sequence.frame_indices
    return {
        "kind": "sequence",
        "path": str(path),
        "container": parsed.container,
        "frames": len(sequence),
        "tracking_only": not layout.has_pixels,
        "image_size_px": [layout.width, layout.height],
        "channels": layout.channels if layout.has_pixels else None,
        "pixel_type": layout.dtype.name if layout.has_pixels else None,
        "image_orientation": sequence.image_orientation,
        "compressed": layout.compressed,
        "transforms": {name: _ok_counts(status) for name, status in sequence.transform_status.items()},
        "timestamp_range_s": [float(sequence.timestamps_s.min()), float(sequence.timestamps_s.max())],
        "image_status": _ok_counts(sequence.image_status),
        "frame_index_gaps": _missing_indices(indices, _MAX_LISTED_GAPS),
        "frame_index_gap_count": int(indices[-1]) + 1 - len(indices),
        "repeated_fields": [field_.describe() for field_ in repeated],
    }


def _warn_repeated(repeated: list[RepeatedField], path: Path) -> None:
    """One :class:`SequenceFileWarning` per repeated field (the first few), then one for the rest."""
    for field_ in repeated[:_MAX_REPEAT_WARNINGS]:
        warnings.warn(SequenceFileWarning(f"{path}: {field_.describe()}"), stacklevel=3)
    if len(repeated) > _MAX_REPEAT_WARNINGS:
        warnings.warn(
            SequenceFileWarning(
                f"{path}: {len(repeated) - _MAX_REPEAT_WARNINGS} more fields appear more than once; "
                "the last value of each is used"
            ),
            stacklevel=3,
        )


def _ok_counts(status: np.ndarray) -> dict[str, int]:
    ok = int(np.count_nonzero(status))
    return {"ok": ok, "invalid": len(status) - ok}


def _missing_indices(indices: np.ndarray, limit: int) -> list[int]:
    """The first ``limit`` integers from 0 up to ``indices[-1]`` that ``indices`` lacks."""
    missing: list[int] = []
    expected = 0
    for index in indices.tolist():
        missing.extend(range(expected, min(index, expected + limit - len(missing))))
        if len(missing) >= limit:
            break
        expected = index + 1
    return missing


@contextlib.contextmanager
def _os_errors_as_sequence_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise SequenceFileError(f"cannot access file: {exc.strerror or exc}", path) from None


def _read_fields(path: Path) -> tuple[TrackedSequence, ParsedHeader, list[RepeatedField]]:
    """Parse and validate everything but the pixels; the sequence's ``images`` is None.

    Also returns the fields given more than once (header and per-frame), last value kept.
    """
    parsed = _parse_container(path)
    header, frames, repeated_in_frames = _split_fields(parsed.fields, path)
    indices = sorted(frames)
    if not indices:
        raise SequenceFileError(
            "no per-frame fields (Seq_FrameNNNN_...): a plain image or volume, not a sequence", path
        )
    if parsed.layout.frames != len(indices):
        raise SequenceFileError(
            f"the header's sizes give {parsed.layout.frames} frames "
            f"but per-frame fields exist for {len(indices)} frames",
            path,
        )
    orientation = header.pop(_ORIENTATION_FIELD, DEFAULT_IMAGE_ORIENTATION)
    _check_orientation(orientation, path)
    columns = {name: [frames[index].get(name) for index in indices] for name in _field_names(frames, indices)}
    transforms, transform_status = _parse_transforms(columns, indices, path)
    timestamps_s = _parse_timestamps(columns.pop(_TIMESTAMP_FIELD, [None] * len(indices)), indices, path)
    image_status = _parse_statuses(columns.pop(parsed.image_status_field, [None] * len(indices)))
    if not parsed.layout.has_pixels:
        image_status[:] = False  # tracking-only: no frame has an image, whatever ImageStatus says
    sequence = TrackedSequence(
        images=None,
        timestamps_s=timestamps_s,
        transforms=transforms,
        transform_status=transform_status,
        image_status=image_status,
        frame_fields=columns,
        header=header,
        image_orientation=orientation,
        frame_indices=np.array(indices, dtype=np.int64),
        source_path=path,
    )
    return sequence, parsed, [*parsed.repeated, *repeated_in_frames]


def _parse_container(path: Path) -> ParsedHeader:
    if not path.exists():
        raise SequenceFileError("file not found", path)
    if path.is_dir():
        raise SequenceFileError("is a folder, not a sequence file", path)
    require_regular_file(path, SequenceFileError, "sequence file")  # a FIFO or device would block the read
    with open(path, "rb") as fh:
        start = fh.read(64)
    if not start:
        raise SequenceFileError("file is empty", path)
    if start.startswith(b"NRRD"):
        container = _seq_nrrd
    elif re.match(rb"[ \t]*ObjectType[ \t]*=[ \t]*Image[ \t]*(?:\r?\n|$)", start):
        container = _seq_metaio
    else:
        first_line = start.split(b"\n")[0][:40]
        raise SequenceFileError(
            f"not a PLUS sequence file: starts with {first_line!r}, "
            "expected 'ObjectType = Image' (MetaIO) or 'NRRD000x'",
            path,
        )
    head, data_offset = read_header_bytes(path, container.find_header_end)
    return container.parse_header(decode_header(head), data_offset, path)


def _split_fields(
    fields: list[tuple[str, str]], path: Path
) -> tuple[dict[str, str], dict[int, dict[str, str]], list[RepeatedField]]:
    """Header fields, per-frame fields grouped by Seq_Frame index, and per-frame fields given
    twice under two spellings of the frame index (``Seq_Frame1_`` and ``Seq_Frame0001_``;
    the last is kept, as PLUS does)."""
    header: dict[str, str] = {}
    frames: dict[int, dict[str, str]] = {}
    repeated: dict[str, list[str]] = {}
    for key, value in fields:
        if not key.startswith(_FRAME_PREFIX):
            header[key] = value
            continue
        match = _FRAME_FIELD_RE.fullmatch(key)
        if match is None:
            raise SequenceFileError(f"malformed per-frame field name {key[:60]!r}: expected Seq_FrameNNNN_<Name>", path)
        digits, name = match.groups()
        if len(digits) > len(str(_MAX_FRAME_INDEX)):
            raise SequenceFileError(f"{key[:60]}: frame index too large", path)
        frame = frames.setdefault(int(digits), {})
        if name in frame:
            repeated.setdefault(_frame_field(int(digits), name), [frame[name]]).append(value)
        frame[name] = value
    return header, frames, [RepeatedField(key, (), tuple(values)) for key, values in repeated.items()]


def _field_names(frames: dict[int, dict[str, str]], indices: list[int]) -> list[str]:
    """Per-frame field names in order of first appearance."""
    return list(dict.fromkeys(name for index in indices for name in frames[index]))


def _check_orientation(orientation: str, path: Path | None) -> None:
    if orientation not in IMAGE_ORIENTATIONS:
        raise SequenceFileError(
            f"{_ORIENTATION_FIELD} = {orientation[:20]!r} is not a PLUS orientation "
            f"({', '.join(sorted(IMAGE_ORIENTATIONS))})",
            path,
        )


def _frame_field(index: int, name: str) -> str:
    return f"{_FRAME_PREFIX}{index:04d}_{name}"


def _is_ok(status_text: str | None) -> bool:
    """PLUS's rule: a status is OK if it reads OK (any case) or is absent."""
    return status_text is None or status_text.upper() == "OK"


def _parse_statuses(column: list[str | None]) -> np.ndarray:
    return np.array([_is_ok(text) for text in column], dtype=bool)


def _parse_transforms(
    columns: dict[str, list[str | None]], indices: list[int], path: Path
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Pop every ``<Name>Transform`` column (and its status column) and parse it."""
    names = [n[: -len(_TRANSFORM_SUFFIX)] for n in columns if n.endswith(_TRANSFORM_SUFFIX) and n != _TRANSFORM_SUFFIX]
    transforms, statuses = {}, {}
    for name in names:
        values = columns.pop(name + _TRANSFORM_SUFFIX)
        status_texts = columns.pop(name + _STATUS_SUFFIX, [None] * len(indices))
        matrices, ok = _parse_transform_column(name, values, status_texts, indices, path)
        _check_transform_values(name, matrices, ok, indices, path)
        transforms[name], statuses[name] = matrices, ok
    return transforms, statuses


def _parse_transform_column(
    name: str, values: list[str | None], status_texts: list[str | None], indices: list[int], path: Path
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4, 4) matrices and (N,) OK flags; unreadable matrices of INVALID frames become NaN."""
    matrices = np.full((len(indices), 4, 4), np.nan)
    ok = np.zeros(len(indices), dtype=bool)
    for k, (index, text, status_text) in enumerate(zip(indices, values, status_texts, strict=True)):
        field_name = _frame_field(index, name + _TRANSFORM_SUFFIX)
        if text is None:
            if status_text is not None and _is_ok(status_text):
                raise SequenceFileError(f"{field_name}Status is OK but the frame has no {field_name} field", path)
            continue
        try:
            matrices[k] = _parse_matrix(text)
        except ValueError as exc:
            if _is_ok(status_text):
                raise SequenceFileError(f"{field_name}: {exc}", path) from None
            continue
        ok[k] = _is_ok(status_text)
    return matrices, ok


def _parse_matrix(text: str) -> np.ndarray:
    tokens = text.split()
    if len(tokens) != 16:
        raise ValueError(f"{len(tokens)} values, expected 16 (a row-major 4x4 matrix)")
    return np.array([parse_float(token) for token in tokens]).reshape(4, 4)


def _parse_timestamps(column: list[str | None], indices: list[int], path: Path) -> np.ndarray:
    timestamps_s = np.empty(len(indices))
    for k, (index, text) in enumerate(zip(indices, column, strict=True)):
        field_name = _frame_field(index, _TIMESTAMP_FIELD)
        if text is None:
            raise SequenceFileError(f"{field_name} is missing: every frame needs a timestamp", path)
        try:
            timestamps_s[k] = parse_float(text)
        except ValueError:
            raise SequenceFileError(f"{field_name} = {text[:40]!r} is not a number", path) from None
    _check_timestamps(timestamps_s, indices, path)
    return timestamps_s


def _check_timestamps(timestamps_s: np.ndarray, indices, path: Path | None) -> None:
    bad = np.flatnonzero(~np.isfinite(timestamps_s))
    if bad.size:
        k = bad[0]
        raise SequenceFileError(
            f"{_frame_field(int(indices[k]), _TIMESTAMP_FIELD)} = {timestamps_s[k]} is not a finite time", path
        )


def _has_pixel_frame(name: str) -> bool:
    """True if a frame of the transform ``name`` is in pixels (``Image``, ``CroppedImage``, ``...Pixel``)."""
    return "Image" in name or "Pixel" in name


def _check_transform_values(name: str, matrices: np.ndarray, ok: np.ndarray, indices, path: Path | None) -> None:
    """Check the OK frames of one transform: finite, last row 0 0 0 1, rigid between mm frames.

    Transforms to or from a pixel frame (see :func:`_has_pixel_frame`) may carry a scale and
    are not checked for orthonormality. INVALID frames are not checked at all.
    """
    checked = matrices[ok]
    where = np.asarray(indices)[ok]
    k = _first(~np.isfinite(checked).all(axis=(1, 2)))
    if k is not None:
        raise _transform_error(name, where[k], "NaN or infinity in a transform whose status is OK", path)
    k = _first(np.abs(checked[:, 3] - _LAST_ROW).max(axis=1, initial=0.0) > _LAST_ROW_TOLERANCE)
    if k is not None:
        row = " ".join(map(format_float, checked[k, 3]))
        raise _transform_error(name, where[k], f"last row is {row}, not 0 0 0 1", path)
    translations = np.abs(checked[:, :3, 3]).max(axis=1, initial=0.0)
    k = _first(translations > MAX_COORDINATE_MM)
    if k is not None:
        raise _transform_error(
            name, where[k], f"translation {translations[k]:.3g} mm is farther than {MAX_COORDINATE_MM / 1000:g} m", path
        )
    if _has_pixel_frame(name):
        # pixels to mm (or pixels to pixels) scales, but not by 1e9 nor to a plane
        with np.errstate(all="ignore"):
            scales = np.linalg.svd(checked[:, :3, :3], compute_uv=False) if len(checked) else np.ones((0, 3))
        bad = (scales[:, -1] < _MIN_PIXEL_SCALE) | (scales[:, 0] > _MAX_PIXEL_SCALE)
        k = _first(bad)
        if k is not None:
            raise _transform_error(
                name, where[k],
                f"scales by {scales[k, -1]:.3g}..{scales[k, 0]:.3g}, outside {_MIN_PIXEL_SCALE:g}..{_MAX_PIXEL_SCALE:g} "
                "(singular or absurd)", path,
            )  # fmt: skip
        return
    rotations = checked[:, :3, :3]
    deviation = np.abs(np.einsum("nki,nkj->nij", rotations, rotations) - np.eye(3)).max(axis=(1, 2), initial=0.0)
    k = _first(deviation > ORTHONORMAL_TOLERANCE)
    if k is not None:
        raise _transform_error(
            name,
            where[k],
            f"rotation part is not orthonormal (max |R^T R - I| = {deviation[k]:.3g} > {ORTHONORMAL_TOLERANCE:g}); "
            "only transforms to or from a pixel frame may carry scale",
            path,
        )


def _first(bad: np.ndarray) -> int | None:
    """Position of the first True in ``bad``, or None."""
    hits = np.flatnonzero(bad)
    return int(hits[0]) if hits.size else None


def _transform_error(name: str, index, problem: str, path: Path | None) -> SequenceFileError:
    return SequenceFileError(f"{_frame_field(int(index), name + _TRANSFORM_SUFFIX)}: {problem}", path)


# -- writing ------------------------------------------------------------------------------

_WRITE_SUFFIXES = {".mha": _seq_metaio, ".mhd": _seq_metaio, ".nrrd": _seq_nrrd}


def write_sequence(sequence: TrackedSequence, path: str | os.PathLike, *, compress: bool = True) -> Path:
    """Write ``sequence`` as a PLUS sequence file, atomically.

    The container follows the extension: ``.mha`` (``.igs.mha``, ``.seq.mha``) holds header
    and pixels; ``.mhd`` writes the pixels beside it as ``<stem>.zraw`` (compressed) or
    ``<stem>.raw``; ``.nrrd`` (``.igs.nrrd``, ``.seq.nrrd``) writes attached gzip or raw data.
    Fields are written in PLUS's order, numbers with enough digits to read back exactly.
    MetaIO compatibility fields (``ElementSpacing``, ``Offset``, ...) missing from
    ``sequence.header`` get PLUS's values in MetaIO files; NRRD files leave them out when
    they hold PLUS's values.

    Parameters
    ----------
    sequence : TrackedSequence
        Validated as :func:`read_sequence` validates a file, so that what is written reads back.
    path : str or path-like
    compress : bool
        zlib (MetaIO) / gzip (NRRD) compression of the pixels.

    Returns
    -------
    Path
        The header file written.

    Raises
    ------
    SequenceFileError
        If the extension is not one of the above or ``sequence`` cannot be written faithfully
        (inconsistent shapes, invalid names or values, non-rigid OK poses, ...).
    """
    path = Path(path)
    container = _container_for(path)
    images = _check_sequence(sequence, container, path)
    layout = PixelLayout.of_images(images, compress)
    chunks = encode_pixels(images, layout, gzip=container is _seq_nrrd)
    header = {_ORIENTATION_FIELD: sequence.image_orientation, **sequence.header}
    frame_items = _frame_items(sequence, container.IMAGE_STATUS_FIELD)
    try:
        if container is _seq_nrrd:
            head = _seq_nrrd.format_header(layout, _without_metaio_defaults(header), frame_items)
            _write_file(path, head, chunks)
        elif path.name.lower().endswith(".mhd"):
            data_path = path.with_suffix(".zraw" if compress else ".raw")
            _write_file(data_path, b"", chunks)
            _write_file(path, _metaio_head(layout, chunks, header, frame_items, data_path.name), [])
        else:
            _write_file(path, _metaio_head(layout, chunks, header, frame_items, "LOCAL"), chunks)
    except OSError as exc:
        raise SequenceFileError(f"cannot write file: {exc.strerror or exc}", path) from None
    return path


def _container_for(path: Path):
    for suffix, container in _WRITE_SUFFIXES.items():
        if path.name.lower().endswith(suffix):
            return container
    raise SequenceFileError(
        "cannot write a sequence with this extension: use .mha (.igs.mha, .seq.mha), .mhd or .nrrd (.seq.nrrd)", path
    )


def _metaio_head(layout, chunks, header, frame_items, data_file: str) -> bytes:
    compressed_size = sum(len(chunk) for chunk in chunks)
    return _seq_metaio.format_header(layout, compressed_size, header, frame_items, data_file)


def _without_metaio_defaults(header: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in header.items() if _seq_metaio.COMPATIBILITY_DEFAULTS.get(key) != value}


def _write_file(path: Path, head: bytes, chunks: list[bytes]) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(head)
        for chunk in chunks:
            fh.write(chunk)


def _status_text(ok) -> str:
    return "OK" if ok else "INVALID"


def _frame_items(sequence: TrackedSequence, image_status_field: str) -> list[tuple[str, str]]:
    """``(Seq_FrameNNNN_<Name>, value)`` pairs: per frame sorted by name, image status last (as PLUS)."""
    timestamps_s = np.asarray(sequence.timestamps_s, dtype=float)
    transforms = {name: np.asarray(matrices, dtype=float) for name, matrices in sequence.transforms.items()}
    transform_status = {name: sequence.status_of(name) for name in transforms}
    image_status = np.asarray(sequence.image_status, dtype=bool)
    items: list[tuple[str, str]] = []
    for k, index in enumerate(np.asarray(sequence.frame_indices, dtype=np.int64).tolist()):
        values = {_TIMESTAMP_FIELD: format_float(timestamps_s[k])}
        for name, matrices in transforms.items():
            values[name + _TRANSFORM_SUFFIX] = " ".join(format_float(v) for v in matrices[k].ravel())
            values[name + _STATUS_SUFFIX] = _status_text(transform_status[name][k])
        values.update({name: column[k] for name, column in sequence.frame_fields.items() if column[k] is not None})
        items += [(_frame_field(index, name), values[name]) for name in sorted(values)]
        items.append((_frame_field(index, image_status_field), _status_text(image_status[k])))
    return items


# -- validation before writing --------------------------------------------------------------


def _check_sequence(sequence: TrackedSequence, container, path: Path) -> np.ndarray:
    """Check that ``sequence`` can be written and read back unchanged; return the images to write."""
    count = _check_frame_axis(sequence, path)
    images = _check_images(sequence.images, count, path)
    _check_tracking_only_status(sequence, images, path)
    _check_transform_arrays(sequence, count, container, path)
    _check_frame_fields(sequence, count, container, path)
    _check_header(sequence.header, container, path)
    _check_orientation(sequence.image_orientation, path)
    return images


def _as_array(value, dtype, what: str, path: Path) -> np.ndarray:
    try:
        return np.asarray(value, dtype=dtype)
    except (TypeError, ValueError):
        raise SequenceFileError(f"{what} is not a {np.dtype(dtype).name} array", path) from None


def _check_shape(array: np.ndarray, shape: tuple[int, ...], what: str, path: Path) -> None:
    if array.shape != shape:
        raise SequenceFileError(f"{what} has shape {array.shape}, expected {shape}", path)


def _check_frame_axis(sequence: TrackedSequence, path: Path) -> int:
    timestamps_s = _as_array(sequence.timestamps_s, float, "timestamps_s", path)
    if timestamps_s.ndim != 1 or len(timestamps_s) == 0:
        raise SequenceFileError(f"timestamps_s must be a non-empty (N,) array, got shape {timestamps_s.shape}", path)
    count = len(timestamps_s)
    indices = _as_array(sequence.frame_indices, np.int64, "frame_indices", path)
    _check_shape(indices, (count,), "frame_indices", path)
    if indices[0] < 0 or np.any(np.diff(indices) <= 0) or indices[-1] > _MAX_FRAME_INDEX:
        raise SequenceFileError(f"frame_indices must increase strictly within 0..{_MAX_FRAME_INDEX}", path)
    _check_shape(_as_array(sequence.image_status, bool, "image_status", path), (count,), "image_status", path)
    _check_timestamps(timestamps_s, indices, path)
    return count


def _check_images(images, count: int, path: Path) -> np.ndarray:
    if images is None:
        return np.zeros((count, 0, 0), dtype=np.uint8)
    if not isinstance(images, np.ndarray) or images.ndim not in (3, 4) or images.shape[0] != count:
        shape = getattr(images, "shape", None)
        raise SequenceFileError(
            f"images must be an (N, H, W) or (N, H, W, C) array with N = {count}, got {shape}", path
        )
    if images.shape[1] * images.shape[2] == 0:
        if images.shape[1:] != (0, 0):
            raise SequenceFileError(
                f"images of shape {images.shape} hold no pixels: a tracking-only sequence has images None "
                "or of shape (N, 0, 0)",
                path,
            )
        return np.zeros((count, 0, 0), dtype=np.uint8)
    if _seq_metaio.element_type_name(images.dtype) is None:
        raise SequenceFileError(f"cannot store {images.dtype} pixels: use an integer or float32/float64 type", path)
    if images.ndim == 4 and images.shape[3] == 0:
        raise SequenceFileError("images with 0 channels cannot be stored", path)
    return images


def _check_tracking_only_status(sequence: TrackedSequence, images: np.ndarray, path: Path) -> None:
    """A frame without an image cannot have an OK image status (it would read back INVALID)."""
    if images.size or not np.asarray(sequence.image_status, bool).any():
        return
    k = int(np.flatnonzero(np.asarray(sequence.image_status, bool))[0])
    raise SequenceFileError(
        f"image_status is OK in frame {k} but the sequence has no images ({TRACKING_ONLY}): "
        "set every image status False",
        path,
    )


def _check_transform_arrays(sequence: TrackedSequence, count: int, container, path: Path) -> None:
    unknown = set(sequence.transform_status) - set(sequence.transforms)
    if unknown:
        raise SequenceFileError(f"transform_status has names without a transform: {', '.join(sorted(unknown))}", path)
    for name, matrices in sequence.transforms.items():
        _check_name(name, f"transform name {name!r}", container, path)
        matrices = _as_array(matrices, float, f"transforms[{name!r}]", path)
        _check_shape(matrices, (count, 4, 4), f"transforms[{name!r}]", path)
        ok = _as_array(sequence.status_of(name), bool, f"transform_status[{name!r}]", path)
        _check_shape(ok, (count,), f"transform_status[{name!r}]", path)
        _check_transform_values(name, matrices, ok, sequence.frame_indices, path)


def _check_frame_fields(sequence: TrackedSequence, count: int, container, path: Path) -> None:
    reserved = {_TIMESTAMP_FIELD, container.IMAGE_STATUS_FIELD} | {t + _STATUS_SUFFIX for t in sequence.transforms}
    for name, column in sequence.frame_fields.items():
        _check_name(name, f"frame field name {name!r}", container, path)
        if name in reserved or name.endswith(_TRANSFORM_SUFFIX):
            raise SequenceFileError(
                f"frame field {name!r} would be read back as a timestamp, status or transform", path
            )
        if not isinstance(column, list) or len(column) != count:
            raise SequenceFileError(f"frame_fields[{name!r}] must be a list of {count} values", path)
        for value in column:
            if value is not None:
                _check_value(value, f"frame field {name!r}", path)


def _check_header(header: dict[str, str], container, path: Path) -> None:
    for key, value in header.items():
        _check_name(key, f"header field {key!r}", container, path)
        if key in _seq_metaio.LAYOUT_FIELDS or key == _ORIENTATION_FIELD or key.startswith(_FRAME_PREFIX):
            raise SequenceFileError(
                f"header field {key!r} is written from the images, image_orientation or frames; remove it", path
            )
        _check_value(value, f"header field {key!r}", path)


def _check_name(name, what: str, container, path: Path) -> None:
    separator = ":=" if container is _seq_nrrd else "="
    if (
        not isinstance(name, str)
        or not name
        or name != name.strip()
        or separator in name
        or (container is _seq_nrrd and name.startswith("#"))
        or has_control_characters(name)
    ):
        raise SequenceFileError(
            f"{what} cannot be written: empty, padded, or holding {separator!r} or a control character", path
        )


def _check_value(value, what: str, path: Path) -> None:
    if not isinstance(value, str) or value != value.strip() or has_control_characters(value):
        raise SequenceFileError(f"{what} value {value!r} must be a one-line string without surrounding spaces", path)
