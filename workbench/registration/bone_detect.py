"""Bone surface in real B-mode frames, whatever the gain: bright ridge over an acoustic shadow.

Bone reflects nearly all the sound that reaches it: in a B-mode frame its surface is a bright
ridge across the beam with an acoustic shadow below. :func:`detect_bone` finds it per frame:

1. the frame is divided by a high percentile of its imaged pixels (gain, time-gain
   compensation and the scanner's dynamic range change the grey of bone from ~110 to ~250;
   relative to the frame's own bright level it is always near 1);
2. along every image column (the scan line of a linear probe, close to it in a curvilinear
   fan), ridge candidates are local maxima of the smoothed grey at least
   ``min_relative_brightness`` bright and deeper than ``min_depth_mm``;
3. each candidate's shadow is the mean grey of the imaged pixels ``shadow_depth_mm`` below it,
   smoothed across columns; the column keeps the candidate with the lowest shadow-to-peak ratio
   (the deepest-shadowed bright ridge), if that ratio is under ``shadow_ratio``;
4. isolated detections (speckle over a chance dark patch) are dropped: a detection must belong
   to a lateral run of neighbouring columns at least ``min_run_mm`` wide whose depths step by at
   most ``max_step_mm``.

Pixels are (column, row) of the MF-oriented ``Image`` frame (docs/frames.md). The simulator's
frames (``workbench.phantom``) keep the older fixed-threshold detector of
:func:`workbench.registration.surface.us_bone_points` by default (see docs/registration.md,
"Bone on real ultrasound").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from workbench.errors import RegistrationError
from workbench.registration.params import BoneDetectParameters

#: Least depth of imaged pixels below a ridge that can show its shadow, mm.
MIN_SHADOW_MM = 2.5
#: The default parameters (frozen).
DEFAULT_PARAMETERS = BoneDetectParameters()

__all__ = [
    "DEFAULT_PARAMETERS",
    "MIN_SHADOW_MM",
    "BoneDetection",
    "detect_bone",
    "detect_bone_pixels",
    "imaged_region",
    "register_cli",
    "write_bone_mask",
]


@dataclass(frozen=True)
class BoneDetection:
    """Bone surface pixels found in a stack of frames.

    Attributes
    ----------
    pixels_px : tuple of (K_i, 2) float arrays
        Per frame, (column, row) of the bone surface in MF ``Image`` pixels, one per column
        where bone was found (frames that were skipped have none).
    mask : (N, H, W) uint8 array
        1 on those pixels, 0 elsewhere, on the frames' pixel grid (MF).
    """

    pixels_px: tuple[np.ndarray, ...]
    mask: np.ndarray

    @property
    def counts(self) -> list[int]:
        """Bone pixels per frame."""
        return [len(pixels) for pixels in self.pixels_px]


def imaged_region(images: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels that are non-zero in at least one frame (inside the fan or rectangle).

    Parameters
    ----------
    images : (N, H, W) array
    """
    images = np.asarray(images)
    if images.ndim != 3:
        raise RegistrationError(f"frames must be an (N, H, W) array, got shape {images.shape}")
    return ndimage.binary_closing(np.any(images > 0, axis=0), iterations=2, border_value=1)


def detect_bone_pixels(
    image: np.ndarray,
    pixel_mm: tuple[float, float],
    params: BoneDetectParameters = DEFAULT_PARAMETERS,
    imaged: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Bone surface pixels of one B-mode frame.

    Parameters
    ----------
    image : (H, W) array
        MF-oriented grey values (any scale).
    pixel_mm : (float, float)
        (lateral, depth) pixel size, mm: the lengths of ``ImageToProbe``'s first two columns.
    params : BoneDetectParameters
    imaged : (H, W) bool array, optional
        Pixels inside the imaged region (default: the non-zero pixels of ``image``).

    Returns
    -------
    columns_px, rows_px : (K,) float arrays
        MF ``Image`` pixel column and row of the surface, one per column where bone was found.
    """
    grey = np.asarray(image, np.float32)
    if grey.ndim != 2:
        raise RegistrationError(f"a frame must be an (H, W) array, got shape {grey.shape}")
    lateral_mm, depth_mm = (float(v) for v in pixel_mm)
    if not (lateral_mm > 0 and depth_mm > 0):
        raise RegistrationError(f"pixel_mm must be two positive sizes, got {pixel_mm!r}")
    if imaged is None:
        imaged = imaged_region(grey[None])
    height, width = grey.shape
    inside = grey[imaged]
    reference = float(np.percentile(inside, params.reference_percentile)) if inside.size else 0.0
    if reference <= 0:
        return np.zeros(0), np.zeros(0)
    sigma_px = (params.smoothing_mm / depth_mm, params.smoothing_mm / lateral_mm)
    weight = imaged.astype(np.float32)
    smoothed_weight = np.maximum(ndimage.gaussian_filter(weight, sigma_px), 1e-6)
    normalised = ndimage.gaussian_filter(grey * weight, sigma_px) / smoothed_weight / reference
    normalised[~imaged] = 0.0

    # Mean normalised grey of the imaged pixels in rows [r + low, r + high) below every row r.
    low, high = (max(1, int(round(d / depth_mm))) for d in params.shadow_depth_mm)
    lateral_sigma_px = params.lateral_smoothing_mm / lateral_mm
    grey_sum = ndimage.gaussian_filter1d(normalised * weight, lateral_sigma_px, axis=1)
    count = ndimage.gaussian_filter1d(weight, lateral_sigma_px, axis=1)
    cumulative_grey = np.vstack([np.zeros((1, width)), np.cumsum(grey_sum, axis=0)])
    cumulative_count = np.vstack([np.zeros((1, width)), np.cumsum(count, axis=0)])
    rows = np.arange(height)
    top, bottom = np.minimum(rows + low, height), np.minimum(rows + high, height)
    middle = np.minimum(rows + (low + high) // 2, height)
    window_count = cumulative_count[bottom] - cumulative_count[top]

    def mean_between(start, stop):
        count_between = cumulative_count[stop] - cumulative_count[start]
        return (cumulative_grey[stop] - cumulative_grey[start]) / np.maximum(count_between, 1e-6), count_between

    # Both halves of the window must be dark: an anechoic lumen (vessel, dural sac) is dark
    # only in the upper half, with tissue and posterior enhancement below it.
    upper, _ = mean_between(top, middle)
    lower, lower_count = mean_between(middle, bottom)
    shadow = np.where(lower_count >= 1.0, np.maximum(upper, lower), upper)

    ridge = (normalised >= ndimage.maximum_filter1d(normalised, 5, axis=0)) & (normalised >= params.min_relative_brightness)
    # A shadow needs imaged pixels below: all of the window or at least MIN_SHADOW_MM of it.
    ridge &= imaged & (window_count >= min(0.9 * (high - low), MIN_SHADOW_MM / depth_mm))
    ridge[: int(round(params.min_depth_mm / depth_mm))] = False
    ratio = np.where(ridge, shadow / np.maximum(normalised, 1e-6), np.inf)
    best = np.argmin(ratio, axis=0)
    found = ratio[best, np.arange(width)] < params.shadow_ratio
    found = _in_long_runs(found, best, params.min_run_mm / lateral_mm, params.max_step_mm / depth_mm)
    columns = np.nonzero(found)[0]
    return columns.astype(float), best[found].astype(float)


def _in_long_runs(found: np.ndarray, rows: np.ndarray, min_run_px: float, max_step_px: float) -> np.ndarray:
    """``found`` restricted to runs of neighbouring columns at least ``min_run_px`` wide."""
    joined = found[1:] & found[:-1] & (np.abs(np.diff(rows)) <= max_step_px)
    run_id = np.cumsum(np.concatenate([[True], ~joined]))
    lengths = np.bincount(run_id, weights=found.astype(float))
    return found & (lengths[run_id] >= min_run_px)


def detect_bone(
    images: np.ndarray,
    pixel_mm: tuple[float, float],
    params: BoneDetectParameters = DEFAULT_PARAMETERS,
    frames_used: np.ndarray | None = None,
) -> BoneDetection:
    """Bone surface pixels and mask of every frame of a sweep.

    Parameters
    ----------
    images : (N, H, W) array
        MF-oriented frames (``TrackedSequence.images_mf()``).
    pixel_mm : (float, float)
        (lateral, depth) pixel size, mm.
    params : BoneDetectParameters
    frames_used : (N,) bool array, optional
        Frames to search (e.g. those with an OK image); the others get no pixels. Default all.

    Returns
    -------
    BoneDetection
        ``mask`` has the shape of ``images`` and dtype uint8.

    Raises
    ------
    RegistrationError
        ``images`` not (N, H, W) with N >= 1, or ``frames_used`` of another length.
    """
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[0] == 0 or images.shape[1] * images.shape[2] == 0:
        raise RegistrationError(f"frames must be a non-empty (N, H, W) array, got shape {images.shape}")
    used = np.ones(len(images), bool) if frames_used is None else np.asarray(frames_used, bool)
    if used.shape != (len(images),):
        raise RegistrationError(f"{len(images)} frames but frames_used has shape {used.shape}")
    imaged = imaged_region(images[used] if used.any() else images)
    mask = np.zeros(images.shape, np.uint8)
    pixels = []
    for index, image in enumerate(images):
        if not used[index]:
            pixels.append(np.zeros((0, 2)))
            continue
        columns_px, rows_px = detect_bone_pixels(image, pixel_mm, params, imaged)
        mask[index, rows_px.astype(int), columns_px.astype(int)] = 1
        pixels.append(np.column_stack([columns_px, rows_px]))
    return BoneDetection(pixels_px=tuple(pixels), mask=mask)


def write_bone_mask(sequence, image_to_probe, out_path, params: BoneDetectParameters = DEFAULT_PARAMETERS) -> dict:
    """Detect bone in every frame of ``sequence`` and write the mask as a PLUS sequence file.

    The mask file is a PLUS image sequence on the frames' own grid, in MF orientation, with the
    source's timestamps, transforms and statuses: 3D Slicer (Sequences / SlicerIGSIO) loads it
    as a second sequence that replays with the sweep, and PLUS reads it like any sweep.
    Voxel value 1 marks a bone surface pixel (a label map), 0 the rest.

    Parameters
    ----------
    sequence : TrackedSequence
        With images (frames with a non-OK image status are written empty).
    image_to_probe : Transform
        ``ImageToProbe``: gives the pixel size, mm.
    out_path : path-like
        ``.mha`` / ``.igs.mha`` / ``.seq.nrrd`` ...: see :func:`workbench.io.sequence.write_sequence`.
    params : BoneDetectParameters

    Returns
    -------
    dict
        JSON summary: ``frames``, ``frames_with_bone``, ``counts`` (bone pixels per frame),
        ``pixel_mm`` and the output path.
    """
    from workbench.io.sequence import TrackedSequence, write_sequence

    images = sequence.images_mf()  # tracking-only sequences raise here, naming the file
    if images.ndim != 3:
        raise RegistrationError(f"bone detection needs single-channel frames, got shape {images.shape}")
    matrix = image_to_probe.matrix
    pixel_mm = (float(np.linalg.norm(matrix[:3, 0])), float(np.linalg.norm(matrix[:3, 1])))
    detection = detect_bone(images, pixel_mm, params, frames_used=np.asarray(sequence.image_status, bool))
    header = {key: value for key, value in sequence.header.items() if key != "UltrasoundImageType"}
    mask_sequence = TrackedSequence(
        images=detection.mask,
        timestamps_s=sequence.timestamps_s,
        transforms=sequence.transforms,
        transform_status=sequence.transform_status,
        image_status=sequence.image_status,
        frame_fields=sequence.frame_fields,
        header=header,
        image_orientation="MF",
        frame_indices=sequence.frame_indices,
    )
    written = write_sequence(mask_sequence, out_path)
    counts = detection.counts
    return {
        "kind": "bone_mask",
        "path": str(written),
        "frames": len(counts),
        "frames_with_bone": int(sum(count > 0 for count in counts)),
        "counts": counts,
        "pixel_mm": list(pixel_mm),
        "mask_value": 1,
        "image_orientation": "MF",
    }


def _cmd_detect_bone(args) -> int:
    import json

    from workbench.io.plus_config import read_device_set
    from workbench.io.sequence import read_sequence

    sequence = read_sequence(args.sequence)
    if len(sequence) == 0:
        raise RegistrationError("sequence has no frames", args.sequence)
    sequence.require_images("bone detection")
    if args.device_set is not None:
        image_to_probe = read_device_set(args.device_set).image_to_probe()
    elif "ImageToProbe" in sequence.transforms and sequence.status_of("ImageToProbe").any():
        first_ok = int(np.flatnonzero(sequence.status_of("ImageToProbe"))[0])
        image_to_probe = sequence.transform("ImageToProbe", first_ok)
    else:
        raise RegistrationError("no ImageToProbe in the sequence: give the calibration with --device-set XML", args.sequence)
    print(json.dumps(write_bone_mask(sequence, image_to_probe, args.out)))
    return 0


def register_cli(subparsers) -> None:
    """Add ``workbench detect-bone SEQ --out MASK.mha [--device-set XML]``."""
    p = subparsers.add_parser(
        "detect-bone",
        help="write the bone surface seen in each frame of a sweep as a uint8 mask sequence (1 = bone) on the frame grid",
    )
    p.add_argument("sequence", help="PLUS sequence file with ultrasound frames")
    p.add_argument("--out", required=True, help="mask sequence to write (.mha, .igs.mha, .seq.nrrd)")
    p.add_argument("--device-set", default=None, help="PLUS device set with the ImageToProbe calibration (pixel size)")
    p.set_defaults(func=_cmd_detect_bone)
