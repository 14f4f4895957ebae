"""The error sources of a real ultrasound-MRI registration, as parameters of the simulation.

The ideal simulation (:meth:`ErrorSources.ideal`) images the MRI-time anatomy with the exact
calibration, a scanner whose 1540 m/s is the truth, a tracker with only small random jitter, no
latency, and takes the MRI bone surface from the ground-truth label map: registration accuracy
measured on it is an UPPER BOUND. :meth:`ErrorSources.realistic` switches on every source below
at the strength the literature reports; :meth:`ErrorSources.only` one of them alone.

Sources (``SOURCE_NAMES``), their parameters, ranges and references
--------------------------------------------------------------------
``speed_of_sound``
    Each tissue has its own speed (``workbench.phantom.labels.TISSUE``: fat 1450, muscle 1580,
    skin 1600 m/s; Duck FA, *Physical Properties of Tissue*, 1990, tables 4.1-4.20), times a
    per-patient factor drawn from ``speed_scale_range`` (realistic 0.98-1.02: temperature and
    composition). The scanner assumes 1540 m/s, so along every beam an echo from true path
    length ``s`` is drawn at depth ``integral_0^s 1540 / c(s') ds'`` (fat: 6 % deeper; muscle:
    2.5 % shallower). Refraction is not modelled.
``calibration``
    ``ImageToProbe`` error: a rigid motion of the image about the centre of the transducer face
    of ``calibration_translation_mm`` (length, random direction) and ``calibration_rotation_deg``
    (angle, random axis); realistic 1 mm / 1 deg (freehand calibrations reach 0.5-2 mm; Mercier L
    et al., "A review of calibration techniques for freehand 3-D ultrasound systems", Ultrasound
    Med Biol 31 (2005) 143-165). The frames are made with the true calibration; registration gets
    the wrong one.
``em_tracking``
    Jitter of every sensor reading (``tracker_jitter_mm`` RMS 3D length, ``tracker_jitter_deg``
    RMS angle; ideal keeps the simulator's 0.5 mm / 0.3 deg, realistic 0.7 mm / 0.5 deg) plus a
    smooth position-dependent field distortion of the measured positions in ``Tracker``
    (:class:`FieldDistortion`, at most ``field_distortion_mm``, spatial wavelengths of at least
    ``field_distortion_wavelength_mm``); realistic 2 mm over 250 mm (metal of the table and
    equipment; 1-2 mm and more in clinical rooms: Franz AM et al., "Electromagnetic tracking in
    medicine - a review of technology, validation, and applications", IEEE TMI 33 (2014)
    1702-1725).
``latency``
    Tracker-to-video latency: each frame carries the poses read ``latency_s_range`` (drawn per
    case) earlier than the image; realistic 20-80 ms uncompensated (temporal calibration exists
    because of it: Lasso A et al., "PLUS: open-source toolkit for ultrasound-guided intervention
    systems", IEEE TBME 61 (2014) 2527-2537). With it, sweeps run at speeds drawn from
    ``sweep_speed_range_mm_s`` (realistic 10-40 mm/s, freehand); None keeps the benchmark's
    80 mm/s. A lag ``L`` at speed ``v`` shifts the frames' points by ``L v`` against the sweep.
``mri_segmentation``
    The MRI bone surface comes from a segmentation whose boundary is off by
    ``mri_boundary_voxels`` (0 or 1) voxel, dilated or eroded in smooth patches
    (``mri_boundary_patch_mm``) covering ``mri_boundary_fraction`` of the bone boundary
    (realistic 1 voxel over 70 %: surface distances of automatic vertebra segmentations are about
    1 mm; Sekuboyina A et al., "VerSe: a vertebrae labelling and segmentation benchmark", Med
    Image Anal 73 (2021) 102166). The MRI image itself stays the ground truth's.
``posture``
    The procedure (prone, on a block) anatomy differs from the MRI (supine): per vertebra a
    rotation uniform within +-``posture_rotation_deg`` per LPS axis and a translation within
    +-``posture_translation_mm`` about its body centre (realistic 2 deg / 1 mm; inter-vertebral
    motion between CT and surgery is why group-wise rigid registration of each vertebra is used:
    Yan CXB et al., IJCARS 6 (2011) 523-537) and a flattening of the lumbar lordosis (L1 to S1)
    drawn from ``lordosis_change_deg_range`` (realistic 2-6 deg; an assumption for a prone
    patient on a pillow or block, not a measured figure).
``elevation_beam``
    The beam is ``elevation_fwhm_mm`` thick across the image plane (realistic 4 mm for a
    curvilinear probe at 5-8 cm; slice-thickness artefact: Goldstein A, Madrazo BL, J Clin
    Ultrasound 9 (1981) 365-375): echoes are the weighted sum of three planes at 0 and
    +-FWHM/2, so bone just beside the plane shows in it.
``reverberation``
    Multiple reflections between the transducer face and strong superficial interfaces: an echo
    of reflection ``r`` at depth ``d`` in the first :data:`REVERBERATION_MAX_DEPTH_MM` repeats at
    ``2d`` with ``m = g |r| T`` of its amplitude and at ``3d`` with ``m^2`` (``g`` =
    ``reverberation_gain``, the face's reflection, realistic 0.3; ``T`` the two-way
    transmission down to ``d``): shallow bone reverberates into its shadow, fascia hardly.
``bone_visibility``
    Parts of the bone surface give no echo (oblique facets, gas, thick soft tissue): the bone
    echo is weakened 20-fold on ``bone_dropout_fraction`` of the surface in smooth patches of
    ``bone_dropout_patch_mm`` fixed to the anatomy (realistic 30 % in 12 mm patches; an
    assumption in line with the partial visibility of bone in B-mode, Jain AK, Taylor RH, SPIE
    Medical Imaging 5373 (2004)).
``reference_shift``
    The reference sensor taped on the skin slides over the bone during the acquisition: its true
    pose drifts linearly in time by a length drawn from ``reference_shift_mm_range`` (realistic
    0.5-1.5 mm; an assumption for skin over the sacrum) in a random direction along the skin. The
    ground-truth ``ReferenceToMri`` is the one at the start of the first sweep.

Per-case random draws (speed factor, latency, directions, fields) are seeded by the case seed
through :meth:`ErrorSources.draw`, with streams of their own: the ideal profile draws nothing and
reproduces the earlier simulation exactly.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

__all__ = [
    "ErrorDraw",
    "ErrorSources",
    "FieldDistortion",
    "SOURCE_NAMES",
    "SOURCE_FIELDS",
    "BoneDropout",
    "lordosis_change_motion",
    "miscalibrated",
    "perturbed_bone_labels",
]

#: The error sources, in the order the benchmark reports them.
SOURCE_NAMES = (
    "speed_of_sound",
    "calibration",
    "em_tracking",
    "latency",
    "mri_segmentation",
    "posture",
    "elevation_beam",
    "reverberation",
    "bone_visibility",
    "reference_shift",
)
#: The fields of :class:`ErrorSources` each source owns.
SOURCE_FIELDS: dict[str, tuple[str, ...]] = {
    "speed_of_sound": ("tissue_speeds", "speed_scale_range"),
    "calibration": ("calibration_translation_mm", "calibration_rotation_deg"),
    "em_tracking": ("tracker_jitter_mm", "tracker_jitter_deg", "field_distortion_mm", "field_distortion_wavelength_mm"),
    "latency": ("latency_s_range", "sweep_speed_range_mm_s"),
    "mri_segmentation": ("mri_boundary_voxels", "mri_boundary_fraction", "mri_boundary_patch_mm"),
    "posture": ("posture_rotation_deg", "posture_translation_mm", "lordosis_change_deg_range"),
    "elevation_beam": ("elevation_fwhm_mm",),
    "reverberation": ("reverberation_gain",),
    "bone_visibility": ("bone_dropout_fraction", "bone_dropout_patch_mm"),
    "reference_shift": ("reference_shift_mm_range",),
}
#: Echoes deeper than this do not reverberate (mm): the strong multiples come from the skin and
#: the superficial fascia.
REVERBERATION_MAX_DEPTH_MM = 35.0
#: Bone echo amplitude kept on the invisible patches of ``bone_visibility``.
BONE_DROPOUT_GAIN = 0.05
# Random streams of the draws (independent of the simulator's).
_STREAM = 16
(_S_SPEED, _S_CAL, _S_FIELD, _S_LAT, _S_SEG, _S_POSTURE, _S_DROPOUT, _S_SHIFT, _S_SWEEP) = range(1, 10)


@dataclass(frozen=True)
class ErrorSources:
    """Strengths of every simulated error source (see the module docstring for each one).

    Ranges ``(low, high)`` are drawn uniformly per case; ``(x, x)`` fixes the value.

    Attributes
    ----------
    tissue_speeds : bool
        Per-tissue speed of sound instead of 1540 m/s everywhere (``speed_of_sound``).
    speed_scale_range : (2,) float
        Per-case factor on every tissue speed (``speed_of_sound``).
    calibration_translation_mm, calibration_rotation_deg : float
        Size of the ``ImageToProbe`` error, mm and deg (``calibration``).
    tracker_jitter_mm, tracker_jitter_deg : float
        RMS tracker noise per reading (``em_tracking``; the ideal keeps 0.5 mm / 0.3 deg).
    field_distortion_mm, field_distortion_wavelength_mm : float
        Largest position distortion and shortest spatial wavelength of the field distortion, mm.
    latency_s_range : (2,) float
        Tracker-to-video latency, s (``latency``).
    sweep_speed_range_mm_s : (2,) float or None
        Speeds of the freehand sweeps, mm/s; None: the benchmark's 80 mm/s (``latency``).
    mri_boundary_voxels : int
        0 or 1: how far the segmented MRI bone boundary is off (``mri_segmentation``).
    mri_boundary_fraction : float
        Fraction of the boundary that is off (half dilated, half eroded).
    mri_boundary_patch_mm : float
        Size of the patches, mm.
    posture_rotation_deg, posture_translation_mm : float
        Per-vertebra motion between MRI and procedure, per LPS axis (``posture``).
    lordosis_change_deg_range : (2,) float
        Flattening of the L1-S1 lordosis between MRI and procedure, deg.
    elevation_fwhm_mm : float
        Elevational beam width (``elevation_beam``), mm; 0: an infinitely thin plane.
    reverberation_gain : float
        Amplitude of the first reverberation relative to its echo (``reverberation``).
    bone_dropout_fraction, bone_dropout_patch_mm : float
        Fraction of the bone surface without echo and its patch size (``bone_visibility``).
    reference_shift_mm_range : (2,) float
        Drift of the reference sensor over the acquisition, mm (``reference_shift``).
    """

    tissue_speeds: bool = False
    speed_scale_range: tuple[float, float] = (1.0, 1.0)
    calibration_translation_mm: float = 0.0
    calibration_rotation_deg: float = 0.0
    tracker_jitter_mm: float = 0.5
    tracker_jitter_deg: float = 0.3
    field_distortion_mm: float = 0.0
    field_distortion_wavelength_mm: float = 250.0
    latency_s_range: tuple[float, float] = (0.0, 0.0)
    sweep_speed_range_mm_s: tuple[float, float] | None = None
    mri_boundary_voxels: int = 0
    mri_boundary_fraction: float = 0.0
    mri_boundary_patch_mm: float = 15.0
    posture_rotation_deg: float = 0.0
    posture_translation_mm: float = 0.0
    lordosis_change_deg_range: tuple[float, float] = (0.0, 0.0)
    elevation_fwhm_mm: float = 0.0
    reverberation_gain: float = 0.0
    bone_dropout_fraction: float = 0.0
    bone_dropout_patch_mm: float = 12.0
    reference_shift_mm_range: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        from workbench.errors import PhantomError

        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "tissue_speeds":
                if not isinstance(value, (bool, np.bool_)):
                    raise PhantomError(f"error source tissue_speeds must be True or False, got {value!r}")
                continue
            if value is None and item.name == "sweep_speed_range_mm_s":
                continue
            values = np.atleast_1d(np.asarray(value, dtype=float)) if not isinstance(value, bool) else None
            if values is None or not np.all(np.isfinite(values)) or np.any(values < 0):
                raise PhantomError(f"error source {item.name} must be non-negative finite number(s), got {value!r}")
            if item.name.endswith("_range"):
                if values.shape != (2,) or values[0] > values[1]:
                    raise PhantomError(f"error source {item.name} must be (low, high) with low <= high, got {value!r}")
                object.__setattr__(self, item.name, (float(values[0]), float(values[1])))
        if self.mri_boundary_voxels not in (0, 1):
            raise PhantomError(f"mri_boundary_voxels must be 0 or 1, got {self.mri_boundary_voxels!r}")
        if self.mri_boundary_fraction > 1 or self.bone_dropout_fraction >= 1:
            raise PhantomError("mri_boundary_fraction must be <= 1 and bone_dropout_fraction < 1")
        if self.sweep_speed_range_mm_s is not None and self.sweep_speed_range_mm_s[0] <= 0:
            raise PhantomError(f"sweep speeds must be positive, got {self.sweep_speed_range_mm_s!r}")
        if min(self.speed_scale_range) <= 0 or self.field_distortion_wavelength_mm <= 0:
            raise PhantomError("speed_scale_range and field_distortion_wavelength_mm must be positive")

    # -- profiles --------------------------------------------------------------------------
    @classmethod
    def ideal(cls) -> ErrorSources:
        """No error beyond the simulator's tracker jitter: the earlier benchmark, exactly (an upper bound)."""
        return cls()

    @classmethod
    def realistic(cls) -> ErrorSources:
        """Every source at the strength the literature reports (module docstring)."""
        return cls(
            tissue_speeds=True,
            speed_scale_range=(0.98, 1.02),
            calibration_translation_mm=1.0,
            calibration_rotation_deg=1.0,
            tracker_jitter_mm=0.7,
            tracker_jitter_deg=0.5,
            field_distortion_mm=2.0,
            field_distortion_wavelength_mm=250.0,
            latency_s_range=(0.02, 0.08),
            sweep_speed_range_mm_s=(10.0, 40.0),
            mri_boundary_voxels=1,
            mri_boundary_fraction=0.7,
            mri_boundary_patch_mm=15.0,
            posture_rotation_deg=2.0,
            posture_translation_mm=1.0,
            lordosis_change_deg_range=(2.0, 6.0),
            elevation_fwhm_mm=4.0,
            reverberation_gain=0.3,
            bone_dropout_fraction=0.3,
            bone_dropout_patch_mm=12.0,
            reference_shift_mm_range=(0.5, 1.5),
        )

    @classmethod
    def only(cls, *names: str) -> ErrorSources:
        """The named source(s) at realistic strength, every other one ideal."""
        from workbench.errors import PhantomError

        unknown = [name for name in names if name not in SOURCE_NAMES]
        if unknown:
            raise PhantomError(f"unknown error source(s) {unknown}; choose from {', '.join(SOURCE_NAMES)}")
        realistic = cls.realistic()
        return replace(cls(), **{f: getattr(realistic, f) for name in names for f in SOURCE_FIELDS[name]})

    def active(self) -> tuple[str, ...]:
        """Names of the sources that differ from the ideal."""
        ideal = ErrorSources()
        return tuple(
            name for name in SOURCE_NAMES if any(getattr(self, f) != getattr(ideal, f) for f in SOURCE_FIELDS[name])
        )

    def to_dict(self) -> dict:
        """JSON-ready field values (ranges as lists)."""
        return {key: (list(value) if isinstance(value, tuple) else value) for key, value in asdict(self).items()}

    # -- per-case draws ----------------------------------------------------------------------
    def draw(self, seed: int) -> ErrorDraw:
        """The per-case realisation of the random parts, seeded by ``seed``; see :class:`ErrorDraw`."""

        def rng(stream):
            return np.random.default_rng([int(seed), _STREAM, stream])

        def uniform(stream, bounds):
            low, high = bounds
            return float(low) if low == high else float(rng(stream).uniform(low, high))

        cal_rng = rng(_S_CAL)
        cal_axes = _unit_vectors(cal_rng, 2)
        shift_rng = rng(_S_SHIFT)
        shift_mm = uniform(_S_SHIFT + 100, self.reference_shift_mm_range)
        shift_direction = shift_rng.normal(size=3)
        shift_direction[1] = 0.0  # along the skin of the back (LPS x-z plane)
        shift_direction /= np.linalg.norm(shift_direction)
        speeds = None
        if self.sweep_speed_range_mm_s is not None:
            speeds = tuple(float(v) for v in rng(_S_SWEEP).uniform(*self.sweep_speed_range_mm_s, 2))
        return ErrorDraw(
            sources=self,
            speed_scale=uniform(_S_SPEED, self.speed_scale_range),
            latency_s=uniform(_S_LAT, self.latency_s_range),
            sweep_speeds_mm_s=speeds,
            calibration_translation_mm=tuple(float(v) for v in self.calibration_translation_mm * cal_axes[0]),
            calibration_rotation_deg=tuple(float(v) for v in self.calibration_rotation_deg * cal_axes[1]),
            field_distortion=(
                FieldDistortion(self.field_distortion_mm, self.field_distortion_wavelength_mm, seed=int(seed))
                if self.field_distortion_mm > 0
                else None
            ),
            lordosis_change_deg=uniform(_S_POSTURE, self.lordosis_change_deg_range),
            reference_shift_lps_mm=tuple(float(v) for v in shift_mm * shift_direction),
            seed=int(seed),
        )


@dataclass(frozen=True, eq=False)
class ErrorDraw:
    """One case's realisation of :class:`ErrorSources`.

    Attributes
    ----------
    sources : ErrorSources
    speed_scale : float
        Factor on every tissue speed of sound.
    latency_s : float
        Tracker-to-video latency, s (poses read this much before the image).
    sweep_speeds_mm_s : (2,) float or None
        Speeds of the left and the right sweep, mm/s (None: the benchmark's default).
    calibration_translation_mm, calibration_rotation_deg : (3,) float
        The ``ImageToProbe`` error (:func:`miscalibrated`): translation in ``Probe`` mm and
        rotation vector in deg about the transducer-face centre.
    field_distortion : FieldDistortion or None
    lordosis_change_deg : float
        Flattening of the lordosis, deg.
    reference_shift_lps_mm : (3,) float
        Drift of the reference sensor over the whole acquisition, LPS mm.
    seed : int
    """

    sources: ErrorSources
    speed_scale: float
    latency_s: float
    sweep_speeds_mm_s: tuple[float, float] | None
    calibration_translation_mm: tuple[float, ...]
    calibration_rotation_deg: tuple[float, ...]
    field_distortion: FieldDistortion | None
    lordosis_change_deg: float
    reference_shift_lps_mm: tuple[float, ...]
    seed: int

    def to_dict(self) -> dict:
        """JSON-ready values of the draw."""
        return {
            "speed_scale": round(self.speed_scale, 4),
            "latency_s": round(self.latency_s, 4),
            "sweep_speeds_mm_s": None if self.sweep_speeds_mm_s is None else [round(v, 2) for v in self.sweep_speeds_mm_s],
            "calibration_translation_mm": [round(float(v), 3) for v in self.calibration_translation_mm],
            "calibration_rotation_deg": [round(float(v), 3) for v in self.calibration_rotation_deg],
            "field_distortion_mm": 0.0 if self.field_distortion is None else self.field_distortion.amplitude_mm,
            "lordosis_change_deg": round(self.lordosis_change_deg, 3),
            "reference_shift_lps_mm": [round(float(v), 3) for v in self.reference_shift_lps_mm],
        }

    def imaging(self) -> dict:
        """Keyword arguments of :class:`~workbench.phantom.ultrasound.UltrasoundSimulator` for this draw."""
        s = self.sources
        return {
            "tissue_speeds": s.tissue_speeds,
            "speed_scale": self.speed_scale,
            "elevation_fwhm_mm": s.elevation_fwhm_mm,
            "reverberation_gain": s.reverberation_gain,
            "bone_dropout": (
                BoneDropout(s.bone_dropout_fraction, s.bone_dropout_patch_mm, seed=self.seed)
                if s.bone_dropout_fraction > 0
                else None
            ),
        }


def _unit_vectors(rng: np.random.Generator, count: int) -> np.ndarray:
    vectors = rng.normal(size=(count, 3))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


class _SmoothField:
    """Sum of plane waves ``sum_k w_k u_k sin(k_k . p + phi_k)``, ``sum w_k = 1``: |value| <= 1.

    Wavelengths are uniform in [``wavelength_mm``, 2 ``wavelength_mm``], so the gradient's norm is
    at most ``2 pi / wavelength_mm`` per unit amplitude.
    """

    COMPONENTS = 8

    def __init__(self, wavelength_mm: float, rng: np.random.Generator, vector: bool):
        count = self.COMPONENTS
        wavelengths = rng.uniform(wavelength_mm, 2.0 * wavelength_mm, count)
        self.wave_vectors = _unit_vectors(rng, count) * (2.0 * math.pi / wavelengths)[:, None]
        self.phases = rng.uniform(0.0, 2.0 * math.pi, count)
        weights = rng.uniform(0.5, 1.0, count)
        self.weights = weights / weights.sum()
        self.directions = _unit_vectors(rng, count) if vector else np.ones((count, 1))

    def __call__(self, points_mm: np.ndarray) -> np.ndarray:
        points = np.asarray(points_mm, dtype=float)
        waves = np.sin(points @ self.wave_vectors.T + self.phases)  # (..., K)
        return (waves * self.weights) @ self.directions


class FieldDistortion:
    """A smooth static distortion of EM-tracked positions, in the ``Tracker`` frame.

    ``displacement_mm(p) = amplitude_mm * sum_k w_k u_k sin(k_k . p + phi_k)`` with unit
    directions ``u_k``, weights summing to 1 and wavelengths of ``wavelength_mm`` to twice that:
    its length never exceeds ``amplitude_mm`` and its spatial gradient (mm per mm) never exceeds
    ``2 pi amplitude_mm / wavelength_mm``.

    Parameters
    ----------
    amplitude_mm, wavelength_mm : float
    seed : int
    """

    def __init__(self, amplitude_mm: float, wavelength_mm: float, seed: int = 0):
        self.amplitude_mm = float(amplitude_mm)
        self.wavelength_mm = float(wavelength_mm)
        self._field = _SmoothField(wavelength_mm, np.random.default_rng([int(seed), _STREAM, _S_FIELD]), vector=True)

    @property
    def max_gradient(self) -> float:
        """Upper bound of the gradient's norm, mm/mm."""
        return 2.0 * math.pi * self.amplitude_mm / self.wavelength_mm

    def displacement_mm(self, points_tracker_mm: np.ndarray) -> np.ndarray:
        """(..., 3) displacement of positions (..., 3) measured in ``Tracker``, mm."""
        return self.amplitude_mm * self._field(points_tracker_mm)

    def apply(self, poses_tracker: np.ndarray) -> np.ndarray:
        """(N, 4, 4) sensor poses in ``Tracker`` with their positions distorted (rotations kept)."""
        distorted = np.array(poses_tracker, dtype=float, copy=True)
        distorted[..., :3, 3] += self.displacement_mm(distorted[..., :3, 3])
        return distorted


class BoneDropout:
    """Where the bone surface gives no echo: smooth patches fixed to the anatomy (LPS).

    A unit-variance smooth random field (sum of plane waves of wavelength 2 ``patch_mm`` to
    4 ``patch_mm``) below its ``fraction`` quantile marks the invisible patches.
    """

    def __init__(self, fraction: float, patch_mm: float, seed: int = 0):
        self.fraction = float(fraction)
        self.patch_mm = float(patch_mm)
        self._field = _SmoothField(2.0 * patch_mm, np.random.default_rng([int(seed), _STREAM, _S_DROPOUT]), vector=False)
        # Gaussian approximation of the sum of 8 random-phase waves: variance sum(w^2)/2.
        sigma = math.sqrt(float(np.sum(self._field.weights**2)) / 2.0)
        self._threshold = statistics.NormalDist(0.0, sigma).inv_cdf(self.fraction) if self.fraction > 0 else -np.inf

    def invisible(self, points_lps: np.ndarray) -> np.ndarray:
        """(...) bool: True where bone at LPS points (..., 3) mm gives no echo."""
        return self._field(points_lps)[..., 0] < self._threshold


def miscalibrated(image_to_probe, translation_mm, rotation_deg, centre_probe_mm):
    """``ImageToProbe`` as a faulty calibration gives it.

    ``error @ image_to_probe`` with ``error`` the rigid motion in ``Probe`` that rotates by the
    rotation vector ``rotation_deg`` (3,) deg about ``centre_probe_mm`` (3,) mm (the centre of the
    transducer face) and then translates by ``translation_mm`` (3,) mm: every image point moves by
    exactly ``error``.

    Returns
    -------
    Transform
        ``ImageToProbe``.
    """
    from workbench.frames import Transform
    from workbench.phantom.ultrasound import rotation_matrices

    rotation = rotation_matrices(np.radians(np.asarray(rotation_deg, dtype=float)))
    centre = np.asarray(centre_probe_mm, dtype=float)
    error = np.eye(4)
    error[:3, :3] = rotation
    error[:3, 3] = centre - rotation @ centre + np.asarray(translation_mm, dtype=float)
    return Transform(error @ image_to_probe.matrix, "Image", "Probe")


def lordosis_change_motion(centres_lps: dict, change_deg: float) -> dict:
    """Per-vertebra motion of a lordosis flattened by ``change_deg`` (L1 against S1), small angles.

    Bending the lumbar curve by a uniform curvature ``k = change / (z_top - z_bottom)``: the
    vertebra at height ``s = z - z_mid`` (LPS z, mid = mean of the centres) flexes about the LPS x
    axis by ``k s`` (its superior end anterior) and moves anteriorly by ``k s^2 / 2``.

    Returns
    -------
    dict of str to (rotation_deg (3,), translation_mm (3,))
    """
    z = {level: float(centre[2]) for level, centre in centres_lps.items()}
    span = max(z.values()) - min(z.values())
    mid = float(np.mean(list(z.values())))
    curvature = math.radians(change_deg) / span if span > 0 else 0.0
    return {
        level: ((math.degrees(curvature * (zz - mid)), 0.0, 0.0), (0.0, -curvature * (zz - mid) ** 2 / 2.0, 0.0))
        for level, zz in z.items()
    }


def perturbed_bone_labels(labels, levels, *, voxels: int, fraction: float, patch_mm: float, seed: int):
    """A segmentation of the bone whose boundary is off by ``voxels`` voxel in smooth patches.

    On the bone boundary a smooth random field (patches of ``patch_mm``) picks ``fraction / 2``
    of the outer shell to add (dilation by one voxel, 6-neighbourhood: the neighbouring bone's
    label and level) and ``fraction / 2`` of the inner shell to remove (erosion: soft tissue).

    Parameters
    ----------
    labels, levels : SimpleITK.Image
        Label map (uint8 ``Label`` values) and level map on the same grid, LPS mm.
    voxels : int
        0 (unchanged copies) or 1.
    fraction : float
        0..1.
    patch_mm : float
    seed : int

    Returns
    -------
    (SimpleITK.Image, SimpleITK.Image)
        The perturbed label map and level map (same grid).
    """
    import SimpleITK as sitk
    from scipy import ndimage

    from workbench.anatomy import BONE_LABELS, Label

    array = sitk.GetArrayFromImage(labels)
    level_array = sitk.GetArrayFromImage(levels)
    if voxels == 0 or fraction <= 0:
        return _like(array, labels), _like(level_array, levels)
    bone_table = np.zeros(256, dtype=bool)
    bone_table[list(BONE_LABELS)] = True
    bone = bone_table[array]
    cross = ndimage.generate_binary_structure(3, 1)
    outer = ndimage.binary_dilation(bone, cross) & ~bone
    inner = bone & ~ndimage.binary_erosion(bone, cross)
    field = _SmoothField(2.0 * patch_mm, np.random.default_rng([int(seed), _STREAM, _S_SEG]), vector=False)
    spacing = np.array(labels.GetSpacing())[::-1]
    origin = np.array(labels.GetOrigin())[::-1]

    def values(mask):
        index = np.argwhere(mask)
        points_zyx = origin + index * spacing  # axis-aligned grids (the phantom's)
        return index, field(points_zyx[:, ::-1])[:, 0]

    outer_index, outer_values = values(outer)
    inner_index, inner_values = values(inner)
    add = outer_index[outer_values > np.quantile(outer_values, 1.0 - fraction / 2.0)]
    remove = inner_index[inner_values < np.quantile(inner_values, fraction / 2.0)]
    bone_only = np.where(bone, array, 0)
    grown_labels = ndimage.grey_dilation(bone_only, footprint=cross)
    grown_levels = ndimage.grey_dilation(np.where(bone, level_array, 0), footprint=cross)
    new_labels, new_levels = array.copy(), level_array.copy()
    a = tuple(add.T)
    new_labels[a] = grown_labels[a]
    new_levels[a] = grown_levels[a]
    r = tuple(remove.T)
    new_labels[r] = np.uint8(Label.SOFT_TISSUE)
    new_levels[r] = 0
    return _like(new_labels, labels), _like(new_levels, levels)


def _like(array: np.ndarray, reference):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image
