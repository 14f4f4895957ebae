"""The robust bone registration as benchmark methods (``workbench bench registration --methods bone-robust``).

``"bone-robust"`` and ``"bone-robust+piecewise"`` run
:func:`~workbench.registration.pipeline.run_registration_pipeline` with the refinement
``"bone-robust"`` (:mod:`workbench.registration.robust`) on the benchmark case's inputs plus its US
bone points with their beam geometry, frame, pose and time
(:func:`~workbench.registration.robust.beam_points_from_frames`, found once per case from
``case.frames`` and its ``image_to_probe``; like the other methods' bone points, the detection is
not part of the timed registration). Frames: ``ReferenceToMri`` (docs/frames.md).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

__all__ = ["ROBUST_METHOD_NAMES", "case_beam_points", "robust_methods", "robust_settings"]

#: Benchmark names of the robust methods, and the pipeline refinements each runs.
ROBUST_METHOD_NAMES = {"bone-robust": ("bone-robust",), "bone-robust+piecewise": ("bone-robust", "piecewise")}


def case_beam_points(case):
    """The case's US bone points with how they were measured (:class:`~workbench.registration.robust.BeamPoints`).

    Found once from ``case.frames`` with ``case.image_to_probe`` (the calibration the
    registration is given) and the beam geometry of ``case.probe`` (default: the simulator's
    curvilinear C5-2), then kept on the case.
    """
    cached = getattr(case, "_beam_points", None)
    if cached is not None:
        return cached
    from workbench.phantom.ultrasound import CURVILINEAR_C5_2
    from workbench.registration.robust import BeamGeometry, beam_points_from_frames

    probe = getattr(case, "probe", None) or CURVILINEAR_C5_2
    points = beam_points_from_frames(case.frames, case.image_to_probe, BeamGeometry.of_probe(probe))
    case._beam_points = points
    return points


def robust_settings(name: str):
    """The :class:`~workbench.registration.pipeline.RegistrationSettings` of robust method ``name``."""
    from workbench.registration.pipeline import RegistrationSettings

    return RegistrationSettings(ROBUST_METHOD_NAMES[name])


def robust_methods() -> dict[str, Callable]:
    """``{name: run(case, initial ReferenceToMri) -> RegistrationResult}`` for the benchmark's ``METHODS``."""

    def make(name: str):
        def run(case, initial):
            from workbench.registration.bench import pipeline_inputs
            from workbench.registration.pipeline import run_registration_pipeline

            inputs = dataclasses.replace(pipeline_inputs(case, initial), us_beam_points=case_beam_points(case))
            return run_registration_pipeline(inputs, robust_settings(name))

        run.__name__ = run.__qualname__ = f"run_{name.replace('-', '_').replace('+', '_then_')}"
        return run

    return {name: make(name) for name in ROBUST_METHOD_NAMES}
