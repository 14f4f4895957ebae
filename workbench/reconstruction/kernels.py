"""Compiled inner loops of the reconstruction: pixel pasting and hole filling.

These functions reproduce the arithmetic of PLUS / IGSIO (``vtkIGSIOPasteSliceIntoVolume``,
``vtkIGSIOFillHolesInVolume``) operation by operation, because PLUS's results depend on it:
the running mean is truncated at every insertion, the accumulation buffer is an unsigned
16-bit weight (256 per whole pixel) that saturates, FULL optimization does the geometry in
14-bit fixed point, and PLUS's fast floor/round add a tolerance of 2**-17. The order of
insertion (frame, then row, then column) matters and is kept: each frame is one sequential
loop. See docs/reconstruction.md for the derivation of every rule.

Arrays are laid out as PLUS lays them out in memory: the volume and the accumulation buffer
are ``(nz, ny, nx)`` C-ordered (x fastest), frames are ``(rows, columns)`` in MF orientation.
"""

from __future__ import annotations

import numba
import numpy as np

#: Compounding codes passed to the kernels.
MEAN, MAXIMUM, LATEST = 0, 1, 2
#: Arithmetic codes: FULL = 14-bit fixed point (PLUS ``Optimization="FULL"``), PARTIAL = doubles
#: with the optimized loop, NONE = doubles with PLUS's unoptimized loop.
FULL, PARTIAL, NONE = 0, 1, 2

#: One whole pixel adds this much to the accumulation buffer (PLUS ACCUMULATION_MULTIPLIER).
ACCUMULATION_UNIT = 256
#: Largest accumulation value before PLUS switches to 1/256 recursive filtering.
ACCUMULATION_THRESHOLD = 65279
ACCUMULATION_MAXIMUM = 65535

FIXED_SHIFT = 14
FIXED_ONE = 1 << FIXED_SHIFT
_FIXED_HALF = FIXED_ONE >> 1
#: Trilinear weights below 1/8 never replace a voxel in MAXIMUM / LATEST compounding.
_MIN_WEIGHT_FIXED = FIXED_ONE // 8

# igsioMath::Floor / Round on 64-bit builds: add a large constant (with a 2**-17 tolerance,
# which the addition itself absorbs into the rounding of the sum) and truncate.
_FLOOR_BIAS = 103079215104.0 + 7.62939453125e-06
_ROUND_BIAS = 103079215104.5 + 7.62939453125e-06
_BIAS_INT = 103079215104


@numba.njit
def plus_floor(x):
    """``igsioMath::Floor``: floor that rounds values within ~2**-17 below an integer up."""
    return np.int64(x + _FLOOR_BIAS) - _BIAS_INT


@numba.njit
def plus_round(x):
    """``igsioMath::Round``: round half up, with the same tolerance as :func:`plus_floor`."""
    return np.int64(x + _ROUND_BIAS) - _BIAS_INT


@numba.njit
def _fixed_multiply(a, b):
    """``fixed * fixed`` (PLUS fixed.h ``fast_multiply``): rounded, 14 fractional bits."""
    return (a * b + _FIXED_HALF) >> FIXED_SHIFT


@numba.njit
def _fixed_divide(a, b):
    """``fixed / fixed``: the quotient as a double, back to fixed point rounding half to even."""
    return np.int64(np.rint(a / b * FIXED_ONE))


@numba.njit
def _in_volume(i, j, k, nx, ny, nz):
    return 0 <= i < nx and 0 <= j < ny and 0 <= k < nz


@numba.njit
def _double_position(matrix, row, col, axis, unoptimized):
    """Voxel position of a pixel in double precision, summed in PLUS's order."""
    if unoptimized:
        return ((matrix[axis, 0] * col + matrix[axis, 1] * row) + matrix[axis, 2] * 0.0) + matrix[axis, 3]
    return (matrix[axis, 3] + row * matrix[axis, 1]) + col * matrix[axis, 0]


@numba.njit
def _fixed_position(matrix_fixed, row, col, axis):
    """Voxel position of a pixel in 14-bit fixed point (exact integer sums, as PLUS)."""
    return matrix_fixed[axis, 2] + row * matrix_fixed[axis, 1] + col * matrix_fixed[axis, 0]


@numba.njit
def _saturated(weight):
    return weight if weight < ACCUMULATION_MAXIMUM else ACCUMULATION_MAXIMUM


@numba.njit
def _float32_mean(value, weight, previous, previous_weight, total_weight):
    """``(value * weight + previous * previous_weight) / total_weight`` in C++ float arithmetic."""
    weighted = np.float32(np.float32(value) * np.float32(weight))
    kept = np.float32(np.float32(previous) * np.float32(previous_weight))
    return np.float32(np.float32(weighted + kept) / np.float32(total_weight))


@numba.njit
def _splat_fixed(weight, value, out, acc, compounding):
    """New (voxel value, accumulation) after adding integer ``value`` with fixed-point ``weight``.

    PLUS's ``vtkTrilinearInterpolation`` with FULL optimization, integer voxels (rounded means).
    """
    if weight == 0:
        return out, acc
    if compounding == MEAN:
        r = acc * (FIXED_ONE // ACCUMULATION_UNIT)
        a = weight + r
        mean = _fixed_divide(weight * value + r * out, a)
        return (mean + _FIXED_HALF) >> FIXED_SHIFT, _saturated((a * ACCUMULATION_UNIT + _FIXED_HALF) >> FIXED_SHIFT)
    if weight >= _MIN_WEIGHT_FIXED and (compounding == LATEST or value > out):
        return value, _saturated((weight * ACCUMULATION_UNIT + _FIXED_HALF) >> FIXED_SHIFT)
    return out, acc


@numba.njit
def _splat_fixed_float32(weight, value, out, acc, compounding):
    """As :func:`_splat_fixed` for float32 voxels: ``fixed * float`` is ``float(fixed) * float``."""
    if weight == 0:
        return out, acc
    if compounding == MEAN:
        r = acc * (FIXED_ONE // ACCUMULATION_UNIT)
        a = weight + r
        w32, r32, a32 = np.float32(weight / FIXED_ONE), np.float32(r / FIXED_ONE), np.float32(a / FIXED_ONE)
        mean = _float32_mean(value, w32, out, r32, a32)
        return mean, _saturated((a * ACCUMULATION_UNIT + _FIXED_HALF) >> FIXED_SHIFT)
    if weight >= _MIN_WEIGHT_FIXED and (compounding == LATEST or value > out):
        return np.float32(value), _saturated((weight * ACCUMULATION_UNIT + _FIXED_HALF) >> FIXED_SHIFT)
    return out, acc


@numba.njit
def _corner(c, i0, j0, k0, i1, j1, k1):
    """Voxel index of trilinear corner ``c`` (bit 2: x, bit 1: y, bit 0: z; PLUS's order)."""
    i = i1 if c & 4 else i0
    j = j1 if c & 2 else j0
    k = k1 if c & 1 else k0
    return i, j, k


# The hot loops below update the arrays inline: an njit helper taking arrays costs a
# reference-count round trip per call, which would make them several times slower.


@numba.njit(cache=True)
def paste_nearest(volume, accumulation, image, runs, matrix, matrix_fixed, arithmetic, compounding, threshold, integer):
    """Nearest-neighbour insertion of one frame, as PLUS's nearest-neighbour helpers.

    Parameters
    ----------
    volume : (nz, ny, nx) integer array, updated in place
    accumulation : (nz, ny, nx) uint16 array, updated in place
    image : (rows, columns) integer array, MF orientation
    runs : (rows, 4) int64 array
        Per row: first and last pixel to paste, first and last of a run to skip inside (see
        :func:`workbench.reconstruction.clipping.paste_runs`).
    matrix : (4, 4) float64 array
        Image pixel (column, row, 0, 1) to continuous voxel index.
    matrix_fixed : (3, 3) int64 array
        Columns: voxel step per column, per row, position of pixel (0, 0); each element
        ``round_half_even(value * 2**14)``, PLUS's ``fixed``. Used when ``arithmetic`` is FULL.
    arithmetic : int
        FULL, PARTIAL or NONE (PLUS ``Optimization``).
    compounding : int
        MEAN, MAXIMUM or LATEST.
    threshold : float
        Pixels darker than this are skipped (``-inf`` disables rejection).
    integer : bool
        True for integer voxels (means truncated), False for float32 (float32 arithmetic).

    Returns
    -------
    int
        Number of pixels inserted.
    """
    nz, ny, nx = volume.shape
    unoptimized = arithmetic == NONE
    inserted = 0
    for row in range(image.shape[0]):
        for col in range(runs[row, 0], runs[row, 1] + 1):
            if runs[row, 2] <= col <= runs[row, 3]:
                continue
            value = image[row, col]
            if value < threshold:
                continue
            if arithmetic == FULL:
                i = (_fixed_position(matrix_fixed, row, col, 0) + _FIXED_HALF) >> FIXED_SHIFT
                j = (_fixed_position(matrix_fixed, row, col, 1) + _FIXED_HALF) >> FIXED_SHIFT
                k = (_fixed_position(matrix_fixed, row, col, 2) + _FIXED_HALF) >> FIXED_SHIFT
            else:
                i = plus_round(_double_position(matrix, row, col, 0, unoptimized))
                j = plus_round(_double_position(matrix, row, col, 1, unoptimized))
                k = plus_round(_double_position(matrix, row, col, 2, unoptimized))
            if not _in_volume(i, j, k, nx, ny, nz):
                continue
            inserted += 1
            acc = np.int64(accumulation[k, j, i])
            if compounding == MEAN:
                if acc <= ACCUMULATION_THRESHOLD:
                    new_acc = acc + ACCUMULATION_UNIT
                    if integer:  # integer division: PLUS truncates the running mean at every insertion
                        volume[k, j, i] = (
                            np.int64(value) * ACCUMULATION_UNIT + np.int64(volume[k, j, i]) * acc
                        ) // new_acc
                    else:
                        volume[k, j, i] = _float32_mean(value, ACCUMULATION_UNIT, volume[k, j, i], acc, new_acc)
                    accumulation[k, j, i] = _saturated(new_acc)
                else:
                    volume[k, j, i] = value / 256.0 + volume[k, j, i] * (255.0 / 256.0)
                continue
            if compounding == LATEST or value > volume[k, j, i]:
                volume[k, j, i] = value
            accumulation[k, j, i] = _saturated(acc + ACCUMULATION_UNIT) if unoptimized else ACCUMULATION_UNIT
    return inserted


@numba.njit(cache=True)
def paste_linear_fixed(volume, accumulation, image, runs, matrix_fixed, compounding, threshold, integer):
    """Trilinear splatting of one frame with FULL optimization (14-bit fixed point throughout).

    Parameters and return value as :func:`paste_nearest`; integer means are rounded.
    """
    nz, ny, nx = volume.shape
    inserted = 0
    for row in range(image.shape[0]):
        for col in range(runs[row, 0], runs[row, 1] + 1):
            if runs[row, 2] <= col <= runs[row, 3]:
                continue
            value = image[row, col]
            if value < threshold:
                continue
            px = _fixed_position(matrix_fixed, row, col, 0)
            py = _fixed_position(matrix_fixed, row, col, 1)
            pz = _fixed_position(matrix_fixed, row, col, 2)
            # igsioMath::Floor of a fixed-point value is exact: an arithmetic shift
            i0, j0, k0 = px >> FIXED_SHIFT, py >> FIXED_SHIFT, pz >> FIXED_SHIFT
            fx, fy, fz = px - (i0 << FIXED_SHIFT), py - (j0 << FIXED_SHIFT), pz - (k0 << FIXED_SHIFT)
            i1, j1, k1 = i0 + (fx != 0), j0 + (fy != 0), k0 + (fz != 0)
            if not (_in_volume(i0, j0, k0, nx, ny, nz) and _in_volume(i1, j1, k1, nx, ny, nz)):
                continue
            inserted += 1
            rx, ry, rz = FIXED_ONE - fx, FIXED_ONE - fy, FIXED_ONE - fz
            ryrz, ryfz = _fixed_multiply(ry, rz), _fixed_multiply(ry, fz)
            fyrz, fyfz = _fixed_multiply(fy, rz), _fixed_multiply(fy, fz)
            for c in range(7, -1, -1):
                w = _fixed_multiply(
                    fx if c & 4 else rx, (fyfz if c & 1 else fyrz) if c & 2 else (ryfz if c & 1 else ryrz)
                )
                i, j, k = _corner(c, i0, j0, k0, i1, j1, k1)
                acc = np.int64(accumulation[k, j, i])
                if integer:
                    out, acc = _splat_fixed(w, np.int64(value), np.int64(volume[k, j, i]), acc, compounding)
                    volume[k, j, i] = out
                else:
                    mean, acc = _splat_fixed_float32(
                        w, np.float32(value), np.float32(volume[k, j, i]), acc, compounding
                    )
                    volume[k, j, i] = mean
                accumulation[k, j, i] = acc
    return inserted


@numba.njit(cache=True)
def paste_linear_double(volume, accumulation, image, runs, matrix, compounding, threshold, unoptimized, integer):
    """Trilinear splatting of one frame in doubles (PLUS ``Optimization`` PARTIAL or NONE).

    ``unoptimized`` selects the NONE summation order. Other parameters and the return value
    as :func:`paste_nearest`.
    """
    nz, ny, nx = volume.shape
    weights = np.zeros(8)
    inserted = 0
    for row in range(image.shape[0]):
        for col in range(runs[row, 0], runs[row, 1] + 1):
            if runs[row, 2] <= col <= runs[row, 3]:
                continue
            value = image[row, col]
            if value < threshold:
                continue
            px = _double_position(matrix, row, col, 0, unoptimized)
            py = _double_position(matrix, row, col, 1, unoptimized)
            pz = _double_position(matrix, row, col, 2, unoptimized)
            i0, j0, k0 = plus_floor(px), plus_floor(py), plus_floor(pz)
            fx, fy, fz = px - i0, py - j0, pz - k0
            i1, j1, k1 = i0 + (fx != 0), j0 + (fy != 0), k0 + (fz != 0)
            if not (_in_volume(i0, j0, k0, nx, ny, nz) and _in_volume(i1, j1, k1, nx, ny, nz)):
                continue
            inserted += 1
            rx, ry, rz = 1.0 - fx, 1.0 - fy, 1.0 - fz
            ryrz, ryfz, fyrz, fyfz = ry * rz, ry * fz, fy * rz, fy * fz
            weights[0], weights[1], weights[2], weights[3] = rx * ryrz, rx * ryfz, rx * fyrz, rx * fyfz
            weights[4], weights[5], weights[6], weights[7] = fx * ryrz, fx * ryfz, fx * fyrz, fx * fyfz
            for c in range(7, -1, -1):
                w = weights[c]
                if w == 0:
                    continue
                i, j, k = _corner(c, i0, j0, k0, i1, j1, k1)
                if compounding == MEAN:
                    r = accumulation[k, j, i] / 256.0
                    a = w + r
                    mean = (w * value + r * volume[k, j, i]) / a
                    volume[k, j, i] = plus_round(mean) if integer else mean
                    a *= ACCUMULATION_UNIT
                elif w >= 0.125 and (compounding == LATEST or value > volume[k, j, i]):
                    volume[k, j, i] = value
                    a = w * ACCUMULATION_UNIT
                else:
                    continue
                accumulation[k, j, i] = plus_round(a) if a < ACCUMULATION_MAXIMUM else ACCUMULATION_MAXIMUM
    return inserted


# -- hole filling ---------------------------------------------------------------------------

#: The 13 stick directions of PLUS's STICK hole filling, in PLUS's order.
STICK_DIRECTIONS = np.array(
    [
        [1, 0, 0],
        [0, 1, 0],
        [0, 0, 1],
        [1, 1, 0],
        [1, 0, 1],
        [0, 1, 1],
        [1, -1, 0],
        [1, 0, -1],
        [0, 1, -1],
        [1, 1, 1],
        [-1, 1, 1],
        [1, -1, 1],
        [-1, -1, 1],
    ],
    dtype=np.int64,
)


@numba.njit
def _walk_to_known(accumulation, i, j, k, di, dj, dk, max_steps):
    """Steps (1..max_steps) along (di, dj, dk) to the first voxel with accumulation, or 0."""
    nz, ny, nx = accumulation.shape
    for step in range(1, max_steps + 1):
        i, j, k = i + di, j + dj, k + dk
        if not _in_volume(i, j, k, nx, ny, nz):
            return 0
        if accumulation[k, j, i] != 0:
            return step
    return 0


@numba.njit
def _stick_value(volume, accumulation, i, j, k, directions, stick_length_limit, sticks_to_use, values, weights):
    """PLUS ``applySticks`` for one hole: returns (filled, value)."""
    for s in range(directions.shape[0]):
        di, dj, dk = directions[s, 0], directions[s, 1], directions[s, 2]
        weights[s] = 0.0
        forward = _walk_to_known(accumulation, i, j, k, di, dj, dk, stick_length_limit - 1)
        if forward == 0:
            continue
        backward = _walk_to_known(accumulation, i, j, k, -di, -dj, -dk, stick_length_limit - 1 - forward)
        if backward == 0:
            continue
        forward_value = np.float64(volume[k + forward * dk, j + forward * dj, i + forward * di])
        backward_value = np.float64(volume[k - backward * dk, j - backward * dj, i - backward * di])
        total = np.float64(forward + backward + 1)
        weight_forward = (backward + 1) / total
        weight_backward = 1.0 - weight_forward
        weights[s] = 1.0 / (total * np.sqrt(np.float64(di * di + dj * dj + dk * dk)))
        # PLUS keeps each stick's value in the voxel type (``values`` has it): integers truncate
        values[s] = weight_backward * backward_value + weight_forward * forward_value
    used = 0
    weighted_sum = 0.0
    weight_sum = 0.0
    while used < sticks_to_use:
        best = 0.0
        for s in range(weights.shape[0]):
            if weights[s] > best:
                best = weights[s]
        if best == 0.0:
            break
        for s in range(weights.shape[0]):
            if weights[s] == best:
                weighted_sum += np.float64(values[s]) * weights[s]
                weight_sum += weights[s]
                used += 1
                weights[s] = 0.0
    if weight_sum == 0.0:
        return False, 0.0
    return True, weighted_sum / weight_sum


@numba.njit
def _kernel_value(volume, accumulation, i, j, k, kernel, weight_by_accumulation, min_known_ratio):
    """PLUS ``applyGaussian`` / ``applyGaussianAccumulation`` / ``applyDistanceWeightInverse``."""
    nz, ny, nx = volume.shape
    size = kernel.shape[0]
    half = (size - 1) // 2
    weighted_sum = 0.0
    weight_sum = 0.0
    known = 0
    for x in range(i - half, i + half + 1):
        for y in range(j - half, j + half + 1):
            for z in range(k - half, k + half + 1):
                if not _in_volume(x, y, z, nx, ny, nz) or accumulation[z, y, x] == 0:
                    continue
                weight = np.float64(kernel[z - k + half, y - j + half, x - i + half])
                if weight_by_accumulation:
                    weight *= accumulation[z, y, x]
                weighted_sum += volume[z, y, x] * weight
                weight_sum += weight
                known += 1
    if weight_sum == 0.0 or known / (size * size * size) <= min_known_ratio:
        return False, 0.0
    return True, weighted_sum / weight_sum


@numba.njit
def _nearest_known_value(volume, accumulation, i, j, k, size, min_known_ratio):
    """PLUS ``applyNearestNeighbor``: mean of the known voxels in the smallest cube holding any."""
    nz, ny, nx = volume.shape
    total = 0.0
    count = 0
    for reach in range(1, (size - 1) // 2 + 1):
        for x in range(i - reach, i + reach + 1):
            for y in range(j - reach, j + reach + 1):
                for z in range(k - reach, k + reach + 1):
                    if _in_volume(x, y, z, nx, ny, nz) and accumulation[z, y, x] != 0:
                        total += volume[z, y, x]
                        count += 1
        if count:
            break
    if count == 0 or count / (size * size * size) <= min_known_ratio:
        return False, 0.0
    return True, total / count


STICK, GAUSSIAN, GAUSSIAN_ACCUMULATION, NEAREST_KNOWN, DISTANCE_WEIGHT_INVERSE = 0, 1, 2, 3, 4


@numba.njit(cache=True)
def fill_holes(volume, accumulation, element_types, element_numbers, kernels):
    """Fill voxels that no pixel reached (accumulation 0), in place, as PLUS does.

    Holes are filled from known voxels only (accumulation > 0), never from other filled
    holes, so filling in place gives PLUS's result. Each hole tries the elements in order
    until one succeeds; a hole no element fills becomes 0.

    Parameters
    ----------
    volume : (nz, ny, nx) integer array, updated in place
    accumulation : (nz, ny, nx) uint16 array
    element_types : (E,) int64 array
        STICK, GAUSSIAN, GAUSSIAN_ACCUMULATION, NEAREST_KNOWN or DISTANCE_WEIGHT_INVERSE.
    element_numbers : (E, 3) float64 array
        STICK: (StickLengthLimit, NumberOfSticksToUse, 0); kernels: (Size, MinimumKnownVoxelsRatio
        as float32 widened to double, 0).
    kernels : (E, S, S, S) float32 array
        Weights of the kernel elements (zeros for the others), indexed [z, y, x].

    Returns
    -------
    int
        Number of holes filled.
    """
    nz, ny, nx = volume.shape
    values = np.zeros(STICK_DIRECTIONS.shape[0], dtype=volume.dtype)
    weights = np.zeros(STICK_DIRECTIONS.shape[0])
    filled = 0
    for k in range(nz):
        for j in range(ny):
            for i in range(nx):
                if accumulation[k, j, i] != 0:
                    continue
                ok = False
                result = 0.0
                for e in range(element_types.shape[0]):
                    kind = element_types[e]
                    if kind == STICK:
                        ok, result = _stick_value(
                            volume,
                            accumulation,
                            i,
                            j,
                            k,
                            STICK_DIRECTIONS,
                            np.int64(element_numbers[e, 0]),
                            np.int64(element_numbers[e, 1]),
                            values,
                            weights,
                        )
                    elif kind == NEAREST_KNOWN:
                        ok, result = _nearest_known_value(
                            volume, accumulation, i, j, k, np.int64(element_numbers[e, 0]), element_numbers[e, 1]
                        )
                    else:
                        size = np.int64(element_numbers[e, 0])
                        ok, result = _kernel_value(
                            volume,
                            accumulation,
                            i,
                            j,
                            k,
                            kernels[e, :size, :size, :size],
                            kind == GAUSSIAN_ACCUMULATION,
                            element_numbers[e, 1],
                        )
                    if ok:
                        break
                if ok:
                    volume[k, j, i] = result  # cast to the voxel type: integers truncate
                    filled += 1
                else:
                    volume[k, j, i] = 0
    return filled
