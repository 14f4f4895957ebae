"""Landmark / target / entry-point editor: click on MRI slices, list with rename/move/delete/undo.

A thin controller over :class:`workbench.widgets.points.PointListModel` (autosaved into the case
bundle) and a :class:`workbench.widgets.viewer.SliceView`. With the default tool ``place`` a left
click on the slice adds a point with the current name and kind at the clicked LPS position.

DOM hooks: root widget class ``wb-landmark-editor``; the slice canvas in ``wb-slice-view``;
``wb-view-geometry`` (JSON, see SliceView); ``wb-last-point`` (JSON ``name``, ``kind``,
``point_lps``, ``count``); ``wb-save-status`` (text).
"""

from __future__ import annotations

import html
import re
import time

import numpy as np

from workbench.widgets._ui import json_hook, set_json
from workbench.widgets.points import KINDS, PointListModel
from workbench.widgets.session import CaseSession, WidgetError
from workbench.widgets.viewer import SliceView

__all__ = ["LandmarkEditor", "next_name"]

TOOLS = ("place", "move", "delete")
_COLOURS = {"landmark": "#ffd21f", "target": "#ff3b3b", "entry": "#36d7ff"}


def next_name(name: str) -> str:
    """``"landmark 3"`` -> ``"landmark 4"``; a name without a trailing number gets ``" 2"``."""
    match = re.match(r"^(.*?)(\d+)$", name.strip())
    if match:
        return f"{match.group(1)}{int(match.group(2)) + 1}"
    return f"{name.strip()} 2"


class LandmarkEditor:
    """Place, rename, move, delete, undo/redo named points on MRI slices; autosaved.

    Parameters
    ----------
    session : CaseSession, optional
        Default: a new session (``$WORKBENCH_CASE`` or the demo working copy).
    orientation : {"axial", "coronal", "sagittal"}
    focus : str, optional
        Name of a point whose slice is shown first (default: the first target, if any).
    near_mm : float
        Points within this distance of the slice plane are drawn on it.

    Attributes
    ----------
    model : PointListModel
    view : SliceView
    widget : ipywidgets.VBox
        The root (class ``wb-landmark-editor``); display it.
    """

    def __init__(self, session: CaseSession | None = None, orientation: str = "axial", focus: str | None = None,
                 near_mm: float = 3.0):
        import ipywidgets as W

        self.session = session or CaseSession()
        self.model = PointListModel(self.session.case, self.session.folder)
        self.near_mm = float(near_mm)
        self.view = SliceView(self.session.mri, orientation)
        self.view.add_overlay(self._draw_points)

        narrow = {"description_width": "60px"}
        auto = W.Layout(width="auto")
        self.name = W.Text(value=self._default_name("landmark"), description="name", style=narrow,
                           layout=W.Layout(width="440px"))
        self.kind = W.ToggleButtons(options=list(KINDS), value="landmark", description="kind", style=narrow)
        self.kind.style.button_width = "90px"
        self.tool = W.ToggleButtons(options=list(TOOLS), value="place", description="tool", style=narrow,
                                    tooltips=["click adds a point", "click moves the selected point", "click deletes the nearest point"])
        self.tool.style.button_width = "90px"
        self.listing = W.Select(options=[], rows=10, description="points", style=narrow, layout=W.Layout(width="440px"))
        self.new_name = W.Text(value="", placeholder="new name", description="rename", style=narrow,
                               layout=W.Layout(width="440px"))
        self.rename_button = W.Button(description="Rename", icon="i-cursor", layout=auto)
        self.delete_button = W.Button(description="Delete", icon="trash", layout=auto)
        self.undo_button = W.Button(description="Undo", icon="undo", layout=auto)
        self.redo_button = W.Button(description="Redo", icon="repeat", layout=auto)
        self.goto_button = W.Button(description="Show", icon="crosshairs", tooltip="go to the selected point's slice",
                                    layout=auto)
        self.coords = [W.FloatText(value=0.0, description=axis, style={"description_width": "14px"},
                                   layout=W.Layout(width="110px")) for axis in "LPS"]
        self.place_at_button = W.Button(description="Place at LPS (mm)", tooltip="add a point at the typed LPS mm",
                                        layout=auto)
        self.status = W.HTML(value="")
        self.status.add_class("wb-save-status")
        self.last_point = json_hook("wb-last-point")

        self.kind.observe(self._on_kind, names="value")
        self.rename_button.on_click(lambda _b: self._guard(self._rename))
        self.delete_button.on_click(lambda _b: self._guard(lambda: self.model.delete(self._selected())))
        self.undo_button.on_click(lambda _b: self._guard(self.model.undo))
        self.redo_button.on_click(lambda _b: self._guard(self.model.redo))
        self.goto_button.on_click(lambda _b: self._guard(lambda: self.view.show_point(self.model.get(self._selected()).point_lps)))
        self.place_at_button.on_click(lambda _b: self._guard(lambda: self.place([c.value for c in self.coords])))
        self.listing.observe(self._on_select, names="value")
        self.view.canvas.mpl_connect("button_press_event", self._on_click)
        self.model.observe(self._on_model)

        edit_row = W.HBox([self.rename_button, self.delete_button, self.undo_button, self.redo_button, self.goto_button])
        self.name.layout.width = "320px"
        tools = W.VBox([W.HBox([self.name, self.kind]), self.tool])
        edits = W.VBox([self.new_name, edit_row, W.HBox(self.coords), self.place_at_button, self.status],
                       layout=W.Layout(width="460px"))
        self.widget = W.VBox([tools, self.view.widget, W.HBox([self.listing, edits]), self.last_point])
        self.widget.add_class("wb-landmark-editor")

        focus_point = None
        if focus is not None:
            focus_point = self.model.get(focus)
        elif self.model.names("target"):
            focus_point = self.model.get(self.model.names("target")[0])
        if focus_point is not None:
            self.view.show_point(focus_point.point_lps)
        self._refresh()

    # -- actions (also the programmatic API) --------------------------------------------
    def place(self, point_lps, name: str | None = None, kind: str | None = None):
        """Place a point (current name/kind unless given) at ``point_lps`` (LPS, mm); returns it."""
        kind = kind or self.kind.value
        point = self.model.place(name or self.name.value, kind, point_lps)
        if kind == "entry":  # the next target still without its entry
            self.name.value = self._default_name("entry")
        else:
            self.name.value = self.model.unique_name(next_name(point.name))
        return point

    def click_pixel(self, col: float, row: float, button: int = 1):
        """Simulate a click at slice pixel (col, row), as a mouse click on the canvas would do."""
        return self._apply_tool(self.view.model.pixel_to_lps([col, row]), button)

    # -- events -------------------------------------------------------------------------
    def _on_click(self, event) -> None:
        button = getattr(event.button, "value", event.button)
        point_lps = self.view.event_lps(event)
        if point_lps is None:
            return
        self._guard(lambda: self._apply_tool(point_lps, button))

    def _apply_tool(self, point_lps, button: int = 1):
        if button != 1:
            return None
        tool = self.tool.value
        if tool == "place":
            return self.place(point_lps)
        if tool == "move":
            return self.model.move(self._selected(), point_lps)
        if tool == "delete":
            name = self._nearest(point_lps)
            if name is None:
                raise WidgetError("no point near the click on this slice")
            return self.model.delete(name)
        raise WidgetError(f"unknown tool {tool!r}")

    def _nearest(self, point_lps, radius_mm: float = 10.0) -> str | None:
        if not self.model.points:
            return None
        points = self.model.points_lps()
        distance = np.linalg.norm(points - np.asarray(point_lps), axis=1)
        best = int(np.argmin(distance))
        return self.model.points[best].name if distance[best] <= radius_mm else None

    def _selected(self) -> str:
        if not self.listing.value:
            raise WidgetError("select a point in the list first")
        return self.listing.value

    def _rename(self) -> None:
        self.model.rename(self._selected(), self.new_name.value)
        self.new_name.value = ""

    def _on_kind(self, change) -> None:
        self.name.value = self._default_name(change["new"])

    def _default_name(self, kind: str) -> str:
        """A new point's proposed name; an entry is named after the first target that has none yet.

        ``workbench plan`` pairs an entry named ``"<target> entry"`` with its target.
        """
        if kind == "entry":
            entries = set(self.model.names("entry"))
            for target in self.model.names("target"):
                if f"{target} entry" not in entries:
                    return self.model.unique_name(f"{target} entry")
        count = len(self.model.names(kind)) + 1
        return self.model.unique_name(f"{kind} {count}")

    def _on_select(self, change) -> None:
        if change["new"]:
            point = self.model.get(change["new"])
            for box, value in zip(self.coords, point.point_lps):
                box.value = round(value, 3)

    def _on_model(self, what: str) -> None:
        self._refresh(what)

    def _guard(self, action) -> None:
        try:
            action()
        except WidgetError as exc:
            self.status.value = f"<span style='color:#c00'>{html.escape(exc.problem)}</span>"

    def _refresh(self, what: str = "") -> None:
        last = self.model.points[-1] if self.model.points else None
        set_json(self.last_point, {  # first: the hook a browser waits on
            "name": last.name if last else None,
            "kind": last.kind if last else None,
            "point_lps": [float(v) for v in last.point_lps] if last else None,
            "count": len(self.model.points),
        })
        selected = self.listing.value
        options = [(f"{p.name}  [{p.kind}]  ({p.point_lps[0]:.1f}, {p.point_lps[1]:.1f}, {p.point_lps[2]:.1f})", p.name)
                   for p in self.model.points]
        with self.listing.hold_trait_notifications():
            self.listing.options = options
            if selected in self.model.names():
                self.listing.value = selected
        self.undo_button.disabled = not self.model.can_undo
        self.redo_button.disabled = not self.model.can_redo
        if self.model.save_error:
            self.status.value = f"<span style='color:#c00'>{html.escape(self.model.save_error)}</span>"
        elif what:
            # the case's name, never its path: the teaching app shows this line to trainees
            self.status.value = (f"{what}: saved {len(self.model.points)} points in case "
                                 f"{html.escape(self.session.folder.name)} at {time.strftime('%H:%M:%S')}")
        elif not self.model.points:
            self.status.value = ("<span class='wb-guidance'>no points yet: choose a <i>kind</i> (landmark, target, entry) "
                                 "and a name, then click on the slice</span>")
        else:
            self.status.value = f"{len(self.model.points)} points in case {html.escape(self.session.folder.name)}"
        self.view.redraw()

    def _draw_points(self, view: SliceView) -> None:
        if not self.model.points:
            return
        points = self.model.points_lps()
        pixels, off_mm = view.model.lps_to_pixel(points)
        near = np.abs(off_mm) <= self.near_mm
        for kind, colour in _COLOURS.items():
            mask = near & np.array([p.kind == kind for p in self.model.points])
            if mask.any():
                view.add_artist(view.axes.scatter(pixels[mask, 0], pixels[mask, 1], s=36, c=colour, marker="+",
                                                  linewidths=1.5))
        shown = np.flatnonzero(near)  # names beside the points, moved apart so that none overlaps another
        view.add_labels(pixels[shown], [self.model.points[i].name for i in shown],
                        [_COLOURS[self.model.points[i].kind] for i in shown])
