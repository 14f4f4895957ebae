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

from workbench.errors import RegistrationError
from workbench.frames import Transform
from workbench.registration.landmarks import rigid_fit
from workbench.registration.params import BonePointParameters, IcpParameters, as_dict
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
    params: BonePointParameters = BonePointParameters(),
) -> np.ndarray:
    """Bone surface points seen in tracked B-mode frames, in ``Reference``.

    Per image column (every ``params.column_step``-th), the bone is the bright ridge (a local
    maximum above ``min_brightness``) with the darkest acoustic shadow below it relative to its
    brightness, provided the shadow is under ``shadow_ratio`` of the peak.

    Parameters
    ----------
    frames : TrackedSequence or (N, H, W) uint8 array
        MF-oriented frames (a sequence is flipped to MF and, without ``probe_to_reference``,
        gives its own poses; frames with INVALID poses are skipped).
    image_to_probe : Transform
        ``ImageToProbe`` (pixels to mm).
    probe_to_reference : (N, 4, 4) float array, optional
        ``ProbeToReference`` per frame, mm; required for a bare array of frames.
    params : BonePointParameters

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
    points = []
    for image, pose in zip(images[valid], poses[valid]):
        columns, rows = _bone_pixels(image, pixel_mm, params)
        pixels = np.column_stack([columns, rows, np.zeros(len(rows))])
        points.append(Transform(pose @ image_to_probe.matrix, "Image", "Reference").apply_to_points(pixels))
    points_reference = np.concatenate(points) if points else np.zeros((0, 3))
    if len(points_reference) == 0:
        raise RegistrationError(
            f"no bone surface found in {int(valid.sum())} frames (no bright ridge above {params.min_brightness:g} "
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


def mri_bone_points(labels, bone_labels=None) -> np.ndarray:
    """The posterior-facing bone surface of an MRI label map, in ``Mri`` (LPS mm).

    For every column of voxels along the posterior (+y in LPS) axis, the posterior face of the
    most posterior bone voxel: the bone surface an ultrasound beam from the back reaches first.

    Parameters
    ----------
    labels : SimpleITK.Image
        Label map in LPS; its direction must keep one axis along y (any axis-aligned grid).
    bone_labels : iterable of int, optional
        Label values that are bone; default :data:`workbench.phantom.labels.BONE_LABELS`.

    Returns
    -------
    points_mri : (M, 3) float array, mm

    Raises
    ------
    RegistrationError
        A label map without bone voxels or with an oblique direction.
    """
    import SimpleITK as sitk

    if bone_labels is None:
        from workbench.phantom.labels import BONE_LABELS as bone_labels
    direction = np.array(labels.GetDirection(), float).reshape(3, 3)
    y_axis = np.nonzero(np.isclose(np.abs(direction[1]), 1.0, atol=1e-6))[0]
    if len(y_axis) != 1:
        raise RegistrationError(
            "label map direction has no voxel axis along LPS y (posterior): cannot find the back-facing surface"
        )
    array_axis = 2 - int(y_axis[0])  # numpy arrays are (k, j, i)
    bone = np.isin(sitk.GetArrayViewFromImage(labels), [int(v) for v in bone_labels])
    if not bone.any():
        raise RegistrationError("label map has no bone voxels: no MRI bone surface to register to")
    count = bone.shape[array_axis]
    # Index of the most posterior bone voxel along that axis (posterior = increasing LPS y).
    if direction[1, y_axis[0]] > 0:
        last = count - 1 - np.argmax(np.flip(bone, axis=array_axis), axis=array_axis)
    else:
        last = np.argmax(bone, axis=array_axis)
    has_bone = bone.any(axis=array_axis)
    others = np.nonzero(has_bone)
    index_kji = list(others)
    index_kji.insert(array_axis, last[has_bone])
    index_ijk = np.column_stack(index_kji[::-1]).astype(float)
    spacing = np.array(labels.GetSpacing(), float)
    origin = np.array(labels.GetOrigin(), float)
    # The surface lies on the posterior face of the voxel, half a voxel out from its centre.
    index_ijk[:, y_axis[0]] += 0.5 if direction[1, y_axis[0]] > 0 else -0.5
    return origin + (index_ijk * spacing) @ direction.T


def register_icp(
    points_reference: np.ndarray,
    points_mri: np.ndarray,
    initial: Transform,
    params: IcpParameters = IcpParameters(),
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

    Returns
    -------
    RegistrationResult
        ``metric_trace``: RMS distance of the kept pairs per iteration, mm.

    Raises
    ------
    RegistrationError
        Empty or non-finite point sets, a wrong initial transform, or too few pairs.
    """
    start = time.perf_counter()
    source = _checked_points(points_reference, "points_reference")
    target = _checked_points(points_mri, "points_mri")
    if initial.name != "ReferenceToMri":
        raise RegistrationError(f"initial transform must be ReferenceToMri, got {initial.name}")
    tree = cKDTree(target)
    normals = _surface_normals(target, tree) if params.point_to_plane else None
    matrix = initial.matrix
    if params.restart_offset_mm > 0:
        matrix = _best_start(source[:: params.restart_subsample], target, tree, normals, matrix, params)
    trace: list[float] = []
    matrix = _icp_stages(source, target, tree, normals, matrix, params, trace)
    return RegistrationResult(
        method="bone-icp",
        transform=Transform(matrix, "Reference", "Mri"),
        metric_trace=np.array(trace),
        run_time_s=time.perf_counter() - start,
        parameters=as_dict(params),
        provenance={"points_reference": len(source), "points_mri": len(target), "initial": initial.to_list()},
        converged=True,
        message=f"final RMS distance of kept pairs {trace[-1]:.2f} mm over {len(trace)} iterations",
    )


def _icp_stages(source, target, tree, normals, matrix, params: IcpParameters, trace: list[float]) -> np.ndarray:
    """Run the distance schedule from ``matrix`` ((4, 4) ReferenceToMri); append RMS per iteration."""
    for max_distance_mm in params.distance_schedule_mm:
        for _ in range(params.max_iterations):
            moved = source @ matrix[:3, :3].T + matrix[:3, 3]
            distance_mm, nearest = tree.query(moved, distance_upper_bound=max_distance_mm)
            kept = _trimmed(distance_mm, params.trim_fraction)
            if kept.sum() < params.min_pairs:
                raise RegistrationError(
                    f"ICP found only {int(kept.sum())} point pairs within {max_distance_mm:g} mm (needs "
                    f"{params.min_pairs}): the initial alignment is too far off or the surfaces do not overlap"
                )
            trace.append(float(np.sqrt(np.mean(distance_mm[kept] ** 2))))
            if params.point_to_plane:
                step = _point_to_plane_step(moved[kept], target[nearest[kept]], normals[nearest[kept]])
            else:
                step = rigid_fit(moved[kept], target[nearest[kept]]).matrix
            matrix = step @ matrix
            shift_mm = np.sqrt(np.mean(np.sum((moved @ step[:3, :3].T + step[:3, 3] - moved) ** 2, axis=1)))
            if shift_mm < params.tolerance_mm:
                break
    return matrix


def _best_start(source, target, tree, normals, initial: np.ndarray, params: IcpParameters) -> np.ndarray:
    """ICP (on subsampled points) from the initial pose and from it shifted by +-restart_offset_mm
    along each Mri axis; the result with most points within ``inlier_distance_mm`` of the MRI surface."""
    best, best_score = initial, -1.0
    for shift in np.vstack([np.zeros(3), np.eye(3), -np.eye(3)]) * params.restart_offset_mm:
        start = initial.copy()
        start[:3, 3] += shift
        try:
            matrix = _icp_stages(source, target, tree, normals, start, params, [])
        except RegistrationError:
            continue
        distance_mm, _ = tree.query(source @ matrix[:3, :3].T + matrix[:3, 3])
        score = float(np.mean(distance_mm < params.inlier_distance_mm))
        if score > best_score:
            best, best_score = matrix, score
    return best


def _surface_normals(points: np.ndarray, tree: cKDTree, neighbours: int = 12) -> np.ndarray:
    """(N, 3) unit normals (sign arbitrary): the least-variance axis of each point's neighbours."""
    _, index = tree.query(points, k=min(neighbours, len(points)))
    near = points[index.reshape(len(points), -1)]
    centred = near - near.mean(axis=1, keepdims=True)
    _, vectors = np.linalg.eigh(np.einsum("nki,nkj->nij", centred, centred))
    return vectors[:, :, 0]


def _point_to_plane_step(source: np.ndarray, target: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """(4, 4) rigid step minimising the squared distances of ``source`` to the planes (target, normal).

    One Gauss-Newton step of point-to-plane ICP (Chen and Medioni 1992), linearised in the
    rotation about the source centroid.
    """
    from scipy.spatial.transform import Rotation

    centre = source.mean(axis=0)
    arms = source - centre
    system = np.hstack([np.cross(arms, normals), normals])
    residual = np.sum((target - source) * normals, axis=1)
    solution = np.linalg.lstsq(system, residual, rcond=None)[0]
    rotation = Rotation.from_rotvec(solution[:3]).as_matrix()
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = centre - rotation @ centre + solution[3:]
    return matrix


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
