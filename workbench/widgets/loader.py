"""Case loader: pick a case bundle, a DICOM folder or a volume file; series table; MPR viewer.

The chooser is a path box plus a drop-down of what is in the folder typed (no extra dependency).
What can be opened, without UI: :func:`open_path`. A segmentation is imported into the open case
with :class:`LabelImportForm` (logic: :func:`import_segmentation`, i.e.
:func:`workbench.case.labels.import_label_map`).
"""

from __future__ import annotations

import html
from pathlib import Path

from workbench.widgets.session import CaseSession, WidgetError

__all__ = ["CaseLoader", "LabelImportForm", "NewCaseForm", "create_new_case", "import_segmentation", "open_path", "volume_rows"]

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


def import_segmentation(session: CaseSession, source, fmt=None, table=None, task=None) -> dict:
    """Import a segmentation as the case's label map (:func:`workbench.case.labels.import_label_map`), from form values.

    Empty strings and ``"auto"`` count as not given. The session is refreshed: its ``case`` is
    re-read and its label map is read anew on next use.

    Returns
    -------
    dict
        :func:`workbench.case.labels.label_map_summary` of the imported map (names, voxel counts).

    Raises
    ------
    WorkbenchError
        From the import (the message names the file and the problem; nothing is attached), or
        :class:`WidgetError` when no source is given.
    """
    from workbench.case import load_case
    from workbench.case.labels import import_label_map, label_map_summary

    if not str(source or "").strip():
        raise WidgetError("give the segmentation: a label image, .seg.nrrd, DICOM SEG, TotalSegmentator or TPTBox output")
    fmt = None if str(fmt or "").strip() in ("", "auto") else str(fmt).strip()
    path = import_label_map(
        session.folder,
        Path(str(source).strip()).expanduser(),
        table=Path(str(table).strip()).expanduser() if str(table or "").strip() else None,
        fmt=fmt,
        task=_given(task),
    )
    session.case = load_case(session.folder, verify_digests=False)
    session._labels = session._label_map = None  # read the new map on next use
    return label_map_summary(path)


class LabelImportForm:
    """An "import a segmentation" form for the case open in a loader: source, format, table, task -> label map.

    Parameters
    ----------
    loader : CaseLoader or any object with a ``session`` attribute (CaseSession or None)
        The case the label map goes to is ``loader.session`` when **Import** is pressed.

    Attributes
    ----------
    widget : ipywidgets.VBox (class ``wb-label-import``; status line ``wb-label-import-status``)
    summary : dict or None
        The last import's :func:`workbench.case.labels.label_map_summary`.
    """

    def __init__(self, loader):
        import ipywidgets as W

        from workbench.case.labels import IMPORT_FORMAT_HELP, TOTALSEGMENTATOR_TASKS

        wide = W.Layout(width="640px")
        style = {"description_width": "90px"}
        self.loader = loader
        self.summary = None
        self.source = W.Text(placeholder="label image, .seg.nrrd, DICOM SEG file, TotalSegmentator folder/file, TPTBox mask",
                             description="segmentation", layout=wide, style=style)
        formats = [("auto (from the source)", "auto")] + [(f"{k}: {v[:60]}", k) for k, v in IMPORT_FORMAT_HELP.items()]
        self.format = W.Dropdown(options=formats, value="auto", description="format", layout=wide, style=style)
        self.table = W.Text(placeholder="label table (JSON, CSV, ITK-SNAP, Slicer .ctbl); default <file>.labels.json",
                            description="table", layout=wide, style=style)
        self.task = W.Dropdown(options=[("(none)", "")] + [(t, t) for t in TOTALSEGMENTATOR_TASKS], value="",
                               description="TS task", layout=wide, style=style)
        self.import_button = W.Button(description="Import", icon="download", button_style="primary")
        self.status = W.HTML(html.escape("give a segmentation of this case's MRI, then Import: names must be in the "
                                         "label vocabulary (or declared foreign names); it is put on the MRI grid"))
        self.status.add_class("wb-label-import-status")
        self.import_button.on_click(lambda _b: self.run())
        self.widget = W.VBox([self.source, self.format, self.table, self.task, self.import_button, self.status])
        self.widget.add_class("wb-label-import")

    def run(self):
        """Import from the boxes into the loader's case; returns the summary, or None (the status line says why)."""
        from workbench.errors import WorkbenchError

        session = getattr(self.loader, "session", None)
        if session is None:
            self.status.value = "<span style='color:#c00'>open a case first (a case folder with case.json)</span>"
            return None
        try:
            summary = import_segmentation(session, self.source.value, self.format.value, self.table.value, self.task.value)
        except WorkbenchError as exc:
            self.status.value = f"<span style='color:#c00'>{html.escape(str(exc))}</span>"
            return None
        self.summary = summary
        named = [f"{e['name']} ({e['voxels']})" for e in summary["labels"] if e["name"] != "unlabelled"]
        self.status.value = html.escape(
            f"label map imported: {len(named)} structures, {summary['bone_voxels']} bone voxels: " + ", ".join(named[:12])
            + (" ..." if len(named) > 12 else ""))
        return summary
