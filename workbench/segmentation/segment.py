"""Segment a lumbar MRI by fitting the phantom's parametric spine to the patient's landmarks.

Method (no model weights; everything comes from the workbench itself):

1. A *template*: the parametric lumbar phantom (:func:`workbench.phantom.anatomy.build_phantom`,
   seed :attr:`SegmentParameters.template_seed`, 0.5 mm) with its label map, level map and named
   landmarks.
2. Per vertebral level, ``TemplateToMri`` from the landmarks the case names in the ``Mri``
   frame (:func:`workbench.segmentation.fit.fit_level_transforms`: a similarity by default, or
   an affine transform with >= 6 landmarks).
3. Rendering on the MRI grid: each vertebra's bone is the template vertebra carried by its own
   transform (spinous process, laminae, articular and transverse processes, pedicles, body;
   S1 as sacrum), labelled with its level and, for paired parts, its side. The canal (epidural
   fat, dura, CSF, cauda equina), discs, facet joint spaces, ligaments and the exiting nerve
   roots and ganglia (by level and side: the nerve-root corridors) come from the template
   carried by the transform of the level whose territory (nearest body-centre plane) holds the
   voxel.
4. The body and the skin from the MRI's intensities: smoothed signal above a fraction of its
   99.5th percentile, largest component, holes filled; skin = the outer
   :attr:`SegmentParameters.skin_thickness_mm` where the body meets air inside the field of view.
   Inside the body, everything not segmented is ``unlabelled`` (tissue unknown), never guessed:
   muscles, vessels and kidneys are not segmented.

The result is a :class:`~workbench.anatomy.LabelMap` on the MRI's grid whose table names every
value (``spinous_process_L4``, ``transverse_process_L4_left``, ``nerve_root_L4_left``, ``csf``),
with provenance. Frames: docs/frames.md (LPS mm). Figures: docs/segmentation.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Mapping

import numpy as np
import SimpleITK as sitk

from workbench import __version__
from workbench.anatomy import LEVEL_NAMES, Label, LabelMap, format_label_name
from workbench.frames import image_index_to_physical
from workbench.segmentation.fit import LevelFit, SegmentationError, fit_level_transforms

__all__ = [
    "METHOD",
    "SegmentParameters",
    "Segmentation",
    "segment_mri",
    "template_landmarks",
]

#: Method name written into the provenance.
METHOD = "landmark-driven fit of the parametric lumbar phantom (per-level transforms) + MRI body mask"

ProgressCallback = Callable[[str], None]

_BONE_CLASSES = {
    Label.VERTEBRAL_BODY: None,
    Label.PEDICLE: "side",
    Label.LAMINA: None,
    Label.SPINOUS_PROCESS: None,
    Label.TRANSVERSE_PROCESS: "side",
    Label.ARTICULAR_PROCESS: "side",
    Label.SACRUM: None,
}
#: Non-bone template classes carried by the territory transform; "level" ones get level and side.
_SOFT_CLASSES = {
    Label.EPIDURAL_FAT: None,
    Label.DURA: None,
    Label.CSF: None,
    Label.NERVE_ROOT: "level",
    Label.DORSAL_ROOT_GANGLION: "level",
    Label.DISC_ANNULUS: None,
    Label.DISC_NUCLEUS: None,
    Label.FACET_JOINT: None,
    Label.LIGAMENT: None,
}
#: Canal classes (the canal Dice counts these and the cauda equina).
CANAL_NAMES = ("EPIDURAL_FAT", "DURA", "CSF")


@dataclass(frozen=True)
class SegmentParameters:
    """Parameters of :func:`segment_mri`.

    Attributes
    ----------
    template_seed : int
        Seed of the template phantom (its dimensions' variation); 0.
    template_spacing_mm : float
        Voxel size of the template label map, mm.
    fit_model : str
        ``"similarity"`` (default) or ``"affine"`` per level. With exact landmarks an affine fit
        follows the vertebra's shape closer; with 1 mm of landmark error the similarity was better
        on every development case (docs/segmentation.md).
    roi_margin_mm : float
        The spine is rendered inside the box of the fitted landmarks grown by this, mm.
    cauda_fraction : float
        A template nerve-root voxel nearer the midline than this fraction of the template's
        pedicle distance is cauda equina (canal, no level); farther out it is the exiting root
        of its level and side.
    body_threshold_fraction : float
        Body = smoothed MRI above this fraction of the 99.5th intensity percentile.
    body_smoothing_mm : float
        Gaussian sigma of that smoothing, mm.
    skin_thickness_mm : float
        Thickness of the skin shell, mm.
    """

    template_seed: int = 0
    template_spacing_mm: float = 0.5
    fit_model: str = "similarity"
    roi_margin_mm: float = 35.0
    cauda_fraction: float = 0.55
    body_threshold_fraction: float = 0.1
    body_smoothing_mm: float = 2.0
    skin_thickness_mm: float = 2.0


@dataclass
class Segmentation:
    """A segmented MRI.

    Attributes
    ----------
    label_map : LabelMap
        On the MRI's grid, with its table (value -> label-table name).
    fits : dict of str to LevelFit
        The per-level transforms.
    provenance : dict
        Method, parameters, software version, input digest, fitted and missing levels, timing.
    """

    label_map: LabelMap
    fits: dict[str, LevelFit]
    provenance: dict = field(default_factory=dict)

    @property
    def levels(self) -> tuple[str, ...]:
        """The segmented vertebral levels, cranial to caudal."""
        return tuple(self.fits)


@dataclass(frozen=True)
class _Template:
    labels: np.ndarray  # (Z, Y, X) uint8 workbench encoding
    levels: np.ndarray  # (Z, Y, X) uint8 level index
    origin_lps: np.ndarray
    spacing_mm: float
    landmarks_lps: dict
    lps_to_local: dict  # level -> (4, 4) LPS -> vertebra local (u left, v posterior, w superior)
    pedicle_u_mm: dict  # level -> |u| of the pedicle landmarks


@lru_cache(maxsize=1)
def _template(seed: int, spacing_mm: float) -> _Template:
    from workbench.phantom.anatomy import SpineParameters, build_phantom

    phantom = build_phantom(SpineParameters(seed=seed, spacing_mm=spacing_mm))
    to_local = {level: np.linalg.inv(frame) for level, frame in phantom.vertebra_frames_lps.items()}
    pedicle = {}
    for level, matrix in to_local.items():
        point = phantom.landmarks_lps.get(f"{level} left pedicle")
        pedicle[level] = abs(float((matrix[:3, :3] @ point + matrix[:3, 3])[0])) if point is not None else 15.0
    return _Template(
        labels=sitk.GetArrayFromImage(phantom.labels),
        levels=sitk.GetArrayFromImage(phantom.levels),
        origin_lps=np.array(phantom.labels.GetOrigin()),
        spacing_mm=float(phantom.labels.GetSpacing()[0]),
        landmarks_lps={name: np.asarray(p, dtype=float) for name, p in phantom.landmarks_lps.items()},
        lps_to_local=to_local,
        pedicle_u_mm=pedicle,
    )


def template_landmarks(parameters: SegmentParameters | None = None) -> dict[str, np.ndarray]:
    """The template phantom's named landmarks (LPS mm): the names :func:`segment_mri` reads."""
    parameters = parameters or SegmentParameters()
    return dict(_template(parameters.template_seed, parameters.template_spacing_mm).landmarks_lps)


# -- body -------------------------------------------------------------------------------------------


def body_mask(mri: sitk.Image, parameters: SegmentParameters) -> np.ndarray:
    """(K, J, I) bool: inside the body, from the MRI's intensities (module docstring, step 4)."""
    from scipy import ndimage

    image = sitk.Cast(mri, sitk.sitkFloat32)
    smooth = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(image, parameters.body_smoothing_mm))
    top = float(np.percentile(smooth, 99.5))
    if top <= 0:
        raise SegmentationError("the MRI is blank (no signal): nothing to segment")
    body = smooth > parameters.body_threshold_fraction * top
    components, count = ndimage.label(body)
    if count > 1:
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        body = components == int(np.argmax(sizes))
    return ndimage.binary_fill_holes(body)


def _skin(body: np.ndarray, spacing_kji: np.ndarray, thickness_mm: float) -> np.ndarray:
    from scipy import ndimage

    radius = np.maximum(1, np.rint(thickness_mm / spacing_kji)).astype(int)
    structure = np.ones(tuple(2 * r + 1 for r in radius), bool)
    inner = ndimage.binary_erosion(body, structure=structure, border_value=1)
    return body & ~inner


# -- rendering --------------------------------------------------------------------------------------


class _Table:
    """Label-table builder: name -> value, values from 1 up (0 is air)."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {"air": 0}

    def value(self, name: str) -> int:
        if name not in self.values:
            self.values[name] = len(self.values)
        return self.values[name]

    def names(self) -> dict[int, str]:
        return {value: name for name, value in self.values.items()}


def _roi(mri: sitk.Image, fits: Mapping[str, LevelFit], landmarks: Mapping[str, np.ndarray], margin_mm: float):
    """Index box (lo_ijk, hi_ijk exclusive) of the fitted levels' landmarks grown by ``margin_mm``."""
    used = {name for fit in fits.values() for name in fit.landmarks}
    points = np.array([landmarks[name] for name in used])
    lo, hi = points.min(axis=0) - margin_mm, points.max(axis=0) + margin_mm
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    matrix = image_index_to_physical(mri.GetOrigin(), mri.GetSpacing(), mri.GetDirection())
    ijk = corners @ np.linalg.inv(matrix)[:3, :3].T + np.linalg.inv(matrix)[:3, 3]
    size = np.array(mri.GetSize())
    lo_ijk = np.clip(np.floor(ijk.min(axis=0)).astype(int), 0, size)
    hi_ijk = np.clip(np.ceil(ijk.max(axis=0)).astype(int) + 1, 0, size)
    return lo_ijk, hi_ijk, matrix


def _render_spine(mri: sitk.Image, fits, landmarks, template: _Template, parameters: SegmentParameters, table: _Table):
    """(values, lo_ijk, hi_ijk): label values of the ROI box, (k, j, i) indexed; 0 = not spine."""
    lo, hi, matrix = _roi(mri, fits, landmarks, parameters.roi_margin_mm)
    shape_kji = tuple(int(v) for v in (hi - lo)[::-1])
    out = np.zeros(shape_kji, np.int32)
    if min(shape_kji) <= 0:
        return out, lo, hi
    k, j, i = np.meshgrid(*(np.arange(lo[a], hi[a]) for a in (2, 1, 0)), indexing="ij")
    ijk = np.stack([i.ravel(), j.ravel(), k.ravel()], axis=1).astype(float)
    points = ijk @ matrix[:3, :3].T + matrix[:3, 3]
    n = len(points)
    size_zyx = np.array(template.labels.shape)
    best_w = np.full(n, np.inf)
    best_label = np.zeros(n, np.uint8)
    best_level = np.full(n, -1, np.int16)
    best_u = np.zeros(n)
    bone_code = np.zeros(n, np.int32)
    levels = list(fits)
    for index, level in enumerate(levels):
        fit = fits[level]
        mri_to_template = np.linalg.inv(fit.template_to_mri)
        q = points @ mri_to_template[:3, :3].T + mri_to_template[:3, 3]
        zyx = np.rint((q - template.origin_lps) / template.spacing_mm).astype(np.int64)[:, ::-1]
        inside = np.all((zyx >= 0) & (zyx < size_zyx), axis=1)
        flat = np.ravel_multi_index(tuple(np.clip(zyx, 0, size_zyx - 1).T), template.labels.shape)
        labels = np.where(inside, template.labels.ravel()[flat], 0)
        vertebra = np.where(inside, template.levels.ravel()[flat], 0)
        to_local = template.lps_to_local[level]
        local = q @ to_local[:3, :3].T + to_local[:3, 3]
        own = vertebra == LEVEL_NAMES.index(level)
        for label, sided in _BONE_CLASSES.items():
            for side, where_side in (("left", local[:, 0] >= 0), ("right", local[:, 0] < 0)):
                hit = own & (labels == int(label)) & (where_side if sided else True)
                if hit.any():
                    bone_code[hit] = table.value(format_label_name(label.name, level, side if sided else None))
                if not sided:
                    break
        closer = np.abs(local[:, 2]) < best_w
        best_w[closer] = np.abs(local[closer, 2])
        best_label[closer] = labels[closer]
        best_level[closer] = index
        best_u[closer] = local[closer, 0]
    codes = np.zeros(n, np.int32)
    for label, leveled in _SOFT_CLASSES.items():
        hit = best_label == int(label)
        if not hit.any():
            continue
        if not leveled:
            codes[hit] = table.value(label.name.lower())
            continue
        for index, level in enumerate(levels):
            at_level = hit & (best_level == index)
            cauda = at_level & (np.abs(best_u) < parameters.cauda_fraction * template.pedicle_u_mm.get(level, 15.0))
            if label == Label.NERVE_ROOT and cauda.any():
                codes[cauda] = table.value("nerve_root")
            for side, where_side in (("left", best_u >= 0), ("right", best_u < 0)):
                sel = at_level & where_side & (~cauda if label == Label.NERVE_ROOT else True)
                if sel.any():
                    codes[sel] = table.value(format_label_name(label.name, level, side))
    codes[bone_code > 0] = bone_code[bone_code > 0]
    return codes.reshape(shape_kji), lo, hi


def _digest(mri: sitk.Image, landmarks: Mapping[str, np.ndarray]) -> str:
    sha = hashlib.sha256()
    sha.update(np.ascontiguousarray(sitk.GetArrayViewFromImage(mri)).tobytes())
    sha.update(json.dumps([mri.GetOrigin(), mri.GetSpacing(), mri.GetDirection()]).encode())
    sha.update(json.dumps({k: [round(float(v), 4) for v in p] for k, p in sorted(landmarks.items())}).encode())
    return sha.hexdigest()


def segment_mri(
    mri: sitk.Image,
    landmarks_mri: Mapping[str, np.ndarray],
    parameters: SegmentParameters | None = None,
    progress: ProgressCallback | None = None,
    input_digest: str | None = None,
) -> Segmentation:
    """Segment a lumbar MRI (module docstring).

    Parameters
    ----------
    mri : SimpleITK.Image
        3D scalar MRI in LPS mm (the ``Mri`` frame).
    landmarks_mri : mapping of str to (3,) float array
        Named landmarks in the ``Mri`` frame, LPS mm (``"L4 spinous process tip"``,
        ``"L4-L5 left facet joint"``; :data:`workbench.segmentation.fit.LANDMARK_KINDS`). At least
        three per level to segment that level.
    parameters : SegmentParameters, optional
    progress : callable(str), optional
        Called with a line before each stage.
    input_digest : str, optional
        Digest recorded as the input's (default: SHA-256 of the MRI voxels, geometry and landmarks).

    Returns
    -------
    Segmentation

    Raises
    ------
    SegmentationError
        Not a 3D scalar image, no level with enough named landmarks, landmarks outside the MRI,
        a level whose landmarks do not fit the lumbar model.
    """
    parameters = parameters or SegmentParameters()
    say = progress or (lambda message: None)
    started = time.perf_counter()
    if not isinstance(mri, sitk.Image) or mri.GetDimension() != 3 or mri.GetNumberOfComponentsPerPixel() != 1:
        raise SegmentationError("the MRI must be a 3D scalar image")
    landmarks = {name: np.asarray(p, dtype=float).reshape(3) for name, p in landmarks_mri.items()}
    say(f"building the template spine (phantom seed {parameters.template_seed}, {parameters.template_spacing_mm:g} mm)")
    template = _template(parameters.template_seed, parameters.template_spacing_mm)
    fits = fit_level_transforms(template.landmarks_lps, landmarks, parameters.fit_model)
    if not fits:
        raise SegmentationError(
            "no vertebral level has three named landmarks in the Mri frame (e.g. 'L4 spinous process tip', "
            "'L4 left transverse process tip', 'L4-L5 left facet joint'); place landmarks first"
        )
    say("fitted " + ", ".join(f"{lv} ({f.model}, {f.rms_residual_mm:.1f} mm RMS)" for lv, f in fits.items()))
    lo, hi, _ = _roi(mri, fits, landmarks, 0.0)
    if np.any(hi - lo <= 1):
        raise SegmentationError("the landmarks lie outside the MRI: nothing of the spine to segment")

    say("body and skin from the MRI intensities")
    table = _Table()
    body = body_mask(mri, parameters)
    spacing_kji = np.array(mri.GetSpacing())[::-1]
    skin = _skin(body, spacing_kji, parameters.skin_thickness_mm)
    values = np.zeros(body.shape, np.int32)
    values[body] = table.value("unlabelled")
    if skin.any():
        values[skin] = table.value("skin")

    say(f"rendering {len(fits)} vertebrae, canal and nerve roots on the MRI grid")
    spine, lo, hi = _render_spine(mri, fits, landmarks, template, parameters, table)
    box = values[lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]]
    box[spine > 0] = spine[spine > 0]
    names = table.names()
    dtype = np.uint8 if max(names) < 256 else np.uint16
    image = sitk.GetImageFromArray(values.astype(dtype))
    image.CopyInformation(mri)
    label_map = LabelMap(image, names).check_values()
    seconds = time.perf_counter() - started
    all_levels = sorted({m for m in _levels_named(landmarks)}, key=LEVEL_NAMES.index)
    provenance = {
        "method": METHOD,
        "parameters": dataclasses.asdict(parameters),
        "software": f"workbench {__version__}",
        "input_sha256": input_digest or _digest(mri, landmarks),
        "template": f"phantom seed {parameters.template_seed} (BMI 25, age 45, lordosis 45 deg)",
        "levels": list(fits),
        "levels_named_but_not_fitted": [lv for lv in all_levels if lv not in fits],
        "fits": [fit.to_dict() for fit in fits.values()],
        "not_segmented": ["muscles", "fat", "vessels (aorta, IVC, radicular arteries)", "kidneys"],
        "seconds": round(seconds, 2),
    }
    return Segmentation(label_map, dict(fits), provenance)


def _levels_named(landmarks: Mapping[str, np.ndarray]) -> set[str]:
    from workbench.segmentation.fit import landmarks_by_level

    return {level for level in landmarks_by_level(landmarks) if level in LEVEL_NAMES}
