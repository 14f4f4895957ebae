"""Vertebrae, sacrum, facet joints and intervertebral discs, each in its vertebra's local frame.

Local frame of a vertebra (see :mod:`._anatomy_geometry`): origin at the body centre, u towards
the patient's left, v posterior, w superior along the spine. Dimensions come from
:mod:`._anatomy_dimensions` (Panjabi 1992, Zhou 2000, Zindrick 1987, Van Schaik 1985). Parts that
are mirror-symmetric use ``|u|`` and draw both sides at once; the articular processes are drawn
per side because each meets its partner on a joint plane computed between two vertebrae.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from workbench.phantom._anatomy_dimensions import VertebraDims
from workbench.phantom._anatomy_geometry import Part, Pose, capsule, ellipse, superellipse
from workbench.anatomy import Label

__all__ = [
    "FacetJoint",
    "Keypoints",
    "articular_process",
    "disc_parts",
    "facet_joint_between",
    "facet_joint_space",
    "keypoints",
    "lumbar_vertebra_parts",
    "mid_pose",
    "sacral_canal",
    "sacral_dorsal_surface",
    "sacrum_parts",
]

_FACET_GAP_MM = 1.5  # joint space (cartilage + synovial gap), Fujiwara et al. 2000: 1-2 mm
_FACET_RADII_MM = (5.5, 8.0, 9.0)  # articular pillar: half-thickness per side, half-width, half-height
_ARTICULAR_STEM_RADIUS_MM = 4.5
_LAMINA_HALF_THICKNESS_MM = 3.0
_SACRUM_LENGTH_MM = 60.0  # S1 lower endplate down to the lowest modelled sacral segment
_SACRAL_KYPHOSIS = 0.003  # posterior offset of the sacrum per mm^2 below S1 (its anterior concavity)


@dataclass(frozen=True)
class Keypoints:
    """Derived positions in the local frame of one vertebra, mm (left side, u > 0)."""

    pedicle_u: float  # pedicle axis at the isthmus
    pedicle_v: float
    pedicle_w: float  # pedicle centre height
    pedicle_bottom_w: float
    junction_u: float  # pedicle-lamina junction
    junction_v: float
    lamina_top_w: float
    lamina_bottom_w: float
    lamina_apex_v: float  # centre of the lamina thickness at the midline
    canal_centre_v: float
    spinous_base_v: float


def keypoints(d: VertebraDims) -> Keypoints:
    """Keypoints of a vertebra with dimensions ``d``.

    Pedicles attach to the upper half of the body (their centre 1.5 mm below the upper endplate
    level minus half their height), so the foramen opens below them.
    """
    pedicle_w = d.body_height_mm / 2 - d.pedicle_height_mm / 2 - 1.5
    return Keypoints(
        pedicle_u=d.canal_width_mm / 2 + d.pedicle_width_mm / 2,
        pedicle_v=d.body_depth_mm / 2 + 5.0,
        pedicle_w=pedicle_w,
        pedicle_bottom_w=pedicle_w - d.pedicle_height_mm / 2,
        junction_u=d.canal_width_mm / 2 + d.pedicle_width_mm / 2 + 1.0,
        junction_v=d.body_depth_mm / 2 + 11.0,
        lamina_top_w=pedicle_w + 3.0,
        lamina_bottom_w=-d.body_height_mm / 2 - 6.0,
        lamina_apex_v=d.body_depth_mm / 2 + d.canal_depth_mm + _LAMINA_HALF_THICKNESS_MM,
        canal_centre_v=d.body_depth_mm / 2 + d.canal_depth_mm / 2,
        spinous_base_v=d.body_depth_mm / 2 + d.canal_depth_mm + 2.0,
    )


def _box(lo, hi) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)


# -- lumbar vertebra parts ------------------------------------------------------------------


def vertebral_body(d: VertebraDims, label: Label = Label.VERTEBRAL_BODY) -> Part:
    """Body: a rounded-rectangle (superellipse, exponent 2.5) cylinder with a 6 % waist at
    mid-height and a shallow concavity of the posterior wall."""
    half_w, half_d, half_h = d.body_width_mm / 2, d.body_depth_mm / 2, d.body_height_mm / 2

    def inside(u, v, w):
        waist = 1.0 - 0.06 * (1.0 - (w / half_h) ** 2)
        outline = superellipse(u, v, half_w * waist, half_d * waist, 2.5)
        notch = ellipse(u, v - (half_d + 1.5), 0.22 * d.body_width_mm, 3.5)
        return (np.abs(w) <= half_h) & outline & ~notch

    return Part("vertebral body", label, *_box([-half_w, -half_d, -half_h], [half_w, half_d, half_h]), inside)


def pedicles(d: VertebraDims, k: Keypoints, label: Label = Label.PEDICLE) -> Part:
    """Both pedicles: elliptic cylinders (width x height) along an axis that converges medially
    going anteriorly by the transverse pedicle angle, from inside the body to the lamina."""
    angle = math.radians(d.pedicle_angle_deg)
    along = (math.sin(angle), math.cos(angle))  # (u, v) of the axis, pointing posterolaterally
    t_min, t_max = -9.0, 7.0

    def inside(u, v, w):
        du, dv = np.abs(u) - k.pedicle_u, v - k.pedicle_v
        t = du * along[0] + dv * along[1]
        across = du * along[1] - dv * along[0]
        section = ellipse(across, w - k.pedicle_w, d.pedicle_width_mm / 2, d.pedicle_height_mm / 2)
        return section & (t >= t_min) & (t <= t_max)

    reach_u = k.pedicle_u + d.pedicle_width_mm / 2 + t_max
    lo = [-reach_u, k.pedicle_v + t_min - d.pedicle_width_mm / 2, k.pedicle_w - d.pedicle_height_mm / 2]
    hi = [reach_u, k.pedicle_v + t_max + d.pedicle_width_mm / 2, k.pedicle_w + d.pedicle_height_mm / 2]
    return Part("pedicles", label, *_box(lo, hi), inside)


def laminae(d: VertebraDims, k: Keypoints) -> Part:
    """Both laminae: a 6 mm plate along the roof of the canal, from the pedicle-lamina junction
    to the midline, shingled (the lower edge lies more posterior, 0.2 mm per mm)."""
    ends = np.array([[k.junction_u, k.junction_v], [0.0, k.lamina_apex_v]])

    def inside(u, v, w):
        shingle = 0.2 * (k.lamina_top_w - w)
        dist = np.sqrt(_segment_distance_sq_2d(np.abs(u), v - shingle, ends))
        return (dist <= _LAMINA_HALF_THICKNESS_MM) & (w >= k.lamina_bottom_w) & (w <= k.lamina_top_w)

    shingle_max = 0.2 * (k.lamina_top_w - k.lamina_bottom_w)
    t = _LAMINA_HALF_THICKNESS_MM
    lo = [-k.junction_u - t, k.junction_v - t, k.lamina_bottom_w]
    hi = [k.junction_u + t, k.lamina_apex_v + t + shingle_max, k.lamina_top_w]
    return Part("laminae", Label.LAMINA, *_box(lo, hi), inside)


def _spinous_geometry(d: VertebraDims, k: Keypoints) -> tuple[float, float, float, float, float]:
    """(tilt_rad, half_length, half_height, centre_v, centre_w) of the spinous process plate."""
    half_len = d.spinous_length_mm / 2 + 1.0
    half_h = d.spinous_height_mm / 2
    return (
        math.radians(10.0),
        half_len,
        half_h,
        k.spinous_base_v + d.spinous_length_mm / 2 - 1.0,
        k.lamina_top_w - 1.0 - half_h,
    )


def spinous_process(d: VertebraDims, k: Keypoints, label: Label = Label.SPINOUS_PROCESS) -> Part:
    """Spinous process: a hatchet-shaped plate (superellipse, exponent 4, in the sagittal plane)
    from the laminae posteriorly by its length, tip tilted 10 deg caudally, 5 mm thick at the
    base widening to 9 mm at the tip."""
    tilt, half_len, half_h, centre_v, centre_w = _spinous_geometry(d, k)

    def inside(u, v, w):
        dv, dw = v - centre_v, w - centre_w
        a = dv * math.cos(tilt) - dw * math.sin(tilt)
        b = dv * math.sin(tilt) + dw * math.cos(tilt)
        half_thickness = 2.5 + 2.0 * np.clip((a + half_len) / (2 * half_len), 0.0, 1.0)
        return (u / half_thickness) ** 2 + (a / half_len) ** 4 + (b / half_h) ** 4 <= 1.0

    reach_v = half_len * math.cos(tilt) + half_h * math.sin(tilt)
    reach_w = half_h * math.cos(tilt) + half_len * math.sin(tilt)
    lo = [-4.5, centre_v - reach_v, centre_w - reach_w]
    hi = [4.5, centre_v + reach_v, centre_w + reach_w]
    return Part("spinous process", label, *_box(lo, hi), inside)


def spinous_tip(d: VertebraDims, k: Keypoints) -> np.ndarray:
    """(3,) local point at the end of the spinous process axis (the tip, before tilt of the
    vertebra is taken into account; the most posterior point is found on the shape itself)."""
    tilt, half_len, _, centre_v, centre_w = _spinous_geometry(d, k)
    return np.array([0.0, centre_v + half_len * math.cos(tilt), centre_w - half_len * math.sin(tilt)])


def transverse_processes(d: VertebraDims, k: Keypoints) -> Part:
    """Both transverse processes: tapered elliptic rods from the pedicle-lamina junction out to
    half the tip-to-tip span, slightly posterior and caudal at the tip. Their thickness scales
    with the pedicle width (the L5 processes are short and stout)."""
    root = np.array([d.canal_width_mm / 2 + d.pedicle_width_mm - 1.0, d.body_depth_mm / 2 + 8.0, k.pedicle_w - 2.0])
    tip = np.array([d.transverse_span_mm / 2 - 3.0, d.body_depth_mm / 2 + 10.0, k.pedicle_w - 4.0])
    scale = float(np.clip(d.pedicle_width_mm / 10.0, 0.85, 1.35))
    radii_root = np.array([4.0, 6.5]) * scale  # (v, w)
    radii_tip = np.array([3.0, 4.0]) * scale
    cap = 3.0  # rounded end, along u

    def inside(u, v, w):
        t = (np.abs(u) - root[0]) / (tip[0] - root[0])
        tc = np.clip(t, 0.0, 1.0)
        cv = root[1] + tc * (tip[1] - root[1])
        cw = root[2] + tc * (tip[2] - root[2])
        rv = radii_root[0] + tc * (radii_tip[0] - radii_root[0])
        rw = radii_root[1] + tc * (radii_tip[1] - radii_root[1])
        beyond = np.maximum(np.abs(u) - tip[0], 0.0) / cap
        return (t >= -0.3) & (((v - cv) / rv) ** 2 + ((w - cw) / rw) ** 2 + beyond**2 <= 1.0)

    reach = tip[0] + cap
    lo = [-reach, root[1] - radii_root[0], tip[2] - radii_root[1]]
    hi = [reach, tip[1] + radii_root[0], root[2] + radii_root[1]]
    return Part("transverse processes", Label.TRANSVERSE_PROCESS, *_box(lo, hi), inside)


def transverse_process_tip(d: VertebraDims, k: Keypoints, side: int) -> np.ndarray:
    """(3,) local position of the lateral end of a transverse process (side +1 left, -1 right)."""
    return np.array([side * d.transverse_span_mm / 2, d.body_depth_mm / 2 + 10.0, k.pedicle_w - 4.0])


def lumbar_vertebra_parts(d: VertebraDims, k: Keypoints) -> list[Part]:
    """Every part of a lumbar vertebra except the articular processes, in painting order (a
    later part wins where they overlap: the pedicles over the roots of the transverse processes)."""
    return [
        vertebral_body(d),
        transverse_processes(d, k),
        laminae(d, k),
        pedicles(d, k),
        spinous_process(d, k),
    ]


# -- facet joints and articular processes ---------------------------------------------------------


@dataclass(frozen=True)
class FacetJoint:
    """A facet joint in some frame: centre, unit normal from the inferior articular process
    (vertebra above) to the superior articular process (vertebra below), and an orthonormal
    in-plane pair (tangent, axial). The articular pillar is an ellipsoid with
    ``_FACET_RADII_MM`` along (normal, tangent, axial), split by a gap of ``_FACET_GAP_MM``."""

    centre: np.ndarray
    normal: np.ndarray
    tangent: np.ndarray
    axial: np.ndarray

    def transformed(self, rotation: np.ndarray, translation: np.ndarray) -> FacetJoint:
        """The joint after ``p -> rotation @ p + translation``."""
        return FacetJoint(
            rotation @ self.centre + translation, rotation @ self.normal, rotation @ self.tangent, rotation @ self.axial
        )

    def to_local(self, pose: Pose) -> FacetJoint:
        """This LPS joint expressed in the local frame of ``pose``."""
        r_t = pose.rotation.T
        return self.transformed(r_t, -r_t @ pose.centre_lps)

    def offsets(self, u, v, w) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Components of (point - centre) along normal, tangent and axial."""
        du, dv, dw = u - self.centre[0], v - self.centre[1], w - self.centre[2]
        return tuple(du * a[0] + dv * a[1] + dw * a[2] for a in (self.normal, self.tangent, self.axial))

    def pillar(self, u, v, w) -> tuple[np.ndarray, np.ndarray]:
        """(inside the articular pillar, signed distance from the joint plane along the normal)."""
        a_n, a_t, a_w = self.offsets(u, v, w)
        r_n, r_t, r_w = _FACET_RADII_MM
        return (a_n / r_n) ** 2 + (a_t / r_t) ** 2 + (a_w / r_w) ** 2 <= 1.0, a_n


def mid_pose(upper: Pose, upper_dims: VertebraDims, lower: Pose, lower_dims: VertebraDims) -> Pose:
    """Frame of the disc space between two vertebrae: centred between the upper vertebra's lower
    endplate and the lower vertebra's upper endplate, axes the mean of the two rotations."""
    upper_plate = upper.to_lps(np.array([0.0, 0.0, -upper_dims.body_height_mm / 2]))
    lower_plate = lower.to_lps(np.array([0.0, 0.0, lower_dims.body_height_mm / 2]))
    u, _, vt = np.linalg.svd(upper.rotation + lower.rotation)
    return Pose(u @ vt, (upper_plate + lower_plate) / 2)


def facet_joint_between(mid: Pose, upper_dims: VertebraDims, lower_dims: VertebraDims, side: int) -> FacetJoint:
    """The LPS facet joint on ``side`` (+1 left, -1 right) between two vertebrae.

    Centre: at the disc level 2 mm lower, ``facet_half_width_mm`` of the lower vertebra from the
    midline, 70 % of the canal depth behind the posterior body wall. The joint plane makes
    ``facet_angle_deg`` with the sagittal plane (0: sagittal, superior process lateral; 90:
    coronal, superior process anterior).
    """
    depth = (upper_dims.body_depth_mm + lower_dims.body_depth_mm) / 4
    canal = (upper_dims.canal_depth_mm + lower_dims.canal_depth_mm) / 2
    phi = math.radians(lower_dims.facet_angle_deg)
    centre = np.array([side * lower_dims.facet_half_width_mm, depth + 0.7 * canal, -2.0])
    normal = np.array([side * math.cos(phi), -math.sin(phi), 0.0])
    axial = np.array([0.0, 0.0, 1.0])
    joint_mid = FacetJoint(centre, normal, np.cross(axial, normal), axial)
    return joint_mid.transformed(mid.rotation, mid.centre_lps)


def articular_process(joint: FacetJoint, stem_root: np.ndarray, superior: bool) -> Part:
    """A superior (``superior=True``, of the vertebra below the joint) or inferior articular
    process: its half of the articular pillar plus a stem to ``stem_root``, all on its side of
    the joint gap. ``joint`` and ``stem_root`` are in the owner's local frame."""
    sign = 1.0 if superior else -1.0
    stem_end = joint.centre + sign * 3.0 * joint.normal
    in_stem = capsule(stem_root, stem_end, _ARTICULAR_STEM_RADIUS_MM)
    lo_stem = np.minimum(stem_root, stem_end) - _ARTICULAR_STEM_RADIUS_MM
    hi_stem = np.maximum(stem_root, stem_end) + _ARTICULAR_STEM_RADIUS_MM
    reach = max(_FACET_RADII_MM)

    def inside(u, v, w):
        in_pillar, a_n = joint.pillar(u, v, w)
        own_side = sign * a_n >= _FACET_GAP_MM / 2
        return own_side & (in_pillar | in_stem(u, v, w))

    lo = np.minimum(lo_stem, joint.centre - reach)
    hi = np.maximum(hi_stem, joint.centre + reach)
    name = "superior articular process" if superior else "inferior articular process"
    return Part(name, Label.ARTICULAR_PROCESS, lo, hi, inside)


def superior_stem_root(k: Keypoints, side: int) -> np.ndarray:
    """Where a superior articular process leaves its vertebra: the pedicle-lamina junction."""
    return np.array([side * k.junction_u, k.junction_v - 1.0, k.pedicle_w + 1.0])


def inferior_stem_root(d: VertebraDims, k: Keypoints, side: int) -> np.ndarray:
    """Where an inferior articular process leaves its vertebra: the lower lateral lamina."""
    return np.array([side * (d.canal_width_mm / 2 + 2.0), d.body_depth_mm / 2 + 16.0, -d.body_height_mm / 2 - 4.0])


def facet_joint_space(joint: FacetJoint) -> Part:
    """The joint space (cartilage and gap) between the two halves of the pillar."""
    reach = max(_FACET_RADII_MM)

    def inside(u, v, w):
        in_pillar, a_n = joint.pillar(u, v, w)
        return in_pillar & (np.abs(a_n) < _FACET_GAP_MM / 2)

    return Part("facet joint", Label.FACET_JOINT, joint.centre - reach, joint.centre + reach, inside)


# -- sacrum ---------------------------------------------------------------------------------------


def _sacral_profile(d: VertebraDims, w):
    """Along the sacrum below the S1 body: (taper 0..1, posterior offset of the kyphotic curve)."""
    below = np.maximum(-d.body_height_mm / 2 - w, 0.0)
    return np.clip(below / _SACRUM_LENGTH_MM, 0.0, 1.0), _SACRAL_KYPHOSIS * below**2


def _sacral_back(d: VertebraDims, taper, offset):
    """v of the dorsal surface of the sacrum (fused laminae 8 mm behind the canal)."""
    return d.body_depth_mm / 2 + d.canal_depth_mm + 8.0 - 6.0 * taper + offset


def sacral_canal(d: VertebraDims, k: Keypoints) -> Part:
    """The sacral canal (S1 local), from the S1 pedicles down, narrowing and curving with the
    sacrum; labelled epidural fat (the dural sac inside it is drawn along the spine curve)."""
    bottom = -d.body_height_mm / 2 - _SACRUM_LENGTH_MM

    def inside(u, v, w):
        taper, offset = _sacral_profile(d, w)
        centre_v = k.canal_centre_v * (1.0 - 0.45 * taper) + offset
        half_w, half_d = d.canal_width_mm / 2 * (1.0 - 0.5 * taper), d.canal_depth_mm / 2 * (1.0 - 0.4 * taper)
        return ellipse(u, v - centre_v, half_w, half_d) & (w >= bottom) & (w <= k.pedicle_w)

    lo = [-d.canal_width_mm / 2, k.canal_centre_v - d.canal_depth_mm, bottom]
    hi = [
        d.canal_width_mm / 2,
        k.canal_centre_v + d.canal_depth_mm + _SACRAL_KYPHOSIS * _SACRUM_LENGTH_MM**2,
        k.pedicle_w,
    ]
    return Part("sacral canal", Label.EPIDURAL_FAT, *_box(lo, hi), inside)


def sacral_dorsal_surface(d: VertebraDims, w_mm: float) -> np.ndarray:
    """(3,) local point on the dorsal midline of the sacrum at height ``w_mm`` (below S1)."""
    taper, offset = _sacral_profile(d, np.asarray(w_mm, dtype=np.float64))
    return np.array([0.0, float(_sacral_back(d, taper, offset)), float(w_mm)])


def sacral_block(d: VertebraDims, k: Keypoints) -> Part:
    """The sacrum as one block: S1 alae and the fused S2-S4 segments, tapering to a third of
    the alar span and curving posteriorly (sacral kyphosis); the dorsal wall (fused laminae)
    tops out below the L5-S1 interlaminar window; the alae slope down laterally."""
    half_span = d.transverse_span_mm / 2
    top = d.body_height_mm / 2 - 5.0
    bottom = -d.body_height_mm / 2 - _SACRUM_LENGTH_MM

    def inside(u, v, w):
        taper, offset = _sacral_profile(d, w)
        front = -d.body_depth_mm / 2 * (1.0 - 0.45 * taper) + offset
        back = _sacral_back(d, taper, offset)
        half_width = half_span * (1.0 - 0.65 * taper)
        outline = superellipse(u, v - (front + back) / 2, half_width, (back - front) / 2, 3.0)
        ala_top = top - 0.15 * np.maximum(np.abs(u) - d.body_width_mm / 2, 0.0)
        roof_top = np.where(v > d.body_depth_mm / 2 + 4.0, k.pedicle_w - 2.0, ala_top)
        return outline & (w >= bottom) & (w <= roof_top)

    back_max = _sacral_back(d, 0.0, _SACRAL_KYPHOSIS * _SACRUM_LENGTH_MM**2)
    lo = [-half_span, -d.body_depth_mm / 2, bottom]
    hi = [half_span, back_max, top]
    return Part("sacrum", Label.SACRUM, *_box(lo, hi), inside)


def sacrum_parts(d: VertebraDims, k: Keypoints) -> list[Part]:
    """S1 and the sacrum below it, except the S1 superior articular processes. The S1 body and
    pedicles keep their own labels; the rest is SACRUM (the median sacral crest included)."""
    return [
        sacral_block(d, k),
        pedicles(d, k),
        vertebral_body(d),
        spinous_process(d, k, label=Label.SACRUM),
    ]


# -- intervertebral disc ----------------------------------------------------------------------------


def disc_parts(
    upper: Pose, upper_dims: VertebraDims, lower: Pose, lower_dims: VertebraDims, height_mm: float, degeneration: float
) -> tuple[Pose, list[Part]]:
    """Annulus and nucleus between two vertebrae, in the disc's mid frame.

    The disc fills the body outline (1 mm bulge) between the upper vertebra's lower endplate
    and the lower vertebra's upper endplate, so it takes the wedge shape of the lordosis and
    follows moved vertebrae. The nucleus is an ellipsoid (half the width and depth, 75 % of the
    height, 2 mm posterior of centre) that shrinks with ``degeneration`` (0..1).

    Returns
    -------
    mid : Pose
        The disc frame.
    parts : list of Part
        [annulus, nucleus], in ``mid`` local coordinates.
    """
    mid = mid_pose(upper, upper_dims, lower, lower_dims)
    half_w = (upper_dims.body_width_mm + lower_dims.body_width_mm) / 4 + 1.0
    half_d = (upper_dims.body_depth_mm + lower_dims.body_depth_mm) / 4 + 1.0
    # Endplate planes in the mid frame: point and normal (pointing superiorly).
    upper_local = Pose(mid.rotation.T @ upper.rotation, mid.to_local(upper.centre_lps))
    lower_local = Pose(mid.rotation.T @ lower.rotation, mid.to_local(lower.centre_lps))
    upper_point = upper_local.to_lps(np.array([0.0, 0.0, -upper_dims.body_height_mm / 2]))
    lower_point = lower_local.to_lps(np.array([0.0, 0.0, lower_dims.body_height_mm / 2]))
    upper_normal, lower_normal = upper_local.rotation[:, 2], lower_local.rotation[:, 2]
    reach_w = float(upper_point[2] - lower_point[2]) / 2 + 0.5 * half_d + 2.0  # wedge included

    def in_disc(u, v, w):
        below_upper = (u - upper_point[0]) * upper_normal[0] + (v - upper_point[1]) * upper_normal[1] + (
            w - upper_point[2]
        ) * upper_normal[2] <= 0.0
        above_lower = (u - lower_point[0]) * lower_normal[0] + (v - lower_point[1]) * lower_normal[1] + (
            w - lower_point[2]
        ) * lower_normal[2] >= 0.0
        return below_upper & above_lower & superellipse(u, v, half_w, half_d, 2.5)

    shrink = 1.0 - 0.3 * degeneration
    radii = np.array([0.5 * half_w, 0.5 * half_d, 0.375 * height_mm]) * shrink

    def in_nucleus(u, v, w):
        return in_disc(u, v, w) & ((u / radii[0]) ** 2 + ((v - 2.0) / radii[1]) ** 2 + (w / radii[2]) ** 2 <= 1.0)

    lo, hi = _box([-half_w, -half_d, -reach_w], [half_w, half_d, reach_w])
    annulus = Part("disc annulus", Label.DISC_ANNULUS, lo, hi, in_disc)
    nucleus = Part("disc nucleus", Label.DISC_NUCLEUS, lo, hi, in_nucleus)
    return mid, [annulus, nucleus]


def _segment_distance_sq_2d(a: np.ndarray, b: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Squared distance from 2D points (a, b) to the segment ``ends`` (2, 2)."""
    (a0, b0), (a1, b1) = ends
    da, db = a1 - a0, b1 - b0
    t = np.clip(((a - a0) * da + (b - b0) * db) / (da * da + db * db), 0.0, 1.0)
    return (a - a0 - t * da) ** 2 + (b - b0 - t * db) ** 2
