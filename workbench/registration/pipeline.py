"""The registration pipeline: landmarks, then the chosen refinements, as one call.

Every caller that registers an MRI to a tracked sweep goes through :func:`run_registration_pipeline`
(``workbench demo``, the registration widget, the accuracy benchmark), so they run the same steps
with the same parameters in the same order:

1. ``"landmarks"`` (when :attr:`RegistrationInputs.landmarks` is given): the paired-point fit,
   with FRE and predicted TRE at :attr:`RegistrationInputs.targets_mri`; otherwise the pipeline
   starts from :attr:`RegistrationInputs.initial`;
2. each refinement of :attr:`RegistrationSettings.refinements` in turn, each from the previous
   ``ReferenceToMri``: ``"bone-icp"`` (US bone points onto the MRI bone surface), ``"bone-robust"``
   (global start search, robust ICP fitting the speed-of-sound depth scale and video latency, and
   a one-level check, :func:`~workbench.registration.robust.register_bone_robust`; the points it
   corrected are what the later steps and the quality gate use), ``"lc2"`` and
   ``"mattes-mi"`` (on a reconstruction of the sweep), ``"lc2-frames"`` (on the tracked frames),
   and last, optionally, ``"piecewise"``: one ``ReferenceToMri`` per vertebra, regularised toward
   the rigid result.

It returns one :class:`~workbench.registration.result.RegistrationResult`: the last rigid
``ReferenceToMri``, ``method`` naming the steps (``"landmarks+bone-icp+piecewise"``), the summed
run time, and in ``provenance``: ``"stages"`` (every step's method, ``ReferenceToMri``, time and
message) and, after ``"piecewise"``, ``"per_vertebra"`` (each level's ``ReferenceToMri`` and why a
level kept the rigid one), and ``"quality"``: the quality gate's verdict (accepted / doubtful /
refused and why, :func:`~workbench.registration.quality.assess_registration`; read it with
:func:`quality_of`). :func:`per_vertebra_result` turns that back into a
:class:`~workbench.registration.piecewise.PiecewiseResult` (``transform_for_target``);
:func:`stage_transform` gives the ``ReferenceToMri`` after any step.

Frames: every transform is ``ReferenceToMri`` (docs/frames.md); points are mm.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from workbench.errors import RegistrationError
from workbench.frames import Transform
from workbench.registration.params import (
    FramesLc2Parameters,
    IcpParameters,
    Lc2Parameters,
    MattesParameters,
    RobustBoneParameters,
)
from workbench.registration.piecewise import PiecewiseParameters
from workbench.registration.quality import QualityThresholds, QualityVerdict, quality_of
from workbench.registration.result import RegistrationResult

__all__ = [
    "REFINEMENTS",
    "ProgressCallback",
    "RegistrationInputs",
    "RegistrationSettings",
    "QualityVerdict",
    "per_vertebra_result",
    "quality_of",
    "run_registration_pipeline",
    "stage_transform",
]

#: The refinements the pipeline can chain, by name. ``"piecewise"`` may only come last.
REFINEMENTS = ("bone-icp", "bone-robust", "lc2", "lc2-frames", "mattes-mi", "piecewise")

#: ``on_progress(fraction_done, metric_trace_so_far, message)``: fraction in [0, 1]; the trace is the
#: running step's metric per iteration (empty where a method reports it only at its end).
ProgressCallback = Callable[[float, np.ndarray, str], None]


@dataclass(frozen=True, eq=False)
class RegistrationInputs:
    """What the pipeline registers. Give what the chosen steps need.

    Attributes
    ----------
    landmarks : LandmarkPairs, optional
        Paired landmarks (``names``, ``points_reference`` (N, 3) mm in ``Reference``,
        ``points_mri`` (N, 3) mm in ``Mri``), e.g. from
        :func:`~workbench.registration.landmarks.pair_landmarks`. When given, the pipeline
        starts with the paired-point fit.
    initial : Transform, optional
        ``ReferenceToMri`` to start from when there are no landmarks.
    targets_mri : dict of str to (3,) float array, optional
        Named targets, LPS mm (``Mri``): the landmark fit predicts its TRE at each.
    us_points_reference : (N, 3) float array, optional
        Bone surface points found in the tracked frames, mm (``Reference``): ``"bone-icp"``,
        ``"piecewise"``.
    mri_points : (M, 3) float array, optional
        Posterior bone surface of the MRI label map, mm (``Mri``): ``"bone-icp"``.
    mri_points_by_level : dict of str to (M, 3) float array, optional
        The same split by vertebra (``"L4"`` -> points), mm (``Mri``): ``"piecewise"``.
    mri : SimpleITK.Image, optional
        The MRI (LPS mm): ``"lc2"``, ``"mattes-mi"``, ``"lc2-frames"``.
    us_volume : SimpleITK.Image, optional
        The sweep reconstructed in ``Reference`` (mm): ``"lc2"``, ``"mattes-mi"``.
    us_mask : (nz, ny, nx) bool array, optional
        Voxels of ``us_volume`` the sweep covered.
    frames : TrackedSequence, optional
        The tracked frames: ``"lc2-frames"``.
    image_to_probe : Transform, optional
        ``ImageToProbe`` calibration of ``frames``.
    us_beam_points : BeamPoints, optional
        The US bone points with pixel, frame, pose and time
        (:func:`~workbench.registration.robust.beam_points_from_frames`): ``"bone-robust"`` then
        also estimates the speed-of-sound depth scale and the video latency; without them it
        registers ``us_points_reference`` rigidly.
    """

    landmarks: object = None
    initial: Transform | None = None
    targets_mri: dict | None = None
    us_points_reference: np.ndarray | None = None
    mri_points: np.ndarray | None = None
    mri_points_by_level: dict | None = None
    mri: object = None
    us_volume: object = None
    us_mask: np.ndarray | None = None
    frames: object = None
    image_to_probe: Transform | None = None
    us_beam_points: object = None


@dataclass(frozen=True)
class RegistrationSettings:
    """Which refinements run, in order, and the parameters of each.

    Attributes
    ----------
    refinements : tuple of str
        Names from :data:`REFINEMENTS`, run in this order after the landmark fit (or from the
        initial transform); ``"piecewise"`` only last. Empty: the landmark fit alone.
    icp, robust, lc2, lc2_frames, mattes, piecewise : parameter dataclasses
        Of ``"bone-icp"``, ``"bone-robust"``, ``"lc2"``, ``"lc2-frames"``, ``"mattes-mi"`` and ``"piecewise"``.
    landmark_fle_mm : float, optional
        Fiducial localisation error for the landmark fit's predicted TRE, mm (default: estimated
        from the FRE).
    quality : QualityThresholds
        Limits of the quality gate that judges the result
        (:func:`~workbench.registration.quality.assess_registration`).
    """

    refinements: tuple[str, ...] = ("bone-icp",)
    icp: IcpParameters = field(default_factory=IcpParameters)
    robust: RobustBoneParameters = field(default_factory=RobustBoneParameters)
    lc2: Lc2Parameters = field(default_factory=Lc2Parameters)
    lc2_frames: FramesLc2Parameters = field(default_factory=FramesLc2Parameters)
    mattes: MattesParameters = field(default_factory=MattesParameters)
    piecewise: PiecewiseParameters = field(default_factory=PiecewiseParameters)
    landmark_fle_mm: float | None = None
    quality: QualityThresholds = field(default_factory=QualityThresholds)

    def __post_init__(self) -> None:
        object.__setattr__(self, "refinements", tuple(self.refinements))
        unknown = [name for name in self.refinements if name not in REFINEMENTS]
        if unknown:
            raise RegistrationError(f"unknown refinement(s) {unknown}; choose from {list(REFINEMENTS)}")
        if "piecewise" in self.refinements[:-1]:
            raise RegistrationError("the piecewise (per-vertebra) refinement can only come last")


def _require(value, what: str, step: str):
    if value is None:
        raise RegistrationError(f"the {step} step needs {what}")
    return value


def _stage_summary(result: RegistrationResult) -> dict:
    return {
        "method": result.method,
        "ReferenceToMri": result.transform.to_list(),
        "run_time_s": float(result.run_time_s),
        "fre_mm": result.fre_mm,
        "predicted_tre_mm": {name: float(v) for name, v in result.predicted_tre_mm.items()},
        "converged": bool(result.converged),
        "message": result.message,
    }


def _per_vertebra_summary(piecewise) -> dict:
    return {
        "transforms": {level: transform.to_list() for level, transform in piecewise.transforms.items()},
        "residuals_mm": {level: float(v) for level, v in piecewise.residuals_mm.items()},
        "point_counts": {level: int(v) for level, v in piecewise.point_counts.items()},
        "deviations": {level: [float(deg), float(mm)] for level, (deg, mm) in piecewise.deviations.items()},
        "fallbacks": dict(piecewise.fallbacks),
        "run_time_s": float(piecewise.run_time_s),
    }


def _landmark_fit(inputs: RegistrationInputs, settings: RegistrationSettings) -> RegistrationResult:
    from workbench.registration.landmarks import register_landmarks

    pairs = inputs.landmarks
    return register_landmarks(
        pairs.names, pairs.points_reference, pairs.points_mri, fle_mm=settings.landmark_fle_mm, targets_mri=inputs.targets_mri
    )


def _rigid_step(name: str, inputs: RegistrationInputs, settings: RegistrationSettings, start: Transform, report) -> RegistrationResult:
    """One rigid refinement from ``start`` (``ReferenceToMri``); ``report(fraction_of_step, trace, message)``."""
    if name == "bone-icp":
        from workbench.registration.surface import register_icp

        us_points = _require(inputs.us_points_reference, "US bone points (us_points_reference)", name)
        mri_points = _require(inputs.mri_points, "MRI bone surface points (mri_points)", name)
        report(0.0, np.zeros(0), f"{len(us_points)} US bone points, {len(mri_points)} MRI surface points")
        schedule = settings.icp.distance_schedule_mm

        def on_stage(index: int, count: int, trace: np.ndarray) -> None:
            report((index + 1) / count, trace, f"stage {index + 1}/{count}: {schedule[index]:g} mm")

        return register_icp(us_points, mri_points, start, settings.icp, on_stage=on_stage)
    if name == "bone-robust":
        from workbench.registration.robust import register_bone_robust

        points = inputs.us_beam_points if inputs.us_beam_points is not None else inputs.us_points_reference
        points = _require(points, "US bone points (us_beam_points or us_points_reference)", name)
        mri_points = _require(inputs.mri_points, "MRI bone surface points (mri_points)", name)
        report(0.0, np.zeros(0), f"{len(points)} US bone points: start search, robust fit, level check")
        return register_bone_robust(points, mri_points, start, settings.robust)
    if name in ("lc2", "mattes-mi"):
        from workbench.registration.intensity import register_lc2, register_mattes

        mri = _require(inputs.mri, "the MRI image (mri)", name)
        volume = _require(inputs.us_volume, "a reconstructed sweep (us_volume)", name)
        report(0.0, np.zeros(0), "optimising (the plot fills in at the end)")
        if name == "lc2":
            return register_lc2(mri, volume, start, inputs.us_mask, settings.lc2)
        return register_mattes(mri, volume, start, inputs.us_mask, settings.mattes)
    if name == "lc2-frames":
        from workbench.registration.frames_lc2 import register_lc2_frames

        mri = _require(inputs.mri, "the MRI image (mri)", name)
        frames = _require(inputs.frames, "the tracked frames (frames): no tracked frames given", name)
        image_to_probe = _require(inputs.image_to_probe, "the ImageToProbe calibration (image_to_probe)", name)
        report(0.0, np.zeros(0), "optimising on the tracked frames (the plot fills in at the end)")
        return register_lc2_frames(mri, frames, image_to_probe, start, params=settings.lc2_frames)
    raise RegistrationError(f"unknown refinement {name!r}")  # pragma: no cover - settings check the names


def run_registration_pipeline(
    inputs: RegistrationInputs,
    settings: RegistrationSettings = RegistrationSettings(),
    on_progress: ProgressCallback | None = None,
) -> RegistrationResult:
    """Landmark fit (if landmarks are given), then each refinement of ``settings`` in order.

    Parameters
    ----------
    inputs : RegistrationInputs
    settings : RegistrationSettings
    on_progress : callable, optional
        ``on_progress(fraction_done, metric_trace_so_far, message)``: at the start of every step,
        after every distance stage of ``"bone-icp"``, and at the end of every step (the message
        names the step).

    Returns
    -------
    RegistrationResult
        ``transform``: the last rigid ``ReferenceToMri``. With one step, that step's result;
        with several, the last rigid step's with ``method`` = the steps joined by ``"+"``,
        ``run_time_s`` = their sum, and ``provenance["stages"]`` / ``provenance["per_vertebra"]``
        (see the module docstring). The landmark fit's FRE, residuals and predicted TRE are kept
        when it is the only step. Always ``provenance["quality"]``: the quality gate's verdict
        (:func:`quality_of`); a refused result must not be accepted or planned with.

    Raises
    ------
    RegistrationError
        Neither landmarks nor an initial transform, a step without the inputs it needs, or a
        step that fails (too few ICP pairs, ...).
    """
    say = on_progress or (lambda *_args: None)
    steps = (("landmarks",) if inputs.landmarks is not None else ()) + settings.refinements
    if not steps:
        raise RegistrationError("nothing to run: give landmarks or choose a refinement")
    if inputs.landmarks is None and inputs.initial is None:
        raise RegistrationError("the pipeline needs paired landmarks or an initial ReferenceToMri")
    if inputs.initial is not None and inputs.initial.name != "ReferenceToMri":
        raise RegistrationError(f"the initial transform must be ReferenceToMri, got {inputs.initial.name}")

    results: list[RegistrationResult] = []
    piecewise, inner_global = None, None
    current = inputs.initial
    for number, name in enumerate(steps):
        low, high = number / len(steps), (number + 1) / len(steps)

        def report(fraction: float, trace: np.ndarray, message: str, name=name, low=low, high=high) -> None:
            say(low + (high - low) * float(fraction), np.asarray(trace, dtype=float), f"{name}: {message}")

        if name == "landmarks":
            report(0.0, np.zeros(0), f"fitting {len(inputs.landmarks.names)} paired landmarks")
            result = _landmark_fit(inputs, settings)
        elif name == "piecewise":
            from workbench.registration.piecewise import register_piecewise

            us_points = _require(inputs.us_points_reference, "US bone points (us_points_reference)", name)
            by_level = _require(inputs.mri_points_by_level, "MRI bone points by level (mri_points_by_level)", name)
            report(0.0, np.zeros(0), f"one ReferenceToMri for each of {len(by_level)} levels")
            piecewise = register_piecewise(us_points, by_level, results[-1] if results else current, settings.piecewise)
            if not results:  # it ran the global ICP itself (its time is in the piecewise time)
                inner_global = piecewise.global_result
                results.append(inner_global)
            report(1.0, np.zeros(0), f"{len(piecewise.transforms) - len(piecewise.fallbacks)} levels refined, "
                                     f"{len(piecewise.fallbacks)} kept the rigid transform")
            continue
        else:
            result = _rigid_step(name, inputs, settings, current, report)
            inputs = _corrected(inputs, result)
        report(1.0, result.metric_trace, result.message)
        results.append(result)
        current = result.transform

    last = results[-1]
    stages = [_stage_summary(r) for r in results]
    provenance = {**last.provenance, "stages": stages}
    if piecewise is not None:
        provenance["per_vertebra"] = _per_vertebra_summary(piecewise)
    # The automatic steps started from the landmark fit, else from the initial transform.
    start = results[0].transform if inputs.landmarks is not None else inputs.initial
    if len(results) == 1 and piecewise is None:
        return _with_quality(last.with_updates(provenance=provenance), inputs, start, settings)
    run_time_s = sum(r.run_time_s for r in results if r is not inner_global)
    run_time_s += 0.0 if piecewise is None else piecewise.run_time_s
    method = "+".join(r.method for r in results) + ("+piecewise" if piecewise is not None else "")
    changes = dict(method=method, run_time_s=run_time_s, provenance=provenance)
    if last.method != "landmarks":
        changes.update(fre_mm=None, residuals_mm={}, predicted_tre_mm={})
    return _with_quality(last.with_updates(**changes), inputs, start, settings)


def _corrected(inputs: RegistrationInputs, result: RegistrationResult) -> RegistrationInputs:
    """After ``"bone-robust"`` with beam points: the inputs with the US points recomputed at the
    estimated depth scale and latency (the later steps and the quality gate see corrected points)."""
    import dataclasses

    if result.method != "bone-robust" or inputs.us_beam_points is None:
        return inputs
    scale = float(result.provenance.get("speed_of_sound_scale", 1.0))
    latency_s = float(result.provenance.get("latency_s", 0.0))
    return dataclasses.replace(inputs, us_points_reference=inputs.us_beam_points.points_reference(scale, latency_s))


def _with_quality(result: RegistrationResult, inputs: RegistrationInputs, start, settings: RegistrationSettings):
    """``result`` with the quality gate's verdict in ``provenance["quality"]`` (docs/registration.md)."""
    from workbench.registration.quality import assess_registration

    verdict = assess_registration(result, inputs, start, settings.quality)
    return result.with_updates(provenance={**result.provenance, "quality": verdict.to_dict()})


def stage_transform(result: RegistrationResult, method: str) -> Transform:
    """The ``ReferenceToMri`` after the pipeline step ``method`` (``"landmarks"``, ``"bone-icp"``, ...).

    Raises
    ------
    RegistrationError
        The result holds no such step (not from the pipeline, or the step did not run).
    """
    for stage in result.provenance.get("stages", ()):
        if stage["method"] == method:
            return Transform.from_name("ReferenceToMri", np.reshape(stage["ReferenceToMri"], (4, 4)))
    raise RegistrationError(f"the registration holds no {method!r} step")


def per_vertebra_result(result: RegistrationResult):
    """The per-vertebra transforms of a pipeline result with ``"piecewise"``, or None.

    Returns
    -------
    PiecewiseResult or None
        ``global_result`` is ``result`` itself (its transform is the rigid one), so
        ``transform_for_target`` falls back to it for a target without its own level.
    """
    from workbench.registration.piecewise import PiecewiseResult

    summary = result.provenance.get("per_vertebra")
    if summary is None:
        return None
    return PiecewiseResult(
        global_result=result,
        transforms={
            level: Transform.from_name("ReferenceToMri", np.reshape(values, (4, 4)))
            for level, values in summary["transforms"].items()
        },
        residuals_mm=dict(summary["residuals_mm"]),
        point_counts=dict(summary["point_counts"]),
        deviations={level: (deg, mm) for level, (deg, mm) in summary["deviations"].items()},
        fallbacks=dict(summary["fallbacks"]),
        run_time_s=float(summary["run_time_s"]),
    )
