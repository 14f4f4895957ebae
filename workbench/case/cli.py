"""``workbench new-case``: a case bundle from a patient's own MRI, sweeps and device set.

Registered on the ``workbench`` parser by :func:`register`; the work is
:func:`workbench.case.create.new_case`. Prints one JSON object (the case as ``workbench info``
shows it, with each sweep's frame counts and what the case still lacks) on stdout; on bad
input, exit 2 with one line naming the file and the problem, and nothing written. ``--verbose``
prints each step on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

__all__ = ["register"]


def register(subparsers) -> None:
    """Add ``new-case`` to the ``workbench`` sub-command parsers."""
    p = subparsers.add_parser(
        "new-case",
        help="make a case bundle from an MRI (DICOM, de-identified; or NIfTI/NRRD/MHA), sweeps and their device set",
    )
    p.add_argument("out_dir", help="new or empty folder for the case bundle")
    p.add_argument("--mri", required=True, help="DICOM folder or .dcm file, or a .nii/.nii.gz/.nrrd/.mha volume")
    p.add_argument("--sweep", action="append", default=[], metavar="SEQ", help="PLUS sequence file (repeat for several)")
    p.add_argument("--device-set", default=None, metavar="XML", help="PLUS device-set XML with the ImageToProbe calibration")
    p.add_argument("--case-id", default=None, help="pseudonymous case id (default: CASE- and 8 random hex digits)")
    p.add_argument("--series", default=None, metavar="UID", help="DICOM image series: SeriesInstanceUID or its number in the listing")
    p.add_argument("--title", default="", help="free text title (no patient identifiers)")
    p.add_argument("--verbose", "-v", action="store_true", help="print each step on stderr")
    p.set_defaults(func=_handle)


def _handle(args: argparse.Namespace) -> int:
    from workbench.case import describe_case
    from workbench.case.create import create_case
    from workbench.case.readiness import case_readiness

    started = time.perf_counter()

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    created = create_case(
        args.out_dir,
        mri=args.mri,
        sweeps=args.sweep,
        device_set=args.device_set,
        case_id=args.case_id,
        series_uid=args.series,
        title=args.title,
        progress=progress if args.verbose else None,
    )
    folder = created.folder
    summary = describe_case(folder)
    summary["sweep_frames"] = [check.to_dict() for check in created.sweeps]
    summary["warnings"] = list(created.warnings)
    summary["readiness"] = case_readiness(created.case, folder)
    json.dump(summary, sys.stdout, allow_nan=False)
    sys.stdout.write("\n")
    return 0
