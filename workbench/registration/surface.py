"""Bone-surface registration: bone points from tracked US frames and from the MRI, rigid ICP.

Ultrasound sees the bone surface that faces the probe as a bright ridge with an acoustic shadow
below it; the MRI label map gives the same surface as the posterior boundary of the bone labels.
:func:`register_icp` aligns the US points (``Reference``) to the MRI points (``Mri``) with a
trimmed point-to-point ICP, whose result can start :func:`~workbench.registration.intensity.register_lc2`.
Frames: see docs/frames.md.
"""

from __future__ import annotations

import time

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from workbench.anatomy import LabelMap
from workbench.errors import RegistrationError
from workbench.frames import Transform, apply_affine
from workbench.registration.landmarks import rigid_fit
from workbench.registration.params import BoneDetectParameters, BonePointParameters, IcpParameters, as_dict
from workbench.registration.result import RegistrationResult

__all__ = ["mri_bone_points", "probe_to_reference_poses", "register_icp", "us_bone_points"]


def probe_to_reference_poses(sequence) -> tuple[np.ndarray, np.ndarray]:
    """``ProbeToReference`` of every frame of a tracked sequence and which frames have one.

    Parameters
    ----------
    sequence : TrackedSequence
        With ``ProbeToTracker`` and ``ReferenceToTracker`` (or ``ProbeToReference``).

    Returns
    -------
    probe_to_reference : (N, 4, 4) float array, mm
    valid : (N,) bool array
        False where a needed transform is INVALID.
    """
    if "ProbeToReference" in sequence.transforms:
        return np.asarray(sequence.transforms["ProbeToReference"], float), sequence.status_of("ProbeToReference")
    missing = [name for name in ("ProbeToTracker", "ReferenceToTracker") if name not in sequence.transforms]
    if missing:
        raise RegistrationError(f"sequence lacks {' and '.join(missing)}: cannot place its frames in Reference")
    reference_to_tracker = np.asarray(sequence.transforms["ReferenceToTracker"], float)
    probe_to_tracker = np.asarray(sequence.transforms["ProbeToTracker"], float)
    valid = sequence.status_of("ProbeToTracker") & sequence.status_of("ReferenceToTracker")
    return np.linalg.inv(reference_to_tracker) @ probe_to_tracker, valid


def us_bone_points(
    frames,
    image_to_probe: Transform,
    probe_to_reference: np.ndarray | None = None,
    params: BonePointParameters | BoneDetectParameters = BonePointParameters(),
) -> np.ndarray:
    """Bone surface points seen in tracked B-mode frames, in ``Reference``.

    With :class:`BonePointParameters` (the default, tuned on the simulator): per image column
    (every ``params.column_step``-th), the bone is the bright ridge (a local maximum above
    ``min_brightness``) with the darkest acoustic shadow below it relative to its brightness,
    provided the shadow is under ``shadow_ratio`` of the peak. With
    :class:`BoneDetectParameters`: the gain-adaptive detector for real frames,
    :func:`workbench.registration.bone_detect.detect_bone` (docs/registration.md, "Bone on real
    ultrasound").

    Parameters
    ----------
    frames : TrackedSequence or (N, H, W) uint8 array
        MF-oriented frames (a sequence is flipped to MF and, without ``probe_to_reference``,
        gives its own poses; frames with INVALID poses are skipped).
    image_to_probe : Transform
        ``ImageToProbe`` (pixels to mm).
    probe_to_reference : (N, 4, 4) float array, optional
        ``ProbeToReference`` per frame, mm; required for a bare array of frames.
    params : BonePointParameters or BoneDetectParameters
        Chooses the detector.

    Returns
    -------
    points_reference : (M, 3) float array, mm, ``Reference`` frame

    Raises
    ------
    RegistrationError
        Frames and poses of different counts, a wrong calibration, or no bone found.
    """
    if image_to_probe.name != "ImageToProbe":
        raise RegistrationError(f"image_to_probe must be ImageToProbe, got {image_to_probe.name}")
    images, poses, valid = _frames_and_poses(frames, probe_to_reference)
    pixel_mm = float(np.linalg.norm(image_to_probe.matrix[:3, 1]))
    if isinstance(params, BoneDetectParameters):
        from workbench.registration.bone_detect import detect_bone

        lateral_mm = float(np.linalg.norm(image_to_probe.matrix[:3, 0]))
        detection = detect_bone(images, (lateral_mm, pixel_mm), params, frames_used=valid)
        found_px = [
            pixels[pixels[:, 0] % params.column_step == 0] for pixels, used in zip(detection.pixels_px, valid) if used
        ]
    else:
        found_px = [np.column_stack(_bone_pixels(image, pixel_mm, params)) for image in images[valid]]
    points_per_frame_reference = []
    for frame_px, frame_probe_to_reference in zip(found_px, poses[valid]):
        columns_px, rows_px = frame_px[:, 0], frame_px[:, 1]
        pixels_px = np.column_stack([columns_px, rows_px, np.zeros(len(rows_px))])
        image_to_reference = Transform(frame_probe_to_reference @ image_to_probe.matrix, "Image", "Reference")
        points_per_frame_reference.append(image_to_reference.apply_to_points(pixels_px, from_frame="Image"))
    points_reference = np.concatenate(points_per_frame_reference) if points_per_frame_reference else np.zeros((0, 3))
    if len(points_reference) == 0:
        brightness = (
            f"{params.min_relative_brightness:g} of the frame's p{params.reference_percentile:g} grey"
            if isinstance(params, BoneDetectParameters)
            else f"{params.min_brightness:g}"
        )
        raise RegistrationError(
            f"no bone surface found in {int(valid.sum())} frames (no bright ridge above {brightness} "
            "with a shadow below it)"
        )
    return points_reference


def _frames_and_poses(frames, probe_to_reference) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if hasattr(frames, "images_mf"):
        images = frames.images_mf()
        if probe_to_reference is None:
            poses, valid = probe_to_reference_poses(frames)
            return images, poses, valid & np.asarray(frames.image_status, bool)
    else:
        images = np.asarray(frames)
        if probe_to_reference is None:
            raise RegistrationError("probe_to_reference poses are needed with a bare array of frames")
    if images.ndim != 3:
        raise RegistrationError(f"frames must be an (N, H, W) array, got shape {images.shape}")
    poses = np.asarray(probe_to_reference, float)
    if poses.shape != (len(images), 4, 4):
        raise RegistrationError(
            f"{len(images)} frames but probe_to_reference has shape {poses.shape}: need one 4x4 pose per frame"
        )
    return images, poses, np.all(np.isfinite(poses), axis=(1, 2))


def _bone_pixels(image: np.ndarray, pixel_mm: float, params: BonePointParameters) -> tuple[np.ndarray, np.ndarray]:
    """(columns, rows) of the bone ridge per sampled column; columns without bone are left out."""
    grey = ndimage.gaussian_filter(image.astype(np.float32), params.smoothing_px)[:, :: params.column_step]
    height = grey.shape[0]
    low, high = (max(1, int(round(d / pixel_mm))) for d in params.shadow_depth_mm)
    first_row = int(round(params.min_depth_mm / pixel_mm))
    # Mean grey of rows [r + low, r + high) below every row r, from cumulative sums along depth.
    cumulative = np.vstack([np.zeros((1, grey.shape[1])), np.cumsum(grey, axis=0)])
    rows = np.arange(height)
    top, bottom = np.minimum(rows + low, height), np.minimum(rows + high, height)
    depth_px = np.maximum(bottom - top, 1)[:, None]
    shadow = (cumulative[bottom] - cumulative[top]) / depth_px
    ridge = (grey >= ndimage.maximum_filter1d(grey, 5, axis=0)) & (grey >= params.min_brightness)
    ridge[:first_row] = False
    ridge[height - high :] = False
    ratio = np.where(ridge, shadow / np.maximum(grey, 1e-6), np.inf)
    best = np.argmin(ratio, axis=0)
    found = ratio[best, np.arange(grey.shape[1])] < params.shadow_ratio
    columns = np.nonzero(found)[0] * params.column_step
    return columns.astype(float), best[found].astype(float)


def mri_bone_points(label_map: LabelMap) -> np.ndarray:
    """The posterior-facing bone surface of an MRI label map, in ``Mri`` (LPS mm).

    For every column of voxels along the posterior (+y in LPS) axis, the posterior face of the
    most posterior bone voxel: the bone surface an ultrasound beam from the back reaches first.

    Parameters
    ----------
    label_map : LabelMap
        Label map in LPS with its label table (bone is what the table names bone,
        :meth:`~workbench.anatomy.LabelMap.bone_mask`); its direction must keep one axis along
        y (any axis-aligned grid).

    Returns
    -------
    points_mri : (M, 3) float array, mm

    Raises
    ------
    RegistrationError
        Not a :class:`~workbench.anatomy.LabelMap`, a label map without bone voxels or with an
        oblique direction.
    """
    if not isinstance(label_map, LabelMap):
        raise RegistrationError(
            f"mri_bone_points needs a workbench.anatomy.LabelMap (labels and their table), got {type(label_map).__name__}"
        )
    image = label_map.image
    direction = np.array(image.GetDirection(), float).reshape(3, 3)
    y_axis = np.nonzero(np.isclose(np.abs(direction[1]), 1.0, atol=1e-6))[0]
    if len(y_axis) != 1:
        raise RegistrationError(
            "label map direction has no voxel axis along LPS y (posterior): cannot find the back-facing surface"
        )
    array_axis = 2 - int(y_axis[0])  # numpy arrays are (k, j, i)
    bone_kji = label_map.bone_mask()
    if not bone_kji.any():
        raise RegistrationError("label map has no bone voxels: no MRI bone surface to register to")
    count = bone_kji.shape[array_axis]
    # Index of the most posterior bone voxel along that axis (posterior = increasing LPS y).
    if direction[1, y_axis[0]] > 0:
        last = count - 1 - np.argmax(np.flip(bone_kji, axis=array_axis), axis=array_axis)
    else:
        last = np.argmax(bone_kji, axis=array_axis)
    has_bone = bone_kji.any(axis=array_axis)
    others = np.nonzero(has_bone)
    index_kji = list(others)
    index_kji.insert(array_axis, last[has_bone])
    index_ijk = np.column_stack(index_kji[::-1]).astype(float)
    spacing_mm = np.array(image.GetSpacing(), float)
    origin_mri = np.array(image.GetOrigin(), float)
    # The surface lies on the posterior face of the voxel, half a voxel out from its centre.
    index_ijk[:, y_axis[0]] += 0.5 if direction[1, y_axis[0]] > 0 else -0.5
    return origin_mri + (index_ijk * spacing_mm) @ direction.T


def register_icp(
    points_reference: np.ndarray,
    points_mri: np.ndarray,
    initial: Transform,
    params: IcpParameters = IcpParameters(),
    on_stage=None,
) -> RegistrationResult:
    """Trimmed rigid ICP of US bone points onto the MRI bone surface (method ``"bone-icp"``).

    Each stage of ``params.distance_schedule_mm`` pairs every US point with its nearest MRI
    point, keeps pairs closer than the stage's distance and of those the closest
    ``trim_fraction``, fits the rigid transform (point-to-plane on the MRI surface's local
    normals, or point-to-point Kabsch) and repeats until the points stop moving. With
    ``restart_offset_mm`` > 0 it first runs from 7 starts (the initial pose and 6 shifted ones,
    on subsampled points) and continues from the one that puts most points on the surface:
    this widens the capture range beyond the ~15 mm of a single run.

    Parameters
    ----------
    points_reference : (N, 3) float array, mm, ``Reference``
    points_mri : (M, 3) float array, mm, ``Mri``
    initial : Transform
        ``ReferenceToMri`` to start from.
    params : IcpParameters
    on_stage : callable, optional
        ``on_stage(stage_index, stage_count, trace_mm)`` after each stage of the distance schedule
        (live progress; the result does not depend on it). ``trace_mm``: RMS per iteration so far.

    Returns
    -------
    RegistrationResult
        ``metric_trace``: RMS distance of the kept pairs per iteration, mm. ``converged``: the
        last stage of the schedule stopped because a step moved the points by less than
        ``params.tolerance_mm`` (RMS), not at ``params.max_iterations``.

    Raises
    ------
    RegistrationError
        Empty or non-finite point sets, a wrong initial transform, or too few pairs.
    """
    started_s = time.perf_counter()
    points_reference = _checked_points(points_reference, "points_reference")
    points_mri = _checked_points(points_mri, "points_mri")
    if initial.name != "ReferenceToMri":
        raise RegistrationError(f"initial transform must be ReferenceToMri, got {initial.name}")
    tree_mri = cKDTree(points_mri)
    normals_mri = _surface_normals(points_mri, tree_mri) if params.point_to_plane else None
    reference_to_mri = initial.matrix
    if params.restart_offset_mm > 0:
        subsampled_reference = points_reference[:: params.restart_subsample]
        reference_to_mri = _best_start(subsampled_reference, points_mri, tree_mri, normals_mri, reference_to_mri, params)
    trace_mm: list[float] = []
    reference_to_mri, converged = _icp_stages(
        points_reference, points_mri, tree_mri, normals_mri, reference_to_mri, params, trace_mm, on_stage
    )
    stopped = (
        f"the last stage's step fell below {params.tolerance_mm:g} mm"
        if converged
        else f"the last stage stopped at max_iterations ({params.max_iterations}) with steps still above {params.tolerance_mm:g} mm"
    )
    return RegistrationResult(
        method="bone-icp",
        transform=Transform(reference_to_mri, "Reference", "Mri"),
        metric_trace=np.array(trace_mm),
        run_time_s=time.perf_counter() - started_s,
        parameters=as_dict(params),
        provenance={"points_reference": len(points_reference), "points_mri": len(points_mri), "initial": initial.to_list()},
        converged=converged,
        message=f"final RMS distance of kept pairs {trace_mm[-1]:.2f} mm over {len(trace_mm)} iterations; {stopped}",
    )


def _icp_stages(
    points_reference, points_mri, tree_mri, normals_mri, reference_to_mri, params: IcpParameters, trace_mm: list[float],
    on_stage=None,
) -> tuple[np.ndarray, bool]:
    """Run the distance schedule from ``reference_to_mri`` ((4, 4)); append the RMS (mm) per iteration.

    Returns the final (4, 4) ``ReferenceToMri`` and whether it converged: the last stage's step
    moved the points by less than ``params.tolerance_mm`` (RMS) within ``params.max_iterations``.
    """
    converged = False
    for stage_index, max_distance_mm in enumerate(params.distance_schedule_mm):
        converged = False
        for _ in range(params.max_iterations):
            moved_mri = apply_affine(reference_to_mri, points_reference)
            distance_mm, nearest = tree_mri.query(moved_mri, distance_upper_bound=max_distance_mm)
            kept = _trimmed(distance_mm, params.trim_fraction)
            if kept.sum() < params.min_pairs:
                raise RegistrationError(
                    f"ICP found only {int(kept.sum())} point pairs within {max_distance_mm:g} mm (needs "
                    f"{params.min_pairs}): the initial alignment is too far off or the surfaces do not overlap"
                )
            trace_mm.append(float(np.sqrt(np.mean(distance_mm[kept] ** 2))))
            if params.point_to_plane:
                step_mri_to_mri = _point_to_plane_step(moved_mri[kept], points_mri[nearest[kept]], normals_mri[nearest[kept]])
            else:
                step_mri_to_mri = rigid_fit(moved_mri[kept], points_mri[nearest[kept]]).matrix
            reference_to_mri = step_mri_to_mri @ reference_to_mri
            shift_mm = np.sqrt(np.mean(np.sum((apply_affine(step_mri_to_mri, moved_mri) - moved_mri) ** 2, axis=1)))
            if shift_mm < params.tolerance_mm:
                converged = True
                break
        if on_stage is not None:
            on_stage(stage_index, len(params.distance_schedule_mm), np.array(trace_mm))
    return reference_to_mri, converged


def _best_start(points_reference, points_mri, tree_mri, normals_mri, initial: np.ndarray, params: IcpParameters) -> np.ndarray:
    """ICP (on subsampled points) from the initial pose and from it shifted by +-restart_offset_mm
    along each Mri axis; the result with most points within ``inlier_distance_mm`` of the MRI surface."""
    best, best_score = initial, -1.0
    for shift_mm in np.vstack([np.zeros(3), np.eye(3), -np.eye(3)]) * params.restart_offset_mm:
        start_reference_to_mri = initial.copy()
        start_reference_to_mri[:3, 3] += shift_mm
        try:
            reference_to_mri, _ = _icp_stages(points_reference, points_mri, tree_mri, normals_mri, start_reference_to_mri, params, [])
        except RegistrationError:
            continue
        distance_mm, _ = tree_mri.query(apply_affine(reference_to_mri, points_reference))
        score = float(np.mean(distance_mm < params.inlier_distance_mm))
        if score > best_score:
            best, best_score = reference_to_mri, score
    return best


def _surface_normals(points_mri: np.ndarray, tree_mri: cKDTree, neighbours: int = 12) -> np.ndarray:
    """(N, 3) unit normals (sign arbitrary) of (N, 3) surface points: the least-variance axis of each point's neighbours."""
    _, index = tree_mri.query(points_mri, k=min(neighbours, len(points_mri)))
    near = points_mri[index.reshape(len(points_mri), -1)]
    centred = near - near.mean(axis=1, keepdims=True)
    _, vectors = np.linalg.eigh(np.einsum("nki,nkj->nij", centred, centred))
    return vectors[:, :, 0]


def _point_to_plane_step(moved_mri: np.ndarray, targets_mri: np.ndarray, normals_mri: np.ndarray) -> np.ndarray:
    """(4, 4) rigid step in ``Mri`` minimising the squared distances of ``moved_mri`` to the planes
    (``targets_mri``, ``normals_mri``); all (N, 3), mm.

    One Gauss-Newton step of point-to-plane ICP (Chen and Medioni 1992), linearised in the
    rotation about the centroid of ``moved_mri``.
    """
    from scipy.spatial.transform import Rotation

    centre_mri = moved_mri.mean(axis=0)
    arms_mm = moved_mri - centre_mri
    system = np.hstack([np.cross(arms_mm, normals_mri), normals_mri])
    residual_mm = np.sum((targets_mri - moved_mri) * normals_mri, axis=1)
    solution = np.linalg.lstsq(system, residual_mm, rcond=None)[0]
    rotation = Rotation.from_rotvec(solution[:3]).as_matrix()
    step_mri_to_mri = np.eye(4)
    step_mri_to_mri[:3, :3] = rotation
    step_mri_to_mri[:3, 3] = centre_mri - rotation @ centre_mri + solution[3:]
    return step_mri_to_mri


def _trimmed(distance_mm: np.ndarray, fraction: float) -> np.ndarray:
    """Pairs within the distance bound (finite) and among the closest ``fraction`` of those."""
    within = np.isfinite(distance_mm)
    if not within.any():
        return within
    cutoff = np.quantile(distance_mm[within], fraction)
    return within & (distance_mm <= cutoff)


def _checked_points(points, name: str) -> np.ndarray:
    array = np.asarray(points, dtype=float)
    if array.ndim != 2 or array.shape[1] != 3:
        raise RegistrationError(f"{name} must be an (N, 3) array, got shape {array.shape}")
    if len(array) == 0:
        raise RegistrationError(f"{name} is empty: no bone points to register")
    if not np.all(np.isfinite(array)):
        raise RegistrationError(f"{name} holds non-finite coordinates")
    return array
