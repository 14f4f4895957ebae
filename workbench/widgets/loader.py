"""Case loader: pick a case bundle, a DICOM folder or a volume file; series table; MPR viewer.

The chooser is a path box plus a drop-down of what is in the folder typed (no extra dependency).
What can be opened, without UI: :func:`open_path`.
"""

from __future__ import annotations

import html
from pathlib import Path

from workbench.widgets.session import CaseSession, WidgetError

__all__ = ["CaseLoader", "open_path", "volume_rows"]

_VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def open_path(path) -> tuple[CaseSession | None, object]:
    """Open a case folder, a DICOM folder or a volume file.

    Returns
    -------
    session : CaseSession or None
        For a case bundle; None otherwise.
    volume : workbench.io.volume.LoadedVolume
        The MRI (LPS mm).

    Raises
    ------
    WorkbenchError
        Not a case, DICOM folder or volume, or unreadable (the message names the file).
    """
    path = Path(path).expanduser()
    if (path / "case.json").is_file():
        session = CaseSession(path)
        return session, session.mri
    if path.is_dir():
        from workbench.io.dicom import load_dicom_series

        return None, load_dicom_series(path)
    if path.is_file() and path.name.lower().endswith(_VOLUME_SUFFIXES):
        from workbench.io.volume import load_volume

        return None, load_volume(path)
    raise WidgetError("not a case folder (case.json), DICOM folder or volume file", path)


def volume_rows(volume) -> list[dict]:
    """A one-row series table for a loaded volume (size, spacing mm, source kind, description)."""
    meta = volume.metadata
    return [{
        "role": "volume",
        "path": str(volume.source_path) if volume.source_path else "",
        "description": meta.get("series_description", meta.get("source_kind", "")),
        "size": list(volume.size),
        "spacing_mm": [round(v, 3) for v in volume.spacing_mm],
    }]


class CaseLoader:
    """Path box + folder listing + Open button, the series table and an MPR viewer of the MRI.

    Parameters
    ----------
    path : path, optional
        Pre-filled (default: the session folder of ``$WORKBENCH_CASE`` or the demo working copy).
    open_now : bool
        Open ``path`` immediately (so "Run All" shows a case).

    Attributes
    ----------
    session : CaseSession or None
    volume : LoadedVolume or None
    viewer : SliceView or None
    widget : ipywidgets.VBox (class ``wb-case-loader``)
    """

    def __init__(self, path=None, open_now: bool = True, orientation: str = "coronal"):
        import ipywidgets as W

        if path is None:
            from workbench.widgets.session import resolve_case_folder

            path = resolve_case_folder()
        self.orientation = orientation
        self.path = W.Text(value=str(path), description="path", layout=W.Layout(width="640px"))
        self.listing = W.Dropdown(options=[], description="in folder", layout=W.Layout(width="640px"))
        self.open_button = W.Button(description="Open", icon="folder-open", button_style="primary")
        self.up_button = W.Button(description="Up", icon="level-up")
        self.message = W.HTML()
        self.table = W.HTML()
        self.viewer_box = W.VBox()
        self.session, self.volume, self.viewer = None, None, None
        self.path.observe(lambda _c: self._list(), names="value")
        self.listing.observe(self._on_pick, names="value")
        self.open_button.on_click(lambda _b: self.open())
        self.up_button.on_click(lambda _b: setattr(self.path, "value", str(Path(self.path.value).parent)))
        self.widget = W.VBox([W.HBox([self.path, self.up_button]), W.HBox([self.listing, self.open_button]),
                              self.message, self.table, self.viewer_box])
        self.widget.add_class("wb-case-loader")
        self._list()
        if open_now:
            self.open()

    def _list(self) -> None:
        folder = Path(self.path.value).expanduser()
        if not folder.is_dir():
            folder = folder.parent
        try:
            entries = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir() if not p.name.startswith("."))
        except OSError:
            entries = []
        self.listing.options = [("(choose)", "")] + [(name, name) for name in entries[:200]]

    def _on_pick(self, change) -> None:
        if change["new"]:
            base = Path(self.path.value).expanduser()
            base = base if base.is_dir() else base.parent
            self.path.value = str(base / change["new"].rstrip("/"))

    def open(self, path=None):
        """Open ``path`` (default: the path box); fills the table and the viewer. Returns the volume."""
        from workbench.errors import WorkbenchError
        from workbench.widgets._ui import table_html
        from workbench.widgets.viewer import SliceView

        if path is not None:
            self.path.value = str(path)
        try:
            self.session, self.volume = open_path(self.path.value)
        except WorkbenchError as exc:
            self.message.value = f"<span style='color:#c00'>{html.escape(str(exc))}</span>"
            return None
        rows = self.session.series_table() if self.session else volume_rows(self.volume)
        self.table.value = table_html(rows, ["role", "path", "description", "size", "spacing_mm"])
        what = f"case {self.session.case.case_id}" if self.session else "volume"
        spacing_mm = [round(v, 2) for v in self.volume.spacing_mm]
        self.message.value = html.escape(f"opened {what}: {list(self.volume.size)} voxels of {spacing_mm} mm")
        self.viewer = SliceView(self.volume, self.orientation)
        self.viewer_box.children = [self.viewer.widget]
        return self.volume
