"""``workbench bench rehearsal``: how many simulated B-mode frames per second the rehearsal renders.

Issue 18's goal: >= 25 frames/s at 256 scan lines on 2 CPU cores, with elevational slice
thickness and the needle. Two rates are measured on the same imager:

- ``frames_per_s`` (the headline, worst case): the probe moves every frame (a slow sweep with
  a little rotation), so the tissue is re-simulated each time, and an in-plane needle is drawn;
- ``still_probe_frames_per_s``: the probe rests (the tissue part is cached) while the needle
  advances and a bolus of injectate is in the image, as during an injection.

The machine's load average is recorded with the numbers: on a shared machine they vary.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from pathlib import Path

import numpy as np

__all__ = ["run_rehearsal_benchmark"]

#: The issue's goal, frames per second.
TARGET_FRAMES_PER_S = 25.0


def _benchmark_label_map(case_dir: Path | None, spacing_mm: float):
    """Label map, target and muscle fat fraction: the case's, or a phantom of L3-L5 at ``spacing_mm``."""
    if case_dir is not None:
        from workbench.rehearsal.scene import load_scene

        scene = load_scene(case_dir, load_mri=False)
        name = sorted(scene.targets_mri)[0]
        return scene.label_map, np.asarray(scene.targets_mri[name], float), scene.muscle_fat_fraction, str(case_dir)
    from workbench.phantom.anatomy import SpineParameters, build_phantom

    phantom = build_phantom(SpineParameters(levels=("L3", "L4", "L5"), spacing_mm=spacing_mm))
    name = "L4 left exiting nerve root, dorsal aspect"
    return phantom.label_map, phantom.targets_lps[name], phantom.muscle_fat_fraction, f"phantom L3-L5 at {spacing_mm} mm"


def run_rehearsal_benchmark(
    frames: int = 60,
    lines: int = 256,
    *,
    elevation_fwhm_mm: float = 4.0,
    elevation_planes: int = 5,
    case_dir: str | Path | None = None,
    spacing_mm: float = 0.5,
) -> dict:
    """Render ``frames`` frames with a moving probe and ``frames`` with a still one; report the rates.

    Parameters
    ----------
    frames : int
        Frames timed per condition (after 3 warm-up frames).
    lines : int
        Scan lines of the C5-2-like probe.
    elevation_fwhm_mm : float
        Elevational slice thickness, mm.
    elevation_planes : int
        Planes sampled across the slice.
    case_dir : path, optional
        A case folder (its label map); default a phantom of L3-L5 at ``spacing_mm``.
    spacing_mm : float
        Voxel size of the default phantom, mm (the demo case's is 0.5).

    Returns
    -------
    dict
        ``frames_per_s`` and ``ms_per_frame_median`` (moving probe), ``ms_per_frame_p90``,
        ``still_probe_frames_per_s``, ``still_probe_ms_per_frame_median``, ``lines``,
        ``samples_per_line``, ``elevation_fwhm_mm``, ``elevation_planes``, ``image_size_px``
        ([width, height]), ``cpu_count``, ``cpus_usable``, ``load_average_1min`` (at the start)
        and ``load_average_1min_end``, ``imager_setup_s``, ``label_map``, ``target_frames_per_s``.
    """
    from workbench.rehearsal.imaging import RehearsalImager
    from workbench.rehearsal.injectate import InjectateState, make_bolus
    from workbench.rehearsal.needle import NeedleState
    from workbench.rehearsal.probe import REHEARSAL_PROBE, SkinSurface, image_to_mri, snap_to_needle_plane

    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise ValueError(f"frames must be a positive integer, got {frames!r}")
    load_start = os.getloadavg()[0]
    label_map, target_mri, fat_fraction, source = _benchmark_label_map(
        Path(case_dir) if case_dir is not None else None, spacing_mm
    )
    probe = dataclasses.replace(REHEARSAL_PROBE, line_count=int(lines))
    started = time.perf_counter()
    imager = RehearsalImager(
        label_map, probe, elevation_fwhm_mm=elevation_fwhm_mm, muscle_fat_fraction=fat_fraction,
        elevation_planes=elevation_planes,
    )
    skin = SkinSurface(label_map)
    setup_s = time.perf_counter() - started
    # An in-plane needle from 45 mm lateral of the target, at 35 deg, two thirds of the way in.
    entry_mri = skin.point_mri(float(target_mri[0]) + 45.0, float(target_mri[2]))
    path_mri = np.asarray(target_mri, float) - entry_mri
    needle = NeedleState(entry_mri, path_mri / np.linalg.norm(path_mri), 0.66 * float(np.linalg.norm(path_mri)), 90.0, 22)
    pose = snap_to_needle_plane(entry_mri, target_mri, probe, skin)
    sweep = [
        image_to_mri(
            dataclasses.replace(
                pose,
                centre_z_mm=pose.centre_z_mm + 0.3 * (i % 40),
                rotation_deg=pose.rotation_deg + 2.0 * np.sin(i / 7.0),
                tilt_deg=pose.tilt_deg + 1.0 * np.cos(i / 5.0),
            ),
            probe,
            skin,
        )
        for i in range(frames + 3)
    ]
    still = image_to_mri(pose, probe, skin)
    bolus = make_bolus("paravertebral", target_mri, 3.0, np.array([0.0, 0.0, 1.0]), 35.0)
    injectate = InjectateState((bolus,))

    moving_s = []
    for index, image_to_mri_matrix in enumerate(sweep):
        tick = time.perf_counter()
        imager.render(image_to_mri_matrix, needle)
        if index >= 3:
            moving_s.append(time.perf_counter() - tick)
    still_s = []
    for index in range(frames + 3):
        tick = time.perf_counter()
        imager.render(still, needle.with_depth(needle.depth_mm + 0.1 * index), injectate)
        if index >= 3:
            still_s.append(time.perf_counter() - tick)
    moving_ms, still_ms = np.asarray(moving_s) * 1e3, np.asarray(still_s) * 1e3
    return {
        "benchmark": "rehearsal",
        "frames_per_s": round(1e3 / float(np.median(moving_ms)), 1),
        "ms_per_frame_median": round(float(np.median(moving_ms)), 2),
        "ms_per_frame_p90": round(float(np.percentile(moving_ms, 90)), 2),
        "still_probe_frames_per_s": round(1e3 / float(np.median(still_ms)), 1),
        "still_probe_ms_per_frame_median": round(float(np.median(still_ms)), 2),
        "target_frames_per_s": TARGET_FRAMES_PER_S,
        "frames": frames,
        "lines": int(lines),
        "samples_per_line": int(imager.tissue(still)["diffuse"].shape[1]),
        "elevation_fwhm_mm": float(elevation_fwhm_mm),
        "elevation_planes": int(elevation_planes),
        "image_size_px": [probe.width_px, probe.height_px],
        "probe": probe.name,
        "label_map": source,
        "imager_setup_s": round(setup_s, 3),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_1min": round(load_start, 2),
        "load_average_1min_end": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
