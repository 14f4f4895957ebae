"""Where the virtual probe sits on the back: poses, the skin surface, and the imaging plane.

A :class:`ProbePose` is what a trainee controls: the point of the back (Mri x and z, mm) under
the centre of the transducer face, the rotation of the probe about the skin normal (0 =
transverse, image x towards the patient's left; 90 = sagittal, image x towards superior), the
tilt out of the image plane (fanning the beam cranially/caudally or medially/laterally) and the
rock within it. :func:`image_to_mri` turns a pose into the ``ImageToMri`` transform (MF pixels
to Mri mm) that :class:`workbench.rehearsal.imaging.RehearsalImager` renders.

The skin is the posterior-most non-air voxel of each column of the label map, found by the
label table's names (``AIR``), so imported and segmented maps with their own values work too.
Frames and naming: docs/frames.md; geometry of the probe: :class:`~workbench.phantom.ultrasound.ProbeModel`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.interpolate import RegularGridInterpolator

from workbench.anatomy import LabelMap
from workbench.phantom.ultrasound import CURVILINEAR_C5_2, ProbeModel
from workbench.rehearsal.scene import RehearsalError

__all__ = [
    "REHEARSAL_PROBE",
    "ProbePlacementError",
    "ProbePose",
    "SkinSurface",
    "image_to_mri",
    "poses_along_sweep",
    "snap_to_needle_plane",
]

#: Default rehearsal probe: the C5-2-like convex probe with 256 scan lines (the issue's speed goal).
REHEARSAL_PROBE = dataclasses.replace(CURVILINEAR_C5_2, name="C5-2 (rehearsal)", line_count=256)
#: How far the transducer face presses into the skin by default, mm (gel contact, as the sweeps).
DEFAULT_PRESS_MM = 1.0
#: Smoothing of the skin height map before normals are taken, mm (Gaussian sigma): a voxel
#: staircase must not rock the probe.
SKIN_SMOOTHING_MM = 2.0
#: Half the span over which the skin normal is measured, mm: the probe rests on the skin over a
#: footprint of about a centimetre, not on one voxel.
NORMAL_HALF_SPAN_MM = 5.0


class ProbePlacementError(RehearsalError):
    """The probe cannot be placed: no skin under it, or a pose that makes no imaging plane."""


@dataclass(frozen=True)
class ProbePose:
    """A probe position on the back.

    Attributes
    ----------
    centre_x_mm, centre_z_mm : float
        Mri x (towards patient left) and z (superior) of the point of the skin under the centre
        of the transducer face, mm.
    rotation_deg : float
        Rotation about the skin normal, degrees: 0 = transverse with image x (the marked side)
        towards the patient's left, 90 = sagittal with image x towards superior.
    tilt_deg : float
        Tilt out of the image plane (about the image x axis), degrees: positive tips the beam
        towards the image's +z (the elevation direction).
    rock_deg : float
        Rock within the image plane (about the elevation axis), degrees: positive tips the beam
        towards the marked side (+x).
    press_mm : float
        Depth the face centre is pressed into the skin along its normal, mm.
    """

    centre_x_mm: float
    centre_z_mm: float
    rotation_deg: float = 0.0
    tilt_deg: float = 0.0
    rock_deg: float = 0.0
    press_mm: float = DEFAULT_PRESS_MM

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not math.isfinite(value):
                raise ProbePlacementError(f"probe pose {field.name} must be a finite number, got {value!r}")
            object.__setattr__(self, field.name, float(value))
        if abs(self.tilt_deg) >= 80.0 or abs(self.rock_deg) >= 80.0:
            raise ProbePlacementError(
                f"probe tilt and rock must be within +-80 deg of the skin normal, got {self.tilt_deg}, {self.rock_deg}"
            )


class SkinSurface:
    """The posterior skin of a label map as a height map ``y(x, z)`` in Mri mm.

    Each column of the label map along the voxel axis closest to Mri y is searched for its most
    posterior voxel that is not ``AIR`` (by the label table's names); the skin lies half a voxel
    beyond it. Heights are smoothed over :data:`SKIN_SMOOTHING_MM` so that normals follow the
    surface, not the voxel staircase.

    Parameters
    ----------
    label_map : workbench.anatomy.LabelMap
        Label map in the Mri frame with its table. Its voxel axes must be aligned with the Mri
        axes (any order and sign), as the phantom, the demo case and imported NIfTI maps are.

    Raises
    ------
    ProbePlacementError
        If the map's axes are oblique to Mri or it holds no tissue.
    """

    def __init__(self, label_map: LabelMap):
        linear = label_map.mri_voxel_to_mri.matrix[:3, :3]
        axes = linear / np.linalg.norm(linear, axis=0)  # column a: direction of voxel axis a (i, j, k)
        owner = np.argmax(np.abs(axes), axis=1)  # voxel axis along Mri x, y, z
        if sorted(owner) != [0, 1, 2] or np.min(np.abs(axes[[0, 1, 2], owner])) < 0.999:
            raise ProbePlacementError(
                f"{label_map!r}: the skin surface needs voxel axes aligned with Mri (LPS); resample the label map first"
            )
        air = label_map.values_of(["AIR"])
        array = label_map.array  # (K, J, I): numpy axis 2 - a holds voxel axis a
        tissue = np.ones(array.shape, dtype=bool) if not air else ~np.isin(array, air)
        y_axis = int(owner[1])
        numpy_axis = 2 - y_axis
        count = array.shape[numpy_axis]
        step_y_mm = float(linear[1, y_axis])
        # Most posterior tissue voxel: largest index if the axis runs posterior, smallest otherwise.
        if step_y_mm > 0:
            index = count - 1 - np.argmax(np.flip(tissue, axis=numpy_axis), axis=numpy_axis)
        else:
            index = np.argmax(tissue, axis=numpy_axis)
        has_tissue = tissue.any(axis=numpy_axis)
        if not has_tissue.any():
            raise ProbePlacementError(f"{label_map!r}: no tissue (every voxel is AIR), so no skin")
        origin = label_map.mri_voxel_to_mri.matrix[:3, 3]
        heights_mm = origin[1] + index * step_y_mm + 0.5 * abs(step_y_mm)
        # The two remaining numpy axes hold the voxel axes along Mri x and z: index as [x, z].
        x_numpy, z_numpy = 2 - int(owner[0]), 2 - int(owner[2])
        if x_numpy > z_numpy:
            heights_mm, has_tissue = heights_mm.T, has_tissue.T
        xs_mm = origin[0] + np.arange(array.shape[x_numpy]) * linear[0, owner[0]]
        zs_mm = origin[2] + np.arange(array.shape[z_numpy]) * linear[2, owner[2]]
        if xs_mm[-1] < xs_mm[0]:
            xs_mm, heights_mm, has_tissue = xs_mm[::-1], heights_mm[::-1], has_tissue[::-1]
        if zs_mm[-1] < zs_mm[0]:
            zs_mm, heights_mm, has_tissue = zs_mm[::-1], heights_mm[:, ::-1], has_tissue[:, ::-1]
        sigma = (SKIN_SMOOTHING_MM / abs(xs_mm[1] - xs_mm[0]), SKIN_SMOOTHING_MM / abs(zs_mm[1] - zs_mm[0]))
        weight = ndimage.gaussian_filter(has_tissue.astype(float), sigma, mode="nearest")
        smooth = ndimage.gaussian_filter(np.where(has_tissue, heights_mm, 0.0), sigma, mode="nearest")
        heights_mm = np.where(has_tissue, smooth / np.maximum(weight, 1e-9), np.nan)
        self.xs_mm, self.zs_mm, self.heights_mm = xs_mm, zs_mm, heights_mm
        self._height = RegularGridInterpolator((xs_mm, zs_mm), heights_mm, bounds_error=False, fill_value=np.nan)

    def height_mm(self, x_mm, z_mm) -> np.ndarray:
        """Mri y (mm) of the posterior skin at ``(x_mm, z_mm)`` (broadcast arrays); NaN off the back."""
        x_mm, z_mm = np.broadcast_arrays(np.asarray(x_mm, float), np.asarray(z_mm, float))
        return self._height(np.stack([x_mm.ravel(), z_mm.ravel()], axis=1)).reshape(x_mm.shape)

    def point_mri(self, x_mm: float, z_mm: float) -> np.ndarray:
        """(3,) posterior skin point at Mri x, z (mm), Mri mm; :class:`ProbePlacementError` off the back."""
        y_mm = float(self.height_mm(x_mm, z_mm))
        if not math.isfinite(y_mm):
            raise ProbePlacementError(f"no skin at x = {x_mm:.1f} mm, z = {z_mm:.1f} mm: the probe is off the back")
        return np.array([float(x_mm), y_mm, float(z_mm)])

    def normal_mri(self, x_mm: float, z_mm: float) -> np.ndarray:
        """(3,) outward (posterior) unit normal of the skin at Mri x, z (mm).

        Central differences over +-:data:`NORMAL_HALF_SPAN_MM`: the plane the probe face rests on.
        """
        step = NORMAL_HALF_SPAN_MM
        heights = self.height_mm([x_mm + step, x_mm - step, x_mm, x_mm], [z_mm, z_mm, z_mm + step, z_mm - step])
        if not np.all(np.isfinite(heights)):
            raise ProbePlacementError(f"no skin around x = {x_mm:.1f} mm, z = {z_mm:.1f} mm: the probe is off the back")
        slope_x = (heights[0] - heights[1]) / (2 * step)
        slope_z = (heights[2] - heights[3]) / (2 * step)
        normal = np.array([-slope_x, 1.0, -slope_z])
        return normal / np.linalg.norm(normal)


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def _transducer_axes(pose: ProbePose, normal_mri: np.ndarray) -> np.ndarray:
    """(3, 3) columns: marker (image x), beam (image y), elevation (x cross y), unit, in Mri."""
    beam0 = -normal_mri
    rotation_rad = math.radians(pose.rotation_deg)
    preferred = np.array([math.cos(rotation_rad), 0.0, math.sin(rotation_rad)])
    marker0 = _unit(preferred - np.dot(preferred, beam0) * beam0)
    elevation0 = np.cross(marker0, beam0)
    tilt_rad, rock_rad = math.radians(pose.tilt_deg), math.radians(pose.rock_deg)
    beam1 = math.cos(tilt_rad) * beam0 + math.sin(tilt_rad) * elevation0
    beam = math.cos(rock_rad) * beam1 + math.sin(rock_rad) * marker0
    marker = math.cos(rock_rad) * marker0 - math.sin(rock_rad) * beam1
    return np.stack([marker, beam, np.cross(marker, beam)], axis=1)


def image_to_mri(pose: ProbePose, probe: ProbeModel, skin: SkinSurface) -> np.ndarray:
    """``ImageToMri`` of the probe at ``pose``: MF pixels (column, row, 0) to Mri mm.

    The centre of the transducer face sits ``pose.press_mm`` inside the skin point under
    ``(centre_x_mm, centre_z_mm)``; the beam runs along the inward skin normal, rotated by
    ``rotation_deg``, tilted by ``tilt_deg`` and rocked by ``rock_deg`` (:class:`ProbePose`).

    Returns
    -------
    (4, 4) float array
        Rotation columns scaled by ``probe.pixel_spacing_mm`` (mm per pixel).

    Raises
    ------
    ProbePlacementError
        If there is no skin under the pose.
    """
    skin_mri = skin.point_mri(pose.centre_x_mm, pose.centre_z_mm)
    normal_mri = skin.normal_mri(pose.centre_x_mm, pose.centre_z_mm)
    transducer_to_mri = np.eye(4)
    transducer_to_mri[:3, :3] = _transducer_axes(pose, normal_mri)
    transducer_to_mri[:3, 3] = skin_mri - pose.press_mm * normal_mri
    return transducer_to_mri @ probe.image_to_transducer().matrix


#: Planes :func:`snap_to_needle_plane` can prefer: the unit normal the image plane should be closest to.
PREFERRED_PLANE_NORMALS = {"transverse": (0.0, 0.0, 1.0), "sagittal": (1.0, 0.0, 0.0)}


def snap_to_needle_plane(
    entry_mri, target_mri, probe: ProbeModel, skin: SkinSurface, *,
    prefer: str = "transverse", press_mm: float = DEFAULT_PRESS_MM,
) -> ProbePose:
    """The probe pose whose image plane holds the straight needle path from ``entry_mri`` to ``target_mri``.

    Of the planes through the path, the one closest to ``prefer`` (a transverse plane: an
    in-plane approach from lateral; or a sagittal one) is taken. The face centre is the skin
    point of that plane nearest (in x and z) to the midpoint of entry and target, so both lie
    in the fan; the plane is reached by rotating and tilting the probe (no rock). ``probe`` is
    part of the interface; the plane does not depend on it.

    Parameters
    ----------
    entry_mri, target_mri : (3,) float array
        Skin entry and target, Mri mm.
    prefer : {"transverse", "sagittal"}

    Returns
    -------
    ProbePose
        Rotation in (-90, 90] degrees.

    Raises
    ------
    ProbePlacementError
        Entry equals target, or no skin under the plane.
    """
    entry_mri = np.asarray(entry_mri, dtype=float).reshape(3)
    target_mri = np.asarray(target_mri, dtype=float).reshape(3)
    if prefer not in PREFERRED_PLANE_NORMALS:
        raise ProbePlacementError(f"prefer must be one of {', '.join(PREFERRED_PLANE_NORMALS)}, got {prefer!r}")
    if np.linalg.norm(target_mri - entry_mri) < 1e-6:
        raise ProbePlacementError("entry and target coincide: no needle path to put in plane")
    direction = _unit(target_mri - entry_mri)
    wanted = np.asarray(PREFERRED_PLANE_NORMALS[prefer])
    plane_normal = wanted - np.dot(wanted, direction) * direction
    if np.linalg.norm(plane_normal) < 1e-6:  # the path runs along the preferred normal
        other = np.asarray(PREFERRED_PLANE_NORMALS["sagittal" if prefer == "transverse" else "transverse"])
        plane_normal = other - np.dot(other, direction) * direction
    plane_normal = _unit(plane_normal)
    # Slide the face centre (x, z) across the plane until the transducer origin lies in it.
    centre_xz = np.array([(entry_mri[0] + target_mri[0]) / 2.0, (entry_mri[2] + target_mri[2]) / 2.0])
    across_xz = plane_normal[[0, 2]]
    if np.linalg.norm(across_xz) < 1e-3:
        raise ProbePlacementError("the needle plane is parallel to the skin: no probe pose images it")
    for _ in range(20):
        normal_mri = skin.normal_mri(*centre_xz)
        origin_mri = skin.point_mri(*centre_xz) - press_mm * normal_mri
        offset_mm = float(np.dot(origin_mri - entry_mri, plane_normal))
        if abs(offset_mm) < 1e-6:
            break
        centre_xz = centre_xz - offset_mm * across_xz / np.dot(across_xz, across_xz)
    beam0 = -normal_mri
    for sign in (1.0, -1.0):
        elevation = sign * plane_normal
        sin_tilt = float(np.clip(-np.dot(elevation, beam0), -1.0, 1.0))
        elevation0 = _unit(elevation + sin_tilt * beam0)
        marker0 = np.cross(beam0, elevation0)
        preferred = marker0 - marker0[1] / beam0[1] * beam0  # in the plane of marker0 and beam0, y = 0
        rotation_deg = math.degrees(math.atan2(preferred[2], preferred[0]))
        if -90.0 < rotation_deg <= 90.0 + 1e-9:
            break
    return ProbePose(
        centre_x_mm=float(centre_xz[0]),
        centre_z_mm=float(centre_xz[1]),
        rotation_deg=rotation_deg,
        tilt_deg=math.degrees(math.asin(sin_tilt)),
        rock_deg=0.0,
        press_mm=press_mm,
    )


def poses_along_sweep(
    sweep, probe: ProbeModel | None = None, skin: SkinSurface | None = None, *,
    frame_count: int = 50, image_to_probe=None, reference_to_mri=None,
) -> list[np.ndarray]:
    """``ImageToMri`` of every frame of a sweep, for the imager to follow.

    Two kinds of sweep:

    - a straight generated sweep: ``sweep = (start, end)``, two :class:`ProbePose`; every field
      is interpolated linearly over ``frame_count`` frames (``probe`` and ``skin`` needed);
    - a recorded sweep: a :class:`workbench.io.sequence.TrackedSequence` with its calibration
      ``image_to_probe`` (``ImageToProbe`` Transform) and the registration ``reference_to_mri``
      (``ReferenceToMri`` Transform); frames whose tracking is INVALID are left out.

    Returns
    -------
    list of (4, 4) float arrays
        ``ImageToMri`` (MF pixels to Mri mm), one per frame.
    """
    if isinstance(sweep, tuple) and len(sweep) == 2 and all(isinstance(p, ProbePose) for p in sweep):
        if probe is None or skin is None:
            raise ProbePlacementError("a generated sweep needs the probe and the skin surface")
        if isinstance(frame_count, bool) or not isinstance(frame_count, int) or frame_count < 2:
            raise ProbePlacementError(f"a sweep needs frame_count >= 2, got {frame_count!r}")
        start, end = sweep
        names = [field.name for field in dataclasses.fields(ProbePose)]
        poses = []
        for fraction in np.linspace(0.0, 1.0, frame_count):
            values = {n: (1 - fraction) * getattr(start, n) + fraction * getattr(end, n) for n in names}
            poses.append(image_to_mri(ProbePose(**values), probe, skin))
        return poses
    if image_to_probe is None or reference_to_mri is None:
        raise ProbePlacementError("a recorded sweep needs image_to_probe (ImageToProbe) and reference_to_mri (ReferenceToMri)")
    if reference_to_mri.name != "ReferenceToMri" or image_to_probe.name != "ImageToProbe":
        raise ProbePlacementError(
            f"expected ImageToProbe and ReferenceToMri, got {image_to_probe.name} and {reference_to_mri.name}"
        )
    poses = []
    for index in range(len(sweep)):
        repository = sweep.repository(index)
        repository.set_transform(image_to_probe)
        if repository.has("ImageToReference"):
            poses.append((reference_to_mri @ repository.get("ImageToReference")).matrix)
    return poses
