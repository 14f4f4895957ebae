"""NRRD (``.igs.nrrd`` / ``.seq.nrrd``) container of PLUS sequence files: header parsing and writing.

NRRD headers hold standard ``field: value`` lines and custom ``key:=value`` pairs; PLUS puts
its per-frame fields in the latter, spells the header fields ``ultrasound image orientation``
and ``ultrasound image type``, and calls the image status ``Seq_FrameNNNN_Status``. The data
follow the blank line that ends the header (attached data only), raw or gzip-compressed.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from workbench.errors import SequenceFileError
from workbench.io._seq_common import (
    DataLocation,
    FieldCollector,
    ParsedHeader,
    PixelLayout,
    header_lines,
    layout_with_repeats,
    parse_sizes,
)

IMAGE_STATUS_FIELD = "Status"

_TYPE_SPELLINGS = {
    "i1": ("signed char", "int8", "int8_t"),
    "u1": ("uchar", "unsigned char", "uint8", "uint8_t"),
    "i2": ("short", "short int", "signed short", "signed short int", "int16", "int16_t"),
    "u2": ("ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"),
    "i4": ("int", "signed int", "int32", "int32_t"),
    "u4": ("uint", "unsigned int", "uint32", "uint32_t"),
    "i8": ("longlong", "long long", "long long int", "signed long long", "signed long long int", "int64", "int64_t"),
    "u8": ("ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t"),
    "f4": ("float",),
    "f8": ("double",),
}
_TYPES = {spelling: code for code, spellings in _TYPE_SPELLINGS.items() for spelling in spellings}
_TYPE_NAMES = {
    "i1": "int8",
    "u1": "uint8",
    "i2": "int16",
    "u2": "uint16",
    "i4": "int32",
    "u4": "uint32",
    "i8": "int64",
    "u8": "uint64",
    "f4": "float",
    "f8": "double",
}
_ENCODINGS = {"raw": False, "gzip": True, "gz": True}
#: ``type`` of a file without pixels (PLUS writes ``none`` for tracking-only files).
NO_PIXEL_TYPE = "none"

#: NRRD spelling of the PLUS header fields (MetaIO spelling -> NRRD spelling).
_NRRD_NAMES = {
    "UltrasoundImageOrientation": "ultrasound image orientation",
    "UltrasoundImageType": "ultrasound image type",
}
_METAIO_NAMES = {nrrd: metaio for metaio, nrrd in _NRRD_NAMES.items()}

_MAGIC_RE = re.compile(r"NRRD000[1-9]")
_END_RE = re.compile(rb"\r?\n\r?\n")
_SPATIAL_KINDS = ("domain", "space")


def find_header_end(buffer: bytearray, at_eof: bool) -> int | None:
    """Offset just after the blank line that ends the header, or None if not (yet) found."""
    match = _END_RE.search(buffer)
    return match.end() if match else None


def parse_header(text: str, data_offset: int | None, path: Path) -> ParsedHeader:
    """Parse a NRRD sequence header (magic line to the blank line).

    A repeated ``key:=value`` keeps its last value (the NRRD format allows repeated keys and
    teem keeps the last). A repeated ``field: value`` is an error for teem ("already set
    field"), but PLUS's own NRRD reader keeps the last value of both; since these files come
    from PLUS, both keep the last value here and are listed in :attr:`ParsedHeader.repeated`
    for the caller to warn about.

    Raises
    ------
    SequenceFileError
        On a malformed line, detached data or an unsupported layout.
    """
    lines = header_lines(text, path)
    _, magic = next(lines, (0, ""))
    if not _MAGIC_RE.fullmatch(magic):
        raise SequenceFileError(f"not a NRRD file: first line is {magic[:20]!r}, expected NRRD000x", path)
    standard, custom = FieldCollector(), FieldCollector()
    for lineno, line in lines:
        if line.startswith("#"):
            continue
        key, value, is_custom = _split_line(line, lineno, path)
        if is_custom:
            custom.add(_METAIO_NAMES.get(key, key), value, lineno)
        else:
            standard.add(key, value, lineno)
    fields = standard.as_dict()
    _check_data_placement(fields, data_offset, path)
    repeated = standard.repeated() + custom.repeated()
    layout = layout_with_repeats(lambda: _layout(fields, path), repeated)
    return ParsedHeader(
        "nrrd", layout, DataLocation(path, data_offset), custom.items(), IMAGE_STATUS_FIELD, tuple(repeated)
    )


def _split_line(line: str, lineno: int, path: Path) -> tuple[str, str, bool]:
    """(key, value, is_custom) of a ``key:=value`` or ``field: value`` line."""
    if ":=" in line:
        key, _, value = line.partition(":=")
        is_custom = True
    else:
        key, sep, value = line.partition(":")
        if not sep:
            raise SequenceFileError(
                f"header line {lineno} is neither 'field: value' nor 'key:=value': {line[:60]!r}", path
            )
        key = key.lower()
        is_custom = False
    key, value = key.strip(), value.strip()
    if not key:
        raise SequenceFileError(f"header line {lineno} has an empty field name: {line[:60]!r}", path)
    return key, value, is_custom


def _check_data_placement(standard: dict[str, str], data_offset: int | None, path: Path) -> None:
    for field in ("data file", "datafile"):
        if field in standard:
            raise SequenceFileError(f"detached NRRD data ({field}: {standard[field][:60]}) is not supported", path)
    if data_offset is None:
        raise SequenceFileError("truncated header: no blank line ends the NRRD header", path)
    for field in ("line skip", "byte skip"):
        if standard.get(field, "0") != "0":
            raise SequenceFileError(f"{field}: {standard[field][:20]} is not supported", path)


def _required(standard: dict[str, str], field: str, path: Path) -> str:
    if field not in standard:
        raise SequenceFileError(f"missing NRRD field '{field}'", path)
    return standard[field]


def _layout(standard: dict[str, str], path: Path) -> PixelLayout:
    """Pixel layout; tracking-only (0 x 0) where the sizes hold no pixel or ``type`` is ``none``.

    PLUS writes ``type: none`` for a file without images (``sizes: 0 0 N``, or ``1 1 N`` when
    image writing is off); ``none`` with a larger frame size is refused.
    """
    dimension = _required(standard, "dimension", path)
    if dimension not in ("3", "4"):
        raise SequenceFileError(
            f"dimension = {dimension[:20]}: only sequences of 2D frames (dimension 3, or 4 with channels first) "
            "are supported",
            path,
        )
    sizes = parse_sizes(_required(standard, "sizes", path), int(dimension), "sizes", path)
    _check_kinds(standard.get("kinds"), len(sizes), path)
    channels = sizes.pop(0) if len(sizes) == 4 else 1
    width, height, frames = sizes
    encoding = _required(standard, "encoding", path)
    if encoding.lower() not in _ENCODINGS:
        raise SequenceFileError(f"encoding {encoding[:20]!r} is not supported (only raw and gzip)", path)
    compressed = _ENCODINGS[encoding.lower()]
    type_name = standard.get("type")
    if width * height == 0 and type_name is None:
        return PixelLayout.tracking_only(frames, compressed)
    type_name = _required(standard, "type", path)
    if type_name.lower() == NO_PIXEL_TYPE:
        if width * height > 1:
            raise SequenceFileError(
                f"type: {type_name} (no pixel type, a tracking-only file) but sizes ask for "
                f"{width} x {height} pixels per frame",
                path,
            )
        return PixelLayout.tracking_only(frames, compressed)
    if type_name.lower() not in _TYPES:
        raise SequenceFileError(f"unknown type {type_name[:40]!r}", path)
    if width * height == 0:
        return PixelLayout.tracking_only(frames, compressed)
    dtype = np.dtype(_TYPES[type_name.lower()])
    dtype = dtype.newbyteorder(_byte_order(standard, dtype, path))
    return PixelLayout(width, height, frames, channels, dtype, compressed)


def _check_kinds(kinds: str | None, dimension: int, path: Path) -> None:
    tokens = kinds.split() if kinds is not None else None
    if tokens is not None and len(tokens) != dimension:
        raise SequenceFileError(f"kinds: {kinds[:60]!r}: expected {dimension} axis kinds", path)
    if tokens is not None and tokens[-1] in _SPATIAL_KINDS:
        raise SequenceFileError(
            f"kinds: {' '.join(tokens)}: a 3D volume, not a sequence of 2D frames (last kind must be list or time)",
            path,
        )
    if dimension == 4 and (tokens is None or tokens[0] in _SPATIAL_KINDS):
        raise SequenceFileError(
            "dimension = 4 without a leading channel axis (kinds vector/RGB-color ...): a 3D volume sequence", path
        )


def _byte_order(standard: dict[str, str], dtype: np.dtype, path: Path) -> str:
    endian = standard.get("endian")
    if endian is None:
        if dtype.itemsize > 1:
            raise SequenceFileError(f"missing NRRD field 'endian' (needed for {dtype.itemsize}-byte pixels)", path)
        return "<"
    if endian.lower() not in ("little", "big"):
        raise SequenceFileError(f"endian: {endian[:20]!r}: expected little or big", path)
    return "<" if endian.lower() == "little" else ">"


def type_name(dtype: np.dtype) -> str | None:
    """NRRD ``type`` for ``dtype``, or None if NRRD cannot store it."""
    return _TYPE_NAMES.get(dtype.str[1:])


def format_header(layout: PixelLayout, header: dict[str, str], frame_items: list[tuple[str, str]]) -> bytes:
    """Header text as PLUS writes it, ending with the blank line before the data.

    ``header`` holds the custom fields in MetaIO spelling; PLUS's two ultrasound fields are
    written in their NRRD spelling. A tracking-only layout is written ``sizes: 0 0 N``,
    ``type: none``, as PLUS writes it.
    """
    has_channels = layout.channels > 1
    sizes = [layout.width, layout.height, layout.frames]
    lines = [
        "NRRD0004",
        "# Complete NRRD file format specification at:",
        "# http://teem.sourceforge.net/nrrd/format.html",
        f"dimension: {4 if has_channels else 3}",
        f"encoding: {'gz' if layout.compressed else 'raw'}",
        "endian: little",
        f"kinds: {'vector ' if has_channels else ''}domain domain list",
        f"sizes: {' '.join(map(str, [layout.channels] * has_channels + sizes))}",
        "space dimension: 2",
        f"space directions: {'none ' if has_channels else ''}(1,0) (0,1) none",
        "space origin: (0,0)",
        f"type: {type_name(layout.dtype) if layout.has_pixels else NO_PIXEL_TYPE}",
    ]
    lines += [f"{_NRRD_NAMES.get(key, key)}:={value}" for key, value in header.items()]
    lines += [f"{key}:={value}" for key, value in frame_items]
    return ("\n".join(lines) + "\n\n").encode("utf-8")
