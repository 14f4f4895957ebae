"""Pieces shared by the MetaIO and NRRD halves of the PLUS sequence-file reader/writer.

A container parser (``_seq_metaio``, ``_seq_nrrd``) turns a file's text header into a
:class:`ParsedHeader`: where the pixels are and how they are laid out (:class:`PixelLayout`,
:class:`DataLocation`) plus every field that is not about the pixel layout, in file order.
``workbench.io.sequence`` interprets those fields (frames, transforms, statuses).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench.errors import SequenceFileError
from workbench.validation import check_allocation

#: Largest size of one axis (width, height, frames, channels) accepted from a header.
MAX_AXIS_SIZE = 2**31 - 1

#: zlib cannot expand input by more than about 1032:1; a header asking for more is wrong.
_MAX_INFLATE_RATIO = 1032

_HEADER_CHUNK_BYTES = 1 << 20
_NUMBER_RE = re.compile(r"[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf|infinity)", re.ASCII | re.IGNORECASE)
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass(frozen=True)
class PixelLayout:
    """Shape and encoding of the pixel block of a sequence file.

    Attributes
    ----------
    width, height : int
        Frame size in pixels; both 0 for a tracking-only file (no image in any frame).
    frames : int
        Number of frames (last axis of DimSize / sizes).
    channels : int
        Components per pixel (ElementNumberOfChannels), 1 for B-mode.
    dtype : numpy.dtype
        Component type with the byte order used in the file.
    compressed : bool
        zlib (MetaIO) or gzip (NRRD) compressed.
    """

    width: int
    height: int
    frames: int
    channels: int
    dtype: np.dtype
    compressed: bool

    @classmethod
    def of_images(cls, images: np.ndarray, compressed: bool) -> PixelLayout:
        """Layout for writing ``images`` ((N, H, W) or (N, H, W, C)) little-endian."""
        frames, height, width = images.shape[:3]
        if width * height == 0:
            return cls.tracking_only(frames, compressed)
        channels = images.shape[3] if images.ndim == 4 else 1
        return cls(width, height, frames, channels, images.dtype.newbyteorder("<"), compressed)

    @classmethod
    def tracking_only(cls, frames: int, compressed: bool) -> PixelLayout:
        """Layout of a sequence without images: 0 x 0 pixels, one uint8 placeholder channel."""
        return cls(0, 0, frames, 1, np.dtype("u1"), compressed)

    @property
    def has_pixels(self) -> bool:
        """False for a tracking-only sequence (no image in any frame)."""
        return self.width * self.height > 0

    @property
    def shape(self) -> tuple[int, ...]:
        """Array shape of the decoded pixels: (N, H, W), or (N, H, W, C) when C > 1."""
        base = (self.frames, self.height, self.width)
        return base + (self.channels,) if self.channels > 1 else base

    @property
    def nbytes(self) -> int:
        """Size in bytes of the decoded pixel block."""
        return self.frames * self.height * self.width * self.channels * self.dtype.itemsize


@dataclass(frozen=True)
class DataLocation:
    """Where the (possibly compressed) pixel bytes are: ``path`` from byte ``offset`` to its end."""

    path: Path
    offset: int
    compressed_size: int | None = None


class SequenceFileWarning(UserWarning):
    """A sequence file that reads, with something worth telling (a field given twice)."""


@dataclass(frozen=True)
class RepeatedField:
    """A header field given more than once; the reader keeps the last value, as PLUS does.

    Attributes
    ----------
    name : str
        Field name as spelled in the container (``Kinds``, ``sizes``, ``Seq_Frame0003_Timestamp``).
    lines : tuple of int
        Header line numbers of every occurrence, in file order (empty when not known).
    values : tuple of str
        The value at each of those lines.
    """

    name: str
    lines: tuple[int, ...]
    values: tuple[str, ...]

    def describe(self) -> str:
        """One line: the field, where, its values, and which one is used."""
        shown = ", then ".join(repr(v[:60]) for v in self.values)
        numbers = [str(n) for n in self.lines]
        listed = ", ".join(numbers[:-1]) + " and " + numbers[-1] if len(numbers) > 1 else "".join(numbers)
        where = f"header lines {listed}: " if numbers else ""
        times = "twice" if len(self.values) == 2 else f"{len(self.values)} times"
        return f"field {self.name} appears {times} ({where}{shown}); using the last value, as PLUS does"


def layout_with_repeats(make_layout: Callable[[], PixelLayout], repeated: list[RepeatedField]) -> PixelLayout:
    """``make_layout()``; if it refuses a field that was given more than once, say so in the error."""
    try:
        return make_layout()
    except SequenceFileError as exc:
        named = [field for field in repeated if field.name in exc.problem]
        if not named:
            raise
        notes = "; ".join(f"{field.name} is given {len(field.values)} times, the last one is used" for field in named)
        raise SequenceFileError(f"{exc.problem} ({notes}, as PLUS does)", exc.path) from None


class FieldCollector:
    """Gathers ``(name, value)`` header fields in file order; a repeated name keeps its first
    position and its last value (PLUS's and MetaIO's readers overwrite), and is recorded."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}
        self._seen: dict[str, list[tuple[int, str]]] = {}

    def add(self, name: str, value: str, lineno: int) -> None:
        self._values[name] = value
        self._seen.setdefault(name, []).append((lineno, value))

    def items(self) -> list[tuple[str, str]]:
        return list(self._values.items())

    def as_dict(self) -> dict[str, str]:
        return dict(self._values)

    def repeated(self) -> list[RepeatedField]:
        return [
            RepeatedField(name, tuple(n for n, _ in seen), tuple(v for _, v in seen))
            for name, seen in self._seen.items()
            if len(seen) > 1
        ]


@dataclass(frozen=True)
class ParsedHeader:
    """What a container parser found in a header.

    Attributes
    ----------
    container : str
        ``"metaio"`` or ``"nrrd"``.
    layout : PixelLayout
    location : DataLocation
    fields : list of (str, str)
        Every non-layout field in file order (header fields and ``Seq_FrameNNNN_...`` fields),
        names normalised to the MetaIO spelling (``UltrasoundImageOrientation``).
    image_status_field : str
        Per-frame field holding the image status (``ImageStatus``; ``Status`` in NRRD).
    repeated : tuple of RepeatedField
        Fields given more than once (the last value is in ``fields`` / the layout).
    """

    container: str
    layout: PixelLayout
    location: DataLocation
    fields: list[tuple[str, str]]
    image_status_field: str
    repeated: tuple[RepeatedField, ...] = ()


# -- text helpers -------------------------------------------------------------------------


def read_header_bytes(path: Path, find_end: Callable[[bytearray, bool], int | None]) -> tuple[bytes, int | None]:
    """Read ``path`` until ``find_end`` locates the end of the text header.

    Returns
    -------
    (bytes, int or None)
        The header bytes and the offset of the first data byte, or all bytes read and
        None when the file ends before the header does.
    """
    buffer = bytearray()
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(_HEADER_CHUNK_BYTES)
            buffer += chunk
            end = find_end(buffer, not chunk)
            if end is not None:
                return bytes(buffer[:end]), end
            if not chunk:
                return bytes(buffer), None


def decode_header(head: bytes) -> str:
    """Header bytes as text: UTF-8, or Latin-1 for files written by older Windows tools."""
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError:
        return head.decode("latin-1")


def header_lines(text: str, path: Path) -> Iterator[tuple[int, str]]:
    """Yield (line number, stripped line) for the non-blank lines of a header.

    Raises
    ------
    SequenceFileError
        If a line holds control characters (binary bytes where text should be).
    """
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line:
            continue
        if _CONTROL_RE.search(line):
            raise SequenceFileError(
                f"header line {lineno} contains control characters (binary data in the header?)", path
            )
        yield lineno, line


def has_control_characters(text: str) -> bool:
    """True if ``text`` holds a character a one-line header value cannot carry."""
    return _CONTROL_RE.search(text) is not None


def parse_float(text: str) -> float:
    """Parse one number as written by C/C++ (``8.43482e-005``, ``-1949.07``, ``nan``).

    Raises
    ------
    ValueError
        If ``text`` is not a number.
    """
    if not _NUMBER_RE.fullmatch(text):
        raise ValueError(f"non-numeric value {text[:40]!r}")
    return float(text)


def format_float(value: float) -> str:
    """Shortest text that parses back to exactly ``value`` (``1`` rather than ``1.0``)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def parse_sizes(text: str, count: int, field: str, path: Path) -> list[int]:
    """Parse ``count`` non-negative axis sizes (DimSize / sizes)."""
    tokens = text.split()
    if len(tokens) != count or not all(t.isascii() and t.isdigit() and len(t) <= 19 for t in tokens):
        raise SequenceFileError(f"{field} = {text[:60]!r}: expected {count} non-negative integers", path)
    sizes = [int(t) for t in tokens]
    if max(sizes) > MAX_AXIS_SIZE:
        raise SequenceFileError(f"{field} = {text[:60]!r}: an axis size is too large", path)
    return sizes


def parse_positive_int(text: str, field: str, path: Path) -> int:
    """Parse a positive integer header value (channel counts and the like)."""
    if not (text.isascii() and text.isdigit() and len(text) <= 19) or not 0 < int(text) <= MAX_AXIS_SIZE:
        raise SequenceFileError(f"{field} = {text[:40]!r}: expected a positive integer", path)
    return int(text)


# -- pixel data ---------------------------------------------------------------------------


def stored_data_size(location: DataLocation, path: Path) -> int:
    """Number of pixel-data bytes stored at ``location``.

    Raises
    ------
    SequenceFileError
        If a separate data file (.raw / .zraw) is missing.
    """
    try:
        return location.path.stat().st_size - location.offset
    except FileNotFoundError:
        raise SequenceFileError(f"data file {location.path.name} (ElementDataFile) not found", path) from None
    except OSError as exc:
        raise SequenceFileError(f"cannot read data file {location.path.name}: {exc.strerror}", path) from None


def check_data_size(layout: PixelLayout, location: DataLocation, path: Path) -> None:
    """Check, without reading pixels, that the stored byte count can match the layout.

    Exact for uncompressed data; for compressed data it checks CompressedDataSize and that
    the stream could inflate to the size the header asks for.
    """
    if layout.nbytes == 0:
        return
    check_allocation(layout.nbytes, "pixel data (DimSize x ElementType)", path, SequenceFileError)  # memory free now
    stored = stored_data_size(location, path)
    if layout.compressed:
        _check_compressed_size(stored, layout, location, path)
    elif stored < layout.nbytes:
        raise SequenceFileError(
            f"pixel data too short: {stored} bytes stored, the header's sizes need {layout.nbytes}", path
        )
    elif stored > layout.nbytes:
        raise SequenceFileError(
            f"pixel data too long: {stored} bytes stored, the header's sizes need {layout.nbytes}", path
        )


def _check_compressed_size(stored: int, layout: PixelLayout, location: DataLocation, path: Path) -> None:
    if location.compressed_size is not None and location.compressed_size != stored:
        raise SequenceFileError(
            f"CompressedDataSize = {location.compressed_size} but {stored} bytes of pixel data are stored", path
        )
    if layout.nbytes > stored * _MAX_INFLATE_RATIO + 64:
        raise SequenceFileError(
            f"compressed pixel data ({stored} bytes) cannot inflate to the {layout.nbytes} bytes "
            "the header's sizes need",
            path,
        )


def read_pixels(layout: PixelLayout, location: DataLocation, path: Path) -> np.ndarray:
    """Read and decode the pixel block.

    Returns
    -------
    numpy.ndarray
        ``layout.shape`` array in native byte order, frames in file order.
    """
    native = layout.dtype.newbyteorder("=")
    check_data_size(layout, location, path)
    if layout.nbytes == 0:
        return np.zeros(layout.shape, dtype=native)
    with open(location.path, "rb") as fh:
        fh.seek(location.offset)
        stored = fh.read()
    raw = _inflate(stored, layout.nbytes, path) if layout.compressed else stored
    return np.frombuffer(raw, dtype=layout.dtype).reshape(layout.shape).astype(native)


def _inflate(data: bytes, expected: int, path: Path) -> bytes:
    """Inflate a zlib or gzip stream that must decode to exactly ``expected`` bytes."""
    stream = zlib.decompressobj(wbits=47)  # 32 + 15: accept zlib and gzip headers
    try:
        out = stream.decompress(data, expected + 1)
    except zlib.error as exc:
        raise SequenceFileError(f"compressed pixel data is corrupt (zlib: {exc})", path) from None
    if len(out) > expected:
        raise SequenceFileError(
            f"compressed pixel data inflates to more than the {expected} bytes the header needs", path
        )
    if not stream.eof:
        raise SequenceFileError(
            f"truncated compressed pixel data: the stream ends after {len(out)} of {expected} bytes", path
        )
    if stream.unused_data:
        raise SequenceFileError(
            f"{len(stream.unused_data)} stray bytes after the end of the compressed pixel data", path
        )
    if len(out) < expected:
        raise SequenceFileError(
            f"compressed pixel data inflates to {len(out)} bytes, the header's sizes need {expected}", path
        )
    return out


def encode_pixels(images: np.ndarray, layout: PixelLayout, gzip: bool) -> list[bytes]:
    """Encode ``images`` as stored in a file: little-endian, frame by frame, optionally compressed.

    Parameters
    ----------
    images : (N, H, W) or (N, H, W, C) array
    layout : PixelLayout
        From :meth:`PixelLayout.of_images`.
    gzip : bool
        Write a gzip stream (NRRD ``encoding: gz``) rather than a zlib stream (MetaIO).
    """
    frames = (np.ascontiguousarray(frame, dtype=layout.dtype).tobytes() for frame in images)
    if not layout.compressed:
        return list(frames)
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 31 if gzip else 15)
    chunks = [compressor.compress(frame) for frame in frames]
    chunks.append(compressor.flush())
    return chunks
