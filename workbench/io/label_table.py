"""Label tables: which label value names which structure, read from and written to files.

A label map on disk (NIfTI/NRRD) carries its names in a sidecar ``<file>.labels.json``::

    {"labels": [{"value": 1, "name": "vertebra_L4"}, {"value": 2, "name": "spinous_process_L4"}]}

Names are label-table names of :mod:`workbench.anatomy` (a vocabulary class, optionally with a
vertebral level and side; :func:`workbench.anatomy.parse_label_name`) or foreign names with a
declared mapping (:data:`workbench.anatomy.FOREIGN_NAMES`, e.g. TotalSegmentator's
``vertebrae_L4``). Anything else is refused, never guessed.

Inputs read by :func:`read_label_table`: that JSON; CSV (``value,name`` rows, an optional header
naming the columns, e.g. 3D Slicer's CSV colour table ``LabelValue,Name,Color_R,Color_G,...``);
ITK-SNAP label description files (``IDX R G B A VIS MSH "LABEL"``); 3D Slicer colour tables
(``.ctbl``/``.txt``: ``value name r g b a``). Lines starting with ``#`` are comments.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shlex
from pathlib import Path
from typing import Mapping

from workbench._atomic import atomic_write_text
from workbench.anatomy import LabelMapError, resolve_label_name
from workbench.io.json_io import parse_json_limited

__all__ = ["SIDECAR_SUFFIX", "read_label_table", "read_raw_label_table", "sidecar_path", "write_label_table"]

#: Suffix of a label map's sidecar table: ``labels.nrrd`` -> ``labels.nrrd.labels.json``.
SIDECAR_SUFFIX = ".labels.json"


def sidecar_path(label_map_path: str | os.PathLike) -> Path:
    """The sidecar table of a label map file: ``<file>.labels.json``."""
    path = Path(label_map_path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def _error(path: Path, problem: str) -> LabelMapError:
    return LabelMapError(f"{path}: {problem}")


def _value(text: str, path: Path, line: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise _error(path, f"line {line}: label value {text!r} is not an integer") from None
    if value < 0:
        raise _error(path, f"line {line}: label value {value} is negative")
    return value


def _add(table: dict[int, str], value: int, name: str, path: Path, where: str) -> None:
    if value in table:
        raise _error(path, f"{where}: label value {value} is named twice ({table[value]!r} and {name!r})")
    if not name.strip():
        raise _error(path, f"{where}: label value {value} has no name")
    table[value] = name.strip()


def _read_json(text: str, path: Path) -> dict[int, str]:
    document = parse_json_limited(text.encode("utf-8"), path, error=LabelMapError, what="label table")  # bounded
    entries = document.get("labels") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise _error(path, 'a label table JSON needs {"labels": [{"value": int, "name": str}, ...]}')
    table: dict[int, str] = {}
    for index, entry in enumerate(entries):
        value = entry.get("value") if isinstance(entry, dict) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0 or not isinstance(name, str):
            raise _error(path, f"labels[{index}] needs an integer value >= 0 and a string name, got {entry!r}")
        _add(table, value, name, path, f"labels[{index}]")
    return table


_VALUE_COLUMNS = ("value", "labelvalue", "label_value", "index", "idx", "label")
_NAME_COLUMNS = ("name", "labelname", "label_name", "structure", "label")


def _read_csv(text: str, path: Path) -> dict[int, str]:
    """``value,name`` rows; a header row picks the columns (3D Slicer's ``LabelValue,Name,Color_R,...`` too)."""
    table: dict[int, str] = {}
    value_column, name_column = 0, 1
    seen_row = False
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if not seen_row:
            seen_row = True
            header = [cell.strip().lower() for cell in row]
            if not header[0].lstrip("-").isdigit():  # a header row
                value_column = next((header.index(c) for c in _VALUE_COLUMNS if c in header), -1)
                name_column = next((header.index(c) for c in _NAME_COLUMNS if c in header and header.index(c) != value_column), -1)
                if value_column < 0 or name_column < 0:
                    raise _error(path, f"line {number}: a CSV label table header needs a value column "
                                       f"({'/'.join(_VALUE_COLUMNS[:3])}) and a name column, got {row}")
                continue
        if len(row) <= max(value_column, name_column):
            raise _error(path, f"line {number}: a CSV label table needs value,name rows")
        _add(table, _value(row[value_column].strip(), path, number), row[name_column], path, f"line {number}")
    return table


_ITKSNAP_LINE = re.compile(r'^\s*(-?\d+)\s+(-?\d+)\s+(-?\d+)\s+(-?\d+)\s+([-\d.eE+]+)\s+(\d+)\s+(\d+)\s+"(.*)"\s*$')


def _read_text_table(text: str, path: Path) -> dict[int, str]:
    """ITK-SNAP label description or Slicer colour table, told apart line by line."""
    table: dict[int, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        snap = _ITKSNAP_LINE.match(line)
        if snap:
            _add(table, _value(snap.group(1), path, number), snap.group(8), path, f"line {number}")
            continue
        try:
            fields = shlex.split(stripped)
        except ValueError as exc:
            raise _error(path, f"line {number}: {exc}") from None
        if len(fields) != 6 or not all(f.lstrip("-").isdigit() for f in fields[2:]):
            raise _error(
                path,
                f"line {number}: neither an ITK-SNAP label line (IDX R G B A VIS MSH \"LABEL\") "
                "nor a Slicer colour table line (value name r g b a)",
            )
        _add(table, _value(fields[0], path, number), fields[1], path, f"line {number}")
    return table


def read_raw_label_table(path: str | os.PathLike) -> dict[int, str]:
    """The label table of a file as written (value -> name), names not yet checked.

    Parameters
    ----------
    path : str or path-like
        ``.json`` (sidecar form), ``.csv``, or an ITK-SNAP label description / Slicer colour
        table (any other ending, e.g. ``.txt``, ``.ctbl``, ``.label``).

    Raises
    ------
    LabelMapError
        Missing or unreadable file, malformed line (named), a value named twice, an empty table.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise _error(path, "no such label table file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _error(path, f"cannot read the label table ({exc})") from None
    name = path.name.lower()
    if name.endswith(".json"):
        table = _read_json(text, path)
    elif name.endswith(".csv"):
        table = _read_csv(text, path)
    else:
        table = _read_text_table(text, path)
    if not table:
        raise _error(path, "the label table names no label")
    return table


def read_label_table(path: str | os.PathLike) -> dict[int, str]:
    """Read a label table; return value -> label-table name in the workbench's words.

    Every name is translated by :func:`workbench.anatomy.resolve_label_name` (vocabulary names,
    with level and side, or foreign names with a declared mapping) and written back as
    ``"vertebra_L4"``-style names, ready for :class:`workbench.anatomy.LabelMap`.

    Raises
    ------
    LabelMapError
        As :func:`read_raw_label_table`, or a name the vocabulary lacks (naming the file, value and name).
    """
    path = Path(path)
    table = {}
    for value, name in read_raw_label_table(path).items():
        try:
            table[value] = str(resolve_label_name(name))
        except LabelMapError as exc:
            raise _error(path, f"label value {value}: {exc}") from None
    return table


def write_label_table(table: Mapping[int, str], path: str | os.PathLike) -> Path:
    """Write ``table`` (value -> label-table name) as sidecar JSON, atomically; return ``path``.

    Names are checked and normalised (:func:`workbench.anatomy.resolve_label_name`), values
    sorted. Raises :class:`LabelMapError` on a name the vocabulary lacks or a non-integer value.
    """
    path = Path(path)
    entries = []
    for value, name in sorted(table.items()):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _error(path, f"label value {value!r} is not an integer >= 0")
        entries.append({"value": int(value), "name": str(resolve_label_name(name))})
    if not entries:
        raise _error(path, "the label table names no label")
    lines = ",\n".join("  " + json.dumps(entry) for entry in entries)
    atomic_write_text(path, '{"labels": [\n' + lines + "\n]}\n")
    return path
