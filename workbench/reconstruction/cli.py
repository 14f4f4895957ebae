"""``workbench reconstruct``, ``workbench compare`` and ``workbench bench reconstruct``.

:func:`register` adds the three sub-commands to the main CLI's argparse sub-parsers; each
handler returns the exit code and raises :class:`~workbench.errors.WorkbenchError` subclasses
on bad input (the main CLI prints them in one line and exits 2). Heavy modules (numba,
SimpleITK) are imported when a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TextIO

from workbench.errors import ReconstructionError

__all__ = ["ProgressReporter", "register"]

_BAR_WIDTH = 30


def register(subparsers, bench_subparsers) -> None:
    """Add ``reconstruct`` and ``compare`` to the main sub-parsers, and ``reconstruct`` to ``bench``'s."""
    p = subparsers.add_parser("reconstruct", help="reconstruct a volume from a tracked ultrasound sweep as PLUS does")
    p.add_argument("sequence", metavar="SEQUENCE_FILE", help="PLUS sequence file (.igs.mha, .seq.mha, .igs.nrrd)")
    p.add_argument(
        "--plus-config",
        required=True,
        metavar="DEVICESET.xml",
        help="PLUS device set with ImageToProbe and a VolumeReconstruction element",
    )
    p.add_argument("--out", required=True, metavar="VOLUME.mha", help="output volume (.mha, .nrrd, .nii.gz)")
    p.add_argument("--spacing-mm", type=float, nargs="+", metavar="MM", help="output spacing: 1 or 3 numbers")
    p.add_argument("--interpolation", type=str.upper, choices=("NEAREST_NEIGHBOR", "LINEAR"))
    p.add_argument("--compounding", type=str.upper, choices=("MEAN", "MAXIMUM", "LATEST"))
    p.add_argument("--no-fill-holes", action="store_true", help="skip hole filling even if the config enables it")
    p.add_argument(
        "--image-to-reference-transform",
        metavar="NAME",
        help="slice pose transform, e.g. ImageToReference (default: the config's frames, else ImageToReference)",
    )
    p.add_argument("--accumulation-out", metavar="ACC.mha", help="also write the accumulation buffer (coverage)")
    p.add_argument(
        "--max-memory-gib",
        type=float,
        default=2.0,
        help="refuse grids whose volume and accumulation buffer need more (default 2)",
    )
    p.set_defaults(func=_cmd_reconstruct)

    p = subparsers.add_parser("compare", help="compare two volumes voxel by voxel; prints JSON")
    p.add_argument("volume_a", metavar="A.mha")
    p.add_argument("volume_b", metavar="B.mha")
    p.set_defaults(func=_cmd_compare)

    p = bench_subparsers.add_parser("reconstruct", help="reconstruct a synthetic 640x480 sweep at 0.5 mm (NN and LINEAR)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.add_argument("--frames", type=int, default=400, help="frames in the synthetic sweep (default 400)")
    p.set_defaults(func=_cmd_bench)


class ProgressReporter:
    """Frame progress on ``stream``: a redrawn bar on a terminal, else a plain line per 10 %."""

    def __init__(self, stream: TextIO, label: str):
        self.stream = stream
        self.label = label
        self.interactive = stream.isatty()
        self._last_decile = -1

    def __call__(self, done: int, total: int) -> None:
        fraction = done / total if total else 1.0
        if self.interactive:
            filled = int(round(fraction * _BAR_WIDTH))
            bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
            self.stream.write(f"\r{self.label} [{bar}] {done}/{total} frames")
            if done >= total:
                self.stream.write("\n")
        else:
            decile = int(fraction * 10)
            if decile == self._last_decile:
                return
            self._last_decile = decile
            self.stream.write(f"{self.label}: {done}/{total} frames ({fraction:.0%})\n")
        self.stream.flush()


def _cmd_reconstruct(args: argparse.Namespace) -> int:
    from workbench.reconstruction.reconstruct import reconstruct_from_files

    spacing = args.spacing_mm
    if spacing is not None and len(spacing) not in (1, 3):
        raise ReconstructionError(f"--spacing-mm takes 1 or 3 numbers, got {len(spacing)}")
    started = time.perf_counter()
    result = reconstruct_from_files(
        args.sequence,
        args.plus_config,
        interpolation=args.interpolation,
        compounding=args.compounding,
        spacing_mm=None if spacing is None else (spacing[0] if len(spacing) == 1 else tuple(spacing)),
        fill_holes=False if args.no_fill_holes else None,
        image_to_reference_transform=args.image_to_reference_transform,
        memory_limit_bytes=int(args.max_memory_gib * 2**30),
        progress=ProgressReporter(sys.stderr, "reconstruct"),
    )
    result.write(args.out)
    if args.accumulation_out:
        result.write(args.accumulation_out, accumulation=True)
    summary = {
        "out": args.out,
        "size_px": list(result.grid.size_px),
        "spacing_mm": list(result.grid.spacing_mm),
        "origin_mm": list(result.grid.origin_mm),
        "frame": result.grid.frame,
        "frames_inserted": result.frames_inserted,
        "frames_skipped": result.frames_skipped,
        "voxels_covered": int(result.covered.sum()),
        "holes_filled": result.holes_filled,
        "seconds": round(time.perf_counter() - started, 3),
    }
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from workbench.reconstruction.compare import compare_files

    json.dump(compare_files(args.volume_a, args.volume_b).to_dict(), sys.stdout, allow_nan=False)
    sys.stdout.write("\n")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from workbench.reconstruction.bench import run_reconstruction_benchmark

    if args.frames < 1:
        raise ReconstructionError(f"--frames must be at least 1, got {args.frames}")
    report = run_reconstruction_benchmark(frames=args.frames)
    if args.json:
        json.dump(report, sys.stdout)
        sys.stdout.write("\n")
        return 0
    for name in ("nearest_mean_fill_holes", "linear_mean"):
        case = report[name]
        print(
            f"{name}: {case['seconds']} s, {case['mpixel_per_s']} Mpixel/s, "
            f"peak {case['peak_memory_bytes'] / 2**20:.1f} MiB ({case['peak_over_output_volume']}x the volume)"
        )
    return 0
