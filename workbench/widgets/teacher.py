"""The teacher's view: a thin ipywidgets controller over :class:`workbench.teaching.classview.ClassView`.

It shows, for the results database of a teaching session (SQLite file beside the library or a
PostgreSQL URL): the class table, the cases that caused most errors, per-metric distributions and
each trainee's learning curve as static PNGs (matplotlib Agg into ``ipywidgets.Image``: ipympl
canvases can render as 8 x 6 px images in Voila), a Refresh button (new submissions) and an
Export CSV button. All the numbers come from the model; nothing is computed here.
"""

from __future__ import annotations

from pathlib import Path

from workbench.teaching.classview import ClassView
from workbench.teaching.store import open_store
from workbench.widgets._plots import figure_png
from workbench.widgets._ui import table_html

__all__ = ["TeacherView"]


class TeacherView:
    """Widgets of the teacher's view of ``db`` (optionally one ``session``).

    Attributes
    ----------
    widget : ipywidgets.VBox
        Display it.
    view : ClassView
        The data shown (updated by :meth:`refresh`).
    """

    def __init__(self, db: str | Path, session: str | None = None, export_dir: str | Path = "."):
        import ipywidgets as W

        self.db, self.session, self.export_dir = db, session, Path(export_dir)
        self.status = W.HTML()
        self.table = W.HTML()
        self.cases = W.HTML()
        size = {"width": "720px", "height": "288px"}
        self.distributions = W.Image(format="png", layout=W.Layout(**size, min_width=size["width"], min_height=size["height"]))
        self.learning = W.Image(format="png", layout=W.Layout(**size, min_width=size["width"], min_height=size["height"]))
        self.distributions.add_class("wb-teacher-distributions")
        self.learning.add_class("wb-teacher-learning")
        refresh = W.Button(description="Refresh", icon="refresh")
        export = W.Button(description="Export CSV", icon="download")
        refresh.on_click(lambda _: self.refresh())
        export.on_click(lambda _: self.export_csv())
        self.widget = W.VBox(
            [
                W.HBox([refresh, export]),
                self.status,
                W.HTML("<b>Class</b>"),
                self.table,
                W.HTML("<b>Cases that caused most errors</b>"),
                self.cases,
                W.HTML("<b>Distributions over all attempts</b>"),
                self.distributions,
                W.HTML("<b>Learning curves</b>"),
                self.learning,
            ]
        )
        self.widget.add_class("wb-teacher")
        self.view = ClassView(())
        self.refresh()

    def refresh(self) -> ClassView:
        """Read the database again and redraw everything."""
        with open_store(self.db) as store:
            self.view = ClassView.from_store(store, self.session)
        view = self.view
        self.status.value = (
            f"{len(view.rows)} attempts by {len(view.trainees)} trainees"
            + (f" in session {self.session}" if self.session else f" in {len(view.sessions)} session(s)")
        )
        self.table.value = table_html(view.class_table())
        self.cases.value = table_html(view.problem_cases())
        self.distributions.value = figure_png(view.figure("distributions"))
        self.learning.value = figure_png(view.figure("learning"))
        return view

    def export_csv(self, path: str | Path | None = None) -> Path:
        """Write every attempt shown to ``path`` (default ``results.csv`` in ``export_dir``)."""
        from workbench._atomic import atomic_write_text

        path = Path(path) if path is not None else self.export_dir / "results.csv"
        atomic_write_text(path, self.view.to_csv())
        self.status.value = f"{len(self.view.rows)} attempts exported to {path.name}"
        return path
