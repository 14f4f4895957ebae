"""Paired-point (landmark) registration: ``ReferenceToMri`` from landmarks picked in both frames.

A user marks the same anatomical points (spinous and transverse process tips, facet joints,
skin markers) on the MRI (``Mri``, LPS, mm) and in the tracker's ``Reference`` frame, on
ultrasound frames (:func:`pixel_to_reference`) or with a tracked stylus
(:func:`stylus_tip_in_reference`). :func:`register_landmarks` fits the rigid transform and
reports what the user needs to judge it:

- FRE, the fiducial registration error (RMS residual at the landmarks), and the residual of
  each landmark;
- the leave-one-out error of each landmark and the likely outliers among them;
- the FLE (fiducial localisation error), given or estimated from the FRE;
- the predicted TRE (target registration error) at every target, from Fitzpatrick's formula
  (:func:`predicted_tre_mm`).

FRE is not TRE: a small residual at the landmarks says little about the error at a target
far from them (docs/registration.md, "Landmark registration"). Frames: docs/frames.md.
"""

from __future__ import annotations

import time
from typing import Iterable, NamedTuple, Sequence

import numpy as np

from workbench.case.model import MIN_LANDMARK_PAIRS, Landmark
from workbench.errors import FrameError, RegistrationError
from workbench.frames import Transform
from workbench.registration.result import RegistrationResult

__all__ = [
    "COLLINEAR_TOLERANCE",
    "MIN_PAIRS",
    "OUTLIER_MIN_MM",
    "LandmarkPairs",
    "estimate_fle_mm",
    "leave_one_out_mm",
    "pair_landmarks",
    "pixel_to_reference",
    "predicted_tre_mm",
    "register_landmarks",
    "rigid_fit",
    "STILL_TOLERANCE_MM",
    "MIN_STILL_FRAMES",
    "StillTip",
    "still_stylus_tip",
    "stylus_tip_in_reference",
    "stylus_tip_points_reference",
]

#: A rigid transform in 3-D needs at least this many non-collinear point pairs (the case model's rule).
MIN_PAIRS = MIN_LANDMARK_PAIRS
#: Landmarks count as collinear when their RMS distance from the best-fitting line is below
#: this fraction of their RMS spread along it (the rotation about the line is then undetermined).
COLLINEAR_TOLERANCE = 1e-3
#: A landmark is flagged as a likely outlier only if its leave-one-out error also exceeds this, mm.
OUTLIER_MIN_MM = 2.0
#: A stylus is held still while every tip position of the segment stays within this distance of
#: the segment's first one, mm (:func:`still_stylus_tip`).
STILL_TOLERANCE_MM = 1.0
#: A still segment needs at least this many valid frames.
MIN_STILL_FRAMES = 5


class LandmarkPairs(NamedTuple):
    """Landmarks of the two frames matched by their ``pair`` label.

    Attributes
    ----------
    names : list of str
        Pair labels, in the order the pairs first appear.
    points_reference : (N, 3) float array, mm
        In the ``Reference`` frame.
    points_mri : (N, 3) float array, mm
        In the ``Mri`` frame (LPS).
    unpaired : list of Landmark
        Landmarks without a ``pair`` label or without a partner in the other frame.
    """

    names: list[str]
    points_reference: np.ndarray
    points_mri: np.ndarray
    unpaired: list[Landmark]


# -- input checks -------------------------------------------------------------------------


def _points(points: np.ndarray | Iterable, what: str, columns: int = 3) -> np.ndarray:
    """``points`` as an (N, columns) float array, or :class:`RegistrationError`."""
    try:
        array = np.asarray(points, dtype=float)
    except (TypeError, ValueError):
        raise RegistrationError(f"{what} are not numeric") from None
    if array.ndim != 2 or array.shape[1] != columns:
        raise RegistrationError(f"{what} must have shape (N, {columns}), got {array.shape}")
    finite_rows = np.isfinite(array).all(axis=1)
    if not finite_rows.all():
        raise RegistrationError(f"{what} contain NaN or infinity (row {int(np.argmin(finite_rows))})")
    return array


def _number(value, what: str, allow_zero: bool) -> float:
    """``value`` as a finite float that is positive (or zero if allowed), or :class:`RegistrationError`."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = np.nan
    if not np.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        kind = "non-negative" if allow_zero else "positive"
        raise RegistrationError(f"{what} must be a finite, {kind} number, got {value!r}")
    return number


def _point_pairs(points_reference, points_mri) -> tuple[np.ndarray, np.ndarray]:
    reference = _points(points_reference, "Reference landmarks")
    mri = _points(points_mri, "Mri landmarks")
    if len(reference) != len(mri):
        raise RegistrationError(f"{len(reference)} Reference landmarks but {len(mri)} Mri landmarks; they must pair up")
    if len(reference) < MIN_PAIRS:
        raise RegistrationError(f"{MIN_PAIRS} landmark pairs needed, got {len(reference)}")
    return reference, mri


def _normalised_weights(weights, count: int) -> np.ndarray:
    """Weights summing to 1; equal weights when ``weights`` is None."""
    if weights is None:
        return np.full(count, 1.0 / count)
    try:
        w = np.asarray(weights, dtype=float)
    except (TypeError, ValueError):
        raise RegistrationError("weights are not numeric") from None
    if w.shape != (count,):
        raise RegistrationError(f"weights must have shape ({count},), one per landmark pair, got {w.shape}")
    if not np.all(np.isfinite(w)):
        raise RegistrationError("weights contain NaN or infinity")
    if np.any(w < 0):
        raise RegistrationError(f"weights must not be negative, got {float(w.min()):g}")
    if np.count_nonzero(w) < MIN_PAIRS:
        raise RegistrationError(f"{MIN_PAIRS} landmark pairs with a positive weight needed, got {np.count_nonzero(w)}")
    return w / w.sum()


def _check_not_collinear(centred: np.ndarray, weights: np.ndarray, what: str) -> None:
    """Raise if the weighted, centred points lie on a line (or a point)."""
    singular = np.linalg.svd(centred * np.sqrt(weights)[:, None], compute_uv=False)
    spread_mm = singular[0]  # weighted RMS distance from the centroid along the main axis
    off_line_mm = float(np.hypot(singular[1], singular[2]))
    if spread_mm <= 1e-9:
        raise RegistrationError(f"{what} coincide: they span no distance")
    if off_line_mm < COLLINEAR_TOLERANCE * spread_mm:
        raise RegistrationError(
            f"{what} are collinear: {off_line_mm:.3g} mm RMS off their line against {spread_mm:.3g} mm RMS along it "
            f"(need > {COLLINEAR_TOLERANCE:g} of it); add a landmark off the line"
        )


# -- the fit ------------------------------------------------------------------------------


def rigid_fit(points_reference, points_mri, weights=None) -> Transform:
    """Weighted least-squares rigid transform taking Reference landmarks onto Mri landmarks.

    Minimises ``sum_i w_i |R p_i + t - q_i|^2`` over rotations ``R`` (det +1) and translations
    ``t`` in closed form (Arun, Huang, Blostein 1987; Umeyama 1991): the SVD of the weighted
    cross-covariance of the centred points, with the sign correction that turns a reflection
    (``det = -1``, possible for planar or noisy configurations) into the best proper rotation.

    Parameters
    ----------
    points_reference : (N, 3) float array, mm
        Landmarks in the ``Reference`` frame.
    points_mri : (N, 3) float array, mm
        The same landmarks, same order, in the ``Mri`` frame (LPS).
    weights : (N,) float array, optional
        Relative weights (e.g. ``1 / FLE_i^2``), non-negative, at least 3 positive; equal if None.

    Returns
    -------
    Transform
        ``ReferenceToMri``; a proper rigid transform.

    Raises
    ------
    RegistrationError
        Fewer than 3 pairs, shapes that differ, NaN or infinite coordinates, negative weights or
        fewer than 3 positive ones, or landmarks (with their weights) that are collinear or coincide.
    """
    reference, mri = _point_pairs(points_reference, points_mri)
    w = _normalised_weights(weights, len(reference))
    centroid_reference = w @ reference
    centroid_mri = w @ mri
    centred_reference = reference - centroid_reference
    centred_mri = mri - centroid_mri
    _check_not_collinear(centred_reference, w, "Reference landmarks")
    _check_not_collinear(centred_mri, w, "Mri landmarks")
    cross_covariance = (centred_reference * w[:, None]).T @ centred_mri
    u, _, vt = np.linalg.svd(cross_covariance)
    sign = 1.0 if np.linalg.det(vt.T @ u.T) > 0 else -1.0
    rotation = vt.T @ np.diag([1.0, 1.0, sign]) @ u.T
    translation_mm = centroid_mri - rotation @ centroid_reference
    return Transform.from_rotation_translation(rotation, translation_mm, "Reference", "Mri")


# -- where landmarks come from ----------------------------------------------------------


def pair_landmarks(landmarks: Sequence[Landmark]) -> LandmarkPairs:
    """Match ``Mri`` and ``Reference`` landmarks by their ``pair`` label.

    Parameters
    ----------
    landmarks : sequence of Landmark
        From a case (``Case.landmarks``); frames ``"Mri"`` (LPS, mm) and ``"Reference"`` (mm).

    Returns
    -------
    LandmarkPairs
        Names, (N, 3) Reference and (N, 3) Mri points in pair order, and the unpaired landmarks.

    Raises
    ------
    RegistrationError
        A landmark in another frame, or two landmarks of one frame with the same pair label.
    """
    by_frame: dict[str, dict[str, Landmark]] = {"Reference": {}, "Mri": {}}
    order: list[str] = []
    unlabelled = []
    for landmark in landmarks:
        if landmark.frame not in by_frame:
            raise RegistrationError(
                f"landmark {landmark.name!r} is in frame {landmark.frame!r}; only Mri and Reference landmarks pair up"
            )
        if landmark.pair is None:
            unlabelled.append(landmark)
            continue
        frame_pairs = by_frame[landmark.frame]
        if landmark.pair in frame_pairs:
            raise RegistrationError(f"two {landmark.frame} landmarks have the pair label {landmark.pair!r}")
        frame_pairs[landmark.pair] = landmark
        if landmark.pair not in order:
            order.append(landmark.pair)
    reference, mri = by_frame["Reference"], by_frame["Mri"]
    names = [pair for pair in order if pair in reference and pair in mri]
    partnerless = [reference.get(pair) or mri[pair] for pair in order if pair not in names]
    return LandmarkPairs(
        names=names,
        points_reference=np.array([reference[n].point_mm for n in names], dtype=float).reshape(-1, 3),
        points_mri=np.array([mri[n].point_mm for n in names], dtype=float).reshape(-1, 3),
        unpaired=unlabelled + partnerless,
    )


def _require(transform: Transform, name: str) -> None:
    if not isinstance(transform, Transform) or transform.name != name:
        got = transform.name if isinstance(transform, Transform) else type(transform).__name__
        raise FrameError(f"expected the {name} transform, got {got}")


def pixel_to_reference(pixel_xy, image_to_probe: Transform, probe_to_reference: Transform) -> np.ndarray:
    """Reference-frame positions of points picked on an ultrasound frame.

    Parameters
    ----------
    pixel_xy : (N, 2) float array, pixel
        Column (x) and row (y) of each point in the ``Image`` frame (MF orientation; z = 0).
    image_to_probe : Transform
        ``ImageToProbe``, the probe calibration (pixel to mm).
    probe_to_reference : Transform
        ``ProbeToReference``, the tracked pose of the probe when the frame was acquired.

    Returns
    -------
    (N, 3) float array, mm
        Points in the ``Reference`` frame. See docs/frames.md.
    """
    _require(image_to_probe, "ImageToProbe")
    _require(probe_to_reference, "ProbeToReference")
    pixels = _points(pixel_xy, "pixel coordinates", columns=2)
    image_points = np.column_stack([pixels, np.zeros(len(pixels))])
    return (probe_to_reference @ image_to_probe).apply_to_points(image_points)


def stylus_tip_in_reference(stylus_tip_to_reference: Transform) -> np.ndarray:
    """Position of a tracked stylus tip in the ``Reference`` frame, mm, shape (3,).

    The tip is the origin of the ``StylusTip`` frame, so this is the translation of
    ``StylusTipToReference`` (= ``StylusToReference @ StylusTipToStylus``). See docs/frames.md.
    """
    _require(stylus_tip_to_reference, "StylusTipToReference")
    return stylus_tip_to_reference.translation


def stylus_tip_points_reference(stylus_to_reference, stylus_tip_to_stylus: Transform) -> np.ndarray:
    """Stylus tip position in the ``Reference`` frame in every frame of a tracked stylus recording.

    ``StylusTipToReference = StylusToReference @ StylusTipToStylus`` per frame; the tip is the
    origin of ``StylusTip``, so its position is ``StylusToReference`` applied to the translation
    of the pivot calibration ``StylusTipToStylus``. See docs/frames.md.

    Parameters
    ----------
    stylus_to_reference : (N, 4, 4) float array
        ``StylusToReference`` per frame, mm (e.g. ``workbench.io.sequence.pose_series(sequence,
        "StylusToReference")``); rows of invalid frames may be NaN.
    stylus_tip_to_stylus : Transform
        ``StylusTipToStylus``, the pivot calibration (mm).

    Returns
    -------
    (N, 3) float array, mm
        Tip positions in ``Reference``; NaN where the pose is NaN.
    """
    _require(stylus_tip_to_stylus, "StylusTipToStylus")
    poses = np.asarray(stylus_to_reference, dtype=float)
    if poses.ndim != 3 or poses.shape[1:] != (4, 4):
        raise RegistrationError(f"StylusToReference poses must have shape (N, 4, 4), got {poses.shape}")
    tip_stylus_homogeneous = np.append(stylus_tip_to_stylus.translation, 1.0)
    return (poses @ tip_stylus_homogeneous)[:, :3]


class StillTip(NamedTuple):
    """The stylus tip averaged over a still segment of a recording.

    Attributes
    ----------
    point_reference : (3,) float array, mm
        Mean tip position in ``Reference``.
    spread_mm : float
        RMS distance of the segment's tip positions from that mean, mm.
    frames : (K,) int array
        The frames averaged (consecutive, all valid).
    """

    point_reference: np.ndarray
    spread_mm: float
    frames: np.ndarray


def still_stylus_tip(
    tips_reference,
    valid,
    frames=None,
    tolerance_mm: float = STILL_TOLERANCE_MM,
    min_frames: int = MIN_STILL_FRAMES,
) -> StillTip:
    """Average the stylus tip over the valid frames of a still segment.

    Parameters
    ----------
    tips_reference : (N, 3) float array, mm
        Tip per frame in ``Reference`` (:func:`stylus_tip_points_reference`).
    valid : (N,) bool array
        Frames whose pose is usable (tracking OK).
    frames : (start, stop) pair of int, optional
        Average the valid frames ``start <= n < stop`` (the user chose the segment). Default: the
        longest run of consecutive valid frames whose tips all stay within ``tolerance_mm`` of
        the run's first tip.
    tolerance_mm : float
        Still means every tip of the segment within this distance of its first tip, mm.
    min_frames : int
        Fewest valid frames a segment may have.

    Returns
    -------
    StillTip

    Raises
    ------
    RegistrationError
        No valid frame, a chosen segment with fewer than ``min_frames`` valid frames or whose tip
        moved more than ``tolerance_mm``, or no still segment of ``min_frames`` frames.
    """
    tips = np.asarray(tips_reference, dtype=float).reshape(-1, 3)
    usable = np.asarray(valid, dtype=bool).reshape(-1) & np.isfinite(tips).all(axis=1)
    if len(usable) != len(tips):
        raise RegistrationError(f"{len(tips)} tip positions but {len(usable)} validity flags")
    tolerance_mm = _number(tolerance_mm, "tolerance_mm", allow_zero=True)
    if not usable.any():
        raise RegistrationError("no frame of the stylus recording has a valid pose")
    if frames is not None:
        start, stop = (int(v) for v in frames)
        chosen = np.flatnonzero(usable[max(start, 0):max(stop, 0)]) + max(start, 0)
        if len(chosen) < min_frames:
            raise RegistrationError(
                f"frames {start}-{stop - 1} hold {len(chosen)} valid frames; at least {min_frames} are needed"
            )
        moved_mm = float(np.max(np.linalg.norm(tips[chosen] - tips[chosen[0]], axis=1)))
        if moved_mm > tolerance_mm:
            raise RegistrationError(
                f"the stylus tip moved {moved_mm:.1f} mm during frames {start}-{stop - 1} (still means within "
                f"{tolerance_mm:g} mm); choose frames where the stylus is held still"
            )
    else:
        best_start, best_length = 0, 0
        for first in np.flatnonzero(usable):
            last = first
            while (last + 1 < len(tips) and usable[last + 1]
                   and np.linalg.norm(tips[last + 1] - tips[first]) <= tolerance_mm):
                last += 1
            if last - first + 1 > best_length:
                best_start, best_length = int(first), int(last - first + 1)
        if best_length < min_frames:
            raise RegistrationError(
                f"no still segment in the stylus recording: the longest run of valid frames with the tip within "
                f"{tolerance_mm:g} mm has {best_length} frames, at least {min_frames} are needed"
            )
        chosen = np.arange(best_start, best_start + best_length)
    mean_reference = tips[chosen].mean(axis=0)
    spread_mm = float(np.sqrt(np.mean(np.sum((tips[chosen] - mean_reference) ** 2, axis=1))))
    return StillTip(mean_reference, spread_mm, chosen)


# -- error analysis -----------------------------------------------------------------------


def predicted_tre_mm(points, fle_mm: float, targets) -> np.ndarray:
    """Expected target registration error of a rigid landmark fit (Fitzpatrick, West, Maurer 1998).

    ``TRE^2(r) = FLE^2 / N * (1 + 1/3 * sum_k d_k^2 / f_k^2)``, where ``d_k`` is the distance of
    the target ``r`` from principal axis ``k`` of the landmark configuration (through its
    centroid) and ``f_k`` the RMS distance of the landmarks from that axis (IEEE TMI 17(5):694,
    1998). It is the RMS over repeated registrations, to first order in FLE, for an unweighted fit
    with independent, identical, isotropic localisation errors of RMS magnitude ``fle_mm``.

    Parameters
    ----------
    points : (N, 3) float array, mm
        Landmark positions (any frame: the prediction is invariant under rigid motion).
    fle_mm : float
        Fiducial localisation error: RMS of the 3-D error vector (sqrt(3) x the per-axis SD), mm.
    targets : (M, 3) float array, mm
        Target positions in the frame of ``points``.

    Returns
    -------
    (M,) float array, mm
        Predicted RMS TRE at each target.
    """
    landmarks = _points(points, "landmarks")
    target_points = _points(targets, "targets")
    if len(landmarks) < MIN_PAIRS:
        raise RegistrationError(f"{MIN_PAIRS} landmark pairs needed, got {len(landmarks)}")
    fle_mm = _number(fle_mm, "FLE (mm)", allow_zero=True)
    centroid = landmarks.mean(axis=0)
    centred = landmarks - centroid
    weights = np.full(len(landmarks), 1.0 / len(landmarks))
    _check_not_collinear(centred, weights, "landmarks")
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    # Squared distance from axis k = squared length minus squared projection on it.
    f_squared = np.mean(np.sum(centred**2, axis=1)[:, None] - (centred @ axes.T) ** 2, axis=0)
    offsets = target_points - centroid
    d_squared = np.sum(offsets**2, axis=1)[:, None] - (offsets @ axes.T) ** 2
    tre_squared = fle_mm**2 / len(landmarks) * (1.0 + np.sum(d_squared / f_squared, axis=1) / 3.0)
    return np.sqrt(tre_squared)


def estimate_fle_mm(fre_mm: float, count: int) -> float:
    """FLE (RMS, mm) estimated from the FRE of a fit of ``count`` landmarks.

    ``<FRE^2> = (1 - 2/N) FLE^2`` (Fitzpatrick, West, Maurer 1998), so
    ``FLE^2 ~ FRE^2 * N / (N - 2)``. One fit gives a rough estimate (few degrees of freedom).
    """
    if count < MIN_PAIRS:
        raise RegistrationError(f"{MIN_PAIRS} landmark pairs needed, got {count}")
    return float(fre_mm * np.sqrt(count / (count - 2)))


def leave_one_out_mm(points_reference, points_mri, weights=None) -> np.ndarray:
    """Leave-one-out error of each landmark, mm.

    For landmark ``i``: fit without it, map its Reference point with that fit and take the
    distance to its Mri point. It estimates the error at a target where the landmark is, so a
    mislabelled or badly picked landmark stands out. NaN where the other landmarks cannot
    define a transform (fewer than 3, or collinear).

    Parameters
    ----------
    points_reference : (N, 3) float array, mm
        Landmarks in the ``Reference`` frame.
    points_mri : (N, 3) float array, mm
        The same landmarks in the ``Mri`` frame (LPS).
    weights : (N,) float array, optional
        Relative weights of the fits (see :func:`rigid_fit`).

    Returns
    -------
    (N,) float array, mm
    """
    reference, mri = _point_pairs(points_reference, points_mri)
    w = _normalised_weights(weights, len(reference))
    errors = np.full(len(reference), np.nan)
    for i in range(len(reference)):
        keep = np.arange(len(reference)) != i
        try:
            fit = rigid_fit(reference[keep], mri[keep], w[keep])
        except RegistrationError:
            continue
        errors[i] = np.linalg.norm(fit.apply_to_points(reference[i]) - mri[i])
    return errors


def _outliers(names: list[str], loo_mm: np.ndarray, threshold: float) -> list[str]:
    available = loo_mm[np.isfinite(loo_mm)]
    if len(available) == 0:
        return []
    limit_mm = max(threshold * float(np.median(available)), OUTLIER_MIN_MM)
    return [name for name, error in zip(names, loo_mm) if np.isfinite(error) and error > limit_mm]


def register_landmarks(
    names: Sequence[str],
    points_reference,
    points_mri,
    *,
    weights=None,
    fle_mm: float | None = None,
    targets_mri: dict | None = None,
    outlier_threshold: float = 3.0,
) -> RegistrationResult:
    """Paired-point rigid registration with FRE, leave-one-out errors, outliers and predicted TRE.

    Parameters
    ----------
    names : sequence of str
        One name per landmark pair (e.g. from :func:`pair_landmarks`).
    points_reference : (N, 3) float array, mm
        Landmarks in the ``Reference`` frame.
    points_mri : (N, 3) float array, mm
        The same landmarks in the ``Mri`` frame (LPS).
    weights : (N,) float array, optional
        Relative weights of the fit (see :func:`rigid_fit`).
    fle_mm : float, optional
        Fiducial localisation error, RMS of the 3-D error (sqrt(3) x per-axis SD), mm. If None it
        is estimated from the FRE: ``FLE^2 ~ FRE^2 * N / (N - 2)`` (Fitzpatrick et al. 1998).
    targets_mri : dict of str to (3,) float array, mm, optional
        Named targets in the ``Mri`` frame; the predicted TRE is computed at each.
    outlier_threshold : float
        Outlier rule: a landmark is flagged when its leave-one-out error exceeds
        ``outlier_threshold`` x the median leave-one-out error of all landmarks **and**
        :data:`OUTLIER_MIN_MM` (2 mm), so a leave-one-out error of 2 mm or less never raises a flag.

    Returns
    -------
    RegistrationResult
        ``method="landmarks"``, ``transform`` ``ReferenceToMri``, ``fre_mm`` (weighted RMS of the
        residuals, equal to the plain RMS for equal weights), ``residuals_mm`` per landmark and
        ``predicted_tre_mm`` per target. ``provenance`` holds ``"landmarks"`` (names),
        ``"leave_one_out_mm"`` (name -> mm, None where the other landmarks cannot define a
        transform; empty with only 3 landmarks), ``"outliers"`` (names flagged by the rule above),
        ``"fle_mm"`` (the FLE used) and ``"fle_source"`` (``"given"`` or ``"estimated from FRE"``).

    Notes
    -----
    Fitzpatrick's formula assumes an unweighted fit; with unequal weights the predicted TRE is
    that of the unweighted configuration, an approximation (the message says so).
    """
    start_s = time.perf_counter()
    names = [str(name) for name in names]
    reference, mri = _point_pairs(points_reference, points_mri)
    if len(names) != len(reference):
        raise RegistrationError(f"{len(names)} names for {len(reference)} landmark pairs")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise RegistrationError(f"landmark names must be unique; repeated: {', '.join(map(repr, repeated))}")
    outlier_threshold = _number(outlier_threshold, "outlier_threshold", allow_zero=False)
    fle_given_mm = None if fle_mm is None else _number(fle_mm, "FLE (mm)", allow_zero=True)
    transform = rigid_fit(reference, mri, weights)
    w = _normalised_weights(weights, len(reference))
    residuals_mm = np.linalg.norm(transform.apply_to_points(reference) - mri, axis=1)
    fre_mm = float(np.sqrt(w @ residuals_mm**2))
    fle_source = "estimated from FRE" if fle_given_mm is None else "given"
    fle_used_mm = estimate_fle_mm(fre_mm, len(reference)) if fle_given_mm is None else fle_given_mm
    loo_mm = leave_one_out_mm(reference, mri, weights) if len(reference) > MIN_PAIRS else np.zeros(0)
    outliers = _outliers(names, loo_mm, outlier_threshold)
    target_names = list(targets_mri or {})
    tre_mm = (
        predicted_tre_mm(mri, fle_used_mm, [targets_mri[n] for n in target_names]) if target_names else np.zeros(0)
    )
    weighted = weights is not None and not np.allclose(w, w[0])
    return RegistrationResult(
        method="landmarks",
        transform=transform,
        run_time_s=time.perf_counter() - start_s,
        parameters={
            "weights": None if weights is None else [float(v) for v in w],
            "fle_mm": fle_given_mm,
            "outlier_threshold": outlier_threshold,
            "outlier_min_mm": OUTLIER_MIN_MM,
        },
        provenance={
            "landmarks": names,
            "leave_one_out_mm": {n: (float(e) if np.isfinite(e) else None) for n, e in zip(names, loo_mm)},
            "outliers": outliers,
            "fle_mm": fle_used_mm,
            "fle_source": fle_source,
        },
        fre_mm=fre_mm,
        residuals_mm={n: float(r) for n, r in zip(names, residuals_mm)},
        predicted_tre_mm={n: float(t) for n, t in zip(target_names, tre_mm)},
        converged=True,
        message=_summary(len(names), fre_mm, fle_used_mm, fle_source, tre_mm, outliers, loo_mm, names, weighted),
    )


def _summary(count, fre_mm, fle_mm, fle_source, tre_mm, outliers, loo_mm, names, weighted) -> str:
    parts = [f"{count} landmarks, FRE {fre_mm:.2f} mm, FLE {fle_mm:.2f} mm ({fle_source})"]
    if len(tre_mm):
        tre_range = f"{tre_mm.min():.2f}-{tre_mm.max():.2f} mm"
        parts.append(f"predicted TRE {tre_range} at {len(tre_mm)} targets (FRE is not TRE)")
    if weighted:
        parts.append("weighted fit: predicted TRE assumes equal weights")
    if count == MIN_PAIRS:
        parts.append("no leave-one-out check with only 3 landmarks")
    if outliers:
        loo = dict(zip(names, loo_mm))
        parts.append("likely outliers: " + ", ".join(f"{n} (leave-one-out {loo[n]:.1f} mm)" for n in outliers))
    return "; ".join(parts)
