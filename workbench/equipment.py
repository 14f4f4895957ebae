"""The needles on the procedure tray and the length kept outside the skin: one catalogue for all.

A bottom-layer module (it imports only :mod:`workbench.errors`), so the phantom's expert plans,
the planning checks and the widgets all choose needles from the same catalogue with the same
margin. :mod:`workbench.planning.model` re-exports these names. Lengths in mm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from workbench.errors import PlanError

__all__ = ["GAUGE_OUTER_DIAMETER_MM", "NEEDLE_CATALOGUE", "NEEDLE_MARGIN_MM", "NeedleSpec", "shortest_needle"]

#: Nominal outer diameter of needle tubing by gauge, mm (ISO 9626:2016, normal wall).
GAUGE_OUTER_DIAMETER_MM = {
    "18G": 1.27,
    "20G": 0.908,
    "21G": 0.819,
    "22G": 0.718,
    "23G": 0.642,
    "25G": 0.514,
    "27G": 0.413,
}

#: Needle length kept outside the skin (between hub and skin) at the target, mm: the default
#: needle is the shortest that reaches with this to spare, and less is a safety warning.
NEEDLE_MARGIN_MM = 10.0


@dataclass(frozen=True)
class NeedleSpec:
    """A needle: ``length_mm`` (shaft, hub excluded) and ``gauge`` (a key of :data:`GAUGE_OUTER_DIAMETER_MM`)."""

    length_mm: float
    gauge: str

    def __post_init__(self) -> None:
        if self.gauge not in GAUGE_OUTER_DIAMETER_MM:
            raise PlanError(f"unknown needle gauge {self.gauge!r}; known: {', '.join(GAUGE_OUTER_DIAMETER_MM)}")
        if not (math.isfinite(self.length_mm) and self.length_mm > 0):
            raise PlanError(f"needle length must be a positive number of mm, got {self.length_mm!r}")

    @property
    def radius_mm(self) -> float:
        """Half the nominal outer diameter, mm."""
        return GAUGE_OUTER_DIAMETER_MM[self.gauge] / 2.0

    @property
    def label(self) -> str:
        """E.g. ``"50 mm 23G"``."""
        return f"{self.length_mm:g} mm {self.gauge}"


#: The needles offered by default (the clinical study used 50 mm 23G). A plain dict: add or
#: remove entries to edit the catalogue; :func:`shortest_needle` takes any catalogue.
NEEDLE_CATALOGUE: dict[str, NeedleSpec] = {
    n.label: n for n in (NeedleSpec(50.0, "23G"), NeedleSpec(90.0, "22G"), NeedleSpec(120.0, "22G"))
}


def shortest_needle(
    depth_mm: float, margin_mm: float = NEEDLE_MARGIN_MM, catalogue: dict[str, NeedleSpec] | None = None
) -> NeedleSpec:
    """The shortest catalogue needle with ``length_mm >= depth_mm + margin_mm`` (else the longest).

    Parameters
    ----------
    depth_mm : float
        Insertion depth, skin entry to target, mm.
    margin_mm : float
        Length to keep outside the skin, mm (default :data:`NEEDLE_MARGIN_MM`).
    catalogue : dict of str to NeedleSpec, optional
        Default :data:`NEEDLE_CATALOGUE`.
    """
    needles = sorted((NEEDLE_CATALOGUE if catalogue is None else catalogue).values(), key=lambda n: n.length_mm)
    if not needles:
        raise PlanError("the needle catalogue is empty")
    return next((n for n in needles if n.length_mm >= depth_mm + margin_mm), needles[-1])
