"""``workbench bench ui``: kernel-side time of a slice update and of a fused-overlay update.

Both are measured on synthetic data of the sizes the notebooks show, so no case is needed:

- *slice update*: a 512 x 512 MRI slice: select the slice, window/level it to 8 bits, hand it to the
  matplotlib image, render the figure (Agg, what ipympl renders in the kernel) and encode the PNG
  sent to the browser;
- *fused overlay*: resample a 512 x 512 MRI plane on an ultrasound frame's pose, blend 50 % with the
  frame and encode the PNG of the fused view.

Target: <= 50 ms each (median); median and 90th percentile are reported in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

__all__ = ["run_ui_benchmark", "register_bench", "TARGET_MS"]

TARGET_MS = 50.0


def _stats(samples_s: list[float]) -> dict:
    ms = np.array(samples_s) * 1000.0
    return {"median_ms": round(float(np.median(ms)), 2), "p90_ms": round(float(np.percentile(ms, 90)), 2),
            "samples": len(ms), "target_ms": TARGET_MS, "meets_target": bool(np.median(ms) <= TARGET_MS)}


def run_ui_benchmark(repeats: int = 30, size_px: int = 512, slices: int = 48, seed: int = 0) -> dict:
    """Time slice and fused-overlay updates.

    Parameters
    ----------
    repeats : int
        Updates timed per measure (each on a different slice / frame).
    size_px : int
        Slice and ultrasound frame width and height, pixels.
    slices : int
        Slices of the synthetic volume along the viewed normal.

    Returns
    -------
    dict
        ``slice_update`` and ``fused_overlay`` (median_ms, p90_ms, samples, target_ms, meets_target),
        and the sizes used.
    """
    import SimpleITK as sitk

    from workbench.frames import Transform
    from workbench.widgets.fusion import FusionModel
    from workbench.widgets.slices import SliceModel
    from workbench.widgets._ui import new_canvas
    from workbench.widgets.sweep import png_bytes

    rng = np.random.default_rng(seed)
    # MRI-like content: smooth structures plus 2 % noise (pure noise would only measure zlib's worst case)
    k, j, i = np.meshgrid(np.arange(slices), np.arange(size_px), np.arange(size_px), indexing="ij", sparse=True)
    smooth = 600 + 400 * np.sin(i / 40.0) * np.cos(j / 55.0) + 150 * np.sin(k / 3.0)
    array = np.clip(smooth + rng.normal(0, 24, size=(slices, size_px, size_px)), 0, 1200).astype(np.uint16)
    volume = sitk.GetImageFromArray(array)  # (k, j, i): axial slices of size_px x size_px
    volume.SetSpacing((0.8, 0.8, 1.0))
    model = SliceModel(volume, "axial")
    figure, canvas = new_canvas(6.0, 6.0, dpi=90)  # the ipympl canvas the viewer uses
    canvas.syncing_data_url = False  # as once a browser view is attached (ipympl stops re-encoding a data URL)
    axes = figure.add_axes([0, 0, 1, 1])
    axes.set_axis_off()
    image = axes.imshow(model.render_uint8(), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    canvas.draw()
    slice_s = []
    for n in range(repeats):
        start = time.perf_counter()
        model.set_index(n % model.slice_count)
        image.set_data(model.render_uint8())
        canvas.draw()  # ipympl: Agg render, then the PNG frame for the browser (refresh_all)
        slice_s.append(time.perf_counter() - start)

    frames = rng.integers(0, 255, size=(4, size_px, size_px), dtype=np.uint8)
    poses = np.repeat(np.eye(4)[None], 4, axis=0)
    image_to_probe = Transform.from_name("ImageToProbe", np.diag([0.1, 0.1, 0.1, 1.0]))
    angle = np.deg2rad(10.0)
    rotation = np.array([[1, 0, 0, 0], [0, np.cos(angle), -np.sin(angle), 0], [0, np.sin(angle), np.cos(angle), 20.0], [0, 0, 0, 1]])
    reference_to_mri = Transform.from_name("ReferenceToMri", rotation @ np.array(
        [[1, 0, 0, 100.0], [0, 0, 1, 100.0], [0, 1, 0, 0.0], [0, 0, 0, 1]]))
    fusion = FusionModel(volume, frames, poses, np.ones(4, bool), image_to_probe, reference_to_mri)
    png_bytes(fusion.fused())
    fused_s = []
    for n in range(repeats):
        start = time.perf_counter()
        fusion.set_frame(n % 4)
        png_bytes(fusion.fused())
        fused_s.append(time.perf_counter() - start)
    return {
        "benchmark": "ui",
        "slice_px": [size_px, size_px],
        "us_frame_px": [size_px, size_px],
        "slice_update": _stats(slice_s),
        "fused_overlay": _stats(fused_s),
        "what": (
            "kernel-side: slice -> window/level -> Agg render -> PNG frame of the ipympl canvas; "
            "fused: resample MRI on the frame -> blend 50 % -> PNG"
        ),
    }


def register_bench(bench_subparsers) -> None:
    """Add ``ui`` to the ``workbench bench`` sub-commands."""
    p = bench_subparsers.add_parser("ui", help="kernel-side time of a 512x512 slice update and of the fused overlay")
    p.add_argument("--repeats", type=int, default=30, help="updates timed per measure (default 30)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.set_defaults(func=_cmd_bench_ui)


def _cmd_bench_ui(args: argparse.Namespace) -> int:
    results = run_ui_benchmark(max(1, args.repeats))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for name in ("slice_update", "fused_overlay"):
        row = results[name]
        print(f"{name:<14} median {row['median_ms']:7.2f} ms  p90 {row['p90_ms']:7.2f} ms  (target {row['target_ms']:g} ms)")
    return 0
