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

__all__ = ["METRICS", "REHEARSAL_ONLY", "ClassView"]

#: Metrics of the distributions: column -> axis label (short: four plots side by side).
METRICS = {
    "score": "score (0-100)",
    "angle_deviation_deg": "angle to the expert's (deg)",
    "offset_at_entry_mm": "offset at the entry (mm)",
    "offset_at_target_mm": "offset at the target (mm)",
    "tip_to_target_mm": "rehearsal: tip to target (mm)",
}
#: Metrics of rehearsal attempts only (read from the attempt's metrics; plotted when there are some).
REHEARSAL_ONLY = ("tip_to_target_mm",)


def _median(values) -> float | None:
    present = [float(v) for v in values if v is not None]
    return round(float(np.median(present)), 1) if present else None


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
        """Per trainee: ``attempts``, ``rehearsals`` (of them rehearsal attempts), ``cases``
        (distinct), ``mean_score``, ``best_score``, ``last_score``, ``pass_rate`` (0..1),
        ``wrong_level`` (count), ``median_offset_mm`` (of the plans; None without one)."""
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
                    "rehearsals": sum(r.get("kind") == "rehearsal" for r in rows),
                    "cases": len({r["case_id"] for r in rows}),
                    "mean_score": round(float(scores.mean()), 1),
                    "best_score": round(float(scores.max()), 1),
                    "last_score": round(float(scores[-1]), 1),
                    "pass_rate": round(float(np.mean([r["passed"] for r in rows])), 3),
                    "wrong_level": int(sum(bool(r["wrong_level"]) for r in rows)),
                    "median_offset_mm": _median([r["offset_mm"] for r in rows]),
                }
            )
        return table

    def distribution(self, metric: str) -> np.ndarray:
        """(N,) values of ``metric`` (a key of :data:`METRICS`) over the attempts that have it
        (plan geometry: plans; :data:`REHEARSAL_ONLY`: rehearsal attempts, from their metrics)."""
        if metric not in METRICS:
            raise TeachingError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
        values = [r.get(metric) if metric in r else (r.get("metrics") or {}).get("rehearsal_metrics", {}).get(metric)
                  for r in self.rows]
        return np.array([float(v) for v in values if v is not None], dtype=float)

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

    def figure(self, kind: str, width_in: float = 9.3, height_in: float = 3.0, dpi: int = 100):
        """A matplotlib Figure (Agg canvas): ``"distributions"`` (a histogram per metric of
        :data:`METRICS`) or ``"learning"`` (score per attempt, one line per trainee, the pass
        line at 50 = the z threshold's sub-score)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=(width_in, height_in), dpi=dpi)
        FigureCanvasAgg(figure)
        if kind == "distributions":
            shown = {m: label for m, label in METRICS.items() if m not in REHEARSAL_ONLY or self.distribution(m).size}
            axes = figure.subplots(1, len(shown))
            for ax, (metric, label) in zip(axes, shown.items()):
                values = self.distribution(metric)
                if values.size:
                    ax.hist(values, bins=min(10, max(3, values.size)), color="#4c72b0")
                ax.set_xlabel(label, fontsize=8)
                ax.tick_params(labelsize=7)
            axes[0].set_ylabel("attempts", fontsize=8)
        elif kind == "learning":
            ax = figure.subplots()
            kinds = defaultdict(list)
            for row in self.rows:
                kinds[row["trainee"]].append(row.get("kind", "plan"))
            for trainee, curve in self.learning_curves().items():
                attempts, scores = zip(*curve)
                (line,) = ax.plot(attempts, scores, marker="o", label=trainee)
                rehearsed = [(a, s) for (a, s), kind in zip(curve, kinds[trainee]) if kind == "rehearsal"]
                if rehearsed:  # rehearsal attempts: squares on the same curve
                    ax.plot(*zip(*rehearsed), linestyle="none", marker="s", markersize=9, color=line.get_color(),
                            markerfacecolor="none")
            if any(r.get("kind") == "rehearsal" for r in self.rows):  # a legend entry for the squares
                ax.plot([], [], linestyle="none", marker="s", markersize=9, color="grey", markerfacecolor="none",
                        label="rehearsal")
            ax.axhline(50.0, color="grey", linestyle=":", linewidth=1)
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # attempts are whole numbers
            ax.set_xlabel("attempt", fontsize=8)
            ax.set_ylabel("score", fontsize=8)
            ax.set_ylim(0, 105)
            if self.rows:
                ax.legend(fontsize=7, loc="lower right")
        else:
            raise TeachingError(f"unknown figure {kind!r}: use 'distributions' or 'learning'")
        figure.tight_layout()
        return figure
