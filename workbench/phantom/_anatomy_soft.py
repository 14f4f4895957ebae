"""Soft tissues: torso shell, muscles, great vessels, spinal canal contents, ligaments, nerves.

Three kinds of placement, from cheapest to most exact:

- the torso shell (skin, subcutaneous fat, fill) is one axial 2D template shifted along y slice
  by slice with the lordotic back surface;
- muscles and great vessels are axial cross-sections placed relative to the point where the spine
  curve crosses each slice (their long shape hides the tilt of the lumbar segments);
- the spinal canal contents and the spinal ligaments use exact tube coordinates about the curve;
  nerve roots, ganglia and radicular arteries are drawn in their vertebra's local frame so they
  follow a moved vertebra.

Sources: paraspinal muscle layout and psoas growth caudally, Hansen L et al., "Anatomy and
biomechanics of the back muscles in the lumbar spine with reference to biomechanical modeling",
Spine 31 (2006) 1888-1899; aorta (about 20 mm, bifurcating at L4) and IVC (about 25 x 16 mm,
confluence at L5), Pedersen OM et al., Clin Physiol 13 (1993) 73-81; dural sac (about 16 x 13 mm
at L3, ending at S2) and the dependent position of the cauda equina in prone patients, Hofmann
MC et al. / Takiguchi T et al.; subcutaneous fat over the lumbar spine versus BMI (about 10 mm at
BMI 20 to 40 mm at BMI 35), consistent with skin-to-epidural depths versus BMI in Clinkscales CP
et al., Int J Obstet Anesth 16 (2007) 323-327.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import PchipInterpolator
from scipy.ndimage import distance_transform_edt

from workbench.phantom._anatomy_bone import Keypoints
from workbench.phantom._anatomy_dimensions import VertebraDims
from workbench.phantom._anatomy_geometry import Canvas, Part, SpineCurve, ellipse, tube
from workbench.anatomy import Label

__all__ = [
    "BackSurface",
    "DimsAlongSpine",
    "SKIN_THICKNESS_MM",
    "dorsal_root_ganglion",
    "nerve_root_path",
    "paint_canal_contents",
    "paint_great_vessels",
    "paint_muscles",
    "paint_spinal_ligaments",
    "paint_torso_shell",
    "nerve_root",
    "radicular_artery",
    "sacral_root_path",
]

SKIN_THICKNESS_MM = 2.0
_SPINOUS_COVER_MM = 4.0  # supraspinous ligament and fascia over the spinous tips
_GROOVE_DEPTH_MM = 4.0  # midline furrow between the erector spinae bulges
_GROOVE_WIDTH_MM = 18.0
_CAUDA_EQUINA = (
    (-0.25, -0.55),
    (0.25, -0.55),
    (-0.55, -0.3),
    (0.55, -0.3),
    (0.0, -0.7),
    (-0.7, 0.05),
    (0.7, 0.05),
    (-0.3, -0.15),
    (0.3, -0.15),
)  # (u/a, v/b), prone: anterior


# -- dimensions interpolated along the spine ---------------------------------------------------


class DimsAlongSpine:
    """Vertebral dimensions interpolated linearly in arc length between body centres (clamped)."""

    def __init__(self, s_mm: dict[str, float], dims: dict[str, VertebraDims]):
        order = sorted(s_mm, key=s_mm.get)
        self._s = np.array([s_mm[level] for level in order])
        self._dims = [dims[level] for level in order]

    def __call__(self, field: str, s_mm) -> np.ndarray:
        values = np.array([getattr(d, field) for d in self._dims])
        return np.interp(s_mm, self._s, values)

    def maximum(self, field: str) -> float:
        return max(getattr(d, field) for d in self._dims)


# -- torso shell -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackSurface:
    """The posterior skin surface of the prone patient.

    ``y = midline_y(z) + profile(x)``: the midline follows the spinous process tips and the
    dorsal sacrum (plus the cover over them, the subcutaneous fat and the skin), interpolated
    monotonically (PCHIP) and constant beyond the first and last knot; across, the back is a
    half-ellipse of the torso half-width and posterior half-depth with a shallow midline furrow.

    Attributes
    ----------
    knots_z_mm, knots_y_mm : (K,) float arrays
        Midline skin height over the midline bone points, increasing z.
    half_width_mm, half_depth_mm : float
        Torso half-width (x) and posterior half-depth (y), mm.
    """

    knots_z_mm: np.ndarray
    knots_y_mm: np.ndarray
    half_width_mm: float
    half_depth_mm: float

    def midline_y_mm(self, z_mm) -> np.ndarray:
        z = np.clip(np.asarray(z_mm, dtype=np.float64), self.knots_z_mm[0], self.knots_z_mm[-1])
        return PchipInterpolator(self.knots_z_mm, self.knots_y_mm)(z)

    def profile_mm(self, x_mm) -> np.ndarray:
        """Height of the surface above the midline at ``x_mm``; NaN beyond the torso."""
        x = np.asarray(x_mm, dtype=np.float64)
        ratio = np.clip(x / self.half_width_mm, -1.0, 1.0)
        groove = _GROOVE_DEPTH_MM * (1.0 - np.exp(-((x / _GROOVE_WIDTH_MM) ** 2)))
        height = groove - self.half_depth_mm * (1.0 - np.sqrt(1.0 - ratio**2))
        return np.where(np.abs(x) < self.half_width_mm, height, np.nan)

    def y_mm(self, x_mm, z_mm) -> np.ndarray:
        return self.midline_y_mm(z_mm) + self.profile_mm(x_mm)

    def highest_y_mm(self, z_mm) -> np.ndarray:
        """Upper bound of the surface over all x at ``z_mm`` (the furrow's shoulders)."""
        return self.midline_y_mm(z_mm) + _GROOVE_DEPTH_MM

    @classmethod
    def over_spine(cls, midline_bone_lps: np.ndarray, bmi: float, fat_mm: float) -> BackSurface:
        """The back over the dorsal-most midline bone points ((K, 3) LPS mm: spinous tips, dorsal
        sacrum), covered by 4 mm of ligament and fascia, the fat and the skin. Torso half-width
        ``125 + 1.6 (BMI - 20)`` mm plus fat and skin (about 160 mm at BMI 25), posterior
        half-depth 0.65 of it."""
        points = np.asarray(midline_bone_lps, dtype=np.float64)
        order = np.argsort(points[:, 2])
        half_width = 125.0 + 1.6 * (bmi - 20.0) + fat_mm + SKIN_THICKNESS_MM
        above = _SPINOUS_COVER_MM + fat_mm + SKIN_THICKNESS_MM
        return cls(points[order, 2], points[order, 1] + above, half_width, 0.65 * half_width)


def paint_torso_shell(canvas: Canvas, back: BackSurface, fat_mm: float) -> None:
    """Skin, subcutaneous fat and SOFT_TISSUE fill; AIR outside.

    One axial template (torso inside, depth below the skin by a 2D distance transform) is shifted
    along y per slice by the midline height rounded to the voxel grid (error <= half a voxel).
    Anteriorly the torso is a half-ellipse 1.2 times as deep as it is half wide.
    """
    grid = canvas.grid
    sp = grid.spacing_mm
    nx, ny, nz = grid.size_px
    shift = np.round(back.midline_y_mm(grid.z_mm()) / sp).astype(int)
    rows = ny + shift.max() - shift.min()
    x = grid.origin_lps_mm[0] + sp * np.arange(nx)
    y_rel = grid.origin_lps_mm[1] + sp * (np.arange(rows) - shift.max())  # y - midline
    surface = back.profile_mm(x)
    half_w = back.half_width_mm
    anterior = -back.half_depth_mm - 1.2 * half_w * np.sqrt(np.clip(1.0 - (x / half_w) ** 2, 0.0, None))
    inside = (y_rel[:, None] <= surface[None, :]) & (y_rel[:, None] >= anterior[None, :])
    depth = distance_transform_edt(inside) * sp
    template = np.full(inside.shape, int(Label.AIR), dtype=np.uint8)
    template[inside] = int(Label.SOFT_TISSUE)
    template[inside & (depth <= SKIN_THICKNESS_MM + fat_mm)] = int(Label.FAT)
    template[inside & (depth <= SKIN_THICKNESS_MM)] = int(Label.SKIN)
    for k in range(nz):
        start = shift.max() - shift[k]
        canvas.labels[k] = template[start : start + ny]


# -- muscles and great vessels (axial sections about the curve crossing) -----------------------------


@dataclass(frozen=True)
class _SliceFrame:
    """Where the spine curve crosses each axial slice of the grid."""

    s_mm: np.ndarray  # (nz,)
    x_mm: np.ndarray
    y_mm: np.ndarray

    @classmethod
    def of(cls, canvas: Canvas, curve: SpineCurve) -> _SliceFrame:
        s = curve.s_at_z(canvas.grid.z_mm())
        points = curve.point(s)
        return cls(s, points[:, 0], points[:, 1])


def _paint_section(
    canvas: Canvas,
    frame: _SliceFrame,
    label: Label,
    centre_uv: tuple[np.ndarray, np.ndarray],
    radii_uv: tuple[np.ndarray, np.ndarray],
    *,
    posterior_radius: np.ndarray | None = None,
    only_on: tuple[Label, ...] | None = None,
) -> None:
    """Paint an elliptic section per slice (centre and radii: (nz,) arrays or scalars, mm,
    relative to the curve crossing). ``posterior_radius`` replaces the v radius behind the
    centre (muscles that dome up to the fascia under the fat). Slices with zero radius are
    skipped."""
    nz = len(frame.s_mm)
    cu, cv = (np.broadcast_to(np.asarray(c, dtype=np.float64), (nz,)) for c in centre_uv)
    ru, rv = (np.broadcast_to(np.asarray(r, dtype=np.float64), (nz,)) for r in radii_uv)
    rv_back = rv if posterior_radius is None else np.broadcast_to(np.asarray(posterior_radius, dtype=np.float64), (nz,))
    present = (ru > 0) & (rv > 0)
    if not present.any():
        return
    grid = canvas.grid
    ks = np.flatnonzero(present)
    xs, ys = frame.x_mm + cu, frame.y_mm + cv
    z = grid.z_mm()
    lo = np.array([(xs - ru)[ks].min(), (ys - rv)[ks].min(), z[ks[0]]])
    hi = np.array([(xs + ru)[ks].max(), (ys + rv_back)[ks].max(), z[ks[-1]]])
    box = grid.box(lo, hi)
    if box is None:
        return
    x, y, _ = (a.astype(np.float32) for a in grid.axes(box))
    zs = np.arange(box[0].start, box[0].stop)
    ok = present[zs]
    xs, ys = xs.astype(np.float32), ys.astype(np.float32)

    def per_slice(r):
        return np.where(ok, r[zs], 1.0).astype(np.float32)[:, None, None]

    du = (x - xs[zs, None, None]) / per_slice(ru)
    dy = y - ys[zs, None, None]
    dv = dy / np.where(dy >= 0, per_slice(rv_back), per_slice(rv))
    mask = (du**2 + dv**2 <= 1.0) & ok[:, None, None]
    canvas.paint(box, mask, label, only_on=only_on)


def paint_muscles(canvas: Canvas, curve: SpineCurve, along: DimsAlongSpine, s_levels: dict[str, float]) -> None:
    """Psoas, quadratus lumborum, erector spinae and multifidus, both sides, inside the fascia.

    - psoas: beside the bodies, growing from about 16 x 14 mm at L1 to 48 x 38 mm at L5;
    - quadratus lumborum: lateral to the transverse process tips, L1 to its iliac insertion at L5;
    - erector spinae: from 4 mm lateral of the body outline out by 50 mm behind the transverse
      processes, domed up to the fascia, thinning to an aponeurosis over the sacrum;
    - multifidus: between the spinous processes and the erector spinae, from the facet level back.
    """
    frame = _SliceFrame.of(canvas, curve)
    s = frame.s_mm
    width, depth = along("body_width_mm", s), along("body_depth_mm", s)
    span, canal = along("transverse_span_mm", s), along("canal_depth_mm", s)
    caudal = np.clip((s_levels["L1"] - s) / (s_levels["L1"] - s_levels["L5"]), 0.0, 1.0)  # 0 at L1 -> 1 at L5
    sacral = np.clip((s_levels["L5"] - s) / (s_levels["L5"] - s_levels["S1"]), 0.0, 1.0)  # 0 at L5 -> 1 at S1
    above_l5 = np.clip((s - s_levels["L5"]) / (s_levels["L4"] - s_levels["L5"]), 0.0, 1.0)
    soft = (Label.SOFT_TISSUE,)
    es_inner = width / 2 + 4.0
    es_half = 25.0 * (1.0 - 0.5 * sacral)
    mf_half = (es_inner + 1.0) / 2  # overlaps the erector spinae by 4 mm (it wins there)
    for side in (1.0, -1.0):
        psoas_r = (8.0 + 16.0 * caudal, 7.0 + 12.0 * caudal)
        psoas_c = (side * (width / 2 + 0.6 * psoas_r[0]), -0.1 * depth)
        _paint_section(canvas, frame, Label.PSOAS, psoas_c, psoas_r, only_on=soft)
        ql_r = (15.0 * above_l5, 7.0 * above_l5)
        _paint_section(
            canvas, frame, Label.QUADRATUS_LUMBORUM, (side * (span / 2 + 6.0), depth / 2 + 5.0), ql_r, only_on=soft
        )
        es_c = (side * (es_inner + es_half), depth / 2 + 20.0)
        _paint_section(canvas, frame, Label.ERECTOR_SPINAE, es_c, (es_half, 8.0), posterior_radius=60.0, only_on=soft)
        mf_c = (side * (3.0 + mf_half), depth / 2 + 0.6 * canal + 8.0)
        _paint_section(
            canvas,
            frame,
            Label.MULTIFIDUS,
            mf_c,
            (mf_half, 8.0),
            posterior_radius=70.0,
            only_on=(Label.SOFT_TISSUE, Label.ERECTOR_SPINAE),
        )


def paint_great_vessels(
    canvas: Canvas, curve: SpineCurve, along: DimsAlongSpine, s_levels: dict[str, float], aorta_radius_mm: float
) -> None:
    """Aorta anterior-left of the bodies, dividing at L4 into the common iliac arteries; IVC
    anterior-right (flattened oval), formed at L5 by the common iliac veins."""
    frame = _SliceFrame.of(canvas, curve)
    s = frame.s_mm
    front = -along("body_depth_mm", s) / 2 - 3.0
    below_bif = np.maximum(s_levels["L4"] - s, 0.0)
    above = s >= s_levels["L4"]
    r_aorta = np.where(above, aorta_radius_mm, 0.0)
    _paint_section(canvas, frame, Label.AORTA, (np.full_like(s, 14.0), front - aorta_radius_mm), (r_aorta, r_aorta))
    r_iliac = np.where(above, 0.0, 0.65 * aorta_radius_mm)
    for lateral in (0.6, -0.9):
        centre = (14.0 + lateral * below_bif, front - 0.65 * aorta_radius_mm)
        _paint_section(canvas, frame, Label.AORTA, centre, (r_iliac, r_iliac))
    below_conf = np.maximum(s_levels["L5"] - s, 0.0)
    ivc = s >= s_levels["L5"]
    r_ivc = (np.where(ivc, 12.0, 0.0), np.where(ivc, 8.0, 0.0))
    _paint_section(canvas, frame, Label.IVC, (np.full_like(s, -20.0), front - 8.0), r_ivc)
    r_vein = np.where(ivc, 0.0, 7.0)
    for lateral in (0.7, -0.6):
        _paint_section(canvas, frame, Label.IVC, (-20.0 + lateral * below_conf, front - 7.0), (r_vein, r_vein))


# -- spinal canal contents and ligaments (tube coordinates about the curve) -------------------------


def _paint_along_curve(canvas: Canvas, curve: SpineCurve, u_half: float, v_range: tuple[float, float], painter) -> None:
    """Call ``painter(box, s, u, v)`` on z-chunks of the grid, each limited to the voxels within
    ``|u| <= u_half`` and ``v_range`` of the curve (tube coordinates, mm)."""
    grid = canvas.grid
    z = grid.z_mm()
    s_all = np.linspace(curve.s_at_z(z[0]) - 60.0, curve.s_at_z(z[-1]) + 60.0, 2000)
    theta = curve.theta(s_all)
    normals = np.stack([np.zeros_like(theta), np.cos(theta), -np.sin(theta)], axis=-1)  # posterior
    edges = np.concatenate([curve.point(s_all) + v * normals for v in v_range])
    chunk = 32
    for start in range(0, len(z), chunk):
        z_lo, z_hi = z[start], z[min(start + chunk, len(z)) - 1]
        near = edges[(edges[:, 2] >= z_lo - 5.0) & (edges[:, 2] <= z_hi + 5.0)]
        if len(near) == 0:
            continue
        lo = np.array([near[:, 0].min() - u_half - 2.0, near[:, 1].min() - 3.0, z_lo])
        hi = np.array([near[:, 0].max() + u_half + 2.0, near[:, 1].max() + 3.0, z_hi])
        box = grid.box(lo, hi)
        if box is None:
            continue
        x, y, zz = grid.axes(box)
        s, u, v = curve.curve_coordinates(x, y, zz)
        painter(box, s, u, v)


def paint_spinal_ligaments(
    canvas: Canvas, curve: SpineCurve, along: DimsAlongSpine, s_top: float, s_bottom: float
) -> None:
    """Ligamentum flavum (3.5 mm band on the posterior canal wall, seen between the laminae) and
    the interspinous/supraspinous ligaments (midline, from the laminae to 3 mm over the tips),
    from ``s_top`` to ``s_bottom``; bone painted later leaves them in the gaps only."""
    muscle = (Label.SOFT_TISSUE, Label.MULTIFIDUS, Label.ERECTOR_SPINAE)

    def flavum(box, s, u, v):
        half_w, half_d = along("canal_width_mm", s) / 2 + 1.0, along("canal_depth_mm", s) / 2 + 1.0
        centre = along("body_depth_mm", s) / 2 + along("canal_depth_mm", s) / 2
        band = ellipse(u, v - centre, half_w + 3.5, half_d + 3.5) & ~ellipse(u, v - centre, half_w, half_d)
        mask = band & (v > centre + 1.5) & (s <= s_top) & (s >= s_bottom)
        canvas.paint(box, mask, Label.LIGAMENT)

    def interspinous(box, s, u, v):
        lamina = along("body_depth_mm", s) / 2 + along("canal_depth_mm", s) + 2.0  # spinous base
        tip = lamina + along("spinous_length_mm", s)
        inter = (np.abs(u) <= 2.5) & (v >= lamina) & (v <= tip + 1.0)
        supra = (np.abs(u) <= 4.0) & (v >= tip - 3.0) & (v <= tip + 3.0)
        mask = (inter | supra) & (s <= s_top) & (s >= s_bottom)
        canvas.paint(box, mask, Label.LIGAMENT, only_on=muscle)

    _paint_along_curve(canvas, curve, along.maximum("canal_width_mm") / 2 + 6.0, (10.0, 45.0), flavum)
    _paint_along_curve(canvas, curve, 5.0, (30.0, 90.0), interspinous)


def paint_canal_contents(canvas: Canvas, curve: SpineCurve, along: DimsAlongSpine, s_sac_end: float) -> None:
    """Epidural fat filling the canal, the dural sac (0.8 mm DURA wall, CSF inside) placed
    0.5 mm anterior in the canal, tapering to its end at ``s_sac_end`` (S2), and the cauda
    equina as 1 mm roots in the anterior, dependent part of the sac (the patient is prone)."""

    def painter(box, s, u, v):
        half_w, half_d = along("canal_width_mm", s) / 2, along("canal_depth_mm", s) / 2
        centre = along("body_depth_mm", s) / 2 + half_d
        canvas.paint(
            box, ellipse(u, v - centre, half_w + 1.0, half_d + 1.0) & (s >= s_sac_end - 10.0), Label.EPIDURAL_FAT
        )
        taper = np.sqrt(np.clip((s - s_sac_end) / 20.0, 0.0, 1.0))
        a, b = (half_w - 3.0) * taper, (half_d - 1.5) * taper
        dv = v - (centre - 0.5)
        sac = ellipse(u, dv, np.maximum(a, 1e-3), np.maximum(b, 1e-3)) & (taper > 0)
        csf = ellipse(u, dv, np.maximum(a - 0.8, 1e-3), np.maximum(b - 0.8, 1e-3)) & (taper > 0.3)
        canvas.paint(box, sac, Label.DURA)
        canvas.paint(box, csf, Label.CSF)
        roots = np.zeros(csf.shape, dtype=bool)
        for fu, fv in _CAUDA_EQUINA:
            roots |= (u - fu * (a - 0.8)) ** 2 + (dv - fv * (b - 0.8)) ** 2 <= 1.0
        canvas.paint(box, roots & csf, Label.NERVE_ROOT)

    _paint_along_curve(canvas, curve, along.maximum("canal_width_mm") / 2 + 2.0, (8.0, 45.0), painter)


# -- nerve roots, ganglia and radicular arteries (vertebra local frame) ----------------------------


def nerve_root_path(d: VertebraDims, k: Keypoints, side: int) -> np.ndarray:
    """(5, 3) local waypoints of the lumbar root exiting below this vertebra's pedicle.

    It leaves the lateral dural sac at the pedicle level, runs down the lateral recess medial
    to the pedicle, through the upper foramen just under the pedicle, then inferolaterally and
    anteriorly towards the psoas.
    """
    p0 = [5.5, k.canal_centre_v, k.pedicle_w + 2.0]
    p1 = [d.canal_width_mm / 2 - 1.0, d.body_depth_mm / 2 + 3.5, k.pedicle_bottom_w - 3.5]
    p2 = [d.canal_width_mm / 2 + d.pedicle_width_mm + 2.0, d.body_depth_mm / 2 + 1.5, k.pedicle_bottom_w - 5.5]
    path = [np.array(p) for p in (p0, p1, p2)]
    for direction, length in (((0.55, -0.45, -0.7), 14.0), ((0.45, -0.55, -0.7), 22.0)):
        step = np.array(direction) / np.linalg.norm(direction)
        path.append(path[-1] + length * step)
    return _mirror(np.array(path), side)


def sacral_root_path(d: VertebraDims, k: Keypoints, side: int) -> np.ndarray:
    """(5, 3) local waypoints of the S1 root: from the sac at the L5-S1 disc down the lateral
    recess, under the S1 pedicle into the S1 foramen between the S1 and S2 segments, out of the
    anterior (pelvic) foramen and on towards the sciatic nerve."""
    half_h = d.body_height_mm / 2
    path = np.array(
        [
            [5.0, k.canal_centre_v, half_h + 6.0],
            [d.canal_width_mm / 2 - 2.0, d.body_depth_mm / 2 + 3.0, k.pedicle_bottom_w - 1.5],
            [k.pedicle_u + 2.0, d.body_depth_mm / 2 + 1.0, -half_h - 3.0],
            [k.pedicle_u + 8.0, -0.1 * d.body_depth_mm, -half_h - 8.0],
            [k.pedicle_u + 16.0, -d.body_depth_mm / 2 - 8.0, -half_h - 22.0],
        ]
    )
    return _mirror(path, side)


def nerve_root(path: np.ndarray, radius_mm: float) -> list[Part]:
    """The root (with its dural sleeve) along ``path``."""
    return tube("nerve root", Label.NERVE_ROOT, path, radius_mm)


def dorsal_root_ganglion(path: np.ndarray, radius_mm: float) -> Part:
    """The ganglion in the foramen under the pedicle: an ellipsoid on the root at 60 % of the
    way from the lateral recess (waypoint 1) to the foramen exit (waypoint 2), 1.5 times the
    root radius along it and 1.15 times across (about 9 x 7 mm at L4)."""
    a, b = path[1], path[2]
    centre = a + 0.6 * (b - a)
    axis = (b - a) / np.linalg.norm(b - a)
    along_r, across_r = 1.5 * radius_mm * 1.0, 1.15 * radius_mm

    def inside(u, v, w):
        du, dv, dw = u - centre[0], v - centre[1], w - centre[2]
        t = du * axis[0] + dv * axis[1] + dw * axis[2]
        across_sq = du**2 + dv**2 + dw**2 - t**2
        return (t / along_r) ** 2 + across_sq / across_r**2 <= 1.0

    reach = max(along_r, across_r)
    return Part("dorsal root ganglion", Label.DORSAL_ROOT_GANGLION, centre - reach, centre + reach, inside)


def radicular_artery(d: VertebraDims, k: Keypoints, side: int) -> list[Part]:
    """Lumbar segmental artery around the waist of the body and its radicular branch entering
    the foramen above and in front of the root (0.9 mm radius)."""
    half_w, half_d = d.body_width_mm / 2 + 2.0, d.body_depth_mm / 2 + 2.0
    around = [[half_w * math.cos(a), half_d * math.sin(a), -2.0] for a in np.radians([-70.0, -30.0, 10.0])]
    foramen = [
        [d.canal_width_mm / 2 + d.pedicle_width_mm + 4.0, d.body_depth_mm / 2 - 2.0, k.pedicle_bottom_w - 2.0],
        [d.canal_width_mm / 2 + 1.0, d.body_depth_mm / 2 + 2.5, k.pedicle_bottom_w - 2.0],
    ]
    path = _mirror(np.array(around + foramen), side)
    return tube("radicular artery", Label.RADICULAR_ARTERY, path, 0.9)


def foramen_fat(path: np.ndarray, radius_mm: float) -> list[Part]:
    """Fat around a root in a bony canal (the sacral foramina), 1.5 mm wider than the root."""
    return tube("foramen", Label.EPIDURAL_FAT, path, radius_mm + 1.5)


def _mirror(points: np.ndarray, side: int) -> np.ndarray:
    out = np.array(points, dtype=np.float64)
    out[:, 0] *= side
    return out
