"""Case loader: pick a case bundle, a DICOM folder or a volume file; series table; MPR viewer.

The chooser is a path box plus a drop-down of what is in the folder typed (no extra dependency).
What can be opened, without UI: :func:`open_path`.
"""

from __future__ import annotations

import html
from pathlib import Path

from workbench.widgets.session import CaseSession, WidgetError

__all__ = ["CaseLoader", "NewCaseForm", "create_new_case", "open_path", "volume_rows"]

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


def _paths(text: str) -> list[str]:
    """Paths typed one per line (or separated by ``;``), blanks dropped."""
    return [part.strip() for line in str(text).splitlines() for part in line.split(";") if part.strip()]


def _given(value) -> str | None:
    """A form value stripped, or None when empty."""
    return str(value).strip() or None if value is not None else None


def create_new_case(out_dir, mri, sweeps=(), device_set=None, case_id=None, series_uid=None) -> Path:
    """Make a case bundle from a patient's files (:func:`workbench.case.create.new_case`), from form values.

    Empty strings count as not given; ``sweeps`` may be one string with a path per line.

    Returns
    -------
    Path
        The new case folder.

    Raises
    ------
    WorkbenchError
        From ``new_case`` (the message names the file and the problem; nothing is written), or
        :class:`WidgetError` when the folder or the MRI is not given.
    """
    from workbench.case.create import new_case

    if not str(out_dir or "").strip():
        raise WidgetError("give the folder for the new case")
    if not str(mri or "").strip():
        raise WidgetError("give the MRI: a DICOM folder or a NIfTI / NRRD / MHA file")
    sweep_paths = _paths(sweeps) if isinstance(sweeps, str) else [str(s) for s in sweeps if str(s).strip()]
    return new_case(
        Path(str(out_dir).strip()).expanduser(),
        mri=Path(str(mri).strip()).expanduser(),
        sweeps=[Path(p).expanduser() for p in sweep_paths],
        device_set=Path(str(device_set).strip()).expanduser() if str(device_set or "").strip() else None,
        case_id=_given(case_id),
        series_uid=_given(series_uid),
    )


class NewCaseForm:
    """A "new case" form: MRI, sweeps, device set, case id and folder -> :func:`create_new_case`.

    Parameters
    ----------
    on_created : callable, optional
        ``on_created(folder)`` after a case is made (notebook 01 opens it in the loader).

    Attributes
    ----------
    widget : ipywidgets.VBox (class ``wb-new-case``; status line ``wb-new-case-status``)
    created : Path or None
        The last case made.
    """

    def __init__(self, on_created=None):
        import ipywidgets as W

        wide = W.Layout(width="640px")
        style = {"description_width": "90px"}
        self.on_created = on_created
        self.created = None
        self.mri = W.Text(placeholder="DICOM folder, or .nii.gz / .nrrd / .mha", description="MRI", layout=wide, style=style)
        self.series_uid = W.Text(placeholder="only when the DICOM folder holds several series", description="series UID",
                                 layout=wide, style=style)
        self.sweeps = W.Textarea(placeholder="tracked sweeps (.igs.mha), one per line", description="sweeps",
                                 layout=W.Layout(width="640px", height="60px"), style=style)
        self.device_set = W.Text(placeholder="PLUS device set XML with ImageToProbe (needed with sweeps)",
                                 description="device set", layout=wide, style=style)
        self.case_id = W.Text(placeholder="pseudonym, e.g. PVB-017 (default: random); never the patient's ID or name",
                              description="case id", layout=wide, style=style)
        self.out_dir = W.Text(placeholder="new, empty folder for the case", description="new folder", layout=wide,
                              style=style)
        self.create_button = W.Button(description="Create case", icon="plus", button_style="primary")
        self.status = W.HTML(html.escape("fill in the MRI and a new folder, then Create case (DICOM is de-identified "
                                         "on the way in)"))
        self.status.add_class("wb-new-case-status")
        self.create_button.on_click(lambda _b: self.create())
        self.widget = W.VBox([self.mri, self.series_uid, self.sweeps, self.device_set, self.case_id, self.out_dir,
                              self.create_button, self.status])
        self.widget.add_class("wb-new-case")

    def create(self):
        """Make the case from the boxes; returns its folder, or None (the status line says why)."""
        from workbench.errors import WorkbenchError

        try:
            folder = create_new_case(self.out_dir.value, self.mri.value, self.sweeps.value, self.device_set.value,
                                     self.case_id.value, self.series_uid.value)
        except WorkbenchError as exc:
            self.status.value = f"<span style='color:#c00'>{html.escape(str(exc))}</span>"
            return None
        self.created = folder
        self.status.value = html.escape(
            f"case written to {folder}. Open it in the other notebooks: `workbench lab --case {folder}` "
            f"(or set WORKBENCH_CASE={folder} before starting JupyterLab)")
        if self.on_created is not None:
            self.on_created(folder)
        return folder
