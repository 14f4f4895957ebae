"""Registration: paired-point fit, then automatic refinement with live progress.

:class:`RegistrationRunner` (no UI) gathers a case's inputs and runs the registration pipeline
(:func:`workbench.registration.pipeline.run_registration_pipeline`, the same one as ``workbench
demo`` and the benchmark): the landmark fit, then a refinement: bone-surface ICP, whose metric is
reported after every distance stage so it can be plotted as it goes, or LC2 / Mattes MI on a
reconstruction of the sweep. A result the user accepts (:meth:`RegistrationRunner.accept`) is saved
into the case's ``case.json`` (``registrations``, made current) and :meth:`RegistrationRunner.undo`
makes the previous one current again; plans, exports and the 3D scene use the current one.
:class:`RegistrationPanel` is the ipywidgets controller: parameters as widgets built from the
parameter dataclasses, a metric-per-iteration plot (a static PNG redrawn live,
:class:`workbench.widgets._plots.PngPlot`; class ``wb-metric-plot``), a progress bar, Accept / Undo buttons
(DOM classes ``wb-accept-registration``, ``wb-undo-registration``) and the history.
Every result is ``ReferenceToMri`` (docs/frames.md).
"""

from __future__ import annotations

import dataclasses
import html
from typing import Callable

import numpy as np

from workbench.frames import Transform
from workbench.widgets.session import CaseSession, WidgetError, landmark_registration

__all__ = ["METHODS", "RegistrationRunner", "RegistrationPanel", "history_rows", "params_from_values", "param_fields"]

METHODS = ("bone-icp", "bone-robust", "lc2", "mattes-mi")


def _params_class(method: str):
    from workbench.registration.params import IcpParameters, Lc2Parameters, MattesParameters, RobustBoneParameters

    return {"bone-icp": IcpParameters, "bone-robust": RobustBoneParameters, "lc2": Lc2Parameters,
            "mattes-mi": MattesParameters}[method]


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
    latest : RegistrationResult or None
        The last result computed (landmark fit or refinement): what :meth:`accept` saves by default.
    """

    def __init__(self, session: CaseSession, sweep: int = 0):
        self.session = session
        self.sweep_index = sweep
        self.landmarks = None
        self.refined = None
        self.latest = None
        self._started_from: dict[int, object] = {}  # id(refinement) -> the landmark fit it started from
        self._us_points = None
        self._mri_points = None
        self._us_volume = None
        self._beam_points = None

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
        self.latest = self.landmarks
        return self.landmarks

    # -- the case's registrations -----------------------------------------------------
    @property
    def accepted(self):
        """The case's current registration (:class:`~workbench.case.model.SavedRegistration`), or None."""
        return self.session.case.current_registration

    def accept(self, result=None):
        """Save a result into the case as its current registration (``case.json``, written atomically).

        Parameters
        ----------
        result : RegistrationResult, optional
            Default :attr:`latest` (the last landmark fit or refinement).

        Returns
        -------
        SavedRegistration
            As saved: method, ``ReferenceToMri``, parameters, FRE (a refinement's measured on the
            case's landmark pairs), predicted TRE per target, run time
            (:func:`workbench.registration.result.saved_registration`).

        Raises
        ------
        WidgetError
            Nothing to accept yet, or a result the quality gate refused
            (:func:`workbench.registration.quality.assess_registration`; a doubtful one is
            accepted with its verdict recorded in the saved provenance).
        CaseBundleError
            The case cannot be saved (``case.json`` is left as it was).
        """
        from workbench.case.model import with_registration
        from workbench.registration.landmarks import pair_landmarks
        from workbench.registration.quality import quality_of
        from workbench.registration.result import saved_registration

        result = result or self.latest
        if result is None:
            raise WidgetError("nothing to accept: run the landmark fit or a refinement first", self.session.folder)
        verdict = quality_of(result)
        if verdict is not None and verdict.refused:
            raise WidgetError(
                f"cannot accept {result.method}: the quality gate refused it ({'; '.join(verdict.reasons)})",
                self.session.folder,
            )
        pairs = pair_landmarks(self.session.case.landmarks)
        started_from = self._started_from.get(id(result))
        saved = saved_registration(result, landmarks=pairs if len(pairs.names) else None, started_from=started_from)
        self.session.save(with_registration(self.session.case, saved))
        return saved

    def undo(self):
        """Make the registration accepted before the current one current again (saved to ``case.json``).

        The history is kept: the undone registration stays in ``case.json``. Undoing the first
        leaves none current.

        Returns
        -------
        SavedRegistration or None
            The registration now current.

        Raises
        ------
        WidgetError
            No registration is current, so there is nothing to undo.
        """
        from workbench.case.model import undo_registration
        from workbench.errors import CaseBundleError

        try:
            case = undo_registration(self.session.case)
        except CaseBundleError as exc:
            raise WidgetError(exc.problem, self.session.folder / "case.json") from None
        self.session.save(case)
        return self.session.case.current_registration

    def history(self) -> list[dict]:
        """The case's registrations, oldest first, as table rows (:func:`history_rows`)."""
        return history_rows(self.session.case)

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
        method : {"bone-icp", "bone-robust", "lc2", "mattes-mi"}
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
        elif method == "bone-robust":
            us_points, mri_points = self.bone_points()
            inputs = RegistrationInputs(initial=self.landmarks.transform, us_points_reference=us_points, mri_points=mri_points,
                                        us_beam_points=self.beam_points())
            settings = RegistrationSettings((method,), robust=params)
        else:
            volume, covered = self._reconstruction()
            inputs = RegistrationInputs(initial=self.landmarks.transform, mri=self.session.mri.image, us_volume=volume, us_mask=covered)
            settings = RegistrationSettings((method,), **{"lc2" if method == "lc2" else "mattes": params})
        self.refined = run_registration_pipeline(inputs, settings, on_progress)
        self.latest = self.refined
        self._started_from = {id(self.refined): self.landmarks}
        return self.refined

    def beam_points(self):
        """The sweep's bone points with pixel, frame, pose and time (``"bone-robust"`` estimates the
        speed-of-sound depth scale and latency from them), or None without the sweep's device set
        (the beam geometry: fan origin and radius); cached."""
        if self._beam_points is None:
            from workbench.io.plus_config import read_device_set
            from workbench.registration.robust import BeamGeometry, beam_points_from_frames

            sweep = self.session.case.sweeps[self.sweep_index]
            if sweep.device_set is None:
                return None
            config = read_device_set(self.session.folder / sweep.device_set.path).volume_reconstruction
            geometry = (
                BeamGeometry(tuple(config.fan_origin_px), float(config.fan_radius_start_px))
                if any(angle != 0.0 for angle in config.fan_angles_deg)
                else BeamGeometry()
            )
            self._beam_points = beam_points_from_frames(self.session.sweep(self.sweep_index), sweep.image_to_probe, geometry)
        return self._beam_points

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


def history_rows(case) -> list[dict]:
    """One row per saved registration of ``case``, oldest first.

    Returns
    -------
    list of dict
        ``current`` ("▶" for the current one, else ""), ``id``, ``method``, ``FRE_mm`` (or None),
        ``max_predicted_TRE_mm`` (or None), ``run_time_s``, ``accepted_utc``.
    """
    rows = []
    for saved in case.registrations:
        tre = max(saved.tre_mm.values()) if saved.tre_mm else None
        rows.append({
            "current": "▶" if saved.registration_id == case.current_registration_id else "",
            "id": saved.registration_id,
            "method": saved.method,
            "FRE_mm": None if saved.fre_mm is None else round(saved.fre_mm, 2),
            "max_predicted_TRE_mm": None if tre is None else round(tre, 2),
            "run_time_s": None if saved.run_time_s is None else round(saved.run_time_s, 1),
            "accepted_utc": saved.created_utc,
        })
    return rows


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

        from workbench.widgets._plots import PngPlot

        self.runner = runner or RegistrationRunner(session)
        self.fit_button = W.Button(description="Fit landmarks", icon="dot-circle-o")
        self.fit_table = W.HTML()
        self.method = W.Dropdown(options=list(METHODS), value="bone-icp", description="method")
        self.params_box = W.VBox()
        self.run_button = W.Button(description="Refine", icon="play", button_style="primary")
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, description="progress")
        self.message = W.HTML()
        self.plot = PngPlot(560, 300, css_class="wb-metric-plot")
        self.figure = self.plot.figure
        self.axes = self.figure.add_axes([0.12, 0.17, 0.85, 0.73])
        self.accept_button = W.Button(description="Accept", icon="check", button_style="success",
                                      tooltip="save the last result into case.json as the case's registration")
        self.accept_button.add_class("wb-accept-registration")
        self.undo_button = W.Button(description="Undo", icon="undo",
                                    tooltip="make the registration accepted before the current one current again")
        self.undo_button.add_class("wb-undo-registration")
        self.history_table = W.HTML()
        self.history_table.add_class("wb-registration-history")
        self._param_widgets: dict[str, object] = {}
        self.fit_button.on_click(lambda _b: self.fit())
        self.run_button.on_click(lambda _b: self.refine())
        self.accept_button.on_click(lambda _b: self.accept())
        self.undo_button.on_click(lambda _b: self.undo())
        self.method.observe(lambda c: self._build_params(c["new"]), names="value")
        self._build_params("bone-icp")
        self.widget = W.VBox([
            W.HTML("<b>1. Paired-point fit</b>"), self.fit_button, self.fit_table,
            W.HTML("<b>2. Automatic refinement</b>"), self.method, self.params_box,
            W.HBox([self.run_button, self.progress]), self.plot.widget, self.message,
            W.HTML("<b>3. The case's registration</b>"), W.HBox([self.accept_button, self.undo_button]), self.history_table,
        ])
        self.widget.add_class("wb-registration-panel")
        self._draw_trace(np.empty(0), "press Refine: the metric is plotted per iteration")
        self.show_history()

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
        """Run the paired-point fit and show residuals and predicted TRE; None (and the guidance) below 3 pairs."""
        from workbench.widgets._ui import table_html
        from workbench.widgets.us_landmarks import LandmarkFitModel

        readiness = LandmarkFitModel(self.runner.session)
        if not readiness.ready:  # fewer than 3 pairs (or unusable ones): one guidance line instead of an error
            self.fit_table.value = readiness.html()
            return None
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

    def accept(self):
        """Accept the last result into the case (see :meth:`RegistrationRunner.accept`); returns it, or None on error."""
        try:
            saved = self.runner.accept()
        except Exception as exc:  # noqa: BLE001 - shown to the user
            self.message.value = f"<span style='color:#c00'>{html.escape(getattr(exc, 'problem', None) or str(exc))}</span>"
            return None
        fre = "" if saved.fre_mm is None else f", FRE {saved.fre_mm:.2f} mm"
        quality = (saved.provenance or {}).get("quality") or {}
        doubt = f" (doubtful: {'; '.join(quality.get('reasons', ()))})" if quality.get("verdict") == "doubtful" else ""
        self.message.value = html.escape(f"accepted {saved.method} as {saved.registration_id}{fre}{doubt}; saved in case.json")
        self.show_history()
        return saved

    def undo(self):
        """Make the previous registration current (see :meth:`RegistrationRunner.undo`); returns it, or None."""
        try:
            current = self.runner.undo()
        except Exception as exc:  # noqa: BLE001 - shown to the user
            self.message.value = f"<span style='color:#c00'>{html.escape(getattr(exc, 'problem', None) or str(exc))}</span>"
            return None
        self.message.value = html.escape(
            "undone: no registration is current now" if current is None
            else f"undone: {current.method} ({current.registration_id}) is current again"
        )
        self.show_history()
        return current

    def show_history(self) -> list[dict]:
        """Show the case's registrations (method, FRE, time; the current one marked); returns the rows."""
        from workbench.widgets._ui import table_html

        rows = self.runner.history()
        self.history_table.value = table_html(rows) if rows else "<i>no registration accepted yet</i>"
        self.undo_button.disabled = self.runner.accepted is None
        return rows

    def _on_progress(self, fraction: float, trace: np.ndarray, message: str) -> None:
        self.progress.value = float(fraction)
        self.message.value = html.escape(message)
        self._draw_trace(np.asarray(trace, dtype=float), message)

    def _draw_trace(self, trace: np.ndarray, title: str = "") -> bytes:
        """Plot the metric per iteration and send the PNG now (an Image value change reaches the
        browser while the kernel is still busy refining)."""
        method = self.method.value
        unit = "RMS distance (mm)" if method == "bone-icp" else f"{method} metric"
        axes = self.axes
        axes.clear()
        if len(trace):
            axes.plot(np.arange(1, len(trace) + 1), trace, marker=".", color="#1f77b4", linewidth=1.5)
        else:
            axes.text(0.5, 0.5, "no iteration yet", transform=axes.transAxes, ha="center", va="center", color="#777777")
        axes.set_xlabel("iteration", fontsize=10)
        axes.set_ylabel(unit, fontsize=10)
        axes.set_title(title if len(title) <= 72 else title[:71] + "…", fontsize=9, loc="left")
        axes.grid(True, alpha=0.3)
        axes.tick_params(labelsize=9)
        return self.plot.refresh()
