"""What every registration method returns: the transform, its trace and where it came from."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workbench import __version__
from workbench.errors import FrameError
from workbench.frames import Transform

__all__ = ["RegistrationResult"]


@dataclass(frozen=True)
class RegistrationResult:
    """The outcome of one registration run.

    Attributes
    ----------
    method : str
        E.g. ``"landmarks"``, ``"lc2"``, ``"mattes-mi"``, ``"bone-icp"``.
    transform : Transform
        ``ReferenceToMri`` (from ``Reference`` to ``Mri``; docs/frames.md).
    metric_trace : (K,) float array
        Metric value per iteration (or per evaluation), for plotting; empty for closed forms.
    run_time_s : float
        Wall-clock time of the run, s.
    parameters : dict
        The method's parameters as plain JSON values (a dataclass turned into a dict).
    provenance : dict
        Inputs: digests of the MRI and sweeps, landmark names, initial transform, software
        version (filled in by default).
    fre_mm : float or None
        Fiducial registration error (RMS over the landmarks), for landmark methods.
    residuals_mm : dict of str to float
        Per-landmark residual distance after the fit, mm (landmark methods).
    predicted_tre_mm : dict of str to float
        Predicted TRE at named targets, mm (Fitzpatrick), where computed.
    converged : bool
        Whether the optimiser met its stopping criterion (True for closed forms).
    message : str
        A line for the user: why it stopped, what to look at.
    """

    method: str
    transform: Transform
    metric_trace: np.ndarray = field(default_factory=lambda: np.zeros(0))
    run_time_s: float = 0.0
    parameters: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    fre_mm: float | None = None
    residuals_mm: dict[str, float] = field(default_factory=dict)
    predicted_tre_mm: dict[str, float] = field(default_factory=dict)
    converged: bool = True
    message: str = ""

    def __post_init__(self) -> None:
        if self.transform.name != "ReferenceToMri":
            raise FrameError(f"a registration result holds ReferenceToMri, not {self.transform.name}")
        object.__setattr__(self, "metric_trace", np.asarray(self.metric_trace, dtype=float))
        object.__setattr__(self, "provenance", {"software": f"workbench {__version__}", **self.provenance})

    def to_dict(self) -> dict:
        """JSON-ready summary (the transform as 16 numbers, row major)."""
        return {
            "method": self.method,
            "ReferenceToMri": self.transform.to_list(),
            "metric_trace": [float(v) for v in self.metric_trace],
            "run_time_s": float(self.run_time_s),
            "parameters": dict(self.parameters),
            "provenance": dict(self.provenance),
            "fre_mm": self.fre_mm,
            "residuals_mm": dict(self.residuals_mm),
            "predicted_tre_mm": dict(self.predicted_tre_mm),
            "converged": self.converged,
            "message": self.message,
        }

    def with_updates(self, **changes) -> "RegistrationResult":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)
