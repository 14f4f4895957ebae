"""``ground_truth.json`` of a synthetic case, read and written as one typed object.

The demo case generator (:mod:`workbench.phantom.democase`) writes it with
:func:`write_ground_truth`; the demo, ``workbench plan``, the widgets and the benchmarks read it
with :func:`read_ground_truth`, whose errors name the file and the problem (malformed JSON,
wrong format tag, missing key, bad matrix or point). Every position is LPS mm in ``Mri`` unless
its name says ``reference``; transforms are stored as 16 numbers, row major (docs/frames.md).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from workbench._atomic import atomic_write_text
from workbench.errors import WorkbenchError
from workbench.frames import Transform
from workbench.io.paths import refuse_special_file
from workbench.io.json_io import parse_json_limited

__all__ = [
    "GROUND_TRUTH_FORMAT",
    "ExpertPlan",
    "GroundTruth",
    "GroundTruthError",
    "SweepTruth",
    "read_ground_truth",
    "write_ground_truth",
]

#: The ``format`` tag of ``ground_truth.json``.
GROUND_TRUTH_FORMAT = "workbench-demo-ground-truth/1"


class GroundTruthError(WorkbenchError):
    """A ``ground_truth.json`` that cannot be read: not JSON, another format, a missing key, a bad value."""


def _point(values, what: str, path) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        array = None
    if array is None or array.shape != (3,) or not np.all(np.isfinite(array)):
        raise GroundTruthError(f"{what} must be 3 finite numbers (mm), got {values!r}", path)
    array.setflags(write=False)
    return array


def _points(values, what: str, path) -> dict[str, np.ndarray]:
    if not isinstance(values, Mapping):
        raise GroundTruthError(f"{what} must map names to points, got {type(values).__name__}", path)
    return {str(name): _point(point, f"{what}[{name!r}]", path) for name, point in values.items()}


def _transform(values, name: str, path) -> Transform:
    try:
        matrix = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise GroundTruthError(f"{name} must be 16 numbers (4x4 row major), got {values!r}", path) from None
    if matrix.size != 16:
        raise GroundTruthError(f"{name} must be 16 numbers (4x4 row major), got {matrix.size}", path)
    try:
        return Transform.from_name(name, matrix.reshape(4, 4))
    except WorkbenchError as exc:
        raise GroundTruthError(exc.problem, path) from None


def _number(value, what: str, path) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise GroundTruthError(f"{what} must be a finite number, got {value!r}", path)
    return float(value)


def _list(point) -> list[float]:
    return [float(v) for v in point]


@dataclass(frozen=True, eq=False)
class ExpertPlan:
    """The reference trajectory of one target.

    Attributes
    ----------
    target : str
        Target name (a key of :attr:`GroundTruth.targets_mri`, e.g. ``"L4 right exiting nerve root"``).
    target_lps_mm, entry_lps_mm : (3,) float array
        Needle tip target and skin entry, LPS mm (``Mri``).
    insertion_depth_mm : float
        Entry to target, mm.
    needle_length_mm : float
    needle_gauge : str
        The catalogue needle chosen (:mod:`workbench.equipment`).
    injectate_ml : float
    approach : str
    """

    target: str
    target_lps_mm: np.ndarray
    entry_lps_mm: np.ndarray
    insertion_depth_mm: float
    needle_length_mm: float
    needle_gauge: str
    injectate_ml: float
    approach: str

    def to_dict(self) -> dict:
        """The JSON object of ``expert_plans``."""
        return {
            "target": self.target,
            "target_lps_mm": _list(self.target_lps_mm),
            "entry_lps_mm": _list(self.entry_lps_mm),
            "insertion_depth_mm": float(self.insertion_depth_mm),
            "needle": {"length_mm": float(self.needle_length_mm), "gauge": self.needle_gauge},
            "injectate_ml": float(self.injectate_ml),
            "approach": self.approach,
        }

    @classmethod
    def from_dict(cls, item, path=None, index: int = 0) -> "ExpertPlan":
        what = f"expert_plans[{index}]"
        try:
            needle = item["needle"]
            plan = cls(
                target=str(item["target"]),
                target_lps_mm=_point(item["target_lps_mm"], f"{what}.target_lps_mm", path),
                entry_lps_mm=_point(item["entry_lps_mm"], f"{what}.entry_lps_mm", path),
                insertion_depth_mm=_number(item["insertion_depth_mm"], f"{what}.insertion_depth_mm", path),
                needle_length_mm=_number(needle["length_mm"], f"{what}.needle.length_mm", path),
                needle_gauge=str(needle["gauge"]),
                injectate_ml=_number(item["injectate_ml"], f"{what}.injectate_ml", path),
                approach=str(item["approach"]),
            )
        except KeyError as exc:
            raise GroundTruthError(f"{what} has no key {exc.args[0]!r}", path) from None
        except TypeError:
            raise GroundTruthError(f"{what} must be an object with target, points, needle and injectate", path) from None
        return plan


@dataclass(frozen=True, eq=False)
class SweepTruth:
    """Noise-free poses of one simulated sweep.

    Attributes
    ----------
    sequence : str
        The sequence file, relative to the case folder.
    probe : str
        Probe preset name.
    true_image_to_mri : (N, 4, 4) float array
        Per frame, the true ``ImageToMri`` (pixels to LPS mm).
    """

    sequence: str
    probe: str
    true_image_to_mri: np.ndarray

    def to_dict(self) -> dict:
        return {
            "sequence": self.sequence,
            "probe": self.probe,
            "true_image_to_mri": [[float(v) for v in np.ravel(m)] for m in self.true_image_to_mri],
        }


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """What a synthetic case knows that a real one does not.

    Attributes
    ----------
    reference_to_mri : Transform
        True ``ReferenceToMri`` (of the MRI-time anatomy).
    targets_mri : dict of str to (3,) float array
        Nerve-root targets, LPS mm (``Mri``, MRI-time posture), in the generator's order.
    landmarks_mri : dict of str to (3,) float array
        Exact landmark positions, LPS mm (``Mri``, MRI-time posture; includes the body centres).
    expert_plans : tuple of ExpertPlan
    vertebra_motion : dict of str to (rotation_deg (3,), translation_mm (3,))
        Posture change per level between MRI and procedure, about the level's body centre
        (``workbench.phantom.anatomy.vertebra_motion_matrix``); empty when nothing moved.
    spec : dict
        The ``DemoCaseSpec`` the case was generated from, as plain values (``seed``, ``bmi``, ...).
    tracker_to_mri : Transform or None
        True ``TrackerToMri`` at the start of the sweeps.
    landmarks_mri_at_procedure : dict of str to (3,) float array
        Landmarks after the posture change, LPS mm (``Mri``).
    landmarks_reference_exact : dict of str to (3,) float array
        Reachable landmarks without localisation error, mm (``Reference``).
    reference_landmark_fle_mm : float or None
        Localisation error added to the case's Reference landmarks (RMS per axis), mm.
    fat_thickness_mm : float or None
        Subcutaneous fat thickness, mm.
    sweeps : tuple of SweepTruth
    """

    reference_to_mri: Transform
    targets_mri: dict[str, np.ndarray]
    landmarks_mri: dict[str, np.ndarray]
    expert_plans: tuple[ExpertPlan, ...] = ()
    vertebra_motion: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)
    tracker_to_mri: Transform | None = None
    landmarks_mri_at_procedure: dict[str, np.ndarray] = field(default_factory=dict)
    landmarks_reference_exact: dict[str, np.ndarray] = field(default_factory=dict)
    reference_landmark_fle_mm: float | None = None
    fat_thickness_mm: float | None = None
    sweeps: tuple[SweepTruth, ...] = ()

    def __post_init__(self) -> None:
        if self.reference_to_mri.name != "ReferenceToMri":
            raise GroundTruthError(f"reference_to_mri must be ReferenceToMri, not {self.reference_to_mri.name}")
        if self.tracker_to_mri is not None and self.tracker_to_mri.name != "TrackerToMri":
            raise GroundTruthError(f"tracker_to_mri must be TrackerToMri, not {self.tracker_to_mri.name}")

    @property
    def target_points_mri(self) -> np.ndarray:
        """(K, 3) float array, LPS mm: :attr:`targets_mri` stacked in their order."""
        return np.array([point for point in self.targets_mri.values()], dtype=float).reshape(-1, 3)

    def expert_plan(self, target: str) -> ExpertPlan | None:
        """The expert plan of ``target``, or None."""
        return next((plan for plan in self.expert_plans if plan.target == target), None)

    def to_dict(self) -> dict:
        """The JSON document (keys in the order the generator has always written them)."""
        document: dict[str, Any] = {"format": GROUND_TRUTH_FORMAT, "ReferenceToMri": self.reference_to_mri.to_list()}
        if self.tracker_to_mri is not None:
            document["TrackerToMri"] = self.tracker_to_mri.to_list()
        document["spec"] = dict(self.spec)
        document["vertebra_motion"] = {
            level: {"rotation_deg": [float(v) for v in rotation], "translation_mm": [float(v) for v in translation]}
            for level, (rotation, translation) in self.vertebra_motion.items()
        }
        document["landmarks_mri"] = {name: _list(p) for name, p in self.landmarks_mri.items()}
        document["landmarks_mri_at_procedure"] = {name: _list(p) for name, p in self.landmarks_mri_at_procedure.items()}
        document["landmarks_reference_exact"] = {name: _list(p) for name, p in self.landmarks_reference_exact.items()}
        if self.reference_landmark_fle_mm is not None:
            document["reference_landmark_fle_mm"] = float(self.reference_landmark_fle_mm)
        document["targets_mri"] = {name: _list(p) for name, p in self.targets_mri.items()}
        document["expert_plans"] = [plan.to_dict() for plan in self.expert_plans]
        if self.fat_thickness_mm is not None:
            document["fat_thickness_mm"] = float(self.fat_thickness_mm)
        document["sweeps"] = [sweep.to_dict() for sweep in self.sweeps]
        return document

    @classmethod
    def from_dict(cls, document, path: str | os.PathLike | None = None) -> "GroundTruth":
        """Check and convert a parsed ``ground_truth.json``; errors name ``path``."""
        if not isinstance(document, Mapping):
            raise GroundTruthError(f"ground truth must be a JSON object, got {type(document).__name__}", path)
        if document.get("format") != GROUND_TRUTH_FORMAT:
            raise GroundTruthError(
                f"not a workbench ground truth: format {document.get('format')!r}, expected {GROUND_TRUTH_FORMAT!r}", path
            )
        for key in ("ReferenceToMri", "targets_mri", "landmarks_mri"):
            if key not in document:
                raise GroundTruthError(f"ground truth has no {key!r}", path)
        plans = document.get("expert_plans", [])
        if not isinstance(plans, list):
            raise GroundTruthError("expert_plans must be a list", path)
        motion = document.get("vertebra_motion", {})
        if not isinstance(motion, Mapping):
            raise GroundTruthError("vertebra_motion must map levels to motions", path)
        try:
            vertebra_motion = {
                str(level): (
                    tuple(float(v) for v in _point(item["rotation_deg"], f"vertebra_motion[{level!r}].rotation_deg", path)),
                    tuple(float(v) for v in _point(item["translation_mm"], f"vertebra_motion[{level!r}].translation_mm", path)),
                )
                for level, item in motion.items()
            }
        except (KeyError, TypeError):
            raise GroundTruthError("vertebra_motion entries need rotation_deg and translation_mm", path) from None
        spec = document.get("spec", {})
        if not isinstance(spec, Mapping):
            raise GroundTruthError("spec must be an object", path)
        sweeps = []
        for index, item in enumerate(document.get("sweeps", [])):
            try:
                matrices = np.asarray(item["true_image_to_mri"], dtype=float).reshape(-1, 4, 4)
                sweeps.append(SweepTruth(str(item["sequence"]), str(item["probe"]), matrices))
            except (KeyError, TypeError, ValueError):
                raise GroundTruthError(
                    f"sweeps[{index}] needs sequence, probe and true_image_to_mri (16 numbers per frame)", path
                ) from None
        fle_mm = document.get("reference_landmark_fle_mm")
        fat_mm = document.get("fat_thickness_mm")
        return cls(
            reference_to_mri=_transform(document["ReferenceToMri"], "ReferenceToMri", path),
            targets_mri=_points(document["targets_mri"], "targets_mri", path),
            landmarks_mri=_points(document["landmarks_mri"], "landmarks_mri", path),
            expert_plans=tuple(ExpertPlan.from_dict(item, path, index) for index, item in enumerate(plans)),
            vertebra_motion=vertebra_motion,
            spec=dict(spec),
            tracker_to_mri=None if "TrackerToMri" not in document else _transform(document["TrackerToMri"], "TrackerToMri", path),
            landmarks_mri_at_procedure=_points(document.get("landmarks_mri_at_procedure", {}), "landmarks_mri_at_procedure", path),
            landmarks_reference_exact=_points(document.get("landmarks_reference_exact", {}), "landmarks_reference_exact", path),
            reference_landmark_fle_mm=None if fle_mm is None else _number(fle_mm, "reference_landmark_fle_mm", path),
            fat_thickness_mm=None if fat_mm is None else _number(fat_mm, "fat_thickness_mm", path),
            sweeps=tuple(sweeps),
        )


def read_ground_truth(path: str | os.PathLike) -> GroundTruth:
    """Read and check ``ground_truth.json``.

    Raises
    ------
    GroundTruthError
        Unreadable file, malformed JSON, wrong ``format`` tag, a missing key, a bad matrix or
        point; the message names the file.
    """
    path = refuse_special_file(path, GroundTruthError)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GroundTruthError(f"cannot read the ground truth ({exc.__class__.__name__}: {exc})", path) from None
    document = parse_json_limited(text.encode("utf-8"), path, error=GroundTruthError, what="ground truth")
    return GroundTruth.from_dict(document, path)


def write_ground_truth(ground_truth: GroundTruth, path: str | os.PathLike) -> Path:
    """Write ``ground_truth.json`` atomically (indent 1, no NaN); returns the path."""
    path = Path(path)
    atomic_write_text(path, json.dumps(ground_truth.to_dict(), indent=1, allow_nan=False) + "\n")
    return path
