"""Events of an attempt: what the needle tip meets as it passes through the label map.

Structures are recognised by their vocabulary name in the map's label table
(:class:`workbench.anatomy.LabelMap`), never by value, so an imported segmentation with its own
values gives the same events. An event's ``structure`` is the label-table name of the voxel
(with level and side where the table has them, e.g. ``"vertebra_L4"``, ``"dura"``).

==========================  =====================================================================
type                        when
==========================  =====================================================================
``bone_contact``            the tip is stopped by bone (any class of ``BONE_NAMES``)
``dura_puncture``           the tip enters DURA, CSF, SPINAL_CANAL or SPINAL_CORD
``nerve_contact``           the tip is ``NERVE_CONTACT_DEPTH_MM`` inside a NERVE_ROOT or
                            DORSAL_ROOT_GANGLION (paraesthesia warning)
``vessel_puncture``         the tip enters AORTA, IVC or RADICULAR_ARTERY
``kidney_puncture``         the tip enters KIDNEY
``intramuscular_injection`` injecting with the tip in a paraspinal muscle (or psoas away from the root)
``intravascular_injection`` injecting with the tip in a vessel
``epidural_injection``      injecting with the tip in the canal (epidural fat, dura, CSF)
``misplaced_injection``     injecting anywhere else outside the paravertebral space (wrong plane)
==========================  =====================================================================

A structure event fires when the tip enters the structure's class (one event per entry; leaving
and entering again is a second event). The nerve needs a depth because the study's target lies
on the dorsal surface of the root: touching it is the aim, going 1 mm into it is contact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workbench.anatomy import BONE_NAMES, LabelMap

__all__ = [
    "EVENT_TYPES",
    "INJECTION_EVENTS",
    "NERVE_CONTACT_DEPTH_MM",
    "PARAVERTEBRAL_ROOT_DISTANCE_MM",
    "PUNCTURE_TYPES",
    "Event",
    "EventDetector",
    "compartment_at",
]

EVENT_TYPES = (
    "bone_contact",
    "dura_puncture",
    "nerve_contact",
    "vessel_puncture",
    "kidney_puncture",
    "intramuscular_injection",
    "intravascular_injection",
    "epidural_injection",
    "misplaced_injection",
)
#: Events that pierce a structure that must not be pierced.
PUNCTURE_TYPES = ("dura_puncture", "vessel_puncture", "kidney_puncture")
#: Injection event by compartment (no event for the paravertebral space).
INJECTION_EVENTS = {
    "intramuscular": "intramuscular_injection",
    "intravascular": "intravascular_injection",
    "epidural": "epidural_injection",
    "subcutaneous": "misplaced_injection",
    "other": "misplaced_injection",
}
#: Depth of the tip inside a nerve root before it counts as nerve contact, mm.
NERVE_CONTACT_DEPTH_MM = 1.0
#: The tip is in the paravertebral space when a nerve root or ganglion is this close, mm.
PARAVERTEBRAL_ROOT_DISTANCE_MM = 10.0

_STRUCTURE_EVENTS = {
    "DURA": "dura_puncture",
    "CSF": "dura_puncture",
    "SPINAL_CANAL": "dura_puncture",
    "SPINAL_CORD": "dura_puncture",
    "NERVE_ROOT": "nerve_contact",
    "DORSAL_ROOT_GANGLION": "nerve_contact",
    "AORTA": "vessel_puncture",
    "IVC": "vessel_puncture",
    "RADICULAR_ARTERY": "vessel_puncture",
    "KIDNEY": "kidney_puncture",
}
_PARASPINAL_MUSCLES = ("ERECTOR_SPINAE", "MULTIFIDUS", "QUADRATUS_LUMBORUM")
_CANAL = ("EPIDURAL_FAT", "DURA", "CSF", "SPINAL_CANAL", "SPINAL_CORD")
_VESSELS = ("AORTA", "IVC", "RADICULAR_ARTERY")
_ROOTS = ("NERVE_ROOT", "DORSAL_ROOT_GANGLION")
_SUPERFICIAL = ("SKIN", "FAT")


@dataclass(frozen=True, eq=False)
class Event:
    """Something that happened during an attempt.

    Attributes
    ----------
    type : str
        One of :data:`EVENT_TYPES`.
    structure : str
        Label-table name of the structure (``"dura"``, ``"transverse_process"``, ``"vertebra_L4"``).
    time_s : float
        Attempt time, s.
    tip_mri : (3,) float array
        Tip position, LPS mm.
    """

    type: str
    structure: str
    time_s: float
    tip_mri: np.ndarray

    def as_dict(self) -> dict:
        """``{"type", "structure", "time_s"}`` as metrics.json lists it."""
        return {"type": self.type, "structure": self.structure, "time_s": round(float(self.time_s), 3)}


class EventDetector:
    """Turns the tip samples of an attempt into structure events.

    Parameters
    ----------
    label_map : LabelMap
        The case label map with its table.
    """

    def __init__(self, label_map: LabelMap):
        self.label_map = label_map
        self._event_of_value = {
            value: _STRUCTURE_EVENTS[name] for value, name in label_map.table.items() if name in _STRUCTURE_EVENTS
        }
        self.reset()

    def reset(self, value: int | None = None) -> None:
        """Forget where the tip was; ``value`` is the label the tip is in now (no event for it)."""
        self._inside = self._event_of_value.get(int(value)) if value is not None else None
        self._nerve_mm = 0.0
        self._nerve_fired = self._inside == "nerve_contact"

    def tip_path(self, depths_mm: np.ndarray, values: np.ndarray, points_mri: np.ndarray, time_s: float,
                 start_depth_mm: float) -> list[Event]:
        """Events of the tip moving forward through samples ``values`` at ``depths_mm`` (from ``start_depth_mm``)."""
        events = []
        previous_mm = start_depth_mm
        for depth_mm, value, point in zip(depths_mm, values, points_mri):
            kind = self._event_of_value.get(int(value))
            step_mm = float(depth_mm - previous_mm)
            previous_mm = float(depth_mm)
            if kind != self._inside:
                self._nerve_mm, self._nerve_fired = 0.0, False
                if kind is not None and kind != "nerve_contact":
                    events.append(Event(kind, self.label_map.names[int(value)], time_s, np.array(point, dtype=float)))
                self._inside = kind
            if kind == "nerve_contact":
                self._nerve_mm += step_mm
                if not self._nerve_fired and self._nerve_mm >= NERVE_CONTACT_DEPTH_MM - 1e-9:
                    self._nerve_fired = True
                    events.append(Event(kind, self.label_map.names[int(value)], time_s, np.array(point, dtype=float)))
        return events

    def bone(self, value: int, tip_mri: np.ndarray, time_s: float) -> Event:
        """The bone-contact event for bone of label ``value``."""
        return Event("bone_contact", self.label_map.names[int(value)], time_s, np.array(tip_mri, dtype=float))


def compartment_at(label_map: LabelMap, tip_mri) -> tuple[str, str]:
    """The injection compartment at the tip, and the label-table name of the voxel there.

    Returns
    -------
    compartment : str
        ``"intravascular"`` (a vessel), ``"epidural"`` (the canal: epidural fat, dura, CSF),
        ``"intramuscular"`` (a paraspinal muscle; psoas farther than
        :data:`PARAVERTEBRAL_ROOT_DISTANCE_MM` from a root), ``"paravertebral"`` (soft tissue,
        psoas, a root or anything else not above within that distance of a nerve root or
        ganglion), ``"subcutaneous"`` (skin or subcutaneous fat) or ``"other"`` (elsewhere: the
        wrong plane).
    structure : str
        Label-table name at the tip (``"outside"`` outside the map).
    """
    tip_mri = np.asarray(tip_mri, dtype=float).reshape(3)
    value = int(label_map.values_at(tip_mri[None, :])[0])
    if value < 0:
        return "other", "outside"
    name = label_map.table[value]
    structure = label_map.names[value]
    if name in _VESSELS:
        return "intravascular", structure
    if name in _CANAL:
        return "epidural", structure
    if name in _PARASPINAL_MUSCLES:
        return "intramuscular", structure
    near_root = name in _ROOTS or _root_distance_mm(label_map, tip_mri) <= PARAVERTEBRAL_ROOT_DISTANCE_MM
    if near_root and name not in _SUPERFICIAL and name not in BONE_NAMES:
        return "paravertebral", structure
    if name == "PSOAS":
        return "intramuscular", structure
    if name in _SUPERFICIAL:
        return "subcutaneous", structure
    return "other", structure


def _root_distance_mm(label_map: LabelMap, point_mri: np.ndarray) -> float:
    """Distance from ``point_mri`` to the nearest nerve-root or ganglion voxel centre within the search box, mm (inf if none)."""
    reach = PARAVERTEBRAL_ROOT_DISTANCE_MM + label_map.half_voxel_diagonal_mm
    values, lo_ijk = label_map.crop(point_mri - reach, point_mri + reach)
    mask = label_map.mask(_ROOTS, values)
    if not mask.any():
        return float("inf")
    ijk = np.argwhere(mask)[:, ::-1] + lo_ijk
    points = label_map.mri_voxel_to_mri.apply_to_points(ijk.astype(float))
    return float(np.min(np.linalg.norm(points - point_mri, axis=1)))
