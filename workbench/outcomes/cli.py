"""``workbench outcomes``: analyse a procedure log, or re-analyse the clinical study's summaries.

``workbench outcomes LOG --out DIR [--treated fusion] [--control us] [--caliper-sd 0.05]``
    Validates the log (CSV or Parquet), runs :func:`~workbench.outcomes.analysis.analyse_log`
    and writes the CSV tables and a self-contained ``report.html`` into DIR. Prints a JSON summary.
``workbench outcomes --reanalyse-study``
    Prints the re-analysis of the study's published summaries as JSON (no log needed).
``workbench outcomes --write-example PATH``
    Writes the synthetic example log (the one shipped with the package) to PATH.

Bad input raises :class:`~workbench.errors.OutcomesError` (exit 2 through ``workbench``).
Methods and columns: docs/outcomes.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from workbench.errors import OutcomesError

__all__ = ["register", "handle"]


def register(subparsers) -> None:
    """Add the ``outcomes`` sub-command to an ``argparse`` sub-parser collection."""
    p = subparsers.add_parser(
        "outcomes", help="analyse a procedure log (propensity matching, tests, HTML report) or re-analyse the study"
    )
    p.add_argument("log", nargs="?", type=Path, help="procedure log, .csv or .parquet")
    p.add_argument("--out", type=Path, help="output folder for the CSV tables and report.html")
    p.add_argument("--treated", default="fusion", help="treated group label (default fusion)")
    p.add_argument("--control", default="us", help="control group label (default us)")
    p.add_argument(
        "--caliper-sd", type=float, default=None,
        help="caliper in SDs of the logit of the propensity score (default 0.05)",
    )
    p.add_argument("--confidence", type=float, default=0.95, help="confidence level of the intervals (default 0.95)")
    p.add_argument("--reanalyse-study", action="store_true", help="print the re-analysis of the study's summaries")
    p.add_argument("--write-example", type=Path, metavar="PATH", help="write the synthetic example log to PATH")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    """Run ``workbench outcomes``; returns the exit status (0)."""
    from workbench.outcomes.report import summary_json

    if args.reanalyse_study:
        from workbench.outcomes.reanalysis import reanalyse_study

        sys.stdout.write(summary_json({"study_reanalysis": reanalyse_study()}) + "\n")
        return 0
    if args.write_example is not None:
        from workbench.outcomes.example import write_example_log

        path = write_example_log(args.write_example)
        sys.stdout.write(summary_json({"example_log": str(path)}) + "\n")
        return 0
    if args.log is None or args.out is None:
        raise OutcomesError("give LOG and --out DIR, or --reanalyse-study, or --write-example PATH")
    if not (0 < args.confidence < 1):
        raise OutcomesError(f"--confidence must be between 0 and 1, got {args.confidence}")
    from workbench.outcomes.analysis import analyse_log
    from workbench.outcomes.log import load_log
    from workbench.outcomes.matching import DEFAULT_CALIPER_SD
    from workbench.outcomes.report import write_report

    log = load_log(args.log)
    analysis = analyse_log(
        log, args.treated, args.control,
        caliper_sd=DEFAULT_CALIPER_SD if args.caliper_sd is None else args.caliper_sd,
        confidence=args.confidence,
    )
    summary = write_report(analysis, args.out, source=args.log.name)
    sys.stdout.write(summary_json(summary) + "\n")
    return 0
