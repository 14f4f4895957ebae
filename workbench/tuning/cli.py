"""``workbench tune`` and ``workbench bench tune``: registration tuning on a Dask cluster (docs/tuning.md)."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["register", "register_bench"]


def register(subparsers) -> None:
    """Add ``tune`` to the ``workbench`` sub-commands."""
    from workbench.tuning.study import DEFAULT_STORAGE

    p = subparsers.add_parser(
        "tune", help="tune a registration pipeline's parameters: an Optuna study scored on simulated cases by Dask workers"
    )
    p.add_argument("--method", required=True, help="pipeline to tune, as 'workbench bench registration' names it (e.g. bone-icp)")
    p.add_argument("--cases", type=int, default=2, help="simulated cases every trial is scored on (default 2)")
    p.add_argument("--starts", type=int, default=2, help="random initial misalignments per case (default 2)")
    p.add_argument("--trials", type=int, default=20, help="completed trials the study should hold (default 20; a rerun resumes)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=1, help="local worker processes, one thread each (default 1)")
    where.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler, tcp://HOST:PORT")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help=f"sqlite:///FILE or postgresql://... (default {DEFAULT_STORAGE})")
    p.add_argument("--study", default=None, help="study name (default: the method)")
    p.add_argument(
        "--param", action="append", default=None, metavar="NAME[=LOW:HIGH]",
        help="tune only these parameters (repeatable), optionally over LOW..HIGH; default: all of the method's",
    )
    p.add_argument("--profile", default="ideal", help="case simulation profile: ideal (default) or realistic")
    p.add_argument("--seed", type=int, default=0, help="seed of the cases, starts and sampler (default 0)")
    p.add_argument("--case-spacing-mm", type=float, default=1.0, help="phantom and reconstruction voxel size (default 1 mm)")
    p.add_argument("--list-params", action="store_true", help="print the method's tunable parameters and ranges, then exit")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=_cmd_tune)


def _cmd_tune(args: argparse.Namespace) -> int:
    if args.scheduler is not None:
        from workbench.tuning.study import probe_scheduler

        probe_scheduler(args.scheduler)  # before the heavy imports: an unreachable scheduler fails in seconds
    from workbench.tuning.cases import CaseSet
    from workbench.tuning.space import method_parameters, select_parameters
    from workbench.tuning.study import run_study

    if args.list_params:
        rows = {name: {"kind": p.kind, "low": p.low, "high": p.high, "log": p.log, "default": p.default}
                for name, p in method_parameters(args.method).items()}
        print(json.dumps(rows, indent=2))
        return 0
    select_parameters(args.method, args.param)  # bad names and ranges fail before any storage is touched
    case_set = CaseSet(cases=args.cases, starts=args.starts, seed=args.seed, profile=args.profile, spacing_mm=args.case_spacing_mm)

    def progress(done: int, total: int, record: dict) -> None:
        if not args.json:
            print(f"trial {record['number']}: value {record['value']:.3f} ({done}/{total} completed)", file=sys.stderr, flush=True)

    report = run_study(
        args.method, case_set, args.trials, parameters=args.param, storage=args.storage, study_name=args.study,
        workers=args.workers, scheduler=args.scheduler, seed=args.seed, on_trial=progress,
    )
    out = report.as_dict()
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"study {out['study']} in {out['storage']}: {out['n_trials']} completed trials ({out['added_trials']} now)")
        print(f"best value {out['best_value']}: {json.dumps(out['best_params'])}")
    return 0


def register_bench(bench_subparsers) -> None:
    """Add ``tune`` to the ``workbench bench`` sub-commands."""
    p = bench_subparsers.add_parser("tune", help="trials per hour at 1 and 2 local workers, Dask overhead per task, 64-worker model")
    p.add_argument("--method", default="bone-icp", help="pipeline (default bone-icp)")
    p.add_argument("--cases", type=int, default=2, help="simulated cases per trial (default 2)")
    p.add_argument("--starts", type=int, default=2, help="starts per case (default 2)")
    p.add_argument("--trials", type=int, default=6, help="trials per measurement (default 6)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="local worker counts to measure (default 1 2)")
    p.add_argument("--case-spacing-mm", type=float, default=2.0, help="case voxel size (default 2 mm)")
    p.add_argument("--repeats", type=int, default=1, help="studies per worker count, alternating; the fastest counts (default 1)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.set_defaults(func=_cmd_bench_tune)


def _cmd_bench_tune(args: argparse.Namespace) -> int:
    from workbench.tuning.bench import run_tuning_benchmark

    progress = None if args.json else (lambda message: print(message, file=sys.stderr, flush=True))
    report = run_tuning_benchmark(
        method=args.method, cases=args.cases, starts=args.starts, trials=args.trials, worker_counts=tuple(args.workers),
        spacing_mm=args.case_spacing_mm, progress=progress, repeats=args.repeats,
    )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for row in report["measured"]:
            print(f"{row['workers']} worker(s): {row['trials_per_hour']:.0f} trials/h, efficiency {row['parallel_efficiency']:.0%}")
        print(f"Dask overhead per task: {report['overhead']['per_task_s'] * 1e3:.1f} ms "
              f"({report['overhead']['fraction']:.1%} of a task)")
        print(f"model at 64 workers: {report['model']['trials_per_hour_64']:.0f} trials/h")
    return 0
