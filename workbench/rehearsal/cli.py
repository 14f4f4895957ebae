"""``workbench rehearse`` (a scripted attempt, headless) and ``workbench bench rehearsal``.

``workbench rehearse CASE_DIR --target NAME --follow-plan [--deviation-deg D]
[--deviation-azimuth-deg A] [--entry-offset-mm X] [--no-inject] --out DIR [--log LOG.csv
--log-value COLUMN=VALUE ...]``
    The needle follows the case's plan for ``NAME`` (its expert path, :mod:`workbench.rehearsal.scene`),
    optionally turned ``D`` degrees (towards the midline at azimuth 0, caudally at 90) and with the
    skin entry moved ``X`` mm towards the patient's left; writes ``DIR/metrics.json`` and the
    replayable ``DIR/recording.seq.mha``, prints the metrics as JSON. With ``--log`` a row is
    appended to that procedure log (group ``rehearsal``; the log's required covariates come from
    ``--log-value``). Bad input (no case, no label map, unknown target) exits 2 naming the file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from workbench.rehearsal.scene import RehearsalError

__all__ = ["handle", "register", "register_bench"]


def register(subparsers) -> None:
    """Add ``rehearse`` to the ``workbench`` sub-commands."""
    p = subparsers.add_parser("rehearse", help="run a scripted needle attempt on a case and score it (metrics.json)")
    p.add_argument("case_dir", type=Path, help="case folder with a label map")
    p.add_argument("--target", required=True, help="target name (or its unambiguous start, e.g. 'L4 left')")
    p.add_argument("--follow-plan", action="store_true", required=True,
                   help="the needle follows the case's plan for the target (the only scripted mode)")
    p.add_argument("--deviation-deg", type=float, default=0.0, help="turn the needle from the plan by this angle, deg")
    p.add_argument("--deviation-azimuth-deg", type=float, default=0.0,
                   help="towards where the needle is turned: 0 medial (default), 90 caudal, -90 cranial, deg")
    p.add_argument("--entry-offset-mm", type=float, default=0.0, help="move the skin entry towards the patient's left, mm")
    p.add_argument("--no-inject", action="store_true", help="do not inject the plan's volume")
    p.add_argument("--out", type=Path, required=True, help="output folder (metrics.json, recording.seq.mha)")
    p.add_argument("--log", type=Path, help="append the attempt to this procedure log (CSV, workbench.outcomes)")
    p.add_argument("--log-value", action="append", default=[], metavar="COLUMN=VALUE",
                   help="a column of the log row (its required covariates: sex, age_years, ...); repeatable")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    """Run ``workbench rehearse``; returns the exit status (errors raise WorkbenchError: exit 2)."""
    from workbench.rehearsal.attempt import scripted_attempt
    from workbench.rehearsal.scene import load_scene

    values = _log_values(args.log_value) if args.log is not None else {}
    scene = load_scene(args.case_dir, load_mri=False)
    result = scripted_attempt(
        scene, args.target, deviation_deg=args.deviation_deg, entry_offset_mm=args.entry_offset_mm,
        deviation_azimuth_deg=args.deviation_azimuth_deg, inject=not args.no_inject,
    )  # fmt: skip
    files = result.write(args.out)
    if args.log is not None:
        from workbench.case import load_case
        from workbench.outcomes.log import append_procedure

        append_procedure(args.log, result.log_row(load_case(args.case_dir, verify_digests=False), **values))
        files["log"] = str(args.log)
    json.dump({**result.metrics, "files": files}, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


def _log_values(items: list[str]) -> dict:
    values = {}
    for item in items:
        column, sep, value = item.partition("=")
        if not sep or not column.strip():
            raise RehearsalError(f"--log-value {item!r} must be COLUMN=VALUE")
        values[column.strip()] = value.strip()
    return values


def register_bench(bench_subparsers) -> None:
    """Add ``rehearsal`` to the ``workbench bench`` sub-commands (frames/s of the simulated B-mode)."""
    p = bench_subparsers.add_parser("rehearsal", help="rehearsal imaging speed: simulated B-mode frames per second")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args: argparse.Namespace) -> int:
    from workbench.rehearsal.bench import run_rehearsal_benchmark

    report = run_rehearsal_benchmark()
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for key, value in report.items():
            print(f"{key:<32} {value}")
    return 0
