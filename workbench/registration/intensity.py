"""Intensity-based rigid registration of the MRI to a reconstructed ultrasound volume.

- :func:`register_lc2`: LC2, the linear correlation of linear combination (Wein et al., MICCAI
  2008 and Medical Image Analysis 12 (2008) 577-585). Per patch of the US volume, the US
  intensity is fitted by least squares as ``a * MRI + b * |grad MRI| + c``; the patch's
  similarity is the fraction of the US variance the fit explains, and patches are averaged
  weighted by their US variance. Ultrasound shows tissue (like the MRI) and interfaces (like
  the gradient), which is why this works where MRI intensities alone do not.
- :func:`register_mattes`: the SimpleITK Mattes mutual-information baseline.

Both evaluate only the US voxels the sweep covered and search 6 rigid parameters (rotation
vector in degrees, translation in mm) about the centre of the covered voxels, composed with the
initial ``ReferenceToMri`` on the Reference side. Frames: see docs/frames.md.

The LC2 optimiser is scipy's bounded Powell method: derivative-free (LC2 has no cheap
gradient), bounded about the start, needs no extra dependency, and with scaled parameters
(one unit = one initial step) converges in a few hundred metric evaluations.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage, optimize
from scipy.spatial.transform import Rotation

from workbench.errors import RegistrationError
from workbench.frames import Transform, apply_affine
from workbench.registration.params import Lc2Parameters, MattesParameters, as_dict
from workbench.registration.result import RegistrationResult

__all__ = ["lc2_similarity", "register_lc2", "register_mattes", "rigid_offset"]

#: Patches whose US variance is below this (grey levels squared) carry no information.
_MIN_PATCH_VARIANCE = 1e-3


def rigid_offset(parameters, centre_mm) -> np.ndarray:
    """(4, 4) rigid motion from 6 parameters: rotation vector (deg, 3) and translation (mm, 3).

    The rotation is about ``centre_mm`` ((3,) mm); the motion maps a frame onto itself.
    """
    parameters = np.asarray(parameters, float)
    rotation = Rotation.from_rotvec(np.radians(parameters[:3])).as_matrix()
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = centre_mm - rotation @ centre_mm + parameters[3:]
    return matrix


# -- inputs -----------------------------------------------------------------------------------


def _voxel_to_physical(image: sitk.Image) -> np.ndarray:
    """(4, 4) from voxel index (i, j, k) to the image's physical frame, mm.

    ``MriVoxelToMri`` for the MRI; for a US volume reconstructed in ``Reference``, its voxel
    index to ``Reference``.
    """
    matrix = np.eye(4)
    direction = np.array(image.GetDirection(), float).reshape(3, 3)
    matrix[:3, :3] = direction * np.array(image.GetSpacing(), float)
    matrix[:3, 3] = image.GetOrigin()
    return matrix


def _checked_image(image, name: str) -> sitk.Image:
    if not isinstance(image, sitk.Image) or image.GetDimension() != 3:
        raise RegistrationError(f"{name} must be a 3D SimpleITK image")
    if image.GetNumberOfComponentsPerPixel() != 1:
        components = image.GetNumberOfComponentsPerPixel()
        raise RegistrationError(f"{name} must have one component per voxel, it has {components}")
    return image


def _checked_mask(us_volume: sitk.Image, us_mask) -> np.ndarray:
    """(nz, ny, nx) bool: voxels to use; default: the non-zero ones."""
    shape = sitk.GetArrayViewFromImage(us_volume).shape
    if us_mask is None:
        mask = sitk.GetArrayViewFromImage(us_volume) > 0
    else:
        mask = np.asarray(sitk.GetArrayViewFromImage(us_mask) if isinstance(us_mask, sitk.Image) else us_mask) > 0
        if mask.shape != shape:
            raise RegistrationError(f"us_mask has shape {mask.shape} but the US volume has {shape} (z, y, x)")
    if not mask.any():
        raise RegistrationError("US mask is empty: no covered voxel to compare with the MRI")
    return mask


def _checked_initial(initial: Transform) -> None:
    if not isinstance(initial, Transform) or initial.name != "ReferenceToMri":
        name = initial.name if isinstance(initial, Transform) else type(initial).__name__
        raise RegistrationError(f"initial transform must be ReferenceToMri, got {name}")
    if not initial.is_rigid(1e-4):
        raise RegistrationError("initial ReferenceToMri is not rigid")


def _mask_centre_mm(us_volume: sitk.Image, mask: np.ndarray) -> np.ndarray:
    index_ijk = np.argwhere(mask)[:, ::-1].mean(axis=0)
    return _voxel_to_physical(us_volume)[:3] @ np.append(index_ijk, 1.0)


# -- LC2 ---------------------------------------------------------------------------------------


class _MriSampler:
    """MRI and its gradient magnitude at one resolution, sampled at LPS points (trilinear)."""

    def __init__(self, mri: sitk.Image, smoothing_mm: float):
        image = sitk.Cast(mri, sitk.sitkFloat32)
        if smoothing_mm > 0:
            image = sitk.SmoothingRecursiveGaussian(image, smoothing_mm)
        self.intensity = sitk.GetArrayFromImage(image)
        self.gradient = sitk.GetArrayFromImage(sitk.GradientMagnitude(image))
        self.mri_to_mri_voxel = np.linalg.inv(_voxel_to_physical(mri))

    def sample(self, points_mri: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """MRI, gradient magnitude and whether inside the MRI, at (N, 3) ``Mri`` points (LPS mm) -> 3 x (N,)."""
        index_ijk = apply_affine(self.mri_to_mri_voxel, points_mri)
        inside = np.all((index_ijk >= 0) & (index_ijk <= np.array(self.intensity.shape[::-1]) - 1), axis=1)
        coordinates = index_ijk[:, ::-1].T
        return (
            ndimage.map_coordinates(self.intensity, coordinates, order=1, mode="nearest"),
            ndimage.map_coordinates(self.gradient, coordinates, order=1, mode="nearest"),
            inside,
        )


@dataclass(frozen=True)
class _UsPatches:
    """Covered US voxels at one resolution, grouped in cubic patches.

    ``points_reference`` (K, P, 3) mm; ``values`` (K, P) US grey; ``weights`` (K, P) 1 for
    covered voxels, 0 else; ``min_count``: patches with fewer usable voxels are left out;
    ``total_variance``: sum of the patches' US variances, the LC2 normaliser.
    """

    points_reference: np.ndarray
    values: np.ndarray
    weights: np.ndarray
    min_count: float
    total_variance: float


def _us_patches(us_volume: sitk.Image, mask: np.ndarray, spacing_mm: float, params: Lc2Parameters) -> _UsPatches:
    """Resample the covered part of the US volume to ``spacing_mm`` voxels and cut it into patches."""
    us = sitk.GetArrayFromImage(sitk.Cast(us_volume, sitk.sitkFloat32))
    native_mm = np.array(us_volume.GetSpacing(), float)
    sigma_vox = (params.us_smoothing_fraction * spacing_mm / native_mm)[::-1]
    us = ndimage.gaussian_filter(us * mask, sigma_vox)
    coverage = ndimage.gaussian_filter(mask.astype(np.float32), sigma_vox)
    us = np.where(coverage > 1e-6, us / np.maximum(coverage, 1e-6), 0.0)
    # A grid of patch-sized blocks over the covered bounding box, in native voxel indices.
    covered_ijk = np.argwhere(mask)[:, ::-1]
    low, high = covered_ijk.min(axis=0), covered_ijk.max(axis=0)
    side = 2 * params.patch_radius_vox + 1
    step_vox = spacing_mm / native_mm
    blocks = np.maximum(np.ceil((high - low + 1) / (step_vox * side)).astype(int), 1)
    axes = [low[a] + step_vox[a] * np.arange(blocks[a] * side) for a in range(3)]
    grid_ijk = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)  # (nx, ny, nz, 3)
    grid_ijk = grid_ijk.reshape(blocks[0], side, blocks[1], side, blocks[2], side, 3)
    grid_ijk = grid_ijk.transpose(0, 2, 4, 1, 3, 5, 6).reshape(-1, side**3, 3)
    coordinates = grid_ijk.reshape(-1, 3)[:, ::-1].T
    values = ndimage.map_coordinates(us, coordinates, order=1, mode="constant").reshape(grid_ijk.shape[:2])
    covered = ndimage.map_coordinates(mask.astype(np.float32), coordinates, order=1, mode="constant")
    weights = (covered.reshape(grid_ijk.shape[:2]) >= 0.5).astype(float)
    min_count = params.min_patch_coverage * side**3
    variance = _centred(values, weights)[1]
    keep = (weights.sum(axis=1) >= min_count) & (variance > _MIN_PATCH_VARIANCE)
    if not keep.any():
        raise RegistrationError(
            f"no US patch at {spacing_mm:g} mm has {params.min_patch_coverage:.0%} covered voxels with texture: "
            "the covered region is too small or flat for LC2"
        )
    us_voxel_to_reference = _voxel_to_physical(us_volume)
    points_reference = apply_affine(us_voxel_to_reference, grid_ijk[keep])
    return _UsPatches(points_reference, values[keep], weights[keep], min_count, float(variance[keep].sum()))


def _centred(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, P) values minus their weighted patch mean (0 where the weight is 0), and (K,) variances."""
    counts = np.maximum(weights.sum(axis=1, keepdims=True), 1.0)
    centred = (values - (values * weights).sum(axis=1, keepdims=True) / counts) * weights
    return centred, (centred**2).sum(axis=1) / counts[:, 0]


def _lc2(patches: _UsPatches, sampler: _MriSampler, reference_to_mri: np.ndarray) -> float:
    """LC2 of the patches against the MRI through ``reference_to_mri`` ((4, 4)); 0..1.

    Voxels that fall outside the MRI do not count; patches left with too few voxels count as
    unexplained (similarity 0), so that moving the US out of the MRI is no way to raise LC2.
    """
    shape = patches.weights.shape
    points_mri = apply_affine(reference_to_mri, patches.points_reference.reshape(-1, 3))
    intensity, gradient, inside = (values.reshape(shape) for values in sampler.sample(points_mri))
    return _lc2_of_samples(patches, intensity, gradient, inside)


def _lc2_of_samples(patches: _UsPatches, intensity: np.ndarray, gradient: np.ndarray, inside: np.ndarray) -> float:
    """LC2 from the MRI ``intensity``, ``gradient`` and ``inside`` flags sampled at the patch
    points ((K, P) each, the shape of ``patches.values``); 0..1."""
    weights = patches.weights * inside
    usable = weights.sum(axis=1) >= patches.min_count
    if not usable.any():
        return 0.0
    weights = weights[usable]
    u, u_variance = _centred(patches.values[usable], weights)
    m, _ = _centred(intensity[usable], weights)
    g, _ = _centred(gradient[usable], weights)
    a11, a22, a12 = (m * m).sum(axis=1), (g * g).sum(axis=1), (m * g).sum(axis=1)
    b1, b2, energy = (m * u).sum(axis=1), (g * u).sum(axis=1), (u * u).sum(axis=1)
    ridge = 1e-9 * (a11 + a22) + 1e-12
    a11, a22 = a11 + ridge, a22 + ridge
    explained = (a22 * b1**2 - 2 * a12 * b1 * b2 + a11 * b2**2) / (a11 * a22 - a12**2)
    similarity = np.clip(explained / np.maximum(energy, 1e-12), 0.0, 1.0)
    # Patches weighted by their US variance.
    return float((similarity * u_variance).sum() / patches.total_variance)


def lc2_similarity(
    mri: sitk.Image,
    us_volume: sitk.Image,
    reference_to_mri: Transform,
    us_mask=None,
    params: Lc2Parameters = Lc2Parameters(),
) -> float:
    """LC2 of the MRI and the US volume aligned by ``reference_to_mri``, at the finest level.

    Parameters
    ----------
    mri : SimpleITK.Image
        MRI in LPS mm (``Mri``).
    us_volume : SimpleITK.Image
        Reconstructed US volume in ``Reference`` mm.
    reference_to_mri : Transform
        ``ReferenceToMri``.
    us_mask : SimpleITK.Image or (nz, ny, nx) bool array, optional
        Covered voxels (e.g. ``ReconstructionResult.covered``); default: the non-zero voxels.
    params : Lc2Parameters

    Returns
    -------
    float
        0 (no patch explained) .. 1 (every patch a perfect linear combination).
    """
    _checked_initial(reference_to_mri)
    us_volume = _checked_image(us_volume, "US volume")
    mask = _checked_mask(us_volume, us_mask)
    level_mm = params.levels_mm[-1]
    sampler = _MriSampler(_checked_image(mri, "MRI"), level_mm / 2)
    return _lc2(_us_patches(us_volume, mask, level_mm, params), sampler, reference_to_mri.matrix)


def _offset_scale_and_limits(params) -> tuple[np.ndarray, np.ndarray]:
    """Per-parameter step (deg x3, mm x3) and search bounds in step units, for :func:`rigid_offset`."""
    scale = np.array([params.initial_step_deg] * 3 + [params.initial_step_mm] * 3)
    limits = np.array([params.max_rotation_deg] * 3 + [params.max_translation_mm] * 3) / scale
    return scale, limits


def _powell_level(negative_metric, x: np.ndarray, level: int, limits: np.ndarray, params):
    """One resolution level of the coarse-to-fine search: bounded Powell from ``x`` (step units).

    Level ``n`` searches with steps ``2**-n`` of the initial ones; ``negative_metric`` takes
    parameters in step units. Returns scipy's ``OptimizeResult`` with ``x`` in step units.
    """
    level_scale = 2.0**-level
    solution = optimize.minimize(
        lambda z: negative_metric(z * level_scale),
        x / level_scale,
        method="Powell",
        bounds=[(-limit / level_scale, limit / level_scale) for limit in limits],
        options={
            "xtol": params.tolerance_mm / params.initial_step_mm / level_scale,
            "maxfev": params.max_evaluations,
        },
    )
    solution.x = solution.x * level_scale
    return solution


def register_lc2(
    mri: sitk.Image,
    us_volume: sitk.Image,
    initial: Transform,
    us_mask=None,
    params: Lc2Parameters = Lc2Parameters(),
) -> RegistrationResult:
    """Rigid MRI-to-US registration maximising LC2, coarse to fine (method ``"lc2"``).

    Parameters
    ----------
    mri : SimpleITK.Image
        MRI in LPS mm (``Mri``).
    us_volume : SimpleITK.Image
        Reconstructed US volume in ``Reference`` mm (``ReconstructionResult.to_sitk()``).
    initial : Transform
        ``ReferenceToMri`` to start from (landmarks, bone ICP or a manual alignment).
    us_mask : SimpleITK.Image or (nz, ny, nx) bool array, optional
        Voxels the sweep covered (``ReconstructionResult.covered``); default: non-zero voxels.
    params : Lc2Parameters

    Returns
    -------
    RegistrationResult
        ``metric_trace``: LC2 per evaluation, all levels in order.

    Raises
    ------
    RegistrationError
        Not 3D images, a mask of another shape or empty, a non-rigid or wrong initial transform.
    """
    start = time.perf_counter()
    _checked_initial(initial)
    mri = _checked_image(mri, "MRI")
    us_volume = _checked_image(us_volume, "US volume")
    mask = _checked_mask(us_volume, us_mask)
    centre_mm = _mask_centre_mm(us_volume, mask)
    scale, limits = _offset_scale_and_limits(params)
    trace: list[float] = []
    x = np.zeros(6)
    converged = True
    for level, level_mm in enumerate(params.levels_mm):
        patches = _us_patches(us_volume, mask, level_mm, params)
        sampler = _MriSampler(mri, level_mm / 2)

        def cost(z, patches=patches, sampler=sampler):
            value = _lc2(patches, sampler, initial.matrix @ rigid_offset(z * scale, centre_mm))
            trace.append(value)
            return -value

        solution = _powell_level(cost, x, level, limits, params)
        x = solution.x
        converged = converged and bool(solution.success)
    matrix = initial.matrix @ rigid_offset(x * scale, centre_mm)
    overlap = _patch_overlap_fraction(patches, sampler, matrix)
    message = (f"LC2 {trace[-1]:.3f} after {len(trace)} evaluations; offset from the start "
               f"{np.linalg.norm(x[:3] * scale[:3]):.1f} deg, {np.linalg.norm(x[3:] * scale[3:]):.1f} mm")
    if overlap < patches.min_count / patches.weights.shape[1]:
        # An LC2 of nothing is flat: the optimiser "succeeds" anywhere. Not converged.
        converged = False
        message += f"; the sweep does not overlap the MRI ({overlap:.0%} of its patch voxels inside): not converged"
    return RegistrationResult(
        method="lc2",
        transform=Transform(matrix, "Reference", "Mri"),
        metric_trace=np.array(trace),
        run_time_s=time.perf_counter() - start,
        parameters=as_dict(params),
        provenance={**_provenance(mri, us_volume, mask, initial), "overlap_fraction": round(overlap, 4)},
        converged=converged,
        message=message,
    )


def _patch_overlap_fraction(patches: _UsPatches, sampler, reference_to_mri: np.ndarray) -> float:
    """Fraction (0..1) of the patches' covered voxels that ``reference_to_mri`` ((4, 4)) puts inside the MRI."""
    points_mri = apply_affine(reference_to_mri, patches.points_reference.reshape(-1, 3))
    inside = sampler.sample(points_mri)[-1].reshape(patches.weights.shape)
    return float((patches.weights * inside).sum() / max(patches.weights.sum(), 1e-12))


def _provenance(mri: sitk.Image, us_volume: sitk.Image, mask: np.ndarray, initial: Transform) -> dict:
    return {
        "mri_size_px": list(mri.GetSize()),
        "mri_spacing_mm": list(mri.GetSpacing()),
        "us_size_px": list(us_volume.GetSize()),
        "us_spacing_mm": list(us_volume.GetSpacing()),
        "us_covered_voxels": int(mask.sum()),
        "initial": initial.to_list(),
    }


# -- Mattes mutual information ------------------------------------------------------------


def register_mattes(
    mri: sitk.Image,
    us_volume: sitk.Image,
    initial: Transform,
    us_mask=None,
    params: MattesParameters = MattesParameters(),
) -> RegistrationResult:
    """Baseline: SimpleITK Mattes mutual information, Euler3D, multi-resolution (``"mattes-mi"``).

    The US volume is the fixed image (its points in ``Reference``), the MRI the moving one, so
    the optimised transform maps Reference points to Mri points: ``ReferenceToMri``.
    Parameters as :func:`register_lc2`; ``metric_trace`` holds the metric (negative MI) per
    iteration.
    """
    start = time.perf_counter()
    _checked_initial(initial)
    mri = _checked_image(mri, "MRI")
    us_volume = _checked_image(us_volume, "US volume")
    mask = _checked_mask(us_volume, us_mask)
    mask_image = sitk.GetImageFromArray(mask.astype(np.uint8))
    mask_image.CopyInformation(us_volume)
    euler = sitk.Euler3DTransform()
    euler.SetCenter(_mask_centre_mm(us_volume, mask).tolist())
    euler.SetMatrix(initial.matrix[:3, :3].ravel().tolist())
    centre = np.array(euler.GetCenter())
    euler.SetTranslation((initial.matrix[:3, 3] + initial.matrix[:3, :3] @ centre - centre).tolist())

    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=params.histogram_bins)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(params.sampling_fraction, params.seed)
    method.SetMetricFixedMask(mask_image)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=params.learning_rate, minStep=params.min_step, numberOfIterations=params.iterations
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(params.shrink_factors))
    method.SetSmoothingSigmasPerLevel(list(params.smoothing_sigmas_mm))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(euler, inPlace=True)
    trace: list[float] = []
    method.AddCommand(sitk.sitkIterationEvent, lambda: trace.append(method.GetMetricValue()))
    try:
        method.Execute(sitk.Cast(us_volume, sitk.sitkFloat32), sitk.Cast(mri, sitk.sitkFloat32))
    except RuntimeError as error:
        raise RegistrationError(f"Mattes MI registration failed: {str(error).splitlines()[-1]}") from None
    return RegistrationResult(
        method="mattes-mi",
        transform=Transform(_affine_matrix(euler), "Reference", "Mri"),
        metric_trace=np.array(trace),
        run_time_s=time.perf_counter() - start,
        parameters=as_dict(params),
        provenance=_provenance(mri, us_volume, mask, initial),
        converged=True,
        message=f"stopped: {method.GetOptimizerStopConditionDescription()}",
    )


def _affine_matrix(transform: sitk.Transform) -> np.ndarray:
    """(4, 4) of an affine SimpleITK transform, from the images of the origin and unit vectors."""
    origin = np.array(transform.TransformPoint((0.0, 0.0, 0.0)))
    matrix = np.eye(4)
    for axis in range(3):
        matrix[:3, axis] = np.array(transform.TransformPoint(tuple(np.eye(3)[axis]))) - origin
    matrix[:3, 3] = origin
    return matrix
