"""Correct the case's label map on MRI slices: paint/erase per structure, undo/redo, autosave.

A thin ipywidgets controller over :class:`workbench.segmentation.editor.LabelEditor` (the logic,
tested without a kernel) and a :class:`workbench.widgets.viewer.SliceView`. A left click on the
slice applies the brush (sphere, radius in mm) at the clicked LPS point: ``paint`` draws the
chosen structure, ``erase`` turns it back to ``unlabelled``. The chosen structure is drawn over
the slice; every stroke is saved into the case (atomic) as it is made.

DOM hooks: root widget class ``wb-segment-editor``; ``wb-save-status`` (text).
"""

from __future__ import annotations

import html

import numpy as np

from workbench.widgets.session import CaseSession, WidgetError
from workbench.widgets.viewer import SliceView

__all__ = ["SegmentEditor"]

TOOLS = ("paint", "erase")


class SegmentEditor:
    """Paint/erase the case's label map per structure on MRI slices.

    Parameters
    ----------
    session : CaseSession, optional
        Default: a new session (``$WORKBENCH_CASE`` or the demo working copy).
    orientation : {"axial", "coronal", "sagittal"}
    structure : str, optional
        Structure selected first (default: the first vertebral structure of the table).

    Attributes
    ----------
    model : LabelEditor
    view : SliceView
    widget : ipywidgets.VBox
        The root (class ``wb-segment-editor``); display it.
    """

    def __init__(self, session: CaseSession | None = None, orientation: str = "axial", structure: str | None = None):
        import ipywidgets as W

        from workbench.segmentation.editor import LabelEditor

        self.session = session or CaseSession()
        try:
            self.model = LabelEditor.open_case(self.session.folder, autosave="stroke")
        except Exception as exc:  # noqa: BLE001 - shown as the widget's one line
            raise WidgetError(str(exc)) from None
        self.view = SliceView(self.session.mri, orientation)
        self.view.add_overlay(self._draw_structure)
        names = [n for n in self.model.structures if n not in ("air", "unlabelled")]
        default = structure or next((n for n in names if "_L" in n), names[0] if names else "unlabelled")
        narrow = {"description_width": "70px"}
        auto = W.Layout(width="auto")
        self.structure = W.Combobox(value=default, options=names, description="structure", ensure_option=False,
                                    style=narrow, layout=W.Layout(width="360px"))
        self.tool = W.ToggleButtons(options=list(TOOLS), value="paint", description="tool", style=narrow)
        self.radius = W.FloatSlider(value=3.0, min=0.5, max=20.0, step=0.5, description="brush mm", style=narrow)
        self.undo_button = W.Button(description="Undo", icon="undo", layout=auto)
        self.redo_button = W.Button(description="Redo", icon="repeat", layout=auto)
        self.status = W.HTML(value="")
        self.status.add_class("wb-save-status")
        self.undo_button.on_click(lambda _b: self._guard(self.model.undo))
        self.redo_button.on_click(lambda _b: self._guard(self.model.redo))
        self.structure.observe(lambda _c: self.view.redraw(), names="value")
        self.view.canvas.mpl_connect("button_press_event", self._on_click)
        self.widget = W.VBox([
            W.HBox([self.structure, self.tool]),
            W.HBox([self.radius, self.undo_button, self.redo_button]),
            self.view.widget,
            self.status,
        ])
        self.widget.add_class("wb-segment-editor")
        self.view.redraw(full=True)
        self._report("ready")

    # -- actions (also the programmatic API) -----------------------------------------------------
    def apply_at(self, point_lps):
        """Apply the current tool, structure and brush at ``point_lps`` (LPS mm); return the stroke."""
        name = self.structure.value.strip()
        if self.tool.value == "paint":
            stroke = self.model.paint(name, point_lps, self.radius.value)
        else:
            stroke = self.model.erase(name, point_lps, self.radius.value)
        self.view.redraw()
        self._report(f"{stroke.action} {name}: {stroke.changed} voxels")
        return stroke

    def click_pixel(self, col: float, row: float):
        """Simulate a left click at slice pixel (col, row)."""
        return self.apply_at(self.view.model.pixel_to_lps([col, row]))

    # -- events ------------------------------------------------------------------------------------
    def _on_click(self, event) -> None:
        if getattr(event.button, "value", event.button) != 1:
            return
        point_lps = self.view.event_lps(event)
        if point_lps is not None:
            self._guard(lambda: self.apply_at(point_lps))

    def _guard(self, action) -> None:
        from workbench.errors import WorkbenchError

        try:
            action()
            self.view.redraw()
        except WorkbenchError as exc:
            self.status.value = f"<span style='color:#c00'>{html.escape(str(exc))}</span>"

    def _report(self, what: str) -> None:
        saved = "saved" if not self.model.pending else "not saved"
        self.status.value = html.escape(f"{what} · {self.model.saves} saves · {saved}")

    def _draw_structure(self, view: SliceView) -> None:
        try:
            value = self.model.value_of(self.structure.value.strip())
        except Exception:  # noqa: BLE001 - a name being typed is not an error yet
            return
        height, width = view.model.shape_px
        cols, rows = np.meshgrid(np.arange(width), np.arange(height))
        ijk = np.rint(view.model.pixel_to_ijk(np.stack([cols.ravel(), rows.ravel()], axis=1))).astype(int)
        shape_ijk = np.array(self.model.values.shape[::-1])
        inside = np.all((ijk >= 0) & (ijk < shape_ijk), axis=1)
        hit = np.zeros(len(ijk), bool)
        hit[inside] = self.model.values[ijk[inside, 2], ijk[inside, 1], ijk[inside, 0]] == value
        if hit.any():
            overlay = np.zeros((height, width, 4))
            overlay[..., 0], overlay[..., 1] = 1.0, 0.3
            overlay[..., 3] = 0.45 * hit.reshape(height, width)
            view.add_artist(view.axes.imshow(overlay, interpolation="nearest", aspect="auto",
                                             extent=(-0.5, width - 0.5, height - 0.5, -0.5)))
