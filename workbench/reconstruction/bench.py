"""Benchmark of the reconstruction on a synthetic freehand sweep (``workbench bench reconstruct``).

The sweep: 400 frames of 640x480 uint8 speckle, 0.1 mm pixels, the probe moving 0.2 mm per
frame along the sweep with a slow sideways sway and a few degrees of tilt, reconstructed at
0.5 mm as NN + MEAN with STICK hole filling and as LINEAR + MEAN. Each run is timed after
the compiled kernels are warmed up, and its peak memory is the ``tracemalloc`` peak above
the memory in use before the run (the frames are already in memory then).
"""

from __future__ import annotations

import dataclasses
import time
import tracemalloc

import numpy as np

from workbench.frames import Transform
from workbench.io.plus_config import HoleFillingElement, VolumeReconstructionConfig
from workbench.io.sequence import TrackedSequence
from workbench.reconstruction.reconstruct import reconstruct_volume

__all__ = ["BENCH_CASES", "run_reconstruction_benchmark", "synthetic_sweep"]

_PIXEL_MM = 0.1
_STEP_MM = 0.2
_STICK = HoleFillingElement(type="STICK", stick_length_limit=9, number_of_sticks_to_use=1)

#: name -> settings of each benchmark run.
BENCH_CASES = {
    "nearest_mean_fill_holes": VolumeReconstructionConfig(
        output_spacing_mm=(0.5, 0.5, 0.5), fill_holes=True, hole_filling_elements=(_STICK,)
    ),
    "linear_mean": VolumeReconstructionConfig(output_spacing_mm=(0.5, 0.5, 0.5), interpolation="LINEAR"),
}


def synthetic_sweep(
    frames: int = 400, width: int = 640, height: int = 480, seed: int = 0
) -> tuple[TrackedSequence, Transform]:
    """A smooth synthetic freehand sweep and its ``ImageToProbe`` calibration.

    Returns
    -------
    sequence : TrackedSequence
        ``frames`` uint8 frames (MF) with per-frame ``ProbeToReference`` poses (mm).
    image_to_probe : Transform
        0.1 mm pixels, image centred on the probe origin.
    """
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(frames, height, width), dtype=np.uint8)
    image_to_probe = np.diag([_PIXEL_MM, _PIXEL_MM, _PIXEL_MM, 1.0])
    image_to_probe[:3, 3] = (-width * _PIXEL_MM / 2, 0.0, 0.0)
    phase = np.linspace(0.0, 2 * np.pi, frames)
    probe_to_reference = np.zeros((frames, 4, 4))
    for k in range(frames):
        tilt_x, tilt_y = np.deg2rad(4.0) * np.sin(phase[k]), np.deg2rad(3.0) * np.cos(0.5 * phase[k])
        probe_to_reference[k] = _rotation(tilt_x, tilt_y)
        probe_to_reference[k, :3, 3] = (3.0 * np.sin(0.5 * phase[k]), 2.0 * np.sin(phase[k]), _STEP_MM * k)
    sequence = TrackedSequence(
        images=images,
        timestamps_s=np.arange(frames) / 30.0,
        transforms={"ProbeToReference": probe_to_reference},
    )
    return sequence, Transform(image_to_probe, "Image", "Probe")


def _rotation(about_x: float, about_y: float) -> np.ndarray:
    cx, sx, cy, sy = np.cos(about_x), np.sin(about_x), np.cos(about_y), np.sin(about_y)
    rotation_x = np.array([[1, 0, 0, 0], [0, cx, -sx, 0], [0, sx, cx, 0], [0, 0, 0, 1.0]])
    rotation_y = np.array([[cy, 0, sy, 0], [0, 1, 0, 0], [-sy, 0, cy, 0], [0, 0, 0, 1.0]])
    return rotation_y @ rotation_x


def run_reconstruction_benchmark(frames: int = 400, width: int = 640, height: int = 480) -> dict:
    """Time each of :data:`BENCH_CASES` on :func:`synthetic_sweep`; JSON-ready results.

    Returns
    -------
    dict
        ``frames``, ``pixels`` (per run), ``frame_block_bytes`` (one frame), ``memory_method``,
        and per case: ``seconds``, ``mpixel_per_s``, ``output_voxels``, ``output_volume_bytes``,
        ``peak_memory_bytes`` and ``peak_over_output_volume``.
    """
    sequence, image_to_probe = synthetic_sweep(frames, width, height)
    warm_up = dataclasses.replace(
        sequence,
        images=sequence.images[:2],
        timestamps_s=sequence.timestamps_s[:2],
        transforms={k: v[:2] for k, v in sequence.transforms.items()},
        transform_status={},
        image_status=None,
        frame_indices=None,
    )
    pixels = frames * width * height
    report = {
        "frames": frames,
        "frame_size_px": [width, height],
        "pixels": pixels,
        "frame_block_bytes": width * height,
        "memory_method": "tracemalloc peak above the memory in use before the run",
    }
    for name, config in BENCH_CASES.items():
        reconstruct_volume(warm_up, image_to_probe, config)
        tracemalloc.start()
        start_bytes = tracemalloc.get_traced_memory()[0]
        start_s = time.perf_counter()
        result = reconstruct_volume(sequence, image_to_probe, config)
        seconds = time.perf_counter() - start_s
        peak_bytes = tracemalloc.get_traced_memory()[1] - start_bytes
        tracemalloc.stop()
        report[name] = {
            "seconds": round(seconds, 3),
            "mpixel_per_s": round(pixels / seconds / 1e6, 1),
            "output_size_px": list(result.grid.size_px),
            "output_voxels": result.grid.voxel_count,
            "output_volume_bytes": result.volume.nbytes,
            "peak_memory_bytes": peak_bytes,
            "peak_over_output_volume": round(peak_bytes / result.volume.nbytes, 2),
            "holes_filled": result.holes_filled,
        }
    return report
