"""The results store: every submitted attempt, in SQLite (default) or PostgreSQL.

:func:`open_store` takes a SQLAlchemy URL (``sqlite:///path/results.sqlite``,
``postgresql+psycopg://user@host/db``; ``postgresql://`` is read as psycopg 3) or a plain file
path (SQLite), creates the database schema or brings it up to date with the Alembic migrations
shipped in ``workbench/teaching/migrations`` (run in code: no alembic.ini), and returns a
:class:`ResultsStore`.

- SQLite runs in WAL mode, set once when the store is created or first opened, under the lock
  file beside the database that also serialises migrations (switching the journal mode while
  another process reads fails at once, without waiting); every connection has a 30 s busy
  timeout and takes the write lock at the start of each write (``BEGIN IMMEDIATE``), so
  concurrent openers and trainees' submissions queue instead of failing.
- PostgreSQL serialises migrations with an advisory lock; inserts need no more.
- No PHI, ever: a trainee is a pseudonym (:func:`check_pseudonym`, or :func:`pseudonym` to hash
  a name with a session secret), the plan itself is not stored (only its SHA-256 and the
  metrics), and no DICOM attribute is a column.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import re
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

from workbench import __version__
from workbench._atomic import atomic_write_text
from workbench.teaching import TeachingError

__all__ = [
    "ATTEMPT_KINDS",
    "DEFAULT_DB_NAME",
    "METADATA",
    "ResultsStore",
    "check_pseudonym",
    "check_session",
    "database_url",
    "migrate",
    "open_store",
    "pseudonym",
]

#: Attempt kinds: a submitted plan, or a rehearsal attempt (issue 18; scored on its metrics.json).
ATTEMPT_KINDS = ("plan", "rehearsal")
#: Plan-geometry columns: NULL for a rehearsal attempt (migration 0002).
PLAN_GEOMETRY_COLUMNS = ("angle_deviation_deg", "offset_at_entry_mm", "offset_at_target_mm", "offset_mm")
#: The SQLite file of a library's results (beside ``library.json``).
DEFAULT_DB_NAME = "results.sqlite"
#: Alembic's version table of the store (its own name: the database may serve other applications).
VERSION_TABLE = "workbench_teaching_alembic_version"
_PSEUDONYM = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_SESSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
#: A pseudonym that looks like a person's name (two capitalised words joined) is refused too.
_NAME_LIKE = re.compile(r"[A-Z][a-z]+[._-][A-Z][a-z]+")

METADATA = sa.MetaData()
ATTEMPTS = sa.Table(
    "attempts",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("trainee", sa.String(32), nullable=False),
    sa.Column("session", sa.String(64), nullable=False),
    sa.Column("case_id", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("submitted_utc", sa.DateTime(timezone=True), nullable=False),
    sa.Column("task", sa.String(128), nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("passed", sa.Boolean, nullable=False),
    sa.Column("wrong_level", sa.Boolean, nullable=False),
    sa.Column("wrong_side", sa.Boolean, nullable=False),
    sa.Column("angle_deviation_deg", sa.Float, nullable=True),
    sa.Column("offset_at_entry_mm", sa.Float, nullable=True),
    sa.Column("offset_at_target_mm", sa.Float, nullable=True),
    sa.Column("offset_mm", sa.Float, nullable=True),
    sa.Column("safety_status", sa.String(16), nullable=False),
    sa.Column("plan_sha256", sa.String(64), nullable=False),
    sa.Column("metrics_json", sa.Text, nullable=False),
    sa.Column("software", sa.String(64), nullable=False),
)
#: Columns of :meth:`ResultsStore.results` rows and of the CSV export, in order.
RESULT_COLUMNS = tuple(c.name for c in ATTEMPTS.columns if c.name != "metrics_json")


def check_pseudonym(trainee: str) -> str:
    """``trainee`` if it is a pseudonym: 1-32 letters, digits, ``_ . -``, no spaces, no ``@``,
    not ``First.Last``-like. Else :class:`TeachingError` (hash a name with :func:`pseudonym`)."""
    if not isinstance(trainee, str) or not _PSEUDONYM.fullmatch(trainee) or _NAME_LIKE.fullmatch(trainee):
        raise TeachingError(
            f"trainee id {trainee!r} is not a pseudonym: use 1-32 letters, digits, '_', '.', '-' "
            "(no spaces, e-mail addresses or names; e.g. t07, or `pseudonym(name, secret)`)"
        )
    return trainee


def pseudonym(name: str, secret: str) -> str:
    """A stable pseudonym ``t-<12 hex>`` for ``name`` (HMAC-free SHA-256 of secret and name); the
    teacher keeps the secret, the store never sees the name."""
    if not secret:
        raise TeachingError("a pseudonym needs a non-empty secret (kept by the teacher)")
    return "t-" + hashlib.sha256(f"{secret}\x00{name.strip().lower()}".encode()).hexdigest()[:12]


def check_session(session: str) -> str:
    """``session`` if it is a session id (1-64 letters, digits, ``_ . : -``), else :class:`TeachingError`."""
    if not isinstance(session, str) or not _SESSION.fullmatch(session):
        raise TeachingError(f"session {session!r} must be 1-64 letters, digits, '_', '.', ':', '-'")
    return session


def database_url(db: str | Path) -> str:
    """The SQLAlchemy URL of ``db``: a URL is kept (``postgresql://`` becomes
    ``postgresql+psycopg://``); anything else is a SQLite file path."""
    text = str(db)
    if "://" not in text:
        return f"sqlite:///{Path(text).expanduser().resolve()}"
    if text.startswith("postgresql://") or text.startswith("postgres://"):
        return "postgresql+psycopg://" + text.split("://", 1)[1]
    if not (text.startswith("sqlite") or text.startswith("postgresql+")):
        raise TeachingError(f"unsupported results database {text.split('://')[0]!r}: use a SQLite file or postgresql://")
    return text


#: How long a SQLite connection waits for another's lock before "database is locked", ms.
SQLITE_BUSY_TIMEOUT_MS = 30_000


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    """Every SQLite connection: autocommit driver (SQLAlchemy's begin event issues ``BEGIN
    IMMEDIATE``), the busy timeout first (so nothing after it fails at once on a lock), then
    ``synchronous=NORMAL`` (safe in WAL mode). The journal mode is NOT set here: switching a file
    to WAL takes an exclusive lock that SQLite refuses at once, without its busy handler, while
    another connection reads; it is set once, under the migration lock (:func:`_ensure_wal`)."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _ensure_wal(connection: sa.Connection) -> None:
    """Put the SQLite file of ``connection`` in WAL mode (persistent in the file) unless it is.

    Called under the migration lock before anything runs on the connection (no transaction
    open: the mode cannot change inside one); WAL lets readers and one writer work at once.
    """
    cursor = connection.connection.driver_connection.cursor()
    try:
        mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            mode = cursor.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise TeachingError(f"the SQLite results database cannot use WAL mode (journal mode {mode!r})")
    finally:
        cursor.close()


def _engine(url: str) -> sa.Engine:
    try:
        if url.startswith("sqlite"):
            engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
            sa.event.listen(engine, "connect", _sqlite_pragmas)
            sa.event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
            return engine
        return sa.create_engine(url, pool_pre_ping=True)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise TeachingError(f"cannot use results database URL ({exc})") from None


@contextmanager
def _migration_lock(engine: sa.Engine, connection: sa.Connection):
    if engine.dialect.name == "sqlite":
        path = Path(engine.url.database or "results.sqlite").with_suffix(".migrate.lock")
        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    elif engine.dialect.name == "postgresql":
        connection.exec_driver_sql("SELECT pg_advisory_lock(190019)")
        try:
            yield
        finally:
            connection.exec_driver_sql("SELECT pg_advisory_unlock(190019)")
    else:
        yield


def migrate(engine: sa.Engine, revision: str = "head") -> None:
    """Upgrade the database of ``engine`` to ``revision`` with the packaged Alembic scripts."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    with engine.connect() as connection:
        with _migration_lock(engine, connection):
            if engine.dialect.name == "sqlite":
                _ensure_wal(connection)
            if engine.dialect.name == "postgresql":
                connection.commit()
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
            connection.commit()


def open_store(db: str | Path) -> "ResultsStore":
    """Open (creating or migrating) the results database ``db`` (URL or SQLite file path).

    Raises
    ------
    TeachingError
        An unsupported URL, or the database cannot be reached or migrated.
    """
    url = database_url(db)
    if url.startswith("sqlite:///"):
        folder = Path(url[len("sqlite:///"):]).parent
        if not folder.is_dir():
            raise TeachingError("folder of the SQLite results database does not exist", folder)
    engine = _engine(url)
    from alembic.util import CommandError

    try:
        migrate(engine)
    except sa.exc.OperationalError as exc:
        engine.dispose()
        raise TeachingError(f"cannot open the results database ({str(exc.orig).strip().splitlines()[0]})") from None
    except CommandError as exc:
        engine.dispose()
        raise TeachingError(f"the results database's schema is not one this workbench knows ({exc})") from None
    return ResultsStore(engine)


@dataclass
class ResultsStore:
    """Submitted attempts in a database opened by :func:`open_store`."""

    engine: sa.Engine

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def submit(self, trainee: str, session: str, score, plan_sha256: str, *, kind: str | None = None,
               when: datetime | None = None) -> int:
        """Store one attempt and return its id.

        Parameters
        ----------
        trainee : str
            A pseudonym (:func:`check_pseudonym`).
        session : str
        score : workbench.teaching.score.PlanScore or RehearsalScore
        plan_sha256 : str
            SHA-256 of the submitted plan file, or of a rehearsal's ``metrics.json`` (the file
            itself is not stored: a plan may carry an author name).
        kind : str, optional
            One of :data:`ATTEMPT_KINDS`; default the score's ``attempt_kind``. A rehearsal
            attempt leaves the plan-geometry columns NULL (its metrics are in ``metrics_json``).
        when : datetime, optional
            UTC time of submission (default now).
        """
        check_pseudonym(trainee)
        check_session(session)
        kind = kind or getattr(score, "attempt_kind", "plan")
        if kind not in ATTEMPT_KINDS:
            raise TeachingError(f"attempt kind {kind!r} is not accepted; use one of {', '.join(ATTEMPT_KINDS)}")
        if kind != getattr(score, "attempt_kind", "plan"):
            raise TeachingError(f"a {getattr(score, 'attempt_kind', 'plan')} score cannot be stored as a {kind} attempt")
        if not re.fullmatch(r"[0-9a-f]{64}", plan_sha256):
            raise TeachingError("plan_sha256 must be 64 lower-case hex digits")
        document = score.to_dict()
        row = {
            "trainee": trainee,
            "session": session,
            "case_id": score.case_id,
            "kind": kind,
            "submitted_utc": when or datetime.now(timezone.utc),
            "task": score.task,
            "score": float(score.score),
            "passed": bool(score.passed),
            "wrong_level": bool(score.wrong_level),
            "wrong_side": bool(score.wrong_side),
            **{name: (float(score.metrics[name]) if kind == "plan" else None) for name in PLAN_GEOMETRY_COLUMNS},
            "safety_status": score.safety_status,
            "plan_sha256": plan_sha256,
            "metrics_json": json.dumps(document, sort_keys=True, allow_nan=False),
            "software": f"workbench {__version__}"[:64],
        }
        with self.engine.begin() as connection:
            result = connection.execute(ATTEMPTS.insert().values(**row))
            return int(result.inserted_primary_key[0])

    def results(self, session: str | None = None) -> list[dict]:
        """Every attempt (of ``session``), oldest first: dicts with :data:`RESULT_COLUMNS` and
        ``metrics`` (the full score document)."""
        query = sa.select(ATTEMPTS).order_by(ATTEMPTS.c.submitted_utc, ATTEMPTS.c.id)
        if session is not None:
            query = query.where(ATTEMPTS.c.session == session)
        with self.engine.connect() as connection:
            rows = [dict(r._mapping) for r in connection.execute(query)]
        for row in rows:
            row["metrics"] = json.loads(row.pop("metrics_json"))
            when = row["submitted_utc"]
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
            row["submitted_utc"] = when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return rows

    def results_csv(self, session: str | None = None) -> str:
        """:meth:`results` as CSV text (one row per attempt, :data:`RESULT_COLUMNS`)."""
        return results_to_csv(self.results(session))

    def write_csv(self, path: str | Path, session: str | None = None) -> Path:
        path = Path(path)
        atomic_write_text(path, self.results_csv(session))
        return path


def results_to_csv(rows: list[dict]) -> str:
    """CSV text of result rows (:data:`RESULT_COLUMNS`; units in the column names)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(RESULT_COLUMNS)
    for row in rows:
        writer.writerow([row[c] for c in RESULT_COLUMNS])
    return buffer.getvalue()
