"""The planned needle path drawn on the images: needle plane, axial through the target, fused view.

:class:`PathViewModel` (no UI) resamples, for one :class:`~workbench.planning.model.Trajectory`:

- the **needle plane** of the MRI: the plane through entry and target that contains the
  superior direction (rows along the needle, skin at the top as on ultrasound), the path lying in it;
- the **axial MRI slice through the target** (radiological: patient left on the right, anterior
  up), the path projected onto it;
- the **fused view** where a sweep covers the target: the tracked ultrasound frame whose plane
  passes closest to the target (within :data:`COVER_DISTANCE_MM`, the target inside the frame's
  echoes) blended 50/50 with the MRI resampled on it, the path projected onto the frame. Where no
  frame covers the target there is no fused image, and the view says "no sweep covers this target".

Every view records where the entry and target fall on its image (``entry_px``, ``target_px``:
``(col, row)`` pixels), so a caller can check that the path is drawn where it belongs.
:class:`PathView` shows the views as one PNG (``ipywidgets.Image``, class ``wb-path-view``) that
follows a :class:`~workbench.widgets.plan.PlanPanel` live; a hidden JSON hook ``wb-path-geometry``
gives the PNG size and, per view, entry and target in PNG pixels. All positions LPS mm (``Mri``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workbench.widgets.slices import window_to_uint8

__all__ = ["COVER_DISTANCE_MM", "PathImage", "PathView", "PathViewModel", "needle_plane_axes"]

#: A sweep frame covers the target when the target lies within this distance of the frame's plane, mm.
COVER_DISTANCE_MM = 3.0
#: Pixel size of the resampled MRI views, mm.
PIXEL_MM = 0.5
#: Path colour (RGB): cyan, distinct from every grey of the MRI and from the ultrasound's grey.
PATH_RGB = (0, 220, 255)
TARGET_RGB = (255, 50, 50)


def needle_plane_axes(entry_lps, target_lps) -> tuple[np.ndarray, np.ndarray]:
    """Unit column and row directions (LPS) of the needle plane.

    Rows run along the needle from the skin entry to the target (skin at the top); columns are
    the superior direction made orthogonal to it (the left-right direction for a needle that runs
    head-to-foot).
    """
    rows = np.asarray(target_lps, dtype=float) - np.asarray(entry_lps, dtype=float)
    rows = rows / max(float(np.linalg.norm(rows)), 1e-9)
    towards = np.array([0.0, 0.0, 1.0]) if abs(rows[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    columns = towards - (towards @ rows) * rows
    return columns / np.linalg.norm(columns), rows


@dataclass(frozen=True)
class PathImage:
    """One view with the path.

    Attributes
    ----------
    title : str
    caption : str
        What the image is (blend, distances), or why there is none.
    rgb : (H, W, 3) uint8 array or None
        None where there is nothing honest to show (no sweep covers the target).
    entry_px, target_px : (2,) float arrays or None
        ``(col, row)`` pixels of the entry and the target (projected onto the view's plane).
    pixel_mm : float
        Size of one pixel, mm (for a scale bar).
    letters : dict
        Side -> orientation letters (``left``, ``right``, ``top``, ``bottom``), for MRI views.
    """

    title: str
    caption: str
    rgb: np.ndarray | None
    entry_px: np.ndarray | None
    target_px: np.ndarray | None
    pixel_mm: float
    letters: dict


class PathViewModel:
    """Views of a planned path on the MRI (and the sweep that covers its target).

    Parameters
    ----------
    mri : LoadedVolume or SimpleITK.Image
        The planning MRI, LPS mm.
    fusion : FusionModel, optional
        A registered sweep (:class:`workbench.widgets.fusion.FusionModel`) for the fused view.
    """

    def __init__(self, mri, fusion=None):
        import SimpleITK as sitk

        from workbench.frames import image_index_to_physical

        image = getattr(mri, "image", mri)
        self.voxels = sitk.GetArrayFromImage(image).astype(np.float32)  # (k, j, i)
        self.mri_voxel_to_mri = image_index_to_physical(image.GetOrigin(), image.GetSpacing(), image.GetDirection())
        sample = self.voxels[:: max(1, self.voxels.shape[0] // 16)]
        low, high = np.percentile(sample, [1.0, 99.5])
        self.window, self.level = float(max(high - low, 1e-6)), float((high + low) / 2.0)
        self.fusion = fusion
        self._frame_cache = None

    # -- sampling -----------------------------------------------------------------------
    def sample_plane(self, centre_lps, columns_lps, rows_lps, half_size_mm: float) -> np.ndarray:
        """MRI on a square plane (trilinear), ``(N, N)`` float32, NaN outside the volume.

        Pixel ``(col, row)`` centre is ``centre + (col - N/2) * p * columns + (row - N/2) * p * rows``
        with ``p`` = :data:`PIXEL_MM` and ``N = 2 * half_size_mm / p``.
        """
        from scipy.ndimage import map_coordinates

        offsets = np.arange(-half_size_mm, half_size_mm, PIXEL_MM)
        rows, cols = np.meshgrid(offsets, offsets, indexing="ij")
        points = (np.asarray(centre_lps, float) + cols[..., None] * np.asarray(columns_lps, float)
                  + rows[..., None] * np.asarray(rows_lps, float))
        ijk = (points.reshape(-1, 3) - self.mri_voxel_to_mri[:3, 3]) @ np.linalg.inv(self.mri_voxel_to_mri[:3, :3]).T
        values = map_coordinates(self.voxels, ijk[:, ::-1].T, order=1, mode="constant", cval=np.nan)
        return values.reshape(rows.shape).astype(np.float32)

    @staticmethod
    def project(points_lps, centre_lps, columns_lps, rows_lps, half_size_mm: float) -> np.ndarray:
        """LPS points -> ``(col, row)`` pixels of a :meth:`sample_plane` view (orthogonal projection)."""
        relative = np.atleast_2d(np.asarray(points_lps, float)) - np.asarray(centre_lps, float)
        n = half_size_mm / PIXEL_MM
        return np.stack([relative @ np.asarray(columns_lps, float), relative @ np.asarray(rows_lps, float)], axis=1) / PIXEL_MM + n

    def _grey(self, values: np.ndarray) -> np.ndarray:
        grey = window_to_uint8(np.nan_to_num(values, nan=self.level - self.window), self.window, self.level)
        return np.repeat(grey[..., None], 3, axis=2)

    @staticmethod
    def _letters(columns_lps, rows_lps) -> dict:
        from workbench.widgets.slices import direction_letters

        c, r = np.asarray(columns_lps, float), np.asarray(rows_lps, float)
        return {"left": direction_letters(-c), "right": direction_letters(c), "top": direction_letters(-r), "bottom": direction_letters(r)}

    # -- views --------------------------------------------------------------------------
    def needle_plane(self, trajectory) -> PathImage:
        """The MRI in the needle's plane (skin at the top), the path in it."""
        entry, target = np.asarray(trajectory.entry_lps_mm, float), np.asarray(trajectory.target_lps_mm, float)
        columns, rows = needle_plane_axes(entry, target)
        half = max(60.0, float(np.linalg.norm(target - entry)) / 2.0 + 20.0)
        centre = (entry + target) / 2.0
        px = self.project(np.stack([entry, target]), centre, columns, rows, half)
        return PathImage("MRI, needle plane", f"path {np.linalg.norm(target - entry):.1f} mm, skin at the top",
                         self._grey(self.sample_plane(centre, columns, rows, half)), px[0], px[1], PIXEL_MM,
                         self._letters(columns, rows))

    def axial_at_target(self, trajectory) -> PathImage:
        """The axial MRI through the target (radiological), the path projected onto it.

        Centred between the target and the entry's projection, large enough to hold both.
        """
        entry, target = np.asarray(trajectory.entry_lps_mm, float), np.asarray(trajectory.target_lps_mm, float)
        columns, rows = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
        in_plane = np.array([entry[0], entry[1], target[2]])
        centre = (target + in_plane) / 2.0
        half = max(60.0, float(np.linalg.norm(in_plane - target)) / 2.0 + 20.0)
        px = self.project(np.stack([entry, target]), centre, columns, rows, half)
        return PathImage("MRI, axial through the target", f"path projected (entry {entry[2] - target[2]:+.1f} mm S)",
                         self._grey(self.sample_plane(centre, columns, rows, half)), px[0], px[1], PIXEL_MM,
                         self._letters(columns, rows))

    def covering_frame(self, target_lps) -> tuple[int, float] | None:
        """The valid sweep frame whose plane passes closest to the target with the target on its echoes.

        Returns
        -------
        (frame, distance_mm) or None
            None without a sweep, or when no frame's plane is within :data:`COVER_DISTANCE_MM`
            of the target with the target inside the frame where it holds echoes (non-zero pixels).
        """
        if self.fusion is None:
            return None
        f = self.fusion
        height, width = f.images.shape[1:3]
        best = None
        for frame in np.flatnonzero(f.valid):
            matrix = f.image_to_mri(int(frame))
            c0, c1, origin = matrix[:3, 0], matrix[:3, 1], matrix[:3, 3]
            normal = np.cross(c0, c1)
            normal /= max(float(np.linalg.norm(normal)), 1e-12)
            distance = float((np.asarray(target_lps, float) - origin) @ normal)
            if abs(distance) > COVER_DISTANCE_MM or (best is not None and abs(distance) >= abs(best[1])):
                continue
            x, y = np.linalg.lstsq(np.stack([c0, c1], axis=1), np.asarray(target_lps, float) - origin - distance * normal, rcond=None)[0]
            col, row = int(round(x)), int(round(y))
            if 0 <= col < width and 0 <= row < height and f.images[int(frame)][row, col] > 0:
                best = (int(frame), distance)
        return best

    def fused(self, trajectory) -> PathImage:
        """A 50/50 blend of the covering ultrasound frame and the MRI on it, or the reason there is none."""
        from workbench.widgets.fusion import blend

        target, entry = np.asarray(trajectory.target_lps_mm, float), np.asarray(trajectory.entry_lps_mm, float)
        title = "Fused US/MRI, 50 % blend"
        if self.fusion is None:
            return PathImage(title, "no registered sweep loaded: no fused view", None, None, None, PIXEL_MM, {})
        found = self.covering_frame(target)
        if found is None:
            return PathImage(title, "no sweep covers this target", None, None, None, PIXEL_MM, {})
        frame, distance = found
        f = self.fusion
        mri_u8 = window_to_uint8(f.mri_on_frame(frame), f.mri_window, f.mri_level)
        rgb = np.repeat(blend(mri_u8, f.images[frame], 50.0)[..., None], 3, axis=2)
        mri_to_image = np.linalg.inv(f.image_to_mri(frame))
        pixels = (np.c_[np.stack([entry, target]), np.ones(2)] @ mri_to_image.T)[:, :2]
        spacing = float(np.linalg.norm(f.image_to_mri(frame)[:3, 0]))
        return PathImage(title, f"frame {frame}, target {abs(distance):.1f} mm off its plane",
                         rgb, pixels[0], pixels[1], spacing, {})

    def views(self, trajectory, fused: bool = True) -> list[PathImage]:
        """Needle plane, axial through the target and (with ``fused``) the fused view."""
        out = [self.needle_plane(trajectory), self.axial_at_target(trajectory)]
        if fused:
            out.append(self.fused(trajectory))
        return out


def draw_views(figure, views: list[PathImage]) -> list[dict]:
    """Draw ``views`` side by side on a matplotlib ``figure`` (cleared); returns each view's hook entry.

    Each entry: ``title``, ``caption``, ``has_image``, and (with an image) ``entry_px``/``target_px``
    in figure pixels (x right, y down, after drawing).
    """
    from matplotlib import patheffects

    figure.clear()
    outline = [patheffects.withStroke(linewidth=3, foreground="black")]
    count = len(views)
    placed = []
    for index, view in enumerate(views):
        axes = figure.add_axes([index / count + 0.005, 0.02, 1.0 / count - 0.01, 0.86])
        axes.set_xticks([])
        axes.set_yticks([])
        axes.set_title(view.title, fontsize=11, fontweight="bold", loc="left")
        if view.rgb is None:
            axes.set_facecolor("#f2f2f2")
            axes.text(0.5, 0.5, view.caption, transform=axes.transAxes, ha="center", va="center", fontsize=11,
                      color="#7a4b00", wrap=True)
            placed.append((axes, view))
            continue
        height, width = view.rgb.shape[:2]
        axes.imshow(view.rgb, interpolation="bilinear", extent=(-0.5, width - 0.5, height - 0.5, -0.5))
        axes.set_xlim(-0.5, width - 0.5)
        axes.set_ylim(height - 0.5, -0.5)
        path = np.stack([view.entry_px, view.target_px])
        axes.plot(path[:, 0], path[:, 1], color=np.array(PATH_RGB) / 255.0, linewidth=2.5, solid_capstyle="round")
        axes.plot(*view.entry_px, marker="o", markersize=6, color=np.array(PATH_RGB) / 255.0, markeredgecolor="black")
        axes.plot(*view.target_px, marker="o", markersize=11, markerfacecolor="none",
                  markeredgecolor=np.array(TARGET_RGB) / 255.0, markeredgewidth=2)
        axes.text(0.02, 0.02, view.caption, transform=axes.transAxes, fontsize=8, color="white", va="bottom",
                  path_effects=outline)
        for side, (x, y, ha, va) in {"left": (0.02, 0.5, "left", "center"), "right": (0.98, 0.5, "right", "center"),
                                     "top": (0.5, 0.98, "center", "top"), "bottom": (0.5, 0.1, "center", "bottom")}.items():
            if side in view.letters:
                axes.text(x, y, view.letters[side], transform=axes.transAxes, ha=ha, va=va, color="#ffe066",
                          fontsize=11, fontweight="bold", path_effects=outline)
        bar_mm = 20.0
        bar_px = bar_mm / view.pixel_mm
        x0, y0 = width - 0.05 * width - bar_px, 0.94 * height
        axes.plot([x0, x0 + bar_px], [y0, y0], color="white", linewidth=3, path_effects=outline)
        axes.text(x0 + bar_px / 2, y0 - 0.02 * height, f"{bar_mm:g} mm", ha="center", va="bottom", color="white",
                  fontsize=8, path_effects=outline)
        placed.append((axes, view))
    figure.canvas.draw()
    height_px = figure.bbox.height
    out = []
    for axes, view in placed:
        entry = {"title": view.title, "caption": view.caption, "has_image": view.rgb is not None}
        if view.rgb is not None:
            for key, point in (("entry_px", view.entry_px), ("target_px", view.target_px)):
                x, y = axes.transData.transform(np.asarray(point, float))
                entry[key] = [round(float(x), 2), round(float(height_px - y), 2)]
            box = axes.get_window_extent()
            entry["axes_px"] = [round(v, 2) for v in (box.x0, height_px - box.y1, box.x1, height_px - box.y0)]
        out.append(entry)
    return out


class PathView:
    """The planned path on the MRI (and the fused view), following a plan panel live.

    Parameters
    ----------
    panel : PlanPanel
        Redrawn after each of its updates (target, entry, needle or suggestion changed).
    fusion : FusionModel, optional
        The registered sweep, for the fused view where it covers the target.
    width_px, height_px : int
        Size of the image (three views side by side).

    Attributes
    ----------
    model : PathViewModel
    widget : ipywidgets.VBox (class ``wb-path-view``)
    views : list of dict
        What is drawn: per view ``title``, ``caption``, ``has_image`` and the PNG pixels of entry and target.
    """

    def __init__(self, panel, fusion=None, width_px: int = 930, height_px: int = 360):
        import ipywidgets as W

        from workbench.widgets._plots import PngPlot
        from workbench.widgets._ui import json_hook

        self.panel = panel
        self.model = PathViewModel(panel.model.session.mri, fusion)
        self.plot = PngPlot(width_px, height_px, dpi=100, css_class="wb-path-image")
        self.hook = json_hook("wb-path-geometry")
        self.widget = W.VBox([W.HTML("<b>Planned path</b> <span style='color:#555'>(cyan: needle from the skin entry; "
                                     "red ring: target)</span>"), self.plot.widget, self.hook])
        self.widget.add_class("wb-path-view")
        self._drawn_key = None
        self.views: list[dict] = []
        panel.on_update(self.refresh)
        self.refresh()

    def refresh(self, *_args) -> list[dict] | None:
        """Redraw for the panel's current trajectory (skipped when it has not changed); returns the hook entries."""
        from workbench.widgets._ui import set_json

        try:
            trajectory = self.panel.current()
        except Exception:  # noqa: BLE001 - the panel shows the error itself
            return None
        key = (trajectory.name, tuple(np.round(trajectory.entry_lps_mm, 4)), tuple(np.round(trajectory.target_lps_mm, 4)))
        if key == self._drawn_key:
            return None
        views = self.model.views(trajectory)
        entries = draw_views(self.plot.figure, views)
        self.plot.refresh()
        set_json(self.hook, {"png_px": [self.plot.width_px, self.plot.height_px], "trajectory": trajectory.name,
                             "target_lps": [round(float(v), 3) for v in trajectory.target_lps_mm],
                             "entry_lps": [round(float(v), 3) for v in trajectory.entry_lps_mm], "views": entries})
        self._drawn_key = key
        self.views = entries
        return entries
