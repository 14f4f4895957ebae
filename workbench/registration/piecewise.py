"""Piecewise-rigid refinement of a bone-surface registration: one ``ReferenceToMri`` per vertebra.

Between the MRI and the procedure the patient's posture changes and every vertebra moves a
little (1-3 deg, about 1 mm) relative to its neighbours, which a single rigid ``ReferenceToMri``
cannot follow. :func:`register_piecewise` starts from the global (rigid) result and refines it
per vertebra:

1. Every US bone point is mapped into ``Mri`` by the global transform and assigned to the
   vertebra whose MRI bone surface is nearest, if within ``assignment_distance_mm``.
2. Each vertebra's transform is ``D @ global``, where the deviation ``D`` is a small rigid
   motion (rotation vector about the centroid of that vertebra's MRI surface points, then a
   translation) found by point-to-plane ICP on that vertebra's points only.
3. The deviation is regularised toward zero (toward the global transform): every Gauss-Newton
   step minimises ``mean(residual_mm**2) + w * (|t_mm|**2 + (radius_mm * |angle_rad|)**2)``, with
   ``w = regularisation_weight``. With no motion the data term is already minimal at the global
   transform and the vertebrae stay on it; a real motion is followed up to a small shrinkage.
4. A vertebra with too few points, or whose deviation exceeds ``max_translation_mm`` or
   ``max_rotation_deg``, keeps the global transform; :attr:`PiecewiseResult.fallbacks` says why.

Frames: see docs/frames.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from workbench.anatomy import LEVEL_NAMES, LabelMap
from workbench.errors import RegistrationError
from workbench.frames import Transform, apply_affine
from workbench.registration.params import IcpParameters
from workbench.registration.result import RegistrationResult
from workbench.registration.surface import _checked_points, _surface_normals, mri_bone_points, register_icp

__all__ = [
    "PiecewiseParameters",
    "PiecewiseResult",
    "level_of_target",
    "mri_bone_points_by_level",
    "register_piecewise",
]


@dataclass(frozen=True)
class PiecewiseParameters:
    """Parameters of :func:`register_piecewise`.

    Attributes
    ----------
    assignment_distance_mm : float
        A US point (mapped by the global transform) joins the vertebra with the nearest MRI
        surface point only if that point is this close, mm.
    distance_schedule_mm : tuple of float
        Pair-distance limit of each per-vertebra ICP stage, mm.
    max_iterations : int
        Gauss-Newton steps per stage at most.
    tolerance_mm : float
        A stage stops when a step moves the points by less than this (RMS), mm.
    regularisation_weight : float
        ``w``: weight of the deviation penalty against the mean squared residual (1/mm^2 * mm^2).
    rotation_radius_mm : float
        Turns an angle into a length for the penalty: ``radius_mm * angle_rad``, mm.
    max_translation_mm, max_rotation_deg : float
        Largest deviation from the global transform a vertebra may take.
    min_points : int
        Fewest assigned US points for a vertebra to get its own transform.
    global_icp : IcpParameters
        For the global ICP when :func:`register_piecewise` is given a start transform.
    """

    assignment_distance_mm: float = 4.0
    distance_schedule_mm: tuple[float, ...] = (4.0, 2.0)
    max_iterations: int = 30
    tolerance_mm: float = 0.002
    regularisation_weight: float = 0.02
    rotation_radius_mm: float = 20.0
    max_translation_mm: float = 5.0
    max_rotation_deg: float = 8.0
    min_points: int = 50
    global_icp: IcpParameters = field(default_factory=IcpParameters)


@dataclass(frozen=True)
class PiecewiseResult:
    """The global registration and one ``ReferenceToMri`` per vertebra.

    Attributes
    ----------
    global_result : RegistrationResult
        The rigid registration the refinement started from.
    transforms : dict of str to Transform
        Level name (``"L4"``) -> that vertebra's ``ReferenceToMri``; every level given.
    residuals_mm : dict of str to float
        RMS distance of the vertebra's kept point pairs to its MRI surface, mm (levels with
        their own transform).
    point_counts : dict of str to int
        US points assigned to each level.
    deviations : dict of str to (float, float)
        (rotation deg, translation mm at the rotation centre) of each vertebra's transform from the global one.
    fallbacks : dict of str to str
        Levels that kept the global transform, and why.
    run_time_s : float
        Time of the refinement, s (a global ICP run by :func:`register_piecewise` included, the
        one of a given ``RegistrationResult`` not).
    """

    global_result: RegistrationResult
    transforms: dict[str, Transform]
    residuals_mm: dict[str, float]
    point_counts: dict[str, int]
    deviations: dict[str, tuple[float, float]]
    fallbacks: dict[str, str]
    run_time_s: float = 0.0

    def transform_for_target(self, target_name: str) -> Transform:
        """The ``ReferenceToMri`` of the vertebra a target belongs to.

        Parameters
        ----------
        target_name : str
            A target named after its level, e.g. ``"L4 left exiting nerve root, dorsal aspect"``.

        Returns
        -------
        Transform
            That level's transform; the global one for a target whose level has none (no level
            prefix, or a level not registered).
        """
        level = level_of_target(target_name)
        return self.transforms.get(level, self.global_result.transform) if level else self.global_result.transform


def level_of_target(target_name: str) -> str | None:
    """The vertebral level a target name starts with (``"L4 left ..."`` -> ``"L4"``), or None.

    Parameters
    ----------
    target_name : str

    Returns
    -------
    str or None
        One of :data:`workbench.anatomy.LEVEL_NAMES`, or None if the name starts with none.
    """
    first = target_name.split(" ", 1)[0]
    return first if first in LEVEL_NAMES[1:] else None


def mri_bone_points_by_level(label_map: LabelMap, levels=None) -> dict[str, np.ndarray]:
    """The posterior bone surface of :func:`~workbench.registration.surface.mri_bone_points`, split by vertebra.

    Parameters
    ----------
    label_map : LabelMap
        Label map, LPS, with its label table.
    levels : SimpleITK.Image, optional
        Level map on the same grid: index into :data:`workbench.anatomy.LEVEL_NAMES`
        (1..6 = L1..S1) on vertebral bone, 0 elsewhere (the phantom's). Default: the levels the
        label table's names carry (``vertebra_L4``, ``lamina_L4``: :attr:`LabelMap.levels`), as an
        imported segmentation has them.

    Returns
    -------
    dict of str to (M, 3) float array, mm, ``Mri``
        Level name -> its surface points; levels without surface points are left out. Surface
        points on bone without a level are dropped.

    Raises
    ------
    RegistrationError
        Level map on another grid, or no surface point on any level.
    """
    import SimpleITK as sitk

    if not isinstance(label_map, LabelMap):
        raise RegistrationError(f"label_map must be a workbench.anatomy.LabelMap, got {type(label_map).__name__}")
    labels = label_map.image
    grid = ("GetSize", "GetSpacing", "GetOrigin", "GetDirection")
    if levels is not None and any(not np.allclose(getattr(labels, g)(), getattr(levels, g)(), atol=1e-6) for g in grid):
        raise RegistrationError("level map is not on the label map's grid (size, spacing, origin and direction)")
    points_mri = mri_bone_points(label_map)
    # Linear part of MriVoxelToMri: voxel steps (i, j, k) to mm.
    mri_voxel_to_mri_linear = np.array(labels.GetDirection(), float).reshape(3, 3) * np.array(labels.GetSpacing(), float)
    # Surface points lie half a voxel posterior (+y) of their voxel's centre.
    y_step_mm = float(np.max(np.abs(mri_voxel_to_mri_linear[1])))
    centres_mri = points_mri - [0.0, 0.5 * y_step_mm, 0.0]
    index_ijk = np.rint(np.linalg.solve(mri_voxel_to_mri_linear, (centres_mri - labels.GetOrigin()).T).T).astype(int)
    if levels is None:
        values = label_map.array[index_ijk[:, 2], index_ijk[:, 1], index_ijk[:, 0]]
        names = np.array([label_map.levels.get(int(value), "") for value in values])
        by_level = {str(name): points_mri[names == name] for name in np.unique(names) if name}
        if not by_level:
            raise RegistrationError(
                "no MRI bone surface point carries a vertebral level in the label table (names such as 'vertebra_L4')"
            )
        return by_level
    level_index = sitk.GetArrayViewFromImage(levels)[index_ijk[:, 2], index_ijk[:, 1], index_ijk[:, 0]]
    by_level = {
        LEVEL_NAMES[value]: points_mri[level_index == value]
        for value in np.unique(level_index)
        if 0 < value < len(LEVEL_NAMES)
    }
    if not by_level:
        raise RegistrationError("no MRI bone surface point lies on a vertebral level: is the level map empty?")
    return by_level


def register_piecewise(
    points_reference: np.ndarray,
    points_mri_by_level: dict[str, np.ndarray],
    start: RegistrationResult | Transform,
    params: PiecewiseParameters = PiecewiseParameters(),
) -> PiecewiseResult:
    """Refine a rigid bone-surface registration into one regularised ``ReferenceToMri`` per vertebra.

    See the module docstring for the method.

    Parameters
    ----------
    points_reference : (N, 3) float array, mm, ``Reference``
        US bone surface points (procedure-time posture).
    points_mri_by_level : dict of str to (M, 3) float array, mm, ``Mri``
        MRI bone surface per level, e.g. from :func:`mri_bone_points_by_level`.
    start : RegistrationResult or Transform
        The global rigid result, or a ``ReferenceToMri`` from which to run the global ICP
        (``params.global_icp``) on all levels' points first.
    params : PiecewiseParameters

    Returns
    -------
    PiecewiseResult

    Raises
    ------
    RegistrationError
        Empty or non-finite points, no levels, a wrong start transform, or a failed global ICP.
    """
    started_s = time.perf_counter()
    points_reference = _checked_points(points_reference, "points_reference")
    if not points_mri_by_level:
        raise RegistrationError("points_mri_by_level is empty: no vertebra to register")
    surface_mri_by_level = {
        name: _checked_points(points_mri, f"MRI points of {name}") for name, points_mri in points_mri_by_level.items()
    }
    if isinstance(start, RegistrationResult):
        global_result = start
    else:
        all_surface_mri = np.concatenate(list(surface_mri_by_level.values()))
        global_result = register_icp(points_reference, all_surface_mri, start, params.global_icp)
    global_reference_to_mri = global_result.transform.matrix
    moved_mri_by_level = _assign_to_levels(
        apply_affine(global_reference_to_mri, points_reference), surface_mri_by_level, params
    )
    transforms, residuals_mm, deviations, fallbacks = {}, {}, {}, {}
    for level, surface_mri in surface_mri_by_level.items():
        moved_mri = moved_mri_by_level[level]
        transforms[level] = global_result.transform
        if len(moved_mri) < params.min_points:
            fallbacks[level] = f"{len(moved_mri)} US points assigned (needs {params.min_points})"
            continue
        deviation, rms_mm = _fit_deviation(moved_mri, surface_mri, params)
        angle_deg = float(np.degrees(np.linalg.norm(deviation[:3])))
        shift_mm = float(np.linalg.norm(deviation[3:]))
        deviations[level] = (angle_deg, shift_mm)
        if angle_deg > params.max_rotation_deg or shift_mm > params.max_translation_mm:
            fallbacks[level] = (
                f"deviation {angle_deg:.1f} deg, {shift_mm:.1f} mm exceeds {params.max_rotation_deg:g} deg, "
                f"{params.max_translation_mm:g} mm"
            )
            continue
        level_reference_to_mri = _deviation_matrix(deviation, surface_mri.mean(axis=0)) @ global_reference_to_mri
        transforms[level] = Transform(level_reference_to_mri, "Reference", "Mri")
        residuals_mm[level] = rms_mm
    return PiecewiseResult(
        global_result=global_result,
        transforms=transforms,
        residuals_mm=residuals_mm,
        point_counts={level: len(moved_mri) for level, moved_mri in moved_mri_by_level.items()},
        deviations=deviations,
        fallbacks=fallbacks,
        run_time_s=time.perf_counter() - started_s,
    )


def _assign_to_levels(moved_mri: np.ndarray, surface_mri_by_level: dict[str, np.ndarray], params) -> dict[str, np.ndarray]:
    """Level -> the US points (already in ``Mri``, (N, 3) mm) whose nearest MRI surface point is on that level."""
    names = list(surface_mri_by_level)
    owner = np.concatenate([np.full(len(surface_mri_by_level[name]), index) for index, name in enumerate(names)])
    distance_mm, nearest = cKDTree(np.concatenate([surface_mri_by_level[name] for name in names])).query(
        moved_mri, distance_upper_bound=params.assignment_distance_mm
    )
    found = np.isfinite(distance_mm)
    level_of_point = np.full(len(moved_mri), -1)
    level_of_point[found] = owner[nearest[found]]
    return {name: moved_mri[level_of_point == index] for index, name in enumerate(names)}


def _fit_deviation(moved_mri: np.ndarray, surface_mri: np.ndarray, params: PiecewiseParameters) -> tuple[np.ndarray, float]:
    """Regularised point-to-plane ICP of one vertebra: US points ``moved_mri`` onto its MRI surface ``surface_mri``.

    Returns the deviation (rotation vector rad (3,) about the surface centroid, translation mm
    (3,)) and the final RMS distance of the kept pairs, mm.
    """
    tree_mri = cKDTree(surface_mri)
    normals_mri = _surface_normals(surface_mri, tree_mri)
    centre_mri = surface_mri.mean(axis=0)
    deviation = np.zeros(6)
    rms_mm = float("nan")
    for max_distance_mm in params.distance_schedule_mm:
        for _ in range(params.max_iterations):
            deviation_mri_to_mri = _deviation_matrix(deviation, centre_mri)
            points_mri = apply_affine(deviation_mri_to_mri, moved_mri)
            distance_mm, nearest = tree_mri.query(points_mri, distance_upper_bound=max_distance_mm)
            kept = np.isfinite(distance_mm)
            if kept.sum() < params.min_points:
                return deviation, rms_mm
            rms_mm = float(np.sqrt(np.mean(distance_mm[kept] ** 2)))
            pairs_mri = (points_mri[kept], surface_mri[nearest[kept]], normals_mri[nearest[kept]])
            step = _regularised_step(*pairs_mri, centre_mri, deviation, params)
            deviation = deviation + step
            if np.linalg.norm(step[3:]) + params.rotation_radius_mm * np.linalg.norm(step[:3]) < params.tolerance_mm:
                break
    return deviation, rms_mm


def _regularised_step(points_mri, targets_mri, normals_mri, centre_mri, deviation, params: PiecewiseParameters) -> np.ndarray:
    """Gauss-Newton step (rotation vector rad, translation mm) of the penalised point-to-plane cost.

    Minimises ``mean((n . (p + w x (p - c) + t - q))**2) + w_reg * |S (deviation + step)|**2`` with
    ``S = diag(radius, radius, radius, 1, 1, 1)``; small steps compose additively with the deviation.
    Points, targets and the centre ``c`` are in ``Mri``, mm; normals unit vectors.
    """
    system = np.hstack([np.cross(points_mri - centre_mri, normals_mri), normals_mri])
    residual_mm = np.sum((targets_mri - points_mri) * normals_mri, axis=1)
    scale = np.r_[np.full(3, params.rotation_radius_mm), np.ones(3)]
    penalty = params.regularisation_weight * np.diag(scale**2)
    normal_matrix = system.T @ system / len(points_mri) + penalty
    right_side = system.T @ residual_mm / len(points_mri) - penalty @ deviation
    return np.linalg.solve(normal_matrix, right_side)


def _deviation_matrix(deviation: np.ndarray, centre_mri: np.ndarray) -> np.ndarray:
    """(4, 4) rigid motion ``Mri`` -> ``Mri``: rotation vector (rad) about ``centre_mri`` (3,) mm, then translation mm."""
    rotation = Rotation.from_rotvec(deviation[:3]).as_matrix()
    deviation_mri_to_mri = np.eye(4)
    deviation_mri_to_mri[:3, :3] = rotation
    deviation_mri_to_mri[:3, 3] = centre_mri - rotation @ centre_mri + deviation[3:]
    return deviation_mri_to_mri
