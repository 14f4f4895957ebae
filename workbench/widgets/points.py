"""Point-list model: named landmarks, targets and entry points in the ``Mri`` frame (LPS, mm).

Place, rename, move and delete points with undo/redo; every change is autosaved into the case
bundle through :func:`workbench.case.save_case` (atomic: a crash leaves the previous
``case.json``). A failed save never loses the in-memory list: the list keeps the change, the
model records why the save failed (:attr:`PointListModel.save_error`) and the next change or
:meth:`PointListModel.save` tries again.

Storage in ``case.json``: a *landmark* is a ``Landmark`` in frame ``Mri`` (pair label = its
name, so a ``Reference`` landmark of the same pair label pairs with it for registration); a
*target* is a ``Target``; an *entry* point is a ``Target`` whose structure is
:data:`ENTRY_STRUCTURE`. ``Reference`` landmarks of the case are kept untouched.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np

from workbench.case.readiness import ENTRY_STRUCTURE
from workbench.widgets.session import WidgetError

__all__ = ["KINDS", "ENTRY_STRUCTURE", "TARGET_STRUCTURE", "Point", "PointListModel"]

KINDS = ("landmark", "target", "entry")
#: ``Target.structure`` of targets placed in the editor.
TARGET_STRUCTURE = "target placed in the workbench"


@dataclass(frozen=True)
class Point:
    """A named point.

    Attributes
    ----------
    name : str
    kind : {"landmark", "target", "entry"}
    point_lps : (3,) tuple of float
        Position in the ``Mri`` frame (LPS), mm.
    detail : str or None
        Landmark pair label, or target structure, as stored in the case.
    """

    name: str
    kind: str
    point_lps: tuple[float, float, float]
    detail: str | None = None


class PointListModel:
    """Editable list of named points with undo/redo and autosave.

    Parameters
    ----------
    case : workbench.case.Case
        The case whose ``Mri`` landmarks and targets are edited.
    folder : path or None
        Case folder to autosave into; None keeps changes in memory only.
    autosave : bool
        Save after every change (default True).
    saver : callable, optional
        ``saver(case, folder) -> Case``; default :func:`workbench.case.save_case` (tests inject failures).

    Attributes
    ----------
    points : list of Point
    save_error : str or None
        Why the last save failed (None after a successful one).
    saved_count : int
        Successful saves so far.
    """

    def __init__(self, case, folder=None, autosave: bool = True, saver: Callable | None = None):
        self.case = case
        self.folder = folder
        self.autosave = autosave
        if saver is None:
            from workbench.case import save_case

            saver = save_case
        self._saver = saver
        self.save_error: str | None = None
        self.saved_count = 0
        self._listeners: list[Callable[[str], None]] = []
        self.points: list[Point] = []
        self._other_landmarks = []
        for landmark in case.landmarks:
            if landmark.frame == "Mri":
                self.points.append(Point(landmark.name, "landmark", tuple(map(float, landmark.point_mm)), landmark.pair))
            else:
                self._other_landmarks.append(landmark)
        for target in case.targets:
            kind = "entry" if target.structure == ENTRY_STRUCTURE else "target"
            self.points.append(Point(target.name, kind, tuple(map(float, target.point_lps_mm)), target.structure))
        self._undo: list[list[Point]] = []
        self._redo: list[list[Point]] = []

    # -- observers ----------------------------------------------------------------------
    def observe(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(what)`` after every change (``what``: "place", "move", "undo", "save"...)."""
        self._listeners.append(callback)

    def _notify(self, what: str) -> None:
        for callback in list(self._listeners):
            callback(what)

    # -- queries ------------------------------------------------------------------------
    def names(self, kind: str | None = None) -> list[str]:
        """Names of all points, or of one kind."""
        return [p.name for p in self.points if kind is None or p.kind == kind]

    def get(self, name: str) -> Point:
        """The point called ``name``.

        Raises
        ------
        WidgetError
            No such point.
        """
        for point in self.points:
            if point.name == name:
                return point
        raise WidgetError(f"no point named {name!r}")

    def points_lps(self, kind: str | None = None) -> np.ndarray:
        """(N, 3) LPS positions (mm) of all points or one kind, in list order."""
        return np.array([p.point_lps for p in self.points if kind is None or p.kind == kind], dtype=float).reshape(-1, 3)

    def unique_name(self, name: str) -> str:
        """``name`` if unused, else ``name (2)``, ``name (3)``..."""
        name = name.strip() or "point"
        used = set(self.names())
        if name not in used:
            return name
        n = 2
        while f"{name} ({n})" in used:
            n += 1
        return f"{name} ({n})"

    # -- edits --------------------------------------------------------------------------
    def _edit(self, new_points: list[Point], what: str) -> None:
        self._undo.append(list(self.points))
        self._redo.clear()
        self.points = new_points
        self._changed(what)

    def _changed(self, what: str) -> None:
        if self.autosave and self.folder is not None:
            self.save()
        self._notify(what)

    def place(self, name: str, kind: str, point_lps) -> Point:
        """Add a point; the name is made unique (``name (2)``). Returns the point added.

        Parameters
        ----------
        name : str
        kind : {"landmark", "target", "entry"}
        point_lps : (3,) float array
            Position in ``Mri`` (LPS), mm.
        """
        if kind not in KINDS:
            raise WidgetError(f"kind must be one of {KINDS}, got {kind!r}")
        point_lps = _point3(point_lps)
        detail = {"landmark": None, "target": TARGET_STRUCTURE, "entry": ENTRY_STRUCTURE}[kind]
        point = Point(self.unique_name(name), kind, point_lps, detail)
        self._edit(self.points + [point], "place")
        return point

    def move(self, name: str, point_lps) -> Point:
        """Move point ``name`` to ``point_lps`` (LPS, mm)."""
        point_lps = _point3(point_lps)
        old = self.get(name)
        new = dataclasses.replace(old, point_lps=point_lps)
        self._edit([new if p.name == name else p for p in self.points], "move")
        return new

    def rename(self, name: str, new_name: str) -> Point:
        """Rename a point; a landmark keeps its pair label (its partner in ``Reference`` stays paired).

        Raises
        ------
        WidgetError
            Empty name or a name already used.
        """
        new_name = new_name.strip()
        old = self.get(name)
        if not new_name:
            raise WidgetError("a point needs a non-empty name")
        if new_name != name and new_name in self.names():
            raise WidgetError(f"another point is already named {new_name!r}")
        new = dataclasses.replace(old, name=new_name)
        self._edit([new if p.name == name else p for p in self.points], "rename")
        return new

    def delete(self, name: str) -> Point:
        """Remove point ``name``; returns it."""
        old = self.get(name)
        self._edit([p for p in self.points if p.name != name], "delete")
        return old

    def undo(self) -> None:
        """Revert the last change (and autosave)."""
        if not self._undo:
            raise WidgetError("nothing to undo")
        self._redo.append(list(self.points))
        self.points = self._undo.pop()
        self._changed("undo")

    def redo(self) -> None:
        """Re-apply the last undone change (and autosave)."""
        if not self._redo:
            raise WidgetError("nothing to redo")
        self._undo.append(list(self.points))
        self.points = self._redo.pop()
        self._changed("redo")

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    # -- persistence --------------------------------------------------------------------
    def to_case(self):
        """The case with this list as its ``Mri`` landmarks and targets (a new Case object)."""
        from workbench.case import Landmark, Target

        landmarks = list(self._other_landmarks)
        targets = []
        wanted = [p.detail if p.detail is not None else p.name for p in self.points if p.kind == "landmark"]
        kept = {p.detail for p in self.points if p.kind == "landmark" and p.detail is not None}
        for p in self.points:
            if p.kind == "landmark":
                pair = p.detail if p.detail is not None else p.name
                if p.detail is None and (pair in kept or wanted.count(pair) > 1):
                    pair = None  # a pair label must stay unique among Mri landmarks
                landmarks.append(Landmark(p.name, "Mri", p.point_lps, pair))
            else:
                structure = ENTRY_STRUCTURE if p.kind == "entry" else (p.detail or TARGET_STRUCTURE)
                if p.kind == "target" and structure == ENTRY_STRUCTURE:
                    structure = TARGET_STRUCTURE
                targets.append(Target(p.name, structure, p.point_lps))
        return dataclasses.replace(self.case, landmarks=landmarks, targets=targets)

    def save(self) -> bool:
        """Save into the case folder now (atomic). Returns True on success.

        On failure nothing in memory changes; :attr:`save_error` says why (the file and the
        problem) and the next change or call retries.
        """
        if self.folder is None:
            self.save_error = "no case folder to save into"
            return False
        try:
            saved = self._saver(self.to_case(), self.folder)
        except Exception as exc:  # noqa: BLE001 - any failure must keep the list and be reported
            self.save_error = f"not saved: {exc}"
            self._notify("save-failed")
            return False
        if saved is not None:
            self.case = saved
        self.save_error = None
        self.saved_count += 1
        return True


def _point3(values) -> tuple[float, float, float]:
    array = np.asarray(values, dtype=float).reshape(-1)
    if array.shape != (3,) or not np.all(np.isfinite(array)):
        raise WidgetError(f"a point is 3 finite numbers (LPS, mm), got {values!r}")
    return float(array[0]), float(array[1]), float(array[2])
