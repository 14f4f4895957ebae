"""Sweep scrubber (US frame and its plane in the MRI) and fused view (blend, checkerboard, colour).

Thin controllers over :class:`workbench.widgets.fusion.FusionModel`. DOM hook: the fused view's
root has CSS class ``wb-fused-view``.
"""

from __future__ import annotations

import io

import numpy as np

from workbench.frames import Transform
from workbench.widgets._ui import new_canvas
from workbench.widgets.fusion import MODES, FusionModel
from workbench.widgets.session import CaseSession, WidgetError
from workbench.widgets.slices import SliceModel
from workbench.widgets.us_landmarks import set_reference_landmark

__all__ = ["SweepScrubber", "FusedView", "png_bytes", "set_reference_landmark"]


def png_bytes(pixels: np.ndarray) -> bytes:
    """(H, W) or (H, W, 3) uint8 -> PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="png", compress_level=1)
    return buffer.getvalue()


def _best_orientation(normal_lps: np.ndarray) -> str:
    axis = int(np.argmax(np.abs(normal_lps)))
    return {0: "sagittal", 1: "coronal", 2: "axial"}[axis]


class SweepScrubber:
    """Scrub the frames of a tracked sweep; the frame (left) and its plane in the MRI (right).

    The MRI view is the orientation closest to the frame plane, on the slice through the frame
    centre, with the frame outline projected onto it. Clicking on the ultrasound frame places the
    ``Reference`` landmark paired with the MRI landmark chosen in *pair* (saved into the case).

    Parameters
    ----------
    fusion : FusionModel
    session : CaseSession, optional
        Needed to save picked landmarks.
    """

    def __init__(self, fusion: FusionModel, session: CaseSession | None = None):
        import ipywidgets as W

        self.fusion = fusion
        self.session = session
        valid = np.flatnonzero(fusion.valid)
        self.frame = W.IntSlider(value=fusion.frame, min=int(valid[0]), max=int(valid[-1]), description="frame",
                                 continuous_update=False)
        self.figure, self.canvas = new_canvas(9.0, 4.0)
        self.us_axes = self.figure.add_axes([0.01, 0.02, 0.46, 0.9])
        self.mri_axes = self.figure.add_axes([0.52, 0.02, 0.46, 0.9])
        for axes in (self.us_axes, self.mri_axes):
            axes.set_axis_off()
        pairs = []
        if session is not None:
            pairs = sorted({mark.pair for mark in session.case.landmarks if mark.frame == "Mri" and mark.pair})
        self.pair = W.Dropdown(options=pairs, description="pair", tooltip="click on the frame to place its US landmark")
        self.info = W.HTML()
        self.slice_model = SliceModel(fusion.mri_image, "sagittal")
        self.frame.observe(lambda c: self.show(c["new"]), names="value")
        self.canvas.mpl_connect("button_press_event", self._on_click)
        self.widget = W.VBox([W.HBox([self.frame, self.pair]), self.canvas, self.info])
        self.widget.add_class("wb-sweep-scrubber")
        self.show(fusion.frame)

    def show(self, frame: int) -> None:
        """Show frame ``frame`` and its plane in the MRI."""
        try:
            self.fusion.set_frame(frame)
        except WidgetError as exc:
            self.info.value = f"<span style='color:#c00'>{exc.problem}</span>"
            return
        corners = self.fusion.plane_corners_mri()
        centre = corners.mean(axis=0)
        normal = np.cross(corners[1] - corners[0], corners[3] - corners[0])
        model = self.slice_model
        orientation = _best_orientation(normal)
        if model.orientation != orientation:
            model.set_orientation(orientation)
        model.set_index(model.index_of_lps(centre))
        self.us_axes.clear()
        self.us_axes.set_axis_off()
        self.us_axes.imshow(self.fusion.images[frame], cmap="gray", vmin=0, vmax=255)
        self.us_axes.set_title(f"ultrasound frame {frame}", fontsize=9)
        self.mri_axes.clear()
        self.mri_axes.set_axis_off()
        height, width = model.shape_px
        self.mri_axes.imshow(model.render_uint8(), cmap="gray", vmin=0, vmax=255, aspect=model.pixel_aspect,
                             extent=(-0.5, width - 0.5, height - 0.5, -0.5))
        pixels, _off = model.lps_to_pixel(np.vstack([corners, corners[:1]]))
        self.mri_axes.plot(pixels[:, 0], pixels[:, 1], color="#ff9900", linewidth=1.5)
        self.mri_axes.set_title(f"frame plane in the MRI ({orientation} slice {model.index})", fontsize=9)
        self.canvas.draw_idle()
        self.info.value = (f"frame {frame}: centre LPS ({centre[0]:.1f}, {centre[1]:.1f}, {centre[2]:.1f}) mm; "
                           f"frame normal {np.round(normal / np.linalg.norm(normal), 2).tolist()}")

    def pick(self, pixel_xy, pair: str | None = None):
        """Place the Reference landmark of ``pair`` at US pixel ``(x, y)`` of the current frame; returns (3,) mm."""
        from workbench.registration.landmarks import pixel_to_reference

        probe_to_reference = Transform.from_name("ProbeToReference", self.fusion.probe_to_reference[self.fusion.frame])
        pixels_px = np.asarray(pixel_xy, float).reshape(1, 2)
        point = np.asarray(pixel_to_reference(pixels_px, self.fusion.image_to_probe, probe_to_reference)).reshape(3)
        pair = pair or self.pair.value
        if self.session is not None and pair:
            self.session.save(set_reference_landmark(self.session.case, pair, point))
        self.info.value = f"{pair}: Reference ({point[0]:.1f}, {point[1]:.1f}, {point[2]:.1f}) mm, saved"
        return point

    def _on_click(self, event) -> None:
        if event.inaxes is not self.us_axes or event.xdata is None:
            return
        try:
            self.pick([event.xdata, event.ydata])
        except Exception as exc:  # noqa: BLE001 - shown to the user
            self.info.value = f"<span style='color:#c00'>{exc}</span>"


class FusedView:
    """The MRI resampled on the current US frame, fused: blend 0-100 % (50 %), checkerboard, colour.

    Parameters
    ----------
    fusion : FusionModel
    frame_slider : ipywidgets.IntSlider, optional
        Link to a scrubber's frame slider.

    Attributes
    ----------
    widget : ipywidgets.VBox
        Root, CSS class ``wb-fused-view``.
    """

    def __init__(self, fusion: FusionModel, frame_slider=None):
        import ipywidgets as W

        self.fusion = fusion
        self.blend = W.IntSlider(value=int(fusion.us_percent), min=0, max=100, step=5, description="US %",
                                 continuous_update=True)
        self.mode = W.ToggleButtons(options=list(MODES), value=fusion.mode, description="mode")
        self.mode.style.button_width = "100px"
        self.image = W.Image(format="png", layout=W.Layout(width="512px"))
        self.image.add_class("wb-fused-image")
        self.blend.observe(lambda c: self._set(blend=c["new"]), names="value")
        self.mode.observe(lambda c: self._set(mode=c["new"]), names="value")
        if frame_slider is not None:
            frame_slider.observe(lambda c: self.update(), names="value")
        self.widget = W.VBox([W.HBox([self.blend, self.mode]), self.image])
        self.widget.add_class("wb-fused-view")
        self.update()

    def _set(self, blend=None, mode=None) -> None:
        if blend is not None:
            self.fusion.set_blend(blend)
        if mode is not None:
            self.fusion.mode = mode
        self.update()

    def update(self) -> None:
        """Re-render the fused image of the current frame."""
        self.image.value = png_bytes(self.fusion.fused())

