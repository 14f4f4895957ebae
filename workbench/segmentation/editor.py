"""Correcting a label map by hand: paint and erase per structure, undo/redo, autosave (no UI).

:class:`LabelEditor` holds a label map's values, its table and its geometry. A *stroke* is one
sphere brush (radius in mm, centre as an LPS point or a voxel index) that paints one structure
(a label-table name such as ``"spinous_process_L4"``; a name the table lacks is added if the
vocabulary knows it) or erases one structure (or every structure) back to ``unlabelled``. Each
stroke can be undone and redone exactly. With a case folder the editor autosaves the label map
with its table into the case (:func:`workbench.segmentation.store.attach_label_map`, atomic):
after every stroke (``autosave="stroke"``), at most every ``debounce_s`` seconds
(``"debounce"``, :meth:`LabelEditor.flush` saves what is pending), or never (``None``,
:meth:`LabelEditor.save`). The ipywidgets controller is :mod:`workbench.widgets.segment_editor`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from workbench.anatomy import LabelMap, parse_label_name
from workbench.segmentation.fit import SegmentationError

__all__ = ["AUTOSAVE_MODES", "LabelEditor", "Stroke"]

#: Autosave modes of :class:`LabelEditor`.
AUTOSAVE_MODES = ("stroke", "debounce", None)
_ERASED = "unlabelled"


@dataclass(frozen=True)
class Stroke:
    """One brush stroke, as undo/redo replays it.

    Attributes
    ----------
    action : str
        ``"paint"`` or ``"erase"``.
    structure : str or None
        Label-table name painted or erased (None: erase every structure).
    flat_indices : (N,) int array
        Changed voxels, indices into the flattened (K, J, I) array.
    before, after : (N,) int arrays
        Their values before and after the stroke.
    """

    action: str
    structure: str | None
    flat_indices: np.ndarray
    before: np.ndarray
    after: np.ndarray

    @property
    def changed(self) -> int:
        """Number of voxels the stroke changed."""
        return int(len(self.flat_indices))


class LabelEditor:
    """Paint/erase a label map per structure with undo/redo and autosave.

    Parameters
    ----------
    label_map : LabelMap
        The map to edit (copied; the original is not changed).
    case_dir : str or path-like, optional
        Case bundle to save into (its ``label_map`` attachment).
    autosave : {"stroke", "debounce", None}
        See the module docstring; needs ``case_dir`` unless None.
    debounce_s : float
        Least time between two autosaves in ``"debounce"`` mode, s.
    clock : callable, optional
        Monotonic seconds (tests pass a fake clock).

    Attributes
    ----------
    values : (K, J, I) int array
        The label values being edited.
    saves : int
        How many times the label map was saved.
    """

    def __init__(
        self,
        label_map: LabelMap,
        case_dir: str | os.PathLike | None = None,
        autosave: str | None = "stroke",
        debounce_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if autosave not in AUTOSAVE_MODES:
            raise SegmentationError(f"unknown autosave mode {autosave!r}; expected one of {AUTOSAVE_MODES}")
        if autosave is not None and case_dir is None:
            raise SegmentationError("autosave needs the case folder to save into")
        self.values = np.array(label_map.array, dtype=np.int32)
        self._names: dict[int, str] = dict(label_map.names)
        self._original = frozenset(self._names)
        self.index_to_lps = label_map.mri_voxel_to_mri.matrix.copy()
        self.lps_to_index = np.linalg.inv(self.index_to_lps)
        self.spacing_mm = label_map.spacing_mm.copy()
        self.case_dir = None if case_dir is None else Path(case_dir)
        self.autosave = autosave
        self.debounce_s = float(debounce_s)
        self._clock = clock
        self._done: list[Stroke] = []
        self._undone: list[Stroke] = []
        self._pending = False
        self._last_save = -np.inf
        self.saves = 0

    @classmethod
    def open_case(cls, case_dir: str | os.PathLike, **kwargs) -> "LabelEditor":
        """An editor on the case's label map (:func:`workbench.case.labels.read_case_label_map`)."""
        from workbench.case.labels import read_case_label_map
        from workbench.case.storage import load_case

        case = load_case(case_dir)
        label_map = read_case_label_map(case, case_dir)
        if label_map is None:
            raise SegmentationError(f"{case_dir}: the case has no label map to edit; run `workbench segment` or import one")
        return cls(label_map, case_dir=case_dir, **kwargs)

    # -- the table ------------------------------------------------------------------------------
    @property
    def structures(self) -> tuple[str, ...]:
        """Label-table names, by value."""
        return tuple(name for _, name in sorted(self._names.items()))

    def value_of(self, structure: str) -> int:
        """The value of a label-table name; a vocabulary name the table lacks gets a new value."""
        name = str(parse_label_name(structure))
        for value, known in self._names.items():
            if known == name:
                return value
        value = max(self._names) + 1
        self._names[value] = name
        return value

    @property
    def label_map(self) -> LabelMap:
        """The edited label map (a new :class:`LabelMap`: values, table, geometry)."""
        used = set(np.unique(self.values).tolist())
        names = {v: n for v, n in self._names.items() if v in used or v in self._original}
        dtype = np.uint8 if max(names) < 256 else np.uint16
        return LabelMap(self.values.astype(dtype), names, self.index_to_lps)

    def count(self, structure: str) -> int:
        """Voxels of one structure."""
        return int(np.count_nonzero(self.values == self.value_of(structure)))

    # -- brush -----------------------------------------------------------------------------------
    def _sphere(self, centre, radius_mm: float, frame: str) -> np.ndarray:
        """Flat indices of the voxels whose centres lie within ``radius_mm`` of the centre."""
        if not np.isfinite(radius_mm) or radius_mm <= 0:
            raise SegmentationError(f"brush radius must be a positive number of mm, not {radius_mm!r}")
        centre = np.asarray(centre, dtype=float).reshape(3)
        if frame == "ijk":
            centre_lps = self.index_to_lps[:3, :3] @ centre + self.index_to_lps[:3, 3]
        elif frame == "lps":
            centre_lps = centre
        else:
            raise SegmentationError(f"brush centre frame must be 'lps' or 'ijk', not {frame!r}")
        centre_ijk = self.lps_to_index[:3, :3] @ centre_lps + self.lps_to_index[:3, 3]
        reach = np.ceil(radius_mm / self.spacing_mm).astype(int) + 1
        shape_ijk = np.array(self.values.shape[::-1])
        lo = np.clip(np.floor(centre_ijk).astype(int) - reach, 0, shape_ijk)
        hi = np.clip(np.floor(centre_ijk).astype(int) + reach + 1, 0, shape_ijk)
        if np.any(hi <= lo):
            return np.zeros(0, np.int64)
        k, j, i = np.meshgrid(*(np.arange(lo[a], hi[a]) for a in (2, 1, 0)), indexing="ij")
        ijk = np.stack([i.ravel(), j.ravel(), k.ravel()], axis=1).astype(float)
        lps = ijk @ self.index_to_lps[:3, :3].T + self.index_to_lps[:3, 3]
        inside = np.sum((lps - centre_lps) ** 2, axis=1) <= radius_mm**2
        kji = np.stack([k.ravel(), j.ravel(), i.ravel()])[:, inside]
        return np.ravel_multi_index(tuple(kji), self.values.shape)

    def _apply(self, stroke: Stroke) -> Stroke:
        if stroke.changed:
            self.values.ravel()[stroke.flat_indices] = stroke.after
            self._done.append(stroke)
            self._undone.clear()
            self._changed()
        return stroke

    def paint(self, structure: str, centre, radius_mm: float, frame: str = "lps", only_over: tuple[str, ...] | None = None) -> Stroke:
        """Paint ``structure`` in a sphere; return the stroke (``.changed`` voxels).

        Parameters
        ----------
        structure : str
            Label-table name (``"lamina_L4"``).
        centre : (3,) float
            LPS mm (``frame="lps"``) or voxel index i, j, k (``frame="ijk"``).
        radius_mm : float
        only_over : tuple of str, optional
            Change only voxels that now hold one of these structures (e.g. ``("unlabelled",)``).
        """
        value = self.value_of(structure)
        flat = self._sphere(centre, radius_mm, frame)
        before = self.values.ravel()[flat]
        keep = before != value
        if only_over is not None:
            keep &= np.isin(before, [self.value_of(name) for name in only_over])
        flat, before = flat[keep], before[keep]
        return self._apply(Stroke("paint", self._names[value], flat, before, np.full(len(flat), value, np.int32)))

    def erase(self, structure: str | None, centre, radius_mm: float, frame: str = "lps") -> Stroke:
        """Erase ``structure`` (None: every structure but air and ``unlabelled``) in a sphere, to ``unlabelled``."""
        erased = self.value_of(_ERASED)
        flat = self._sphere(centre, radius_mm, frame)
        before = self.values.ravel()[flat]
        if structure is None:
            keep = (before != erased) & (before != 0)
            name = None
        else:
            keep = before == self.value_of(structure)
            name = self._names[self.value_of(structure)]
        flat, before = flat[keep], before[keep]
        return self._apply(Stroke("erase", name, flat, before, np.full(len(flat), erased, np.int32)))

    # -- undo/redo -------------------------------------------------------------------------------
    @property
    def can_undo(self) -> bool:
        return bool(self._done)

    @property
    def can_redo(self) -> bool:
        return bool(self._undone)

    def undo(self) -> Stroke | None:
        """Undo the last stroke exactly; None when there is nothing to undo."""
        if not self._done:
            return None
        stroke = self._done.pop()
        self.values.ravel()[stroke.flat_indices] = stroke.before
        self._undone.append(stroke)
        self._changed()
        return stroke

    def redo(self) -> Stroke | None:
        """Redo the last undone stroke; None when there is nothing to redo."""
        if not self._undone:
            return None
        stroke = self._undone.pop()
        self.values.ravel()[stroke.flat_indices] = stroke.after
        self._done.append(stroke)
        self._changed()
        return stroke

    # -- saving ------------------------------------------------------------------------------------
    @property
    def pending(self) -> bool:
        """True when there are edits not yet saved."""
        return self._pending

    def _changed(self) -> None:
        self._pending = True
        if self.autosave == "stroke":
            self.save()
        elif self.autosave == "debounce" and self._clock() - self._last_save >= self.debounce_s:
            self.save()

    def flush(self) -> bool:
        """Save pending edits now (debounce mode's last save); True if something was saved."""
        if self._pending and self.case_dir is not None:
            self.save()
            return True
        return False

    def save(self) -> Path:
        """Save the label map and its table into the case (atomic); return the label map's path."""

        from workbench import __version__
        from workbench.io.json_io import read_json_limited
        from workbench.segmentation.store import PROVENANCE_FILE, attach_label_map

        if self.case_dir is None:
            raise SegmentationError("the editor has no case folder to save into")
        provenance_path = self.case_dir / PROVENANCE_FILE
        provenance = (read_json_limited(provenance_path, error=SegmentationError, what="segmentation provenance")
                      if provenance_path.is_file() else {})
        if not isinstance(provenance, dict):
            raise SegmentationError("segmentation provenance is not a JSON object", provenance_path)
        provenance["edits"] = {
            "strokes": len(self._done),
            "voxels_changed": int(sum(s.changed for s in self._done)),
            "software": f"workbench {__version__}",
        }
        path = attach_label_map(
            self.case_dir, self.label_map, "label map corrected by hand (workbench segment editor)", provenance, check_grid=self.saves == 0
        )
        self._pending = False
        self._last_save = self._clock()
        self.saves += 1
        return path
