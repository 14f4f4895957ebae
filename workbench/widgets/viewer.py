"""MPR viewer widget: one ipympl slice view with orientation, slice, window/level and MIP controls.

A thin controller over :class:`workbench.widgets.slices.SliceModel`; ipywidgets and ipympl are
imported when the widget is built. DOM hooks: the canvas sits in a box of CSS class
``wb-slice-view``; an HTML widget of class ``wb-view-geometry`` holds, as JSON, the canvas size,
the image's box on the canvas and the LPS corners of the image (see :meth:`SliceView.geometry`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from workbench.widgets._ui import axes_geometry, json_hook, new_canvas, set_json
from workbench.widgets.slices import ORIENTATIONS, SliceModel

__all__ = ["SliceView"]


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
        Figure width and height, inches (at 90 dpi).

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
        self.figure, self.canvas = new_canvas(size_in, size_in)
        self.figure.patch.set_facecolor("#202020")
        self.axes = self.figure.add_axes([0.0, 0.0, 1.0, 1.0])
        self.axes.set_axis_off()
        self._image = None
        self._overlays: list[Callable[["SliceView"], None]] = []
        self._listeners: list[Callable[[], None]] = []
        self.geometry_hook = json_hook("wb-view-geometry")
        self.canvas.mpl_connect("draw_event", lambda _event: self._update_geometry())

        m = self.model
        self.orientation = W.ToggleButtons(options=list(ORIENTATIONS), value=m.orientation, description="view")
        self.orientation.style.button_width = "80px"
        self.slice = W.IntSlider(value=m.index, min=0, max=m.slice_count - 1, description="slice", continuous_update=True)
        span = max(m.window * 4.0, 1.0)
        self.window = W.FloatSlider(value=m.window, min=span / 1000.0, max=span, step=span / 1000.0, description="window")
        self.level = W.FloatSlider(value=m.level, min=m.level - span, max=m.level + span, step=span / 1000.0, description="level")
        self.mip = W.FloatSlider(value=0.0, min=0.0, max=60.0, step=1.0, description="MIP mm", tooltip="0 = plain slice")
        self.position = W.HTML(value="")
        self.orientation.observe(self._on_orientation, names="value")
        self.slice.observe(lambda c: self._set(index=c["new"]), names="value")
        self.window.observe(lambda c: self._set(window=c["new"]), names="value")
        self.level.observe(lambda c: self._set(level=c["new"]), names="value")
        self.mip.observe(lambda c: self._set(mip=c["new"]), names="value")
        self.canvas.mpl_connect("motion_notify_event", self._on_motion)

        canvas_box = W.Box([self.canvas])
        canvas_box.add_class("wb-slice-view")
        controls = W.VBox([self.orientation, W.HBox([self.slice, self.mip]), W.HBox([self.window, self.level])])
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
        """Move to the slice through ``point_lps`` (LPS, mm)."""
        self.slice.value = self.model.index_of_lps(point_lps)

    def geometry(self) -> dict:
        """Canvas/axes pixels and LPS corners of the displayed image (the ``wb-view-geometry`` JSON)."""
        out = axes_geometry(self.figure, self.axes)
        out["corners_lps"] = {k: v for k, v in self.model.corners_lps().items() if k != "bottom_right"}
        out["orientation"] = self.model.orientation
        out["slice_index"] = self.model.index
        return out

    def redraw(self, full: bool = False) -> None:
        """Update the image (and overlays) from the model and ask the canvas to draw."""
        m = self.model
        pixels = m.render_uint8()
        height, width = m.shape_px
        if full or self._image is None or self._image.get_array().shape != pixels.shape:
            self.axes.clear()
            self.axes.set_axis_off()
            self._image = self.axes.imshow(
                pixels, cmap="gray", vmin=0, vmax=255, interpolation="nearest", aspect=m.pixel_aspect,
                extent=(-0.5, width - 0.5, height - 0.5, -0.5),
            )
            self.axes.set_xlim(-0.5, width - 0.5)
            self.axes.set_ylim(height - 0.5, -0.5)
            self._overlay_artists = []
        else:
            self._image.set_data(pixels)
        for artist in getattr(self, "_overlay_artists", []):
            artist.remove()
        self._overlay_artists = []
        for draw in self._overlays:
            draw(self)
        self.canvas.draw_idle()

    def add_artist(self, artist) -> None:
        """Track an overlay artist so the next redraw removes it."""
        self._overlay_artists.append(artist)

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

    def _on_orientation(self, change) -> None:
        self.model.set_orientation(change["new"])
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

    def event_lps(self, event) -> np.ndarray | None:
        """LPS (mm) of a matplotlib mouse event on the image, or None outside it."""
        if event.inaxes is not self.axes or event.xdata is None or event.ydata is None:
            return None
        height, width = self.model.shape_px
        if not (-0.5 <= event.xdata <= width - 0.5 and -0.5 <= event.ydata <= height - 0.5):
            return None
        return self.model.pixel_to_lps([event.xdata, event.ydata])
