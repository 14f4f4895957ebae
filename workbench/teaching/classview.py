"""The teacher's view as data: class table, metric distributions, learning curves, problem cases.

:class:`ClassView` reads the rows of :meth:`workbench.teaching.store.ResultsStore.results`
(one per attempt) and answers what a teacher asks after a session; :meth:`ClassView.figure`
draws the plots as matplotlib figures (Agg; no UI toolkit here), which the widget
(:mod:`workbench.widgets.teacher`) and the notebook show as static PNGs.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from workbench.teaching import TeachingError

__all__ = ["METRICS", "ClassView"]

#: Metrics of the distributions: column -> axis label.
METRICS = {
    "score": "score (0-100)",
    "angle_deviation_deg": "angle deviation from the expert (deg)",
    "offset_at_entry_mm": "offset from the expert line at the entry (mm)",
    "offset_at_target_mm": "offset from the expert line at the target (mm)",
}


@dataclass(frozen=True)
class ClassView:
    """Attempts of a class (rows of :meth:`~workbench.teaching.store.ResultsStore.results`, oldest first)."""

    rows: tuple[dict, ...]

    @classmethod
    def from_store(cls, store, session: str | None = None) -> "ClassView":
        return cls(tuple(store.results(session)))

    @property
    def trainees(self) -> list[str]:
        return sorted({r["trainee"] for r in self.rows})

    @property
    def sessions(self) -> list[str]:
        return sorted({r["session"] for r in self.rows})

    def class_table(self) -> list[dict]:
        """Per trainee: ``attempts``, ``cases`` (distinct), ``mean_score``, ``best_score``,
        ``last_score``, ``pass_rate`` (0..1), ``wrong_level`` (count), ``median_offset_mm``."""
        by_trainee = defaultdict(list)
        for row in self.rows:
            by_trainee[row["trainee"]].append(row)
        table = []
        for trainee in sorted(by_trainee):
            rows = by_trainee[trainee]
            scores = np.array([r["score"] for r in rows], dtype=float)
            table.append(
                {
                    "trainee": trainee,
                    "attempts": len(rows),
                    "cases": len({r["case_id"] for r in rows}),
                    "mean_score": round(float(scores.mean()), 1),
                    "best_score": round(float(scores.max()), 1),
                    "last_score": round(float(scores[-1]), 1),
                    "pass_rate": round(float(np.mean([r["passed"] for r in rows])), 3),
                    "wrong_level": int(sum(bool(r["wrong_level"]) for r in rows)),
                    "median_offset_mm": round(float(np.median([r["offset_mm"] for r in rows])), 1),
                }
            )
        return table

    def distribution(self, metric: str) -> np.ndarray:
        """(N,) values of ``metric`` (a key of :data:`METRICS`) over all attempts."""
        if metric not in METRICS:
            raise TeachingError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
        return np.array([float(r[metric]) for r in self.rows], dtype=float)

    def learning_curves(self) -> dict[str, list[tuple[int, float]]]:
        """Per trainee, ``(attempt number from 1, score)`` in submission order."""
        curves: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for row in self.rows:
            curve = curves[row["trainee"]]
            curve.append((len(curve) + 1, float(row["score"])))
        return dict(sorted(curves.items()))

    def problem_cases(self) -> list[dict]:
        """Per case, most errors first: ``case_id``, ``attempts``, ``failed`` (not passed),
        ``wrong_level``, ``failure_rate`` (0..1), ``mean_score``; sorted by failure rate, then
        wrong levels, then mean score (lowest first)."""
        by_case = defaultdict(list)
        for row in self.rows:
            by_case[row["case_id"]].append(row)
        out = []
        for case_id, rows in by_case.items():
            failed = sum(not r["passed"] for r in rows)
            out.append(
                {
                    "case_id": case_id,
                    "attempts": len(rows),
                    "failed": failed,
                    "wrong_level": sum(bool(r["wrong_level"]) for r in rows),
                    "failure_rate": round(failed / len(rows), 3),
                    "mean_score": round(float(np.mean([r["score"] for r in rows])), 1),
                }
            )
        return sorted(out, key=lambda c: (-c["failure_rate"], -c["wrong_level"], c["mean_score"], c["case_id"]))

    def to_csv(self) -> str:
        """Every attempt as CSV (:func:`workbench.teaching.store.results_to_csv`)."""
        from workbench.teaching.store import results_to_csv

        return results_to_csv(list(self.rows))

    def figure(self, kind: str, width_in: float = 8.0, height_in: float = 3.2, dpi: int = 90):
        """A matplotlib Figure (Agg canvas): ``"distributions"`` (a histogram per metric of
        :data:`METRICS`) or ``"learning"`` (score per attempt, one line per trainee, the pass
        line at 50 = the z threshold's sub-score)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=(width_in, height_in), dpi=dpi)
        FigureCanvasAgg(figure)
        if kind == "distributions":
            axes = figure.subplots(1, len(METRICS))
            for ax, (metric, label) in zip(axes, METRICS.items()):
                values = self.distribution(metric)
                if values.size:
                    ax.hist(values, bins=min(10, max(3, values.size)), color="#4c72b0")
                ax.set_title(label, fontsize=7)
                ax.tick_params(labelsize=7)
        elif kind == "learning":
            ax = figure.subplots()
            for trainee, curve in self.learning_curves().items():
                attempts, scores = zip(*curve)
                ax.plot(attempts, scores, marker="o", label=trainee)
            ax.axhline(50.0, color="grey", linestyle=":", linewidth=1)
            ax.set_xlabel("attempt", fontsize=8)
            ax.set_ylabel("score", fontsize=8)
            ax.set_ylim(0, 105)
            if self.rows:
                ax.legend(fontsize=7, loc="lower right")
        else:
            raise TeachingError(f"unknown figure {kind!r}: use 'distributions' or 'learning'")
        figure.tight_layout()
        return figure
