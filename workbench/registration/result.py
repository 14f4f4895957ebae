"""What every registration method returns: the transform, its trace and where it came from.

:func:`saved_registration` turns a result into the :class:`~workbench.case.model.SavedRegistration`
that a case keeps once the user accepts it (``case.json`` ``registrations``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workbench import __version__
from workbench.case.model import SavedRegistration, new_registration_id, utc_now
from workbench.errors import FrameError
from workbench.frames import Transform

__all__ = ["RegistrationResult", "landmark_fre_mm", "saved_registration"]


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


def landmark_fre_mm(reference_to_mri: Transform, landmarks) -> float | None:
    """RMS distance of paired landmarks under ``reference_to_mri``, mm; None with fewer than one pair.

    Parameters
    ----------
    reference_to_mri : Transform
        ``ReferenceToMri``.
    landmarks : LandmarkPairs
        ``points_reference`` (N, 3) mm in ``Reference`` and ``points_mri`` (N, 3) mm in ``Mri``
        (:func:`workbench.registration.landmarks.pair_landmarks`).
    """
    points_reference = np.asarray(landmarks.points_reference, dtype=float).reshape(-1, 3)
    points_mri = np.asarray(landmarks.points_mri, dtype=float).reshape(-1, 3)
    if len(points_reference) == 0:
        return None
    moved_mri = reference_to_mri.apply_to_points(points_reference, from_frame="Reference")
    return float(np.sqrt(np.mean(np.sum((moved_mri - points_mri) ** 2, axis=1))))


def _json_ready(value):
    """Plain JSON values: tuples and arrays as lists, numpy numbers as Python ones, NaN/inf as None."""
    if isinstance(value, dict):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_ready(item) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    return str(value)


def saved_registration(
    result: RegistrationResult,
    registration_id: str | None = None,
    landmarks=None,
    started_from: RegistrationResult | None = None,
    created_utc: str | None = None,
) -> SavedRegistration:
    """The case's record of an accepted registration result.

    Parameters
    ----------
    result : RegistrationResult
        The landmark fit or a pipeline result (``"landmarks+bone-icp"``, ...).
    registration_id : str, optional
        Default :func:`~workbench.case.model.new_registration_id`.
    landmarks : LandmarkPairs, optional
        The case's paired landmarks: when ``result`` has no FRE of its own (an automatic
        refinement), ``fre_mm`` is the RMS distance of these pairs under the result's
        ``ReferenceToMri`` (:func:`landmark_fre_mm`).
    started_from : RegistrationResult, optional
        The landmark fit a refinement run on its own started from (when ``result`` holds no
        ``"landmarks"`` stage): its predicted TRE is recorded, and its method and FRE go in
        ``provenance["started_from"]``.
    created_utc : str, optional
        Acceptance time (default now).

    Returns
    -------
    SavedRegistration
        ``fre_mm``: the result's FRE, else from ``landmarks`` as above, else None.
        ``tre_mm``: the result's predicted TRE per target, else that of the landmark fit the
        pipeline started from (its ``"landmarks"`` stage, or ``started_from``), else None. ``provenance`` is the
        result's, plus ``fre_basis`` and ``tre_basis`` saying where both came from,
        ``converged`` and the per-landmark ``residuals_mm`` of a landmark fit; non-finite
        numbers there become None (JSON has none). A pipeline result's quality-gate verdict
        stays in ``provenance["quality"]`` (``{"verdict", "reasons", "figures"}``,
        :func:`workbench.registration.quality.quality_of` reads it back), so the case records
        whether it was accepted or doubtful and why.
    """
    created_utc = created_utc or utc_now()
    provenance = {key: value for key, value in result.provenance.items() if key != "software"}
    if result.fre_mm is not None:
        fre_mm, fre_basis = float(result.fre_mm), "the fit's own landmarks"
    elif landmarks is not None and len(landmarks.points_reference):
        fre_mm = landmark_fre_mm(result.transform, landmarks)
        fre_basis = f"{len(landmarks.points_reference)} paired landmarks of the case under this ReferenceToMri"
    else:
        fre_mm, fre_basis = None, "no paired landmarks"
    stage = next((s for s in provenance.get("stages", ()) if s.get("method") == "landmarks"), None)
    if stage is None and started_from is not None and started_from is not result:
        stage = {"method": started_from.method, "fre_mm": started_from.fre_mm,
                 "predicted_tre_mm": dict(started_from.predicted_tre_mm)}
        provenance["started_from"] = {"method": started_from.method, "fre_mm": started_from.fre_mm,
                                      "ReferenceToMri": started_from.transform.to_list()}
    if result.predicted_tre_mm:
        tre_mm, tre_basis = dict(result.predicted_tre_mm), "predicted (Fitzpatrick) for this landmark fit"
    elif stage is not None and stage.get("predicted_tre_mm"):
        tre_mm = dict(stage["predicted_tre_mm"])
        tre_basis = "predicted (Fitzpatrick) for the landmark fit this refinement started from"
    else:
        tre_mm, tre_basis = None, "not predicted"
    provenance.update(fre_basis=fre_basis, tre_basis=tre_basis, converged=bool(result.converged))
    if result.residuals_mm:
        provenance["residuals_mm"] = dict(result.residuals_mm)
    return SavedRegistration(
        registration_id=registration_id or new_registration_id(created_utc),
        method=result.method,
        reference_to_mri=result.transform,
        created_utc=created_utc,
        parameters=_json_ready(result.parameters),
        fre_mm=fre_mm,
        tre_mm=tre_mm,
        run_time_s=float(result.run_time_s),
        message=result.message,
        software=str(result.provenance.get("software", f"workbench {__version__}")),
        provenance=_json_ready(provenance),
    )
