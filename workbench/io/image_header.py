"""Header sanity for MetaImage, NRRD and NIfTI files before SimpleITK/ITK opens them.

ITK's image readers trust their headers: ``NDims = 1000`` in a MetaImage, an unknown ``endian``
in a NRRD or a negative ``dim`` in a NIfTI header has killed the process (signal 11) inside the
library, where no Python ``except`` can help. :func:`check_image_header` parses the header
itself and refuses, with a :class:`~workbench.errors.VolumeError` naming the field and the
file, anything outside what the formats allow and a scanner writes:

- dimensions 1..5 and sizes that are positive integers whose voxels fit in memory
  (:func:`workbench.validation.check_size`);
- a known element type and byte order, a supported encoding;
- spacing 1e-3..100 mm, origin within 10 m, orthonormal directions (:mod:`workbench.validation`);
- for uncompressed data, a file (or detached data file) at least as large as the voxels need.

Only headers of files with a volume ending are checked; other formats go to SimpleITK as before.
"""

from __future__ import annotations

import gzip
import math
import re
import struct
import zlib
from pathlib import Path

import numpy as np

from workbench.errors import VolumeError
from workbench.validation import (
    MAX_DIMENSIONS,
    check_coordinates_mm,
    check_direction,
    check_finite,
    check_size,
    check_spacing_mm,
)

__all__ = ["check_image_header"]

_MAX_HEADER_BYTES = 1 << 20

_MET_TYPES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
    "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8,
}  # fmt: skip
_MET_BOOLEANS = ("BinaryData", "BinaryDataByteOrderMSB", "ElementByteOrderMSB", "CompressedData")
_MET_VECTORS = {"Offset": "origin", "Position": "origin", "Origin": "origin", "CenterOfRotation": "origin"}
_MET_MATRICES = ("TransformMatrix", "Rotation", "Orientation")

_NRRD_TYPES = {
    "signed char": 1, "int8": 1, "int8_t": 1, "uchar": 1, "unsigned char": 1, "uint8": 1, "uint8_t": 1,
    "short": 2, "short int": 2, "signed short": 2, "signed short int": 2, "int16": 2, "int16_t": 2,
    "ushort": 2, "unsigned short": 2, "unsigned short int": 2, "uint16": 2, "uint16_t": 2,
    "int": 4, "signed int": 4, "int32": 4, "int32_t": 4, "uint": 4, "unsigned int": 4, "uint32": 4, "uint32_t": 4,
    "longlong": 8, "long long": 8, "long long int": 8, "signed long long": 8, "signed long long int": 8,
    "int64": 8, "int64_t": 8, "ulonglong": 8, "unsigned long long": 8, "unsigned long long int": 8,
    "uint64": 8, "uint64_t": 8, "float": 4, "double": 8,
}  # fmt: skip
_NRRD_ENCODINGS = ("raw", "gzip", "gz", "ascii", "text", "txt")
_NRRD_SPACES = (
    "right-anterior-superior", "ras", "left-anterior-superior", "las", "left-posterior-superior", "lps",
    "right-anterior-superior-time", "rast", "left-anterior-superior-time", "last",
    "left-posterior-superior-time", "lpst", "scanner-xyz", "scanner-xyz-time", "3d-right-handed",
    "3d-left-handed", "3d-right-handed-time", "3d-left-handed-time",
)  # fmt: skip
_NRRD_KNOWN = {
    "type", "dimension", "sizes", "space", "space dimension", "space directions", "space origin", "spacings",
    "thicknesses", "axis mins", "axismins", "axis maxs", "axismaxs", "centers", "centerings", "kinds", "labels",
    "units", "space units", "endian", "encoding", "data file", "datafile", "line skip", "lineskip", "byte skip",
    "byteskip", "content", "measurement frame", "min", "max", "old min", "oldmin", "old max", "oldmax",
    "sample units", "sampleunits", "block size", "blocksize", "number",
}  # fmt: skip
_NRRD_VECTOR = re.compile(r"\(([^()]*)\)|none")

# NIfTI-1 datatype code -> bytes per voxel
_NIFTI_TYPES = {2: 1, 4: 2, 8: 4, 16: 4, 32: 8, 64: 8, 128: 3, 256: 1, 512: 2, 768: 4, 1024: 8, 1280: 8, 2304: 4, 1792: 16}
_NIFTI_UNIT_MM = {0: 1.0, 1: 1000.0, 2: 1.0, 3: 1e-3}


def check_image_header(path: Path, suffix: str) -> None:
    """Refuse a MetaImage, NRRD or NIfTI header that could crash ITK or describes an impossible image.

    Parameters
    ----------
    path : Path
        The file (a regular file; its detached data file, if any, already checked by the caller).
    suffix : str
        Its volume ending (``".mha"``, ``".nii.gz"``...; see ``workbench.io.volume.VOLUME_SUFFIXES``).

    Raises
    ------
    VolumeError
        The field and the problem, naming ``path``.
    """
    if suffix in (".mha", ".mhd"):
        _check_metaimage(path)
    elif suffix in (".nrrd", ".nhdr"):
        _check_nrrd(path)
    elif suffix in (".nii", ".nii.gz"):
        _check_nifti(path, gzipped=suffix == ".nii.gz")


# -- MetaImage -----------------------------------------------------------------------------------


def _read_prefix(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(_MAX_HEADER_BYTES)


def _ints(text: str, count: int, field: str, path: Path) -> list[int]:
    tokens = text.split()
    if len(tokens) != count:
        raise VolumeError(f"{field}: expected {count} integers, got {len(tokens)}", path)
    values = []
    for token in tokens:
        if not re.fullmatch(r"[+-]?\d{1,12}", token):
            raise VolumeError(f"{field}: {token[:30]!r} is not an integer", path)
        values.append(int(token))
    return values


def _floats(text: str, count: int, field: str, path: Path) -> np.ndarray:
    tokens = text.split()
    if len(tokens) != count:
        raise VolumeError(f"{field}: expected {count} numbers, got {len(tokens)}", path)
    try:
        values = [float(token) for token in tokens]
    except ValueError:
        raise VolumeError(f"{field}: {text[:40]!r} holds a value that is not a number", path) from None
    return check_finite(values, field, path, VolumeError)


def _check_metaimage(path: Path) -> None:
    prefix = _read_prefix(path)
    match = re.search(rb"^\s*ElementDataFile\s*=\s*([^\r\n]*)\r?\n?", prefix, re.MULTILINE)
    if match is None:
        raise VolumeError("MetaImage header has no ElementDataFile line (or is longer than 1 MiB)", path)
    head = prefix[: match.start()].decode("latin-1")
    data_file = match.group(1).decode("latin-1").strip()
    fields: dict[str, str] = {}
    for number, line in enumerate(head.splitlines(), start=1):
        if not line.strip():
            continue
        key, separator, value = line.partition("=")
        if not separator:
            raise VolumeError(f"MetaImage header line {number}: expected 'Key = Value'", path)
        key = key.strip()
        if key in fields and key != "Comment":
            raise VolumeError(f"MetaImage header field {key[:40]} given twice", path)
        fields[key] = value.strip()
    ndims_text = fields.get("NDims")
    if ndims_text is None:
        raise VolumeError("MetaImage header has no NDims", path)
    (ndims,) = _ints(ndims_text, 1, "NDims", path)
    if not 1 <= ndims <= MAX_DIMENSIONS:
        raise VolumeError(f"NDims: {ndims} is outside 1..{MAX_DIMENSIONS}", path)
    object_type = fields.get("ObjectType", "Image")
    if object_type != "Image":
        raise VolumeError(f"ObjectType: {object_type[:30]!r}, expected Image", path)
    for key in _MET_BOOLEANS:
        if key in fields and fields[key].lower() not in ("true", "false", "1", "0"):
            raise VolumeError(f"{key}: {fields[key][:30]!r}, expected True or False", path)
    if "BinaryData" in fields and fields["BinaryData"].lower() in ("false", "0"):
        raise VolumeError("BinaryData: False (text voxels) is not supported", path)
    element_type = fields.get("ElementType")
    if element_type not in _MET_TYPES:
        raise VolumeError(f"ElementType: {str(element_type)[:30]!r} is not a known MetaImage element type", path)
    channels = 1
    if "ElementNumberOfChannels" in fields:
        (channels,) = _ints(fields["ElementNumberOfChannels"], 1, "ElementNumberOfChannels", path)
        if not 1 <= channels <= 64:
            raise VolumeError(f"ElementNumberOfChannels: {channels} is outside 1..64", path)
    if "DimSize" not in fields:
        raise VolumeError("MetaImage header has no DimSize", path)
    sizes = _ints(fields["DimSize"], ndims, "DimSize", path)
    bytes_per_voxel = _MET_TYPES[element_type] * channels
    check_size(sizes, "DimSize", path, VolumeError, bytes_per_element=bytes_per_voxel)
    for key in ("ElementSpacing", "ElementSize"):
        if key in fields:
            check_spacing_mm(_floats(fields[key], ndims, key, path), key, path, VolumeError)
    for key in _MET_VECTORS:
        if key in fields:
            check_coordinates_mm(_floats(fields[key], ndims, key, path), key, path, VolumeError)
    for key in _MET_MATRICES:
        if key in fields:
            check_direction(_floats(fields[key], ndims * ndims, key, path), ndims, key, path, VolumeError)
    header_size = 0
    if "HeaderSize" in fields:
        (header_size,) = _ints(fields["HeaderSize"], 1, "HeaderSize", path)
        if header_size < -1:
            raise VolumeError(f"HeaderSize: {header_size} is below -1", path)
    compressed = fields.get("CompressedData", "false").lower() in ("true", "1")
    if "CompressedDataSize" in fields:
        (compressed_size,) = _ints(fields["CompressedDataSize"], 1, "CompressedDataSize", path)
        if compressed_size < 1:
            raise VolumeError(f"CompressedDataSize: {compressed_size} is not a positive byte count", path)
    if data_file.split()[:1] == ["LIST"] or "%" in data_file:
        raise VolumeError(f"ElementDataFile: {data_file[:40]!r}: lists and file patterns are not supported", path)
    needed = math.prod(sizes) * bytes_per_voxel
    if data_file == "LOCAL":
        available = path.stat().st_size - match.end()
    else:
        data_path = path.parent / data_file
        available = data_path.stat().st_size if data_path.is_file() else -1
        if available < 0:
            raise VolumeError(f"ElementDataFile: {data_file[:60]!r} is not a file beside the header", path)
    if header_size > 0:
        available -= header_size
    if compressed:
        if available <= 0:
            raise VolumeError("CompressedData: no compressed data after the header", path)
    elif header_size != -1 and available < needed:
        raise VolumeError(
            f"DimSize and ElementType need {needed} bytes of voxels; the file holds {max(available, 0)}", path
        )


# -- NRRD -----------------------------------------------------------------------------------------


def _nrrd_vectors(text: str, dimension: int, field: str, path: Path) -> list[np.ndarray | None]:
    compact = text.replace(" ", "").replace("\t", "")
    if _NRRD_VECTOR.sub("", compact):
        raise VolumeError(f"{field}: {text[:60]!r} is not a list of vectors '(x,y,z)' or 'none'", path)
    vectors: list[np.ndarray | None] = []
    for match in _NRRD_VECTOR.finditer(compact):
        token = match.group(1)
        if token is None:
            vectors.append(None)
            continue
        parts = token.split(",")
        if len(parts) != dimension:
            raise VolumeError(f"{field}: vector ({token[:40]}) has {len(parts)} components, expected {dimension}", path)
        vectors.append(_floats(" ".join(parts), dimension, field, path))
    return vectors


def _check_nrrd(path: Path) -> None:
    prefix = _read_prefix(path)
    if not re.match(rb"NRRD000[1-5]\r?\n", prefix):
        raise VolumeError("not a NRRD file (first line is not NRRD0001..NRRD0005)", path)
    end = re.search(rb"\r?\n\r?\n", prefix)
    detached = path.name.lower().endswith(".nhdr")
    if end is None and not detached:
        raise VolumeError(
            'NRRD header does not end with a blank line: no voxels follow and no "data file" given', path
        )
    head = prefix[: end.start() if end else len(prefix)].decode("latin-1")
    data_offset = end.end() if end else len(prefix)
    fields: dict[str, str] = {}
    for number, line in enumerate(head.splitlines()[1:], start=2):
        if not line.strip() or line.startswith("#"):
            continue
        if ":=" in line:
            continue  # key/value pairs: metadata, not geometry
        key, separator, value = line.partition(": ")
        if not separator:
            raise VolumeError(f"NRRD header line {number}: expected 'field: value'", path)
        key = key.strip().lower()
        if key not in _NRRD_KNOWN:
            raise VolumeError(f"NRRD header line {number}: unknown field {key[:40]!r}", path)
        if key in fields:
            raise VolumeError(f"NRRD field {key!r} given twice", path)
        fields[key] = value.strip()
    for required in ("type", "dimension", "sizes", "encoding"):
        if required not in fields:
            raise VolumeError(f"NRRD header has no {required!r} field", path)
    (dimension,) = _ints(fields["dimension"], 1, "dimension", path)
    if not 1 <= dimension <= MAX_DIMENSIONS:
        raise VolumeError(f"dimension: {dimension} is outside 1..{MAX_DIMENSIONS}", path)
    element = _NRRD_TYPES.get(fields["type"].lower())
    if element is None:
        raise VolumeError(f"type: {fields['type'][:30]!r} is not a NRRD scalar type", path)
    encoding = fields["encoding"].lower()
    if encoding not in _NRRD_ENCODINGS:
        raise VolumeError(f"encoding: {fields['encoding'][:30]!r} is not supported (raw, gzip or ascii)", path)
    if element > 1 and encoding not in ("ascii", "text", "txt"):
        if fields.get("endian", "").lower() not in ("little", "big"):
            raise VolumeError(f"endian: {fields.get('endian', '')[:30]!r}, expected little or big", path)
    elif "endian" in fields and fields["endian"].lower() not in ("little", "big"):
        raise VolumeError(f"endian: {fields['endian'][:30]!r}, expected little or big", path)
    sizes = _ints(fields["sizes"], dimension, "sizes", path)
    check_size(sizes, "sizes", path, VolumeError, bytes_per_element=element)
    space_dimension = dimension
    if "space" in fields:
        space = fields["space"].lower()
        if space not in _NRRD_SPACES:
            raise VolumeError(f"space: {fields['space'][:40]!r} is not a NRRD space", path)
        space_dimension = 4 if space.endswith("-time") or space in ("rast", "last", "lpst") else 3
    if "space dimension" in fields:
        (space_dimension,) = _ints(fields["space dimension"], 1, "space dimension", path)
        if not 1 <= space_dimension <= MAX_DIMENSIONS:
            raise VolumeError(f"space dimension: {space_dimension} is outside 1..{MAX_DIMENSIONS}", path)
    if "spacings" in fields:
        tokens = fields["spacings"].split()
        if len(tokens) != dimension:
            raise VolumeError(f"spacings: expected {dimension} values, got {len(tokens)}", path)
        numbers = [t for t in tokens if t.lower() != "nan"]
        check_spacing_mm(_floats(" ".join(numbers), len(numbers), "spacings", path), "spacings", path, VolumeError)
    if "space directions" in fields:
        vectors = _nrrd_vectors(fields["space directions"], space_dimension, "space directions", path)
        if len(vectors) != dimension:
            raise VolumeError(f"space directions: {len(vectors)} entries for dimension {dimension}", path)
        spatial = np.array([v for v in vectors if v is not None])
        if spatial.size:
            lengths = np.linalg.norm(spatial, axis=1)
            check_spacing_mm(lengths, "space directions", path, VolumeError)
            if spatial.shape[0] == spatial.shape[1]:
                check_direction(spatial / lengths[:, None], spatial.shape[0], "space directions", path, VolumeError)
    if "space origin" in fields:
        origin = _nrrd_vectors(fields["space origin"], space_dimension, "space origin", path)
        if len(origin) != 1 or origin[0] is None:
            raise VolumeError("space origin: expected one vector '(x,y,z)'", path)
        check_coordinates_mm(origin[0], "space origin", path, VolumeError)
    for key in ("line skip", "lineskip", "byte skip", "byteskip"):
        if key in fields:
            (skip,) = _ints(fields[key], 1, key, path)
            if skip < -1:
                raise VolumeError(f"{key}: {skip} is below -1", path)
    data_file = fields.get("data file", fields.get("datafile"))
    if data_file is not None:
        if data_file.split()[:1] == ["LIST"] or "%" in data_file or len(data_file.split()) > 1:
            raise VolumeError(f"data file: {data_file[:40]!r}: lists and file patterns are not supported", path)
        data_path = path.parent / data_file
        if not data_path.is_file():
            raise VolumeError(f"data file: {data_file[:60]!r} is not a file beside the header", path)
        available, data_offset = data_path.stat().st_size, 0
    else:
        if detached:
            raise VolumeError("a .nhdr header without a 'data file' field", path)
        available = path.stat().st_size - data_offset
    if encoding == "raw" and available < math.prod(sizes) * element and fields.get("byte skip", "0") != "-1":
        raise VolumeError(
            f"sizes and type need {math.prod(sizes) * element} bytes of voxels; the file holds {available}", path
        )
    if encoding in ("gzip", "gz") and available <= 0:
        raise VolumeError("encoding gzip: no compressed data after the header", path)


# -- NIfTI ------------------------------------------------------------------------------------------


def _nifti_header(path: Path, gzipped: bool) -> tuple[bytes, int | None]:
    """The first 348 bytes and the uncompressed file size (None for .nii.gz: unknown until read)."""
    try:
        if gzipped:
            with gzip.open(path, "rb") as fh:
                return fh.read(352), None
        with open(path, "rb") as fh:
            return fh.read(352), path.stat().st_size
    except (OSError, EOFError, zlib.error) as exc:
        raise VolumeError(f"cannot read volume: NIfTI header unreadable ({str(exc)[:80]})", path) from None


def _check_nifti(path: Path, gzipped: bool) -> None:
    header, file_size = _nifti_header(path, gzipped)
    if len(header) < 348:
        raise VolumeError(f"NIfTI header is {len(header)} bytes, expected 348", path)
    (size_le,) = struct.unpack("<i", header[:4])
    if size_le == 348:
        order = "<"
    elif struct.unpack(">i", header[:4])[0] == 348:
        order = ">"
    elif size_le == 540 or struct.unpack(">i", header[:4])[0] == 540:
        raise VolumeError("NIfTI-2 files are not supported (save as NIfTI-1)", path)
    else:
        raise VolumeError(f"sizeof_hdr: {size_le}, expected 348 (not a NIfTI-1 file)", path)
    magic = header[344:348]
    if magic not in (b"n+1\0", b"ni1\0"):
        raise VolumeError(f"magic: {magic!r}, expected 'n+1' or 'ni1'", path)
    if magic == b"ni1\0":
        raise VolumeError("a two-file NIfTI pair (.hdr/.img) is not supported", path)
    dim = struct.unpack(order + "8h", header[40:56])
    if not 1 <= dim[0] <= 7:
        raise VolumeError(f"dim[0]: {dim[0]} is outside 1..7", path)
    sizes = list(dim[1 : dim[0] + 1])
    if any(size < 1 for size in sizes):
        raise VolumeError(f"dim: {sizes} has a size below 1", path)
    datatype, bitpix = struct.unpack(order + "2h", header[70:74])
    element = _NIFTI_TYPES.get(datatype)
    if element is None:
        raise VolumeError(f"datatype: {datatype} is not a NIfTI data type", path)
    if bitpix != element * 8:
        raise VolumeError(f"bitpix: {bitpix} does not match datatype {datatype} ({element * 8} bits)", path)
    check_size(sizes, "dim", path, VolumeError, bytes_per_element=element, max_dimensions=7)
    pixdim = struct.unpack(order + "8f", header[76:108])
    (vox_offset,) = struct.unpack(order + "f", header[108:112])
    scl_slope, scl_inter = struct.unpack(order + "2f", header[112:120])
    xyzt_units = header[123]
    unit = _NIFTI_UNIT_MM.get(xyzt_units & 0x07)
    if unit is None:
        raise VolumeError(f"xyzt_units: spatial unit code {xyzt_units & 0x07} is unknown", path)
    spatial = min(dim[0], 3)
    check_finite(pixdim[: dim[0] + 1], "pixdim", path, VolumeError)
    check_spacing_mm(np.abs(pixdim[1 : spatial + 1]) * unit, "pixdim", path, VolumeError)
    check_finite((scl_slope, scl_inter), "scl_slope/scl_inter", path, VolumeError)
    if not (math.isfinite(vox_offset) and 348 <= vox_offset <= 1 << 24):
        raise VolumeError(f"vox_offset: {vox_offset} is outside 348..16 MiB", path)
    if file_size is not None and file_size < int(vox_offset) + math.prod(sizes) * element:
        raise VolumeError(
            f"dim and datatype need {math.prod(sizes) * element} bytes after vox_offset {int(vox_offset)}; "
            f"the file holds {max(file_size - int(vox_offset), 0)}",
            path,
        )
    qform_code, sform_code = struct.unpack(order + "2h", header[252:256])
    if not (0 <= qform_code <= 4 and 0 <= sform_code <= 4):
        raise VolumeError(f"qform_code {qform_code} / sform_code {sform_code} outside 0..4", path)
    quatern = check_finite(struct.unpack(order + "6f", header[256:280]), "quatern/qoffset", path, VolumeError)
    if qform_code > 0:
        if float(np.sum(quatern[:3] ** 2)) > 1.0 + 1e-4:
            raise VolumeError(f"quatern_b/c/d: |(b,c,d)|^2 = {float(np.sum(quatern[:3] ** 2)):.6g} > 1", path)
        check_coordinates_mm(quatern[3:] * unit, "qoffset", path, VolumeError)
    srow = check_finite(struct.unpack(order + "12f", header[280:328]), "srow", path, VolumeError).reshape(3, 4)
    if sform_code > 0:
        check_coordinates_mm(srow[:, 3] * unit, "srow offset", path, VolumeError)
        lengths = np.linalg.norm(srow[:, :3], axis=0) * unit
        check_spacing_mm(lengths[:spatial], "srow voxel size", path, VolumeError)
        if abs(np.linalg.det(srow[:, :3] / np.where(lengths > 0, lengths / unit, 1.0))) < 1e-3:
            raise VolumeError("srow: the sform's axes are not independent (singular)", path)
