"""Which pixels of a frame PLUS pastes: clip rectangle and fan, in the MF-oriented image.

Two PLUS conventions are reproduced exactly:

- The clip rectangle is *inclusive* at both ends: ``ClipRectangleOrigin="0 0"
  ClipRectangleSize="820 616"`` keeps columns 0..820 clamped to the image (0..819). A zero
  size means the whole frame.
- The fan (``FanAnglesDeg``, ``FanOriginPixel``, ``FanRadiusStart/StopPixel``) is applied per
  row by the optimized loops (``Optimization`` FULL or PARTIAL): the row's run of pixels is
  cut to ``ceil(tan(left) * dy + ox + 1) .. floor(tan(right) * dy + ox - 1)`` and to the
  circle of the stop radius (one pixel inside each edge), minus the run inside the start
  radius. The unoptimized loop (``Optimization="NONE"``) tests every pixel's angle and
  distance exactly. PLUS's frames have unit pixel spacing, so pixels are the fan's unit.

See docs/reconstruction.md.
"""

from __future__ import annotations

import numpy as np

from workbench.io.plus_config import VolumeReconstructionConfig

__all__ = ["clip_extent", "extent_corner_box", "paste_mask", "paste_runs"]

# igsioMath::Floor on 64-bit builds (see kernels.plus_floor); numpy twin for row bounds.
_FLOOR_BIAS = 103079215104.0 + 7.62939453125e-06
_BIAS_INT = 103079215104


def _plus_floor(values: np.ndarray) -> np.ndarray:
    return (np.asarray(values, dtype=float) + _FLOOR_BIAS).astype(np.int64) - _BIAS_INT


def _plus_ceil(values: np.ndarray) -> np.ndarray:
    """PLUS writes ceil as ``-Floor(-x)``."""
    return -_plus_floor(-np.asarray(values, dtype=float))


def _has_clip_rectangle(config: VolumeReconstructionConfig) -> bool:
    width, height = config.clip_rectangle_size_px
    return width > 0 and height > 0


def clip_extent(config: VolumeReconstructionConfig, width: int, height: int) -> tuple[int, int, int, int]:
    """Inclusive pixel bounds ``(x0, x1, y0, y1)`` of the clip rectangle inside the frame.

    An empty rectangle comes back as ``x1 < x0`` or ``y1 < y0``.
    """
    if _has_clip_rectangle(config):
        (x_origin, y_origin), (x_size, y_size) = config.clip_rectangle_origin_px, config.clip_rectangle_size_px
    else:
        (x_origin, y_origin), (x_size, y_size) = (0, 0), (width - 1, height - 1)
    bounds = []
    for origin, size, limit in ((x_origin, x_size, width - 1), (y_origin, y_size, height - 1)):
        low, high = sorted((origin, origin + size))
        low, high = max(low, 0), min(high, limit)
        bounds += [low, high] if low <= high else [0, -1]
    return tuple(bounds)


def extent_corner_box(config: VolumeReconstructionConfig, width: int, height: int) -> tuple[float, float, float, float]:
    """``(x_min, x_max, y_min, y_max)`` of the corners PLUS uses to size the output volume."""
    x_min, x_max, y_min, y_max = 0.0, float(width - 1), 0.0, float(height - 1)
    if _has_clip_rectangle(config):
        (x_origin, y_origin), (x_size, y_size) = config.clip_rectangle_origin_px, config.clip_rectangle_size_px
        x_min, x_max = max(x_min, x_origin), min(x_max, x_origin + x_size)
        y_min, y_max = max(y_min, y_origin), min(y_max, y_origin + y_size)
    return (float(x_min), float(x_max), float(y_min), float(y_max))


def _fan_slopes(config: VolumeReconstructionConfig) -> tuple[float, float]:
    """tan of the left and right fan edges (left <= right), per row of depth."""
    left, right = (float(np.tan(np.deg2rad(angle))) for angle in config.fan_angles_deg)
    return (left, right) if left <= right else (right, left)


def paste_mask(config: VolumeReconstructionConfig, width: int, height: int, unoptimized: bool) -> np.ndarray:
    """(height, width) bool array: True where a pixel is inside the clip rectangle and the fan.

    Parameters
    ----------
    config : VolumeReconstructionConfig
    width, height : int
        Frame size in pixels (MF orientation).
    unoptimized : bool
        True for PLUS ``Optimization="NONE"`` (exact per-pixel fan test), False for FULL /
        PARTIAL (per-row fan bounds).
    """
    x0, x1, y0, y1 = clip_extent(config, width, height)
    mask = np.zeros((height, width), dtype=bool)
    mask[y0 : y1 + 1, x0 : x1 + 1] = True
    left, right = _fan_slopes(config)
    if left == 0.0 and right == 0.0:
        return mask
    fan = _fan_mask_per_pixel if unoptimized else _fan_mask_per_row
    return mask & fan(config, width, height, left, right)


def paste_runs(config: VolumeReconstructionConfig, width: int, height: int, unoptimized: bool) -> np.ndarray:
    """:func:`paste_mask` as runs, the form the paste kernels take (a few bytes per row).

    Returns
    -------
    (height, 4) int64 array
        Per row: first and last pasted column, then first and last column of the one gap
        inside that span (``width, -1`` if none). A row with nothing to paste is ``0, -1``.
        Clip rectangle and fan always leave a row at most one gap (inside the start radius).
    """
    mask = paste_mask(config, width, height, unoptimized)
    runs = np.tile(np.array([0, -1, width, -1], dtype=np.int64), (height, 1))
    for row in np.flatnonzero(mask.any(axis=1)):
        columns = np.flatnonzero(mask[row])
        runs[row, :2] = columns[0], columns[-1]
        gap = np.flatnonzero(~mask[row, columns[0] : columns[-1] + 1]) + columns[0]
        if gap.size:
            runs[row, 2:] = gap[0], gap[-1]
    return runs


def _fan_mask_per_pixel(config, width, height, left, right) -> np.ndarray:
    origin_x, origin_y = config.fan_origin_px
    dx = np.arange(width, dtype=float)[None, :] - origin_x
    dy = np.arange(height, dtype=float)[:, None] - origin_y
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = dx / dy
    inside = ~((dy < 0) | (slope < left) | (slope > right))
    squared_radius = dx * dx + dy * dy
    inside &= ~((squared_radius < config.fan_radius_start_px**2) | (squared_radius > config.fan_radius_stop_px**2))
    return inside


def _fan_mask_per_row(config, width, height, left, right) -> np.ndarray:
    origin_x, origin_y = config.fan_origin_px
    dy = np.arange(height, dtype=float) - origin_y
    start = _plus_ceil(left * dy + origin_x + 1)
    stop = _plus_floor(right * dy + origin_x - 1)
    squared_depth = dy * dy
    beyond_stop = config.fan_radius_stop_px**2 - squared_depth
    within_start = config.fan_radius_start_px**2 - squared_depth
    half_stop = np.sqrt(np.maximum(beyond_stop, 0.0))
    half_start = np.sqrt(np.maximum(within_start, 0.0))
    start = np.where(beyond_stop < 0, 1, np.maximum(start, _plus_ceil(origin_x - half_stop + 1)))
    stop = np.where(beyond_stop < 0, 0, np.minimum(stop, _plus_floor(origin_x + half_stop - 1)))
    columns = np.arange(width)[None, :]
    inside = (columns >= start[:, None]) & (columns <= stop[:, None])
    skips = (beyond_stop >= 0) & (within_start > 0)
    skip_start = np.where(skips, _plus_ceil(origin_x - half_start + 1), width)
    skip_stop = np.where(skips, _plus_floor(origin_x + half_start - 1), -1)
    inside &= ~((columns >= skip_start[:, None]) & (columns <= skip_stop[:, None]))
    return inside
