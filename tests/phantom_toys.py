"""A small synthetic label volume standing in for ``workbench.phantom.anatomy`` in tests.

The toy back, in LPS mm (the back faces +y, +z superior): a skin surface curved about the z axis
(``y = -x^2 / 800``), then skin (2 mm), subcutaneous fat, erector spinae down to y = -75 and soft
tissue below; a bone block (a lamina stand-in) with its flat top at y = -45 under the midline,
and a dura-walled CSF tube running along z beside it. Every dimension is a field of
:class:`ToyPhantom`, so tests can compute where things are.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from workbench.phantom.labels import Label

SKIN_CURVATURE_RADIUS_MM = 400.0


@dataclass(frozen=True, eq=False)
class ToyPhantom:
    """The toy back: its label image and the geometry it was built from (mm, LPS)."""

    labels: sitk.Image
    skin_thickness_mm: float = 2.0
    fat_thickness_mm: float = 12.0
    muscle_bottom_y_mm: float = -75.0
    bone_top_y_mm: float = -45.0
    bone_bottom_y_mm: float = -60.0
    bone_half_width_mm: float = 35.0
    bone_z_range_mm: tuple[float, float] = (-40.0, 40.0)
    tube_centre_xy_mm: tuple[float, float] = (-50.0, -52.0)
    tube_radius_mm: float = 7.0
    dura_thickness_mm: float = 1.0
    vertebra_centres_lps: dict = field(
        default_factory=lambda: {"L4": np.array([0.0, -60.0, 25.0]), "L5": np.array([0.0, -62.0, -25.0])}
    )

    def skin_surface_y_mm(self, x_mm, z_mm):
        """Height (y, mm) of the skin surface above (x, z); the back bulges around x = 0."""
        x_mm, z_mm = np.broadcast_arrays(np.asarray(x_mm, dtype=float), np.asarray(z_mm, dtype=float))
        return -(x_mm**2) / (2.0 * SKIN_CURVATURE_RADIUS_MM)

    def label_at(self, points_lps: np.ndarray) -> np.ndarray:
        """(N,) uint8 labels at (N, 3) LPS points (nearest voxel; AIR outside). Identity direction."""
        points_lps = np.atleast_2d(np.asarray(points_lps, dtype=float))
        origin, spacing = np.array(self.labels.GetOrigin()), np.array(self.labels.GetSpacing())
        index = np.rint((points_lps - origin) / spacing).astype(np.int64)
        size = np.array(self.labels.GetSize())
        inside = np.all((index >= 0) & (index < size), axis=1)
        array = sitk.GetArrayViewFromImage(self.labels)
        labels = np.full(len(points_lps), Label.AIR, dtype=np.uint8)
        i, j, k = index[inside].T
        labels[inside] = array[k, j, i]
        return labels

    def bone_top_at(self, x_mm, z_mm) -> np.ndarray:
        """True where (x, z) lies over the flat top of the bone block."""
        z_low, z_high = self.bone_z_range_mm
        return (np.abs(x_mm) < self.bone_half_width_mm) & (z_mm > z_low) & (z_mm < z_high)

    def distance_to_bone_surface_mm(self, points_lps: np.ndarray) -> np.ndarray:
        """(N,) distance (mm) of (N, 3) LPS points from the surface of the bone block."""
        low = np.array([-self.bone_half_width_mm, self.bone_bottom_y_mm, self.bone_z_range_mm[0]])
        high = np.array([self.bone_half_width_mm, self.bone_top_y_mm, self.bone_z_range_mm[1]])
        outside = np.maximum(np.maximum(low - points_lps, points_lps - high), 0.0)
        inside_margin = np.minimum(points_lps - low, high - points_lps).min(axis=1)
        return np.where(np.any(outside > 0, axis=1), np.linalg.norm(outside, axis=1), inside_margin)


def build_toy_phantom(
    spacing_mm: float = 0.5,
    extent_x_mm: tuple[float, float] = (-100.0, 100.0),
    extent_y_mm: tuple[float, float] = (-110.0, 15.0),
    extent_z_mm: tuple[float, float] = (-120.0, 120.0),
    **geometry,
) -> ToyPhantom:
    """Build the toy back on a grid of ``spacing_mm`` voxels (identity direction, LPS mm).

    ``geometry`` overrides :class:`ToyPhantom` fields (e.g. ``fat_thickness_mm=25``).
    """
    template = ToyPhantom(labels=sitk.Image(1, 1, 1, sitk.sitkUInt8), **geometry)
    x_mm, y_mm, z_mm = (
        np.arange(low, high + spacing_mm / 2, spacing_mm) for low, high in (extent_x_mm, extent_y_mm, extent_z_mm)
    )
    plain = _cross_section(template, x_mm, y_mm, with_bone=False)
    with_bone = _cross_section(template, x_mm, y_mm, with_bone=True)
    z_low, z_high = template.bone_z_range_mm
    array = np.where(((z_mm > z_low) & (z_mm < z_high))[:, None, None], with_bone[None], plain[None])
    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.uint8))
    image.SetSpacing((spacing_mm,) * 3)
    image.SetOrigin((float(x_mm[0]), float(y_mm[0]), float(z_mm[0])))
    return ToyPhantom(labels=image, **geometry)


def _cross_section(phantom: ToyPhantom, x_mm: np.ndarray, y_mm: np.ndarray, with_bone: bool) -> np.ndarray:
    """(ny, nx) labels of one axial slice."""
    x, y = np.meshgrid(x_mm, y_mm)
    depth_mm = phantom.skin_surface_y_mm(x, 0.0) - y
    labels = np.full(x.shape, Label.SOFT_TISSUE, dtype=np.uint8)
    labels[y > phantom.muscle_bottom_y_mm] = Label.ERECTOR_SPINAE
    labels[depth_mm < phantom.skin_thickness_mm + phantom.fat_thickness_mm] = Label.FAT
    labels[depth_mm < phantom.skin_thickness_mm] = Label.SKIN
    labels[depth_mm < 0] = Label.AIR
    tube_x, tube_y = phantom.tube_centre_xy_mm
    radius_mm = np.hypot(x - tube_x, y - tube_y)
    labels[radius_mm < phantom.tube_radius_mm + phantom.dura_thickness_mm] = Label.DURA
    labels[radius_mm < phantom.tube_radius_mm] = Label.CSF
    if with_bone:
        block = (np.abs(x) < phantom.bone_half_width_mm) & (y < phantom.bone_top_y_mm) & (y > phantom.bone_bottom_y_mm)
        labels[block] = Label.LAMINA
    return labels


def bone_ridges_px(frame: np.ndarray, shadow_px: int, *, bright: int = 240, dark: float = 40.0) -> np.ndarray:
    """Bone-surface pixels of a frame: per column, the first bright ridge with a shadow beneath.

    A ridge is a run of rows at or above ``bright``; it is bone when the ``shadow_px`` rows
    starting 3 rows below it (fewer at the bottom of the frame, at least 10) average under
    ``dark``. Skin and fascia lines have tissue below them; make ``shadow_px`` longer than
    anechoic structures (the CSF tube) so that they do not pass for shadow.

    Returns
    -------
    (M, 2) float array
        (column, row) in MF pixels, the row at the centre of the ridge.
    """
    points = []
    for column in range(frame.shape[1]):
        values = frame[:, column].astype(float)
        edges = np.diff(np.concatenate([[0], (values >= bright).astype(np.int8), [0]]))
        for start, stop in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
            below = values[stop + 3 : stop + 3 + shadow_px]
            if len(below) >= 10 and below.mean() < dark:
                points.append((column, (start + stop - 1) / 2.0))
                break
    return np.array(points, dtype=float).reshape(-1, 2)
