"""Pixel checks shared by the widget tests and the browser tests (pictures judged by numbers)."""

from __future__ import annotations

import numpy as np


def line_brightness(image: np.ndarray, start_px, end_px, samples: int = 40) -> np.ndarray:
    """Brightest grey within 2 px of each of ``samples`` points along a segment.

    Parameters
    ----------
    image : (H, W) array
        Grey image (B-mode frame or screenshot), row 0 at the top.
    start_px, end_px : (2,) float, pixels
        Segment ends as (column, row); points run from 10 % to 95 % of the way.
    samples : int

    Returns
    -------
    (M,) float array
        One value per sample point inside the image (M <= samples).
    """
    height, width = image.shape
    values = []
    for t in np.linspace(0.1, 0.95, samples):
        col, row = (1 - t) * np.asarray(start_px, float) + t * np.asarray(end_px, float)
        c, r = int(round(col)), int(round(row))
        if 0 <= r < height and 0 <= c < width:
            values.append(image[max(r - 2, 0): r + 3, max(c - 2, 0): c + 3].max())
    return np.asarray(values, dtype=float)
