"""The teacher's view: a thin ipywidgets controller over :class:`workbench.teaching.classview.ClassView`.

It shows, for the results database of a teaching session (SQLite file beside the library or a
PostgreSQL URL): the class table, the cases that caused most errors, per-metric distributions and
each trainee's learning curve as static PNGs (matplotlib Agg into ``ipywidgets.Image``: ipympl
canvases can render as 8 x 6 px images in Voila), a Refresh button (new submissions) and an
Export CSV button whose download link works in JupyterLab and in the Voila app. All the
numbers come from the model; nothing is computed here.

:class:`SubmitPanel` is the trainee's side (pseudonym, Submit; then the score and the expert's
plan drawn over the trainee's on the MRI). In the teaching app (``workbench teach --library``)
both find the session's results database and session id in the environment
(``RESULTS_DB_ENV``, ``SESSION_ENV`` of :mod:`workbench.widgets.session`); the teacher's page is
``workbench/teach_data/teacher_view.ipynb``.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from workbench.teaching.classview import ClassView
from workbench.teaching.store import open_store
from workbench.widgets._plots import figure_png
from workbench.widgets._ui import table_html
from workbench.widgets.session import LIBRARY_ENV, RESULTS_DB_ENV, SESSION_ENV

__all__ = [
    "SubmitPanel",
    "TeacherView",
    "app_results_db",
    "app_session",
    "comparison_figure",
]

#: Colours of the comparison picture (RGB): the trainee's path as on the plan page, the expert's.
YOURS_RGB = (0, 220, 255)
EXPERT_RGB = (255, 0, 220)


def app_results_db(case_dir=None):
    """The results database of this page: ``$WORKBENCH_RESULTS_DB``, else ``results.sqlite`` of the
    library holding ``case_dir`` (or of ``$WORKBENCH_LIBRARY``).

    Raises
    ------
    TeachingError
        Neither is known.
    """
    from workbench.teaching import TeachingError
    from workbench.teaching.store import DEFAULT_DB_NAME
    from workbench.teaching.submit import default_db

    if os.environ.get(RESULTS_DB_ENV):
        return os.environ[RESULTS_DB_ENV]
    if case_dir is not None:
        return default_db(case_dir)
    if os.environ.get(LIBRARY_ENV):
        return Path(os.environ[LIBRARY_ENV]) / DEFAULT_DB_NAME
    raise TeachingError(f"no results database: set ${RESULTS_DB_ENV} or open a library case")


def app_session() -> str:
    """The teaching session id of this page: ``$WORKBENCH_TEACHING_SESSION``, else today's UTC date."""
    return os.environ.get(SESSION_ENV) or datetime.now(timezone.utc).strftime("%Y-%m-%d")


#: Column headers of the teacher's tables (the model's keys carry the units).
_HEADERS = {
    "trainee": "trainee", "attempts": "attempts", "cases": "cases", "mean_score": "mean score",
    "best_score": "best", "last_score": "last", "pass_rate": "pass rate", "wrong_level": "wrong level",
    "median_offset_mm": "median offset (mm)", "case_id": "case", "failed": "failed", "failure_rate": "failure rate",
}


def _labelled(row: dict) -> dict:
    return {_HEADERS.get(key, key.replace("_", " ")): value for key, value in row.items()}


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
        self.status.add_class("wb-teacher-status")
        self.sessions = W.Dropdown(description="Session", options=[("all sessions", "")], value="")
        self.sessions.observe(self._on_session, names="value")
        self.table = W.HTML()
        self.table.add_class("wb-teacher-class")
        self.cases = W.HTML()
        self.cases.add_class("wb-teacher-cases")
        self.link = W.HTML()
        self.link.add_class("wb-teacher-csv")
        size = {"width": "930px", "height": "300px"}
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
                W.HBox([self.sessions, refresh, export]),
                self.status,
                self.link,
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
        self._updating = False
        self.view = ClassView(())
        self.refresh()

    def _on_session(self, change) -> None:
        if not self._updating:
            self.session = change["new"] or None
            self.refresh()

    def refresh(self) -> ClassView:
        """Read the database again and redraw everything."""
        import html

        with open_store(self.db) as store:
            everything = ClassView.from_store(store)
        sessions = everything.sessions
        if self.session is not None and self.session not in sessions:
            sessions = sorted(sessions + [self.session])
        self._updating = True
        try:
            self.sessions.options = [("all sessions", "")] + [(name, name) for name in sessions]
            self.sessions.value = self.session or ""
        finally:
            self._updating = False
        self.view = ClassView(tuple(r for r in everything.rows if self.session is None or r["session"] == self.session))
        view = self.view
        self.status.value = html.escape(
            f"{len(view.rows)} attempts by {len(view.trainees)} trainees"
            + (f" in session {self.session}" if self.session else f" in {len(view.sessions)} session(s)")
        )
        self.link.value = ""
        self.table.value = table_html([_labelled(row) for row in view.class_table()])
        self.cases.value = table_html([_labelled(row) for row in view.problem_cases()])
        self.distributions.value = figure_png(view.figure("distributions"))
        self.learning.value = figure_png(view.figure("learning"))
        return view

    def export_csv(self, path: str | Path | None = None) -> Path:
        """Write every attempt shown to ``path`` (default ``results-<session>-<UTC time>.csv`` in
        ``export_dir``) and show a download link to it (through Voila's file handler in the app)."""
        import html

        from workbench._atomic import atomic_write_text
        from workbench.widgets.plan import export_href

        if path is None:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
            path = self.export_dir / f"results-{self.session or 'all'}-{stamp}.csv"
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, self.view.to_csv())
        self.link.value = (
            f"<a href='{html.escape(export_href(path))}' download='{html.escape(path.name)}' target='_blank'>"
            f"Download {html.escape(path.name)}</a> <small>({len(self.view.rows)} attempts, one row each)</small>"
        )
        return path


def _comparison_views(model, score) -> list[dict]:
    """Two MRI views of both plans (LPS mm in, pixels out): the expert's needle plane (the expert
    path lies in it, the trainee's is projected onto it) and the axial slice through the expert's
    target. Each: ``title``, ``grey`` (N, N) uint8, ``pixel_mm``, ``letters``, and the ``(col, row)``
    pixels of ``yours`` and ``expert`` (entry, target)."""
    from workbench.widgets.path_view import PIXEL_MM, needle_plane_axes
    from workbench.widgets.slices import direction_letters, window_to_uint8

    expert = np.array([score.expert_entry_lps_mm, score.expert_target_lps_mm], dtype=float)
    yours = np.array([score.trainee_entry_lps_mm, score.trainee_target_lps_mm], dtype=float)
    everything = np.vstack([expert, yours])
    axial_in_plane = everything.copy()
    axial_in_plane[:, 2] = expert[1, 2]
    planes = [
        ("MRI, the expert's needle plane", *needle_plane_axes(expert[0], expert[1]), everything),
        ("MRI, axial through the target", np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]), axial_in_plane),
    ]
    views = []
    for title, columns, rows, points in planes:
        centre = points.mean(axis=0)
        spread = np.abs(np.stack([(points - centre) @ columns, (points - centre) @ rows])).max()
        half = max(60.0, float(spread) + 20.0)
        values = model.sample_plane(centre, columns, rows, half)
        grey = window_to_uint8(np.nan_to_num(values, nan=model.level - model.window), model.window, model.level)
        views.append({
            "title": title, "grey": grey, "pixel_mm": PIXEL_MM,
            "letters": {"left": direction_letters(-columns), "right": direction_letters(columns),
                        "top": direction_letters(-rows), "bottom": direction_letters(rows)},
            "yours": model.project(yours, centre, columns, rows, half),
            "expert": model.project(expert, centre, columns, rows, half),
        })
    return views


def comparison_figure(mri, score, width_in: float = 9.3, height_in: float = 4.6, dpi: int = 100, model=None):
    """The trainee's needle path (cyan) and the expert's (magenta) drawn on the case's MRI, after
    submitting: the expert's needle plane and the axial slice through the target, with orientation
    letters, a 20 mm scale bar and the headline figures. Agg Figure.

    Parameters
    ----------
    mri : LoadedVolume or SimpleITK.Image
        The case's planning MRI (LPS mm).
    score : workbench.teaching.score.PlanScore
        Carries both plans' entry and target (LPS mm).
    model : PathViewModel, optional
        The MRI prepared for resampling (built from ``mri`` when not given; reuse it across calls).

    Returns
    -------
    figure : matplotlib.figure.Figure
        ``figure.wb_views`` lists per view the figure pixels (x right, y down) of each plan's
        entry and target (``yours_px``, ``expert_px``) and ``figure_px_per_mm``, for checks.
    """
    from matplotlib import patheffects
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from workbench.widgets.path_view import PathViewModel

    views = _comparison_views(model if model is not None else PathViewModel(mri), score)
    figure = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(figure)
    outline = [patheffects.withStroke(linewidth=3, foreground="black")]
    placed = []
    for index, view in enumerate(views):
        axes = figure.add_axes([index / 2 + 0.005, 0.02, 0.49, 0.80])
        axes.set_xticks([])
        axes.set_yticks([])
        axes.set_title(view["title"], fontsize=10, fontweight="bold", loc="left")
        size = view["grey"].shape[0]
        axes.imshow(view["grey"], cmap="gray", vmin=0, vmax=255, interpolation="bilinear",
                    extent=(-0.5, size - 0.5, size - 0.5, -0.5))
        axes.set_xlim(-0.5, size - 0.5)
        axes.set_ylim(size - 0.5, -0.5)
        # the expert's line wider and below: where the two nearly coincide it still shows at the sides
        for key, rgb, label, width in (("expert", EXPERT_RGB, "expert", 5.0), ("yours", YOURS_RGB, "yours", 2.0)):
            colour = np.array(rgb) / 255.0
            points = view[key]
            axes.plot(points[:, 0], points[:, 1], color=colour, linewidth=width, solid_capstyle="round", label=label)
            axes.plot(*points[0], marker="o", markersize=6, color=colour, markeredgecolor="black")
            axes.plot(*points[1], marker="o", markersize=10, markerfacecolor="none", markeredgecolor=colour, markeredgewidth=2)
        for side, (x, y, ha, va) in {"left": (0.02, 0.5, "left", "center"), "right": (0.98, 0.5, "right", "center"),
                                     "top": (0.5, 0.98, "center", "top"), "bottom": (0.5, 0.1, "center", "bottom")}.items():
            axes.text(x, y, view["letters"][side], transform=axes.transAxes, ha=ha, va=va, color="#ffe066",
                      fontsize=11, fontweight="bold", path_effects=outline)
        bar_px = 20.0 / view["pixel_mm"]
        x0, y0 = 0.95 * size - bar_px, 0.94 * size
        axes.plot([x0, x0 + bar_px], [y0, y0], color="white", linewidth=3, path_effects=outline)
        axes.text(x0 + bar_px / 2, y0 - 0.02 * size, "20 mm", ha="center", va="bottom", color="white", fontsize=8,
                  path_effects=outline)
        axes.legend(loc="upper left", fontsize=8, framealpha=0.8)
        placed.append((axes, view))
    m = score.metrics
    figure.suptitle(
        f"Score {score.score:.0f} / 100 ({'passed' if score.passed else 'not passed'}): angle {m['angle_deviation_deg']:.1f} deg, "
        f"offset at the entry {m['offset_at_entry_mm']:.1f} mm, at the target {m['offset_at_target_mm']:.1f} mm",
        fontsize=10, x=0.01, ha="left",
    )
    figure.canvas.draw()
    height_px = figure.bbox.height
    figure.wb_views = []
    for axes, view in placed:
        scale = axes.transData.transform([[1.0, 0.0]])[0, 0] - axes.transData.transform([[0.0, 0.0]])[0, 0]
        entry = {"title": view["title"], "figure_px_per_mm": round(float(scale / view["pixel_mm"]), 4)}
        for key in ("yours", "expert"):
            xy = axes.transData.transform(np.asarray(view[key], float))
            entry[f"{key}_px"] = [[round(float(x), 2), round(float(height_px - y), 2)] for x, y in xy]
        figure.wb_views.append(entry)
    return figure


class SubmitPanel:
    """The trainee's submit box: the task, a pseudonym, the session, Submit; then the score, the
    findings and the expert's plan drawn over the trainee's on the case's MRI.

    Parameters
    ----------
    case_dir : str or Path
        A library case (its expert plans are in ``ground_truth.json``).
    plan_file : callable () -> Path
        Writes the trainee's current plan and returns its ``plan.json`` (the plan page's export).
    db : str or Path, optional
        Results database (default :func:`app_results_db`: ``$WORKBENCH_RESULTS_DB``, else
        ``results.sqlite`` beside the library).
    session : str, optional
        Preset teaching session id (editable; default :func:`app_session`).
    check_safety : bool
    mri : LoadedVolume or SimpleITK.Image, optional
        The case's MRI for the comparison picture (default: read from the case when first needed).

    Attributes
    ----------
    widget : ipywidgets.VBox (class ``wb-submit-panel``)
    last : PlanScore or None
    last_views : list of dict
        Figure pixels of both plans in the comparison picture (:func:`comparison_figure`).
    """

    def __init__(self, case_dir, plan_file, db=None, session: str | None = None, check_safety: bool = True, mri=None):
        import html

        import ipywidgets as W

        from workbench.teaching.library import library_case_for

        self.case_dir, self.plan_file, self.check_safety, self._mri = Path(case_dir), plan_file, check_safety, mri
        self.db = db if db is not None else app_results_db(case_dir)
        entry = library_case_for(self.case_dir)
        task = (f"<b>Your task:</b> {html.escape(entry.task)} (difficulty {entry.difficulty:.1f} of 5, "
                f"{html.escape(entry.difficulty_label)})") if entry is not None else ""
        self.task = W.HTML(task)
        self.trainee = W.Text(description="Trainee id", placeholder="pseudonym, e.g. t07")
        self.session = W.Text(description="Session", value=session if session is not None else app_session())
        self.button = W.Button(description="Submit plan", button_style="primary", icon="paper-plane")
        from workbench.widgets._ui import full_label

        full_label(self.button)
        self.trainee.add_class("wb-submit-trainee")
        self.button.add_class("wb-submit-button")
        self.result = W.HTML()
        self.result.add_class("wb-submit-result")
        self.overlay = W.Image(format="png", layout=W.Layout(width="930px", height="460px", min_width="930px", min_height="460px"))
        self.overlay.add_class("wb-submit-overlay")
        self.overlay.layout.display = "none"
        self.button.on_click(lambda _: self.submit())
        self.widget = W.VBox([self.task, W.HBox([self.trainee, self.session, self.button]), self.result, self.overlay])
        self.widget.add_class("wb-submit-panel")
        self.last = None
        self.last_views: list[dict] = []
        self._view_model = None

    @classmethod
    def for_plan_panel(cls, case_dir, plan_panel, **kwargs) -> "SubmitPanel":
        """A panel that submits what a plan page's :class:`~workbench.widgets.plan.PlanPanel` shows:
        Submit first exports it (``plan_panel.export()``, links included) and scores its ``plan.json``.
        ``kwargs`` as for the constructor (``db``, ``session``, ``check_safety``); the MRI is the panel's."""

        def plan_file() -> Path:
            return next(path for path in plan_panel.export() if path.name == "plan.json")

        session = getattr(getattr(plan_panel, "model", None), "session", None)
        if session is not None:
            kwargs.setdefault("mri", session.mri)  # loaded once by the page already
        return cls(case_dir, plan_file, **kwargs)

    @property
    def mri(self):
        if self._mri is None:
            from workbench.widgets.session import CaseSession

            self._mri = CaseSession(self.case_dir).mri
        return self._mri

    def submit(self):
        """Score and store the current plan; show the score and the comparison picture. Returns the
        :class:`~workbench.teaching.score.PlanScore`, or None after an error (shown in the panel)."""
        import html

        from workbench.errors import WorkbenchError
        from workbench.teaching.submit import submit_plan

        self.button.disabled = True
        self.result.value = "<i>Scoring your plan against the expert's…</i>"
        try:
            attempt_id, score = submit_plan(
                self.db, self.trainee.value.strip(), self.session.value.strip(), self.case_dir, self.plan_file(),
                check_safety=self.check_safety,
            )
        except WorkbenchError as exc:
            self.result.value = f"<span class='wb-submit-error' style='color:#b00'>{html.escape(exc.problem)}</span>"
            return None
        finally:
            self.button.disabled = False
        verdict = "passed" if score.passed else "not passed"
        findings = "".join(f"<li>{html.escape(line)}</li>" for line in score.findings)
        if self._view_model is None:
            from workbench.widgets.path_view import PathViewModel

            self._view_model = PathViewModel(self.mri)
        figure = comparison_figure(self.mri, score, model=self._view_model)
        self.last_views = figure.wb_views
        self.overlay.value = figure_png(figure)
        self.overlay.layout.display = None
        self.result.value = (
            f"<div class='wb-submit-score' data-attempt='{attempt_id}' data-score='{score.score:.2f}'>"
            f"<b>{html.escape(self.trainee.value.strip())}: Score {score.score:.0f} / 100, {verdict}</b>"
            f"<ul>{findings}</ul><small>Cyan: your plan. Magenta: the expert's.</small></div>"
        )
        self.last = score
        return score
