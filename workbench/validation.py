"""One validation layer for the numbers every reader hands on: finite, physically possible, affordable.

Every reader (volumes, PLUS sequences and device sets, DICOM, ITK transforms, case.json,
plan.json, Slicer markups) checks what it read with these functions before returning it, so a
value no scanner, tracker or plan produces (NaN, spacing 0 or 1e300, a pose 10 km away, a
"rotation" that shears, a header asking for more voxels than memory holds) is refused with a
:class:`~workbench.errors.WorkbenchError` subclass whose message names the field and the file.

Ranges (module constants, in the units their names state):

- spacing: :data:`MIN_SPACING_MM` .. :data:`MAX_SPACING_MM` (1e-3 .. 100 mm);
- coordinates and translations: within :data:`MAX_COORDINATE_MM` (10 m) of the origin;
- rotations and image directions: orthonormal to :data:`ORTHONORMAL_TOLERANCE` (1e-4);
- sizes: the bytes an array needs, at most :data:`MEMORY_FRACTION` of the memory available now
  (``/proc/meminfo`` ``MemAvailable`` or ``os.sysconf``, and the process's address-space limit).

This module imports only the standard library, numpy and :mod:`workbench.errors`.
"""

from __future__ import annotations

import math
import os
import resource
from typing import Iterable

import numpy as np

from workbench.errors import WorkbenchError

__all__ = [
    "MAX_COORDINATE_MM",
    "MAX_DIMENSIONS",
    "MAX_SPACING_MM",
    "MEMORY_FRACTION",
    "MIN_SPACING_MM",
    "ORTHONORMAL_TOLERANCE",
    "available_memory_bytes",
    "check_affine",
    "check_allocation",
    "check_coordinates_mm",
    "check_direction",
    "check_finite",
    "check_image_geometry",
    "check_int_range",
    "check_rotation",
    "check_size",
    "check_spacing_mm",
    "finite_float",
]

MIN_SPACING_MM = 1e-3
MAX_SPACING_MM = 100.0
MAX_COORDINATE_MM = 10_000.0
ORTHONORMAL_TOLERANCE = 1e-4
#: largest share of the available memory one array a file asks for may take
MEMORY_FRACTION = 0.5
#: most image dimensions any reader accepts (ITK's image IO reads up to 5)
MAX_DIMENSIONS = 5
#: the scale factors (singular values) an affine's linear part may hold: mm per pixel of an
#: ultrasound image (1e-3) up to a generous scale (1e3); outside, no device wrote it
_MIN_SCALE = 1e-4
_MAX_SCALE = 1e4

PathLike = str | os.PathLike | None


def _fail(error: type[WorkbenchError], field: str, problem: str, path: PathLike) -> WorkbenchError:
    return error(f"{field}: {problem}", path)


def _array(values, field: str, path: PathLike, error: type[WorkbenchError]) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError, OverflowError):
        raise _fail(error, field, "holds a value that is not a number", path) from None
    return array


def finite_float(value, field: str, path: PathLike = None, error: type[WorkbenchError] = WorkbenchError) -> float:
    """``value`` as a finite float; a bool, a non-number, an overflow, NaN or infinity is refused."""
    if isinstance(value, bool) or value is None:
        raise _fail(error, field, f"expected a number, got {type(value).__name__}", path)
    try:
        number = float(value)
    except OverflowError:
        raise _fail(error, field, "number too large for a float", path) from None
    except (TypeError, ValueError):
        raise _fail(error, field, f"expected a number, got {str(value)[:30]!r}", path) from None
    if not math.isfinite(number):
        raise _fail(error, field, f"{number} is not finite", path)
    return number


def check_finite(values, field: str, path: PathLike = None, error: type[WorkbenchError] = WorkbenchError) -> np.ndarray:
    """``values`` as a float array once every entry is finite."""
    array = _array(values, field, path, error)
    if not np.all(np.isfinite(array)):
        raise _fail(error, field, "holds NaN or infinity", path)
    return array


def check_spacing_mm(
    spacing, field: str, path: PathLike = None, error: type[WorkbenchError] = WorkbenchError
) -> np.ndarray:
    """Voxel or pixel spacing (mm) once finite and within MIN_SPACING_MM .. MAX_SPACING_MM."""
    array = check_finite(spacing, field, path, error)
    bad = (array < MIN_SPACING_MM) | (array > MAX_SPACING_MM)
    if np.any(bad):
        value = float(array[bad].ravel()[0])
        raise _fail(error, field, f"spacing {value:g} mm is outside {MIN_SPACING_MM:g}..{MAX_SPACING_MM:g} mm", path)
    return array


def check_coordinates_mm(
    values, field: str, path: PathLike = None, error: type[WorkbenchError] = WorkbenchError
) -> np.ndarray:
    """Positions or translations (mm) once finite and within MAX_COORDINATE_MM (10 m) of the origin."""
    array = check_finite(values, field, path, error)
    if array.size and float(np.max(np.abs(array))) > MAX_COORDINATE_MM:
        value = float(np.max(np.abs(array)))
        raise _fail(error, field, f"coordinate {value:g} mm is farther than {MAX_COORDINATE_MM / 1000:g} m", path)
    return array


def check_rotation(
    matrix, field: str, path: PathLike = None, error: type[WorkbenchError] = WorkbenchError, *, proper: bool = False
) -> np.ndarray:
    """A square matrix once orthonormal to ORTHONORMAL_TOLERANCE (and det +1 if ``proper``)."""
    array = check_finite(matrix, field, path, error)
    if array.ndim != 2 or array.shape[0] != array.shape[1] or array.shape[0] == 0:
        raise _fail(error, field, f"expected a square matrix, got shape {array.shape}", path)
    with np.errstate(all="ignore"):
        deviation = float(np.max(np.abs(array.T @ array - np.eye(array.shape[0]))))
    if not np.isfinite(deviation):
        deviation = np.inf
    if deviation > ORTHONORMAL_TOLERANCE:
        raise _fail(error, field, f"not orthonormal (|R^T R - I| = {deviation:.2g} > {ORTHONORMAL_TOLERANCE:g})", path)
    if proper and np.linalg.det(array) < 0:
        raise _fail(error, field, "is a reflection (determinant -1), not a rotation", path)
    return array


def check_direction(
    direction, dimension: int, field: str, path: PathLike = None, error: type[WorkbenchError] = WorkbenchError
) -> np.ndarray:
    """Image direction cosines (row-major, ``dimension`` x ``dimension``) once orthonormal."""
    array = check_finite(direction, field, path, error).ravel()
    if array.size != dimension * dimension:
        raise _fail(error, field, f"expected {dimension * dimension} direction cosines, got {array.size}", path)
    return check_rotation(array.reshape(dimension, dimension), field, path, error)


def check_affine(
    matrix,
    field: str,
    path: PathLike = None,
    error: type[WorkbenchError] = WorkbenchError,
    *,
    rigid: bool = False,
) -> np.ndarray:
    """A 4x4 homogeneous transform (mm) once physically possible.

    Finite; last row ``0 0 0 1``; translation within 10 m; the linear part orthonormal if
    ``rigid``, else invertible with scale factors between 1e-4 and 1e4 (an ultrasound
    image-to-probe calibration scales pixels to mm).
    """
    array = check_finite(matrix, field, path, error)
    if array.size == 16:
        array = array.reshape(4, 4)
    if array.shape != (4, 4):
        raise _fail(error, field, f"expected a 4x4 matrix, got shape {array.shape}", path)
    if np.max(np.abs(array[3] - (0.0, 0.0, 0.0, 1.0))) > 1e-6:
        raise _fail(error, field, "last row must be 0 0 0 1", path)
    check_coordinates_mm(array[:3, 3], f"{field} translation", path, error)
    if rigid:
        check_rotation(array[:3, :3], f"{field} rotation", path, error)
    else:
        with np.errstate(all="ignore"):
            scales = np.linalg.svd(array[:3, :3], compute_uv=False)
        if not np.all(np.isfinite(scales)) or scales[-1] < _MIN_SCALE:
            raise _fail(error, field, f"matrix is singular (smallest scale {scales[-1]:.3g} < {_MIN_SCALE:g})", path)
        if scales[0] > _MAX_SCALE:
            raise _fail(error, field, f"matrix scales by {scales[0]:.3g}, more than {_MAX_SCALE:g}", path)
    return array


def check_int_range(
    value, low: int, high: int, field: str, path: PathLike = None, error: type[WorkbenchError] = WorkbenchError
) -> int:
    """``value`` as an int once within ``low`` .. ``high`` (inclusive); a bool or a float is refused."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise _fail(error, field, f"expected an integer, got {str(value)[:30]!r}", path)
    if not low <= int(value) <= high:
        raise _fail(error, field, f"{int(value)} is outside {low}..{high}", path)
    return int(value)


def available_memory_bytes() -> int:
    """Bytes this process can still allocate: the smaller of free RAM and its address-space headroom.

    Free RAM is ``MemAvailable`` of ``/proc/meminfo`` (else ``os.sysconf`` available pages); the
    headroom is ``RLIMIT_AS`` minus the process's current virtual size where a limit is set.
    """
    available = None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        available = None
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = 8 << 30
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        available = min(available, max(0, soft - _virtual_size_bytes()))
    return int(available)


def _virtual_size_bytes() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def check_allocation(
    nbytes: int, what: str, path: PathLike = None, error: type[WorkbenchError] = WorkbenchError
) -> int:
    """Refuse an array of ``nbytes`` larger than MEMORY_FRACTION of the memory available now."""
    limit = int(available_memory_bytes() * MEMORY_FRACTION)
    if nbytes < 0 or nbytes > limit:
        raise _fail(
            error, what, f"needs {_human(nbytes)}, more than the {_human(limit)} this machine can spare", path
        )
    return int(nbytes)


def check_size(
    sizes: Iterable,
    field: str,
    path: PathLike = None,
    error: type[WorkbenchError] = WorkbenchError,
    *,
    bytes_per_element: int = 1,
    max_dimensions: int = MAX_DIMENSIONS,
) -> tuple[int, ...]:
    """Array dimensions once each is a positive integer and their product fits in memory.

    Returns
    -------
    tuple of int
        The sizes.
    """
    values = list(sizes)
    if not 1 <= len(values) <= max_dimensions:
        raise _fail(error, field, f"{len(values)} dimensions (expected 1..{max_dimensions})", path)
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
            raise _fail(error, field, f"size {str(value)[:30]!r} is not a positive integer", path)
        out.append(int(value))
    total = math.prod(out) * max(1, int(bytes_per_element))
    check_allocation(total, field, path, error)
    return tuple(out)


def check_image_geometry(
    size,
    spacing,
    origin,
    direction,
    path: PathLike = None,
    error: type[WorkbenchError] = WorkbenchError,
    *,
    bytes_per_voxel: int = 1,
    what: str = "image",
) -> None:
    """An image's size, spacing (mm), origin (mm) and direction cosines, all at once."""
    sizes = check_size(size, f"{what} size", path, error, bytes_per_element=bytes_per_voxel)
    dimension = len(sizes)
    spacing = check_spacing_mm(spacing, f"{what} spacing", path, error)
    if spacing.size != dimension:
        raise _fail(error, f"{what} spacing", f"{spacing.size} values for {dimension} dimensions", path)
    origin = check_coordinates_mm(origin, f"{what} origin", path, error)
    if origin.size != dimension:
        raise _fail(error, f"{what} origin", f"{origin.size} values for {dimension} dimensions", path)
    check_direction(direction, dimension, f"{what} direction", path, error)
    extent = float(np.max(np.asarray(sizes) * spacing))
    if extent > 2 * MAX_COORDINATE_MM:
        raise _fail(error, f"{what} extent", f"{extent:g} mm is larger than any body", path)


def _human(nbytes: int) -> str:
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{value:.3g} {unit}"
        value /= 1024
    return f"{value:.3g} PiB"
