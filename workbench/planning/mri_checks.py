"""Checks of a needle path against the MRI alone (no label map): the one home of label-free checks.

The body is segmented from the MRI intensities by :meth:`BodyMask.from_image`:

1. Gaussian smoothing, sigma :data:`BODY_SMOOTHING_MM` (1 mm, ``SmoothingRecursiveGaussian``, in mm);
2. a threshold between the air background and tissue from the histogram of the smoothed image by
   the triangle method (``TriangleThresholdImageFilter``): the air background is the dominant
   peak of an MRI histogram, and the triangle method puts the cut at the foot of that peak, so
   dim tissue (muscle, the coil's far side) stays in the body where Otsu would cut it out;
3. a morphological closing with a ball of :data:`BODY_CLOSING_MM` (5 mm, ``BinaryMorphologicalClosing``)
   so thin dark gaps (fascia, flow voids) do not open channels into the body;
4. the largest connected component (``ConnectedComponent`` + ``RelabelComponent``);
5. holes filled slice by slice in the image planes most nearly axial (``scipy.ndimage.binary_fill_holes``
   with an in-plane structuring element on a volume padded by one empty slice at each end: one call
   fills every slice, interior cavities such as bowel gas become body);
6. a check that the background is air: its median signal must be at most
   :data:`MAX_AIR_TO_BODY_SIGNAL` (15 %) of the body's median. Measured: 9 % on the real SCT lumbar T2
   and on the synthetic demo MRI, 20 % on the TPTBox T2w crop (``../shared/data/
   spine-crops-tptbox-mri-ct``), which holds no air at all: its "background" is muscle. Above it the
   mask is kept but :attr:`BodyMask.no_air` says why the skin is not in the image, and the skin and
   air checks are "not checked" instead of measuring a muscle boundary as the skin.

The surface is the boundary between body and background voxels. :attr:`BodyMask.signed_distance_kji`
is the distance to it, mm (negative inside the body): the mean of the signed Maurer distance maps
of the mask and of its complement, so its zero level lies on the voxel faces between body and
background, not on voxel centres. Measured on the real SCT lumbar T2 (``../shared/data/
mri-nifti-sct-t2-lumbar``, 1 mm voxels), the posterior skin of the mask lies 1-2.5 mm outside the
half-maximum edge of the skin in the image (tests/test_planning_mri_checks.py).

:func:`check_path` then checks one trajectory (points LPS mm, ``Mri`` frame, docs/frames.md):

- target inside the MRI volume, entry inside the MRI volume (outside: blocked, with the distance);
- entry on the skin: the distance from the entry to the body surface is within the skin tolerance;
- path through air: the length of the path entry -> target outside the body, beyond the skin tolerance.

The needle length check is :mod:`workbench.planning.safety`'s. A check that cannot run (no MRI, the
entry outside the image, no body found) is reported ``"not checked"`` with the reason, one that ran on
part of the path only (the rest outside the MRI) ``"incomplete"``: never ``"ok"``. In a safety report
both make the status at best "incomplete" (:data:`workbench.planning.safety.STATUS_ORDER`).
Thresholds and defaults: docs/planning.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from workbench.errors import PlanError
from workbench.frames import apply_affine, image_index_to_physical
from workbench.planning.model import Trajectory

__all__ = [
    "BODY_CLOSING_MM",
    "BODY_SMOOTHING_MM",
    "CHECK_STATUSES",
    "MAX_AIR_TO_BODY_SIGNAL",
    "DEFAULT_SKIN_TOLERANCE_MM",
    "BodyMask",
    "CheckResult",
    "check_path",
    "mri_not_checked",
]

#: Default distance from the entry to the body surface that still counts as "on the skin", and the
#: length of path outside the body that is tolerated, mm (``SafetyThresholds.skin_tolerance_mm``).
DEFAULT_SKIN_TOLERANCE_MM = 5.0
#: Gaussian sigma of the smoothing before the body threshold, mm.
BODY_SMOOTHING_MM = 1.0
#: Radius of the ball of the morphological closing of the body mask, mm.
BODY_CLOSING_MM = 5.0
#: Largest ratio of the background's median signal to the body's for the background to count as air.
MAX_AIR_TO_BODY_SIGNAL = 0.15
#: Outcomes of one check: the report levels best first ("incomplete": ran on part of what it checks),
#: then "not checked" (could not run; a report counts it as "incomplete").
CHECK_STATUSES = ("ok", "incomplete", "warning", "blocked", "not checked")

CHECK_TARGET_IN_MRI = "target inside the MRI"
CHECK_ENTRY_IN_MRI = "entry inside the MRI"
CHECK_ENTRY_ON_SKIN = "entry on the skin"
CHECK_PATH_THROUGH_AIR = "path through air"
MRI_CHECK_NAMES = (CHECK_TARGET_IN_MRI, CHECK_ENTRY_IN_MRI, CHECK_ENTRY_ON_SKIN, CHECK_PATH_THROUGH_AIR)


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one safety check of one trajectory.

    Attributes
    ----------
    name : str
        E.g. ``"entry on the skin"``.
    status : {"ok", "incomplete", "warning", "blocked", "not checked"}
    detail : str
        One line a physician reads (with the measured value), or why the check could not run.
    value_mm : float or None
        The measured value, mm (distance outside the MRI, distance to the skin, length in air...).
    """

    name: str
    status: str
    detail: str
    value_mm: float | None = None

    def __post_init__(self) -> None:
        if self.status not in CHECK_STATUSES:
            raise PlanError(f"check status must be one of {CHECK_STATUSES}, got {self.status!r}")

    @property
    def reason(self) -> str | None:
        """The line for a safety report's reasons: None when ok; ``"not checked: <name> (<why>)"`` when it could not run."""
        if self.status == "ok":
            return None
        if self.status == "not checked":
            return f"not checked: {self.name} ({self.detail})"
        return self.detail

    def to_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "detail": self.detail, "value_mm": self.value_mm}


def _most_axial_array_axis(image: sitk.Image) -> int:
    """The numpy (k, j, i) axis whose image axis is most nearly along S (LPS z)."""
    direction = np.reshape(image.GetDirection(), (3, 3))  # columns: image axes i, j, k in LPS
    image_axis = int(np.argmax(np.abs(direction[2, :])))
    return 2 - image_axis


@dataclass(frozen=True, eq=False)
class BodyMask:
    """The patient's body segmented from MRI intensities, and the distance to its surface.

    Attributes
    ----------
    mask_kji : (K, J, I) bool array
        True inside the body, indexed [k, j, i] like the MRI.
    signed_distance_kji : (K, J, I) float32 array
        Distance to the body surface, mm: negative inside the body, positive outside.
    mri_voxel_to_mri : (4, 4) float array
        ``MriVoxelToMri`` of the MRI (voxel index i, j, k to LPS mm; docs/frames.md).
    threshold : float or None
        The intensity threshold used (in the MRI's units, after smoothing); None for a label map.
    source : {"MRI", "label map"}
        What the body was segmented from.
    no_air : str or None
        Why the MRI holds no air (its background is as bright as tissue: a crop inside the body), so
        the skin is not in it; None when it does.
    """

    mask_kji: np.ndarray
    signed_distance_kji: np.ndarray
    mri_voxel_to_mri: np.ndarray
    threshold: float | None
    source: str = "MRI"
    no_air: str | None = None

    # -- construction --------------------------------------------------------------------
    @classmethod
    def from_image(cls, image: sitk.Image) -> "BodyMask":
        """Segment the body of a scalar 3D MRI (``sitk.Image`` in LPS, as loaded by :mod:`workbench.io.volume`)."""
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            raise PlanError("the body mask needs a scalar 3D MRI")
        smoothed = sitk.SmoothingRecursiveGaussian(sitk.Cast(image, sitk.sitkFloat32), BODY_SMOOTHING_MM)
        triangle = sitk.TriangleThresholdImageFilter()
        triangle.SetInsideValue(0)
        triangle.SetOutsideValue(1)
        mask = triangle.Execute(smoothed)
        radius_px = [max(1, int(round(BODY_CLOSING_MM / s))) for s in image.GetSpacing()]
        mask = sitk.BinaryMorphologicalClosing(mask, radius_px, sitk.sitkBall)
        components = sitk.RelabelComponent(sitk.ConnectedComponent(mask), sortByObjectSize=True)
        mask_kji = sitk.GetArrayFromImage(components) == 1
        axis = _most_axial_array_axis(image)
        structure = np.zeros((3, 3, 3), dtype=bool)
        structure[tuple(1 if a == axis else slice(None) for a in range(3))] = ndimage.generate_binary_structure(2, 1)
        padding = [(1, 1) if a == axis else (0, 0) for a in range(3)]
        filled = ndimage.binary_fill_holes(np.pad(mask_kji, padding), structure=structure)
        mask_kji = filled[tuple(slice(1, -1) if a == axis else slice(None) for a in range(3))]
        mri_voxel_to_mri = image_index_to_physical(image.GetOrigin(), image.GetSpacing(), image.GetDirection())
        body = cls._from_mask(mask_kji, mri_voxel_to_mri, float(triangle.GetThreshold()), "MRI")
        voxels_kji = sitk.GetArrayViewFromImage(image)
        if mask_kji.any() and not mask_kji.all():
            ratio = float(np.median(voxels_kji[~mask_kji])) / max(float(np.median(voxels_kji[mask_kji])), 1e-12)
            if ratio > MAX_AIR_TO_BODY_SIGNAL:
                why = (f"no air in the MRI: its background has {ratio:.0%} of the body's median signal "
                       f"(air: at most {MAX_AIR_TO_BODY_SIGNAL:.0%}), so the skin is not in the image")
                body = dataclasses.replace(body, no_air=why)
        return body

    @classmethod
    def from_volume(cls, volume) -> "BodyMask":
        """From a :class:`~workbench.io.volume.LoadedVolume`."""
        return cls.from_image(volume.image)

    @classmethod
    def from_array(cls, voxels_kji: np.ndarray, mri_voxel_to_mri: np.ndarray) -> "BodyMask":
        """From a (K, J, I) intensity array and its (4, 4) ``MriVoxelToMri`` (e.g. a report's ``VolumeSampler``)."""
        return cls.from_image(_image_of(np.asarray(voxels_kji, dtype=np.float32), mri_voxel_to_mri))

    @classmethod
    def from_label_map(cls, label_map, lo_mri: np.ndarray, hi_mri: np.ndarray) -> "BodyMask":
        """The body (every label but AIR) of a label map, in the box ``lo_mri``..``hi_mri`` (LPS mm).

        For paths that leave the MRI where a label map covers them (a thin MRI slab that stops
        short of the skin, as the demo's did before issue 17; the label map holds the skin).
        """
        from workbench.anatomy import Label

        values_kji, first_ijk = label_map.crop(np.asarray(lo_mri, dtype=float), np.asarray(hi_mri, dtype=float))
        shift = np.eye(4)
        shift[:3, 3] = first_ijk
        return cls._from_mask(~label_map.mask([Label.AIR], values_kji), label_map.mri_voxel_to_mri.matrix @ shift, None, "label map")

    @classmethod
    def _from_mask(cls, mask_kji: np.ndarray, mri_voxel_to_mri: np.ndarray, threshold, source: str) -> "BodyMask":
        mask_kji = np.asarray(mask_kji, dtype=bool)
        if not mask_kji.any() or mask_kji.all():
            distance_kji = np.full(mask_kji.shape, np.inf if not mask_kji.any() else -np.inf, dtype=np.float32)
        else:
            mask = _image_of(mask_kji.astype(np.uint8), mri_voxel_to_mri)

            def maurer(binary: sitk.Image) -> np.ndarray:
                distance = sitk.SignedMaurerDistanceMap(binary, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
                return sitk.GetArrayFromImage(distance)

            # Maurer puts 0 on the outermost voxel centres of the object; the mean with the
            # complement's map (sign flipped) puts the zero level halfway, on the voxel faces.
            distance_kji = ((maurer(mask) - maurer(sitk.BinaryNot(mask))) / 2.0).astype(np.float32)
        return cls(mask_kji, distance_kji, np.asarray(mri_voxel_to_mri, dtype=float), threshold, source)

    # -- geometry ------------------------------------------------------------------------
    @property
    def size_ijk(self) -> np.ndarray:
        """(3,) voxel counts along i, j, k."""
        return np.array(self.mask_kji.shape[::-1])

    def to_ijk(self, points_mri: np.ndarray) -> np.ndarray:
        """(N, 3) continuous voxel indices (i, j, k) of (N, 3) LPS points."""
        return apply_affine(np.linalg.inv(self.mri_voxel_to_mri), np.atleast_2d(np.asarray(points_mri, dtype=float)))

    def distance_outside_volume_mm(self, points_mri) -> np.ndarray:
        """(N,) distance, mm, from each LPS point to the MRI volume (0 inside).

        The volume is the box of the voxels (half a voxel beyond the outer voxel centres).
        """
        ijk = self.to_ijk(points_mri)
        nearest_ijk = np.clip(ijk, -0.5, self.size_ijk - 0.5)
        nearest_mri = apply_affine(self.mri_voxel_to_mri, nearest_ijk)
        return np.linalg.norm(np.atleast_2d(np.asarray(points_mri, dtype=float)) - nearest_mri, axis=1)

    def surface_distance_mm(self, points_mri) -> np.ndarray:
        """(N,) signed distance to the body surface, mm (negative inside), linearly interpolated; NaN outside the MRI."""
        ijk = self.to_ijk(points_mri)
        values = ndimage.map_coordinates(self.signed_distance_kji, ijk[:, ::-1].T, order=1, mode="nearest")
        outside = np.any((ijk < -0.5) | (ijk > self.size_ijk - 0.5), axis=1)
        return np.where(outside, np.nan, values)

    def outward_normal_at(self, point_mri, step_mm: float = 1.0) -> tuple[float, float, float] | None:
        """Outward unit normal (LPS) of the body surface near ``point_mri``: the gradient of the distance.

        None outside the MRI or where the distance is flat.
        """
        if self.no_air is not None:
            return None
        point_mri = np.asarray(point_mri, dtype=float)
        offsets_mri = np.vstack([np.eye(3), -np.eye(3)]) * step_mm
        values = self.surface_distance_mm(point_mri + offsets_mri)
        if not np.all(np.isfinite(values)):
            return None
        gradient = (values[:3] - values[3:]) / (2.0 * step_mm)
        norm = float(np.linalg.norm(gradient))
        return None if norm < 1e-6 else tuple(float(v) for v in gradient / norm)

    @property
    def empty(self) -> bool:
        return not bool(self.mask_kji.any())


def _image_of(array_kji: np.ndarray, mri_voxel_to_mri: np.ndarray) -> sitk.Image:
    """A ``sitk.Image`` of a (K, J, I) array with the geometry of a (4, 4) ``MriVoxelToMri``."""
    matrix = np.asarray(mri_voxel_to_mri, dtype=float)
    spacing_mm = np.linalg.norm(matrix[:3, :3], axis=0)
    image = sitk.GetImageFromArray(array_kji)
    image.SetSpacing([float(v) for v in spacing_mm])
    image.SetOrigin([float(v) for v in matrix[:3, 3]])
    image.SetDirection([float(v) for v in (matrix[:3, :3] / spacing_mm).ravel()])
    return image


#: Margin around a path's box when the label map stands in for the MRI's body, mm.
_LABEL_MAP_MARGIN_MM = 20.0
#: Distances below this count as inside the MRI volume (round-off of the voxel mapping), mm.
_INSIDE_EPSILON_MM = 1e-6


def mri_not_checked(why: str) -> tuple[CheckResult, ...]:
    """Every MRI check reported as not checked, with the reason (e.g. no MRI given)."""
    return tuple(CheckResult(name, "not checked", why) for name in MRI_CHECK_NAMES)


def _covers(label_map, points_mri: np.ndarray) -> bool:
    """The label map covers the points and knows where the body ends (its table names AIR).

    An imported segmentation's value 0 is "unlabelled", not air: its map cannot stand in for the body.
    """
    from workbench.anatomy import Label

    if label_map is None or not label_map.values_of([Label.AIR]):
        return False
    return bool(np.all(label_map.values_at(points_mri) >= 0))


def check_path(
    trajectory: Trajectory,
    body: BodyMask | None,
    skin_tolerance_mm: float = DEFAULT_SKIN_TOLERANCE_MM,
    label_map=None,
) -> tuple[CheckResult, ...]:
    """The MRI-only checks of one trajectory, in the order of :data:`MRI_CHECK_NAMES`.

    Parameters
    ----------
    trajectory : Trajectory
        Target and entry, LPS mm (``Mri`` frame).
    body : BodyMask or None
        The body of the planning MRI (:meth:`BodyMask.from_volume`); None: every check is
        "not checked" (no MRI).
    skin_tolerance_mm : float
        Largest distance from the entry to the body surface still "on the skin", and the longest
        path outside the body that is tolerated, mm.
    label_map : workbench.anatomy.LabelMap, optional
        Only for an entry outside the MRI: where the label map covers the whole path and its table
        names AIR, the entry outside the MRI is a warning instead of blocked, and the skin and air
        checks use the label map's body (every label but AIR). A target outside the MRI is always blocked.

    Returns
    -------
    tuple of CheckResult
        Target inside the MRI, entry inside the MRI, entry on the skin, path through air.
    """
    if body is None:
        return mri_not_checked("no MRI given")
    entry_mri, target_mri = np.array(trajectory.entry_lps_mm), np.array(trajectory.target_lps_mm)
    target_outside_mm, entry_outside_mm = (float(v) for v in body.distance_outside_volume_mm(np.array([target_mri, entry_mri])))
    results = [
        CheckResult(CHECK_TARGET_IN_MRI, "blocked", f"target is {target_outside_mm:.1f} mm outside the MRI volume", target_outside_mm)
        if target_outside_mm > _INSIDE_EPSILON_MM
        else CheckResult(CHECK_TARGET_IN_MRI, "ok", "target is inside the MRI volume", 0.0)
    ]
    path_body = body
    if entry_outside_mm <= _INSIDE_EPSILON_MM:
        results.append(CheckResult(CHECK_ENTRY_IN_MRI, "ok", "entry is inside the MRI volume", 0.0))
    elif _covers(label_map, np.array([entry_mri, target_mri])):
        margin_mm = skin_tolerance_mm + _LABEL_MAP_MARGIN_MM
        ends_mri = np.array([entry_mri, target_mri])
        path_body = BodyMask.from_label_map(label_map, ends_mri.min(axis=0) - margin_mm, ends_mri.max(axis=0) + margin_mm)
        detail = f"entry is {entry_outside_mm:.1f} mm outside the MRI volume (skin and air checked on the label map)"
        results.append(CheckResult(CHECK_ENTRY_IN_MRI, "warning", detail, entry_outside_mm))
    else:
        detail = f"entry is {entry_outside_mm:.1f} mm outside the MRI volume"
        results.append(CheckResult(CHECK_ENTRY_IN_MRI, "blocked", detail, entry_outside_mm))
    if path_body.empty or path_body.no_air is not None:
        why = "no body found in the MRI intensities" if path_body.empty else path_body.no_air
        return (*results, CheckResult(CHECK_ENTRY_ON_SKIN, "not checked", why), CheckResult(CHECK_PATH_THROUGH_AIR, "not checked", why))
    results.append(_skin_check(entry_mri, path_body, skin_tolerance_mm))
    results.append(_air_check(entry_mri, target_mri, path_body, skin_tolerance_mm))
    return tuple(results)


def _on(body: BodyMask) -> str:
    return "" if body.source == "MRI" else f" ({body.source})"


def _skin_check(entry_mri: np.ndarray, body: BodyMask, tolerance_mm: float) -> CheckResult:
    distance_mm = float(body.surface_distance_mm(entry_mri[None])[0])
    if not np.isfinite(distance_mm):
        return CheckResult(CHECK_ENTRY_ON_SKIN, "not checked", "the entry is outside the MRI")
    if abs(distance_mm) <= tolerance_mm:
        side = "outside" if distance_mm > 0 else "inside"
        detail = f"entry {abs(distance_mm):.1f} mm {side} the skin surface{_on(body)} (<= {tolerance_mm:g} mm)"
        return CheckResult(CHECK_ENTRY_ON_SKIN, "ok", detail, distance_mm)
    if distance_mm > 0:
        detail = f"entry is {distance_mm:.1f} mm outside the skin, in the air{_on(body)} (tolerance {tolerance_mm:g} mm)"
    else:
        detail = f"entry is {-distance_mm:.1f} mm under the skin surface{_on(body)}, not on the skin (tolerance {tolerance_mm:g} mm)"
    return CheckResult(CHECK_ENTRY_ON_SKIN, "blocked", detail, distance_mm)


def _air_check(entry_mri: np.ndarray, target_mri: np.ndarray, body: BodyMask, tolerance_mm: float) -> CheckResult:
    depth_mm = float(np.linalg.norm(target_mri - entry_mri))
    spacing_mm = float(np.linalg.norm(body.mri_voxel_to_mri[:3, :3], axis=0).min())
    count = max(2, int(np.ceil(depth_mm / (spacing_mm / 2.0))) + 1)
    step_mm = depth_mm / (count - 1)
    distance_mm = body.surface_distance_mm(entry_mri + np.outer(np.linspace(0.0, 1.0, count), target_mri - entry_mri))
    # per interval between samples: the part outside the body, with the distance linear along it
    start, end = distance_mm[:-1], distance_mm[1:]
    known = np.isfinite(start) & np.isfinite(end)
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing = np.where(start > 0, start, end) / np.abs(start - end)
    outside = np.where((start > 0) & (end > 0), 1.0, np.where((start > 0) ^ (end > 0), crossing, 0.0))
    air_mm = float(outside[known].sum() * step_mm)
    unknown_mm = float((~known).sum() * step_mm)
    if unknown_mm >= depth_mm - 1e-9:
        return CheckResult(CHECK_PATH_THROUGH_AIR, "not checked", "the path lies outside the MRI")
    beyond = f"; {unknown_mm:.1f} mm of the path outside the MRI not checked" if unknown_mm > 0 else ""
    if air_mm > tolerance_mm:
        detail = f"path through air {air_mm:.1f} mm{_on(body)} (outside the body; tolerance {tolerance_mm:g} mm){beyond}"
        return CheckResult(CHECK_PATH_THROUGH_AIR, "blocked", detail, air_mm)
    status = "incomplete" if unknown_mm > 0 else "ok"
    detail = f"path through air {air_mm:.1f} mm{_on(body)} (<= {tolerance_mm:g} mm){beyond}"
    return CheckResult(CHECK_PATH_THROUGH_AIR, status, detail, air_mm)
