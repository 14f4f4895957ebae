"""MPR slice model: axial, coronal and sagittal slices of a volume on its own voxel grid.

A view shows one plane of voxels (no resampling), so every displayed pixel is a voxel centre
and the mapping between slice pixels and LPS millimetres is the volume's own
``MriVoxelToMri`` (SimpleITK geometry) restricted to the plane: exact, also for oblique
acquisitions. Which index axis is "axial" is the one whose direction is closest to S.

Display orientation (radiological): axial and coronal put the patient's Left on the right of
the screen; axial has anterior up, coronal and sagittal superior up, sagittal anterior on the left.

Slice pixel coordinates ``(col, row)`` are continuous: ``(0, 0)`` is the centre of the top-left
displayed pixel, the image covers ``[-0.5, width - 0.5] x [-0.5, height - 0.5]`` (matplotlib's
``imshow`` convention). See docs/frames.md.
"""

from __future__ import annotations

import numpy as np

from workbench.frames import apply_affine, image_index_to_physical
from workbench.widgets.session import WidgetError

__all__ = ["ORIENTATIONS", "PRESETS", "SliceModel", "direction_letters", "nice_scale_bar_mm", "window_to_uint8"]

ORIENTATIONS = ("axial", "coronal", "sagittal")
# per orientation: (LPS axis shown left->right, sign), (LPS axis shown top->bottom, sign), normal LPS axis
_LAYOUT = {
    "axial": ((0, +1), (1, +1), 2),  # L to the right, P down
    "coronal": ((0, +1), (2, -1), 1),  # L to the right, S up
    "sagittal": ((1, +1), (2, -1), 0),  # P to the right (anterior left), S up
}


#: Window/level presets (names shown on the viewer), computed from the volume's own histogram
#: (MRI grey values have no absolute unit): see :meth:`SliceModel.preset_window_level`.
PRESETS = ("T2 spine", "soft tissue", "full range")
#: Letters of the LPS axes' positive and negative directions.
_LETTERS = (("L", "R"), ("P", "A"), ("S", "I"))
#: A direction gets a second letter when its second-largest LPS component is at least this large
#: (|cos| of 73 deg, i.e. an obliquity over ~17 deg), as radiology viewers show "LP" for oblique sides.
OBLIQUE_LETTER_MIN = 0.3
#: Scale-bar lengths (mm) the viewer chooses from.
SCALE_BAR_STEPS_MM = (5.0, 10.0, 20.0, 50.0, 100.0, 200.0)


def direction_letters(direction_lps) -> str:
    """Radiological letters of a direction in LPS: ``(1, 0, 0)`` -> ``"L"``, ``(0, -1, 0)`` -> ``"A"``.

    Parameters
    ----------
    direction_lps : (3,) float array
        Any non-zero vector, LPS.

    Returns
    -------
    str
        The letter of the largest component, followed by the second's when its size is at least
        :data:`OBLIQUE_LETTER_MIN` of the unit vector (oblique views: ``"LP"``).
    """
    d = np.asarray(direction_lps, dtype=float)
    d = d / max(float(np.linalg.norm(d)), 1e-12)
    order = np.argsort(-np.abs(d))
    letters = [_LETTERS[order[0]][0 if d[order[0]] >= 0 else 1]]
    if abs(d[order[1]]) >= OBLIQUE_LETTER_MIN:
        letters.append(_LETTERS[order[1]][0 if d[order[1]] >= 0 else 1])
    return "".join(letters)


def nice_scale_bar_mm(width_mm: float, fraction: float = 0.25) -> float:
    """The longest of :data:`SCALE_BAR_STEPS_MM` not over ``fraction`` of ``width_mm`` (at least the shortest)."""
    fitting = [s for s in SCALE_BAR_STEPS_MM if s <= fraction * float(width_mm)]
    return fitting[-1] if fitting else SCALE_BAR_STEPS_MM[0]


def window_to_uint8(values: np.ndarray, window: float, level: float) -> np.ndarray:
    """Grey values through a window/level, as 8-bit display values.

    Parameters
    ----------
    values : ndarray
        Image values (any shape), in the volume's unit.
    window, level : float
        Width and centre of the displayed range (same unit); ``window`` > 0.

    Returns
    -------
    ndarray of uint8, same shape
        0 at ``level - window/2`` and below, 255 at ``level + window/2`` and above, rounded.
    """
    scale = 255.0 / max(float(window), 1e-12)
    low = float(level) - float(window) / 2.0
    out = (np.asarray(values, dtype=np.float32) - np.float32(low)) * np.float32(scale)
    np.clip(out, 0.0, 255.0, out=out)
    out += np.float32(0.5)  # round half up (values are >= 0)
    return out.astype(np.uint8)


class SliceModel:
    """One MPR view of a volume: orientation, slice index, window/level, MIP.

    Parameters
    ----------
    image : SimpleITK.Image or workbench.io.volume.LoadedVolume
        3D scalar volume, geometry in LPS mm.
    orientation : {"axial", "coronal", "sagittal"}
    index : int, optional
        Slice index along the view's normal index axis (default: the middle).

    Attributes
    ----------
    window, level : float
        Display window width and centre (image units); default the 1st-99.5th percentile range.
    mip_slab_mm : float
        0 for a plain slice; > 0 for a maximum-intensity projection over a slab of that
        thickness (mm) centred on the slice; ``inf`` for the whole volume.
    """

    def __init__(self, image, orientation: str = "axial", index: int | None = None):
        import SimpleITK as sitk

        image = getattr(image, "image", image)
        if image.GetDimension() != 3:
            raise WidgetError(f"MPR needs a 3D volume, got {image.GetDimension()}D")
        self.image = image
        self.array_kji = sitk.GetArrayViewFromImage(image)  # (k, j, i)
        self.size_ijk = tuple(int(v) for v in image.GetSize())
        self.spacing_mm = np.array(image.GetSpacing(), dtype=float)
        direction = np.reshape(image.GetDirection(), (3, 3))
        # (4, 4) MriVoxelToMri: voxel index (i, j, k) to LPS mm (docs/frames.md).
        self.mri_voxel_to_mri = image_index_to_physical(image.GetOrigin(), self.spacing_mm, direction)
        # which index axis points along each LPS axis, and with which sign
        self._axis_of_lps = {}
        self._sign_of_lps = {}
        used = set()
        for lps_axis in np.argsort(-np.max(np.abs(direction), axis=1)):
            candidates = [c for c in np.argsort(-np.abs(direction[lps_axis])) if c not in used]
            column = int(candidates[0])
            used.add(column)
            self._axis_of_lps[int(lps_axis)] = column
            self._sign_of_lps[int(lps_axis)] = 1 if direction[lps_axis, column] >= 0 else -1
        sample = np.asarray(self.array_kji[:: max(1, self.size_ijk[2] // 16)], dtype=float).ravel()
        self._sample = sample[np.isfinite(sample)]
        self.window, self.level = self.preset_window_level("T2 spine")
        self.mip_slab_mm = 0.0
        # the cursor: an LPS point (mm) that every view passes through; switching views keeps it
        centre_ijk = (np.array(self.size_ijk, dtype=float) - 1.0) / 2.0
        self.cursor_lps = apply_affine(self.mri_voxel_to_mri, centre_ijk[None, :])[0]
        self.orientation = None
        self.set_orientation(orientation, index)

    def preset_window_level(self, name: str) -> tuple[float, float]:
        """(window, level) of a preset, from the grey values of the volume (every 16th slice sampled).

        ``"T2 spine"``: the 1st to 99.5th percentile of all voxels (CSF, fat and marrow bright,
        muscle grey, air black: the default); ``"soft tissue"``: the 5th to 95th percentile of the
        body's voxels (those above 10 % of the 99.5th percentile), which spreads muscle, fat and
        disc over the grey scale and lets CSF saturate; ``"full range"``: minimum to maximum.

        Raises
        ------
        WidgetError
            Unknown preset.
        """
        values = self._sample
        if values.size == 0:
            return 1.0, 0.0
        if name == "T2 spine":
            low, high = np.percentile(values, [1.0, 99.5])
        elif name == "soft tissue":
            body = values[values > 0.1 * np.percentile(values, 99.5)]
            low, high = np.percentile(body if body.size else values, [5.0, 95.0])
        elif name == "full range":
            low, high = float(values.min()), float(values.max())
        else:
            raise WidgetError(f"window preset must be one of {PRESETS}, got {name!r}")
        return float(max(high - low, 1e-6)), float((high + low) / 2.0)

    def apply_preset(self, name: str) -> None:
        """Set the window/level of preset ``name`` (see :meth:`preset_window_level`)."""
        self.set_window_level(*self.preset_window_level(name))

    # -- state --------------------------------------------------------------------------
    def set_orientation(self, orientation: str, index: int | None = None) -> None:
        """Switch view; ``index`` defaults to the slice through the cursor (:attr:`cursor_lps`).

        The cursor is kept across switches: axial at the cursor, then sagittal, then axial again
        shows the same axial slice.
        """
        if orientation not in _LAYOUT:
            raise WidgetError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}")
        (u_lps, u_sign), (v_lps, v_sign), n_lps = _LAYOUT[orientation]
        self.orientation = orientation
        self.u_axis = self._axis_of_lps[u_lps]  # index axis along display columns
        self.v_axis = self._axis_of_lps[v_lps]  # index axis along display rows
        self.n_axis = self._axis_of_lps[n_lps]  # index axis of the slice normal
        # flip when the index axis runs against the wanted screen direction
        self.u_flip = self._sign_of_lps[u_lps] != u_sign
        self.v_flip = self._sign_of_lps[v_lps] != v_sign
        if index is None:
            self.index = 0
            index = self.index_of_lps(self.cursor_lps)
        self.set_index(index)

    @property
    def slice_count(self) -> int:
        """Number of slices along the view's normal."""
        return self.size_ijk[self.n_axis]

    @property
    def shape_px(self) -> tuple[int, int]:
        """(height_px, width_px) of the displayed slice."""
        return self.size_ijk[self.v_axis], self.size_ijk[self.u_axis]

    @property
    def pixel_aspect(self) -> float:
        """Height / width of one displayed pixel in mm (for ``imshow(aspect=...)``)."""
        return float(self.spacing_mm[self.v_axis] / self.spacing_mm[self.u_axis])

    def set_index(self, index: int) -> None:
        """Select slice ``index`` (clipped to the volume); the cursor moves with it along the normal."""
        self.index = int(np.clip(int(index), 0, self.slice_count - 1))
        ijk = self.lps_to_ijk(self.cursor_lps[None, :])[0]
        ijk[self.n_axis] = self.index
        self.cursor_lps = self.ijk_to_lps(ijk[None, :])[0]

    def set_cursor(self, point_lps) -> None:
        """Put the cursor at ``point_lps`` (LPS, mm) and show the slice through it."""
        self.cursor_lps = np.asarray(point_lps, dtype=float).reshape(3).copy()
        self.set_index(self.index_of_lps(self.cursor_lps))

    # -- annotations --------------------------------------------------------------------
    @property
    def pixel_spacing_mm(self) -> tuple[float, float]:
        """(column, row) size of one displayed pixel, mm."""
        return float(self.spacing_mm[self.u_axis]), float(self.spacing_mm[self.v_axis])

    @property
    def extent_mm(self) -> tuple[float, float]:
        """(width_mm, height_mm) of the displayed image."""
        height, width = self.shape_px
        du, dv = self.pixel_spacing_mm
        return width * du, height * dv

    def side_letters(self) -> dict[str, str]:
        """Orientation letters on the four sides of the displayed image, from its LPS geometry.

        Returns
        -------
        dict
            ``left``, ``right``, ``top``, ``bottom``: the letters of the direction from the image
            centre toward that side (:func:`direction_letters`), e.g. axial of an LPS volume:
            ``{"left": "R", "right": "L", "top": "A", "bottom": "P"}``.
        """
        origin, right, down = self.pixel_to_lps(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
        towards_right, towards_bottom = right - origin, down - origin
        return {"left": direction_letters(-towards_right), "right": direction_letters(towards_right),
                "top": direction_letters(-towards_bottom), "bottom": direction_letters(towards_bottom)}

    def scale_bar(self, length_mm: float | None = None) -> dict[str, float]:
        """A horizontal scale bar: its length in mm and in display pixels (``length_mm / column spacing``).

        Parameters
        ----------
        length_mm : float, optional
            Default :func:`nice_scale_bar_mm` of the image width (a quarter of it at most).
        """
        length_mm = nice_scale_bar_mm(self.extent_mm[0]) if length_mm is None else float(length_mm)
        return {"length_mm": length_mm, "length_px": length_mm / self.pixel_spacing_mm[0]}

    def set_window_level(self, window: float, level: float) -> None:
        """Set the display window width (> 0) and centre, image units."""
        if not window > 0:
            raise WidgetError(f"window width must be > 0, got {window}")
        self.window, self.level = float(window), float(level)

    def index_of_lps(self, point_lps) -> int:
        """The slice index (nearest) through an LPS point, mm."""
        ijk = self.lps_to_ijk(point_lps)
        return int(np.clip(np.rint(ijk[self.n_axis]), 0, self.slice_count - 1))

    # -- pixels -------------------------------------------------------------------------
    def _slab(self) -> tuple[int, int]:
        if self.mip_slab_mm <= 0:
            return self.index, self.index + 1
        half = int(np.floor(min(self.mip_slab_mm, 1e9) / self.spacing_mm[self.n_axis] / 2.0))
        return max(0, self.index - half), min(self.slice_count, self.index + half + 1)

    def slice_values(self) -> np.ndarray:
        """The displayed plane, (height_px, width_px), in image units (MIP over the slab when on)."""
        lo, hi = self._slab()
        numpy_axis = 2 - self.n_axis  # array is (k, j, i)
        block = np.take(self.array_kji, np.arange(lo, hi), axis=numpy_axis)
        plane = block.max(axis=numpy_axis) if hi - lo > 1 else np.squeeze(block, axis=numpy_axis)
        # remaining numpy axes, in (k, j, i) order minus the normal: map to (v, u)
        remaining = [2 - a for a in (2, 1, 0) if a != self.n_axis]  # numpy axes of the 2D plane
        index_axes = [2 - a for a in remaining]
        if index_axes[0] != self.v_axis:
            plane = plane.T
        if self.v_flip:
            plane = plane[::-1, :]
        if self.u_flip:
            plane = plane[:, ::-1]
        return plane

    def render_uint8(self) -> np.ndarray:
        """The displayed plane through window/level, (height_px, width_px) uint8."""
        return window_to_uint8(self.slice_values(), self.window, self.level)

    # -- geometry -----------------------------------------------------------------------
    def pixel_to_ijk(self, col_row) -> np.ndarray:
        """Continuous slice pixels -> continuous voxel indices.

        Parameters
        ----------
        col_row : (2,) or (N, 2) float array
            Display column (x, to the right) and row (y, down), pixels.

        Returns
        -------
        (3,) or (N, 3) float array
            Voxel index (i, j, k), ``MriVoxel`` frame.
        """
        col_row = np.asarray(col_row, dtype=float)
        single = col_row.ndim == 1
        col_row = np.atleast_2d(col_row)
        height, width = self.shape_px
        u = (width - 1) - col_row[:, 0] if self.u_flip else col_row[:, 0]
        v = (height - 1) - col_row[:, 1] if self.v_flip else col_row[:, 1]
        ijk = np.empty((len(col_row), 3))
        ijk[:, self.u_axis] = u
        ijk[:, self.v_axis] = v
        ijk[:, self.n_axis] = self.index
        return ijk[0] if single else ijk

    def ijk_to_pixel(self, ijk) -> np.ndarray:
        """Continuous voxel indices -> (col, row) slice pixels (the normal component is dropped)."""
        ijk = np.asarray(ijk, dtype=float)
        single = ijk.ndim == 1
        ijk = np.atleast_2d(ijk)
        height, width = self.shape_px
        u, v = ijk[:, self.u_axis], ijk[:, self.v_axis]
        col = (width - 1) - u if self.u_flip else u
        row = (height - 1) - v if self.v_flip else v
        out = np.stack([col, row], axis=1)
        return out[0] if single else out

    def ijk_to_lps(self, ijk) -> np.ndarray:
        """Continuous voxel indices (N, 3) -> LPS mm (N, 3), the volume's ``MriVoxelToMri``."""
        return apply_affine(self.mri_voxel_to_mri, np.asarray(ijk, dtype=float))

    def lps_to_ijk(self, points_lps) -> np.ndarray:
        """LPS mm (N, 3) -> continuous voxel indices (N, 3)."""
        points_lps = np.asarray(points_lps, dtype=float)
        linear = np.linalg.inv(self.mri_voxel_to_mri[:3, :3])
        return (points_lps - self.mri_voxel_to_mri[:3, 3]) @ linear.T

    def pixel_to_lps(self, col_row) -> np.ndarray:
        """Slice pixels (col, row) on the current slice -> LPS positions, mm ((2,)->(3,), (N,2)->(N,3))."""
        return self.ijk_to_lps(self.pixel_to_ijk(col_row))

    def lps_to_pixel(self, points_lps) -> tuple[np.ndarray, np.ndarray]:
        """LPS points -> (col, row) pixels and their signed distance from the slice plane, mm.

        Returns
        -------
        col_row : (2,) or (N, 2) float array
        off_plane_mm : float or (N,) float array
            Distance along the normal from the current slice (for showing nearby points).
        """
        ijk = self.lps_to_ijk(points_lps)
        off = (ijk[..., self.n_axis] - self.index) * self.spacing_mm[self.n_axis]
        return self.ijk_to_pixel(ijk), off

    def corners_lps(self) -> dict[str, list[float]]:
        """LPS (mm) of the displayed image's outer corners (voxel edges, not centres).

        Returns
        -------
        dict
            ``top_left``, ``top_right``, ``bottom_left``, ``bottom_right``: lists of 3 floats.
        """
        height, width = self.shape_px
        pixels = np.array([[-0.5, -0.5], [width - 0.5, -0.5], [-0.5, height - 0.5], [width - 0.5, height - 0.5]])
        points = self.pixel_to_lps(pixels)
        names = ("top_left", "top_right", "bottom_left", "bottom_right")
        return {name: [float(v) for v in point] for name, point in zip(names, points)}
