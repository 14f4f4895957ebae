"""Teaching sessions: a case library, trainee-vs-expert scores, a results store, the teacher's view.

- :mod:`workbench.teaching.library`: ``workbench library build/list``, varied synthetic cases
  (ordinary case bundles) with expert plans and a difficulty rating;
- :mod:`workbench.teaching.score`: ``workbench score``, a trainee plan against the expert's,
  expert-anchored (z-scores against simulated expert records, pass thresholds);
- :mod:`workbench.teaching.store`: ``workbench submit/results``, every attempt in SQLite or
  PostgreSQL through SQLAlchemy with Alembic migrations; pseudonymous trainees, no PHI;
- :mod:`workbench.teaching.classview`: the teacher's view as data and static plots.

See docs/teaching.md. This layer sits above planning and below widgets (no UI toolkit here).
"""

from workbench.errors import WorkbenchError

__all__ = ["TeachingError"]


class TeachingError(WorkbenchError):
    """A case library, a plan to score, a trainee id or a results database is unusable."""
