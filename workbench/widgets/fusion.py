"""Fusion model: the current ultrasound frame's plane in the MRI, and MRI/US blends on it.

For frame ``n`` of a tracked sweep, ``image_to_mri = reference_to_mri @ probe_to_reference[n] @
image_to_probe`` (docs/frames.md) maps ultrasound pixels (``Image`` frame, MF orientation) to LPS
mm. The MRI is resampled (trilinear) at every pixel centre of the frame, so the two images share
one pixel grid; they are then shown as a blend (0-100 % ultrasound, 50 % by default as in the
clinical system), a checkerboard, or the ultrasound as a colour overlay on the grey MRI.
"""

from __future__ import annotations

import numpy as np

from workbench.frames import Transform, image_index_to_physical
from workbench.widgets.session import WidgetError
from workbench.widgets.slices import window_to_uint8

__all__ = ["MODES", "FusionModel", "blend", "checkerboard", "colour_overlay", "frame_corners_mri"]

MODES = ("blend", "checkerboard", "colour")


def blend(mri_u8: np.ndarray, us_u8: np.ndarray, us_percent: float) -> np.ndarray:
    """``(1 - a) * mri + a * us`` with ``a = us_percent / 100``, rounded to uint8 (same shape).

    Parameters
    ----------
    mri_u8, us_u8 : (H, W) uint8 arrays
        Display values on the same pixel grid.
    us_percent : float
        0 (MRI only) to 100 (ultrasound only).
    """
    if not 0.0 <= us_percent <= 100.0:
        raise WidgetError(f"blend must be 0-100 %, got {us_percent}")
    alpha = np.float32(us_percent / 100.0)
    out = (np.float32(1.0) - alpha) * mri_u8.astype(np.float32) + alpha * us_u8.astype(np.float32)
    return np.rint(out).astype(np.uint8)


def checkerboard(mri_u8: np.ndarray, us_u8: np.ndarray, tile_px: int = 32) -> np.ndarray:
    """Alternate tiles of ``tile_px`` pixels: MRI where ``(row // t + col // t)`` is even, else US."""
    rows, cols = np.indices(mri_u8.shape[:2])
    us_tiles = ((rows // tile_px + cols // tile_px) % 2).astype(bool)
    return np.where(us_tiles, us_u8, mri_u8)


def colour_overlay(mri_u8: np.ndarray, us_u8: np.ndarray, us_percent: float = 50.0, threshold: int = 30) -> np.ndarray:
    """Grey MRI with the ultrasound in orange where it is brighter than ``threshold``.

    Returns
    -------
    (H, W, 3) uint8 RGB
        MRI grey; where ``us > threshold`` the pixel is ``(1 - a) * mri + a * us * (1, 0.55, 0)``
        with ``a = us_percent / 100``.
    """
    alpha = np.float32(us_percent / 100.0)
    grey = mri_u8.astype(np.float32)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    us = us_u8.astype(np.float32)[..., None] * np.array([1.0, 0.55, 0.0], dtype=np.float32)
    mask = (us_u8 > threshold)[..., None]
    rgb = np.where(mask, (1 - alpha) * rgb + alpha * us, rgb)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def frame_corners_mri(image_to_mri: Transform | np.ndarray, width_px: int, height_px: int) -> np.ndarray:
    """(4, 3) LPS mm of a frame's outer corners (pixel edges): top-left, top-right, bottom-right, bottom-left."""
    matrix = getattr(image_to_mri, "matrix", image_to_mri)
    corners = np.array([[-0.5, -0.5, 0, 1], [width_px - 0.5, -0.5, 0, 1], [width_px - 0.5, height_px - 0.5, 0, 1],
                        [-0.5, height_px - 0.5, 0, 1]], dtype=float)
    return (corners @ np.asarray(matrix).T)[:, :3]


class FusionModel:
    """The US frame plane in the MRI and the fused image on it.

    Parameters
    ----------
    mri : SimpleITK.Image or LoadedVolume
        Planning MRI (LPS mm).
    images : (N, H, W) uint8 array
        Ultrasound frames, MF orientation (``TrackedSequence.images_mf()``).
    probe_to_reference : (N, 4, 4) float array
        ``ProbeToReference`` per frame, mm.
    valid : (N,) bool array
        Frames whose pose is usable.
    image_to_probe : Transform
        Calibration ``ImageToProbe`` (pixels -> mm).
    reference_to_mri : Transform
        Registration ``ReferenceToMri``.

    Attributes
    ----------
    frame : int
    us_percent : float
        Blend, 0-100 %, default 50.
    mode : {"blend", "checkerboard", "colour"}
    """

    def __init__(self, mri, images, probe_to_reference, valid, image_to_probe: Transform, reference_to_mri: Transform):
        import SimpleITK as sitk

        image = getattr(mri, "image", mri)
        self.mri_image = image
        self.mri_kji = sitk.GetArrayViewFromImage(image).astype(np.float32)
        self.mri_voxel_to_mri = image_index_to_physical(image.GetOrigin(), image.GetSpacing(), image.GetDirection())
        self.images = np.asarray(images)
        self.probe_to_reference = np.asarray(probe_to_reference, dtype=float)
        self.valid = np.asarray(valid, dtype=bool)
        if not self.valid.any():
            raise WidgetError("no frame of the sweep has a valid pose")
        if image_to_probe.name != "ImageToProbe" or reference_to_mri.name != "ReferenceToMri":
            raise WidgetError(f"need ImageToProbe and ReferenceToMri, got {image_to_probe.name} and {reference_to_mri.name}")
        self.image_to_probe = image_to_probe
        self.reference_to_mri = reference_to_mri
        finite = self.mri_kji[:: max(1, self.mri_kji.shape[0] // 16)]
        low, high = np.percentile(finite, [1.0, 99.5])
        self.mri_window, self.mri_level = float(max(high - low, 1e-6)), float((high + low) / 2)
        self.frame = int(np.flatnonzero(self.valid)[len(np.flatnonzero(self.valid)) // 2])
        self.us_percent = 50.0
        self.mode = "blend"
        self.tile_px = 32

    @classmethod
    def from_session(cls, session, reference_to_mri: Transform, sweep: int = 0) -> "FusionModel":
        """Build from a :class:`CaseSession` sweep and a registration."""
        from workbench.registration.surface import probe_to_reference_poses

        sequence = session.sweep(sweep)
        poses, valid = probe_to_reference_poses(sequence)
        return cls(session.mri, sequence.images_mf(), poses, valid, session.case.sweeps[sweep].image_to_probe, reference_to_mri)

    @property
    def frame_count(self) -> int:
        return len(self.images)

    def set_frame(self, frame: int) -> None:
        """Select frame ``frame`` (must have a valid pose)."""
        frame = int(frame)
        if not 0 <= frame < self.frame_count:
            raise WidgetError(f"frame {frame} outside 0..{self.frame_count - 1}")
        if not self.valid[frame]:
            raise WidgetError(f"frame {frame} has no valid pose (INVALID tracking)")
        self.frame = frame

    def set_blend(self, us_percent: float) -> None:
        """Ultrasound weight 0-100 %."""
        if not 0.0 <= float(us_percent) <= 100.0:
            raise WidgetError(f"blend must be 0-100 %, got {us_percent}")
        self.us_percent = float(us_percent)

    def image_to_mri(self, frame: int | None = None) -> np.ndarray:
        """(4, 4) ``ImageToMri`` of a frame: ReferenceToMri @ ProbeToReference @ ImageToProbe."""
        frame = self.frame if frame is None else frame
        return self.reference_to_mri.matrix @ self.probe_to_reference[frame] @ self.image_to_probe.matrix

    def plane_corners_mri(self, frame: int | None = None) -> np.ndarray:
        """(4, 3) LPS mm of the frame's corners (see :func:`frame_corners_mri`)."""
        height, width = self.images.shape[1:3]
        return frame_corners_mri(self.image_to_mri(frame), width, height)

    def mri_on_frame(self, frame: int | None = None) -> np.ndarray:
        """The MRI resampled (trilinear) at every pixel centre of the frame, (H, W) float32; 0 outside."""
        from scipy.ndimage import map_coordinates

        height, width = self.images.shape[1:3]
        image_to_ijk = np.linalg.inv(self.mri_voxel_to_mri) @ self.image_to_mri(frame)
        # index of pixel (x, y) = A[:, 0] x + A[:, 1] y + A[:, 3]; vectorised as outer sums, (k, j, i) order
        columns = np.arange(width, dtype=np.float32)
        rows = np.arange(height, dtype=np.float32)
        coords = np.empty((3, height, width), dtype=np.float32)
        for out_axis, ijk_axis in enumerate((2, 1, 0)):
            a = image_to_ijk[ijk_axis]
            coords[out_axis] = np.float32(a[1]) * rows[:, None] + (np.float32(a[0]) * columns + np.float32(a[3]))[None, :]
        return map_coordinates(self.mri_kji, coords, order=1, mode="constant", cval=0.0, prefilter=False)

    def fused(self, frame: int | None = None) -> np.ndarray:
        """The fused image of the current mode: (H, W) uint8 (blend, checkerboard) or (H, W, 3) uint8 (colour)."""
        frame = self.frame if frame is None else frame
        mri_u8 = window_to_uint8(self.mri_on_frame(frame), self.mri_window, self.mri_level)
        us_u8 = self.images[frame]
        if self.mode == "blend":
            return blend(mri_u8, us_u8, self.us_percent)
        if self.mode == "checkerboard":
            return checkerboard(mri_u8, us_u8, self.tile_px)
        if self.mode == "colour":
            return colour_overlay(mri_u8, us_u8, self.us_percent)
        raise WidgetError(f"mode must be one of {MODES}, got {self.mode!r}")
