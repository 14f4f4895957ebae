"""Figures of a study as PNG bytes (matplotlib's Agg canvas, no pyplot, no GUI backend).

Static PNGs render the same in JupyterLab, Voila and a report; the notebook shows them in
``ipywidgets.Image``. Each function takes an optuna study (or the held-out comparison) and returns
``bytes`` of a PNG of ``width_in`` x ``height_in`` inches at ``dpi`` (default 6.4 x 3.6 in at
100 dpi: 640 x 360 px).
"""

from __future__ import annotations

import io

import numpy as np

__all__ = ["case_tre_png", "held_out_png", "history_png", "importance_png", "parallel_png"]

_SIZE = (6.4, 3.6)
_DPI = 100


def _figure(size=_SIZE):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=_DPI)
    FigureCanvasAgg(figure)
    return figure


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()


def _complete(study):
    import optuna

    return [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]


def _message(axes, text: str) -> None:
    axes.text(0.5, 0.5, text, ha="center", va="center", transform=axes.transAxes, fontsize=10, color="#555")


def history_png(study) -> bytes:
    """Optimisation history: each completed trial's value and the best so far."""
    figure = _figure()
    axes = figure.add_axes([0.1, 0.15, 0.85, 0.75])
    trials = _complete(study)
    if trials:
        numbers = np.array([t.number for t in trials])
        values = np.array([t.value for t in trials])
        axes.scatter(numbers, values, color="#4c78a8", s=28, label="trial", zorder=3)
        axes.step(numbers, np.minimum.accumulate(values), where="post", color="#e45756", lw=2, label="best so far")
        axes.legend(fontsize=8, loc="upper right")
    else:
        _message(axes, "no completed trial yet")
    axes.set_xlabel("trial")
    axes.set_ylabel("objective (mm, lower is better)")
    axes.set_title("optimisation history", fontsize=10)
    axes.grid(alpha=0.3)
    return _png(figure)


def importance_png(study) -> bytes:
    """Parameter importance (optuna's default evaluator, fANOVA) over the completed trials."""
    import optuna

    figure = _figure()
    axes = figure.add_axes([0.35, 0.15, 0.6, 0.75])
    trials = _complete(study)
    importances = {}
    if len(trials) >= 2:
        try:
            importances = optuna.importance.get_param_importances(study)
        except (RuntimeError, ValueError, ZeroDivisionError):
            importances = {}
    if importances:
        names = list(importances)[::-1]
        axes.barh(names, [importances[n] for n in names], color="#72b7b2")
        axes.set_xlim(0, 1)
        axes.tick_params(axis="y", labelsize=8)
    else:
        axes.set_yticks([])
        _message(axes, "importance needs 2+ completed trials\nwhose parameters differ")
    axes.set_xlabel("importance (fraction of the objective's variance)")
    axes.set_title("parameter importance", fontsize=10)
    return _png(figure)


def parallel_png(study) -> bytes:
    """Parallel coordinates: each trial a line through its parameters (scaled to their ranges), coloured by value."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    figure = _figure((6.4, 3.8))
    axes = figure.add_axes([0.08, 0.25, 0.78, 0.65])
    trials = [t for t in _complete(study) if t.params]
    names = sorted({name for t in trials for name in t.params})
    if not trials or not names:
        _message(axes, "no completed trial yet")
        axes.set_title("parallel coordinates", fontsize=10)
        return _png(figure)
    values = np.array([t.value for t in trials])
    norm = Normalize(vmin=float(values.min()), vmax=float(values.max()) if values.max() > values.min() else float(values.min()) + 1)
    cmap = colormaps["viridis"]  # low objective (better) = dark
    x = np.arange(len(names))
    for trial in sorted(trials, key=lambda t: -t.value):
        ys = []
        for name in names:
            dist = trial.distributions.get(name)
            value = trial.params.get(name)
            if value is None or dist is None:
                ys.append(np.nan)
            elif hasattr(dist, "choices"):
                ys.append(dist.choices.index(value) / max(1, len(dist.choices) - 1))
            elif getattr(dist, "log", False):
                ys.append((np.log(value) - np.log(dist.low)) / (np.log(dist.high) - np.log(dist.low)))
            else:
                ys.append((value - dist.low) / (dist.high - dist.low) if dist.high > dist.low else 0.5)
        axes.plot(x, ys, color=cmap(norm(trial.value)), lw=2, alpha=0.85, marker="o", ms=4)
    axes.set_xticks(x, [n.split(".", 1)[-1] for n in names], rotation=15, ha="center", fontsize=8)
    axes.set_ylim(-0.05, 1.05)
    axes.set_xlim(-0.3, len(names) - 0.7)
    axes.set_ylabel("position in range (low 0, high 1)", fontsize=8)
    axes.set_title("parallel coordinates (colour: objective, dark = better)", fontsize=10)
    axes.grid(alpha=0.3, axis="x")
    colour_axes = figure.add_axes([0.89, 0.25, 0.025, 0.65])
    from matplotlib.colorbar import ColorbarBase

    ColorbarBase(colour_axes, cmap=cmap, norm=norm)
    colour_axes.tick_params(labelsize=7)
    return _png(figure)


def case_tre_png(study) -> bytes:
    """Per case, the best trial's mean TRE over its starts and targets (mm), with the 3 mm success line."""
    figure = _figure()
    axes = figure.add_axes([0.1, 0.15, 0.85, 0.75])
    trials = _complete(study)
    if not trials:
        _message(axes, "no completed trial yet")
    else:
        best = min(trials, key=lambda t: t.value)
        per_case = best.user_attrs.get("figures", {}).get("case_tre_mm", {})
        labels = [f"case {k}" for k in per_case]
        heights = [v if v is not None else 0.0 for v in per_case.values()]
        colours = ["#4c78a8" if v is not None else "#e45756" for v in per_case.values()]
        axes.bar(labels, heights, color=colours)
        for index, value in enumerate(per_case.values()):
            axes.text(index, (value or 0.0), "failed" if value is None else f"{value:.2f}", ha="center", va="bottom", fontsize=8)
        axes.axhline(3.0, color="#e45756", ls="--", lw=1, label="success limit 3 mm")
        axes.legend(fontsize=8)
        axes.set_ylim(0, max(3.5, max(heights) * 1.2))
        axes.set_title(f"TRE per case of the best trial (#{best.number})", fontsize=10)
    axes.set_ylabel("mean TRE (mm)")
    return _png(figure)


def held_out_png(comparison: dict) -> bytes:
    """Held-out cases: per case, mean TRE of the default and the best setting (``compare_held_out``)."""
    figure = _figure()
    axes = figure.add_axes([0.1, 0.15, 0.85, 0.75])
    default = comparison["default"]["case_tre_mm"]
    best = comparison["best"]["case_tre_mm"]
    keys = list(default)
    x = np.arange(len(keys))
    axes.bar(x - 0.2, [default[k] or 0.0 for k in keys], 0.4, label="default", color="#9d9d9d")
    axes.bar(x + 0.2, [best[k] or 0.0 for k in keys], 0.4, label="best", color="#4c78a8")
    axes.set_xticks(x, [f"held-out case {k}" for k in keys])
    axes.axhline(3.0, color="#e45756", ls="--", lw=1)
    axes.set_ylabel("mean TRE (mm)")
    axes.legend(fontsize=8)
    axes.set_title("held-out cases: default vs best setting", fontsize=10)
    return _png(figure)
