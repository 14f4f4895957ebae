"""Subcommands of the teaching package: ``library build/list``, ``score``, ``submit``, ``results``.

Registered on the main parser by :func:`register` (workbench/cli.py); errors are
:class:`~workbench.teaching.TeachingError` (or another WorkbenchError): one line, exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys


__all__ = ["register"]


def register(sub) -> None:
    """Add ``library``, ``score``, ``submit`` and ``results`` to the ``workbench`` subparsers."""
    library = sub.add_parser("library", help="build or list a teaching case library (varied cases, expert plans, difficulty)")
    library_sub = library.add_subparsers(dest="library_command", required=True, metavar="ACTION")
    p = library_sub.add_parser("build", help="generate N varied cases with expert plans and a difficulty rating")
    p.add_argument("out_dir", help="new folder (or a library to extend)")
    p.add_argument("--cases", type=int, required=True, help="number of cases, 1..100 (about 10-30 s each)")
    p.add_argument("--seed", type=int, default=1, help="makes the library reproducible (default 1)")
    p.add_argument("--json", action="store_true", help="print the index as JSON")
    p.set_defaults(func=_cmd_library_build)
    p = library_sub.add_parser("list", help="list a library's cases, tasks and difficulty")
    p.add_argument("dir")
    p.add_argument("--json", action="store_true", help="print the index as JSON")
    p.set_defaults(func=_cmd_library_list)

    p = sub.add_parser("score", help="score a trainee's plan.json against the case's expert plan (expert-anchored, 0-100)")
    p.add_argument("--case", required=True, help="case folder with a ground_truth.json (a library case)")
    p.add_argument("--plan", required=True, help="the trainee's plan.json")
    p.add_argument("--task", default=None, help="expert target to score against (default: the library's task)")
    p.add_argument("--no-safety", action="store_true", help="skip the safety checks on the case's label map")
    p.add_argument("--json", action="store_true", help="print the score as one JSON object")
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser("submit", help="score a trainee's plan or rehearsal attempt and store it in the results database")
    p.add_argument("--db", default=None, help="SQLite file or postgresql:// URL (default: results.sqlite beside the library)")
    p.add_argument("--trainee", required=True, help="pseudonymous trainee id (no names, no e-mail addresses)")
    p.add_argument("--session", required=True, help="teaching session id")
    p.add_argument("--case", required=True, help="library case folder")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--plan", help="the trainee's plan.json")
    what.add_argument("--attempt", help="a rehearsal attempt's metrics.json (workbench rehearse)")
    p.add_argument("--json", action="store_true", help="print the stored attempt as JSON")
    p.set_defaults(func=_cmd_submit)

    p = sub.add_parser("results", help="list the attempts in a results database (or export them as CSV)")
    p.add_argument("--db", required=True, help="SQLite file or postgresql:// URL")
    p.add_argument("--session", default=None, help="only this session")
    p.add_argument("--csv", default=None, help="write the attempts to this CSV file")
    p.add_argument("--json", action="store_true", help="print the attempts as JSON")
    p.set_defaults(func=_cmd_results)


def _print_json(document) -> None:
    json.dump(document, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def _library_rows(entries) -> list[dict]:
    from workbench.teaching.library import _describe

    return [
        {
            "case_id": e.case_id,
            "task": e.task,
            "difficulty": e.difficulty,
            "difficulty_label": e.difficulty_label,
            "description": _describe(e.features),
            "features": e.features,
        }
        for e in entries
    ]


def _show_library(entries, as_json: bool) -> None:
    rows = _library_rows(entries)
    if as_json:
        _print_json({"cases": rows})
        return
    for row in rows:
        print(f"{row['case_id']}  difficulty {row['difficulty']:.1f} ({row['difficulty_label']})  task: {row['task']}")
        print(f"    {row['description']}")


def _cmd_library_build(args: argparse.Namespace) -> int:
    from workbench.teaching.library import build_library

    entries = build_library(args.out_dir, args.cases, args.seed, progress=lambda m: print(m, file=sys.stderr))
    _show_library(entries, args.json)
    return 0


def _cmd_library_list(args: argparse.Namespace) -> int:
    from workbench.teaching.library import read_library

    _show_library(read_library(args.dir), args.json)
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from workbench.teaching.score import score_plan

    score = score_plan(args.case, args.plan, args.task, check_safety=not args.no_safety)
    if args.json:
        _print_json(score.to_dict())
    else:
        verdict = "PASSED" if score.passed else "NOT PASSED"
        m = score.metrics
        print(f"{score.case_id} {score.task}: score {score.score:.1f}/100, {verdict}")
        print(
            f"  angle {m['angle_deviation_deg']:.1f} deg, offset at entry {m['offset_at_entry_mm']:.1f} mm, "
            f"at target {m['offset_at_target_mm']:.1f} mm, safety {score.safety_status}"
        )
        for line in score.findings:
            print(f"  - {line}")
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from workbench.teaching.submit import submit_plan, submit_rehearsal

    if args.attempt is not None:
        attempt_id, score = submit_rehearsal(args.db, args.trainee, args.session, args.case, args.attempt)
    else:
        attempt_id, score = submit_plan(args.db, args.trainee, args.session, args.case, args.plan)
    document = {"attempt_id": attempt_id, **score.to_dict()}
    if args.json:
        _print_json(document)
    else:
        print(f"attempt {attempt_id} ({score.attempt_kind}): {score.case_id} score {score.score:.1f}/100, "
              f"{'passed' if score.passed else 'not passed'}")
    return 0


def _cmd_results(args: argparse.Namespace) -> int:
    from workbench.teaching.store import RESULT_COLUMNS, open_store

    with open_store(args.db) as store:
        rows = store.results(args.session)
        if args.csv:
            store.write_csv(args.csv, args.session)
    if args.json:
        _print_json([{c: r[c] for c in RESULT_COLUMNS} for r in rows])
    elif not args.csv:
        for r in rows:
            print(
                f"{r['id']:5d} {r['submitted_utc']} {r['session']} {r['trainee']:>10} {r['case_id']} {r['kind']:>9} "
                f"score {r['score']:5.1f} {'pass' if r['passed'] else 'FAIL'}{' WRONG-LEVEL' if r['wrong_level'] else ''}"
            )
    else:
        print(f"{len(rows)} attempts written to {args.csv}")
    return 0
