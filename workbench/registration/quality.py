"""The quality gate of every automatic registration: accepted, doubtful or refused, and why.

:func:`assess_registration` looks at a result the way a careful user would before planning with
it, using only the data the registration had (never a ground truth):

- **overlap**: bone ICP, the fraction of US bone points within ``inlier_distance_mm`` of the MRI
  bone surface at the result (and the fraction of pairs the trimmed ICP kept); LC2 / Mattes MI on
  a reconstruction, the fraction of the covered US voxels that fall inside the MRI; LC2 on the
  tracked frames, the same over its patch pixels (``provenance["overlap_fraction"]``). Zero or tiny
  overlap is refused: a metric computed on nothing "converges" anywhere.
- **movement from the start**: rotation angle, deg, and translation, mm, of the correction
  ``result @ start^-1`` (the translation is that of the data's centre: the US bone points'
  centroid, else the targets'), and the largest displacement over the named targets. A
  correction beyond the methods' capture range is doubtful.
- **residual / metric**: bone ICP, the RMS distance of the kept pairs (trimmed, as ICP minimises
  it) and a robust residual (RMS over all US points of the distance to the MRI surface capped at
  ``residual_cap_mm``); intensity methods, the final metric against the start's.
- **level check** (bone ICP, robust bone ICP): ICP is run again from the result shifted by one vertebral level
  (``level_shift_mm`` along the MRI's superior axis, up and down); the ratio of the best
  neighbour's robust residual to the result's says whether a neighbouring level fits about as
  well (doubtful: possible one-level slip) or better (refused: a one-level slip).

:func:`~workbench.registration.pipeline.run_registration_pipeline` attaches the verdict as
``result.provenance["quality"]`` (:meth:`QualityVerdict.to_dict`); :func:`quality_of` reads it
back. A refused result is never accepted into a case (``RegistrationRunner.accept``) nor planned
with (``workbench plan``). Frames: every transform is ``ReferenceToMri``; points are mm
(docs/frames.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from workbench.errors import RegistrationError
from workbench.frames import Transform, apply_affine
from workbench.registration.params import as_dict
from workbench.registration.result import RegistrationResult

__all__ = [
    "VERDICTS",
    "QualityThresholds",
    "QualityVerdict",
    "assess_registration",
    "quality_of",
    "volume_overlap_fraction",
]

#: The verdicts, best first.
VERDICTS = ("accepted", "doubtful", "refused")


@dataclass(frozen=True)
class QualityThresholds:
    """Limits of the quality gate (every one stated in the verdict's figures).

    Attributes
    ----------
    refuse_overlap_fraction : float
        Below this overlap (0..1) the result is refused (default 0.05: the data barely meet).
    doubtful_overlap_fraction : float
        Below this overlap the result is doubtful (default 0.5).
    inlier_distance_mm : float
        A US bone point overlaps the MRI surface when within this distance of it, mm (default 2).
    residual_cap_mm : float
        Distances are capped at this in the robust residual, mm (default 5), so that points the
        MRI does not show count as "far" without swamping the rest.
    doubtful_residual_mm : float
        Bone ICP: an RMS distance of the kept pairs above this is doubtful, mm (default 2).
    refuse_residual_mm : float
        ... and above this refused, mm (default 5).
    doubtful_translation_mm, doubtful_rotation_deg : float
        A correction from the start larger than this is doubtful (beyond the ~20 mm / 15 deg
        the methods are benchmarked from; defaults 25 mm, 20 deg).
    level_shift_mm : float
        One vertebral level, mm (default 35: lumbar vertebra plus disc).
    level_axis_mri : (3,) tuple of float
        The spine's superior direction in ``Mri`` (default LPS +z, superior).
    doubtful_level_ratio : float
        Level check: a neighbour whose robust residual is below this times the result's fits
        "about as well": doubtful (default 1.3; a correct fit's neighbours are ~1.7x worse on
        the simulated cases).
    refuse_level_ratio : float
        ... and below this a neighbour fits clearly better: refused (default 0.9).
    level_subsample : int
        The level check runs ICP on every n-th US point (default 4; about 0.2 s per neighbour).
    """

    refuse_overlap_fraction: float = 0.05
    doubtful_overlap_fraction: float = 0.5
    inlier_distance_mm: float = 2.0
    residual_cap_mm: float = 5.0
    doubtful_residual_mm: float = 2.0
    refuse_residual_mm: float = 5.0
    doubtful_translation_mm: float = 25.0
    doubtful_rotation_deg: float = 20.0
    level_shift_mm: float = 35.0
    level_axis_mri: tuple[float, float, float] = (0.0, 0.0, 1.0)
    doubtful_level_ratio: float = 1.3
    refuse_level_ratio: float = 0.9
    level_subsample: int = 4

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            values = value if isinstance(value, tuple) else (value,)
            if not all(isinstance(v, (int, float)) and np.isfinite(v) for v in values):
                raise RegistrationError(f"QualityThresholds {item.name} must be finite numbers, got {value!r}")
        if not 0 <= self.refuse_overlap_fraction <= self.doubtful_overlap_fraction <= 1:
            raise RegistrationError("QualityThresholds needs 0 <= refuse_overlap_fraction <= doubtful_overlap_fraction <= 1")
        if self.refuse_level_ratio >= self.doubtful_level_ratio:
            raise RegistrationError("QualityThresholds needs refuse_level_ratio < doubtful_level_ratio")
        if np.linalg.norm(self.level_axis_mri) == 0 or self.level_subsample < 1:
            raise RegistrationError("QualityThresholds needs a non-zero level_axis_mri and level_subsample >= 1")


@dataclass(frozen=True)
class QualityVerdict:
    """What the quality gate says about one registration result.

    Attributes
    ----------
    verdict : str
        ``"accepted"``, ``"doubtful"`` or ``"refused"`` (:data:`VERDICTS`).
    reasons : tuple of str
        One line each: why it is doubtful or refused (worst first), or what passed.
    figures : dict
        The numbers behind it (JSON values): ``overlap_fraction``, ``kept_pair_fraction``,
        ``translation_mm``, ``rotation_deg``, ``max_target_displacement_mm``,
        ``residual_mm`` (ICP RMS of kept pairs), ``robust_residual_mm``, ``metric``,
        ``metric_start``, ``level_ratio`` and ``level_residuals_mm`` (``"+35"``/``"-35"``), where
        computed; and ``thresholds``.
    """

    verdict: str
    reasons: tuple[str, ...]
    figures: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise RegistrationError(f"a quality verdict is one of {VERDICTS}, got {self.verdict!r}")
        object.__setattr__(self, "reasons", tuple(str(r) for r in self.reasons))

    @property
    def refused(self) -> bool:
        return self.verdict == "refused"

    def summary(self) -> str:
        """One line: ``"doubtful: possible one-level slip ..."``."""
        return f"{self.verdict}: " + "; ".join(self.reasons)

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "reasons": list(self.reasons), "figures": dict(self.figures)}

    @classmethod
    def from_dict(cls, values: dict) -> "QualityVerdict":
        return cls(values["verdict"], tuple(values.get("reasons", ())), dict(values.get("figures", {})))


def quality_of(result) -> QualityVerdict | None:
    """The verdict attached to a pipeline result (or to a saved registration's provenance), or None."""
    provenance = getattr(result, "provenance", None) or {}
    values = provenance.get("quality")
    return None if not values else QualityVerdict.from_dict(values)


def _steps(method: str) -> set[str]:
    return set(method.split("+"))


def assess_registration(
    result: RegistrationResult,
    inputs,
    start: Transform | None,
    thresholds: QualityThresholds = QualityThresholds(),
) -> QualityVerdict:
    """Judge a registration result: accepted, doubtful or refused, with the reasons and figures.

    Parameters
    ----------
    result : RegistrationResult
        A method's or the pipeline's result (``method`` names its steps, ``"landmarks+bone-icp"``).
    inputs : RegistrationInputs
        What it registered (the pipeline's inputs): ``us_points_reference`` / ``mri_points``
        for bone ICP, ``mri`` / ``us_volume`` / ``us_mask`` for LC2 and Mattes MI,
        ``targets_mri`` for the largest target displacement.
    start : Transform or None
        ``ReferenceToMri`` the automatic steps started from (the landmark fit, or the initial
        transform); None: no movement check.
    thresholds : QualityThresholds

    Returns
    -------
    QualityVerdict
    """
    steps = _steps(result.method)
    figures: dict = {}
    findings: list[tuple[str, str]] = []  # (verdict, line)
    automatic = steps - {"landmarks"}
    if not automatic:
        figures["fre_mm"] = result.fre_mm
        return QualityVerdict("accepted", ("paired-landmark fit: no automatic step to check",),
                              {**figures, "thresholds": as_dict(thresholds)})
    matrix = result.transform.matrix
    if start is not None:
        findings += _movement(matrix, start.matrix, inputs, thresholds, figures)
    if not result.converged:
        findings.append(("doubtful", "the optimiser did not converge (see the result's message)"))
    has_points = getattr(inputs, "us_points_reference", None) is not None and getattr(inputs, "mri_points", None) is not None
    if automatic & {"bone-icp", "bone-robust", "piecewise"} and has_points:
        findings += _bone_checks(matrix, inputs, thresholds, figures)
    switched = (result.provenance.get("level_check") or {}).get("switched")
    if "bone-robust" in automatic and switched:
        figures["level_switched"] = switched
        findings.append(("accepted", "the robust fit moved the result to the neighbouring level, which fits clearly better"))
    if automatic & {"lc2", "mattes-mi"} and getattr(inputs, "us_volume", None) is not None and getattr(inputs, "mri", None) is not None:
        fraction = volume_overlap_fraction(inputs.mri, inputs.us_volume, result.transform, inputs.us_mask)
        figures["overlap_fraction"] = round(fraction, 4)
        findings += _overlap_findings(fraction, "of the covered US voxels fall inside the MRI", thresholds)
    elif "lc2-frames" in automatic and "overlap_fraction" in result.provenance:
        fraction = float(result.provenance["overlap_fraction"])
        figures["overlap_fraction"] = round(fraction, 4)
        findings += _overlap_findings(fraction, "of the frames' patch pixels fall inside the MRI", thresholds)
    if automatic & {"lc2", "lc2-frames", "mattes-mi"} and len(result.metric_trace):
        findings += _metric(result, figures)
    figures["thresholds"] = as_dict(thresholds)
    rank = {name: index for index, name in enumerate(VERDICTS)}
    worst = max((verdict for verdict, _ in findings), key=rank.__getitem__, default="accepted")
    if worst == "accepted":
        reasons = ("passed: " + "; ".join(line for verdict, line in findings),) if findings else ("passed",)
    else:
        reasons = tuple(line for verdict, line in sorted(findings, key=lambda f: -rank[f[0]]) if verdict != "accepted")
    return QualityVerdict(worst, reasons, figures)


def _rotation_deg(rotation: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0))))


def _movement(matrix, start_matrix, inputs, thresholds: QualityThresholds, figures: dict) -> list:
    """Rotation and translation of the correction, and the largest target displacement."""
    correction_mri = matrix @ np.linalg.inv(start_matrix)  # Mri -> Mri
    targets = getattr(inputs, "targets_mri", None)
    targets_mri = np.array(list(targets.values()), float).reshape(-1, 3) if targets else np.zeros((0, 3))
    us_points = getattr(inputs, "us_points_reference", None)
    if us_points is not None and len(us_points):
        centre_mri = apply_affine(start_matrix, np.asarray(us_points, float)).mean(axis=0)
    elif len(targets_mri):
        centre_mri = targets_mri.mean(axis=0)
    else:
        centre_mri = start_matrix[:3, 3]  # the Reference origin
    translation_mm = float(np.linalg.norm(apply_affine(correction_mri, centre_mri[None])[0] - centre_mri))
    rotation_deg = _rotation_deg(correction_mri[:3, :3])
    figures.update(translation_mm=round(translation_mm, 3), rotation_deg=round(rotation_deg, 3))
    if len(targets_mri):
        displaced = np.linalg.norm(apply_affine(correction_mri, targets_mri) - targets_mri, axis=1)
        figures["max_target_displacement_mm"] = round(float(displaced.max()), 3)
    line = f"moved {translation_mm:.1f} mm and {rotation_deg:.1f} deg from the start"
    if translation_mm > thresholds.doubtful_translation_mm or rotation_deg > thresholds.doubtful_rotation_deg:
        return [("doubtful", f"{line}: more than {thresholds.doubtful_translation_mm:g} mm or "
                             f"{thresholds.doubtful_rotation_deg:g} deg, beyond the capture range")]
    return [("accepted", line)]


def _overlap_findings(fraction: float, what: str, thresholds: QualityThresholds) -> list:
    line = f"overlap {fraction:.0%} ({what})"
    if fraction < thresholds.refuse_overlap_fraction:
        return [("refused", f"{line}: below {thresholds.refuse_overlap_fraction:.0%}, the data do not meet")]
    if fraction < thresholds.doubtful_overlap_fraction:
        return [("doubtful", f"{line}: below {thresholds.doubtful_overlap_fraction:.0%}")]
    return [("accepted", line)]


def _residuals(matrix, points_reference, tree, thresholds: QualityThresholds, trim_fraction: float = 0.8):
    """(robust residual mm, trimmed RMS mm, kept fraction, inlier fraction) of the points under ``matrix``."""
    distance_mm, _ = tree.query(apply_affine(matrix, points_reference))
    robust = float(np.sqrt(np.mean(np.minimum(distance_mm, thresholds.residual_cap_mm) ** 2)))
    kept = distance_mm <= np.quantile(distance_mm, trim_fraction)
    trimmed = float(np.sqrt(np.mean(distance_mm[kept] ** 2)))
    return robust, trimmed, float(kept.mean()), float(np.mean(distance_mm <= thresholds.inlier_distance_mm))


def _bone_checks(matrix, inputs, thresholds: QualityThresholds, figures: dict) -> list:
    from scipy.spatial import cKDTree

    from workbench.registration.params import IcpParameters
    from workbench.registration.surface import register_icp

    points_reference = np.asarray(inputs.us_points_reference, float)
    points_mri = np.asarray(inputs.mri_points, float)
    tree = cKDTree(points_mri)
    robust, trimmed, kept_fraction, overlap = _residuals(matrix, points_reference, tree, thresholds)
    figures.update(
        overlap_fraction=round(overlap, 4), kept_pair_fraction=round(kept_fraction, 4),
        residual_mm=round(trimmed, 3), robust_residual_mm=round(robust, 3),
    )
    findings = _overlap_findings(
        overlap, f"of the US bone points within {thresholds.inlier_distance_mm:g} mm of the MRI bone surface", thresholds
    )
    line = f"ICP residual {trimmed:.2f} mm RMS over the kept pairs"
    if trimmed > thresholds.refuse_residual_mm:
        findings.append(("refused", f"{line}: above {thresholds.refuse_residual_mm:g} mm"))
    elif trimmed > thresholds.doubtful_residual_mm:
        findings.append(("doubtful", f"{line}: above {thresholds.doubtful_residual_mm:g} mm"))
    else:
        findings.append(("accepted", line))
    # Level check: ICP again from one level up and one level down.
    axis = np.asarray(thresholds.level_axis_mri, float) / np.linalg.norm(thresholds.level_axis_mri)
    subsampled = points_reference[:: thresholds.level_subsample]
    params = IcpParameters(restart_offset_mm=0.0)
    neighbours = {}
    for sign in (1.0, -1.0):
        shift = np.eye(4)
        shift[:3, 3] = sign * thresholds.level_shift_mm * axis
        key = f"{sign * thresholds.level_shift_mm:+g}"
        try:
            fit = register_icp(subsampled, points_mri, Transform(shift @ matrix, "Reference", "Mri"), params)
        except RegistrationError:
            neighbours[key] = None  # no fit at all there
            continue
        neighbours[key] = _residuals(fit.transform.matrix, points_reference, tree, thresholds)[0]
    figures["level_residuals_mm"] = {key: None if value is None else round(value, 3) for key, value in neighbours.items()}
    fitted = [value for value in neighbours.values() if value is not None]
    if not fitted:
        findings.append(("accepted", "no neighbouring level fits at all"))
        return findings
    ratio = min(fitted) / max(robust, 1e-6)
    figures["level_ratio"] = round(ratio, 3)
    said = (f"the best neighbouring level ({thresholds.level_shift_mm:g} mm along the spine) has {ratio:.2f}x "
            f"this fit's robust residual ({min(fitted):.2f} vs {robust:.2f} mm)")
    if ratio < thresholds.refuse_level_ratio:
        findings.append(("refused", f"one-level slip: {said}, below {thresholds.refuse_level_ratio:g}"))
    elif ratio < thresholds.doubtful_level_ratio:
        findings.append(("doubtful", f"possible one-level slip: {said}, below {thresholds.doubtful_level_ratio:g}"))
    else:
        findings.append(("accepted", f"level check: {said}"))
    return findings


def _metric(result: RegistrationResult, figures: dict) -> list:
    """Final metric against the start's (LC2: higher is better; Mattes MI: its negative, lower is better)."""
    trace = result.metric_trace
    last_step = result.method.split("+")[-1]
    if last_step not in ("lc2", "lc2-frames", "mattes-mi"):
        return []
    first, final = float(trace[0]), float(trace[-1])
    figures.update(metric=round(final, 4), metric_start=round(first, 4))
    name = "Mattes MI (negative)" if last_step == "mattes-mi" else "LC2"
    if last_step != "mattes-mi" and final <= 0.0:
        return [("refused", "LC2 is 0: no US patch is explained by the MRI")]
    # Values of different resolution levels are not comparable: compare with the start on one level only.
    one_level = len(result.parameters.get("levels_mm", result.parameters.get("shrink_factors", ()))) == 1
    worse = final > first if last_step == "mattes-mi" else final < first
    if one_level and worse:
        return [("doubtful", f"{name} {final:.3f} is worse than at the start ({first:.3f})")]
    return [("accepted", f"{name} {first:.3f} -> {final:.3f}")]


def volume_overlap_fraction(mri, us_volume, reference_to_mri: Transform, us_mask=None, max_points: int = 20000) -> float:
    """Fraction of the covered US voxels that ``reference_to_mri`` puts inside the MRI's extent (0..1).

    Parameters
    ----------
    mri : SimpleITK.Image
        LPS mm (``Mri``).
    us_volume : SimpleITK.Image
        Reconstruction in ``Reference`` mm.
    reference_to_mri : Transform
    us_mask : (nz, ny, nx) bool array, optional
        Covered voxels; default the non-zero ones.
    max_points : int
        At most this many covered voxels are checked (evenly subsampled).
    """
    import SimpleITK as sitk

    mask = np.asarray(us_mask, bool) if us_mask is not None else sitk.GetArrayFromImage(us_volume) != 0
    index_kji = np.argwhere(mask)
    if len(index_kji) == 0:
        return 0.0
    index_kji = index_kji[:: max(1, len(index_kji) // max_points)]
    us_direction = np.array(us_volume.GetDirection(), float).reshape(3, 3)
    points_reference = np.array(us_volume.GetOrigin()) + (index_kji[:, ::-1] * np.array(us_volume.GetSpacing())) @ us_direction.T
    points_mri = reference_to_mri.apply_to_points(points_reference, from_frame="Reference")
    mri_direction = np.array(mri.GetDirection(), float).reshape(3, 3)
    index_ijk = ((points_mri - np.array(mri.GetOrigin())) @ mri_direction) / np.array(mri.GetSpacing())
    inside = np.all((index_ijk >= -0.5) & (index_ijk <= np.array(mri.GetSize()) - 0.5), axis=1)
    return float(inside.mean())
