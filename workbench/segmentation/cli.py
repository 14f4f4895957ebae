"""``workbench segment CASE_DIR [--out FILE]`` and ``workbench bench segment [--json]``."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["register", "register_bench"]


def register(subparsers) -> None:
    """Add ``segment`` to the ``workbench`` sub-command parsers."""
    p = subparsers.add_parser(
        "segment",
        help="segment the case MRI (vertebrae by level, canal, nerve roots, body) from its named landmarks and attach the label map",
    )
    p.add_argument("case_dir", help="case folder with an MRI and named Mri landmarks ('L4 spinous process tip', ...)")
    p.add_argument("--out", default=None, metavar="FILE", help="also write the label map (and FILE.labels.json) here")
    p.add_argument(
        "--fit", choices=("similarity", "affine"), default="similarity",
        help="per-level transform of the template (default similarity)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=_cmd_segment)


def _cmd_segment(args: argparse.Namespace) -> int:
    import numpy as np

    from workbench.io.label_table import sidecar_path
    from workbench.segmentation.segment import SegmentParameters
    from workbench.segmentation.store import segment_case

    progress = None if args.quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    path, segmentation = segment_case(args.case_dir, args.out, SegmentParameters(fit_model=args.fit), progress)
    label_map = segmentation.label_map
    counts = label_map.array.ravel()
    histogram = dict(zip(*(v.tolist() for v in np.unique(counts, return_counts=True))))
    summary = {
        "label_map": str(path),
        "table": str(sidecar_path(path)),
        "out": args.out,
        "levels": list(segmentation.levels),
        "labels": [
            {"value": v, "name": n, "voxels": int(histogram.get(v, 0))} for v, n in sorted(label_map.names.items())
        ],
        "fits": [
            {"level": f.level, "model": f.model, "landmarks": len(f.landmarks), "rms_residual_mm": round(f.rms_residual_mm, 2)}
            for f in segmentation.fits.values()
        ],
        "seconds": segmentation.provenance["seconds"],
    }
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")
    return 0


def register_bench(bench_subparsers) -> None:
    """Add ``segment`` to the ``workbench bench`` sub-commands."""
    p = bench_subparsers.add_parser(
        "segment",
        help="posterior bone surface distance, canal Dice and level labelling on withheld generated cases and the real crops",
    )
    p.add_argument("--cases", type=int, default=None, help="withheld generated cases, 0-3 (default all 3)")
    p.add_argument(
        "--fle-mm", type=float, default=None,
        help="landmark localisation error added to the generated cases' exact landmarks, mm RMS per axis (default 1)",
    )  # fmt: skip
    p.add_argument("--no-real", action="store_true", help="leave out the real TPTBox crops")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args: argparse.Namespace) -> int:
    from workbench.segmentation.bench import BENCH_CASES, BENCH_FLE_MM, run_segmentation_benchmark

    progress = None if args.json else (lambda message: print(message, file=sys.stderr, flush=True))
    cases = len(BENCH_CASES) if args.cases is None else args.cases
    fle_mm = BENCH_FLE_MM if args.fle_mm is None else args.fle_mm
    report = run_segmentation_benchmark(cases, fle_mm, real=not args.no_real, progress=progress)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    for name, row in report["summary"].items():
        verdict = "met" if row["meets_goal"] else "NOT met"
        print(f"{name:<42} mean {row['mean']:>7} worst {row['worst']:>7}  goal {row['goal']:<7} {verdict}")
    return 0
