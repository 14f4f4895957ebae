"""Submit a trainee's plan: score it against the expert's and store the attempt (one call for the
CLI's ``workbench submit`` and the trainee's page); the trainee's page draws both plans on the MRI
(:func:`workbench.widgets.teacher.comparison_figure`)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from workbench.teaching import TeachingError
from workbench.teaching.library import LIBRARY_INDEX
from workbench.teaching.store import DEFAULT_DB_NAME, check_pseudonym, open_store

__all__ = ["default_db", "submit_plan", "submit_rehearsal"]


def default_db(case_dir: str | Path) -> Path:
    """``results.sqlite`` beside the ``library.json`` of the library that holds ``case_dir``.

    Raises
    ------
    TeachingError
        The case is not in a library.
    """
    library = Path(case_dir).resolve().parent
    if not (library / LIBRARY_INDEX).is_file():
        raise TeachingError("no results database given and the case is not in a library (no library.json beside it)", case_dir)
    return library / DEFAULT_DB_NAME


def submit_plan(db, trainee: str, session: str, case_dir: str | Path, plan_path: str | Path, *, check_safety: bool = True):
    """Score ``plan_path`` for ``case_dir`` and store the attempt in ``db`` (None: :func:`default_db`).

    Returns
    -------
    attempt_id : int
    score : workbench.teaching.score.PlanScore
    """
    from workbench.teaching.score import score_plan

    check_pseudonym(trainee)  # refuse a name before any work
    plan_path = Path(plan_path)
    score = score_plan(case_dir, plan_path, check_safety=check_safety)
    digest = hashlib.sha256(plan_path.read_bytes()).hexdigest()
    with open_store(db if db is not None else default_db(case_dir)) as store:
        attempt_id = store.submit(trainee, session, score, digest)
    return attempt_id, score


def submit_rehearsal(db, trainee: str, session: str, case_dir: str | Path, metrics_path: str | Path):
    """Score a rehearsal attempt's ``metrics.json`` (issue 18) for ``case_dir`` and store it in
    ``db`` (None: :func:`default_db`). The task is the library's for the case, else the attempt's
    ``target``. Only the JSON is read: teaching does not import the rehearsal simulator.

    Returns
    -------
    attempt_id : int
    score : workbench.teaching.score.RehearsalScore
    """
    from workbench.teaching.library import library_case_for
    from workbench.teaching.score import load_rehearsal_metrics, score_rehearsal

    check_pseudonym(trainee)
    metrics_path = Path(metrics_path)
    metrics = load_rehearsal_metrics(metrics_path)
    entry = library_case_for(case_dir)
    task = entry.task if entry is not None else metrics.get("target") if isinstance(metrics, dict) else None
    if not isinstance(task, str) or not task:
        raise TeachingError("no task to score the rehearsal against: the case is not in a library "
                            "and the attempt names no target", metrics_path)
    case_id = entry.case_id if entry is not None else Path(case_dir).resolve().name
    if isinstance(metrics, dict) and metrics.get("case_id") not in (None, case_id):
        raise TeachingError(f"the attempt is of case {metrics['case_id']!r}, not {case_id!r}", metrics_path)
    score = score_rehearsal(metrics, case_id=case_id, task=task, source=metrics_path)
    digest = hashlib.sha256(metrics_path.read_bytes()).hexdigest()
    with open_store(db if db is not None else default_db(case_dir)) as store:
        attempt_id = store.submit(trainee, session, score, digest)
    return attempt_id, score
