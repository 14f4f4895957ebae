"""The ``workbench`` command line.

Sub-commands
------------
``workbench info PATH``
    Print one JSON object describing a DICOM folder, volume file, PLUS sequence file,
    PLUS device-set XML or case folder. Exit 0 on success; exit 2 with a one-line error
    naming the file and the problem on bad input.
``workbench new-case OUT_DIR --mri PATH [--sweep SEQ ...] [--device-set XML] [--case-id ID] [--series UID]``
    Make a case bundle from a patient's MRI (DICOM de-identified on the way in, or
    NIfTI/NRRD/MHA), tracked sweeps and their device set; ``info`` on a case folder also
    says what it still lacks for each step (``readiness``).
``workbench anonymize IN_DIR OUT_DIR [--retain OPTION]...``
    Write a de-identified copy of a DICOM folder (DICOM PS3.15 basic profile, named retain options).
``workbench demo``
    Run the headless pipeline on the demo data and print what it did.
``workbench reconstruct SEQUENCE --plus-config XML --out VOLUME``
    Reconstruct a tracked sweep into a volume as PLUS's VolumeReconstructor does.
``workbench compare A B``
    Compare two volumes voxel by voxel (JSON).
``workbench demo-case --out DIR [--seed N] [--bmi 32] [--protocol seed-3d-space]``
    Generate the synthetic lumbar demo case with ground truth.
``workbench plan CASE_DIR --out OUT_DIR`` / ``workbench plan --check plan.json``
    Build and export puncture plans (JSON, Slicer markups, ITK transform, CSV, HTML report).
``workbench outcomes LOG.csv --out DIR`` / ``workbench outcomes --reanalyse-study``
    Outcome analysis of a procedure log (propensity matching, tests, CSV tables, HTML report).
``workbench lab [--case DIR]``
    Start JupyterLab on the notebooks (127.0.0.1, generated token) with the demo case.
``workbench teach [--case DIR]``
    Serve notebooks 02-04 as a Voila teaching app (127.0.0.1, generated token).
``workbench detect-bone SEQUENCE --out MASK.mha [--device-set XML]``
    Bone surface per frame as a uint8 mask sequence (1 = bone) on the frame grid; JSON summary.
``workbench labels import CASE_DIR --from PATH [--table FILE] [--format table|totalsegmentator|tptbox]``
    Import a segmentation as the case's label map, with its label table (sidecar ``.labels.json``).
``workbench tune --method PIPELINE --cases N --trials T [--workers W | --scheduler tcp://HOST:PORT] [--storage URL] [--json]``
    Tune a registration pipeline: an Optuna study scored on simulated cases by Dask workers, resumable (docs/tuning.md).
``workbench segment CASE_DIR [--out FILE]``
    Segment the case MRI (vertebrae by level, canal, nerve roots, body) from its named landmarks; attach the label map.
``workbench library build OUT_DIR --cases N [--seed S]`` / ``workbench library list DIR [--json]``
    A teaching case library: varied synthetic cases with expert plans and a difficulty rating (docs/teaching.md).
``workbench score --case CASE_DIR --plan PLAN.json [--json]``
    Score a trainee's plan against the case's expert plan (0-100, expert-anchored pass thresholds).
``workbench submit --trainee ID --session S --case CASE_DIR --plan PLAN.json [--db URL]`` / ``workbench results --db URL [--csv OUT]``
    Store a scored attempt (SQLite beside the library, or PostgreSQL); list or export the attempts.
``workbench bench reconstruct|demo-case|registration|segment|tune|ui [--json]``
    Benchmarks (speed and memory), never timed unit tests.

Every sub-command imports what it needs when it runs, so ``workbench --help`` is fast.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from workbench import __version__
from workbench.errors import WorkbenchError

EXIT_OK = 0
EXIT_BAD_INPUT = 2

_SEQUENCE_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
_VOLUME_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr", ".png", ".jpg", ".jpeg", ".tif", ".tiff")


def _has_suffix(path: Path, suffixes: Sequence[str]) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in suffixes)


_FRAME_FIELD_RE = re.compile(rb"Seq_Frame\d+_\w*(?:Timestamp|Transform)\b")


def _header_mentions_frames(path: Path) -> bool:
    """True if the text header of a MetaIO/NRRD file has PLUS per-frame timestamps or transforms.

    PLUS also writes reconstructed *volumes* through its sequence writer, leaving a lone
    ``Seq_Frame0000_ImageStatus`` in the header; those are volumes, not sweeps.
    """
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    return _FRAME_FIELD_RE.search(head) is not None


def _is_dicom_file(path: Path) -> bool:
    with open(path, "rb") as fh:
        preamble = fh.read(132)
    return len(preamble) == 132 and preamble[128:132] == b"DICM"


def _folder_has_dicom(folder: Path) -> bool:
    for candidate in folder.rglob("*"):
        if candidate.is_file() and (candidate.suffix.lower() == ".dcm" or _is_dicom_file(candidate)):
            return True
    return False


def describe(path: str | Path) -> dict:
    """Describe any input workbench reads, as a JSON-ready dict with a ``kind`` key.

    Raises
    ------
    WorkbenchError
        If the path does not exist or is not a kind of input workbench knows.
    """
    path = Path(path)
    if not path.exists():
        raise WorkbenchError("no such file or folder", path)
    if not path.is_dir():
        from workbench.io.paths import require_regular_file

        require_regular_file(path)  # a FIFO or device is refused before anything opens it (it would block)
    describer = _pick_describer(path)
    return describer(path)


def _describe_json(path: Path) -> dict:
    """Describe a JSON file: 3D Slicer markups or a JSON Schema."""
    from workbench.io.json_io import read_json_limited

    document = read_json_limited(path)  # size, nesting, digits and float range bounded
    if isinstance(document, dict) and "markups" in document:
        from workbench.io.markups import describe_markups

        return describe_markups(path)
    if isinstance(document, dict) and "json-schema.org" in str(document.get("$schema", "")):
        return {
            "kind": "json_schema",
            "path": str(path),
            "title": document.get("title"),
            "id": document.get("$id") or document.get("id"),
            "draft": document["$schema"],
        }
    raise WorkbenchError("JSON file is neither Slicer markups, a JSON Schema nor a case.json", path)


def _describe_case_with_readiness(folder: Path) -> dict:
    """``describe_case`` plus ``readiness``: what the case still lacks for each step."""
    from workbench.case import describe_case, load_case
    from workbench.case.readiness import case_readiness

    info = describe_case(folder)
    info["readiness"] = case_readiness(load_case(folder, verify_digests=False), folder)
    return info


def _pick_describer(path: Path) -> Callable[[Path], dict]:
    if path.is_dir():
        if (path / "case.json").is_file():
            return _describe_case_with_readiness
        if _folder_has_dicom(path):
            from workbench.io.dicom import describe_dicom

            return describe_dicom
        raise WorkbenchError("folder holds neither a case.json nor DICOM files", path)
    if path.name == "case.json":
        return lambda p: _describe_case_with_readiness(p.parent)
    if path.name.lower().endswith(".json"):
        return _describe_json
    if path.suffix.lower() in (".tfm", ".h5", ".hdf5"):
        from workbench.io.itk_transform import describe_transform

        return describe_transform
    if path.suffix.lower() == ".xml":
        from workbench.io.plus_config import describe_device_set

        return describe_device_set
    if _has_suffix(path, _SEQUENCE_SUFFIXES) and _header_mentions_frames(path):
        from workbench.io.sequence import describe_sequence

        return describe_sequence
    if _has_suffix(path, _VOLUME_SUFFIXES):
        from workbench.io.volume import describe_volume

        return describe_volume
    if path.suffix.lower() == ".dcm" or _is_dicom_file(path):
        from workbench.io.dicom import describe_dicom

        return lambda p: describe_dicom(p.parent)
    raise WorkbenchError(
        "unknown kind of file: expected a DICOM folder, a volume or image (.nii, .nii.gz, .nrrd, .mha, "
        ".mhd, .png), a PLUS sequence file, a PLUS device-set .xml, an ITK transform (.tfm, .h5), "
        "Slicer markups (.mrk.json) or a case folder",
        path,
    )


def _cmd_info(args: argparse.Namespace) -> int:
    info = describe(args.path)
    json.dump(info, sys.stdout, indent=2 if args.pretty else None, allow_nan=False)
    sys.stdout.write("\n")
    return EXIT_OK


def _cmd_anonymize(args: argparse.Namespace) -> int:
    from workbench.anonymize import anonymize_folder

    report = anonymize_folder(
        args.in_dir, args.out_dir, case_id=args.case_id, options=args.retain or (), date_offset_days=args.date_offset_days
    )
    json.dump(report.to_dict(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from workbench.demo import run_demo

    run_demo(out_dir=Path(args.out), shared_data=Path(args.shared_data) if args.shared_data else None)
    return EXIT_OK


def _cmd_demo_case(args: argparse.Namespace) -> int:
    import dataclasses

    from workbench.case import describe_case
    from workbench.phantom.democase import DEFAULT_DEMO_CASE, generate_demo_case

    overrides = {
        "seed": args.seed,
        "bmi": args.bmi,
        "age_years": args.age,
        "protocol": args.protocol,
        "sweeps": tuple(args.sweeps) if args.sweeps else None,
        "posture_change": False if args.no_posture_change else None,
    }
    spec = dataclasses.replace(DEFAULT_DEMO_CASE, **{k: v for k, v in overrides.items() if v is not None})
    started = time.perf_counter()

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    folder = generate_demo_case(args.out, spec, progress=progress)
    json.dump(describe_case(folder), sys.stdout)
    sys.stdout.write("\n")
    return EXIT_OK


def _cmd_bench_demo_case(args: argparse.Namespace) -> int:
    from workbench.phantom.bench import run_demo_case_benchmark

    report = run_demo_case_benchmark()
    if args.json:
        json.dump(report, sys.stdout)
        sys.stdout.write("\n")
    else:
        for stage in report["stages"]:
            print(f"{stage['seconds']:8.2f} s  {stage['stage']}")
        print(f"{report['seconds']:8.2f} s  total (target {report['target_seconds']} s)")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workbench",
        description="Planning workbench for US-MRI fusion-guided lumbar paravertebral nerve blocks.",
    )
    parser.add_argument("--version", action="version", version=f"workbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", help="describe a DICOM folder, volume, sequence file, device set or case as JSON")
    p.add_argument("path", help="file or folder to describe")
    p.add_argument("--pretty", action="store_true", help="indent the JSON")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("anonymize", help="write a de-identified copy of a DICOM folder")
    p.add_argument("in_dir")
    p.add_argument("out_dir")
    p.add_argument("--case-id", default=None, help="pseudonymous case id written as PatientName/PatientID")
    p.add_argument(
        "--retain",
        action="append",
        choices=["retain_long_modified_dates", "retain_patient_characteristics", "retain_safe_private"],
        help="a PS3.15 retain option (repeatable): dates shifted by one offset per case; sex, age, size, weight...; "
        "numeric safe private attributes. Default: the Basic Profile only (docs/privacy.md)",
    )
    p.add_argument(
        "--date-offset-days", type=int, default=None, help="with retain_long_modified_dates: days added to every date (default: random)"
    )
    p.set_defaults(func=_cmd_anonymize)

    from workbench.case.cli import register as register_new_case
    from workbench.outcomes.cli import register as register_outcomes
    from workbench.planning.cli import register as register_plan
    from workbench.reconstruction.cli import register as register_reconstruction
    from workbench.registration.bench import register_bench as register_registration_bench

    bench = sub.add_parser("bench", help="run a benchmark; prints figures (or JSON with --json)")
    bench_sub = bench.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    register_reconstruction(sub, bench_sub)
    register_registration_bench(bench_sub)
    register_plan(sub)
    register_new_case(sub)
    from workbench.widgets.bench import register_bench as register_ui_bench
    from workbench.widgets.cli import register as register_lab

    register_ui_bench(bench_sub)
    from workbench.fuzzing.cli import register_bench as register_fuzz_bench

    register_fuzz_bench(bench_sub)
    register_lab(sub)
    from workbench.teach import register as register_teach

    register_teach(sub)
    from workbench.teaching.cli import register as register_teaching

    register_teaching(sub)
    register_outcomes(sub)
    from workbench.case.labels import register_cli as register_labels

    register_labels(sub)
    from workbench.registration.bone_detect import register_cli as register_detect_bone

    register_detect_bone(sub)
    from workbench.segmentation.cli import register as register_segment
    from workbench.segmentation.cli import register_bench as register_segment_bench

    register_segment(sub)
    register_segment_bench(bench_sub)
    from workbench.tuning.cli import register as register_tune, register_bench as register_tune_bench

    register_tune(sub)
    register_tune_bench(bench_sub)
    from workbench.rehearsal.cli import register as register_rehearse, register_bench as register_rehearsal_bench

    register_rehearse(sub)
    register_rehearsal_bench(bench_sub)
    p = bench_sub.add_parser("demo-case", help="generate the default demo case in a temporary folder, timing each stage")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.set_defaults(func=_cmd_bench_demo_case)

    p = sub.add_parser(
        "demo-case", help="generate a synthetic lumbar case: MRI DICOM, tracked sweeps, landmarks, targets, ground truth"
    )
    p.add_argument("--out", required=True, help="new or empty folder for the case bundle")
    p.add_argument("--seed", type=int, default=None, help="makes the case reproducible (default 7)")
    p.add_argument("--bmi", type=float, default=None, help="body-mass index, kg/m^2 (default 28)")
    p.add_argument("--age", type=float, default=None, help="age in years (default 55)")
    p.add_argument("--protocol", default=None, help="MRI protocol: seed-3d-space (default) or isotropic-1mm")
    p.add_argument("--sweeps", nargs="+", default=None, help="sweep presets (default: paramedian-sagittal-left, transverse)")
    p.add_argument("--no-posture-change", action="store_true", help="same vertebra poses at MRI and procedure")
    p.set_defaults(func=_cmd_demo_case)

    p = sub.add_parser("demo", help="run the headless pipeline on the demo data and report what it did")
    p.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    p.add_argument("--shared-data", default=None, help="folder of the shared test data (default: ../shared/data)")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``workbench`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except WorkbenchError as exc:
        print(f"workbench {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        # only when the reader of OUR output went away (e.g. `| head`) is it not worth a message; a
        # pipe to a worker process breaking is a real failure and must not silence stdout
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_OK
        raise
    except OSError as exc:
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"workbench {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
