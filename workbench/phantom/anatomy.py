"""Parametric lumbar spine phantom (L1-S1, prone patient) as a label map in LPS mm.

:func:`build_phantom` turns :class:`SpineParameters` into a :class:`Phantom`: a uint8 label map
(:class:`~workbench.phantom.labels.Label` values) and a vertebral level map on one grid, named
landmarks, nerve-root targets with plausible skin entries, and the back surface on which an
ultrasound probe sits. See docs/phantom.md for the anatomy, its sources and its parameters, and
docs/frames.md for the ``Mri`` frame (LPS: +x patient left, +y posterior, +z superior, mm).

Where things are
----------------
- The L3 vertebral body centre is at the LPS origin (0, 0, 0); the spine runs along z with L1
  above (+z) and S1 below; the torso is centred on x = 0; the back (skin over the spinous
  processes) faces +y.
- The spine centre line is a circular arc in the sagittal plane whose tangent turns by the
  lordosis between the L1 and S1 bodies (35 % above the L3 region, 65 % below, so the sacrum is
  the most inclined), plus a small lateral parabola for scoliosis.
- Each vertebra is a rigid body in its own local frame (origin at its body centre, axes u left,
  v posterior, w superior); ``vertebra_motion`` moves it about its body centre.

Sources of the dimensions are in :mod:`workbench.phantom._anatomy_dimensions` and the structure
modules; the main ones are Panjabi et al., Spine 17 (1992) 299; Zhou et al., Eur Spine J 9 (2000)
242; Zindrick et al., Spine 12 (1987) 160; Van Schaik et al., Spine 10 (1985) 59; Frobin et al.,
Neuroradiology 43 (2001) 409; Hasegawa et al., Spine 21 (1996) 1005; Crawford et al., AJNR 37
(2016) 742 (muscle fat fraction with age).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from workbench.anatomy import BONE_LABELS, LEVEL_NAMES, Label, LabelMap
from workbench.errors import PhantomError
from workbench.phantom import _anatomy_bone as bone
from workbench.phantom import _anatomy_soft as soft
from workbench.phantom._anatomy_dimensions import DISC_HEIGHT_MM, LAYOUT_LEVELS, VertebraDims, varied_dims
from workbench.phantom._anatomy_geometry import (
    Canvas,
    Part,
    Pose,
    SpineCurve,
    VoxelGrid,
    rotation_from_euler_deg,
    superellipse,
    tube,
)
from workbench.phantom.labels import PHANTOM_TABLE

__all__ = [
    "Phantom",
    "SpineParameters",
    "build_phantom",
    "TRANSITIONAL_VARIANTS",
    "disc_degeneration_for_age",
    "fat_thickness_for_bmi",
    "muscle_fat_fraction_for_age",
    "vertebra_motion_matrix",
]

DEFAULT_LEVELS = LEVEL_NAMES[1:]
_SIDES = (("left", 1), ("right", -1))
_TARGET_LEVELS = ("L3", "L4", "L5", "S1")
_LIMITS = {  # parameter: (low, high, unit)
    "lordosis_deg": (0.0, 70.0, "deg"),
    "bmi": (16.0, 45.0, "kg/m^2"),
    "age_years": (18.0, 90.0, "years"),
    "scoliosis_deg": (-20.0, 20.0, "deg"),
    "spacing_mm": (0.25, 2.0, "mm"),
    "foraminal_stenosis": (0.0, 1.0, "(grade)"),
}
#: Lumbosacral transitional vertebra variants (:attr:`SpineParameters.transitional`): none; L5
#: fused to the sacrum (bone in the L5-S1 disc space, no L5-S1 facet joint spaces); S1 separated
#: from the sacrum below by a rudimentary S1-S2 disc. Either makes counting levels up from the
#: sacrum give the wrong level (Konin GP, Walz DM, "Lumbosacral transitional vertebrae:
#: classification, imaging findings, and clinical relevance", AJNR 31 (2010) 1778-1786).
TRANSITIONAL_VARIANTS = ("none", "sacralised-L5", "lumbarised-S1")
#: Levels whose exiting-root foramina :attr:`SpineParameters.foraminal_stenosis` narrows (the targets').
_STENOSIS_LEVELS = ("L3", "L4", "L5")
#: Rudimentary S1-S2 disc of a lumbarised S1: height, mm, below the S1 body.
_RUDIMENTARY_DISC_MM = 3.0
_MAX_MOTION_ROTATION_DEG = 20.0
_MAX_MOTION_TRANSLATION_MM = 20.0
#: Fraction of the lordosis turned above the L3 region (the rest, 65 %, below it).
_LORDOSIS_UPPER_FRACTION = 0.35
#: Skin entry hints: lateral tilt (mm per mm of depth) of the needle direction in the vertebra's
#: axial plane, so a lumbar entry lands about 40-50 mm from the midline as in the paramedian
#: (paravertebral) approach, 3-4 cm lateral to the spinous process (Hadzic A, Textbook of
#: Regional Anesthesia, 2nd ed. 2017, lumbar paravertebral/psoas compartment block).
_ENTRY_LATERAL_TILT = {"lumbar": 0.2, "S1": 0.1}
#: Where a target lies along its root past the foramen waypoint (where the root leaves the bone), mm.
_TARGET_PAST_FORAMEN_MM = {"lumbar": 3.0, "S1": 7.0}
_MARKER_LATERAL_MM = 40.0
_DORSAL_FORAMEN_RADIUS_MM = 4.5


# -- parameters ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpineParameters:
    """What to build. Equal parameters give byte-identical label maps.

    Attributes
    ----------
    seed : int
        Seeds small plausible variation: dimensions +-5 %, angles +-3 deg, disc heights,
        fat thickness, aortic calibre.
    levels : tuple of str
        Contiguous run of ``"L1"``..``"S1"`` to build (at least two). The layout of the spine
        does not depend on it: leaving out a level only leaves out its structures.
    lordosis_deg : float
        Angle between the L1 and S1 body axes (endplate normals), 0..70 deg (adults 40-60).
    bmi : float
        Body-mass index, 16..45 kg/m^2: subcutaneous fat (:func:`fat_thickness_for_bmi`) and
        torso width.
    age_years : float
        18..90: muscle fat infiltration (:func:`muscle_fat_fraction_for_age`) and disc
        degeneration (:func:`disc_degeneration_for_age`).
    scoliosis_deg : float
        Lateral (coronal) angle between the L1 and S1 body axes, -20..20 deg; positive moves the
        apex (L3) to the patient's right of the ends.
    spacing_mm : float
        Voxel size of the label map, 0.25..2 mm.
    vertebra_motion : mapping of str to (rotation_deg (3,), translation_mm (3,))
        Rigid motion of a level about its body centre in LPS (see
        :func:`vertebra_motion_matrix`), e.g. the posture change between MRI and procedure.
        Discs follow their vertebrae; canal contents and soft tissues stay.
    transitional : str
        One of :data:`TRANSITIONAL_VARIANTS`: ``"none"``, ``"sacralised-L5"`` (the L5-S1 disc
        space is bone, the L5-S1 facet joints fused) or ``"lumbarised-S1"`` (a 3 mm rudimentary
        disc separates the S1 body from the sacrum). Level names stay anatomical (the true level).
    foraminal_stenosis : float
        Degenerative narrowing of the L3-L5 exiting-root foramina, 0 (none) .. 1 (severe): a
        hypertrophic articular-process osteophyte of radius ``1.5 + 3 grade`` mm dorsal to the
        root in the foramen, ``1.5 (1 - grade)`` mm clear of the root sleeve (touching it at 1;
        it never replaces root, ganglion or artery voxels).
    """

    seed: int = 0
    levels: tuple[str, ...] = DEFAULT_LEVELS
    lordosis_deg: float = 45.0
    bmi: float = 25.0
    age_years: float = 45.0
    scoliosis_deg: float = 0.0
    spacing_mm: float = 0.5
    vertebra_motion: Mapping[str, tuple[Sequence[float], Sequence[float]]] = field(default_factory=dict)
    transitional: str = "none"
    foraminal_stenosis: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise PhantomError(f"phantom seed must be a non-negative integer, not {self.seed!r}")
        object.__setattr__(self, "levels", _checked_levels(self.levels))
        for name, (low, high, unit) in _LIMITS.items():
            value = getattr(self, name)
            if not isinstance(value, (int, float, np.number)) or not low <= float(value) <= high:
                raise PhantomError(f"phantom {name} must be within {low:g}..{high:g} {unit}, not {value!r}")
        object.__setattr__(self, "vertebra_motion", _checked_motion(self.vertebra_motion, self.levels))
        if self.transitional not in TRANSITIONAL_VARIANTS:
            raise PhantomError(f"phantom transitional must be one of {', '.join(TRANSITIONAL_VARIANTS)}, not {self.transitional!r}")


def _checked_levels(levels) -> tuple[str, ...]:
    levels = tuple(levels) if not isinstance(levels, str) else (levels,)
    unknown = [lvl for lvl in levels if lvl not in DEFAULT_LEVELS]
    if unknown:
        raise PhantomError(f"unknown phantom level {unknown[0]!r}: use {', '.join(DEFAULT_LEVELS)}")
    if len(levels) < 2:
        raise PhantomError("phantom levels must name at least two vertebrae")
    indices = [DEFAULT_LEVELS.index(lvl) for lvl in levels]
    if indices != list(range(indices[0], indices[0] + len(indices))):
        raise PhantomError(f"phantom levels must be contiguous and in order L1..S1, not {levels}")
    return levels


def _checked_motion(motion, levels: tuple[str, ...]) -> dict[str, tuple[tuple[float, ...], tuple[float, ...]]]:
    checked = {}
    for level, value in dict(motion).items():
        if level not in levels:
            raise PhantomError(f"vertebra_motion names level {level!r}, which is not among the built levels {levels}")
        try:
            rotation, translation = (np.asarray(v, dtype=np.float64) for v in value)
        except (TypeError, ValueError):
            raise PhantomError(
                f"vertebra_motion[{level!r}] must be (rotation_deg (3,), translation_mm (3,))"
            ) from None
        if rotation.shape != (3,) or translation.shape != (3,):
            raise PhantomError(f"vertebra_motion[{level!r}] must be (rotation_deg (3,), translation_mm (3,))")
        if not (np.all(np.isfinite(rotation)) and np.all(np.isfinite(translation))):
            raise PhantomError(f"vertebra_motion[{level!r}] holds non-finite values")
        if np.abs(rotation).max() > _MAX_MOTION_ROTATION_DEG or np.abs(translation).max() > _MAX_MOTION_TRANSLATION_MM:
            raise PhantomError(
                f"vertebra_motion[{level!r}] is too large: at most {_MAX_MOTION_ROTATION_DEG:g} deg and "
                f"{_MAX_MOTION_TRANSLATION_MM:g} mm per axis"
            )
        checked[level] = (tuple(float(v) for v in rotation), tuple(float(v) for v in translation))
    return checked


def fat_thickness_for_bmi(bmi: float) -> float:
    """Nominal subcutaneous fat thickness over the lumbar spine, mm: ``10 + 2 (BMI - 20)``,
    at least 3 mm (10 mm at BMI 20, 20 mm at 25, 40 mm at 35)."""
    return max(3.0, 10.0 + 2.0 * (float(bmi) - 20.0))


def muscle_fat_fraction_for_age(age_years: float) -> float:
    """Fat fraction of the paraspinal muscles (0..1): ``0.05 + 0.0035 (age - 20)``, clipped to
    0.03..0.5 (about 0.14 at 45 and 0.23 at 70 years; Crawford RJ et al., "Age- and
    level-dependence of fatty infiltration in lumbar paravertebral muscles of healthy
    volunteers", AJNR 37 (2016) 742-748). The MRI and ultrasound models use it for muscle
    signal and echogenicity."""
    return float(np.clip(0.05 + 0.0035 * (float(age_years) - 20.0), 0.03, 0.5))


def disc_degeneration_for_age(age_years: float) -> float:
    """Disc degeneration, 0 (none) .. 1 (severe): ``(age - 30) / 50`` clipped. It lowers disc
    height by up to 20 %, shrinks the nucleus by up to 30 % and darkens it on T2."""
    return float(np.clip((float(age_years) - 30.0) / 50.0, 0.0, 1.0))


def vertebra_motion_matrix(
    rotation_deg: Sequence[float], translation_mm: Sequence[float], centre_lps: np.ndarray
) -> np.ndarray:
    """(4, 4) LPS matrix of a rigid vertebra motion about ``centre_lps``.

    ``p' = R (p - c) + c + t`` with ``R = Rz Ry Rx`` built from ``rotation_deg`` about the LPS
    x, y, z axes (extrinsic, applied in that order; SciPy ``from_euler("xyz")``).
    """
    rotation = rotation_from_euler_deg(rotation_deg)
    centre = np.asarray(centre_lps, dtype=np.float64)
    m = np.eye(4)
    m[:3, :3] = rotation
    m[:3, 3] = centre + np.asarray(translation_mm, dtype=np.float64) - rotation @ centre
    return m


# -- the phantom ----------------------------------------------------------------------------------


@dataclass
class Phantom:
    """A built phantom. All positions are LPS mm (``Mri`` frame, docs/frames.md).

    Attributes
    ----------
    labels : SimpleITK.Image
        uint8 :class:`~workbench.phantom.labels.Label` values; identity direction, isotropic
        spacing ``parameters.spacing_mm``.
    levels : SimpleITK.Image
        uint8 on the same grid: level index (1..6, ``LEVEL_NAMES``) on each vertebra's bone
        voxels, 0 elsewhere.
    landmarks_lps : dict of str to (3,) float array
        "<L> body centre", "<L> spinous process tip" (most posterior point), "<L> left/right
        transverse process tip" (L1-L5), "<L> left/right pedicle" (pedicle axis at the
        isthmus), "<U>-<L> left/right facet joint" (joint centre), "skin marker N" (N >= 4).
    targets_lps : dict of str to (3,) float array
        "<L> left/right exiting nerve root, dorsal aspect" for L3, L4, L5 and S1 (those built):
        the dorsal surface of the root 3 mm outside the foramen (S1: in the S1 foramen under
        the dorsal sacral foramen).
    skin_entry_hint_lps : dict of str to (3,) float array
        Same keys: a skin point from which a straight needle reaches the target without bone.
    vertebra_centres_lps : dict of str to (3,) float array
        Body centres (after ``vertebra_motion``).
    vertebra_frames_lps : dict of str to (4, 4) float array
        Local (u left, v posterior, w superior; origin body centre) to LPS, after motion.
    parameters : SpineParameters
    muscle_fat_fraction : float
        Paraspinal muscle fat fraction, 0..1 (drives muscle MRI signal and echogenicity).
    disc_degeneration : float
        0..1 (nucleus T2 signal and size, disc height).
    fat_thickness_mm : float
        Subcutaneous fat thickness over the lumbar back (uniform, measured normal to the skin).
    back_surface : BackSurface
        The posterior skin surface; see :meth:`skin_surface_y_mm`.
    """

    labels: sitk.Image
    levels: sitk.Image
    landmarks_lps: dict[str, np.ndarray]
    targets_lps: dict[str, np.ndarray]
    skin_entry_hint_lps: dict[str, np.ndarray]
    vertebra_centres_lps: dict[str, np.ndarray]
    vertebra_frames_lps: dict[str, np.ndarray]
    parameters: SpineParameters
    muscle_fat_fraction: float
    disc_degeneration: float
    fat_thickness_mm: float
    back_surface: soft.BackSurface

    def skin_surface_y_mm(self, x_mm, z_mm) -> np.ndarray:
        """y of the posterior skin surface at (x, z), mm; broadcasts; NaN beyond the torso width.

        The label map follows it to within half a voxel.
        """
        return self.back_surface.y_mm(x_mm, z_mm)

    @property
    def label_map(self) -> LabelMap:
        """:attr:`labels` with its label table (:data:`~workbench.phantom.labels.PHANTOM_TABLE`)."""
        return LabelMap(self.labels, PHANTOM_TABLE)

    def label_at(self, points_lps) -> np.ndarray:
        """Labels at the voxels nearest to ``points_lps`` ((N, 3) or (3,) float, mm) -> (N,) uint8;
        AIR outside the grid."""
        return _lookup(self.labels, points_lps)

    def level_at(self, points_lps) -> np.ndarray:
        """Level indices (1..6, 0 = not vertebral bone) at the nearest voxels -> (N,) uint8."""
        return _lookup(self.levels, points_lps)


def _lookup(image: sitk.Image, points_lps) -> np.ndarray:
    try:
        points = np.asarray(points_lps, dtype=np.float64).reshape(-1, 3)
    except (TypeError, ValueError):
        raise PhantomError("points_lps must be an (N, 3) or (3,) array of numbers") from None
    if not np.all(np.isfinite(points)):
        raise PhantomError("points_lps holds non-finite coordinates")
    index = np.round((points - np.array(image.GetOrigin())) / np.array(image.GetSpacing())).astype(np.int64)
    size = np.array(image.GetSize())
    inside = np.all((index >= 0) & (index < size), axis=1)
    out = np.full(len(points), int(Label.AIR), dtype=np.uint8)
    array = sitk.GetArrayViewFromImage(image)
    out[inside] = array[index[inside, 2], index[inside, 1], index[inside, 0]]
    return out


# -- building ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Vertebra:
    level: str
    index: int  # in LEVEL_NAMES (T12: 0, never drawn)
    dims: VertebraDims
    keypoints: bone.Keypoints
    base: Pose  # MRI-time pose
    pose: Pose  # after vertebra_motion


@dataclass(frozen=True)
class _Layout:
    curve: SpineCurve
    s_mm: dict[str, float]
    vertebrae: dict[str, _Vertebra]  # every layout level, T12 included
    disc_height_mm: dict[str, float]  # keyed by the upper level
    built: tuple[str, ...]


def build_phantom(params: SpineParameters) -> Phantom:
    """Build the label map, level map, landmarks and targets for ``params``.

    Takes about 3-5 s at 0.5 mm on two cores with a peak memory of about 1 GB (BMI 25).
    Deterministic: equal parameters give identical bytes. The grid depends on the unmoved
    anatomy only, so a phantom with ``vertebra_motion`` shares the grid of the one without.

    Raises
    ------
    PhantomError
        ``params`` is not a :class:`SpineParameters`.
    """
    if not isinstance(params, SpineParameters):
        raise PhantomError(f"build_phantom needs SpineParameters, not {type(params).__name__}")
    rng = np.random.default_rng(params.seed)
    dims = {level: varied_dims(level, rng) for level in LAYOUT_LEVELS}
    disc_variation = rng.uniform(-0.05, 0.05, len(DISC_HEIGHT_MM))
    fat_variation, aorta_variation = rng.uniform(-0.05, 0.05, 2)

    degeneration = disc_degeneration_for_age(params.age_years)
    fat_mm = fat_thickness_for_bmi(params.bmi) * (1.0 + fat_variation)
    layout = _layout(params, dims, disc_variation, degeneration)
    back = _back_surface(layout, params.bmi, fat_mm)
    grid = _grid(layout, back, params.spacing_mm)

    canvas = Canvas(grid)
    _paint_soft_tissues(canvas, layout, back, fat_mm, aorta_radius_mm=10.0 * (1.0 + aorta_variation))
    _paint_spine(canvas, layout, degeneration, params)

    landmarks = _landmarks(layout, back)
    targets, entries = _targets(layout, back)
    moved = {name: layout.vertebrae[name] for name in layout.built}
    return Phantom(
        labels=_image(canvas.labels, grid),
        levels=_image(canvas.levels, grid),
        landmarks_lps=landmarks,
        targets_lps=targets,
        skin_entry_hint_lps=entries,
        vertebra_centres_lps={name: v.pose.centre_lps.copy() for name, v in moved.items()},
        vertebra_frames_lps={name: v.pose.matrix() for name, v in moved.items()},
        parameters=params,
        muscle_fat_fraction=muscle_fat_fraction_for_age(params.age_years),
        disc_degeneration=degeneration,
        fat_thickness_mm=float(fat_mm),
        back_surface=back,
    )


def _layout(params: SpineParameters, dims: dict[str, VertebraDims], disc_variation, degeneration: float) -> _Layout:
    """Stack the vertebrae along the curve (body half-heights plus disc heights) and pose them."""
    disc = {
        upper: DISC_HEIGHT_MM[upper] * (1.0 + var) * (1.0 - 0.2 * degeneration)
        for upper, var in zip(LAYOUT_LEVELS[:-1], disc_variation)
    }
    s = {LAYOUT_LEVELS[-1]: 0.0}
    for upper, lower in reversed(list(zip(LAYOUT_LEVELS[:-1], LAYOUT_LEVELS[1:]))):
        s[upper] = s[lower] + dims[lower].body_height_mm / 2 + disc[upper] + dims[upper].body_height_mm / 2
    s = {level: value - s["L3"] for level, value in s.items()}
    span = s["L1"] - s["S1"]
    lordosis = math.radians(params.lordosis_deg)
    curvature = lordosis / span
    theta0 = -(1.0 - _LORDOSIS_UPPER_FRACTION) * lordosis - curvature * s["S1"]
    curve = SpineCurve(theta0, curvature, math.radians(params.scoliosis_deg) / span)
    vertebrae = {}
    for level in LAYOUT_LEVELS:
        base = Pose(curve.frame(s[level]), curve.point(s[level])[0])
        pose = base
        if level in params.vertebra_motion:
            rotation_deg, translation_mm = params.vertebra_motion[level]
            pose = base.moved(rotation_from_euler_deg(rotation_deg), np.asarray(translation_mm))
        index = LEVEL_NAMES.index(level) if level in LEVEL_NAMES else 0
        vertebrae[level] = _Vertebra(level, index, dims[level], bone.keypoints(dims[level]), base, pose)
    return _Layout(curve, s, vertebrae, disc, params.levels)


def _back_surface(layout: _Layout, bmi: float, fat_mm: float) -> soft.BackSurface:
    """The back over the (unmoved) spinous tips of L1..S1 and the dorsal sacrum at S2 and S3."""
    points = [
        v.base.to_lps(bone.spinous_tip(v.dims, v.keypoints)) for name, v in layout.vertebrae.items() if name != "T12"
    ]
    s1 = layout.vertebrae["S1"]
    for below_mm in (25.0, 50.0):
        points.append(s1.base.to_lps(bone.sacral_dorsal_surface(s1.dims, -s1.dims.body_height_mm / 2 - below_mm)))
    return soft.BackSurface.over_spine(np.array(points), bmi, fat_mm)


def _grid(layout: _Layout, back: soft.BackSurface, spacing_mm: float) -> VoxelGrid:
    """From 20 mm above the top built body to 50 mm below the S1 centre (or 30 mm below the
    lowest built body), the whole torso width, from 47 mm in front of the curve (aorta, IVC)
    to 5 mm above the skin. The origin is a multiple of the spacing."""
    built = [layout.vertebrae[name] for name in layout.built]
    top = max(v.base.to_lps(np.array([0.0, 0.0, v.dims.body_height_mm / 2]))[2] for v in built) + 20.0
    lowest = built[-1]
    below = 50.0 if lowest.level == "S1" else lowest.dims.body_height_mm / 2 + 30.0
    bottom = lowest.base.centre_lps[2] - below
    z = np.linspace(bottom, top, 200)
    curve_y = layout.curve.point(layout.curve.s_at_z(z))[:, 1]
    skin_top = back.highest_y_mm(z).max()
    lo = np.array([-back.half_width_mm - 5.0, curve_y.min() - 47.0, bottom])
    hi = np.array([back.half_width_mm + 5.0, skin_top + 5.0, top])
    origin = np.floor(lo / spacing_mm) * spacing_mm
    size = tuple(int(n) for n in np.ceil((hi - origin) / spacing_mm).astype(int) + 1)
    return VoxelGrid(origin, float(spacing_mm), size)


def _paint_soft_tissues(
    canvas: Canvas, layout: _Layout, back: soft.BackSurface, fat_mm: float, aorta_radius_mm: float
) -> None:
    along = soft.DimsAlongSpine(layout.s_mm, {k: v.dims for k, v in layout.vertebrae.items()})
    soft.paint_torso_shell(canvas, back, fat_mm)
    soft.paint_muscles(canvas, layout.curve, along, layout.s_mm)
    soft.paint_great_vessels(canvas, layout.curve, along, layout.s_mm, aorta_radius_mm)
    top = layout.vertebrae[layout.built[0]]
    s_top = layout.s_mm[top.level] + top.dims.body_height_mm / 2
    s1 = layout.vertebrae["S1"]
    s_bottom = layout.s_mm["S1"] + s1.dims.body_height_mm / 2
    soft.paint_spinal_ligaments(canvas, layout.curve, along, s_top, s_bottom)
    soft.paint_canal_contents(
        canvas, layout.curve, along, s_sac_end=layout.s_mm["S1"] - s1.dims.body_height_mm / 2 - 15.0
    )


def _paint_spine(canvas: Canvas, layout: _Layout, degeneration: float, params: SpineParameters) -> None:
    """Discs; lumbar roots, ganglia and arteries; bone (which wins every overlap); the
    anatomical variants of ``params`` (transitional vertebra, foraminal osteophytes); the sacral
    canal and foramina cut out of the sacrum with the S1 roots inside; facet joint spaces."""
    pairs = list(zip(layout.built[:-1], layout.built[1:]))
    fused = ("L5", "S1") if params.transitional == "sacralised-L5" else None
    for upper, lower in pairs:
        vu, vl = layout.vertebrae[upper], layout.vertebrae[lower]
        mid, parts = bone.disc_parts(vu.pose, vu.dims, vl.pose, vl.dims, layout.disc_height_mm[upper], degeneration)
        if (upper, lower) == fused:  # the whole disc space (annulus outline) is the fused L5 body
            canvas.paint_part(mid, dataclasses.replace(parts[0], label=Label.VERTEBRAL_BODY), level=vu.index)
            continue
        for part in parts:
            canvas.paint_part(mid, part)
    vertebrae = [layout.vertebrae[name] for name in layout.built]
    for v in vertebrae:
        if v.level != "S1":
            for part in _neural_parts(v):
                canvas.paint_part(v.pose, part)
    for v in vertebrae:
        for part in _bone_parts(layout, v):
            canvas.paint_part(v.pose, part, level=v.index)
    _paint_variants(canvas, layout, params)
    bone_labels = tuple(sorted(BONE_LABELS))
    if "S1" in layout.built:
        v = layout.vertebrae["S1"]
        for part in _sacral_openings(v):
            canvas.paint_part(v.pose, part)
        for part in _neural_parts(v):
            canvas.paint_part(v.pose, part, not_on=bone_labels)
    for upper, lower in pairs:
        if (upper, lower) == fused:
            continue
        vl = layout.vertebrae[lower]
        for joint in _joints(layout, upper, lower):
            canvas.paint_part(vl.pose, bone.facet_joint_space(joint.to_local(vl.base)), not_on=bone_labels)


def _paint_variants(canvas: Canvas, layout: _Layout, params: SpineParameters) -> None:
    """A lumbarised S1's rudimentary S1-S2 disc (only over S1 body and sacrum bone) and the
    foraminal osteophytes of ``params.foraminal_stenosis`` (never over neural or arterial voxels).
    Paints nothing for the defaults."""
    if params.transitional == "lumbarised-S1" and "S1" in layout.built:
        v = layout.vertebrae["S1"]
        half_h, half_w, half_d = v.dims.body_height_mm / 2, v.dims.body_width_mm / 2 + 1.0, v.dims.body_depth_mm / 2 + 1.0
        top, bottom = -half_h, -half_h - _RUDIMENTARY_DISC_MM
        disc = Part(
            "rudimentary S1-S2 disc",
            Label.DISC_ANNULUS,
            np.array([-half_w, -half_d, bottom]),
            np.array([half_w, half_d, top]),
            lambda u, v_, w: (w >= bottom) & (w <= top) & superellipse(u, v_, half_w, half_d, 2.5),
        )
        keep = tuple(label for label in Label if label not in (Label.VERTEBRAL_BODY, Label.SACRUM))
        canvas.paint_part(v.pose, disc, not_on=keep)
    grade = float(params.foraminal_stenosis)
    if grade <= 0.0:
        return
    neural = (Label.NERVE_ROOT, Label.DORSAL_ROOT_GANGLION, Label.RADICULAR_ARTERY)
    radius = 1.5 + 3.0 * grade
    for name in (lvl for lvl in _STENOSIS_LEVELS if lvl in layout.built):
        v = layout.vertebrae[name]
        below = layout.vertebrae[_neighbours(name)[1]]
        for _, side in _SIDES:
            path = _root_path(v, side)
            centre = (path[1] + path[2]) / 2 + np.array([0.0, v.dims.root_radius_mm + radius + 1.5 * (1.0 - grade), 0.0])
            osteophyte = Part(
                "foraminal osteophyte",
                Label.ARTICULAR_PROCESS,
                centre - radius,
                centre + radius,
                lambda u, v_, w, c=centre: (u - c[0]) ** 2 + (v_ - c[1]) ** 2 + (w - c[2]) ** 2 <= radius**2,
            )
            canvas.paint_part(v.pose, osteophyte, level=below.index, not_on=neural)


def _joints(layout: _Layout, upper: str, lower: str) -> list[bone.FacetJoint]:
    """The left and right facet joints between two layout levels, LPS, MRI-time (unmoved)."""
    vu, vl = layout.vertebrae[upper], layout.vertebrae[lower]
    mid = bone.mid_pose(vu.base, vu.dims, vl.base, vl.dims)
    return [bone.facet_joint_between(mid, vu.dims, vl.dims, side) for _, side in _SIDES]


def _neighbours(level: str) -> tuple[str | None, str | None]:
    """The layout levels above and below ``level`` (None past the ends)."""
    i = LAYOUT_LEVELS.index(level)
    above = LAYOUT_LEVELS[i - 1] if i > 0 else None
    below = LAYOUT_LEVELS[i + 1] if i + 1 < len(LAYOUT_LEVELS) else None
    return above, below


def _bone_parts(layout: _Layout, v: _Vertebra) -> list[Part]:
    """Every bone part of one vertebra in its local frame, articular processes included."""
    parts = (
        bone.sacrum_parts(v.dims, v.keypoints) if v.level == "S1" else bone.lumbar_vertebra_parts(v.dims, v.keypoints)
    )
    above, below = _neighbours(v.level)
    for (_, side), joint in zip(_SIDES, _joints(layout, above, v.level)):
        root = bone.superior_stem_root(v.keypoints, side)
        parts.append(bone.articular_process(joint.to_local(v.base), root, superior=True))
    if below is not None:
        for (_, side), joint in zip(_SIDES, _joints(layout, v.level, below)):
            root = bone.inferior_stem_root(v.dims, v.keypoints, side)
            parts.append(bone.articular_process(joint.to_local(v.base), root, superior=False))
    return parts


def _root_path(v: _Vertebra, side: int) -> np.ndarray:
    if v.level == "S1":
        return soft.sacral_root_path(v.dims, v.keypoints, side)
    return soft.nerve_root_path(v.dims, v.keypoints, side)


def _dorsal_foramen(v: _Vertebra, side: int) -> np.ndarray:
    """(2, 3) local axis of the S1 dorsal foramen: from the target out along the entry direction."""
    target = _target_local(v, side)
    return np.array([target, target + 45.0 * _entry_direction_local(v, side)])


def _neural_parts(v: _Vertebra) -> list[Part]:
    """Radicular arteries (lumbar), exiting roots and their ganglia, both sides."""
    parts = []
    for _, side in _SIDES:
        path = _root_path(v, side)
        if v.level != "S1":
            parts += soft.radicular_artery(v.dims, v.keypoints, side)
        parts += soft.nerve_root(path, v.dims.root_radius_mm)
        parts.append(soft.dorsal_root_ganglion(path, v.dims.root_radius_mm))
    return parts


def _sacral_openings(v: _Vertebra) -> list[Part]:
    """What is cut out of the sacrum and filled with fat: the sacral canal, the S1 foramina
    around the roots, and the dorsal S1 foramina from the target out along the entry path."""
    parts = [bone.sacral_canal(v.dims, v.keypoints)]
    for _, side in _SIDES:
        parts += soft.foramen_fat(_root_path(v, side), v.dims.root_radius_mm)
        parts += tube("dorsal sacral foramen", Label.EPIDURAL_FAT, _dorsal_foramen(v, side), _DORSAL_FORAMEN_RADIUS_MM)
    return parts


# -- landmarks and targets ---------------------------------------------------------------------------


def _landmarks(layout: _Layout, back: soft.BackSurface) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name in layout.built:
        v = layout.vertebrae[name]
        out[f"{name} body centre"] = v.pose.centre_lps.copy()
        spinous = bone.spinous_process(v.dims, v.keypoints)
        tip = _extreme_point_local(spinous, v.base, np.array([0.0, 1.0, 0.0]))  # most posterior, MRI time
        out[f"{name} spinous process tip"] = v.pose.to_lps(tip)
        for side_name, side in _SIDES:
            k = v.keypoints
            out[f"{name} {side_name} pedicle"] = v.pose.to_lps(np.array([side * k.pedicle_u, k.pedicle_v, k.pedicle_w]))
            if name != "S1":
                tip = bone.transverse_process_tip(v.dims, k, side)
                out[f"{name} {side_name} transverse process tip"] = v.pose.to_lps(tip)
    for upper, lower in zip(layout.built[:-1], layout.built[1:]):
        vl = layout.vertebrae[lower]
        for (side_name, _), joint in zip(_SIDES, _joints(layout, upper, lower)):
            out[f"{upper}-{lower} {side_name} facet joint"] = vl.pose.to_lps(vl.base.to_local(joint.centre))
    marker_levels = sorted(
        {layout.built[0], layout.built[len(layout.built) // 2], layout.built[-1]}, key=layout.built.index
    )
    number = 1
    for name in marker_levels:
        z = layout.vertebrae[name].base.centre_lps[2]
        for x in (-_MARKER_LATERAL_MM, _MARKER_LATERAL_MM):
            out[f"skin marker {number}"] = np.array([x, float(back.y_mm(x, z)), z])
            number += 1
    return out


def _extreme_point_local(part: Part, pose: Pose, direction_lps: np.ndarray) -> np.ndarray:
    """(3,) local point of ``part`` furthest along ``direction_lps`` when placed by ``pose``:
    sampled at 0.5 mm over its box, then at 0.05 mm within 1 mm of the best sample (ties
    averaged)."""
    direction_local = pose.rotation.T @ direction_lps
    lo, hi, step = part.lo_local, part.hi_local, 0.5
    for _ in range(2):
        axes = [np.arange(a, b + step, step) for a, b in zip(lo, hi)]
        u, v, w = np.meshgrid(*axes, indexing="ij")
        inside = part.inside(u, v, w)
        points = np.column_stack([u[inside], v[inside], w[inside]])
        reach = points @ direction_local
        best = points[reach >= reach.max() - 1e-9].mean(axis=0)
        lo, hi, step = best - 1.0, best + 1.0, 0.05
    return best


def _target_local(v: _Vertebra, side: int) -> np.ndarray:
    """Dorsal surface of the exiting root past its foramen waypoint, local mm: 3 mm outside a
    lumbar foramen; 7 mm into the S1 foramen, under the dorsal sacral foramen."""
    path = _root_path(v, side)
    along = (path[3] - path[2]) / np.linalg.norm(path[3] - path[2])
    centre = path[2] + _TARGET_PAST_FORAMEN_MM["S1" if v.level == "S1" else "lumbar"] * along
    dorsal = np.array([0.0, 1.0, 0.0]) - along[1] * along
    return centre + v.dims.root_radius_mm * dorsal / np.linalg.norm(dorsal)


def _entry_direction_local(v: _Vertebra, side: int) -> np.ndarray:
    tilt = _ENTRY_LATERAL_TILT["S1" if v.level == "S1" else "lumbar"]
    direction = np.array([side * tilt, 1.0, 0.0])
    return direction / np.linalg.norm(direction)


def _targets(layout: _Layout, back: soft.BackSurface) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    targets, entries = {}, {}
    for name in (lvl for lvl in _TARGET_LEVELS if lvl in layout.built):
        v = layout.vertebrae[name]
        for side_name, side in _SIDES:
            key = f"{name} {side_name} exiting nerve root, dorsal aspect"
            target = v.pose.to_lps(_target_local(v, side))
            targets[key] = target
            entries[key] = _skin_crossing(back, target, v.pose.rotation @ _entry_direction_local(v, side))
    return targets, entries


def _skin_crossing(back: soft.BackSurface, start_lps: np.ndarray, direction_lps: np.ndarray) -> np.ndarray:
    """First point of the ray from ``start_lps`` along ``direction_lps`` on the skin surface."""
    steps = np.arange(0.0, 300.0, 0.5)
    points = start_lps + steps[:, None] * direction_lps
    outside = points[:, 1] >= back.y_mm(points[:, 0], points[:, 2])
    first = int(np.argmax(outside))
    lo, hi = steps[max(first - 1, 0)], steps[first]
    for _ in range(30):
        mid = (lo + hi) / 2
        p = start_lps + mid * direction_lps
        if p[1] >= back.y_mm(p[0], p[2]):
            hi = mid
        else:
            lo = mid
    return start_lps + hi * direction_lps


def _image(array: np.ndarray, grid: VoxelGrid) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetOrigin([float(v) for v in grid.origin_lps_mm])
    image.SetSpacing([grid.spacing_mm] * 3)
    return image
