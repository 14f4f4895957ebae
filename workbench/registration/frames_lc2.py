"""LC2 registration of the MRI directly to tracked ultrasound frames (method ``"lc2-frames"``).

Instead of a reconstructed volume, every ``frame_step``-th frame is used as it was acquired:
its pixels, decimated to the level's spacing (box-averaged, which also reduces speckle), go
Image -> Reference through the tracking (``ImageToReference = ProbeToReference @ ImageToProbe``)
and Reference -> Mri through the candidate ``ReferenceToMri``, where the smoothed MRI and its
gradient are sampled. The LC2 metric (Wein et al. 2008; see
:mod:`workbench.registration.intensity`) is computed over square patches of each frame, with
the MRI intensity and, as second channel, the MRI's decrease along the beam (the soft tissue
to dark cortex step that reflects).

Pixels that carry no information about the MRI are left out:

- outside the imaged region (fan): pixels that are zero in every frame;
- acoustic shadows: in each column where a bone echo is found, everything deeper than the echo
  plus ``shadow_margin_mm``. The MRI shows bone and tissue there but the US is dark;
- far above the bone: only a band ``band_above_bone_mm`` above the echo is kept. Higher up the
  US is muscle fibre texture and speckle, whose variance (the LC2 weight) the MRI cannot
  explain; it flattens the metric until its maximum is no longer near the truth.

What it achieves on the simulated sweeps (docs/registration.md): the metric peaks within about
1 mm of the truth, so it converges to about 1-1.5 mm target error from starts within a few mm,
but not from 10-20 mm offsets, and started from bone ICP (0.25 mm) it moves to about 1 mm.
Those numbers are for the earlier cartoon MRI. On the realistic T2 synthesis the peak lies
several mm / degrees off (the bone echo sits on a dark-to-bright muscle-to-marrow step, which
``"beam-descending"`` mostly ignores, and the MRI's intramuscular fat planes, parallel to
sagittal frames, have no US counterpart in the simulator): docs/registration.md, "On the
realistic T2".

Frames: see docs/frames.md.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from workbench.errors import RegistrationError
from workbench.frames import Transform, apply_affine, apply_linear
from workbench.registration.intensity import (
    _MIN_PATCH_VARIANCE,
    _centred,
    _checked_image,
    _checked_initial,
    _lc2_of_samples,
    _offset_scale_and_limits,
    _powell_level,
    _UsPatches,
    _voxel_to_physical,
    rigid_offset,
)
from workbench.registration.params import FramesLc2Parameters, as_dict
from workbench.registration.result import RegistrationResult
from workbench.registration.surface import _bone_pixels, _frames_and_poses

__all__ = ["REFINEMENT_PARAMETERS", "FramesLc2Parameters", "lc2_frames_similarity", "register_lc2_frames"]

#: Refinement from a start within a few mm (bone ICP, landmarks): the fine level only, small steps
#: and a search bounded to 6 mm / 6 deg about the start.
REFINEMENT_PARAMETERS = FramesLc2Parameters(
    levels_mm=(1.0,),
    initial_step_mm=1.0,
    initial_step_deg=1.0,
    max_translation_mm=6.0,
    max_rotation_deg=6.0,
    max_evaluations=150,
)


# -- MRI sampling ----------------------------------------------------------------------------


class _GradientSampler:
    """The smoothed MRI and its gradient (LPS components, grey / mm), sampled at LPS points.

    All four channels are interpolated trilinearly in one pass (shared corner indices and
    weights); points outside the MRI take the value of the nearest voxel and are flagged.
    """

    def __init__(self, mri: sitk.Image, smoothing_mm: float):
        image = sitk.Cast(mri, sitk.sitkFloat32)
        if smoothing_mm > 0:
            image = sitk.SmoothingRecursiveGaussian(image, smoothing_mm)
        intensity = sitk.GetArrayFromImage(image)
        if min(intensity.shape) < 2:
            raise RegistrationError(f"MRI of {list(mri.GetSize())} voxels is too thin for trilinear sampling")
        gradient_kji = np.gradient(intensity, *np.array(mri.GetSpacing(), float)[::-1])
        direction = np.array(mri.GetDirection(), float).reshape(3, 3)
        # Index-axis derivatives (i, j, k) to LPS: gradient_lps = direction @ gradient_ijk.
        gradient_lps = np.einsum("ab,b...->a...", direction, np.stack(gradient_kji[::-1]))
        # Voxel-major (voxels, 4): one gather fetches all four channels of a corner.
        channels = np.concatenate([intensity[None], gradient_lps]).reshape(4, -1).T
        self.channels = np.ascontiguousarray(channels, np.float32)
        self.shape_kji = np.array(intensity.shape)
        self.mri_to_mri_voxel = np.linalg.inv(_voxel_to_physical(mri))

    def sample(self, points_mri: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(4, N) intensity and gradient x, y, z at (N, 3) ``Mri`` points (LPS mm), and (N,) inside the MRI."""
        index_kji = apply_affine(self.mri_to_mri_voxel, points_mri)[:, ::-1]
        high = self.shape_kji - 1
        inside = np.all((index_kji >= 0) & (index_kji <= high), axis=1)
        index_kji = np.clip(index_kji, 0, high)
        corner = np.minimum(index_kji.astype(np.int64), high - 1)
        fraction = (index_kji - corner).astype(np.float32)
        strides = np.array([self.shape_kji[1] * self.shape_kji[2], self.shape_kji[2], 1])
        base = corner @ strides
        values = np.zeros((len(points_mri), 4), np.float32)
        for dk in (0, 1):
            wk = fraction[:, 0] if dk else 1 - fraction[:, 0]
            for dj in (0, 1):
                wkj = wk * (fraction[:, 1] if dj else 1 - fraction[:, 1])
                for di in (0, 1):
                    weight = wkj * (fraction[:, 2] if di else 1 - fraction[:, 2])
                    values += weight[:, None] * self.channels[base + (dk * strides[0] + dj * strides[1] + di)]
        return values.T, inside


def _frames_lc2(
    patches: _FramePatches, sampler: _GradientSampler, reference_to_mri: np.ndarray, gradient: str
) -> float:
    """LC2 of the frame patches against the MRI through ``reference_to_mri`` ((4, 4)); 0..1.

    The second channel is the MRI gradient's magnitude, or its component along each patch's
    beam direction (mapped into ``Mri``): absolute, or its descending part (see
    :class:`FramesLc2Parameters`).
    """
    shape = patches.patches.values.shape
    points_reference = patches.patches.points_reference.reshape(-1, 3)
    values, inside = sampler.sample(apply_affine(reference_to_mri, points_reference))
    if gradient == "magnitude":
        second = np.linalg.norm(values[1:], axis=0)
    else:
        beams_mri = apply_linear(reference_to_mri, patches.beams_reference)  # (K, 3)
        along_beam = np.einsum("akp,ka->kp", values[1:].reshape(3, *shape), beams_mri)
        second = np.abs(along_beam) if gradient == "beam" else np.maximum(-along_beam, 0.0)
    return _lc2_of_samples(patches.patches, values[0].reshape(shape), second.reshape(shape), inside.reshape(shape))


# -- frames to patches ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Frames:
    """The frames used: ``images`` (F, H, W) float grey, ``image_to_reference`` (F, 4, 4) pixel -> mm,
    ``usable`` (F, H, W) bool (inside the fan, not shadowed, in the band), ``pixel_mm`` the pixel
    size, ``source_indices`` (F,) their indices among the ``frames_total`` frames given."""

    images: np.ndarray
    image_to_reference: np.ndarray
    usable: np.ndarray
    pixel_mm: float
    source_indices: np.ndarray
    frames_total: int


def _prepared_frames(frames, image_to_probe: Transform, probe_to_reference, params: FramesLc2Parameters) -> _Frames:
    if not isinstance(image_to_probe, Transform) or image_to_probe.name != "ImageToProbe":
        name = image_to_probe.name if isinstance(image_to_probe, Transform) else type(image_to_probe).__name__
        raise RegistrationError(f"image_to_probe must be ImageToProbe, got {name}")
    images, poses, valid = _frames_and_poses(frames, probe_to_reference)
    if images.ndim != 3:
        raise RegistrationError(f"frames must be single-component (N, H, W) images, got shape {images.shape}")
    fan = np.any(images > 0, axis=0)
    chosen = np.flatnonzero(valid)[:: params.frame_step]
    if len(chosen) == 0:
        raise RegistrationError("no frame has a valid ProbeToReference pose")
    pixel_mm = float(np.linalg.norm(image_to_probe.matrix[:3, 1]))
    usable = np.repeat(fan[None], len(chosen), axis=0)
    if params.mask_shadows or params.band_above_bone_mm > 0:
        for usable_frame, image in zip(usable, images[chosen]):
            usable_frame &= _unshadowed_band(image, pixel_mm, params)
    if not usable.any():
        raise RegistrationError(
            f"no usable pixel in {len(chosen)} frames: no bone echo found (a bright ridge above "
            f"{params.bone.min_brightness:g} with a shadow below) to place the band, or all pixels zero"
        )
    return _Frames(
        images=images[chosen].astype(np.float32),
        image_to_reference=poses[chosen] @ image_to_probe.matrix,
        usable=usable,
        pixel_mm=pixel_mm,
        source_indices=chosen,
        frames_total=len(images),
    )


def _unshadowed_band(image: np.ndarray, pixel_mm: float, params: FramesLc2Parameters) -> np.ndarray:
    """(H, W) bool: the pixels LC2 may use, by the bone echo of each column.

    With ``mask_shadows``, pixels deeper than the echo plus ``shadow_margin_mm`` are left out
    in the columns where bone was found; with ``band_above_bone_mm`` > 0, pixels shallower
    than the echo minus the band are left out, the echo depth interpolated across the columns
    without bone (the gaps between laminae), and the whole frame where no bone was found.
    """
    columns, rows = _bone_pixels(image, pixel_mm, dataclasses.replace(params.bone, column_step=1))
    height, width = image.shape
    depth_px = np.arange(height)[:, None]
    keep = np.ones((height, width), bool)
    if params.mask_shadows and len(columns):
        first_shadow_row = np.full(width, float(height))
        first_shadow_row[columns.astype(int)] = rows + params.shadow_margin_mm / pixel_mm
        keep &= depth_px <= first_shadow_row[None, :]
    if params.band_above_bone_mm > 0:
        if not len(columns):
            return np.zeros((height, width), bool)
        echo_row = np.interp(np.arange(width), columns, rows)
        keep &= depth_px >= echo_row[None, :] - params.band_above_bone_mm / pixel_mm
    return keep


@dataclass(frozen=True)
class _FramePatches:
    """Frame patches for LC2 and the beam direction of each (``beams_reference`` (K, 3) unit, the
    image +y axis of the patch's frame in ``Reference``)."""

    patches: _UsPatches
    beams_reference: np.ndarray


def _patches(frames: _Frames, level_mm: float, params: FramesLc2Parameters) -> _FramePatches:
    """Cut the decimated frames into square patches of Reference points, grey values and weights."""
    step = max(1, int(round(level_mm / frames.pixel_mm)))
    side = 2 * params.patch_radius_px + 1
    height, width = frames.images.shape[1:]
    rows = np.arange(step // 2, height, step)[: (len(range(step // 2, height, step)) // side) * side]
    columns = np.arange(step // 2, width, step)[: (len(range(step // 2, width, step)) // side) * side]
    if len(rows) == 0 or len(columns) == 0:
        raise RegistrationError(f"frames of {width} x {height} px are smaller than one patch at {level_mm:g} mm")
    # Speckle reduction: average over the decimation cell; a pixel is usable if most of its cell is.
    grey = ndimage.uniform_filter(frames.images, (1, step, step))
    usable = ndimage.uniform_filter(frames.usable.astype(np.float32), (1, step, step)) >= 0.5
    grid = np.ix_(np.arange(len(frames.images)), rows, columns)
    values, weights = _blocks(grey[grid], side), _blocks(usable[grid].astype(float), side)
    pixels = np.stack(np.meshgrid(columns, rows), axis=-1).astype(float)  # (h, w, 2): column, row
    pixels_mm = np.concatenate([pixels, np.zeros(pixels.shape[:2] + (1,)), np.ones(pixels.shape[:2] + (1,))], -1)
    points = np.einsum("fij,hwj->fhwi", frames.image_to_reference[:, :3], pixels_mm)
    points = _blocks(points, side)
    min_count = params.min_patch_coverage * side**2
    variance = _centred(values, weights)[1]
    keep = (weights.sum(axis=1) >= min_count) & (variance > _MIN_PATCH_VARIANCE)
    if not keep.any():
        raise RegistrationError(
            f"no frame patch at {level_mm:g} mm has {params.min_patch_coverage:.0%} usable pixels with texture"
        )
    beams = frames.image_to_reference[:, :3, 1] / np.linalg.norm(frames.image_to_reference[:, :3, 1], axis=1)[:, None]
    beams = np.repeat(beams, len(values) // len(beams), axis=0)
    patches = _UsPatches(points[keep], values[keep], weights[keep], min_count, float(variance[keep].sum()))
    return _FramePatches(patches, beams[keep])


def _blocks(array: np.ndarray, side: int) -> np.ndarray:
    """(F, h, w, ...) -> (F * h/side * w/side, side * side, ...): square blocks of the image grid."""
    count, height, width = array.shape[:3]
    rest = array.shape[3:]
    blocks = array.reshape(count, height // side, side, width // side, side, *rest)
    blocks = blocks.transpose(0, 1, 3, 2, 4, *range(5, 5 + len(rest)))
    return blocks.reshape(count * (height // side) * (width // side), side * side, *rest)


# -- public API -------------------------------------------------------------------------------


def lc2_frames_similarity(
    mri: sitk.Image,
    frames,
    image_to_probe: Transform,
    reference_to_mri: Transform,
    probe_to_reference=None,
    params: FramesLc2Parameters = FramesLc2Parameters(),
) -> float:
    """LC2 of the MRI and the tracked frames aligned by ``reference_to_mri``, at the finest level.

    Parameters as :func:`register_lc2_frames`; returns 0 (nothing explained) .. 1.
    """
    _checked_initial(reference_to_mri)
    prepared = _prepared_frames(frames, image_to_probe, probe_to_reference, params)
    level_mm = params.levels_mm[-1]
    sampler = _GradientSampler(_checked_image(mri, "MRI"), level_mm * params.mri_smoothing_fraction)
    return _frames_lc2(_patches(prepared, level_mm, params), sampler, reference_to_mri.matrix, params.gradient)


def register_lc2_frames(
    mri: sitk.Image,
    frames,
    image_to_probe: Transform,
    initial: Transform,
    probe_to_reference=None,
    params: FramesLc2Parameters = FramesLc2Parameters(),
) -> RegistrationResult:
    """Rigid MRI-to-US registration maximising LC2 on the tracked frames, coarse to fine.

    Parameters
    ----------
    mri : SimpleITK.Image
        MRI in LPS mm (``Mri``).
    frames : TrackedSequence or (N, H, W) uint8 array
        B-mode frames, MF orientation; a sequence gives its own ``ProbeToReference`` poses.
    image_to_probe : Transform
        ``ImageToProbe`` calibration (pixels to mm).
    initial : Transform
        ``ReferenceToMri`` to start from.
    probe_to_reference : (N, 4, 4) float array, mm, optional
        ``ProbeToReference`` per frame; required with a bare array of frames.
    params : FramesLc2Parameters

    Returns
    -------
    RegistrationResult
        Method ``"lc2-frames"``, ``transform`` the ``ReferenceToMri`` found, ``metric_trace``
        LC2 per evaluation over all levels.

    Raises
    ------
    RegistrationError
        Wrong transforms, frames and poses that do not match, no usable frame or patch.
    """
    start = time.perf_counter()
    _checked_initial(initial)
    mri = _checked_image(mri, "MRI")
    prepared = _prepared_frames(frames, image_to_probe, probe_to_reference, params)
    scale, limits = _offset_scale_and_limits(params)
    trace: list[float] = []
    best = {"value": -np.inf, "x": np.zeros(6)}
    x = np.zeros(6)
    converged = True
    centre_reference = None
    level_patches = []
    for level, level_mm in enumerate(params.levels_mm):
        patches = _patches(prepared, level_mm, params)
        level_patches.append(len(patches.patches.values))
        if centre_reference is None:
            # Rotations about the centre of the used pixels decouple them from the translations.
            centre_reference = patches.patches.points_reference.reshape(-1, 3).mean(axis=0)
        sampler = _GradientSampler(mri, level_mm * params.mri_smoothing_fraction)
        best = {"value": -np.inf, "x": x}  # the finer level's metric is not comparable with the coarser one's

        def cost(z, patches=patches, sampler=sampler, best=best, centre_reference=centre_reference):
            offset_reference = rigid_offset(z * scale, centre_reference)
            value = _frames_lc2(patches, sampler, initial.matrix @ offset_reference, params.gradient)
            trace.append(value)
            if value > best["value"]:
                best.update(value=value, x=np.array(z))
            return -value

        solution = _powell_level(cost, x, level, limits, params)
        x = best["x"]
        converged = converged and bool(solution.success)
    reference_to_mri = initial.matrix @ rigid_offset(x * scale, centre_reference)
    rotation_deg, translation_mm = np.linalg.norm(x[:3] * scale[:3]), np.linalg.norm(x[3:] * scale[3:])
    inside = sampler.sample(apply_affine(reference_to_mri, patches.patches.points_reference.reshape(-1, 3)))[1]
    weights = patches.patches.weights
    overlap = float((weights * inside.reshape(weights.shape)).sum() / max(weights.sum(), 1e-12))
    no_overlap = overlap < patches.patches.min_count / weights.shape[1]
    if no_overlap:  # an LC2 of nothing is flat: the optimiser "succeeds" anywhere
        converged = False
    return RegistrationResult(
        method="lc2-frames",
        transform=Transform(reference_to_mri, "Reference", "Mri"),
        metric_trace=np.array(trace),
        run_time_s=time.perf_counter() - start,
        parameters=as_dict(params),
        provenance={
            "mri_size_px": list(mri.GetSize()),
            "mri_spacing_mm": list(mri.GetSpacing()),
            "frames_total": prepared.frames_total,
            "frames_used": [int(i) for i in prepared.source_indices],
            "frame_size_px": list(prepared.images.shape[:0:-1]),
            "pixel_mm": prepared.pixel_mm,
            "usable_pixel_fraction": round(float(prepared.usable.mean()), 4),
            "patches_per_level": level_patches,
            "rotation_centre_reference_mm": [float(v) for v in centre_reference],
            "initial": initial.to_list(),
            "overlap_fraction": round(overlap, 4),
        },
        converged=converged,
        message=f"LC2 {best['value']:.3f} (start {trace[0]:.3f}) after {len(trace)} evaluations on "
        f"{len(prepared.images)} frames; moved {rotation_deg:.1f} deg, {translation_mm:.1f} mm from the start"
        + (f"; the frames do not overlap the MRI ({overlap:.0%} of their patch pixels inside): not converged"
           if no_overlap else ""),
    )
