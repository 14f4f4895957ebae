"""Registration: paired-point fit, then automatic refinement with live progress.

:class:`RegistrationRunner` (no UI) gathers a case's inputs and runs the registration pipeline
(:func:`workbench.registration.pipeline.run_registration_pipeline`, the same one as ``workbench
demo`` and the benchmark): the landmark fit, then a refinement: bone-surface ICP, whose metric is
reported after every distance stage so it can be plotted as it goes, or LC2 / Mattes MI on a
reconstruction of the sweep.
:class:`RegistrationPanel` is the ipywidgets controller: parameters as widgets built from the
parameter dataclasses, a metric-per-iteration plot (ipympl) and a progress bar.
Every result is ``ReferenceToMri`` (docs/frames.md).
"""

from __future__ import annotations

import dataclasses
import html
from typing import Callable

import numpy as np

from workbench.frames import Transform
from workbench.widgets.session import CaseSession, WidgetError, landmark_registration

__all__ = ["METHODS", "RegistrationRunner", "RegistrationPanel", "params_from_values", "param_fields"]

METHODS = ("bone-icp", "lc2", "mattes-mi")


def _params_class(method: str):
    from workbench.registration.params import IcpParameters, Lc2Parameters, MattesParameters

    return {"bone-icp": IcpParameters, "lc2": Lc2Parameters, "mattes-mi": MattesParameters}[method]


def param_fields(params_class) -> list[tuple[str, type, object]]:
    """(name, type, default) of a parameters dataclass's fields, for building widgets."""
    out = []
    for field in dataclasses.fields(params_class):
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        out.append((field.name, type(default), default))
    return out


def params_from_values(params_class, values: dict):
    """Build a parameters dataclass from widget values (tuples may come as ``"20, 10, 5"`` text).

    Raises
    ------
    WidgetError
        A value that is not a number, or one the dataclass refuses (its message is kept).
    """
    converted = {}
    for name, _kind, default in param_fields(params_class):
        if name not in values:
            continue
        value = values[name]
        if isinstance(default, tuple) and isinstance(value, str):
            try:
                value = tuple(float(v) for v in value.replace(";", ",").split(",") if v.strip())
            except ValueError:
                raise WidgetError(f"{name}: numbers separated by commas, got {value!r}") from None
        converted[name] = value
    try:
        return dataclasses.replace(params_class(), **converted)
    except Exception as exc:  # noqa: BLE001 - the dataclasses validate in __post_init__ (any error type)
        raise WidgetError(f"{params_class.__name__}: {exc}") from None


class RegistrationRunner:
    """Landmark fit and refinement of one case's ``ReferenceToMri``.

    Parameters
    ----------
    session : CaseSession
    sweep : int
        Sweep used for refinement.

    Attributes
    ----------
    landmarks : RegistrationResult or None
        Paired-point fit (after :meth:`fit_landmarks`).
    refined : RegistrationResult or None
        Last refinement.
    """

    def __init__(self, session: CaseSession, sweep: int = 0):
        self.session = session
        self.sweep_index = sweep
        self.landmarks = None
        self.refined = None
        self._us_points = None
        self._mri_points = None
        self._us_volume = None

    @property
    def current(self) -> Transform:
        """The best ``ReferenceToMri`` so far (refined, else landmarks)."""
        result = self.refined or self.landmarks
        if result is None:
            raise WidgetError("run the landmark fit first")
        return result.transform

    def fit_landmarks(self):
        """Paired-point fit with residuals and predicted TRE at the case's targets."""
        self.landmarks = landmark_registration(self.session)
        return self.landmarks

    def target_errors_mm(self, result=None) -> dict[str, float] | None:
        """Distance (mm) at each target between ``result`` and the ground truth, for synthetic cases; else None."""
        truth = self.session.ground_truth()
        if truth is None:
            return None
        result = result or self.refined or self.landmarks
        targets = truth.target_points_mri
        reference = truth.reference_to_mri.inverse().apply_to_points(targets)
        errors = np.linalg.norm(result.transform.apply_to_points(reference) - targets, axis=1)
        return dict(zip(truth.targets_mri, (float(e) for e in errors)))

    def bone_points(self) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3) US bone points in Reference and (M, 3) MRI bone surface points in Mri, mm (cached)."""
        if self._us_points is None:
            from workbench.registration.surface import mri_bone_points, us_bone_points

            label_map = self.session.label_map
            if label_map is None:
                raise WidgetError("bone ICP needs the case's label map", self.session.folder)
            sequence = self.session.sweep(self.sweep_index)
            self._us_points = us_bone_points(sequence, self.session.case.sweeps[self.sweep_index].image_to_probe)
            self._mri_points = mri_bone_points(label_map)
        return self._us_points, self._mri_points

    def run(self, method: str = "bone-icp", params=None, on_progress: Callable | None = None):
        """Refine from the landmark fit through the registration pipeline.

        Parameters
        ----------
        method : {"bone-icp", "lc2", "mattes-mi"}
        params : parameters dataclass of the method, optional
        on_progress : callable, optional
            ``on_progress(fraction_done, metric_trace_so_far, message)``: at the start, after every
            ICP distance stage, and at the end.

        Returns
        -------
        RegistrationResult
        """
        from workbench.registration.pipeline import RegistrationInputs, RegistrationSettings, run_registration_pipeline

        if self.landmarks is None:
            self.fit_landmarks()
        if method not in METHODS:
            raise WidgetError(f"method must be one of {METHODS}, got {method!r}")
        params = params or _params_class(method)()
        if method == "bone-icp":
            us_points, mri_points = self.bone_points()
            inputs = RegistrationInputs(initial=self.landmarks.transform, us_points_reference=us_points, mri_points=mri_points)
            settings = RegistrationSettings((method,), icp=params)
        else:
            volume, covered = self._reconstruction()
            inputs = RegistrationInputs(initial=self.landmarks.transform, mri=self.session.mri.image, us_volume=volume, us_mask=covered)
            settings = RegistrationSettings((method,), **{"lc2" if method == "lc2" else "mattes": params})
        self.refined = run_registration_pipeline(inputs, settings, on_progress)
        return self.refined

    def _reconstruction(self):
        if self._us_volume is None:
            from workbench.io.plus_config import read_device_set
            from workbench.reconstruction.reconstruct import reconstruct_volume

            sweep = self.session.case.sweeps[self.sweep_index]
            if sweep.device_set is None:
                raise WidgetError("intensity registration needs the sweep's device set", self.session.folder)
            device_set = read_device_set(self.session.folder / sweep.device_set.path)
            config = dataclasses.replace(device_set.volume_reconstruction, output_spacing_mm=(1.5, 1.5, 1.5))
            result = reconstruct_volume(self.session.sweep(self.sweep_index), device_set.image_to_probe(), config)
            self._us_volume = (result.to_sitk(), result.covered)
        return self._us_volume


class RegistrationPanel:
    """Paired-point fit table, refinement parameters, live metric plot and progress bar.

    Parameters
    ----------
    session : CaseSession
    runner : RegistrationRunner, optional

    Attributes
    ----------
    widget : ipywidgets.VBox (class ``wb-registration-panel``)
    """

    def __init__(self, session: CaseSession, runner: RegistrationRunner | None = None):
        import ipywidgets as W

        from workbench.widgets._ui import new_canvas

        self.runner = runner or RegistrationRunner(session)
        self.fit_button = W.Button(description="Fit landmarks", icon="dot-circle-o")
        self.fit_table = W.HTML()
        self.method = W.Dropdown(options=list(METHODS), value="bone-icp", description="method")
        self.params_box = W.VBox()
        self.run_button = W.Button(description="Refine", icon="play", button_style="primary")
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, description="progress")
        self.message = W.HTML()
        self.figure, self.canvas = new_canvas(5.0, 2.6)
        self.axes = self.figure.add_axes([0.14, 0.2, 0.82, 0.7])
        self._param_widgets: dict[str, object] = {}
        self.fit_button.on_click(lambda _b: self.fit())
        self.run_button.on_click(lambda _b: self.refine())
        self.method.observe(lambda c: self._build_params(c["new"]), names="value")
        self._build_params("bone-icp")
        self.widget = W.VBox([
            W.HTML("<b>1. Paired-point fit</b>"), self.fit_button, self.fit_table,
            W.HTML("<b>2. Automatic refinement</b>"), self.method, self.params_box,
            W.HBox([self.run_button, self.progress]), self.canvas, self.message,
        ])
        self.widget.add_class("wb-registration-panel")

    def _build_params(self, method: str) -> None:
        import ipywidgets as W

        widgets = {}
        for name, _kind, default in param_fields(_params_class(method)):
            style = {"description_width": "170px"}
            if isinstance(default, bool):
                widgets[name] = W.Checkbox(value=default, description=name, style=style)
            elif isinstance(default, int):
                widgets[name] = W.IntText(value=default, description=name, style=style)
            elif isinstance(default, float):
                widgets[name] = W.FloatText(value=default, description=name, style=style)
            elif isinstance(default, tuple):
                widgets[name] = W.Text(value=", ".join(f"{v:g}" for v in default), description=name, style=style)
        self._param_widgets = widgets
        self.params_box.children = list(widgets.values())

    def params(self):
        """The method's parameters dataclass from the widgets."""
        values = {name: w.value for name, w in self._param_widgets.items()}
        return params_from_values(_params_class(self.method.value), values)

    def fit(self):
        """Run the paired-point fit and show residuals and predicted TRE."""
        from workbench.widgets._ui import table_html

        result = self.runner.fit_landmarks()
        truth = self.runner.target_errors_mm(result) or {}
        rows = [{"landmark": n, "residual_mm": r} for n, r in result.residuals_mm.items()]
        targets = [{"target": n, "predicted_TRE_mm": t, "TRE_vs_truth_mm": truth.get(n)} for n, t in result.predicted_tre_mm.items()]
        self.fit_table.value = (f"<p>{html.escape(result.message)}</p><div style='display:flex;gap:16px'>"
                                f"<div style='max-height:220px;overflow:auto'>{table_html(rows)}</div>"
                                f"<div>{table_html(targets)}</div></div>")
        return result

    def refine(self):
        """Run the chosen refinement with the widget parameters, plotting the metric as it goes."""
        try:
            params = self.params()
        except WidgetError as exc:
            self.message.value = f"<span style='color:#c00'>{html.escape(exc.problem)}</span>"
            return None
        self.run_button.disabled = True
        try:
            result = self.runner.run(self.method.value, params, self._on_progress)
        except Exception as exc:  # noqa: BLE001 - shown to the user
            self.message.value = f"<span style='color:#c00'>{html.escape(str(exc))}</span>"
            return None
        finally:
            self.run_button.disabled = False
        errors = self.runner.target_errors_mm(result)
        extra = f"; median error at the targets vs ground truth {np.median(list(errors.values())):.2f} mm" if errors else ""
        self.message.value = html.escape(f"{result.method}: {result.message} in {result.run_time_s:.1f} s{extra}")
        return result

    def _on_progress(self, fraction: float, trace: np.ndarray, message: str) -> None:
        self.progress.value = float(fraction)
        self.message.value = html.escape(message)
        self.axes.clear()
        if len(trace):
            self.axes.plot(np.arange(1, len(trace) + 1), trace, marker=".", color="#1f77b4")
        self.axes.set_xlabel("iteration", fontsize=8)
        self.axes.set_ylabel("metric", fontsize=8)
        self.axes.tick_params(labelsize=7)
        self.canvas.draw()  # ipympl pushes the frame now (draw_idle would wait for the busy kernel)
