"""MPR viewer widget: one ipympl slice view with orientation, slice, window/level presets and MIP controls.

A thin controller over :class:`workbench.widgets.slices.SliceModel`; ipywidgets and ipympl are
imported when the widget is built. The canvas is sized to the slice's physical extent (mm along
columns and rows, so voxels are shown square in mm and a thin field of view is not a strip in an
empty square), at most ``max_px`` on a side. Drawn on the image: orientation letters on the four
sides (from the volume's LPS geometry, :meth:`SliceModel.side_letters`), a scale bar in mm, and
the view, slice and window in a corner. Switching the view keeps the cursor
(:attr:`SliceModel.cursor_lps`): the new view shows the slice through the last clicked or shown point.

DOM hooks: the canvas sits in a box of CSS class ``wb-slice-view``; a hidden HTML widget of
class ``wb-view-geometry`` holds, as JSON, the canvas size, the image's box on the canvas and
the LPS corners of the image (see :meth:`SliceView.geometry`), with the letters and scale bar.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from workbench.widgets._ui import axes_geometry, json_hook, new_canvas, place_labels, set_json
from workbench.widgets.slices import ORIENTATIONS, PRESETS, SliceModel

__all__ = ["SliceView", "canvas_size_px"]

#: Dots per inch of the viewer's figure (CSS pixels per inch at a device pixel ratio of 1).
VIEW_DPI = 90
_ANNOTATION = {"color": "#ffe066", "fontsize": 11, "fontweight": "bold"}


def canvas_size_px(extent_mm: tuple[float, float], max_px: tuple[int, int]) -> tuple[int, int]:
    """Canvas (width_px, height_px) with the image's physical aspect, as large as fits ``max_px``.

    Parameters
    ----------
    extent_mm : (width_mm, height_mm)
        The displayed image's size.
    max_px : (max_width_px, max_height_px)
    """
    width_mm, height_mm = (max(float(v), 1e-6) for v in extent_mm)
    scale = min(max_px[0] / width_mm, max_px[1] / height_mm)
    return max(int(round(width_mm * scale)), 64), max(int(round(height_mm * scale)), 64)


def _outlined(artist):
    from matplotlib import patheffects

    artist.set_path_effects([patheffects.withStroke(linewidth=3, foreground="black")])
    return artist


class SliceView:
    """MPR slice view (ipympl) over a :class:`SliceModel`.

    Parameters
    ----------
    volume : SimpleITK.Image or LoadedVolume
        The MRI (LPS mm).
    orientation : {"axial", "coronal", "sagittal"}
    index : int, optional
        Initial slice index.
    size_in : float
        Largest canvas side, inches at 90 dpi (6 in = 540 px); the other side follows the
        image's physical aspect.

    Attributes
    ----------
    model : SliceModel
    figure, axes, canvas
        matplotlib figure/axes and the ipympl canvas widget.
    widget : ipywidgets.VBox
        Controls above the canvas (class ``wb-mpr-viewer``).
    """

    def __init__(self, volume, orientation: str = "axial", index: int | None = None, size_in: float = 6.0):
        import ipywidgets as W

        self.model = SliceModel(volume, orientation, index)
        self.max_px = (int(round(size_in * VIEW_DPI * 1.15)), int(round(size_in * VIEW_DPI)))
        width_px, height_px = canvas_size_px(self.model.extent_mm, self.max_px)
        self.figure, self.canvas = new_canvas(width_px / VIEW_DPI, height_px / VIEW_DPI, dpi=VIEW_DPI)
        self.figure.patch.set_facecolor("#202020")
        self.axes = self.figure.add_axes([0.0, 0.0, 1.0, 1.0])
        self.axes.set_axis_off()
        self._image = None
        self._overlay_artists: list = []
        self._annotation_artists: list = []
        self._overlays: list[Callable[["SliceView"], None]] = []
        self._listeners: list[Callable[[], None]] = []
        self._syncing = False
        self.geometry_hook = json_hook("wb-view-geometry")
        self.canvas.mpl_connect("draw_event", lambda _event: self._update_geometry())

        m = self.model
        label = {"description_width": "56px"}
        self.orientation = W.ToggleButtons(options=list(ORIENTATIONS), value=m.orientation, description="view", style=label)
        self.orientation.style.button_width = "96px"
        self.preset = W.Dropdown(options=[*PRESETS, "custom"], value="T2 spine", description="preset", style=label,
                                 layout=W.Layout(width="230px"), tooltip="window/level preset")
        self.slice = W.IntSlider(value=m.index, min=0, max=m.slice_count - 1, description="slice", continuous_update=True,
                                 style=label, layout=W.Layout(width="330px"))
        full_window, full_level = m.preset_window_level("full range")
        span = max(m.window * 4.0, full_window * 1.2, 1.0)
        self.window = W.FloatSlider(value=m.window, min=span / 1000.0, max=span, step=span / 1000.0, description="window",
                                    style=label, layout=W.Layout(width="330px"), readout_format=".0f")
        self.level = W.FloatSlider(value=m.level, min=full_level - span, max=full_level + span, step=span / 1000.0,
                                   description="level", style=label, layout=W.Layout(width="330px"), readout_format=".0f")
        self.mip = W.FloatSlider(value=0.0, min=0.0, max=60.0, step=1.0, description="MIP mm", tooltip="0 = plain slice",
                                 style=label, layout=W.Layout(width="330px"))
        self.position = W.HTML(value="<span style='color:#666'>move the mouse over the image for its LPS position</span>")
        self.orientation.observe(self._on_orientation, names="value")
        self.preset.observe(self._on_preset, names="value")
        self.slice.observe(lambda c: self._set(index=c["new"]), names="value")
        self.window.observe(lambda c: self._on_window_slider(window=c["new"]), names="value")
        self.level.observe(lambda c: self._on_window_slider(level=c["new"]), names="value")
        self.mip.observe(lambda c: self._set(mip=c["new"]), names="value")
        self.canvas.mpl_connect("motion_notify_event", self._on_motion)
        self.canvas.mpl_connect("button_press_event", self._on_press)

        canvas_box = W.Box([self.canvas])
        canvas_box.add_class("wb-slice-view")
        controls = W.VBox([W.HBox([self.orientation, self.preset]), W.HBox([self.slice, self.mip]),
                           W.HBox([self.window, self.level])])
        self.widget = W.VBox([controls, canvas_box, self.position, self.geometry_hook])
        self.widget.add_class("wb-mpr-viewer")
        self.redraw(full=True)

    # -- public -------------------------------------------------------------------------
    def add_overlay(self, draw: Callable[["SliceView"], None]) -> None:
        """Register ``draw(view)``, called after the image is updated on every redraw."""
        self._overlays.append(draw)

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after the slice, orientation or window changes."""
        self._listeners.append(callback)

    def show_point(self, point_lps) -> None:
        """Put the cursor at ``point_lps`` (LPS, mm) and move to the slice through it."""
        self.model.set_cursor(point_lps)
        self.slice.value = self.model.index

    def set_preset(self, name: str) -> None:
        """Apply a window/level preset (:data:`workbench.widgets.slices.PRESETS`)."""
        self.preset.value = name

    def geometry(self) -> dict:
        """Canvas/axes pixels and LPS corners of the displayed image (the ``wb-view-geometry`` JSON).

        Also ``orientation``, ``slice_index``, ``cursor_lps`` (mm), ``letters`` (side -> letters),
        ``scale_bar`` (``length_mm``, ``length_px`` in image pixels, ``length_canvas_px``) and
        ``window``/``level``.
        """
        m = self.model
        out = axes_geometry(self.figure, self.axes)
        out["corners_lps"] = {k: v for k, v in m.corners_lps().items() if k != "bottom_right"}
        out["orientation"] = m.orientation
        out["slice_index"] = m.index
        out["cursor_lps"] = [round(float(v), 3) for v in m.cursor_lps]
        out["letters"] = m.side_letters()
        bar = m.scale_bar()
        x0, _y0, x1, _y1 = out["axes_px"]
        bar["length_canvas_px"] = round(bar["length_px"] * (x1 - x0) / m.shape_px[1], 3)
        out["scale_bar"] = bar
        out["window"], out["level"] = round(m.window, 3), round(m.level, 3)
        return out

    def redraw(self, full: bool = False) -> None:
        """Update the image (and overlays) from the model and ask the canvas to draw."""
        m = self.model
        pixels = m.render_uint8()
        height, width = m.shape_px
        if full or self._image is None or self._image.get_array().shape != pixels.shape:
            self._resize_canvas()
            self.axes.clear()
            self.axes.set_axis_off()
            self._image = self.axes.imshow(
                pixels, cmap="gray", vmin=0, vmax=255, interpolation="nearest", aspect="auto",
                extent=(-0.5, width - 0.5, height - 0.5, -0.5),
            )
            self.axes.set_xlim(-0.5, width - 0.5)
            self.axes.set_ylim(height - 0.5, -0.5)
            self._overlay_artists = []
            self._annotation_artists = []
        else:
            self._image.set_data(pixels)
        for artist in self._overlay_artists:
            artist.remove()
        self._overlay_artists = []
        if not self._annotation_artists:  # letters and scale bar change only with the view (full redraw)
            self._draw_annotations()
        self._caption.set_text(self._caption_text())
        for draw in self._overlays:
            draw(self)
        self.canvas.draw_idle()

    def add_artist(self, artist) -> None:
        """Track an overlay artist so the next redraw removes it."""
        self._overlay_artists.append(artist)

    def add_labels(self, points_px, texts, colours, fontsize: float = 9.0) -> None:
        """Text labels beside points (slice pixels), moved apart so that no two overlap.

        Parameters
        ----------
        points_px : (N, 2) float array
            (col, row) slice pixels of the labelled points.
        texts : list of str
        colours : list of matplotlib colours
        """
        points_px = np.asarray(points_px, dtype=float).reshape(-1, 2)
        if not len(points_px):
            return
        canvas = self._to_canvas_px(points_px)
        char_px, line_px = fontsize * VIEW_DPI / 72.0 * 0.56, fontsize * VIEW_DPI / 72.0 * 1.3
        sizes = np.array([[len(t) * char_px + 2.0, line_px] for t in texts])
        width_px, height_px = self.figure.bbox.width / self._ratio(), self.figure.bbox.height / self._ratio()
        boxes = place_labels(canvas, sizes, (width_px, height_px))
        to_data = self._canvas_to_data
        for point, box, text, colour in zip(canvas, boxes, texts, colours):
            anchor = to_data(np.array([[box[0], box[1] + box[3] / 2.0]]))[0]
            self.add_artist(_outlined(self.axes.text(anchor[0], anchor[1], text, color=colour, fontsize=fontsize,
                                                     ha="left", va="center", clip_on=True)))
            if abs(box[1] + box[3] / 2.0 - point[1]) > line_px:  # moved away: a leader line to the point
                start = to_data(np.array([[box[0], box[1] + box[3] / 2.0], point]))
                (line,) = self.axes.plot(start[:, 0], start[:, 1], color=colour, linewidth=0.6, alpha=0.8)
                self.add_artist(line)

    # -- drawing helpers ----------------------------------------------------------------
    def _ratio(self) -> float:
        return float(getattr(self.figure.canvas, "device_pixel_ratio", 1.0) or 1.0)

    def _to_canvas_px(self, points_px: np.ndarray) -> np.ndarray:
        """Slice pixels (col, row) -> canvas CSS pixels (x right, y down)."""
        height, width = self.model.shape_px
        geometry = axes_geometry(self.figure, self.axes)
        x0, y0, x1, y1 = geometry["axes_px"]
        u = x0 + (points_px[:, 0] + 0.5) / width * (x1 - x0)
        v = y0 + (points_px[:, 1] + 0.5) / height * (y1 - y0)
        return np.stack([u, v], axis=1)

    def _canvas_to_data(self, canvas_px: np.ndarray) -> np.ndarray:
        height, width = self.model.shape_px
        x0, y0, x1, y1 = axes_geometry(self.figure, self.axes)["axes_px"]
        col = (canvas_px[:, 0] - x0) / (x1 - x0) * width - 0.5
        row = (canvas_px[:, 1] - y0) / (y1 - y0) * height - 0.5
        return np.stack([col, row], axis=1)

    def _resize_canvas(self) -> None:
        width_px, height_px = canvas_size_px(self.model.extent_mm, self.max_px)
        current = (round(self.figure.bbox.width / self._ratio()), round(self.figure.bbox.height / self._ratio()))
        if current != (width_px, height_px):
            self.figure.set_size_inches(width_px / VIEW_DPI, height_px / VIEW_DPI, forward=True)

    def _draw_annotations(self) -> None:
        """Orientation letters at the middle of each side, the scale bar and the slice caption."""
        m = self.model
        axes, add = self.axes, self._annotation_artists.append
        letters = m.side_letters()
        places = {"left": (0.012, 0.5, "left", "center"), "right": (0.988, 0.5, "right", "center"),
                  "top": (0.5, 0.985, "center", "top"), "bottom": (0.5, 0.015, "center", "bottom")}
        for side, (x, y, ha, va) in places.items():
            add(_outlined(axes.text(x, y, letters[side], transform=axes.transAxes, ha=ha, va=va, **_ANNOTATION)))
        height, width = m.shape_px
        bar = m.scale_bar()
        col0 = 0.04 * width
        row = height - 0.5 - 0.07 * height
        (line,) = axes.plot([col0, col0 + bar["length_px"]], [row, row], color="white", linewidth=3, solid_capstyle="butt")
        add(_outlined(line))
        add(_outlined(axes.text(col0, row - 0.015 * height, f"{bar['length_mm']:g} mm",
                                ha="left", va="bottom", color="white", fontsize=10)))
        narrow = self.figure.bbox.width / self._ratio() < 320  # below the top letter, so they never overlap
        self._caption = _outlined(axes.text(0.012, 0.95 if narrow else 0.985, self._caption_text(), transform=axes.transAxes,
                                            ha="left", va="top", color="white", fontsize=9))
        add(self._caption)

    def _caption_text(self) -> str:
        m = self.model
        narrow = self.figure.bbox.width / self._ratio() < 320
        slab = "" if m.mip_slab_mm <= 0 else (f"\nMIP {m.mip_slab_mm:g} mm" if narrow else f"  MIP {m.mip_slab_mm:g} mm")
        return f"{m.index + 1}/{m.slice_count}{slab}" if narrow else f"{m.orientation} {m.index + 1}/{m.slice_count}{slab}"

    # -- events -------------------------------------------------------------------------
    def _set(self, index=None, window=None, level=None, mip=None) -> None:
        m = self.model
        if index is not None:
            m.set_index(index)
        if window is not None or level is not None:
            m.set_window_level(window if window is not None else m.window, level if level is not None else m.level)
        if mip is not None:
            m.mip_slab_mm = float(mip)
        self.redraw()
        self._changed()

    def _on_window_slider(self, window=None, level=None) -> None:
        if self._syncing:
            return
        if self.preset.value != "custom":
            self._syncing = True
            try:
                self.preset.value = "custom"
            finally:
                self._syncing = False
        self._set(window=window, level=level)

    def _on_preset(self, change) -> None:
        if self._syncing or change["new"] == "custom":
            return
        self.model.apply_preset(change["new"])
        self._syncing = True
        try:
            with self.window.hold_trait_notifications(), self.level.hold_trait_notifications():
                self.window.max = max(self.window.max, self.model.window)
                self.window.value = self.model.window
                self.level.value = self.model.level
        finally:
            self._syncing = False
        self.redraw()
        self._changed()

    def _on_orientation(self, change) -> None:
        self.model.set_orientation(change["new"])  # the slice through the cursor: the position is kept
        with self.slice.hold_trait_notifications():
            self.slice.max = self.model.slice_count - 1
            self.slice.value = self.model.index
        self.redraw(full=True)
        self._changed()

    def _changed(self) -> None:
        self._update_geometry()
        for callback in self._listeners:
            callback()

    def _update_geometry(self) -> None:
        set_json(self.geometry_hook, self.geometry())

    def _on_motion(self, event) -> None:
        if event.inaxes is not self.axes or event.xdata is None:
            return
        point = self.model.pixel_to_lps([event.xdata, event.ydata])
        self.position.value = f"LPS ({point[0]:.1f}, {point[1]:.1f}, {point[2]:.1f}) mm"

    def _on_press(self, event) -> None:
        point = self.event_lps(event)
        if point is not None:  # the cursor follows clicks, so the next view goes through this point
            self.model.cursor_lps = np.asarray(point, dtype=float)

    def event_lps(self, event) -> np.ndarray | None:
        """LPS (mm) of a matplotlib mouse event on the image, or None outside it."""
        if event.inaxes is not self.axes or event.xdata is None or event.ydata is None:
            return None
        height, width = self.model.shape_px
        if not (-0.5 <= event.xdata <= width - 0.5 and -0.5 <= event.ydata <= height - 0.5):
            return None
        return self.model.pixel_to_lps([event.xdata, event.ydata])
