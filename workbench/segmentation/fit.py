"""Per-vertebra transforms from the phantom's parametric spine to the patient, from named landmarks.

The case's ``Mri`` landmarks name their vertebral level (``"L4 spinous process tip"``,
``"L4-L5 left facet joint"``; the names :func:`workbench.phantom.anatomy.build_phantom` gives its
landmarks and the landmark editor offers). For every level with enough landmarks,
:func:`fit_level_transforms` finds the transform ``TemplateToMri`` (4x4, LPS mm to LPS mm) that
carries the template phantom's landmarks of that level onto the patient's: a similarity
(rotation, isotropic scale, translation; Umeyama 1991) or, asked for, an affine transform (12
parameters, least squares) when the level has at least :data:`MIN_AFFINE_LANDMARKS` landmarks
that span 3-D. A level with fewer than three landmarks is left out. Facet joints count for both vertebrae they join. Frames: docs/frames.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from workbench.anatomy import VERTEBRAL_LEVELS
from workbench.errors import WorkbenchError

__all__ = [
    "LANDMARK_KINDS",
    "MIN_AFFINE_LANDMARKS",
    "MIN_SIMILARITY_LANDMARKS",
    "LevelFit",
    "SegmentationError",
    "fit_level_transforms",
    "landmarks_by_level",
]

#: Landmark kinds per level that the fit reads (``"<level> <kind>"``); facet joints are
#: ``"<upper>-<lower> left|right facet joint"``.
LANDMARK_KINDS = (
    "body centre",
    "spinous process tip",
    "left pedicle",
    "right pedicle",
    "left transverse process tip",
    "right transverse process tip",
)
#: An affine fit needs this many landmarks of a level (12 parameters, 3 equations a point, 2 to spare).
MIN_AFFINE_LANDMARKS = 6
#: A similarity fit needs three non-collinear landmarks.
MIN_SIMILARITY_LANDMARKS = 3

_LEVEL = "|".join(VERTEBRAL_LEVELS)
_KIND_PATTERN = re.compile(rf"^({_LEVEL}) ({'|'.join(LANDMARK_KINDS)})$")
_FACET_PATTERN = re.compile(rf"^({_LEVEL})-({_LEVEL}) (left|right) facet joint$")


class SegmentationError(WorkbenchError):
    """A case cannot be segmented: no MRI, too few named landmarks, a fit that degenerates."""


def landmarks_by_level(landmarks_mri: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Group named ``Mri`` landmarks by vertebral level.

    Parameters
    ----------
    landmarks_mri : mapping of str to (3,) float array
        Landmark name -> LPS mm. Names not of the forms above are ignored.

    Returns
    -------
    dict of str to dict of str to (3,) float array
        Level (``"L4"``) -> landmark name -> LPS mm. A facet joint ``"L4-L5 left facet joint"``
        is listed under L4 and L5.
    """
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, point in landmarks_mri.items():
        point = np.asarray(point, dtype=float).reshape(3)
        match = _KIND_PATTERN.match(name.strip())
        if match:
            out.setdefault(match.group(1), {})[name.strip()] = point
            continue
        match = _FACET_PATTERN.match(name.strip())
        if match:
            for level in match.group(1, 2):
                out.setdefault(level, {})[name.strip()] = point
    return out


@dataclass(frozen=True)
class LevelFit:
    """The transform of one vertebral level.

    Attributes
    ----------
    level : str
    template_to_mri : (4, 4) float array
        ``TemplateToMri``: template phantom LPS mm -> patient ``Mri`` LPS mm.
    model : str
        ``"affine"`` or ``"similarity"``.
    landmarks : tuple of str
        Names of the landmarks fitted.
    rms_residual_mm : float
        RMS distance between the transformed template landmarks and the patient's, mm.
    scale : float
        Cube root of the determinant of the linear part (1 = the template's size).
    """

    level: str
    template_to_mri: np.ndarray
    model: str
    landmarks: tuple[str, ...]
    rms_residual_mm: float
    scale: float

    def to_dict(self) -> dict:
        """JSON-ready form (provenance)."""
        return {
            "level": self.level,
            "model": self.model,
            "landmarks": list(self.landmarks),
            "rms_residual_mm": round(self.rms_residual_mm, 3),
            "scale": round(self.scale, 4),
            "template_to_mri": [round(float(v), 6) for v in self.template_to_mri.ravel()],
        }


def _similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares rotation + isotropic scale + translation (Umeyama 1991), (4, 4)."""
    mu_s, mu_t = source.mean(axis=0), target.mean(axis=0)
    s, t = source - mu_s, target - mu_t
    u, sigma, vt = np.linalg.svd(t.T @ s / len(source))
    d = np.eye(3)
    if np.linalg.det(u @ vt) < 0:
        d[2, 2] = -1.0
    rotation = u @ d @ vt
    variance = (s**2).sum() / len(source)
    scale = float(np.trace(np.diag(sigma) @ d) / variance) if variance > 0 else 1.0
    matrix = np.eye(4)
    matrix[:3, :3] = scale * rotation
    matrix[:3, 3] = mu_t - scale * rotation @ mu_s
    return matrix


def _affine(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares affine transform, (4, 4)."""
    design = np.hstack([source, np.ones((len(source), 1))])
    solution, *_ = np.linalg.lstsq(design, target, rcond=None)
    matrix = np.eye(4)
    matrix[:3, :] = solution.T
    return matrix


def fit_level_transforms(
    template_landmarks: Mapping[str, np.ndarray],
    case_landmarks: Mapping[str, np.ndarray],
    model: str = "similarity",
    max_scale_change: float = 0.3,
) -> dict[str, LevelFit]:
    """``TemplateToMri`` per level, from the landmarks both name.

    Parameters
    ----------
    template_landmarks, case_landmarks : mapping of str to (3,) float array
        Landmark name -> LPS mm in the template phantom and in the patient's ``Mri`` frame.
    model : {"similarity", "affine"}
        The model; with "affine" a level with fewer than :data:`MIN_AFFINE_LANDMARKS` landmarks,
        or whose landmarks are (nearly) coplanar, falls back to a similarity.
    max_scale_change : float
        A fit whose scale differs from 1 by more than this, or whose linear part is singular or
        mirrors, is refused (landmarks misnamed or misplaced).

    Returns
    -------
    dict of str to LevelFit
        Levels cranial to caudal; levels with fewer than :data:`MIN_SIMILARITY_LANDMARKS`
        common landmarks are absent.

    Raises
    ------
    SegmentationError
        Unknown model; a fit refused as above (names the level and its landmarks).
    """
    if model not in ("affine", "similarity"):
        raise SegmentationError(f"unknown fit model {model!r}; expected 'affine' or 'similarity'")
    template = landmarks_by_level(template_landmarks)
    case = landmarks_by_level(case_landmarks)
    fits: dict[str, LevelFit] = {}
    for level in VERTEBRAL_LEVELS:
        if level not in case or level not in template:
            continue
        names = tuple(sorted(set(case[level]) & set(template[level])))
        if len(names) < MIN_SIMILARITY_LANDMARKS:
            continue
        source = np.array([template[level][n] for n in names])
        target = np.array([case[level][n] for n in names])
        spread = np.linalg.svd(source - source.mean(axis=0), compute_uv=False)
        if spread[1] < 1.0:
            continue  # collinear: no orientation
        use = model
        if len(names) < MIN_AFFINE_LANDMARKS or spread[2] < 2.0:
            use = "similarity"
        matrix = _affine(source, target) if use == "affine" else _similarity(source, target)
        det = float(np.linalg.det(matrix[:3, :3]))
        scale = float(np.cbrt(det)) if det > 0 else 0.0
        if det <= 0 or abs(scale - 1.0) > max_scale_change:
            raise SegmentationError(
                f"the {level} landmarks ({', '.join(names)}) do not fit the lumbar model "
                f"(scale {scale:.2f}); check their names and positions"
            )
        moved = source @ matrix[:3, :3].T + matrix[:3, 3]
        rms = float(np.sqrt(np.mean(np.sum((moved - target) ** 2, axis=1))))
        fits[level] = LevelFit(level, matrix, use, names, rms, scale)
    return fits
