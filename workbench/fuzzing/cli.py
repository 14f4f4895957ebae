"""``workbench bench fuzz``: the mutation campaign over every input format, per-format figures."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["register_bench"]


def register_bench(bench_subparsers) -> None:
    """Add ``fuzz`` to ``workbench bench``."""
    p = bench_subparsers.add_parser(
        "fuzz", help="feed N mutated inputs of every format to the readers; count clean errors, crashes, hangs"
    )
    p.add_argument("--inputs", type=int, default=2000, help="mutated inputs in all, split over the formats (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="makes the campaign reproducible (default 0)")
    p.add_argument("--formats", nargs="+", default=None, help="only these formats (default all)")
    p.add_argument("--timeout-s", type=float, default=10.0, help="an input without an outcome after this long is a hang")
    p.add_argument("--shared-data", default=None, help="folder of the shared data (default: ../shared/data)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.set_defaults(func=_cmd_bench_fuzz)


def _cmd_bench_fuzz(args: argparse.Namespace) -> int:
    from pathlib import Path

    from workbench.errors import WorkbenchError
    from workbench.fuzzing.campaign import run_campaign
    from workbench.fuzzing.formats import FORMATS

    unknown = sorted(set(args.formats or ()) - set(FORMATS))
    if unknown:
        raise WorkbenchError(f"unknown format {unknown[0]!r}; known: {', '.join(FORMATS)}")
    if args.inputs < 1:
        raise WorkbenchError(f"--inputs must be at least 1, got {args.inputs}")
    report = run_campaign(
        args.inputs,
        seed=args.seed,
        formats=args.formats,
        timeout_s=args.timeout_s,
        shared=Path(args.shared_data) if args.shared_data else None,
    )
    if args.json:
        json.dump(report, sys.stdout)
        sys.stdout.write("\n")
    else:
        columns = ("inputs", "clean_errors", "accepted", "garbage_accepted", "uncaught", "crashes", "hangs")
        print(f"{'format':16s}" + "".join(f"{c:>17s}" for c in columns))
        for name, entry in report["formats"].items():
            print(f"{name:16s}" + "".join(f"{entry[c]:17d}" for c in columns))
        print(f"{'total':16s}" + "".join(f"{report['totals'][c]:17d}" for c in columns))
        print(f"{report['seconds']:.1f} s (seed {report['seed']})")
    bad = report["totals"]
    return 1 if bad["uncaught"] or bad["crashes"] or bad["hangs"] or bad["garbage_accepted"] else 0
