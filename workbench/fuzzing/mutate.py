"""Mutations of input files with ``numpy.random`` only (no hypothesis at run time).

Three kinds, chosen per input:

- bytes: flip bits, overwrite, insert or delete a run, truncate, duplicate a chunk;
- header lines (``key = value`` / ``key: value`` text headers, XML attributes): replace a value by
  a hostile token (``NaN``, ``1e308``, ``-1``, ``0``, a 5000-digit integer...), delete or
  duplicate a line, inflate a list of numbers;
- JSON structure: replace a node by a hostile value or a value of another type, delete a key,
  nest deeply, then serialise (some serialisations keep hostile literals such as ``1e999``).

Every function is deterministic given the generator.
"""

from __future__ import annotations

import json
import re

import numpy as np

__all__ = ["HOSTILE_NUMBERS", "mutate_bytes", "mutate_header_text", "mutate_json", "mutate_xml_text", "pick"]

#: number-like tokens that broke or fooled readers before (as text)
HOSTILE_NUMBERS = (
    "0", "-0", "-1", "1", "2", "3", "4", "5", "1000", "65536", "4294967297", "-2147483649",
    "NaN", "nan", "inf", "-inf", "Infinity", "1e308", "-1e308", "1e999", "1e-320", "1e300", "1e-9",
    "0.5", "1e6", "1e12", "99999999999999999999", "9" * 5000, "0x10", "", " ", "abc", "1,2", "--1",
    "1e+308", "3.4e38", "1e-3", "100.0001", "10001",
)  # fmt: skip

_HOSTILE_TEXT = ("", "\x00", "\u00e9\u00e8", "A" * 5000, "../../etc/passwd", "%s%n", "\ud7ff", "True", "null")


def pick(rng: np.random.Generator, items):
    """One item of a non-empty sequence."""
    return items[int(rng.integers(len(items)))]


def mutate_bytes(data: bytes, rng: np.random.Generator, *, protect: int = 0, rounds: int | None = None) -> bytes:
    """``data`` with 1-4 random byte-level edits, leaving the first ``protect`` bytes alone."""
    buffer = bytearray(data)
    for _ in range(rounds or int(rng.integers(1, 5))):
        start = min(protect, len(buffer))
        span = len(buffer) - start
        kind = int(rng.integers(7))
        if span <= 0 or kind == 0:
            at = start + int(rng.integers(span + 1)) if span > 0 else len(buffer)
            buffer[at:at] = rng.integers(0, 256, int(rng.integers(1, 16)), dtype=np.uint8).tobytes()
        elif kind == 1:  # flip a bit
            at = start + int(rng.integers(span))
            buffer[at] ^= 1 << int(rng.integers(8))
        elif kind == 2:  # overwrite with an extreme byte run
            at = start + int(rng.integers(span))
            value = pick(rng, (0x00, 0xFF, 0x7F, 0x80))
            buffer[at : at + int(rng.integers(1, 9))] = bytes([value]) * int(rng.integers(1, 9))
        elif kind == 3:  # delete a run
            at = start + int(rng.integers(span))
            del buffer[at : at + int(rng.integers(1, 64))]
        elif kind == 4:  # truncate
            del buffer[start + int(rng.integers(span)) :]
        elif kind == 5:  # duplicate a chunk
            at = start + int(rng.integers(span))
            chunk = buffer[at : at + int(rng.integers(1, 256))]
            buffer[at:at] = chunk
        else:  # random byte
            at = start + int(rng.integers(span))
            buffer[at] = int(rng.integers(256))
    return bytes(buffer)


def _hostile_value(rng: np.random.Generator, original: str) -> str:
    kind = int(rng.integers(6))
    numbers = original.split()
    if kind <= 2 or not numbers:
        return pick(rng, HOSTILE_NUMBERS)
    if kind == 3:  # one number of a list replaced
        numbers[int(rng.integers(len(numbers)))] = pick(rng, HOSTILE_NUMBERS)
        return " ".join(numbers)
    if kind == 4:  # more or fewer numbers
        return " ".join(numbers * int(rng.integers(2, 400))) if rng.random() < 0.5 else " ".join(numbers[:-1])
    return pick(rng, _HOSTILE_TEXT)


def mutate_header_text(head: str, rng: np.random.Generator, *, separator: str = "=") -> str:
    """A ``key <separator> value`` text header with 1-3 line edits (values, deletions, duplicates)."""
    lines = head.split("\n")
    for _ in range(int(rng.integers(1, 4))):
        candidates = [i for i, line in enumerate(lines) if separator in line]
        if not candidates:
            break
        index = pick(rng, candidates)
        key, _, value = lines[index].partition(separator)
        kind = int(rng.integers(10))
        if kind <= 5:
            lines[index] = f"{key}{separator} {_hostile_value(rng, value.strip())}"
        elif kind == 6:
            del lines[index]
        elif kind == 7:
            lines.insert(index, lines[index])
        elif kind == 8:  # move a line elsewhere
            line = lines.pop(index)
            lines.insert(int(rng.integers(len(lines) + 1)), line)
        else:
            lines[index] = f"{pick(rng, _HOSTILE_TEXT)}{separator} {value}"
    return "\n".join(lines)


_ATTRIBUTE = re.compile(r'(\w+)="([^"]*)"')


def mutate_xml_text(text: str, rng: np.random.Generator) -> str:
    """An XML text with 1-3 attribute values replaced (numbers, lists, names) or structural edits."""
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(10))
        matches = list(_ATTRIBUTE.finditer(text))
        if kind <= 6 and matches:
            match = pick(rng, matches)
            value = _hostile_value(rng, match.group(2)).replace('"', "")
            value = value.replace("&", "&amp;").replace("<", "&lt;")
            text = text[: match.start(2)] + value + text[match.end(2) :]
        elif kind == 7:
            encoding = pick(rng, ("no-such-encoding", "utf-16", "latin-1", "ebcdic", "UTF-7", ""))
            text = re.sub(r"<\?xml[^>]*\?>", "", text, count=1)
            text = f'<?xml version="1.0" encoding="{encoding}"?>\n' + text
        elif kind == 8 and matches:  # delete an attribute
            match = pick(rng, matches)
            text = text[: match.start()] + text[match.end() :]
        else:  # duplicate an element line
            lines = text.split("\n")
            at = int(rng.integers(len(lines)))
            lines.insert(at, lines[at])
            text = "\n".join(lines)
    return text


def _nodes(value, parts=()):
    yield parts, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _nodes(item, (*parts, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nodes(item, (*parts, index))


class _Raw:
    """A literal JSON text inserted as is (huge integers, 1e999, NaN, deep nesting)."""

    def __init__(self, text: str):
        self.text = text


def _hostile_json(rng: np.random.Generator, original):
    kind = int(rng.integers(12))
    if kind == 0:
        return _Raw(pick(rng, ("1e999", "-1e999", "NaN", "Infinity", "9" * int(rng.integers(20, 6000)), "1" + "0" * 400)))
    if kind == 1:
        depth = int(rng.integers(50, 50000))
        return _Raw("[" * depth + "]" * depth)
    if kind == 2:
        return pick(rng, (None, True, False, "", "x", [], {}, 0, -1, 1.5, [0, 0, 0], {"a": 1}))
    if kind == 3 and isinstance(original, (int, float)) and not isinstance(original, bool):
        return original * float(pick(rng, (1e300, -1, 0, 1e6, 1e-12, 1.0001, 1e4)))
    if kind == 4 and isinstance(original, list):
        return original[:-1] if rng.random() < 0.5 else original + original
    if kind == 5 and isinstance(original, str):
        return pick(rng, _HOSTILE_TEXT)
    if kind == 6:
        return pick(rng, (1e308, -1e308, 5e-324, 2**63, -(2**63) - 1, 10**19, 1e12, 123456.789))
    if kind == 7 and isinstance(original, list):
        return [pick(rng, (1e300, "a", None, [1, 2, 3], float(rng.normal() * 1e5))) for _ in original]
    if kind == 8:
        return str(original)[:20]
    if kind == 9:
        return [original]
    if kind == 10 and isinstance(original, (int, float)) and not isinstance(original, bool):
        return original + float(rng.normal() * pick(rng, (1e-5, 1e-3, 0.1, 10.0, 1e4)))
    return {"x": original}


def _set(document, parts, value):
    if not parts:
        return value
    node = document
    for key in parts[:-1]:
        node = node[key]
    node[parts[-1]] = value
    return document


def _dumps(value) -> str:
    if isinstance(value, _Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {_dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_dumps(v) for v in value) + "]"
    if isinstance(value, float) and not np.isfinite(value):
        return "NaN" if np.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return json.dumps(value)


def mutate_json(document, rng: np.random.Generator) -> bytes:
    """A JSON document (parsed) with 1-3 structural edits, serialised to UTF-8 bytes."""
    document = json.loads(json.dumps(document))
    for _ in range(int(rng.integers(1, 4))):
        nodes = list(_nodes(document))
        parts, value = pick(rng, nodes)
        if parts and rng.random() < 0.15:  # delete
            parent = document
            for key in parts[:-1]:
                parent = parent[key]
            if isinstance(parent, (dict, list)):
                del parent[parts[-1]]
            continue
        document = _set(document, parts, _hostile_json(rng, value))
        if isinstance(document, _Raw):
            break
    return _dumps(document).encode("utf-8")
