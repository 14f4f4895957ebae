"""Parameters of the automatic registration methods, as typed frozen dataclasses.

Notebooks build widgets from the fields (``dataclasses.fields``); every method stores its
parameters in :attr:`RegistrationResult.parameters` via :func:`as_dict`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from workbench.errors import RegistrationError

__all__ = [
    "BoneDetectParameters",
    "BonePointParameters",
    "FramesLc2Parameters",
    "IcpParameters",
    "Lc2Parameters",
    "MattesParameters",
    "RobustBoneParameters",
    "as_dict",
]


def as_dict(params) -> dict:
    """The dataclass as plain JSON values (tuples become lists)."""
    values = dataclasses.asdict(params)
    return {key: list(value) if isinstance(value, tuple) else value for key, value in values.items()}


def _check_positive(owner: str, **values) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise RegistrationError(f"{owner} {name} must be a positive number, got {value!r}")


def _check_levels(owner: str, levels_mm) -> None:
    if not levels_mm:
        raise RegistrationError(f"{owner} levels_mm must name at least one resolution level")
    _check_positive(owner, **{f"levels_mm[{i}]": v for i, v in enumerate(levels_mm)})


@dataclass(frozen=True)
class Lc2Parameters:
    """LC2 (linear correlation of linear combination) registration, Wein et al. 2008.

    Attributes
    ----------
    levels_mm : tuple of float
        Voxel size of each resolution level, coarse to fine, mm.
    patch_radius_vox : int
        Patches are cubes of ``2 r + 1`` voxels at each level.
    us_smoothing_fraction : float
        Gaussian sigma of the speckle-reducing US smoothing, as a fraction of the level's voxel size.
    min_patch_coverage : float
        Patches with a smaller fraction of covered voxels are left out (0..1).
    max_evaluations : int
        Metric evaluations per level, at most.
    initial_step_mm, initial_step_deg : float
        First search step of the optimiser per translation / rotation parameter.
    tolerance_mm : float
        The optimiser stops when a step changes the parameters (scaled) by less than this.
    max_translation_mm, max_rotation_deg : float
        Bounds of the search about the initial transform (per parameter).
    """

    levels_mm: tuple[float, ...] = (4.0, 2.0)
    patch_radius_vox: int = 3
    us_smoothing_fraction: float = 0.5
    min_patch_coverage: float = 0.3
    max_evaluations: int = 400
    initial_step_mm: float = 4.0
    initial_step_deg: float = 3.0
    tolerance_mm: float = 0.05
    max_translation_mm: float = 30.0
    max_rotation_deg: float = 25.0

    def __post_init__(self) -> None:
        _check_levels("LC2", self.levels_mm)
        _check_positive(
            "LC2",
            patch_radius_vox=self.patch_radius_vox,
            us_smoothing_fraction=self.us_smoothing_fraction,
            min_patch_coverage=self.min_patch_coverage,
            max_evaluations=self.max_evaluations,
            initial_step_mm=self.initial_step_mm,
            initial_step_deg=self.initial_step_deg,
            tolerance_mm=self.tolerance_mm,
            max_translation_mm=self.max_translation_mm,
            max_rotation_deg=self.max_rotation_deg,
        )


@dataclass(frozen=True)
class MattesParameters:
    """SimpleITK Mattes mutual information registration (baseline).

    Attributes
    ----------
    histogram_bins : int
    sampling_fraction : float
        Fraction of the covered US voxels sampled per iteration (0..1).
    shrink_factors : tuple of int
        Per resolution level, coarse to fine.
    smoothing_sigmas_mm : tuple of float
        Gaussian smoothing per level, mm.
    learning_rate : float
        First step of the regular-step gradient descent (scaled parameters, ~mm).
    min_step : float
    iterations : int
        Per level, at most.
    seed : int
        Seeds the random sampling.
    """

    histogram_bins: int = 32
    sampling_fraction: float = 0.2
    shrink_factors: tuple[int, ...] = (4, 2)
    smoothing_sigmas_mm: tuple[float, ...] = (2.0, 1.0)
    learning_rate: float = 2.0
    min_step: float = 0.01
    iterations: int = 150
    seed: int = 0

    def __post_init__(self) -> None:
        _check_positive(
            "Mattes",
            histogram_bins=self.histogram_bins,
            sampling_fraction=self.sampling_fraction,
            learning_rate=self.learning_rate,
            min_step=self.min_step,
            iterations=self.iterations,
        )
        if len(self.shrink_factors) != len(self.smoothing_sigmas_mm) or not self.shrink_factors:
            raise RegistrationError(
                "Mattes shrink_factors and smoothing_sigmas_mm need one entry per level, equally many"
            )


@dataclass(frozen=True)
class IcpParameters:
    """Trimmed rigid ICP of US bone points to the MRI bone surface.

    Attributes
    ----------
    distance_schedule_mm : tuple of float
        Pairs farther apart than this are dropped; one stage per value, loose to tight.
    trim_fraction : float
        Of the pairs within the distance, keep this closest fraction (0..1].
    max_iterations : int
        Per stage, at most.
    tolerance_mm : float
        A stage ends when the points move less than this (RMS) in an iteration.
    min_pairs : int
        Fewer pairs than this within the distance is a failure.
    point_to_plane : bool
        Minimise distances to the MRI surface's tangent planes (slides along the surface and
        avoids the voxel-staircase local minima of point-to-point ICP) instead of to the points.
    restart_offset_mm : float
        Also start from the initial pose shifted by this along +-x, +-y, +-z (Mri) and keep the
        best; 0 runs from the initial pose only.
    restart_subsample : int
        The restarts use every n-th US point.
    inlier_distance_mm : float
        A restart's score: the fraction of US points this close to the MRI surface.
    """

    distance_schedule_mm: tuple[float, ...] = (20.0, 10.0, 5.0, 3.0, 2.0)
    trim_fraction: float = 0.8
    max_iterations: int = 30
    tolerance_mm: float = 0.005
    min_pairs: int = 20
    point_to_plane: bool = True
    restart_offset_mm: float = 12.0
    restart_subsample: int = 4
    inlier_distance_mm: float = 2.0

    def __post_init__(self) -> None:
        _check_levels("ICP", self.distance_schedule_mm)
        _check_positive(
            "ICP",
            trim_fraction=self.trim_fraction,
            max_iterations=self.max_iterations,
            tolerance_mm=self.tolerance_mm,
            min_pairs=self.min_pairs,
            restart_subsample=self.restart_subsample,
            inlier_distance_mm=self.inlier_distance_mm,
        )
        if isinstance(self.restart_offset_mm, bool) or not isinstance(self.restart_offset_mm, (int, float)) or not (
            math.isfinite(self.restart_offset_mm) and self.restart_offset_mm >= 0
        ):
            raise RegistrationError(f"ICP restart_offset_mm must be a number >= 0, got {self.restart_offset_mm!r}")
        if self.trim_fraction > 1:
            raise RegistrationError(f"ICP trim_fraction must be within (0, 1], got {self.trim_fraction!r}")


@dataclass(frozen=True)
class RobustBoneParameters:
    """Parameters of :func:`~workbench.registration.robust.register_bone_robust` (``"bone-robust"``).

    Attributes
    ----------
    search_schedule_mm : tuple of float
        Pair-distance limits of the coarse ICP from each start of the global search, mm.
    search_iterations : int
        Iterations per coarse stage at most.
    search_points : int
        The global search uses about this many US points (evenly subsampled).
    lateral_search_mm : float
        Also start this far left and right of the start, mm (0: along the spine only).
    refine_candidates : int
        The best this many distinct search results get the fine fit.
    distance_schedule_mm : tuple of float
        Rigid robust ICP stages after the search, mm.
    joint_schedule_mm : tuple of float
        Stages that also fit the depth scale and latency, mm.
    trim_fraction : float
        Keep the closest fraction of the pairs within the distance, (0, 1].
    huber_mm : float
        Huber threshold on the point-to-plane distance, mm: larger distances get weight
        ``huber_mm / |d|``.
    max_iterations : int
        Per stage at most.
    tolerance_mm : float
        A stage stops when a step moves the points less than this (RMS), mm.
    min_pairs : int
        Fewer pairs within a stage's distance fails that start.
    residual_cap_mm : float
        Distances are capped at this in the score (capped RMS residual), mm.
    estimate_scale, estimate_latency : bool
        Fit the speed-of-sound depth scale / the video latency (needs points with beam geometry).
        The scale is off by default: with per-tissue speeds and a segmented MRI surface it is
        confounded with the segmentation's one-voxel offset, and on the realistic case fitting it
        made TRE worse (docs/registration.md, "Registration under realistic error").
    scale_range : (2,) tuple of float
        Bounds of the depth scale (true / displayed depth; 1450-1620 m/s over 1540).
    latency_range_s : (2,) tuple of float
        Bounds of the latency, s.
    scale_prior_weight : float
        Ridge weight pulling the scale toward 1, mm per unit scale.
    latency_prior_weight : float
        Ridge weight pulling the latency toward 0, mm per s.
    level_shift_mm : float
        One vertebral level along the spine, mm.
    level_axis_mri : (3,) tuple of float
        The spine's superior direction in ``Mri`` (LPS +z).
    level_switch_ratio : float
        A neighbouring level whose capped residual is below this times the fit's is taken instead.
    """

    search_schedule_mm: tuple[float, ...] = (20.0, 10.0, 5.0)
    search_iterations: int = 12
    search_points: int = 600
    lateral_search_mm: float = 0.0
    refine_candidates: int = 2
    distance_schedule_mm: tuple[float, ...] = (5.0, 3.0)
    joint_schedule_mm: tuple[float, ...] = (3.0, 2.0)
    trim_fraction: float = 0.85
    huber_mm: float = 1.0
    max_iterations: int = 30
    tolerance_mm: float = 0.005
    min_pairs: int = 20
    residual_cap_mm: float = 5.0
    estimate_scale: bool = False
    estimate_latency: bool = True
    scale_range: tuple[float, float] = (0.94, 1.06)
    latency_range_s: tuple[float, float] = (-0.2, 0.2)
    scale_prior_weight: float = 2.0
    latency_prior_weight: float = 2.0
    level_shift_mm: float = 35.0
    level_axis_mri: tuple[float, float, float] = (0.0, 0.0, 1.0)
    level_switch_ratio: float = 0.8

    def __post_init__(self) -> None:
        _check_levels("robust ICP search", self.search_schedule_mm)
        _check_levels("robust ICP", self.distance_schedule_mm)
        _check_levels("robust ICP joint", self.joint_schedule_mm)
        _check_positive(
            "robust ICP",
            search_iterations=self.search_iterations, search_points=self.search_points,
            refine_candidates=self.refine_candidates, trim_fraction=self.trim_fraction, huber_mm=self.huber_mm,
            max_iterations=self.max_iterations, tolerance_mm=self.tolerance_mm, min_pairs=self.min_pairs,
            residual_cap_mm=self.residual_cap_mm, level_shift_mm=self.level_shift_mm,
            level_switch_ratio=self.level_switch_ratio,
        )
        if self.trim_fraction > 1 or self.level_switch_ratio > 1:
            raise RegistrationError("robust ICP trim_fraction and level_switch_ratio must be within (0, 1]")
        if not (self.scale_range[0] < 1.0 < self.scale_range[1]) or not (
            self.latency_range_s[0] < 0.0 < self.latency_range_s[1]
        ):
            raise RegistrationError("robust ICP scale_range must contain 1 and latency_range_s must contain 0")
        if self.lateral_search_mm < 0 or self.scale_prior_weight < 0 or self.latency_prior_weight < 0:
            raise RegistrationError("robust ICP lateral_search_mm and prior weights must be >= 0")


@dataclass(frozen=True)
class BonePointParameters:
    """Bone surface detection in B-mode frames (bright ridge with an acoustic shadow below).

    Attributes
    ----------
    min_brightness : float
        Ridge peaks darker than this (grey 0..255, after smoothing) are not bone.
    shadow_ratio : float
        The mean grey below the ridge must be under this fraction of the peak.
    shadow_depth_mm : tuple of float
        Depth range below the ridge where the shadow is measured, mm.
    min_depth_mm : float
        Ignore ridges shallower than this (skin, fat), mm.
    column_step : int
        Use every n-th image column.
    smoothing_px : float
        Gaussian smoothing of each frame before detection, pixels.
    """

    min_brightness: float = 200.0
    shadow_ratio: float = 0.25
    shadow_depth_mm: tuple[float, float] = (3.0, 15.0)
    min_depth_mm: float = 15.0
    column_step: int = 4
    smoothing_px: float = 2.0

    def __post_init__(self) -> None:
        _check_positive(
            "bone point",
            min_brightness=self.min_brightness,
            shadow_ratio=self.shadow_ratio,
            min_depth_mm=self.min_depth_mm,
            column_step=self.column_step,
            smoothing_px=self.smoothing_px,
        )
        low, high = self.shadow_depth_mm
        if not 0 <= low < high:
            raise RegistrationError(
                f"bone point shadow_depth_mm must be (low, high) with 0 <= low < high, got {self.shadow_depth_mm!r}"
            )


@dataclass(frozen=True)
class BoneDetectParameters:
    """Gain-adaptive bone surface detection in real B-mode frames (``registration.bone_detect``).

    Each frame is divided by a high percentile of its imaged pixels, so the thresholds are
    fractions of that frame's own bright level, whatever the gain. Per image column the bone
    is the bright ridge with the darkest acoustic shadow below it relative to its brightness.

    Attributes
    ----------
    reference_percentile : float
        Percentile (0..100] of the frame's imaged pixels that normalises its grey to 1.
    min_relative_brightness : float
        Ridge peaks under this fraction of the reference grey (after smoothing) are not bone.
    shadow_ratio : float
        The mean normalised grey of the shadow below the ridge must be under this fraction of
        the peak.
    shadow_depth_mm : tuple of float
        Depth range below the ridge where the shadow is measured, mm, longer than anechoic
        structures (vessels, the dural sac) that would otherwise pass for shadow; cut at the
        bottom of the imaged region (at least ``bone_detect.MIN_SHADOW_MM`` must be imaged).
    min_depth_mm : float
        Ignore ridges shallower than this (skin, near-field), mm.
    smoothing_mm : float
        Gaussian smoothing of each frame before detection, mm.
    lateral_smoothing_mm : float
        Gaussian smoothing of the shadow measure across columns, mm (bone shadows are wide,
        speckle gaps are not).
    min_run_mm : float
        Keep only detections in lateral runs at least this wide (neighbouring columns whose
        ridge rows differ by at most ``max_step_mm``), mm.
    max_step_mm : float
        Largest depth jump between neighbouring columns of one run, mm.
    column_step : int
        :func:`~workbench.registration.surface.us_bone_points` keeps the points of every n-th
        column (ICP time grows with the points); masks keep every column.
    """

    reference_percentile: float = 99.0
    min_relative_brightness: float = 0.45
    shadow_ratio: float = 0.45
    shadow_depth_mm: tuple[float, float] = (2.0, 20.0)
    min_depth_mm: float = 8.0
    smoothing_mm: float = 0.3
    lateral_smoothing_mm: float = 1.0
    min_run_mm: float = 3.0
    max_step_mm: float = 1.0
    column_step: int = 4

    def __post_init__(self) -> None:
        _check_positive(
            "bone detect",
            column_step=self.column_step,
            reference_percentile=self.reference_percentile,
            min_relative_brightness=self.min_relative_brightness,
            shadow_ratio=self.shadow_ratio,
            min_depth_mm=self.min_depth_mm,
            smoothing_mm=self.smoothing_mm,
            lateral_smoothing_mm=self.lateral_smoothing_mm,
            min_run_mm=self.min_run_mm,
            max_step_mm=self.max_step_mm,
        )
        if self.reference_percentile > 100:
            raise RegistrationError(
                f"bone detect reference_percentile must be within (0, 100], got {self.reference_percentile!r}"
            )
        low, high = self.shadow_depth_mm
        if not 0 <= low < high:
            raise RegistrationError(
                f"bone detect shadow_depth_mm must be (low, high) with 0 <= low < high, got {self.shadow_depth_mm!r}"
            )


_FRAME_GRADIENTS = ("beam-descending", "beam", "magnitude")


@dataclass(frozen=True)
class FramesLc2Parameters:
    """LC2 on tracked frames.

    Attributes
    ----------
    levels_mm : tuple of float
        Pixel decimation of each resolution level, coarse to fine, mm.
    frame_step : int
        Use every n-th frame.
    patch_radius_px : int
        Patches are squares of ``2 r + 1`` decimated pixels.
    min_patch_coverage : float
        Patches with a smaller fraction of usable (fan, unshadowed) pixels are left out (0..1).
    gradient : {"beam-descending", "beam", "magnitude"}
        The second MRI channel. ``"beam"``: the absolute MRI gradient along the beam direction
        (the image's +y axis, depth), as Wein et al. 2013 do for bone reflections;
        ``"beam-descending"``: only where the MRI gets darker with depth (``max(0, -d MRI /
        d depth)``): the soft tissue to dark cortex step that gives the bone echo, and not the
        cortex to marrow step under it, which US cannot see; ``"magnitude"``: |grad MRI|.
    mask_shadows : bool
        Leave out pixels below the first bone echo of their column.
    shadow_margin_mm : float
        Keep this much below the bone echo (the echo itself is informative), mm.
    band_above_bone_mm : float
        Keep only pixels at most this far above the bone echo (its depth interpolated between
        the columns where bone was found; frames without bone are left out), mm; 0 keeps all
        depths. Above the bone the simulated and real US show muscle fibre texture and speckle
        that the MRI cannot explain; near the bone both show the same interfaces.
    mri_smoothing_fraction : float
        Gaussian sigma of the MRI smoothing, as a fraction of the level's spacing (noise in the
        MRI gradient otherwise competes with the bone interfaces).
    bone : BonePointParameters
        How the bone echo is found (``column_step`` is ignored: every column is searched).
    max_evaluations : int
        Metric evaluations per level, at most.
    initial_step_mm, initial_step_deg : float
        First search step per translation / rotation parameter.
    tolerance_mm : float
        The optimiser stops when a step changes the parameters by less than this.
    max_translation_mm, max_rotation_deg : float
        Bounds of the search about the initial transform (per parameter).
    """

    levels_mm: tuple[float, ...] = (2.0, 1.0)
    frame_step: int = 4
    patch_radius_px: int = 3
    min_patch_coverage: float = 0.5
    gradient: str = "beam-descending"
    mask_shadows: bool = True
    shadow_margin_mm: float = 2.0
    band_above_bone_mm: float = 10.0
    mri_smoothing_fraction: float = 1.0
    bone: BonePointParameters = BonePointParameters()
    max_evaluations: int = 200
    initial_step_mm: float = 2.0
    initial_step_deg: float = 2.0
    tolerance_mm: float = 0.05
    max_translation_mm: float = 20.0
    max_rotation_deg: float = 15.0

    def __post_init__(self) -> None:
        _check_levels("LC2 frames", self.levels_mm)
        _check_positive(
            "LC2 frames",
            frame_step=self.frame_step,
            patch_radius_px=self.patch_radius_px,
            min_patch_coverage=self.min_patch_coverage,
            shadow_margin_mm=self.shadow_margin_mm,
            mri_smoothing_fraction=self.mri_smoothing_fraction,
            max_evaluations=self.max_evaluations,
            initial_step_mm=self.initial_step_mm,
            initial_step_deg=self.initial_step_deg,
            tolerance_mm=self.tolerance_mm,
            max_translation_mm=self.max_translation_mm,
            max_rotation_deg=self.max_rotation_deg,
        )
        band = self.band_above_bone_mm
        if isinstance(band, bool) or not isinstance(band, (int, float)) or not (math.isfinite(band) and band >= 0):
            raise RegistrationError(f"LC2 frames band_above_bone_mm must be a number >= 0, got {band!r}")
        if self.min_patch_coverage > 1:
            raise RegistrationError(
                f"LC2 frames min_patch_coverage must be within (0, 1], got {self.min_patch_coverage!r}"
            )
        if self.gradient not in _FRAME_GRADIENTS:
            raise RegistrationError(
                f"LC2 frames gradient must be one of {', '.join(_FRAME_GRADIENTS)}, got {self.gradient!r}"
            )


#: Declared search ranges for registration tuning (``workbench tune``, :mod:`workbench.tuning`):
#: ``"ClassName.field" -> (low, high)``, inclusive, in the field's unit. Numeric fields of the
#: parameter dataclasses not named here are tuned over a range derived from their default
#: (``workbench.tuning.space.derived_range``); fields named in :data:`NOT_TUNABLE` never are.
TUNING_RANGES: dict[str, tuple[float, float]] = {
    "IcpParameters.trim_fraction": (0.3, 1.0),
    "IcpParameters.restart_offset_mm": (0.0, 20.0),
    "IcpParameters.inlier_distance_mm": (0.5, 5.0),
    "Lc2Parameters.min_patch_coverage": (0.05, 1.0),
    "Lc2Parameters.us_smoothing_fraction": (0.1, 2.0),
    "FramesLc2Parameters.min_patch_coverage": (0.1, 1.0),
    "FramesLc2Parameters.band_above_bone_mm": (0.0, 30.0),
    "MattesParameters.sampling_fraction": (0.02, 1.0),
    "BonePointParameters.shadow_ratio": (0.05, 0.9),
    "BonePointParameters.min_brightness": (50.0, 250.0),
    "BoneDetectParameters.reference_percentile": (90.0, 100.0),
    "BoneDetectParameters.min_relative_brightness": (0.1, 0.9),
    "BoneDetectParameters.shadow_ratio": (0.05, 0.9),
}
#: Fields tuning leaves alone: seeds are not accuracy parameters.
NOT_TUNABLE = frozenset({"MattesParameters.seed"})
