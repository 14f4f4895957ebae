"""3D Slicer Markups JSON (``.mrk.json``): reading what a file holds.

Slicer writes control point positions in the file's ``coordinateSystem`` (``"LPS"`` or
``"RAS"``; files without it are LPS since Slicer 4.11). ``control_points_lps`` converts RAS to
LPS at this edge, so the rest of workbench sees LPS only (see ``docs/frames.md``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from workbench.errors import WorkbenchError
from workbench.io.paths import require_regular_file

__all__ = ["read_markups_json", "control_points_lps", "describe_markups"]

_RAS_TO_LPS = np.array([-1.0, -1.0, 1.0])


def read_markups_json(path: str | Path) -> dict:
    """Parse a Slicer markups file; returns the JSON object (with a ``markups`` list)."""
    path = require_regular_file(path, WorkbenchError, "markups file")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise WorkbenchError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", path) from None
    except UnicodeDecodeError:
        raise WorkbenchError("not a text file (cannot decode as UTF-8)", path) from None
    if not isinstance(document, dict) or not isinstance(document.get("markups"), list):
        raise WorkbenchError("JSON file is neither a case.json nor 3D Slicer markups (no 'markups' list)", path)
    return document


def control_points_lps(markup: dict, path: str | Path | None = None) -> np.ndarray:
    """Control point positions of one markup as a (N, 3) float array in LPS mm."""
    system = markup.get("coordinateSystem", "LPS")
    if system not in ("LPS", "RAS"):
        raise WorkbenchError(f"unknown coordinateSystem {system!r} (expected LPS or RAS)", path)
    try:
        points = np.array([cp["position"] for cp in markup.get("controlPoints", [])], dtype=float).reshape(-1, 3)
    except (KeyError, TypeError, ValueError):
        raise WorkbenchError("a control point has no valid 3-number 'position'", path) from None
    if not np.all(np.isfinite(points)):
        raise WorkbenchError("a control point position holds NaN or infinity", path)
    return points * _RAS_TO_LPS if system == "RAS" else points


def describe_markups(path: str | Path) -> dict:
    """Describe a Slicer markups file for ``workbench info`` (``kind`` = ``"markups"``)."""
    path = Path(path)
    document = read_markups_json(path)
    markups = []
    for markup in document["markups"]:
        points_lps = control_points_lps(markup, path)
        markups.append(
            {
                "type": markup.get("type"),
                "coordinate_system": markup.get("coordinateSystem", "LPS"),
                "control_points": int(points_lps.shape[0]),
                "labels": [cp.get("label") for cp in markup.get("controlPoints", [])],
                "points_lps_mm": points_lps.tolist(),
            }
        )
    return {"kind": "markups", "path": str(path), "schema": document.get("@schema"), "markups": markups}
