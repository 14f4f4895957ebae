"""The procedure log: one row per procedure, its schema, validation, loading, saving and appending.

The log is a tidy table (CSV, or Parquet through ``pyarrow``) whose columns are
those of :data:`LOG_COLUMNS`, in any order. Identifiers are pseudonymous (case-id pattern
``^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$``); a column the schema does not know is refused, so no
name, birth date or other identifier can ride along. Columns, units and ranges: ``docs/outcomes.md``.
"""

from __future__ import annotations

import io
import math
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from workbench._atomic import atomic_open, atomic_write_bytes
from workbench.errors import OutcomesError

__all__ = [
    "ADVERSE_EVENT_VALUES",
    "DISEASE_TYPES",
    "ID_PATTERN",
    "LOG_COLUMNS",
    "LogColumn",
    "SEXES",
    "append_procedure",
    "empty_log",
    "load_log",
    "procedure_row",
    "save_log",
    "validate_log",
]

#: Pattern of every identifier in the log (the case-id pattern of case bundles).
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_GROUP_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")
_UTC_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")

#: Disease types the study enrolled (one-hot encoded in the propensity model).
DISEASE_TYPES = ("lumbar_disc_herniation", "radiculopathy", "postherpetic_neuralgia")
#: Sex as recorded in the log (a covariate, not an identifier of its own).
SEXES = ("F", "M")
#: ``adverse_event``: 0 no adverse event, 1 at least one.
ADVERSE_EVENT_VALUES = (0, 1)


@dataclass(frozen=True)
class LogColumn:
    """One column of the procedure log.

    Attributes
    ----------
    name : str
    kind : str
        ``"id"`` (pseudonymous identifier), ``"utc"`` (ISO 8601 UTC time), ``"label"``
        (group label), ``"category"`` (one of ``allowed``), ``"number"`` (float in
        [``minimum``, ``maximum``]) or ``"flag"`` (0 or 1).
    unit : str
        Unit of a number, ``""`` otherwise.
    required : bool
        Must be present and filled in every row. Outcomes may be empty until known.
    minimum, maximum : float or None
        Inclusive range of a number.
    allowed : tuple of str
        Values of a category.
    description : str
    """

    name: str
    kind: str
    unit: str = ""
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    allowed: tuple[str, ...] = ()
    description: str = ""

    def range_text(self) -> str:
        """The allowed values, e.g. ``"0-10"`` or ``"F, M"``."""
        if self.kind == "number":
            return f"{self.minimum:g}-{self.maximum:g}"
        if self.kind in ("category", "flag"):
            return ", ".join(str(a) for a in (self.allowed or ADVERSE_EVENT_VALUES))
        if self.kind == "id":
            return "pseudonymous id " + ID_PATTERN.pattern
        if self.kind == "utc":
            return "YYYY-MM-DDThh:mm:ssZ"
        return _GROUP_PATTERN.pattern


#: The log's columns, in the order files are written.
LOG_COLUMNS: tuple[LogColumn, ...] = (
    LogColumn("procedure_id", "id", required=True, description="pseudonymous id of the procedure, unique in the log"),
    LogColumn("patient_id", "id", required=True, description="pseudonymous id of the patient"),
    LogColumn("case_id", "id", description="case bundle the procedure was planned in"),
    LogColumn("plan_id", "id", description="plan used"),
    LogColumn("procedure_utc", "utc", description="time of the procedure, ISO 8601 UTC"),
    LogColumn("group", "label", required=True, description="guidance, e.g. fusion or us"),
    LogColumn("sex", "category", required=True, allowed=SEXES, description="covariate"),
    LogColumn("age_years", "number", "years", True, 18, 110, description="covariate"),
    LogColumn("disease_duration_weeks", "number", "weeks", True, 0, 2600, description="covariate"),
    LogColumn("bmi_kg_m2", "number", "kg/m^2", True, 12, 70, description="covariate"),
    LogColumn("disease_type", "category", required=True, allowed=DISEASE_TYPES, description="covariate (one-hot)"),
    LogColumn("nrs_baseline", "number", "NRS points", True, 0, 10, description="pain before the block; covariate"),
    LogColumn("nrs_1h", "number", "NRS points", False, 0, 10, description="pain 1 h after the block"),
    LogColumn("nrs_7d", "number", "NRS points", False, 0, 10, description="pain 7 days after the block"),
    LogColumn("operation_time_s", "number", "s", False, 1, 14400, description="from skin preparation to needle out"),
    LogColumn(
        "gabapentin_before_g_per_day", "number", "g/day", False, 0, 4.8, description="mean daily gabapentin dose before"
    ),
    LogColumn(
        "gabapentin_after_g_per_day", "number", "g/day", False, 0, 4.8, description="mean daily gabapentin dose after"
    ),
    LogColumn("adverse_event", "flag", description="1 if any adverse event, else 0"),
)
_BY_NAME = {c.name: c for c in LOG_COLUMNS}
COLUMN_NAMES = tuple(c.name for c in LOG_COLUMNS)


def empty_log() -> pd.DataFrame:
    """A log with every column and no rows (dtypes as :func:`validate_log` returns them)."""
    return validate_log(pd.DataFrame({name: pd.Series([], dtype=object) for name in COLUMN_NAMES}))


def _where(row: int, csv: bool) -> str:
    return f"row {row + 1} (line {row + 2})" if csv else f"row {row + 1}"


def _blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, str) and value.strip() == ""


def validate_log(frame: pd.DataFrame, source: str | os.PathLike | None = None, *, csv: bool = False) -> pd.DataFrame:
    """Check a raw table against :data:`LOG_COLUMNS` and return it typed.

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per procedure; cells may be strings (as read from CSV) or typed values.
    source : path, optional
        The file the table came from, named in errors.
    csv : bool
        Rows came from a CSV with a header line: errors also give the file's line number.

    Returns
    -------
    pandas.DataFrame
        Columns in :data:`COLUMN_NAMES` order; ids, labels, categories and times as ``object``
        (``None`` where empty), numbers as ``float64`` (NaN where empty), ``adverse_event``
        as ``Int64`` (``<NA>`` where empty).

    Raises
    ------
    OutcomesError
        Naming the file, the row (1-based data row; for CSV also the line) and the column of
        up to five problems: unknown or missing columns, empty required cells, values that
        are not numbers, out of range, not allowed, ids that are not pseudonymous, repeated
        procedure ids.
    """
    problems: list[str] = []
    unknown = [str(c) for c in frame.columns if c not in _BY_NAME]
    if unknown:
        raise OutcomesError(
            f"unknown column(s) {', '.join(repr(c) for c in unknown)}: the log holds only the columns of "
            f"docs/outcomes.md ({', '.join(COLUMN_NAMES)}), never names or other identifiers",
            source,
        )
    missing = [c.name for c in LOG_COLUMNS if c.required and c.name not in frame.columns]
    if missing:
        raise OutcomesError(f"missing required column(s) {', '.join(repr(c) for c in missing)}", source)
    frame = frame.reset_index(drop=True)
    out: dict[str, Any] = {}
    for column in LOG_COLUMNS:
        values = list(frame[column.name]) if column.name in frame.columns else [None] * len(frame)
        typed: list[Any] = []
        for row, value in enumerate(values):
            where = f"{_where(row, csv)}, column {column.name!r}"
            if _blank(value):
                if column.required:
                    problems.append(f"{where}: empty, but the column is required")
                typed.append(None if column.kind not in ("number",) else math.nan)
                continue
            parsed, problem = _parse(column, value)
            if problem:
                problems.append(f"{where}: {problem}")
            typed.append(parsed)
        if column.kind == "number":
            out[column.name] = pd.Series(np.array([v if v is not None else math.nan for v in typed], dtype=float))
        elif column.kind == "flag":
            out[column.name] = pd.Series(typed, dtype="Int64")
        else:
            out[column.name] = pd.Series(typed, dtype=object)
    if not problems:
        ids = out["procedure_id"]
        repeated = ids[ids.duplicated(keep=False)]
        if len(repeated):
            first = repeated.iloc[0]
            rows = [_where(i, csv) for i in repeated.index[repeated == first]]
            problems.append(f"column 'procedure_id': {first!r} is repeated in {', '.join(rows)}")
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise OutcomesError("; ".join(problems[:5]) + more, source)
    return pd.DataFrame(out, columns=list(COLUMN_NAMES))


def _parse(column: LogColumn, value: Any) -> tuple[Any, str | None]:
    """``(typed value, None)`` or ``(None, what is wrong)``."""
    text = value.strip() if isinstance(value, str) else value
    if column.kind == "number":
        try:
            number = float(text)
        except (TypeError, ValueError):
            return None, f"{value!r} is not a number ({column.unit})"
        if not math.isfinite(number):
            return None, f"{value!r} is not a finite number ({column.unit})"
        if not (column.minimum <= number <= column.maximum):
            return None, f"{number:g} is outside {column.range_text()} {column.unit}"
        return number, None
    if column.kind == "flag":
        try:
            number = float(text)
        except (TypeError, ValueError):
            number = math.nan
        if number not in (0.0, 1.0):
            return None, f"{value!r} is not 0 or 1"
        return int(number), None
    text = str(text)
    if column.kind == "category":
        if text not in column.allowed:
            return None, f"{text!r} is not one of {', '.join(column.allowed)}"
        return text, None
    if column.kind == "id":
        if not ID_PATTERN.match(text):
            return None, f"{text!r} is not a pseudonymous id (letters, digits, '_' and '-', at most 64)"
        return text, None
    if column.kind == "utc":
        if not _UTC_PATTERN.match(text):
            return None, f"{text!r} is not an ISO 8601 UTC time such as 2024-05-01T09:30:00Z"
        return text, None
    if not _GROUP_PATTERN.match(text):
        return None, f"{text!r} is not a group label (a letter, then letters, digits, '_' or '-')"
    return text, None


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def _require_pyarrow(path: Path) -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise OutcomesError("Parquet logs need pyarrow, which is not installed; use a CSV log", path) from None


def load_log(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate a procedure log (``.csv`` or ``.parquet``).

    Returns
    -------
    pandas.DataFrame
        As :func:`validate_log` returns it.

    Raises
    ------
    OutcomesError
        The file is missing, unreadable or fails :func:`validate_log`.
    """
    path = Path(path)
    if not path.is_file():
        raise OutcomesError("no such procedure log", path)
    if _is_parquet(path):
        _require_pyarrow(path)
        try:
            raw = pd.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many types on a corrupt file
            raise OutcomesError(f"not a readable Parquet file ({exc})", path) from None
        return validate_log(raw.astype(object), path)
    try:
        raw = pd.read_csv(
            path, dtype=str, keep_default_na=False, na_filter=False, skipinitialspace=True, encoding="utf-8-sig"
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise OutcomesError(f"not a readable CSV table ({str(exc).strip().splitlines()[0]})", path) from None
    return validate_log(raw.astype(object), path, csv=True)


def save_log(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Validate ``frame`` and write it atomically as CSV (or Parquet by the suffix); returns the path."""
    path = Path(path)
    typed = validate_log(frame, path)
    if _is_parquet(path):
        _require_pyarrow(path)
        buffer = io.BytesIO()
        typed.to_parquet(buffer, index=False)
        atomic_write_bytes(path, buffer.getvalue())
    else:
        with atomic_open(path, "w") as fh:
            typed.to_csv(fh, index=False, lineterminator="\n", float_format="%.10g")
    return path


def procedure_row(
    plan=None,
    case=None,
    *,
    group: str,
    patient_id: str | None = None,
    procedure_id: str | None = None,
    procedure_utc: str | None = None,
    **values: Any,
) -> dict[str, Any]:
    """One log row for a procedure done with a plan of a case.

    Parameters
    ----------
    plan : workbench.planning.model.Plan, optional
        Gives ``plan_id``.
    case : workbench.case.Case, optional
        Gives ``case_id``, and ``patient_id`` unless given (case ids are pseudonymous).
    group : str
        E.g. ``"fusion"``.
    patient_id, procedure_id : str, optional
        Pseudonymous ids; ``procedure_id`` defaults to ``<plan or case id>-<procedure time>``.
    procedure_utc : str, optional
        ISO 8601 UTC time; defaults to now.
    **values
        Other columns of :data:`LOG_COLUMNS` (covariates now, outcomes when known).

    Returns
    -------
    dict
        Column name to value; validate with :func:`validate_log` (done by :func:`append_procedure`).
    """
    unknown = sorted(set(values) - set(COLUMN_NAMES))
    if unknown:
        raise OutcomesError(f"unknown log column(s) {', '.join(unknown)}; known: {', '.join(COLUMN_NAMES)}")
    now = procedure_utc or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    plan_id = getattr(plan, "plan_id", None)
    case_id = getattr(case, "case_id", None)
    if procedure_id is None:
        stem = plan_id or case_id or "procedure"
        procedure_id = f"{stem}-{re.sub(r'[^0-9]', '', now)[:14]}"[:64]
    row = {name: None for name in COLUMN_NAMES}
    row.update(values)
    row.update(
        procedure_id=procedure_id,
        patient_id=patient_id or case_id,
        case_id=case_id,
        plan_id=plan_id,
        procedure_utc=now,
        group=group,
    )
    return row


def append_procedure(path: str | os.PathLike, row: Mapping[str, Any]) -> pd.DataFrame:
    """Append ``row`` (see :func:`procedure_row`) to the log at ``path``, creating it if absent.

    The log is validated with the new row and saved atomically: a bad row leaves the file as it was.

    Returns
    -------
    pandas.DataFrame
        The new log, typed.
    """
    path = Path(path)
    log = load_log(path) if path.exists() else empty_log()
    unknown = sorted(set(row) - set(COLUMN_NAMES))
    if unknown:
        raise OutcomesError(f"unknown log column(s) {', '.join(unknown)}", path)
    new = pd.DataFrame([{name: row.get(name) for name in COLUMN_NAMES}], dtype=object)
    combined = pd.concat([log.astype(object), new], ignore_index=True) if len(log) else new
    combined = validate_log(combined, path)
    save_log(combined, path)
    return combined
