"""Reading JSON with limits: size, nesting depth, integer digits, float range.

Python's :mod:`json` turns a hostile file into exceptions that are not
:class:`~workbench.errors.WorkbenchError` (``RecursionError`` for deep nesting, ``ValueError:
Exceeds the limit (4300 digits)`` for a huge integer) or into values no reader expects (``1e999``
becomes infinity, ``NaN`` is accepted). :func:`read_json_limited` refuses all of these with the
caller's error type, naming the file; case.json, plan.json, Slicer markups, label tables and
ground-truth files are all read through it.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError
from workbench.io.paths import require_regular_file

__all__ = ["MAX_JSON_BYTES", "MAX_JSON_DEPTH", "MAX_INT_DIGITS", "parse_json_limited", "read_json_limited"]

#: largest JSON file read (bytes); a case.json of a long study is well under 1 MiB
MAX_JSON_BYTES = 32 << 20
#: deepest nesting of arrays and objects accepted (the schemas nest fewer than 10 levels)
MAX_JSON_DEPTH = 64
#: most digits of an integer literal (a 64-bit integer has 19-20)
MAX_INT_DIGITS = 24

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


class _Refused(Exception):
    """Raised by the parse hooks; turned into the caller's WorkbenchError."""


def _parse_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise _Refused(f"an integer with {digits} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"number {text[:30]} is too large for a float")
    return value


def _parse_constant(name: str):
    raise _Refused(f"{name}; NaN or infinity is not a JSON number")


_CONSTANTS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _depth(data: bytes) -> int:
    """Deepest nesting of ``[``/``{`` outside strings."""
    skeleton = np.frombuffer(_STRING.sub(b'""', data), dtype=np.uint8)
    steps = np.zeros(skeleton.shape, dtype=np.int64)
    steps[(skeleton == ord("[")) | (skeleton == ord("{"))] = 1
    steps[(skeleton == ord("]")) | (skeleton == ord("}"))] = -1
    return int(np.max(np.cumsum(steps), initial=0))


def parse_json_limited(
    data: bytes,
    path: str | os.PathLike | None = None,
    *,
    error: type[WorkbenchError] = WorkbenchError,
    what: str = "JSON file",
    max_bytes: int = MAX_JSON_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
    keep_non_finite: bool = False,
) -> Any:
    """Parse JSON ``data`` (UTF-8 bytes) within the limits; see :func:`read_json_limited`."""
    if len(data) > max_bytes:
        raise error(f"{what} is {len(data)} bytes, more than the {max_bytes} accepted", path)
    depth = _depth(data)
    if depth > max_depth:
        raise error(f"{what} nests {depth} levels deep (at most {max_depth})", path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{what} is not UTF-8 text", path) from None
    try:
        if keep_non_finite:
            return json.loads(text, parse_int=_parse_int, parse_constant=_CONSTANTS.__getitem__)
        return json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
    except _Refused as exc:
        raise error(f"{what} holds {exc}", path) from None
    except json.JSONDecodeError as exc:
        raise error(f"{what} is not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", path) from None
    except RecursionError:  # the depth scan bounds this; kept as a last guard
        raise error(f"{what} nests too deeply", path) from None


def read_json_limited(
    path: str | os.PathLike,
    *,
    error: type[WorkbenchError] = WorkbenchError,
    what: str = "JSON file",
    max_bytes: int = MAX_JSON_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
    keep_non_finite: bool = False,
) -> Any:
    """Read a JSON file with limits, every failure as ``error`` naming ``path``.

    Parameters
    ----------
    path : str or path-like
        A regular file (a FIFO or device is refused before it is opened).
    error : type of WorkbenchError
        The error class raised (``CaseBundleError``, ``PlanError``...).
    what : str
        How the message names the file ("case.json", "markups file").
    max_bytes, max_depth : int
        Largest file size and deepest nesting accepted.
    keep_non_finite : bool
        Parse ``NaN``, ``Infinity`` and overflowing floats as non-finite floats instead of
        refusing them, for a caller that checks every number itself and names its JSON path
        (case.json).

    Returns
    -------
    object
        The parsed document. Integers have at most :data:`MAX_INT_DIGITS` digits; floats are
        finite (``1e999``, ``NaN`` and ``Infinity`` are refused).

    Raises
    ------
    WorkbenchError
        (``error``) Missing or special file, too large, too deep, not UTF-8, invalid JSON,
        a huge integer or a float overflow.
    """
    path = require_regular_file(Path(path), error, what)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise error(f"{what} is {size} bytes, more than the {max_bytes} accepted", path)
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise error(f"cannot read {what} ({exc.strerror or exc})", path) from None
    return parse_json_limited(
        data, path, error=error, what=what, max_bytes=max_bytes, max_depth=max_depth, keep_non_finite=keep_non_finite
    )
