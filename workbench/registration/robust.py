"""Bone registration that holds under realistic error: global start search, robust ICP, data-estimated
speed-of-sound scale and video latency, and a one-level check that fixes or flags a slip.

:func:`register_bone_robust` (pipeline refinement ``"bone-robust"``) registers the US bone points
(``Reference``) to the MRI bone surface (``Mri``) in three steps:

1. **Global search**: coarse ICP (subsampled points, wide distance schedule) from the start and
   from it shifted along the spine by ``+-level_shift_mm / 2`` and ``+-level_shift_mm`` and across
   it by ``+-lateral_search_mm``; each candidate is scored by the capped residual over all
   points (RMS of ``min(distance, cap)``), so a start 20 mm off converges to the right level.
2. **Robust joint fit**: point-to-plane ICP with Huber weights on the plane distance and the
   closest ``trim_fraction`` of pairs, solving jointly for the rigid motion and, when the points
   come with how they were measured (:class:`BeamPoints`), for the **speed-of-sound scale** along
   every beam (the scanner assumes 1540 m/s; tissue is 1450-1580 m/s, a 0.94-1.03 depth scale) and
   the **video latency** (each frame carries the poses read ``latency_s`` before its image was
   acquired, so its true pose is the tracking at its timestamp plus ``latency_s``). Both
   are regularised toward their nominal values (1, 0 s) so that a direction the data do not
   constrain (a constant-speed sweep makes latency a pure translation) stays nominal.
3. **Level check**: the fit is repeated from the result shifted by one vertebral level up and
   down; a neighbour whose capped residual is below ``level_switch_ratio`` times this fit's is
   taken instead (``provenance["level_check"]["switched"]``); a neighbour that fits about as well
   is left to the quality gate, which calls the result doubtful or refuses it
   (:mod:`workbench.registration.quality`).

Frames: ``ReferenceToMri`` (docs/frames.md); points mm; image pixels MF-oriented.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation, Slerp

from workbench.errors import RegistrationError
from workbench.frames import Transform, apply_affine
from workbench.registration.params import BonePointParameters, RobustBoneParameters, as_dict
from workbench.registration.result import RegistrationResult
from workbench.registration.surface import _checked_points, _surface_normals

__all__ = [
    "BeamGeometry",
    "BeamPoints",
    "beam_points_from_frames",
    "capped_residual_mm",
    "register_bone_robust",
]


@dataclass(frozen=True)
class BeamGeometry:
    """Where each beam leaves the transducer, to scale depths along it.

    Attributes
    ----------
    fan_origin_px : (2,) tuple of float or None
        Apex of a curvilinear probe's fan, MF pixels (column, row); None: a linear probe, whose
        beams are the image columns leaving the face at row ``face_row_px``.
    fan_radius_start_px : float
        Distance from the apex to the transducer face, pixels (curvilinear).
    face_row_px : float
        Row of the transducer face (linear), pixels.
    """

    fan_origin_px: tuple[float, float] | None = None
    fan_radius_start_px: float = 0.0
    face_row_px: float = 0.0

    @classmethod
    def of_probe(cls, probe) -> "BeamGeometry":
        """From a probe model with ``is_curvilinear``, ``fan_origin_px`` and ``fan_radius_start_px``."""
        if getattr(probe, "is_curvilinear", False):
            return cls(tuple(float(v) for v in probe.fan_origin_px), float(probe.fan_radius_start_px))
        return cls()

    def face_px(self, pixels_px: np.ndarray) -> np.ndarray:
        """(N, 2) pixels where the beams through ``pixels_px`` (N, 2) (column, row) leave the face."""
        pixels_px = np.asarray(pixels_px, float)
        if self.fan_origin_px is None:
            return np.column_stack([pixels_px[:, 0], np.full(len(pixels_px), self.face_row_px)])
        origin = np.asarray(self.fan_origin_px, float)
        arm = pixels_px - origin
        length = np.maximum(np.linalg.norm(arm, axis=1, keepdims=True), 1e-9)
        return origin + arm / length * self.fan_radius_start_px


@dataclass(frozen=True, eq=False)
class BeamPoints:
    """US bone points with how they were measured: pixel, frame, pose and time.

    Attributes
    ----------
    pixels_px : (N, 2) float array
        (column, row) of each bone point, MF pixels.
    face_px : (N, 2) float array
        Where its beam leaves the transducer face, pixels (depth = distance from there).
    frame_index : (N,) int array
        Its frame (index into ``probe_to_reference`` and ``timestamps_s``).
    image_to_probe : Transform
        ``ImageToProbe`` (pixels to mm).
    probe_to_reference : (F, 4, 4) float array
        ``ProbeToReference`` of every frame, mm (the tracker's, at the frame's timestamp).
    timestamps_s : (F,) float array
        Frame timestamps, s; a gap over ``segment_gap_s`` starts a new sweep (poses are never
        interpolated across sweeps).
    segment_gap_s : float
    pose_valid : (F,) bool array or None
        Frames whose pose is OK (None: all); interpolation uses only these.
    """

    pixels_px: np.ndarray
    face_px: np.ndarray
    frame_index: np.ndarray
    image_to_probe: Transform
    probe_to_reference: np.ndarray
    timestamps_s: np.ndarray
    segment_gap_s: float = 0.5
    pose_valid: np.ndarray | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.pixels_px)

    def subset(self, step: int) -> "BeamPoints":
        """Every ``step``-th point (same frames and poses)."""
        return BeamPoints(
            self.pixels_px[::step], self.face_px[::step], self.frame_index[::step], self.image_to_probe,
            self.probe_to_reference, self.timestamps_s, self.segment_gap_s, self.pose_valid,
        )

    def poses(self, latency_s: float = 0.0) -> np.ndarray:
        """(F, 4, 4) ``ProbeToReference`` of every frame at its timestamp plus ``latency_s``.

        With a video latency ``latency_s`` (poses read that long before the image), these are the
        poses the images were acquired at.

        Interpolated within its sweep (translation linear, rotation slerp), extrapolated linearly
        at a sweep's ends (translation; rotation held).
        """
        if latency_s == 0.0:
            return self.probe_to_reference
        key = round(float(latency_s), 9)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        out = np.array(self.probe_to_reference, float)
        valid = np.ones(len(out), bool) if self.pose_valid is None else np.asarray(self.pose_valid, bool)
        for segment in self._segments():
            indices = segment
            wanted = self.timestamps_s[indices] + latency_s
            indices = indices[valid[indices]]
            if len(indices) < 2:
                continue
            times = self.timestamps_s[indices]
            poses = self.probe_to_reference[indices]
            for axis in range(3):
                out[segment, axis, 3] = _interp_linear(wanted, times, poses[:, axis, 3])
            rotations = Rotation.from_matrix(poses[:, :3, :3])
            out[segment, :3, :3] = Slerp(times, rotations)(np.clip(wanted, times[0], times[-1])).as_matrix()
        if len(self._cache) > 64:
            self._cache.clear()
        self._cache[key] = out
        return out

    def _segments(self) -> list[np.ndarray]:
        breaks = np.nonzero(np.diff(self.timestamps_s) > self.segment_gap_s)[0] + 1
        return np.split(np.arange(len(self.timestamps_s)), breaks)

    def points_reference(self, scale: float = 1.0, latency_s: float = 0.0) -> np.ndarray:
        """(N, 3) points in ``Reference``, mm, with depths scaled by ``scale`` along each beam and
        poses taken ``latency_s`` after each frame's timestamp (:meth:`poses`)."""
        pixels = self.face_px + scale * (self.pixels_px - self.face_px)
        homogeneous = np.column_stack([pixels, np.zeros(len(pixels)), np.ones(len(pixels))])
        probe_mm = homogeneous @ self.image_to_probe.matrix.T
        poses = self.poses(latency_s)[self.frame_index]
        return np.einsum("nij,nj->ni", poses, probe_mm)[:, :3]


def _interp_linear(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """Linear interpolation that extrapolates linearly beyond the ends."""
    y = np.interp(x, xp, fp)
    low, high = x < xp[0], x > xp[-1]
    y[low] = fp[0] + (x[low] - xp[0]) * (fp[1] - fp[0]) / (xp[1] - xp[0])
    y[high] = fp[-1] + (x[high] - xp[-1]) * (fp[-1] - fp[-2]) / (xp[-1] - xp[-2])
    return y


def beam_points_from_frames(
    frames, image_to_probe: Transform, beam: BeamGeometry = BeamGeometry(), params=BonePointParameters(),
    probe_to_reference: np.ndarray | None = None, timestamps_s: np.ndarray | None = None,
) -> BeamPoints:
    """The bone points of :func:`~workbench.registration.surface.us_bone_points`, kept with how they were measured.

    Parameters
    ----------
    frames : TrackedSequence or (N, H, W) uint8 array
    image_to_probe : Transform
        ``ImageToProbe``.
    beam : BeamGeometry
        The probe's beam geometry (for the depth scale).
    params : BonePointParameters or BoneDetectParameters
    probe_to_reference : (N, 4, 4) float array, optional
        Required with a bare array.
    timestamps_s : (N,) float array, optional
        Required with a bare array (a sequence has its own).

    Returns
    -------
    BeamPoints

    Raises
    ------
    RegistrationError
        As :func:`~workbench.registration.surface.us_bone_points`.
    """
    from workbench.registration.params import BoneDetectParameters
    from workbench.registration.surface import _bone_pixels, _frames_and_poses

    if image_to_probe.name != "ImageToProbe":
        raise RegistrationError(f"image_to_probe must be ImageToProbe, got {image_to_probe.name}")
    images, poses, valid = _frames_and_poses(frames, probe_to_reference)
    times = np.asarray(frames.timestamps_s if timestamps_s is None and hasattr(frames, "timestamps_s") else timestamps_s, float)
    if times.shape != (len(images),):
        raise RegistrationError(f"{len(images)} frames need {len(images)} timestamps, got shape {times.shape}")
    pixel_mm = float(np.linalg.norm(image_to_probe.matrix[:3, 1]))
    if isinstance(params, BoneDetectParameters):
        from workbench.registration.bone_detect import detect_bone

        lateral_mm = float(np.linalg.norm(image_to_probe.matrix[:3, 0]))
        detection = detect_bone(images, (lateral_mm, pixel_mm), params, frames_used=valid)
        per_frame = [p[p[:, 0] % params.column_step == 0] if used else np.zeros((0, 2)) for p, used in zip(detection.pixels_px, valid)]
    else:
        per_frame = [np.column_stack(_bone_pixels(image, pixel_mm, params)) if used else np.zeros((0, 2))
                     for image, used in zip(images, valid)]
    pixels = np.concatenate([np.asarray(p, float).reshape(-1, 2) for p in per_frame])
    if len(pixels) == 0:
        raise RegistrationError(f"no bone surface found in {int(valid.sum())} frames")
    index = np.concatenate([np.full(len(p), i) for i, p in enumerate(per_frame)]).astype(int)
    # Invalid poses never carry points; replace them so interpolation stays finite.
    poses = np.where(valid[:, None, None], poses, np.eye(4))
    return BeamPoints(pixels, beam.face_px(pixels), index, image_to_probe, poses, times, pose_valid=valid)


def capped_residual_mm(matrix: np.ndarray, points_reference: np.ndarray, tree_mri: cKDTree, cap_mm: float) -> float:
    """RMS over all points of the distance to the MRI surface capped at ``cap_mm``, mm."""
    distance_mm, _ = tree_mri.query(apply_affine(matrix, points_reference), distance_upper_bound=cap_mm)
    return float(np.sqrt(np.mean(np.minimum(distance_mm, cap_mm) ** 2)))


@dataclass
class _State:
    matrix: np.ndarray
    scale: float = 1.0
    latency_s: float = 0.0


class _Problem:
    """The US points (plain or with beam geometry), the MRI surface and its normals."""

    def __init__(self, points, points_mri: np.ndarray, params: RobustBoneParameters):
        self.params = params
        self.beam = points if isinstance(points, BeamPoints) else None
        self.fixed = None if self.beam is not None else _checked_points(points, "points_reference")
        self.points_mri = _checked_points(points_mri, "points_mri")
        self.tree = cKDTree(self.points_mri)
        self.normals = _surface_normals(self.points_mri, self.tree)

    def points(self, state: _State, step: int = 1) -> np.ndarray:
        if self.beam is None:
            return self.fixed[::step]
        return self.beam.points_reference(state.scale, state.latency_s)[::step]

    def count(self) -> int:
        return len(self.beam) if self.beam is not None else len(self.fixed)

    def residual(self, state: _State, step: int = 1) -> float:
        return capped_residual_mm(state.matrix, self.points(state, step), self.tree, self.params.residual_cap_mm)

    def fit(self, state: _State, schedule, step: int = 1, estimate: bool = False, max_iterations: int | None = None,
            trace: list | None = None) -> _State:
        """Robust point-to-plane ICP over ``schedule`` (mm), optionally with scale and latency."""
        p = self.params
        state = _State(state.matrix.copy(), state.scale, state.latency_s)
        estimate_scale = estimate and self.beam is not None and p.estimate_scale
        estimate_latency = estimate and self.beam is not None and p.estimate_latency
        iterations = max_iterations or p.max_iterations
        for max_distance_mm in schedule:
            for _ in range(iterations):
                points_reference = self.points(state, step)
                moved = apply_affine(state.matrix, points_reference)
                distance_mm, nearest = self.tree.query(moved, distance_upper_bound=max_distance_mm)
                kept = np.isfinite(distance_mm)
                if kept.sum() < p.min_pairs:
                    raise RegistrationError(
                        f"robust ICP found only {int(kept.sum())} point pairs within {max_distance_mm:g} mm "
                        f"(needs {p.min_pairs}): the start is too far off or the surfaces do not overlap"
                    )
                cutoff = np.quantile(distance_mm[kept], p.trim_fraction)
                kept &= distance_mm <= cutoff
                normals = self.normals[nearest[kept]]
                targets = self.points_mri[nearest[kept]]
                plane_mm = np.sum((targets - moved[kept]) * normals, axis=1)
                weights = np.minimum(1.0, p.huber_mm / np.maximum(np.abs(plane_mm), 1e-9))
                if trace is not None:
                    trace.append(float(np.sqrt(np.mean(distance_mm[kept] ** 2))))
                centre = moved[kept].mean(axis=0)
                columns = [np.cross(moved[kept] - centre, normals), normals]
                priors = [np.zeros(6)]
                if estimate_scale:
                    ds = 1e-3
                    shifted = apply_affine(state.matrix, self.beam.points_reference(state.scale + ds, state.latency_s)[::step])
                    columns.append((np.sum((shifted - moved)[kept] * normals, axis=1) / ds)[:, None])
                    priors.append([p.scale_prior_weight])
                if estimate_latency:
                    dt = 2e-3
                    shifted = apply_affine(state.matrix, self.beam.points_reference(state.scale, state.latency_s + dt)[::step])
                    columns.append((np.sum((shifted - moved)[kept] * normals, axis=1) / dt)[:, None])
                    priors.append([p.latency_prior_weight])
                system = np.hstack(columns)
                root = np.sqrt(weights)[:, None]
                a = system * root
                b = plane_mm * root[:, 0]
                # Ridge toward the nominal values (scale 1, latency 0), per point of data.
                prior = np.concatenate(priors) * np.sqrt(kept.sum())
                extra = len(prior) - 6
                if extra:
                    nominal = []
                    if estimate_scale:
                        nominal.append(1.0 - state.scale)
                    if estimate_latency:
                        nominal.append(0.0 - state.latency_s)
                    a = np.vstack([a, np.diag(prior)[6:]])
                    b = np.concatenate([b, prior[6:] * np.array(nominal)])
                solution = np.linalg.lstsq(a, b, rcond=None)[0]
                rotation = Rotation.from_rotvec(solution[:3]).as_matrix()
                step_matrix = np.eye(4)
                step_matrix[:3, :3] = rotation
                step_matrix[:3, 3] = centre - rotation @ centre + solution[3:6]
                state.matrix = step_matrix @ state.matrix
                index = 6
                moved_by_extra = 0.0
                if estimate_scale:
                    new = float(np.clip(state.scale + solution[index], *p.scale_range))
                    moved_by_extra += abs(new - state.scale) * 60.0
                    state.scale, index = new, index + 1
                if estimate_latency:
                    new = float(np.clip(state.latency_s + solution[index], *p.latency_range_s))
                    moved_by_extra += abs(new - state.latency_s) * 40.0
                    state.latency_s = new
                shift_mm = np.sqrt(np.mean(np.sum((apply_affine(step_matrix, moved[kept]) - moved[kept]) ** 2, axis=1)))
                if shift_mm + moved_by_extra < p.tolerance_mm:
                    break
        return state


def _shifted(matrix: np.ndarray, shift_mri: np.ndarray) -> np.ndarray:
    moved = matrix.copy()
    moved[:3, 3] += shift_mri
    return moved


def register_bone_robust(
    points,
    points_mri: np.ndarray,
    initial: Transform,
    params: RobustBoneParameters | None = None,
) -> RegistrationResult:
    """Global start search, robust joint fit (rigid, speed-of-sound scale, latency), level check.

    Parameters
    ----------
    points : BeamPoints or (N, 3) float array
        US bone points; as :class:`BeamPoints` the depth scale and latency are estimated too,
        as plain points (mm, ``Reference``) the fit is rigid only.
    points_mri : (M, 3) float array
        MRI bone surface, mm (``Mri``).
    initial : Transform
        ``ReferenceToMri`` to start from.
    params : RobustBoneParameters, optional
        Default ``RobustBoneParameters()``.

    Returns
    -------
    RegistrationResult
        ``method`` ``"bone-robust"``; ``metric_trace``: RMS of the kept pairs per iteration of the
        final fit, mm; ``provenance``: ``"speed_of_sound_scale"`` (true depth / displayed
        depth), ``"latency_s"`` (poses were read this long before the image), ``"residual_mm"``
        (capped residual), ``"search"`` (each start's
        capped residual) and ``"level_check"`` (the neighbours' residuals, ``"switched"``: the
        level was changed by one).

    Raises
    ------
    RegistrationError
        Bad points, a wrong initial transform, or no start with enough pairs.
    """
    started_s = time.perf_counter()
    params = params or RobustBoneParameters()
    if initial.name != "ReferenceToMri":
        raise RegistrationError(f"initial transform must be ReferenceToMri, got {initial.name}")
    problem = _Problem(points, points_mri, params)
    axis = np.asarray(params.level_axis_mri, float)
    axis = axis / np.linalg.norm(axis)
    across = np.cross(axis, [0.0, 1.0, 0.0])
    across = across / np.linalg.norm(across) if np.linalg.norm(across) > 1e-6 else np.array([1.0, 0.0, 0.0])
    step = max(1, problem.count() // params.search_points)

    # 1. Global search from shifted starts (coarse, rigid, subsampled).
    def coarse(matrix: np.ndarray):
        try:
            state = problem.fit(_State(matrix), params.search_schedule_mm, step, max_iterations=params.search_iterations)
        except RegistrationError:
            return None
        return problem.residual(state, step), state

    shifts = [f * params.level_shift_mm * axis for f in (0.0, 0.5, -0.5, 1.0, -1.0)]
    shifts += [s * params.lateral_search_mm * across for s in (1.0, -1.0)] if params.lateral_search_mm > 0 else []
    candidates = []
    for shift in shifts:
        found = coarse(_shifted(initial.matrix, shift))
        if found is not None:
            candidates.append((*found, shift))
    if not candidates:
        raise RegistrationError("robust ICP: no start found enough point pairs; the start is too far off")
    candidates.sort(key=lambda c: c[0])
    search = [{"shift_mm": [round(float(v), 2) for v in shift], "residual_mm": round(r, 3)} for r, _, shift in candidates]
    best_coarse = candidates[0]

    # 2. Level check on the coarse result: one level up and one down, coarse too.
    neighbours = {}
    for sign in (1.0, -1.0):
        key = f"{sign * params.level_shift_mm:+g}"
        neighbours[key] = coarse(_shifted(best_coarse[1].matrix, sign * params.level_shift_mm * axis))
    contenders = [best_coarse[1]]
    for value in neighbours.values():
        if value is not None and value[0] < best_coarse[0] / params.level_switch_ratio and (
            _moved_mm(value[1].matrix, best_coarse[1].matrix, problem, best_coarse[1]) > params.level_shift_mm / 2
        ):
            contenders.append(value[1])  # close enough to matter: settle it with the fine fit

    # 3. Fine robust fit (rigid, then jointly with the depth scale and latency) of each contender.
    finals = []
    for state in contenders:
        try:
            fitted = problem.fit(state, params.distance_schedule_mm)
            fitted = problem.fit(fitted, params.joint_schedule_mm, estimate=True)
        except RegistrationError:
            continue
        finals.append((problem.residual(fitted), fitted))
    if not finals:
        raise RegistrationError("robust ICP: the fine fit lost its point pairs")
    residual, best = finals[0]
    switched = None
    for value, state in finals[1:]:
        if value < params.level_switch_ratio * residual:
            switched = "neighbouring level"
            residual, best = value, state
    trace: list[float] = []
    best = problem.fit(best, params.joint_schedule_mm[-1:], estimate=True, trace=trace)
    residual = problem.residual(best)
    # The level figures on the full point set (the quality gate reads them).
    level = {
        "residual_mm": round(residual, 3),
        "coarse_residual_mm": round(best_coarse[0], 3),
        "neighbours_coarse_mm": {k: None if v is None else round(v[0], 3) for k, v in neighbours.items()},
        "fine_residuals_mm": [round(v, 3) for v, _ in finals],
        "switched": switched,
    }
    provenance = {
        "points_reference": problem.count(),
        "points_mri": len(problem.points_mri),
        "initial": initial.to_list(),
        "speed_of_sound_scale": round(best.scale, 5),
        "latency_s": round(best.latency_s, 5),
        "estimated": {"scale": problem.beam is not None and params.estimate_scale,
                      "latency": problem.beam is not None and params.estimate_latency},
        "residual_mm": round(residual, 3),
        "search": search,
        "level_check": level,
    }
    return RegistrationResult(
        method="bone-robust",
        transform=Transform(best.matrix, "Reference", "Mri"),
        metric_trace=np.array(trace),
        run_time_s=time.perf_counter() - started_s,
        parameters=as_dict(params),
        provenance=provenance,
        converged=True,
        message=(f"capped residual {residual:.2f} mm; depth scale {best.scale:.4f}, latency {best.latency_s * 1000:.0f} ms"
                 + (f"; level switched by {switched} mm" if switched else "")),
    )


def _moved_mm(matrix: np.ndarray, other: np.ndarray, problem: _Problem, state: _State) -> float:
    points = problem.points(state, max(1, problem.count() // 200))
    return float(np.linalg.norm(apply_affine(matrix, points) - apply_affine(other, points), axis=1).mean())


def _distinct(candidates, within_mm: float) -> list:
    """Candidates (sorted best first) whose translations differ from every better one by over ``within_mm``."""
    kept = []
    for candidate in candidates:
        if all(np.linalg.norm(candidate[1].matrix[:3, 3] - other[1].matrix[:3, 3]) > within_mm for other in kept):
            kept.append(candidate)
    return kept
