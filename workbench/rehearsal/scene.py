"""The rehearsal scene: a case's label map, MRI, targets and the expert path to each target.

:func:`load_scene` reads any case bundle that has a label map with its table: the demo case
(``workbench demo-case``), a teaching-library case (``workbench library build``; expert plans in
its ``ground_truth.json``) or a real case whose segmentation was imported
(``workbench labels import``). The label values are read only through the map's table
(:class:`workbench.anatomy.LabelMap`), so an imported map with other values works the same.

The expert path of a target is, in this order (``ExpertPath.source`` says which):

1. ``"saved plan"``: a trajectory of a plan saved in the case (attachment of role ``plan``)
   aimed at that target (same name, or its target within 1 mm of the case's target);
2. ``"expert plan"``: the expert plan of a synthetic or library case (``ground_truth.json``);
3. ``"case entry"``: the entry point placed for the target in the case (notebook 02; paired as
   ``workbench plan`` pairs them, :func:`workbench.planning.cli.pair_entries`);
4. ``"suggested entry"``: the safest skin entry that :func:`workbench.planning.safety.suggest_entries`
   finds around a straight posterior approach.

The needle is the plan's catalogue needle (:mod:`workbench.equipment`); for a suggested entry the
shortest catalogue needle that reaches with the planning margin (the study used 50 mm 23G).
Frames: everything in ``Mri`` (LPS mm), docs/frames.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbench.anatomy import VERTEBRAL_LEVELS, LabelMap
from workbench.equipment import NeedleSpec
from workbench.errors import WorkbenchError

__all__ = [
    "DEFAULT_SEGMENT_HEIGHT_MM",
    "ExpertPath",
    "RehearsalError",
    "RehearsalScene",
    "load_scene",
]

#: Segment height used when a case gives no vertebra centres (lumbar body + disc, mm).
DEFAULT_SEGMENT_HEIGHT_MM = 35.0
#: A saved-plan trajectory belongs to a case target when their target points are this close, mm.
_SAME_TARGET_MM = 1.0
#: Levels in cranial-to-caudal order, for the vertebra centres.
_LEVEL_ORDER = {level: i for i, level in enumerate(VERTEBRAL_LEVELS)}


class RehearsalError(WorkbenchError):
    """A rehearsal cannot start or go on: no case, no label map, unknown target, a bad action."""


@dataclass(frozen=True)
class ExpertPath:
    """The reference needle path to one target, in ``Mri`` (LPS mm).

    Attributes
    ----------
    target_name : str
        The case's target name.
    entry_mri, target_mri : (3,) float array
        Skin entry and target, mm.
    needle : workbench.equipment.NeedleSpec
        The plan's catalogue needle.
    injectate_ml : float
        Planned volume, mL (6 mL per root in the study).
    source : str
        ``"saved plan"``, ``"expert plan"``, ``"case entry"`` or ``"suggested entry"`` (module docstring).
    """

    target_name: str
    entry_mri: np.ndarray
    target_mri: np.ndarray
    needle: NeedleSpec
    injectate_ml: float = 6.0
    source: str = "expert plan"

    @property
    def direction_mri(self) -> np.ndarray:
        """(3,) unit vector from the entry to the target."""
        d = self.target_mri - self.entry_mri
        return d / np.linalg.norm(d)

    @property
    def depth_mm(self) -> float:
        """Entry-to-target distance, mm."""
        return float(np.linalg.norm(self.target_mri - self.entry_mri))


@dataclass(frozen=True)
class RehearsalScene:
    """Everything a rehearsal needs from a case.

    Attributes
    ----------
    case_id : str
    case_dir : Path
    label_map : workbench.anatomy.LabelMap
        The case's label map with its table, ``Mri`` frame.
    mri : SimpleITK.Image or None
        The case's MRI (None when the case has none or it was not loaded).
    targets_mri : dict of str to (3,) float array
        Target name -> target point, LPS mm (the case's targets, entry points left out).
    expert_paths : dict of str to ExpertPath
        Same keys.
    muscle_fat_fraction : float
        Paraspinal muscle fat fraction 0..1 (from a synthetic case's age; 0 when unknown).
    vertebra_centres_mri : dict of str to (3,) float array
        Level -> vertebral body centre, LPS mm, cranial to caudal (may be empty).
    vertebra_centres_source : str
        Where they came from: ``"landmarks"``, ``"label map levels"`` or ``"none"``.
    """

    case_id: str
    case_dir: Path
    label_map: LabelMap
    mri: object | None
    targets_mri: dict[str, np.ndarray]
    expert_paths: dict[str, ExpertPath]
    muscle_fat_fraction: float = 0.0
    vertebra_centres_mri: dict[str, np.ndarray] = field(default_factory=dict)
    vertebra_centres_source: str = "none"

    @property
    def segment_height_mm(self) -> float:
        """Median distance between neighbouring vertebra centres, mm (:data:`DEFAULT_SEGMENT_HEIGHT_MM` without two)."""
        centres = list(self.vertebra_centres_mri.values())
        if len(centres) < 2:
            return DEFAULT_SEGMENT_HEIGHT_MM
        return float(np.median([np.linalg.norm(b - a) for a, b in zip(centres[:-1], centres[1:])]))

    def spine_axis_mri(self, point_mri) -> np.ndarray:
        """(3,) unit craniocaudal direction (towards superior, +z in LPS) of the spine nearest ``point_mri``.

        From the two vertebra centres nearest the point; +z without two centres.
        """
        centres = list(self.vertebra_centres_mri.values())
        if len(centres) < 2:
            return np.array([0.0, 0.0, 1.0])
        point_mri = np.asarray(point_mri, dtype=float)
        stack = np.array(centres)
        nearest = int(np.argmin(np.linalg.norm(stack - point_mri, axis=1)))
        lo, hi = (nearest - 1, nearest) if nearest == len(centres) - 1 else (nearest, nearest + 1)
        axis = stack[lo] - stack[hi]
        axis = axis / np.linalg.norm(axis)
        return axis if axis[2] >= 0 else -axis

    def target(self, name: str) -> str:
        """The case target called ``name``: exact, else the only target whose name starts with it.

        ``"L4 left"`` finds ``"L4 left exiting nerve root, dorsal aspect"``.

        Raises
        ------
        RehearsalError
            No such target, or the prefix fits several (names the case's targets).
        """
        if name in self.targets_mri:
            return name
        matches = [t for t in self.targets_mri if t.lower().startswith(name.strip().lower())] if name.strip() else []
        if len(matches) == 1:
            return matches[0]
        known = "; ".join(self.targets_mri) or "none"
        what = "fits several targets" if matches else "is not a target of the case"
        raise RehearsalError(f"{name!r} {what} (targets: {known})", self.case_dir / "case.json")


def load_scene(case_dir, *, load_mri: bool = True) -> RehearsalScene:
    """Read the rehearsal scene of a case folder.

    Parameters
    ----------
    case_dir : str or Path
        A case bundle (``case.json``) with a label map attachment.
    load_mri : bool
        Also read the MRI (for the resliced view); False leaves ``mri`` None.

    Returns
    -------
    RehearsalScene

    Raises
    ------
    RehearsalError
        No case folder / ``case.json``; a case without a label map (names the case.json); a
        case without targets; a target for which no path can be found.
    workbench.anatomy.LabelMapError
        The label map lacks its table or holds values outside it (names the file).
    """
    from workbench.case import load_case
    from workbench.case.labels import read_case_label_map

    case_dir = Path(case_dir)
    if not (case_dir / "case.json").is_file():
        raise RehearsalError("no case.json: not a case folder (make one with `workbench new-case` or `workbench demo-case`)",
                             case_dir)
    case = load_case(case_dir, verify_digests=False)
    label_map = read_case_label_map(case, case_dir)
    if label_map is None:
        raise RehearsalError(
            "the case has no label map: import a segmentation with `workbench labels import` (or segment it, "
            "`workbench segment`) before rehearsing",
            case_dir / "case.json",
        )
    mri = _read_mri(case, case_dir) if load_mri else None
    from workbench.case.readiness import ENTRY_STRUCTURE

    targets = {t.name: np.array(t.point_lps_mm, dtype=float) for t in case.targets if t.structure != ENTRY_STRUCTURE}
    if not targets:
        raise RehearsalError("the case has no targets: place one (notebook 02) before rehearsing", case_dir / "case.json")
    ground_truth = _ground_truth(case, case_dir)
    centres, centres_source = _vertebra_centres(case, label_map)
    # Without load_mri the MRI is still read when an entry must be found on its body outline
    # (a label map with no AIR), so the headless CLI works on imported segmentations too.
    paths = _expert_paths(case, case_dir, targets, label_map, ground_truth,
                          lambda: mri if mri is not None else _read_mri(case, case_dir))
    fat_fraction = 0.0
    if ground_truth is not None and "age_years" in ground_truth.spec:
        from workbench.phantom.anatomy import muscle_fat_fraction_for_age

        fat_fraction = float(muscle_fat_fraction_for_age(float(ground_truth.spec["age_years"])))
    return RehearsalScene(
        case_id=case.case_id,
        case_dir=case_dir,
        label_map=label_map,
        mri=mri,
        targets_mri=targets,
        expert_paths=paths,
        muscle_fat_fraction=fat_fraction,
        vertebra_centres_mri=centres,
        vertebra_centres_source=centres_source,
    )


def _read_mri(case, case_dir: Path):
    from workbench.io.volume import load_volume

    if case.mri is None:
        return None
    return load_volume(case_dir / case.mri.path).image


def _ground_truth(case, case_dir: Path):
    from workbench.io.ground_truth import read_ground_truth

    found = next((a for a in case.attachments if a.role == "ground_truth"), None)
    return None if found is None else read_ground_truth(case_dir / found.path)


def _vertebra_centres(case, label_map: LabelMap) -> tuple[dict[str, np.ndarray], str]:
    """Level -> body centre (LPS mm), cranial to caudal: case landmarks ``"<level> body centre"``, else the label map."""
    suffix = " body centre"
    found = {
        lm.name[: -len(suffix)]: np.array(lm.point_mm, dtype=float)
        for lm in case.landmarks
        if lm.frame == "Mri" and lm.name.endswith(suffix) and lm.name[: -len(suffix)] in _LEVEL_ORDER
    }
    source = "landmarks"
    if len(found) < 2:
        found, source = {}, "label map levels"
        for level in sorted({lv for lv in label_map.levels.values()}, key=_LEVEL_ORDER.get):
            mask = np.isin(label_map.array, label_map.values_at_level(level))
            if mask.any():
                ijk = np.argwhere(mask)[:, ::-1].mean(axis=0)
                found[level] = label_map.mri_voxel_to_mri.apply_to_points(ijk[None, :])[0]
        if len(found) < 2:
            return {}, "none"
    return dict(sorted(found.items(), key=lambda item: _LEVEL_ORDER[item[0]])), source


def _expert_paths(case, case_dir: Path, targets, label_map, ground_truth, read_mri) -> dict[str, ExpertPath]:
    from workbench.planning.export import load_plan

    saved = []
    for attachment in (a for a in case.attachments if a.role == "plan"):
        saved.extend(load_plan(case_dir / attachment.path).trajectories)
    experts = list(ground_truth.expert_plans) if ground_truth is not None else []
    entries = _case_entries(case)
    paths = {}
    for name, target_mri in targets.items():
        trajectory = next((t for t in saved if _same_target(name, target_mri, t.name, t.structure, t.target_lps_mm)), None)
        if trajectory is not None:
            paths[name] = ExpertPath(name, np.array(trajectory.entry_lps_mm, dtype=float), target_mri.copy(),
                                     trajectory.needle, float(trajectory.injectate_ml), "saved plan")
            continue
        expert = next((e for e in experts if _same_target(name, target_mri, e.target, e.target, e.target_lps_mm)), None)
        if expert is not None:
            paths[name] = ExpertPath(name, np.asarray(expert.entry_lps_mm, dtype=float).copy(), target_mri.copy(),
                                     NeedleSpec(expert.needle_length_mm, expert.needle_gauge), float(expert.injectate_ml),
                                     "expert plan")
            continue
        if name in entries:
            paths[name] = _path_with_shortest_needle(name, entries[name], target_mri, "case entry")
            continue
        paths[name] = _suggested_path(name, target_mri, label_map, read_mri, case_dir)
    return paths


def _same_target(name: str, target_mri, other_name: str, other_structure: str, other_target) -> bool:
    if name in (other_name, other_structure):
        return True
    return float(np.linalg.norm(np.asarray(other_target, dtype=float) - target_mri)) <= _SAME_TARGET_MM


def _case_entries(case) -> dict[str, np.ndarray]:
    from workbench.planning.cli import pair_entries

    pairs, _, _ = pair_entries(case)
    return {target.name: np.array(entry.point_lps_mm, dtype=float) for target, entry in pairs}


def _path_with_shortest_needle(name: str, entry_mri, target_mri, source: str) -> ExpertPath:
    from workbench.equipment import NEEDLE_MARGIN_MM, shortest_needle

    depth_mm = float(np.linalg.norm(np.asarray(target_mri) - np.asarray(entry_mri)))
    return ExpertPath(name, np.asarray(entry_mri, dtype=float).copy(), np.asarray(target_mri, dtype=float).copy(),
                      shortest_needle(depth_mm, NEEDLE_MARGIN_MM), 6.0, source)


#: Distance behind the target of the first guess of a posterior entry, mm (the search finds the skin).
_POSTERIOR_GUESS_MM = 80.0


def _suggested_path(name: str, target_mri: np.ndarray, label_map: LabelMap, read_mri, case_dir: Path) -> ExpertPath:
    """The safest entry :func:`~workbench.planning.safety.suggest_entries` finds around a straight posterior path."""
    from workbench.anatomy import Label
    from workbench.errors import PlanError
    from workbench.planning.model import Trajectory
    from workbench.planning.mri_checks import BodyMask
    from workbench.planning.safety import suggest_entries

    body = None
    if not label_map.values_of([Label.AIR]):
        mri = read_mri()
        if mri is None:
            raise RehearsalError(
                f"target {name!r} has no plan, the label map names no AIR and the case has no MRI: no entry can be suggested",
                case_dir / "case.json",
            )
        body = BodyMask.from_image(mri)
    guess_mri = target_mri + np.array([0.0, _POSTERIOR_GUESS_MM, 0.0])  # +y is posterior in LPS
    trajectory = Trajectory(name=name, structure=name, target_lps_mm=tuple(target_mri), entry_lps_mm=tuple(guess_mri),
                            needle=NeedleSpec(50.0, "23G"))
    try:
        suggestions = suggest_entries(trajectory, label_map, body=body)
    except PlanError as exc:
        raise RehearsalError(f"no entry can be suggested for {name!r} ({exc.problem})", case_dir / "case.json") from None
    if not suggestions:
        raise RehearsalError(f"no skin entry found behind target {name!r}", case_dir / "case.json")
    return _path_with_shortest_needle(name, np.array(suggestions[0].trajectory.entry_lps_mm), target_mri, "suggested entry")
