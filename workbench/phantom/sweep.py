"""Tracked freehand ultrasound sweeps over the phantom's back, written as PLUS files.

A sweep moves a probe along the spine (+z superior) with its face pressed on the skin and its
beam pointing anterior (-y in LPS): paramedian sagittal (image plane along z, marker cranial) or
transverse (image plane along x, marker towards the patient's left). A smooth low-frequency
wobble imitates the free hand. Frames and poses, as a tracked acquisition records them:

- ``Mri``: the patient (LPS mm of the MRI-time label map; anatomy fixed in it).
- ``Reference``: the patient reference sensor taped on the back; ``ReferenceToMri`` is the
  ground truth registration (rigid, fixed for the whole sweep).
- ``Tracker``: the electromagnetic field generator beside the table. Breathing moves the patient
  (and the reference sensor with it) relative to the generator: ``TrackerToMri`` changes from
  frame to frame while ``ReferenceToMri`` does not, which is what a reference sensor is for.
- ``Probe``: the sensor on the probe handle; ``ImageToProbe`` is the probe's exact calibration.

Per frame the sequence holds ``ProbeToTracker = inv(TrackerToMri) @ ProbeToMri`` and
``ReferenceToTracker = inv(TrackerToMri) @ ReferenceToMri``, each with independent tracker noise
(a random rigid motion about the sensor origin), and a fraction of dropped frames whose
``ProbeToTracker`` is INVALID (matrix kept). So the pixel-to-MRI chain of frame i is::

    image_to_mri = reference_to_mri @ inv(reference_to_tracker[i]) @ probe_to_tracker[i] @ image_to_probe

Frames can be simulated from a *procedure-time* label map (posture change), while
``ReferenceToMri`` stays the MRI-time truth. See docs/frames.md and docs/ultrasound-simulation.md.

Error sources of a real acquisition (off by default; ranges and references in
:mod:`workbench.phantom.error_model`): ``latency_s`` (each frame carries the poses read that much
before its image), ``field_distortion`` (a smooth distortion of the measured positions in
``Tracker``), ``reference_drift_mm`` (the reference sensor slides over the patient during the
sweep; ``ReferenceToMri`` stays the truth at the drift's zero) and ``imaging`` (keyword arguments
of :class:`~workbench.phantom.ultrasound.UltrasoundSimulator`: speed of sound per tissue,
elevational beam width, reverberation, bone dropout).
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import SimpleITK as sitk

from workbench._atomic import atomic_write_text
from workbench.errors import DeviceSetError, FrameError, PhantomError
from workbench.frames import Transform
from workbench.io.sequence import TrackedSequence, write_sequence
from workbench.phantom.ultrasound import CURVILINEAR_C5_2, ProbeModel, UltrasoundSimulator, rotation_matrices

__all__ = [
    "SIDES",
    "SWEEP_KINDS",
    "SimulatedSweep",
    "SweepPoses",
    "SweepSpec",
    "default_reference_to_mri",
    "default_tracker_to_mri",
    "plan_sweep",
    "simulate_sweep",
]

SWEEP_KINDS = ("paramedian-sagittal", "transverse")
SIDES = ("left", "right")
#: Lateral distance of a paramedian sweep from the midline when the spec gives none, mm.
DEFAULT_PARAMEDIAN_OFFSET_MM = 30.0
#: Depth the transducer face is pressed into the skin (mean), mm: full contact, no lift-off.
CONTACT_PRESS_MM = 1.5
#: Date written with the (exact) calibration in the device set, PLUS's MMDDYY_HHMMSS format.
CALIBRATION_DATE = "010125_120000"
#: The freehand wobble is a sum of this many sinusoids per degree of freedom, within this band.
_WOBBLE_COMPONENTS = 4
_WOBBLE_BAND_HZ = (0.1, 1.2)
#: Pressure (along the skin normal) wobbles less than the slide along the skin.
_PRESS_WOBBLE_FRACTION = 0.3
_SKIN_NORMAL_STEP_MM = 2.0
_SWEEP_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Independent random streams per purpose, so that changing one setting leaves the others alone.
_STREAM_MOTION, _STREAM_TRACKER, _STREAM_DROPS, _STREAM_IMAGES = 1, 2, 3, 4

ProgressCallback = Callable[[int, int], None]


class SkinAnatomy(Protocol):
    """What a sweep needs of the anatomy: its label map and its skin height (see module doc)."""

    labels: sitk.Image

    def skin_surface_y_mm(self, x_mm, z_mm):  # pragma: no cover - protocol
        """Height (LPS y, mm) of the posterior skin surface above (x, z); arrays broadcast."""


@dataclass(frozen=True)
class SweepSpec:
    """How a freehand sweep is made.

    Attributes
    ----------
    kind : str
        ``"paramedian-sagittal"`` (image plane along the spine, marker cranial) or
        ``"transverse"`` (image plane across it, marker towards the patient's left).
    start_z_mm, end_z_mm : float
        Where the transducer centre starts and ends along the spine (LPS z, mm).
    side : str
        ``"left"`` (+x in LPS) or ``"right"``: the side of the midline the probe is on.
    lateral_offset_mm : float or None
        Distance of the probe from the midline, mm; None gives 30 mm for paramedian sweeps
        and 0 (midline) for transverse ones.
    frame_rate_hz : float
        Frames per second (scanners: 20-30).
    speed_mm_s : float
        Speed of the probe along the spine, mm/s.
    tilt_deg : float
        Beam tilt about the transducer's long axis, degrees: towards the midline for
        paramedian sweeps (the paramedian sagittal oblique view), cranially for transverse.
    jitter_mm, jitter_deg : float
        RMS of the smooth freehand wobble (0.1-1.2 Hz) of position (slide along the skin;
        pressure wobbles 30 % of it) and of orientation (each axis).
    tracker_noise_mm, tracker_noise_deg : float
        RMS of the tracker's position error (length of the 3D error) and rotation error
        (angle), per sensor and frame; default like an electromagnetic tracker.
    dropped_frame_fraction : float
        Probability that a frame's ProbeToTracker is INVALID (0..1).
    breathing_amplitude_mm, breathing_period_s : float
        Posterior-anterior breathing motion of the patient relative to the tracker.
    image_noise : bool
        Speckle and electronic noise in the frames (False: noise-free frames).
    probe : ProbeModel
    seed : int
        Seeds the wobble, the tracker noise, the dropped frames and the image noise.
    """

    kind: str = "paramedian-sagittal"
    start_z_mm: float = -60.0
    end_z_mm: float = 60.0
    side: str = "left"
    lateral_offset_mm: float | None = None
    frame_rate_hz: float = 25.0
    speed_mm_s: float = 15.0
    tilt_deg: float = 0.0
    jitter_mm: float = 1.0
    jitter_deg: float = 1.5
    tracker_noise_mm: float = 0.5
    tracker_noise_deg: float = 0.3
    dropped_frame_fraction: float = 0.02
    breathing_amplitude_mm: float = 1.0
    breathing_period_s: float = 4.0
    image_noise: bool = True
    probe: ProbeModel = CURVILINEAR_C5_2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in SWEEP_KINDS:
            raise PhantomError(f"sweep kind {self.kind!r} is unknown; use one of {', '.join(SWEEP_KINDS)}")
        if self.side not in SIDES:
            raise PhantomError(f"sweep side {self.side!r} is unknown; use 'left' or 'right'")
        if self.lateral_offset_mm is None:
            default = DEFAULT_PARAMEDIAN_OFFSET_MM if self.kind == "paramedian-sagittal" else 0.0
            object.__setattr__(self, "lateral_offset_mm", default)
        for name in ("start_z_mm", "end_z_mm", "lateral_offset_mm", "tilt_deg"):
            _require_number(name, getattr(self, name), minimum=None)
        for name in ("frame_rate_hz", "speed_mm_s", "breathing_period_s"):
            _require_number(name, getattr(self, name), minimum=0.0, inclusive=False)
        for name in ("jitter_mm", "jitter_deg", "tracker_noise_mm", "tracker_noise_deg", "breathing_amplitude_mm"):
            _require_number(name, getattr(self, name), minimum=0.0)
        _require_number("dropped_frame_fraction", self.dropped_frame_fraction, minimum=0.0)
        if self.dropped_frame_fraction >= 1.0:
            raise PhantomError(f"sweep dropped_frame_fraction must be below 1, got {self.dropped_frame_fraction!r}")
        if self.start_z_mm == self.end_z_mm:
            raise PhantomError("sweep start_z_mm and end_z_mm are equal: a sweep must move along the spine")
        if not isinstance(self.probe, ProbeModel):
            raise PhantomError(f"sweep probe must be a ProbeModel, got {type(self.probe).__name__}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise PhantomError(f"sweep seed must be a non-negative integer, got {self.seed!r}")

    @classmethod
    def between_levels(
        cls, anatomy, start_level: str, end_level: str, *, margin_mm: float = 10.0, **fields
    ) -> SweepSpec:
        """A sweep from one vertebra's centre to another's (z), extended by ``margin_mm`` at both ends.

        ``anatomy`` needs ``vertebra_centres_lps`` (dict level name -> (3,) LPS mm);
        ``fields`` are the other :class:`SweepSpec` fields.
        """
        centres = getattr(anatomy, "vertebra_centres_lps", None)
        if not isinstance(centres, dict) or not centres:
            raise PhantomError("anatomy has no vertebra_centres_lps to place a sweep between levels")
        for level in (start_level, end_level):
            if level not in centres:
                raise PhantomError(f"level {level!r} is not in the anatomy (it has {', '.join(centres)})")
        start_z_mm, end_z_mm = (float(centres[level][2]) for level in (start_level, end_level))
        direction = 1.0 if end_z_mm >= start_z_mm else -1.0
        return cls(start_z_mm=start_z_mm - direction * margin_mm, end_z_mm=end_z_mm + direction * margin_mm, **fields)

    @property
    def side_sign(self) -> float:
        """+1 for the patient's left (+x in LPS), -1 for the right."""
        return 1.0 if self.side == "left" else -1.0

    @property
    def duration_s(self) -> float:
        return abs(self.end_z_mm - self.start_z_mm) / self.speed_mm_s

    @property
    def frame_count(self) -> int:
        return int(math.floor(self.duration_s * self.frame_rate_hz + 1e-9)) + 1


def _require_number(name: str, value, minimum: float | None, inclusive: bool = True) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PhantomError(f"sweep {name} must be a finite number, got {value!r}")
    if minimum is not None and (value < minimum or (not inclusive and value == minimum)):
        relation = "at least" if inclusive else "above"
        raise PhantomError(f"sweep {name} must be {relation} {minimum:g}, got {value!r}")


# -- poses -------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SweepPoses:
    """Every pose of a planned sweep; (N, 4, 4) float arrays, mm, see docs/frames.md.

    Attributes
    ----------
    timestamps_s : (N,) float array, s
    probe_to_mri : (N, 4, 4)
        True pose of the probe sensor on the patient.
    tracker_to_mri : (N, 4, 4)
        True pose of the field generator relative to the patient (changes with breathing).
    reference_to_mri : Transform
        Ground truth, fixed.
    probe_to_tracker, reference_to_tracker : (N, 4, 4)
        As measured: the true poses with tracker noise.
    probe_to_tracker_ok : (N,) bool array
        False for dropped frames (INVALID ProbeToTracker).
    """

    timestamps_s: np.ndarray
    probe_to_mri: np.ndarray
    tracker_to_mri: np.ndarray
    reference_to_mri: Transform
    probe_to_tracker: np.ndarray
    reference_to_tracker: np.ndarray
    probe_to_tracker_ok: np.ndarray

    def true_probe_to_tracker(self) -> np.ndarray:
        """(N, 4, 4) noise-free ProbeToTracker."""
        return _rigid_inverse(self.tracker_to_mri) @ self.probe_to_mri

    def true_reference_to_tracker(self) -> np.ndarray:
        """(N, 4, 4) noise-free ReferenceToTracker."""
        return _rigid_inverse(self.tracker_to_mri) @ self.reference_to_mri.matrix


def plan_sweep(
    anatomy: SkinAnatomy,
    spec: SweepSpec,
    *,
    reference_to_mri: Transform,
    tracker_to_mri: Transform,
    latency_s: float = 0.0,
    field_distortion=None,
    reference_drift_mm=None,
) -> SweepPoses:
    """Plan the probe path over the skin and the tracker's readings of it.

    Parameters
    ----------
    anatomy : object with ``skin_surface_y_mm(x_mm, z_mm)``
        The MRI-time anatomy (skin height in LPS mm).
    spec : SweepSpec
    reference_to_mri : Transform
        ``ReferenceToMri``, rigid: where the reference sensor sits on the patient.
    tracker_to_mri : Transform
        ``TrackerToMri``, rigid: the field generator relative to the patient at rest (breathing
        moves it about this pose).
    latency_s : float
        Tracker-to-video latency, s: the readings of frame i are the poses at ``t_i - latency_s``
        (``probe_to_mri`` stays the pose at ``t_i``, where the image is taken).
    field_distortion : FieldDistortion, optional
        Smooth distortion of the measured positions (:class:`workbench.phantom.error_model.FieldDistortion`).
    reference_drift_mm : (2, 3) float array, optional
        Translation (LPS mm) of the reference sensor over the patient at the first and at the
        last frame, linear in between; the readings follow it, ``reference_to_mri`` does not.

    Returns
    -------
    SweepPoses
    """
    if not isinstance(spec, SweepSpec):
        raise PhantomError(f"spec must be a SweepSpec, got {type(spec).__name__}")
    _check_rigid(reference_to_mri, "Reference", "Mri", "reference_to_mri")
    _check_rigid(tracker_to_mri, "Tracker", "Mri", "tracker_to_mri")
    timestamps_s = np.arange(spec.frame_count) / spec.frame_rate_hz
    transducer_to_mri = _transducer_path(anatomy, spec, timestamps_s)
    probe_to_mri = transducer_to_mri @ spec.probe.probe_to_transducer().matrix
    tracker_path = _breathing(spec, timestamps_s) @ tracker_to_mri.matrix
    read_probe_to_mri, read_tracker_path = probe_to_mri, tracker_path
    if latency_s:
        _require_number("latency_s", latency_s, minimum=None)
        read_s = timestamps_s - latency_s
        read_probe_to_mri = _transducer_path(anatomy, spec, read_s) @ spec.probe.probe_to_transducer().matrix
        read_tracker_path = _breathing(spec, read_s) @ tracker_to_mri.matrix
    mri_to_tracker = _rigid_inverse(read_tracker_path)
    read_reference_to_mri = reference_to_mri.matrix
    if reference_drift_mm is not None:
        drift = np.asarray(reference_drift_mm, dtype=float)
        if drift.shape != (2, 3) or not np.all(np.isfinite(drift)):
            raise PhantomError(f"reference_drift_mm must be (2, 3) finite numbers, got shape {drift.shape}")
        fraction = np.linspace(0.0, 1.0, len(timestamps_s))[:, None]
        read_reference_to_mri = np.tile(reference_to_mri.matrix, (len(timestamps_s), 1, 1))
        read_reference_to_mri[:, :3, 3] += drift[0] + fraction * (drift[1] - drift[0])
    tracker_rng = np.random.default_rng([spec.seed, _STREAM_TRACKER])
    probe_to_tracker = _with_tracker_noise(mri_to_tracker @ read_probe_to_mri, spec, tracker_rng)
    reference_to_tracker = _with_tracker_noise(mri_to_tracker @ read_reference_to_mri, spec, tracker_rng)
    if field_distortion is not None:
        probe_to_tracker = field_distortion.apply(probe_to_tracker)
        reference_to_tracker = field_distortion.apply(reference_to_tracker)
    drops_rng = np.random.default_rng([spec.seed, _STREAM_DROPS])
    return SweepPoses(
        timestamps_s=timestamps_s,
        probe_to_mri=probe_to_mri,
        tracker_to_mri=tracker_path,
        reference_to_mri=reference_to_mri,
        probe_to_tracker=probe_to_tracker,
        reference_to_tracker=reference_to_tracker,
        probe_to_tracker_ok=drops_rng.random(len(timestamps_s)) >= spec.dropped_frame_fraction,
    )


def _check_rigid(transform: Transform, from_frame: str, to_frame: str, what: str) -> None:
    if not isinstance(transform, Transform):
        raise FrameError(f"{what} must be a Transform, got {type(transform).__name__}")
    if (transform.from_frame, transform.to_frame) != (from_frame, to_frame):
        raise FrameError(f"{what} must map {from_frame} to {to_frame}, got {transform.name}")
    if not transform.is_rigid(1e-6):
        raise FrameError(f"{what} must be rigid (rotation and translation only)")


def _transducer_path(anatomy: SkinAnatomy, spec: SweepSpec, timestamps_s: np.ndarray) -> np.ndarray:
    """(N, 4, 4) TransducerToMri: the face centre pressed on the skin, beam along the inward normal."""
    motion_rng = np.random.default_rng([spec.seed, _STREAM_MOTION])
    slide_mm = _smooth_wobble(motion_rng, timestamps_s, 3) * spec.jitter_mm
    rock_rad = _smooth_wobble(motion_rng, timestamps_s, 3) * math.radians(spec.jitter_deg)
    direction = math.copysign(1.0, spec.end_z_mm - spec.start_z_mm)
    z_mm = spec.start_z_mm + direction * spec.speed_mm_s * timestamps_s + slide_mm[:, 0]
    x_mm = spec.side_sign * spec.lateral_offset_mm + slide_mm[:, 1]
    press_mm = np.maximum(CONTACT_PRESS_MM + _PRESS_WOBBLE_FRACTION * slide_mm[:, 2], 0.2)
    skin_lps = np.stack([x_mm, _skin_y(anatomy, x_mm, z_mm), z_mm], axis=1)
    normals = _skin_normals(anatomy, x_mm, z_mm)
    axes = _transducer_axes(spec, -normals) @ rotation_matrices(rock_rad)
    path = np.tile(np.eye(4), (len(timestamps_s), 1, 1))
    path[:, :3, :3] = axes
    path[:, :3, 3] = skin_lps - press_mm[:, None] * normals
    return path


def _transducer_axes(spec: SweepSpec, beams: np.ndarray) -> np.ndarray:
    """(N, 3, 3) Transducer axes in Mri (columns x = marker, y = beam, z = x cross y)."""
    if spec.kind == "paramedian-sagittal":
        marker, tilt_towards = np.array([0.0, 0.0, 1.0]), np.array([-spec.side_sign, 0.0, 0.0])
    else:
        marker, tilt_towards = np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0])
    tilt_rad = math.radians(spec.tilt_deg)
    sideways = _unit(tilt_towards - np.sum(beams * tilt_towards, axis=1, keepdims=True) * beams)
    y_axis = math.cos(tilt_rad) * beams + math.sin(tilt_rad) * sideways
    x_axis = _unit(marker - np.sum(y_axis * marker, axis=1, keepdims=True) * y_axis)
    return np.stack([x_axis, y_axis, np.cross(x_axis, y_axis)], axis=2)


def _skin_y(anatomy: SkinAnatomy, x_mm: np.ndarray, z_mm: np.ndarray) -> np.ndarray:
    """Skin heights (mm) at (N,) points; raises where the anatomy has no skin (NaN)."""
    y_mm = np.asarray(anatomy.skin_surface_y_mm(x_mm, z_mm), dtype=float).reshape(np.shape(x_mm))
    missing = ~np.isfinite(y_mm)
    if missing.any():
        first = np.flatnonzero(missing)[0]
        raise PhantomError(
            f"no skin surface at x = {x_mm[first]:.1f} mm, z = {z_mm[first]:.1f} mm: the sweep leaves the back"
        )
    return y_mm


def _skin_normals(anatomy: SkinAnatomy, x_mm: np.ndarray, z_mm: np.ndarray) -> np.ndarray:
    """(N, 3) outward (posterior) unit normals of the skin surface, by central differences."""
    step = _SKIN_NORMAL_STEP_MM
    slope_x = (_skin_y(anatomy, x_mm + step, z_mm) - _skin_y(anatomy, x_mm - step, z_mm)) / (2 * step)
    slope_z = (_skin_y(anatomy, x_mm, z_mm + step) - _skin_y(anatomy, x_mm, z_mm - step)) / (2 * step)
    return _unit(np.stack([-slope_x, np.ones_like(slope_x), -slope_z], axis=1))


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def _smooth_wobble(rng: np.random.Generator, timestamps_s: np.ndarray, channels: int) -> np.ndarray:
    """(N, channels) smooth random motion with unit RMS: sums of sinusoids in the wobble band."""
    shape = (_WOBBLE_COMPONENTS, channels)
    frequencies_hz = rng.uniform(*_WOBBLE_BAND_HZ, shape)
    phases = rng.uniform(0.0, 2.0 * math.pi, shape)
    amplitudes = rng.uniform(0.5, 1.0, shape)
    amplitudes /= np.sqrt(np.sum(amplitudes**2, axis=0) / 2.0)  # each channel: RMS 1
    angles = 2.0 * math.pi * frequencies_hz[None] * timestamps_s[:, None, None] + phases[None]
    return np.sum(amplitudes[None] * np.sin(angles), axis=1)


def _breathing(spec: SweepSpec, timestamps_s: np.ndarray) -> np.ndarray:
    """(N, 4, 4) motion of the tracker relative to the patient (MriToMri) while the back rises.

    The back moves posterior (+y) by ``amplitude * sin``; seen from the patient, the tracker
    moves the opposite way.
    """
    rise_mm = spec.breathing_amplitude_mm * np.sin(2.0 * math.pi * timestamps_s / spec.breathing_period_s)
    motion = np.tile(np.eye(4), (len(timestamps_s), 1, 1))
    motion[:, 1, 3] = -rise_mm
    return motion


def _with_tracker_noise(poses: np.ndarray, spec: SweepSpec, rng: np.random.Generator) -> np.ndarray:
    """Right-multiply each pose by a random rigid motion of the sensor (rotation about its origin).

    Each axis gets sigma = RMS / sqrt(3), so the RMS length of the position error is
    ``tracker_noise_mm`` and the RMS rotation angle ``tracker_noise_deg`` (small angles).
    """
    count = len(poses)
    noise = np.tile(np.eye(4), (count, 1, 1))
    rotation_sigma_rad = math.radians(spec.tracker_noise_deg) / math.sqrt(3.0)
    noise[:, :3, :3] = rotation_matrices(rng.normal(0.0, rotation_sigma_rad, (count, 3)))
    noise[:, :3, 3] = rng.normal(0.0, spec.tracker_noise_mm / math.sqrt(3.0), (count, 3))
    return poses @ noise


def _rigid_inverse(matrices: np.ndarray) -> np.ndarray:
    """Inverse of (N, 4, 4) (or (4, 4)) rigid matrices."""
    rotation_t = np.swapaxes(matrices[..., :3, :3], -1, -2)
    inverse = np.zeros_like(matrices)
    inverse[..., :3, :3] = rotation_t
    inverse[..., :3, 3] = -(rotation_t @ matrices[..., :3, 3, None])[..., 0]
    inverse[..., 3, 3] = 1.0
    return inverse


# -- ground-truth placement helpers -------------------------------------------------------------


def default_reference_to_mri(anatomy: SkinAnatomy, *, z_mm: float, x_mm: float = 0.0) -> Transform:
    """``ReferenceToMri`` of a reference sensor taped on the skin at (x, z), e.g. over the sacrum.

    The sensor's origin is 4 mm above the skin (housing and tape); its x axis points roughly
    cranially, its z axis out of the skin, turned and tilted a little as tape leaves it.
    """
    surface_y_mm = float(_skin_y(anatomy, np.array([x_mm]), np.array([z_mm]))[0])
    laid_on_skin = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    rotation = laid_on_skin @ rotation_matrices(np.radians([4.0, -6.0, 15.0]))
    return Transform.from_rotation_translation(rotation, [x_mm, surface_y_mm + 4.0, z_mm], "Reference", "Mri")


def default_tracker_to_mri(anatomy: SkinAnatomy, *, z_mm: float) -> Transform:
    """``TrackerToMri`` of a planar EM field generator beside the table on the patient's right.

    250 mm right of the midline and 80 mm below the back's surface, level with ``z_mm``, its z
    axis facing the patient (+x in LPS) and its x axis cranial, set up a little askew.
    """
    surface_y_mm = float(_skin_y(anatomy, np.array([0.0]), np.array([z_mm]))[0])
    facing_patient = np.array([[0.0, 0.0, 1.0], [0.0, -1.0, 0.0], [1.0, 0.0, 0.0]])
    rotation = facing_patient @ rotation_matrices(np.radians([3.0, -5.0, 8.0]))
    return Transform.from_rotation_translation(rotation, [-250.0, surface_y_mm - 80.0, z_mm], "Tracker", "Mri")


# -- simulation and files -----------------------------------------------------------------------


@dataclass(eq=False)
class SimulatedSweep:
    """A simulated tracked sweep and its ground truth.

    Attributes
    ----------
    sequence : TrackedSequence
        Images (N, H, W) uint8 in MF orientation, timestamps, ProbeToTracker (with INVALID
        dropped frames) and ReferenceToTracker, as a tracker records them.
    true_image_to_mri : (N, 4, 4) float array
        Noise-free ImageToMri of every frame (pixels to LPS mm), dropped frames included.
    poses : SweepPoses
    probe : ProbeModel
    spec : SweepSpec
    """

    sequence: TrackedSequence
    true_image_to_mri: np.ndarray
    poses: SweepPoses
    probe: ProbeModel
    spec: SweepSpec = field(repr=False)

    @property
    def reference_to_mri(self) -> Transform:
        """Ground-truth ``ReferenceToMri``."""
        return self.poses.reference_to_mri

    def device_set_xml(self, volume_spacing_mm: float = 0.5, *, sequence_file: str = "sweep.igs.mha") -> str:
        """A PLUS device set replaying the sweep, with its calibration and reconstruction settings.

        Parameters
        ----------
        volume_spacing_mm : float
            Isotropic ``OutputSpacing`` of the reconstructed volume, mm.
        sequence_file : str
            ``SequenceFile`` of the SavedDataSource device (the sequence file beside it).

        Returns
        -------
        str
            ``<PlusConfiguration version="2.1">`` text that :func:`workbench.io.plus_config.read_device_set`
            reads back with the same numbers (``ImageToProbe``, clip rectangle, fan).
        """
        if (
            isinstance(volume_spacing_mm, bool)
            or not isinstance(volume_spacing_mm, (int, float))
            or not (math.isfinite(volume_spacing_mm) and volume_spacing_mm > 0)
        ):
            raise DeviceSetError(f"volume_spacing_mm must be a positive number, got {volume_spacing_mm!r}")
        root = ET.Element("PlusConfiguration", version="2.1")
        root.append(self._data_collection(sequence_file))
        definitions = ET.SubElement(root, "CoordinateDefinitions")
        ET.SubElement(
            definitions,
            "Transform",
            From="Image",
            To="Probe",
            Matrix=" ".join(_number(v) for v in self.probe.image_to_probe().matrix.ravel()),
            Error="0",
            Date=CALIBRATION_DATE,
        )
        root.append(self._volume_reconstruction(volume_spacing_mm))
        ET.indent(root, space="  ")
        return ET.tostring(root, encoding="unicode") + "\n"

    def _data_collection(self, sequence_file: str) -> ET.Element:
        collection = ET.Element("DataCollection", StartupDelaySec="1")
        ET.SubElement(
            collection,
            "DeviceSet",
            Name=f"workbench phantom sweep: {self.spec.kind} ({self.probe.name})",
            Description="Simulated tracked freehand sweep over the workbench lumbar phantom, replayed from file.",
        )
        device = ET.SubElement(
            collection,
            "Device",
            Id="TrackedVideoDevice",
            Type="SavedDataSource",
            SequenceFile=sequence_file,
            UseData="IMAGE_AND_TRANSFORM",
            UseOriginalTimestamps="TRUE",
            RepeatEnabled="FALSE",
            ToolReferenceFrame="Tracker",
        )
        ET.SubElement(ET.SubElement(device, "DataSources"), "DataSource", Type="Video", Id="Video")
        ET.SubElement(
            ET.SubElement(device, "OutputChannels"), "OutputChannel", Id="TrackedVideoStream", VideoDataSourceId="Video"
        )
        return collection

    def _volume_reconstruction(self, volume_spacing_mm: float) -> ET.Element:
        probe = self.probe
        (origin_x, origin_y), (size_x, size_y) = probe.clip_rectangle
        attributes = {
            "ImageCoordinateFrame": "Image",
            "ReferenceCoordinateFrame": "Reference",
            "OutputSpacing": " ".join([_number(volume_spacing_mm)] * 3),
            "ClipRectangleOrigin": f"{origin_x} {origin_y}",
            "ClipRectangleSize": f"{size_x} {size_y}",
        }
        if probe.is_curvilinear:
            attributes.update(
                FanAnglesDeg=" ".join(_number(v) for v in probe.fan_angles_deg),
                FanOriginPixel=" ".join(_number(v) for v in probe.fan_origin_px),
                FanRadiusStartPixel=_number(probe.fan_radius_start_px),
                FanRadiusStopPixel=_number(probe.fan_radius_stop_px),
            )
        attributes.update(Interpolation="LINEAR", Optimization="FULL", CompoundingMode="MEAN", FillHoles="ON")
        element = ET.Element("VolumeReconstruction", attributes)
        hole_filling = ET.SubElement(element, "HoleFilling")
        ET.SubElement(
            hole_filling,
            "HoleFillingElement",
            Type="GAUSSIAN",
            Size="5",
            Stdev="0.6667",
            MinimumKnownVoxelsRatio="0.50001",
        )
        ET.SubElement(hole_filling, "HoleFillingElement", Type="STICK", StickLengthLimit="9", NumberOfSticksToUse="1")
        return element

    def write(self, out_dir: str | Path, name: str) -> tuple[Path, Path]:
        """Write ``<name>.igs.mha`` (compressed) and ``<name>_DeviceSet.xml`` into ``out_dir``, atomically.

        Returns
        -------
        (Path, Path)
            The sequence file and the device-set file.
        """
        if not isinstance(name, str) or not _SWEEP_NAME_RE.match(name):
            raise PhantomError(
                f"sweep name {name!r} must start with a letter or digit and hold only letters, digits, '_', '-', '.'"
            )
        out_dir = Path(out_dir)
        sequence_path = write_sequence(self.sequence, out_dir / f"{name}.igs.mha")
        device_set_path = out_dir / f"{name}_DeviceSet.xml"
        atomic_write_text(device_set_path, self.device_set_xml(sequence_file=sequence_path.name))
        return sequence_path, device_set_path


def _number(value: float) -> str:
    """Shortest text that reads back as exactly ``value``."""
    return repr(float(value))


def simulate_sweep(
    anatomy: SkinAnatomy,
    spec: SweepSpec,
    *,
    reference_to_mri: Transform,
    tracker_to_mri: Transform,
    procedure_labels: sitk.Image | None = None,
    muscle_fat_fraction: float = 0.0,
    progress: ProgressCallback | None = None,
    latency_s: float = 0.0,
    field_distortion=None,
    reference_drift_mm=None,
    imaging: dict | None = None,
) -> SimulatedSweep:
    """Simulate a tracked freehand sweep: poses, tracker readings and B-mode frames.

    Parameters
    ----------
    anatomy : object with ``labels`` and ``skin_surface_y_mm(x_mm, z_mm)``
        MRI-time anatomy: the probe is placed on its skin; its labels are imaged unless
        ``procedure_labels`` is given. E.g. ``workbench.phantom.anatomy.Phantom``.
    spec : SweepSpec
    reference_to_mri, tracker_to_mri : Transform
        Ground truth ``ReferenceToMri`` and the field generator's ``TrackerToMri`` (rigid);
        see :func:`default_reference_to_mri` and :func:`default_tracker_to_mri`.
    procedure_labels : SimpleITK.Image, optional
        Procedure-time label map in the same LPS frame (posture change); frames show it.
    muscle_fat_fraction : float
        0..1; raises muscle echogenicity (see :class:`~workbench.phantom.ultrasound.UltrasoundSimulator`).
    progress : callable (frames_done, frames_total), optional
        Called after each frame.
    latency_s, field_distortion, reference_drift_mm
        Tracking errors, see :func:`plan_sweep`.
    imaging : dict, optional
        Image error sources: keyword arguments of :class:`~workbench.phantom.ultrasound.UltrasoundSimulator`
        (``tissue_speeds``, ``speed_scale``, ``elevation_fwhm_mm``, ``reverberation_gain``,
        ``bone_dropout``; e.g. :meth:`workbench.phantom.error_model.ErrorDraw.imaging`).

    Returns
    -------
    SimulatedSweep
    """
    poses = plan_sweep(
        anatomy,
        spec,
        reference_to_mri=reference_to_mri,
        tracker_to_mri=tracker_to_mri,
        latency_s=latency_s,
        field_distortion=field_distortion,
        reference_drift_mm=reference_drift_mm,
    )
    labels = anatomy.labels if procedure_labels is None else procedure_labels
    simulator = UltrasoundSimulator(labels, spec.probe, muscle_fat_fraction=muscle_fat_fraction, **(imaging or {}))
    true_image_to_mri = poses.probe_to_mri @ spec.probe.image_to_probe().matrix
    count = len(poses.timestamps_s)
    images = np.empty((count, spec.probe.height_px, spec.probe.width_px), dtype=np.uint8)
    for index in range(count):
        image_to_mri = Transform(true_image_to_mri[index], "Image", "Mri")
        frame_rng = np.random.default_rng([spec.seed, _STREAM_IMAGES, index])
        images[index] = simulator.frame(image_to_mri, rng=frame_rng, noise=spec.image_noise)
        if progress is not None:
            progress(index + 1, count)
    sequence = TrackedSequence(
        images=images,
        timestamps_s=poses.timestamps_s,
        transforms={"ProbeToTracker": poses.probe_to_tracker, "ReferenceToTracker": poses.reference_to_tracker},
        transform_status={"ProbeToTracker": poses.probe_to_tracker_ok},
        header={"UltrasoundImageType": "BRIGHTNESS"},
        image_orientation="MF",
    )
    return SimulatedSweep(
        sequence=sequence, true_image_to_mri=true_image_to_mri, poses=poses, probe=spec.probe, spec=spec
    )
