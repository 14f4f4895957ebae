"""3D Slicer Markups JSON (``.mrk.json``): reading what a file holds.

Slicer writes control point positions in the file's ``coordinateSystem`` (``"LPS"`` or
``"RAS"``; files without it are LPS since Slicer 4.11). ``control_points_lps`` converts RAS to
LPS at this edge, so the rest of workbench sees LPS only (see ``docs/frames.md``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workbench.errors import WorkbenchError
from workbench.io.json_io import read_json_limited
from workbench.validation import check_coordinates_mm

__all__ = ["read_markups_json", "control_points_lps", "describe_markups"]

_RAS_TO_LPS = np.array([-1.0, -1.0, 1.0])


def read_markups_json(path: str | Path) -> dict:
    """Parse a Slicer markups file; returns the JSON object (with a ``markups`` list)."""
    document = read_json_limited(path, error=WorkbenchError, what="markups file")
    if not isinstance(document, dict) or not isinstance(document.get("markups"), list):
        raise WorkbenchError("JSON file is neither a case.json nor 3D Slicer markups (no 'markups' list)", path)
    _check_structure(document, Path(path))
    return document


def _check_structure(document: dict, path: Path) -> None:
    """The parts of Slicer's markups schema workbench reads, checked before use (types, not values)."""
    for index, markup in enumerate(document["markups"]):
        where = f"markups[{index}]"
        if not isinstance(markup, dict):
            raise WorkbenchError(f"{where} is not a JSON object", path)
        for key in ("type", "name", "coordinateSystem"):
            if key in markup and not isinstance(markup[key], str):
                raise WorkbenchError(f"{where}.{key} is not a string", path)
        points = markup.get("controlPoints", [])
        if not isinstance(points, list):
            raise WorkbenchError(f"{where}.controlPoints is not a list", path)
        for n, point in enumerate(points):
            if not isinstance(point, dict):
                raise WorkbenchError(f"{where}.controlPoints[{n}] is not a JSON object", path)
            if "label" in point and not isinstance(point["label"], str):
                raise WorkbenchError(f"{where}.controlPoints[{n}].label is not a string", path)
            position = point.get("position")
            if not (
                isinstance(position, list)
                and len(position) == 3
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in position)
            ):
                raise WorkbenchError(f"{where}.controlPoints[{n}].position is not 3 numbers", path)


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
    check_coordinates_mm(points, "control point position", path)
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
