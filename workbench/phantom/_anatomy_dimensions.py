"""Published adult lumbar dimensions used by the phantom, and their per-seed variation.

Sources (mean adult values, rounded; the phantom is a plausible spine, not an average one):

- Vertebral bodies (endplate width and depth, posterior body height), spinal canal (width
  between pedicles, depth), pedicle width/height and transverse angle, spinous process length
  and height, transverse process span: Panjabi MM et al., "Human lumbar vertebrae: quantitative
  three-dimensional anatomy", Spine 17 (1992) 299-306; Zhou SH et al., "Geometrical dimensions
  of the lower lumbar vertebrae - analysis of data from digitised CT images", Eur Spine J 9
  (2000) 242-248; Zindrick MR et al., "Analysis of the morphometric characteristics of the
  thoracic and lumbar pedicles", Spine 12 (1987) 160-166.
- Facet joint orientation (angle of the joint to the sagittal plane, increasing caudally from
  about 25 deg at L1-L2 to about 50 deg at L5-S1) and inter-facet width: Van Schaik JP et al.,
  "Facet orientation in the lumbar spine", Spine 10 (1985) 59-63; Masharawi Y et al., "Facet
  orientation in the thoracolumbar spine", Spine 29 (2004) 1755-1763.
- Intervertebral disc height (mid-disc) about 9-12 mm, largest at L4-L5: Frobin W et al.,
  "Height of lumbar discs measured from radiographs compared with degeneration and height
  classified from MR images", Neuroradiology 43 (2001) 409-415.
- Nerve root (with its dural sleeve) 5-7 mm in diameter, dorsal root ganglion 5-7 x 8-10 mm in
  the foramen under the pedicle: Hasegawa T et al., "Morphometric analysis of the lumbosacral
  nerve roots and dorsal root ganglia by magnetic resonance imaging", Spine 21 (1996) 1005-1009.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

__all__ = ["LAYOUT_LEVELS", "VertebraDims", "DISC_HEIGHT_MM", "nominal_dims", "varied_dims"]

#: Levels laid out along the spine curve. T12 is virtual: it is never drawn, it only gives the
#: L1 superior facets and the T12-L1 disc plane a partner.
LAYOUT_LEVELS = ("T12", "L1", "L2", "L3", "L4", "L5", "S1")


@dataclass(frozen=True)
class VertebraDims:
    """Dimensions of one vertebra, mm and degrees (see the module docstring for sources).

    The facet fields describe the joint this vertebra's superior articular processes make
    with the vertebra above.
    """

    body_width_mm: float
    body_depth_mm: float
    body_height_mm: float
    pedicle_width_mm: float
    pedicle_height_mm: float
    pedicle_angle_deg: float  # transverse angle, medial convergence going anteriorly
    canal_width_mm: float  # inter-pedicular distance
    canal_depth_mm: float  # posterior body wall to the inner surface of the laminae, midline
    transverse_span_mm: float  # tip to tip (S1: span of the sacral alae)
    spinous_length_mm: float  # lamina to tip
    spinous_height_mm: float
    facet_half_width_mm: float  # distance of the superior facet joint centre from the midline
    facet_angle_deg: float  # superior facet joint plane to the sagittal plane
    root_radius_mm: float  # exiting nerve root below this vertebra's pedicle


_TABLE = {
    #      W     D     H    PW    PH   PA    SCW   SCD   TPS    SPL   SPH   FHW   FA   root
    "T12": (40.0, 31.0, 24.0, 7.5, 16.0, 8.0, 20.0, 17.0, 62.0, 28.0, 22.0, 12.0, 20.0, 2.4),
    "L1": (42.0, 33.0, 25.0, 8.0, 15.5, 11.0, 21.5, 17.5, 70.0, 28.0, 23.0, 12.5, 25.0, 2.5),
    "L2": (44.0, 34.0, 26.0, 8.5, 15.0, 12.0, 22.0, 17.0, 78.0, 30.0, 24.0, 13.5, 28.0, 2.7),
    "L3": (46.0, 35.0, 27.0, 10.0, 15.0, 14.0, 23.0, 16.5, 90.0, 31.0, 25.0, 14.5, 35.0, 2.9),
    "L4": (48.0, 35.0, 27.0, 12.0, 14.0, 18.0, 23.0, 16.5, 84.0, 29.0, 23.0, 16.0, 42.0, 3.1),
    "L5": (50.0, 35.0, 26.0, 15.0, 14.0, 28.0, 24.5, 16.0, 92.0, 25.0, 19.0, 17.5, 48.0, 3.3),
    "S1": (52.0, 36.0, 28.0, 17.0, 15.0, 30.0, 28.0, 12.0, 108.0, 14.0, 18.0, 19.5, 50.0, 3.4),
}

#: Mid-disc height of a young adult disc between a level and the one below it, mm.
DISC_HEIGHT_MM = {"T12": 8.5, "L1": 9.5, "L2": 10.5, "L3": 11.0, "L4": 11.5, "L5": 11.0}

#: Fields given an absolute (degrees) rather than a relative variation.
_ANGLE_FIELDS = ("pedicle_angle_deg", "facet_angle_deg")
_RELATIVE_VARIATION = 0.05  # +-5 % on lengths
_ANGLE_VARIATION_DEG = 3.0  # +-3 deg on angles


def nominal_dims(level: str) -> VertebraDims:
    """The table values of ``level`` ("T12", "L1".."L5", "S1")."""
    return VertebraDims(*_TABLE[level])


def varied_dims(level: str, rng: np.random.Generator) -> VertebraDims:
    """``level``'s dimensions with seeded variation: lengths +-5 %, angles +-3 deg (uniform).

    Always draws the same number of values, so a level's variation does not depend on
    which other levels are built.
    """
    base = nominal_dims(level)
    fields = dataclasses.fields(base)
    draws = rng.uniform(-1.0, 1.0, len(fields))
    values = {}
    for field, draw in zip(fields, draws):
        value = getattr(base, field.name)
        if field.name in _ANGLE_FIELDS:
            values[field.name] = value + _ANGLE_VARIATION_DEG * draw
        else:
            values[field.name] = value * (1.0 + _RELATIVE_VARIATION * draw)
    return VertebraDims(**values)
