"""Registration tuning panel: a thin ipywidgets controller over :mod:`workbench.tuning`.

Pick a pipeline (the methods of ``workbench bench registration``), tick the parameters to tune and
type their ranges (the search space and its declared ranges come from the registration parameter
dataclasses, :func:`workbench.tuning.space.method_parameters`), set trials and cases, and run an
Optuna study whose trials are scored on simulated cases by a Dask LocalCluster
(:func:`workbench.tuning.study.run_study`), stored in an SQLite file so that a rerun resumes. A
progress bar follows the completed trials. The plots are static PNGs
(:mod:`workbench.tuning.plots` drawn by matplotlib's Agg canvas, shown in ``ipywidgets.Image``), so
they render the same in JupyterLab and Voila: optimisation history, parameter importance, parallel
coordinates, per-case TRE of the best trial, and the best setting against the default on held-out
cases (:func:`workbench.tuning.study.compare_held_out`, never the tuned cases).
"""

from __future__ import annotations

import html
from pathlib import Path

from workbench.widgets.session import WidgetError

__all__ = ["TuningPanel", "PLOTS"]

#: The panel's plots, in display order: key -> title.
PLOTS = {
    "history": "optimisation history",
    "importance": "parameter importance",
    "parallel": "parallel coordinates",
    "case_tre": "TRE per case of the best trial",
    "held_out": "held-out cases: default vs best",
}


class TuningPanel:
    """Method, parameters and ranges, trials and cases, Run with a progress bar, plots and the held-out comparison.

    Parameters
    ----------
    method : str
        Initial pipeline (``workbench.registration.bench.METHODS``).
    storage : str or Path
        SQLite file of the studies (a rerun with the same settings resumes the study).
    trials, cases, starts : int
        Completed trials to reach, simulated cases, starts per case.
    spacing_mm : float
        Voxel size of the simulated cases (2 mm: seconds per case; 1 mm as the benchmark).
    workers : int
        LocalCluster worker processes.
    tuned : iterable of str, optional
        Parameters ticked at start (default: the first two of the method).

    Attributes
    ----------
    report : StudyReport or None
    comparison : dict or None
        Of the last :meth:`compare_held_out`.
    images : dict of str to ipywidgets.Image
        The plots (:data:`PLOTS`), class ``wb-tuning-plot``.
    widget : ipywidgets.VBox (class ``wb-tuning-panel``)
    """

    def __init__(self, method: str = "bone-icp", storage: str | Path = "tuning.db", trials: int = 4, cases: int = 1,
                 starts: int = 2, spacing_mm: float = 2.0, workers: int = 1, tuned=None):
        import ipywidgets as W

        from workbench.registration.bench import METHODS

        self.storage = f"sqlite:///{Path(storage).resolve()}" if not str(storage).startswith(("sqlite:", "postgresql")) else str(storage)
        self.workers = workers
        self.spacing_mm = spacing_mm
        self.report = None
        self.comparison = None
        self.method = W.Dropdown(options=sorted(METHODS), value=method, description="pipeline")
        self.trials = W.BoundedIntText(value=trials, min=1, max=500, description="trials")
        self.cases = W.BoundedIntText(value=cases, min=1, max=50, description="cases")
        self.starts = W.BoundedIntText(value=starts, min=1, max=20, description="starts/case")
        self.held_out_cases = W.BoundedIntText(value=1, min=1, max=20, description="held-out")
        self.parameter_box = W.VBox()
        self.run_button = W.Button(description="Run study", icon="play", button_style="primary")
        self.compare_button = W.Button(description="Compare on held-out cases", icon="balance-scale")
        self.progress = W.IntProgress(value=0, min=0, max=trials, description="trials")
        self.status = W.HTML()
        self.status.add_class("wb-tuning-status")
        self.images = {key: W.Image(format="png", layout=W.Layout(width="640px")) for key in PLOTS}
        for image in self.images.values():
            image.add_class("wb-tuning-plot")
        self.rows: dict = {}
        self._tuned = list(tuned) if tuned is not None else None
        self.method.observe(lambda _change: self._build_rows(), names="value")
        self.run_button.on_click(lambda _b: self._guarded(self.run))
        self.compare_button.on_click(lambda _b: self._guarded(self.compare_held_out))
        self._build_rows()
        plots = W.VBox([W.VBox([W.HTML(f"<b>{html.escape(title)}</b>"), self.images[key]]) for key, title in PLOTS.items()])
        self.widget = W.VBox([
            W.HBox([self.method, self.trials]), W.HBox([self.cases, self.starts]),
            W.HTML("<b>parameters</b> (tick to tune; range low .. high)"), self.parameter_box,
            W.HBox([self.run_button, self.progress]), W.HBox([self.compare_button, self.held_out_cases]),
            self.status, plots,
        ])
        self.widget.add_class("wb-tuning-panel")

    # -- parameters -------------------------------------------------------------------------------

    def _build_rows(self) -> None:
        import ipywidgets as W

        from workbench.tuning.space import method_parameters

        space = method_parameters(self.method.value)
        ticked = set(self._tuned if self._tuned is not None else list(space)[:2])
        self._tuned = None
        self.rows = {}
        for name, p in space.items():
            check = W.Checkbox(value=name in ticked, description=name, indent=False, layout=W.Layout(width="300px"))
            if p.kind == "bool":
                self.rows[name] = (check, None, None)
                continue
            low = W.FloatText(value=p.low, layout=W.Layout(width="90px"))
            high = W.FloatText(value=p.high, layout=W.Layout(width="90px"))
            self.rows[name] = (check, low, high)
        self.parameter_box.children = [W.HBox([w for w in row if w is not None]) for row in self.rows.values()]

    def set_range(self, name: str, low: float | None = None, high: float | None = None, tune: bool = True) -> None:
        """Tick (or untick) parameter ``name`` and set its range, as typing in the boxes does."""
        if name not in self.rows:
            raise WidgetError(f"{self.method.value} has no parameter {name!r}; choose from {', '.join(self.rows)}")
        check, low_box, high_box = self.rows[name]
        check.value = tune
        if low is not None and low_box is not None:
            low_box.value = low
        if high is not None and high_box is not None:
            high_box.value = high

    def parameters(self) -> list[str]:
        """The ticked parameters as ``"NAME=LOW:HIGH"`` (``"NAME"`` for a yes/no parameter)."""
        out = []
        for name, (check, low, high) in self.rows.items():
            if check.value:
                out.append(name if low is None else f"{name}={low.value!r}:{high.value!r}")
        if not out:
            raise WidgetError("tick at least one parameter to tune")
        return out

    def case_set(self):
        """The tuned cases (:class:`~workbench.tuning.cases.CaseSet`)."""
        from workbench.tuning.cases import CaseSet

        return CaseSet(cases=self.cases.value, starts=self.starts.value, spacing_mm=self.spacing_mm)

    def study_name(self) -> str:
        """One study per method, parameter set and case set (so a rerun with the same choices resumes)."""
        names = "+".join(sorted(p.split("=")[0].split(".", 1)[-1] for p in self.parameters()))
        return f"{self.method.value}:{names}:c{self.cases.value}s{self.starts.value}"

    # -- actions ------------------------------------------------------------------------------------

    def _guarded(self, action) -> None:
        from workbench.errors import WorkbenchError

        try:
            action()
        except WorkbenchError as exc:
            self.status.value = f"<span style='color:#b00'>{html.escape(str(exc))}</span>"

    def run(self):
        """Run (or resume) the study up to the chosen trial count; updates the progress bar and the plots."""
        from workbench.tuning.study import load_study, run_study

        parameters = self.parameters()
        self.progress.max = self.trials.value
        self.progress.value = 0
        self.status.value = "simulating the cases and starting the workers..."

        def on_trial(done: int, total: int, record: dict) -> None:
            self.progress.value = min(done, total)
            self.status.value = html.escape(f"trial {record['number']}: objective {record['value']:.3f} ({done}/{total})")

        self.report = run_study(self.method.value, self.case_set(), self.trials.value, parameters=parameters,
                                storage=self.storage, study_name=self.study_name(), workers=self.workers, on_trial=on_trial)
        self.progress.value = self.report.n_trials
        best = self.report.best_figures
        self.status.value = html.escape(
            f"{self.report.n_trials} trials; best objective {self.report.best_value:.3f}: median TRE "
            f"{best.get('median_tre_mm')} mm, success {best.get('success_rate', 0):.0%}"
        )
        self.draw(load_study(self.storage, self.report.study))
        return self.report

    def draw(self, study) -> None:
        """Redraw the study's plots."""
        from workbench.tuning import plots

        self.images["history"].value = plots.history_png(study)
        self.images["importance"].value = plots.importance_png(study)
        self.images["parallel"].value = plots.parallel_png(study)
        self.images["case_tre"].value = plots.case_tre_png(study)

    def compare_held_out(self) -> dict:
        """The best setting vs the defaults on held-out cases; fills the last plot."""
        from workbench.tuning import plots
        from workbench.tuning.study import compare_held_out

        if self.report is None or not self.report.best_params:
            raise WidgetError("run a study first: there is no best setting to compare yet")
        self.status.value = "simulating held-out cases..."
        self.comparison = compare_held_out(self.method.value, self.report.best_params, self.case_set(),
                                           self.held_out_cases.value, workers=self.workers)
        self.images["held_out"].value = plots.held_out_png(self.comparison)
        default, best = self.comparison["default"], self.comparison["best"]
        self.status.value = html.escape(
            f"held-out: default median TRE {default['median_tre_mm']} mm vs best {best['median_tre_mm']} mm"
        )
        return self.comparison
