"""Tracked-ultrasound volume reconstruction that reproduces PLUS's VolumeReconstructor.

:func:`reconstruct_volume` pastes every frame of a tracked sweep into a voxel grid in the
``Reference`` frame (or ``Mri`` given ``ReferenceToMri``), with PLUS's interpolation,
compounding, clipping and hole filling, and returns the volume together with its
accumulation buffer (which voxels pixels reached, and with what weight).
:func:`reconstruct_from_files` does the same from a sequence file and a PLUS device set,
as PLUS's ``VolumeReconstructor --image-to-reference-transform=ImageToReference``.

Frames are pasted in file order, rows top to bottom, columns left to right, exactly as
PLUS (single thread) does: with MEAN compounding the result depends on that order. See
docs/reconstruction.md and docs/frames.md.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from workbench.errors import FrameError, ReconstructionError
from workbench.frames import Transform, split_transform_name
from workbench.io.plus_config import HoleFillingElement, VolumeReconstructionConfig
from workbench.io.sequence import TrackedSequence
from workbench.reconstruction import kernels
from workbench.reconstruction.clipping import extent_corner_box, paste_runs
from workbench.reconstruction.geometry import (
    ExtentRounding,
    OutputGrid,
    check_memory,
    grid_covering,
    image_to_voxel_matrix,
)

__all__ = [
    "DEFAULT_MEMORY_LIMIT_BYTES",
    "ReconstructionResult",
    "reconstruct_from_files",
    "reconstruct_volume",
]

#: Largest volume plus accumulation buffer a reconstruction may allocate unless told otherwise.
DEFAULT_MEMORY_LIMIT_BYTES = 2 * 2**30

#: Called after each pasted frame with (frames done, frames to paste).
ProgressCallback = Callable[[int, int], None]

_COMPOUNDING = {"MEAN": kernels.MEAN, "MAXIMUM": kernels.MAXIMUM, "LATEST": kernels.LATEST}
_ARITHMETIC = {"FULL": kernels.FULL, "PARTIAL": kernels.PARTIAL, "NONE": kernels.NONE}
_HOLE_FILLERS = {
    "STICK": kernels.STICK,
    "GAUSSIAN": kernels.GAUSSIAN,
    "GAUSSIAN_ACCUMULATION": kernels.GAUSSIAN_ACCUMULATION,
    "NEAREST_NEIGHBOR": kernels.NEAREST_KNOWN,
    "DISTANCE_WEIGHT_INVERSE": kernels.DISTANCE_WEIGHT_INVERSE,
}
_SUPPORTED_PIXEL_TYPES = (np.uint8, np.int8, np.uint16, np.int16, np.float32)


@dataclass
class ReconstructionResult:
    """A reconstructed volume and what went into it.

    Attributes
    ----------
    volume : (nz, ny, nx) array
        Voxel values, the frames' pixel type; voxel (i, j, k) is ``volume[k, j, i]``.
    accumulation : (nz, ny, nx) uint16 array
        PLUS's accumulation buffer *before* hole filling: 0 where no pixel reached the voxel
        (a hole), else 256 per whole pixel for MEAN (saturating at 65535), the trilinear
        weight * 256 of the winning pixel for LINEAR MAXIMUM / LATEST.
    grid : OutputGrid
        Geometry: origin (centre of voxel 0), spacing and size in ``grid.frame``.
    frames_inserted : int
        Frames pasted into the volume.
    frames_skipped : int
        Frames whose ``ImageTo<frame>`` could not be computed (a needed transform INVALID or
        missing) or whose image status is INVALID; PLUS skips them too.
    holes_filled : int
        Voxels filled by hole filling (0 when it is off).
    """

    volume: np.ndarray
    accumulation: np.ndarray
    grid: OutputGrid
    frames_inserted: int
    frames_skipped: int
    holes_filled: int

    @property
    def covered(self) -> np.ndarray:
        """(nz, ny, nx) bool: voxels that at least one pixel reached."""
        return self.accumulation > 0

    def to_sitk(self, accumulation: bool = False):
        """The volume (or the accumulation buffer) as a SimpleITK image with the grid's geometry."""
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(self.accumulation if accumulation else self.volume)
        image.SetOrigin(self.grid.origin_mm)
        image.SetSpacing(self.grid.spacing_mm)
        return image

    def write(self, path: str | os.PathLike, accumulation: bool = False) -> Path:
        """Write the volume (or accumulation buffer) atomically, geometry as PLUS writes it.

        MetaImage ``Offset`` is the centre of voxel 0, ``ElementSpacing`` the spacing, axes
        those of the grid's frame (identity direction).
        """
        from workbench.io.volume import save_volume

        return save_volume(self.to_sitk(accumulation), path)


def reconstruct_volume(
    sequence: TrackedSequence,
    image_to_probe: Transform,
    config: VolumeReconstructionConfig,
    *,
    extra_transforms: Iterable[Transform] = (),
    reference_to_mri: Transform | None = None,
    extent_rounding: ExtentRounding = "round",
    memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES,
    progress: ProgressCallback | None = None,
) -> ReconstructionResult:
    """Reconstruct a volume from a tracked sweep as PLUS does.

    Parameters
    ----------
    sequence : TrackedSequence
        The sweep; frames are re-oriented to MF from ``sequence.image_orientation``.
    image_to_probe : Transform
        Ultrasound calibration ``ImageToProbe`` (pixels to mm). See docs/frames.md.
    config : VolumeReconstructionConfig
        PLUS settings (``read_device_set(...).volume_reconstruction`` or built in Python).
        Frame names: ``config.image_to_reference_name`` (``ImageToReference`` by default).
        As PLUS's VolumeReconstructor, the grid always covers the frames: ``OutputOrigin``
        and ``OutputExtent`` are not used.
    extra_transforms : iterable of Transform
        Further fixed transforms (a device set's other coordinate definitions).
    reference_to_mri : Transform, optional
        If given, the volume is built in the ``Mri`` frame (axes of Mri, LPS mm) from
        ``ImageToMri = ReferenceToMri @ ImageToReference``.
    extent_rounding : {"round", "truncate"}
        ``"round"`` matches PLUS since 2025, ``"truncate"`` older PLUS releases.
    memory_limit_bytes : int
        Refuse grids whose volume plus accumulation buffer exceed this (default 2 GiB).
    progress : callable, optional
        ``progress(done, total)`` after each frame pasted.

    Returns
    -------
    ReconstructionResult

    Raises
    ------
    ReconstructionError
        Unsupported pixels or orientation, no frame with a valid pose, a grid over the
        memory limit, or a setting workbench does not implement.
    """
    _check_supported(config)
    images = _mf_view(sequence)
    image_to_output, valid = _poses(sequence, image_to_probe, config, extra_transforms, reference_to_mri)
    if not valid.any():
        raise ReconstructionError(
            f"no frame has a valid {config.image_to_reference_name} transform: all {len(valid)} frames have an "
            "INVALID or missing pose (check the frame names and the ImageToProbe calibration)",
            sequence.source_path,
        )
    height, width = images.shape[1:]
    grid = grid_covering(
        image_to_output[valid],
        extent_corner_box(config, width, height),
        config.output_spacing_mm,
        "Mri" if reference_to_mri is not None else (config.reference_coordinate_frame or "Reference"),
        extent_rounding,
    )
    check_memory(grid, images.dtype.itemsize + 2, memory_limit_bytes)
    paste = _paster(config, width, height)
    volume = np.zeros(grid.shape, dtype=images.dtype)
    accumulation = np.zeros(grid.shape, dtype=np.uint16)
    pasted = [k for k in range(0, len(images), config.skip_interval) if valid[k]]
    for done, k in enumerate(pasted, start=1):
        paste(volume, accumulation, images[k], image_to_voxel_matrix(image_to_output[k], grid))
        if progress is not None:
            progress(done, len(pasted))
    holes_filled = 0
    if config.fill_holes and config.hole_filling_elements:
        holes_filled = _fill_holes(volume, accumulation, config.hole_filling_elements)
    return ReconstructionResult(
        volume=volume,
        accumulation=accumulation,
        grid=grid,
        frames_inserted=len(pasted),
        frames_skipped=int(np.count_nonzero(~valid)),
        holes_filled=holes_filled,
    )


def reconstruct_from_files(
    sequence_path: str | os.PathLike,
    device_set_path: str | os.PathLike,
    *,
    interpolation: str | None = None,
    compounding: str | None = None,
    spacing_mm: float | tuple[float, float, float] | None = None,
    fill_holes: bool | None = None,
    image_to_reference_transform: str | None = None,
    **options,
) -> ReconstructionResult:
    """Read a sequence file and a PLUS device set and reconstruct (see :func:`reconstruct_volume`).

    ``interpolation`` (``NEAREST_NEIGHBOR``/``LINEAR``), ``compounding`` (``MEAN``/``MAXIMUM``/
    ``LATEST``), ``spacing_mm`` (one number for all axes, or three), ``fill_holes`` and
    ``image_to_reference_transform`` (e.g. ``"ImageToTracker"``; PLUS's
    ``--image-to-reference-transform``, which overrides the ImageCoordinateFrame and
    ReferenceCoordinateFrame attributes) override the device set's ``VolumeReconstruction``;
    other keyword arguments go to :func:`reconstruct_volume`.

    Raises
    ------
    SequenceFileError, DeviceSetError
        Unreadable inputs; a device set without ImageToProbe or VolumeReconstruction.
    ReconstructionError
        As :func:`reconstruct_volume`.
    """
    from workbench.errors import DeviceSetError
    from workbench.io.plus_config import read_device_set
    from workbench.io.sequence import read_sequence

    device_set = read_device_set(device_set_path)
    if device_set.volume_reconstruction is None:
        raise DeviceSetError("device set has no VolumeReconstruction element", device_set_path)
    image_to_probe = device_set.image_to_probe()
    config = _override(device_set.volume_reconstruction, interpolation, compounding, spacing_mm, fill_holes)
    if image_to_reference_transform is not None:
        config = _with_frames(config, image_to_reference_transform)
    extra = [d.transform for d in device_set.coordinate_definitions if d.name != image_to_probe.name]
    return reconstruct_volume(read_sequence(sequence_path), image_to_probe, config, extra_transforms=extra, **options)


# -- steps ------------------------------------------------------------------------------------


def _override(config, interpolation, compounding, spacing_mm, fill_holes) -> VolumeReconstructionConfig:
    changes = {}
    if interpolation is not None:
        changes["interpolation"] = interpolation.upper()
    if compounding is not None:
        changes["compounding_mode"] = compounding.upper()
    if spacing_mm is not None:
        spacing = (spacing_mm,) * 3 if np.isscalar(spacing_mm) else tuple(spacing_mm)
        if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
            raise ReconstructionError(f"output spacing must be 1 or 3 positive numbers (mm), got {spacing_mm!r}")
        changes["output_spacing_mm"] = tuple(float(s) for s in spacing)
    if fill_holes is not None:
        changes["fill_holes"] = fill_holes
    return dataclasses.replace(config, **changes)


def _with_frames(config: VolumeReconstructionConfig, transform_name: str) -> VolumeReconstructionConfig:
    try:
        image_frame, reference_frame = split_transform_name(transform_name)
    except FrameError as exc:
        raise ReconstructionError(f"invalid image-to-reference transform name: {exc.problem}") from None
    return dataclasses.replace(config, image_coordinate_frame=image_frame, reference_coordinate_frame=reference_frame)


def _check_supported(config: VolumeReconstructionConfig) -> None:
    if config.compounding_mode not in _COMPOUNDING:
        raise ReconstructionError(
            f"CompoundingMode {config.compounding_mode} is not supported (use MEAN, MAXIMUM or LATEST)"
        )
    if config.interpolation not in ("NEAREST_NEIGHBOR", "LINEAR"):
        raise ReconstructionError(
            f"Interpolation {config.interpolation} is not supported (use NEAREST_NEIGHBOR or LINEAR)"
        )
    if config.optimization not in _ARITHMETIC:
        raise ReconstructionError(f"Optimization {config.optimization} is not supported (use FULL, PARTIAL or NONE)")
    if config.enable_fan_angles_auto_detect:
        raise ReconstructionError("EnableFanAnglesAutoDetect is not supported: set FanAnglesDeg to the fan's angles")


def _mf_view(sequence: TrackedSequence) -> np.ndarray:
    """The frames as a (N, rows, columns) view in MF orientation (no copy)."""
    images = sequence.images
    if not sequence.has_images:
        raise ReconstructionError(
            "tracking-only sequence: no images to reconstruct (a recording of transforms only, "
            "DimSize 0 0 N / ElementType MET_OTHER); reconstruct an ultrasound sweep instead",
            sequence.source_path,
        )
    if images is None or images.ndim != 3 or 0 in images.shape:
        shape = None if images is None else images.shape
        raise ReconstructionError(
            f"sequence has no single-channel 2D frames to reconstruct (images shape {shape})", sequence.source_path
        )
    if images.dtype.type not in _SUPPORTED_PIXEL_TYPES:
        raise ReconstructionError(
            f"pixel type {images.dtype} is not supported: reconstruction needs 8- or 16-bit integer or float32 frames",
            sequence.source_path,
        )
    if sequence.image_orientation[:2] not in ("MF", "MN", "UF", "UN"):
        raise ReconstructionError(
            f"image orientation {sequence.image_orientation!r} is not a B-mode orientation (MF, MN, UF, UN, ...)",
            sequence.source_path,
        )
    return sequence.images_mf()


def _poses(sequence, image_to_probe, config, extra_transforms, reference_to_mri) -> tuple[np.ndarray, np.ndarray]:
    """``ImageTo<output>`` per frame (N, 4, 4) and a (N,) mask of frames where it is valid."""
    source, target = split_transform_name(config.image_to_reference_name)
    fixed = [image_to_probe, *extra_transforms]
    poses = np.full((len(sequence), 4, 4), np.nan)
    valid = np.zeros(len(sequence), dtype=bool)
    for k in range(len(sequence)):
        if not sequence.image_status[k]:
            continue
        repository = sequence.repository(k)
        for transform in fixed:
            repository.set_transform(transform)
        try:
            pose = repository.get(f"{source}To{target}").matrix
        except FrameError:
            continue
        poses[k] = pose if reference_to_mri is None else reference_to_mri.matrix @ pose
        valid[k] = True
    return poses, valid


def _paster(config: VolumeReconstructionConfig, width: int, height: int):
    """A function pasting one frame with the config's interpolation, compounding and arithmetic."""
    arithmetic = _ARITHMETIC[config.optimization]
    compounding = _COMPOUNDING[config.compounding_mode]
    runs = paste_runs(config, width, height, unoptimized=arithmetic == kernels.NONE)
    threshold = -np.inf if config.pixel_rejection_threshold is None else float(config.pixel_rejection_threshold)
    linear = config.interpolation == "LINEAR"
    unoptimized = arithmetic == kernels.NONE

    def paste(volume, accumulation, image, image_to_voxel):
        fixed = np.rint(image_to_voxel[:3, [0, 1, 3]] * kernels.FIXED_ONE).astype(np.int64)
        integer = volume.dtype.kind in "iu"
        if not linear:
            kernels.paste_nearest(
                volume, accumulation, image, runs, image_to_voxel, fixed, arithmetic, compounding, threshold, integer
            )
        elif arithmetic == kernels.FULL:
            kernels.paste_linear_fixed(volume, accumulation, image, runs, fixed, compounding, threshold, integer)
        else:
            kernels.paste_linear_double(
                volume, accumulation, image, runs, image_to_voxel, compounding, threshold, unoptimized, integer
            )

    return paste


def _fill_holes(volume: np.ndarray, accumulation: np.ndarray, elements: tuple[HoleFillingElement, ...]) -> int:
    size = max([e.size or 1 for e in elements])
    types = np.array([_HOLE_FILLERS[e.type] for e in elements], dtype=np.int64)
    numbers = np.zeros((len(elements), 3))
    kernel_weights = np.zeros((len(elements), size, size, size), dtype=np.float32)
    for index, element in enumerate(elements):
        if element.type == "STICK":
            numbers[index, :2] = (element.stick_length_limit, element.number_of_sticks_to_use)
            continue
        if element.size < 1 or element.size % 2 == 0:
            raise ReconstructionError(
                f"hole filling {element.type} Size must be a positive odd number, got {element.size}"
            )
        numbers[index, :2] = (element.size, float(np.float32(element.minimum_known_voxels_ratio)))
        if element.type in ("GAUSSIAN", "GAUSSIAN_ACCUMULATION"):
            kernel_weights[index, : element.size, : element.size, : element.size] = _gaussian_kernel(
                element.size, element.stdev
            )
        elif element.type == "DISTANCE_WEIGHT_INVERSE":
            kernel_weights[index, : element.size, : element.size, : element.size] = _inverse_distance_kernel(
                element.size
            )
    return int(kernels.fill_holes(volume, accumulation, types, numbers, kernel_weights))


def _gaussian_kernel(size: int, stdev: float) -> np.ndarray:
    """PLUS's Gaussian hole-filling kernel (float32 weights, float32 parameters)."""
    stdev32 = np.float32(stdev)
    divisor = np.float32(stdev32 * stdev32 * 2.0)
    term = np.float32((2 * np.pi) ** 1.5 * float(stdev32) ** 3)
    offsets = np.arange(size, dtype=float) - np.float32((size - 1) / 2.0)
    squared = offsets**2 / float(divisor)
    exponent = -((squared[None, None, :] + squared[None, :, None]) + squared[:, None, None])
    return (float(np.float32(1.0) / term) * np.exp(exponent)).astype(np.float32)


def _inverse_distance_kernel(size: int) -> np.ndarray:
    """PLUS's inverse-distance kernel (0 at the centre)."""
    offsets = np.arange(size, dtype=np.float32) - np.float32((size - 1) / 2.0)
    distance = np.sqrt(offsets[:, None, None] ** 2 + offsets[None, :, None] ** 2 + offsets[None, None, :] ** 2)
    with np.errstate(divide="ignore"):
        return np.where(distance > 0, np.float32(1.0) / distance, np.float32(0.0)).astype(np.float32)
