"""MetaIO (``.mha`` / ``.mhd``) container of PLUS sequence files: header parsing and writing.

The header is ``Key = Value`` lines; ``ElementDataFile`` is the last one and the pixel
data follow it (``LOCAL``) or sit in the named file beside the header (``.raw`` / ``.zraw``).
See the PLUS page "Sequence file" (FileSequenceFile.md). PLUS writes a bare file name there;
MetaIO would also follow an absolute path or one with ``../``, which is refused before
anything is read (:func:`workbench.io.paths.data_file_beside`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from workbench.errors import SequenceFileError
from workbench.io.paths import data_file_beside
from workbench.io._seq_common import (
    DataLocation,
    FieldCollector,
    ParsedHeader,
    PixelLayout,
    header_lines,
    layout_with_repeats,
    parse_positive_int,
    parse_sizes,
)

IMAGE_STATUS_FIELD = "ImageStatus"

#: MetaIO type names -> little-endian numpy dtypes (MET_LONG is 4 bytes in MetaIO).
ELEMENT_TYPES = {
    "MET_CHAR": "i1",
    "MET_UCHAR": "u1",
    "MET_SHORT": "i2",
    "MET_USHORT": "u2",
    "MET_INT": "i4",
    "MET_UINT": "u4",
    "MET_LONG": "i4",
    "MET_ULONG": "u4",
    "MET_LONG_LONG": "i8",
    "MET_ULONG_LONG": "u8",
    "MET_FLOAT": "f4",
    "MET_DOUBLE": "f8",
}
_TYPE_NAMES = {np.dtype(code).str: name for name, code in reversed(ELEMENT_TYPES.items())}

#: ElementType values of files without pixels (PLUS writes MET_OTHER for tracking-only files).
NO_PIXEL_TYPES = frozenset({"MET_OTHER", "MET_NONE"})
#: ElementType written for a tracking-only sequence, as PLUS writes it.
NO_PIXEL_TYPE = "MET_OTHER"

#: Fields PLUS writes only for compatibility with other MetaIO readers, with PLUS's values.
COMPATIBILITY_DEFAULTS = {
    "AnatomicalOrientation": "RAI",
    "CenterOfRotation": "0 0 0",
    "ElementSpacing": "1 1 1",
    "Offset": "0 0 0",
    "TransformMatrix": "1 0 0 0 1 0 0 0 1",
}

#: Fields that describe the pixel block; the writer generates them, the reader consumes them.
LAYOUT_FIELDS = frozenset(
    {
        "ObjectType",
        "NDims",
        "BinaryData",
        "BinaryDataByteOrderMSB",
        "ElementByteOrderMSB",
        "CompressedData",
        "CompressedDataSize",
        "DimSize",
        "Kinds",
        "ElementType",
        "ElementNumberOfChannels",
        "ElementDataFile",
        "HeaderSize",
    }
)

#: Header order of the fields PLUS writes before the custom ones.
_FIELD_ORDER = (
    "ObjectType",
    "NDims",
    "AnatomicalOrientation",
    "BinaryData",
    "BinaryDataByteOrderMSB",
    "CenterOfRotation",
    "CompressedData",
    "CompressedDataSize",
    "DimSize",
    "Kinds",
    "ElementNumberOfChannels",
    "ElementSpacing",
    "ElementType",
    "Offset",
    "TransformMatrix",
    "UltrasoundImageOrientation",
    "UltrasoundImageType",
)

_END_RE = re.compile(rb"(?m)^[ \t]*ElementDataFile[ \t]*=[^\n]*(?:\n|\Z)")
_FRAME_AXIS_KINDS = ("list", "time")


def find_header_end(buffer: bytearray, at_eof: bool) -> int | None:
    """Offset just after the ``ElementDataFile`` line, or None if not (yet) found."""
    match = _END_RE.search(buffer)
    if match is None or (not at_eof and not match.group().endswith(b"\n")):
        return None
    return match.end()


def parse_header(text: str, data_offset: int | None, path: Path) -> ParsedHeader:
    """Parse a MetaIO sequence header (the text up to and including ``ElementDataFile``).

    A field given more than once keeps its last value (PLUS's reader and MetaIO overwrite);
    the repeats are listed in :attr:`ParsedHeader.repeated` for the caller to warn about.

    Raises
    ------
    SequenceFileError
        On a malformed line or layout fields PLUS sequences cannot have.
    """
    if data_offset is None:
        raise SequenceFileError("truncated header: no 'ElementDataFile = ...' line", path)
    collected = FieldCollector()
    for lineno, line in header_lines(text, path):
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise SequenceFileError(f"header line {lineno} is not 'Key = Value': {line[:60]!r}", path)
        collected.add(key, value, lineno)
    layout_values = {key: value for key, value in collected.items() if key in LAYOUT_FIELDS}
    fields = [(key, value) for key, value in collected.items() if key not in LAYOUT_FIELDS]
    repeated = collected.repeated()
    layout = layout_with_repeats(lambda: _layout(layout_values, path), repeated)
    location = _location(layout_values, data_offset, path)
    return ParsedHeader("metaio", layout, location, fields, IMAGE_STATUS_FIELD, tuple(repeated))


def _required(values: dict[str, str], key: str, path: Path) -> str:
    if key not in values:
        raise SequenceFileError(f"missing {key} field in the header", path)
    return values[key]


def _bool(values: dict[str, str], key: str, default: bool, path: Path) -> bool:
    text = values.get(key)
    if text is None:
        return default
    if text.lower() not in ("true", "false"):
        raise SequenceFileError(f"{key} = {text[:40]!r}: expected True or False", path)
    return text.lower() == "true"


def _layout(values: dict[str, str], path: Path) -> PixelLayout:
    """Pixel layout; a tracking-only layout (0 x 0) where DimSize has no pixel or ElementType no type.

    PLUS writes ``DimSize = 0 0 N`` when no frame has an image and ``DimSize = 1 1 N`` when
    image writing is off, both with ``ElementType = MET_OTHER``, and reads either without
    pixels. ``MET_OTHER`` with a larger frame size is refused: pixels without a type.
    """
    object_type = values.get("ObjectType", "Image")
    if object_type != "Image":
        raise SequenceFileError(f"ObjectType = {object_type[:40]!r}: a sequence file is an Image", path)
    ndims = _required(values, "NDims", path)
    if ndims != "3":
        raise SequenceFileError(f"NDims = {ndims[:20]}: only sequences of 2D frames (NDims = 3) are supported", path)
    width, height, frames = parse_sizes(_required(values, "DimSize", path), 3, "DimSize", path)
    _check_kinds(values.get("Kinds"), path)
    if not _bool(values, "BinaryData", True, path):
        raise SequenceFileError("BinaryData = False (text pixel data) is not supported", path)
    if values.get("HeaderSize", "0") != "0":
        raise SequenceFileError(f"HeaderSize = {values['HeaderSize'][:20]} is not supported", path)
    big_endian = _bool(values, "BinaryDataByteOrderMSB", False, path) or _bool(
        values, "ElementByteOrderMSB", False, path
    )
    channels = parse_positive_int(values.get("ElementNumberOfChannels", "1"), "ElementNumberOfChannels", path)
    compressed = _bool(values, "CompressedData", False, path)
    element_type = values.get("ElementType")
    if width * height == 0 and element_type is None:
        return PixelLayout.tracking_only(frames, compressed)
    element_type = _required(values, "ElementType", path)
    if element_type in NO_PIXEL_TYPES:
        if width * height > 1:
            raise SequenceFileError(
                f"ElementType = {element_type} (no pixel type, a tracking-only file) but DimSize = "
                f"{width} {height} {frames} asks for {width} x {height} pixels per frame",
                path,
            )
        return PixelLayout.tracking_only(frames, compressed)
    if element_type not in ELEMENT_TYPES:
        raise SequenceFileError(f"unknown ElementType {element_type[:40]!r}", path)
    if width * height == 0:
        return PixelLayout.tracking_only(frames, compressed)
    dtype = np.dtype(ELEMENT_TYPES[element_type]).newbyteorder(">" if big_endian else "<")
    return PixelLayout(width, height, frames, channels, dtype, compressed)


def _check_kinds(kinds: str | None, path: Path) -> None:
    if kinds is None:
        return
    tokens = kinds.split()
    if len(tokens) != 3:
        raise SequenceFileError(f"Kinds = {kinds[:60]!r}: expected 3 axis kinds", path)
    if tokens[2] not in _FRAME_AXIS_KINDS:
        raise SequenceFileError(
            f"Kinds = {' '.join(tokens)}: a 3D volume, not a sequence of 2D frames (last kind must be list or time)",
            path,
        )


def _location(values: dict[str, str], data_offset: int, path: Path) -> DataLocation:
    data_file = values["ElementDataFile"]
    compressed_size = None
    if "CompressedDataSize" in values:
        text = values["CompressedDataSize"]
        if not (text.isascii() and text.isdigit() and len(text) <= 19):  # a byte count fits in 64 bits
            raise SequenceFileError(f"CompressedDataSize = {text[:40]!r}: expected a byte count", path)
        compressed_size = int(text)
    if data_file == "LOCAL":
        return DataLocation(path, data_offset, compressed_size)
    if not data_file:
        raise SequenceFileError("ElementDataFile is empty: expected LOCAL or a file name", path)
    if data_file.split()[0] == "LIST" or "%" in data_file:
        raise SequenceFileError(
            f"ElementDataFile = {data_file[:60]!r}: lists and file patterns are not supported, only LOCAL or one file",
            path,
        )
    data_path = data_file_beside(path, data_file, error=SequenceFileError, field="ElementDataFile", must_exist=False)
    return DataLocation(data_path, 0, compressed_size)


def element_type_name(dtype: np.dtype) -> str | None:
    """MetaIO ``ElementType`` for ``dtype``, or None if MetaIO cannot store it."""
    return _TYPE_NAMES.get(dtype.newbyteorder("<").str)


def format_header(
    layout: PixelLayout,
    compressed_size: int,
    header: dict[str, str],
    frame_items: list[tuple[str, str]],
    data_file: str,
) -> bytes:
    """Header text in PLUS's field order, up to and including ``ElementDataFile``.

    ``header`` holds the custom fields (``UltrasoundImageOrientation`` included); the
    compatibility fields PLUS always writes are added with PLUS's values where missing. A
    tracking-only layout is written as PLUS writes it: ``DimSize = 0 0 N``,
    ``ElementType = MET_OTHER``.
    """
    values = {
        **COMPATIBILITY_DEFAULTS,
        **header,
        "ObjectType": "Image",
        "NDims": "3",
        "BinaryData": "True",
        "BinaryDataByteOrderMSB": "False",
        "CompressedData": str(layout.compressed),
        "DimSize": f"{layout.width} {layout.height} {layout.frames}",
        "Kinds": "domain domain list",
        "ElementNumberOfChannels": str(layout.channels),
        "ElementType": element_type_name(layout.dtype) if layout.has_pixels else NO_PIXEL_TYPE,
    }
    if layout.compressed:
        values["CompressedDataSize"] = str(compressed_size)
    items = [(key, values[key]) for key in _FIELD_ORDER if key in values]
    items += [(key, value) for key, value in header.items() if key not in _FIELD_ORDER]
    items += frame_items
    items.append(("ElementDataFile", data_file))
    return "".join(f"{key} = {value}\n" for key, value in items).encode("utf-8")
