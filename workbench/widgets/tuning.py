"""Registration tuning: a parameter grid run over simulated cases, table and plots of TRE, success, time.

:func:`run_grid` (no UI) runs bone-surface ICP through the registration pipeline
(:func:`workbench.registration.pipeline.run_registration_pipeline`, as the demo and the benchmark do)
for every combination of the chosen :class:`~workbench.registration.params.IcpParameters` values
from random misalignments of the ground-truth ``ReferenceToMri`` of simulated cases, and measures
the TRE at the nerve-root targets (mean distance, mm), success (TRE < 3 mm, as
``workbench bench registration``) and run time. Simulated cases: the demo case (cached) and, on
request, cases from :func:`workbench.registration.bench.simulate_registration_case` (about a
minute each). :class:`TuningPanel` is the ipywidgets controller.
"""

from __future__ import annotations

import dataclasses
import html
import itertools
import time
from typing import Callable

import numpy as np

from workbench.frames import Transform
from workbench.widgets.session import CaseSession, WidgetError

__all__ = ["TuningCase", "demo_tuning_case", "run_grid", "summarise", "TuningPanel", "DEFAULT_GRID"]

#: Small default grid (4 settings): runs in about a minute on the demo case with 2 trials.
DEFAULT_GRID = {"trim_fraction": (0.6, 0.8), "point_to_plane": (True, False)}


@dataclasses.dataclass
class TuningCase:
    """What one tuning case needs: bone points (Reference, Mri), true ReferenceToMri, targets (Mri), all mm."""

    name: str
    us_points_reference: np.ndarray
    mri_points: np.ndarray
    reference_to_mri: Transform
    targets_mri: np.ndarray


def demo_tuning_case(session: CaseSession, sweep: int = 0, max_points: int = 4000) -> TuningCase:
    """The demo case (synthetic, with ground truth) as a tuning case; US points subsampled to ``max_points``."""
    from workbench.registration.surface import mri_bone_points, us_bone_points

    truth = session.ground_truth()
    if truth is None:
        raise WidgetError("tuning needs a synthetic case with ground_truth.json", session.folder)
    points = us_bone_points(session.sweep(sweep), session.case.sweeps[sweep].image_to_probe)
    if len(points) > max_points:
        points = points[np.linspace(0, len(points) - 1, max_points).astype(int)]
    return TuningCase(
        name=session.case.case_id,
        us_points_reference=points,
        mri_points=mri_bone_points(session.label_map),
        reference_to_mri=truth.reference_to_mri,
        targets_mri=truth.target_points_mri,
    )


def simulated_tuning_case(seed: int, bmi: float = 27.0) -> TuningCase:
    """A freshly simulated case (:func:`workbench.registration.bench.simulate_registration_case`)."""
    from workbench.registration.bench import simulate_registration_case

    case = simulate_registration_case(seed, bmi)
    return TuningCase(f"simulated seed {seed}", case.us_points_reference, case.mri_points, case.reference_to_mri,
                      case.targets_mri)


def run_grid(cases: list[TuningCase], grid: dict | None = None, trials: int = 2, seed: int = 0,
             max_offset_mm: float = 10.0, max_rotation_deg: float = 8.0,
             on_row: Callable[[dict, int, int], None] | None = None) -> list[dict]:
    """Run ICP for every parameter combination, case and misalignment.

    Parameters
    ----------
    cases : list of TuningCase
    grid : dict of str to sequence
        ``IcpParameters`` field -> values (default :data:`DEFAULT_GRID`).
    trials : int
        Random misalignments per case (the same ones for every setting).
    max_offset_mm, max_rotation_deg : float
        Size of the misalignments (uniform up to these, about the targets' centroid).
    on_row : callable, optional
        ``on_row(row, done, total)`` after each run.

    Returns
    -------
    list of dict
        One row per run: the setting's values, ``case``, ``trial``, ``offset_mm``, ``tre_mm``
        (inf if the registration failed), ``success`` and ``time_s``.
    """
    from workbench.errors import RegistrationError
    from workbench.registration.bench import SUCCESS_TRE_MM, random_misalignment
    from workbench.registration.params import IcpParameters
    from workbench.registration.pipeline import RegistrationInputs, RegistrationSettings, run_registration_pipeline

    grid = dict(DEFAULT_GRID if grid is None else grid)
    names = list(grid)
    settings = [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]
    rng = np.random.default_rng([seed, 11])
    starts = []
    for case in cases:
        centre = case.reference_to_mri.inverse().apply_to_points(case.targets_mri.mean(axis=0))
        for trial in range(trials):
            motion, offset_mm, _ = random_misalignment(rng, centre, max_offset_mm, max_rotation_deg)
            starts.append((case, trial, offset_mm, Transform(case.reference_to_mri.matrix @ motion, "Reference", "Mri")))
    rows, total = [], len(settings) * len(starts)
    for setting in settings:
        icp = RegistrationSettings(("bone-icp",), icp=dataclasses.replace(IcpParameters(restart_offset_mm=0.0), **setting))
        for case, trial, offset_mm, initial in starts:
            start = time.perf_counter()
            try:
                inputs = RegistrationInputs(initial=initial, us_points_reference=case.us_points_reference, mri_points=case.mri_points)
                result = run_registration_pipeline(inputs, icp)
                truth_reference = case.reference_to_mri.inverse().apply_to_points(case.targets_mri)
                tre_mm = float(np.linalg.norm(result.transform.apply_to_points(truth_reference) - case.targets_mri, axis=1).mean())
            except RegistrationError:
                tre_mm = float("inf")
            row = {**setting, "case": case.name, "trial": trial, "offset_mm": float(offset_mm), "tre_mm": tre_mm,
                   "success": bool(tre_mm < SUCCESS_TRE_MM), "time_s": time.perf_counter() - start}
            rows.append(row)
            if on_row is not None:
                on_row(row, len(rows), total)
    return rows


def summarise(rows: list[dict], grid_names: list[str]) -> list[dict]:
    """Per setting: median and 90th percentile TRE (mm), success rate, median time (s), runs."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[n] for n in grid_names), []).append(row)
    out = []
    for key, group in groups.items():
        tre = np.array([r["tre_mm"] for r in group])
        out.append({**dict(zip(grid_names, key)),
                    "median_tre_mm": float(np.median(tre)), "p90_tre_mm": float(np.percentile(tre, 90)),
                    "success_rate": float(np.mean([r["success"] for r in group])),
                    "median_time_s": float(np.median([r["time_s"] for r in group])), "runs": len(group)})
    return out


class TuningPanel:
    """Grid values as text boxes, trials, a Run button with progress, the summary table and plots.

    Parameters
    ----------
    cases : list of TuningCase

    Attributes
    ----------
    rows, summary : list of dict
        Results of the last run.
    widget : ipywidgets.VBox (class ``wb-tuning-panel``)
    """

    def __init__(self, cases: list[TuningCase], grid: dict | None = None, trials: int = 2):
        import ipywidgets as W

        from workbench.widgets._ui import new_canvas

        self.cases = cases
        grid = dict(DEFAULT_GRID if grid is None else grid)
        self.grid_boxes = {name: W.Text(value=", ".join(str(v) for v in values), description=name,
                                        style={"description_width": "140px"}) for name, values in grid.items()}
        self.trials = W.IntSlider(value=trials, min=1, max=10, description="trials/case")
        self.run_button = W.Button(description="Run grid", icon="play", button_style="primary")
        self.progress = W.IntProgress(value=0, min=0, max=1, description="runs")
        self.table = W.HTML()
        self.figure, self.canvas = new_canvas(9.0, 2.8)
        self.axes = [self.figure.add_axes([0.06 + 0.33 * i, 0.3, 0.26, 0.6]) for i in range(3)]
        self.rows, self.summary = [], []
        self.run_button.on_click(lambda _b: self.run())
        self.widget = W.VBox([W.HTML(f"<b>{len(cases)} case(s)</b>: " + html.escape(", ".join(c.name for c in cases))),
                              *self.grid_boxes.values(), self.trials, W.HBox([self.run_button, self.progress]),
                              self.table, self.canvas])
        self.widget.add_class("wb-tuning-panel")

    def grid(self) -> dict:
        """The grid typed in the boxes (numbers, or True/False)."""
        out = {}
        for name, box in self.grid_boxes.items():
            values = []
            for text in (t.strip() for t in box.value.split(",") if t.strip()):
                if text in ("True", "False"):
                    values.append(text == "True")
                else:
                    try:
                        values.append(int(text) if text.lstrip("-").isdigit() else float(text))
                    except ValueError:
                        raise WidgetError(f"{name}: {text!r} is not a number or True/False") from None
            out[name] = tuple(values)
        return out

    def run(self) -> list[dict]:
        """Run the grid; fills the table and plots; returns the summary."""
        from workbench.widgets._ui import table_html

        grid = self.grid()
        settings = int(np.prod([len(v) for v in grid.values()]))
        self.progress.max = max(1, settings * len(self.cases) * self.trials.value)
        self.progress.value = 0
        self.rows = run_grid(self.cases, grid, self.trials.value,
                             on_row=lambda _r, done, _t: setattr(self.progress, "value", done))
        self.summary = summarise(self.rows, list(grid))
        self.table.value = table_html(self.summary)
        labels = [", ".join(f"{n}={row[n]}" for n in grid) for row in self.summary]
        x = np.arange(len(self.summary))
        for axes, key, title in zip(self.axes, ("median_tre_mm", "success_rate", "median_time_s"),
                                    ("median TRE (mm)", "success rate", "median time (s)")):
            axes.clear()
            axes.bar(x, [row[key] for row in self.summary], color="#4c78a8")
            axes.set_title(title, fontsize=8)
            axes.set_xticks(x, labels, rotation=30, ha="right", fontsize=6)
            axes.tick_params(axis="y", labelsize=7)
        self.canvas.draw()
        return self.summary
