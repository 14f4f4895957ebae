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


class SubmitPanel:
    """The trainee's submit box: pseudonym, session, Submit; then the score, the findings and the
    expert's plan overlaid on the trainee's (a static PNG).

    Parameters
    ----------
    case_dir : str or Path
        A library case (its expert plans are in ``ground_truth.json``).
    plan_file : callable () -> Path
        Writes the trainee's current plan and returns its ``plan.json`` (the plan page's export).
    db : str or Path, optional
        Results database (default ``results.sqlite`` beside the library).
    session : str
        Preset teaching session id (editable).
    check_safety : bool
    """

    def __init__(self, case_dir, plan_file, db=None, session: str = "", check_safety: bool = True):
        import ipywidgets as W

        self.case_dir, self.plan_file, self.db, self.check_safety = Path(case_dir), plan_file, db, check_safety
        self.trainee = W.Text(description="Trainee id", placeholder="pseudonym, e.g. t07")
        self.session = W.Text(description="Session", value=session)
        self.button = W.Button(description="Submit plan", button_style="primary", icon="paper-plane")
        self.result = W.HTML()
        self.overlay = W.Image(format="png", layout=W.Layout(width="720px", height="324px", min_width="720px", min_height="324px"))
        self.overlay.layout.display = "none"
        self.button.on_click(lambda _: self.submit())
        self.widget = W.VBox([W.HBox([self.trainee, self.session, self.button]), self.result, self.overlay])
        self.widget.add_class("wb-submit-panel")
        self.last = None

    @classmethod
    def for_plan_panel(cls, case_dir, plan_panel, **kwargs) -> "SubmitPanel":
        """A panel that submits what a plan page's :class:`~workbench.widgets.plan.PlanPanel` shows:
        Submit first exports it (``plan_panel.export()``, links included) and scores its ``plan.json``.
        ``kwargs`` as for the constructor (``db``, ``session``, ``check_safety``)."""

        def plan_file() -> Path:
            return next(path for path in plan_panel.export() if path.name == "plan.json")

        return cls(case_dir, plan_file, **kwargs)

    def submit(self):
        """Score and store the current plan; show the score and the overlay. Returns the
        :class:`~workbench.teaching.score.PlanScore`, or None after an error (shown in the panel)."""
        import html

        from workbench.errors import WorkbenchError
        from workbench.teaching.submit import overlay_figure, submit_plan

        try:
            attempt_id, score = submit_plan(
                self.db, self.trainee.value.strip(), self.session.value.strip(), self.case_dir, self.plan_file(),
                check_safety=self.check_safety,
            )
        except WorkbenchError as exc:
            self.result.value = f"<span class='wb-submit-error' style='color:#b00'>{html.escape(exc.problem)}</span>"
            return None
        verdict = "passed" if score.passed else "not passed"
        findings = "".join(f"<li>{html.escape(line)}</li>" for line in score.findings)
        self.result.value = (
            f"<div class='wb-submit-score'><b>Score {score.score:.0f} / 100, {verdict}</b> (attempt {attempt_id})"
            f"<ul>{findings}</ul></div>"
        )
        self.overlay.value = figure_png(overlay_figure(score))
        self.overlay.layout.display = None
        self.last = score
        return score
