"""Accuracy benchmark of the automatic registrations on simulated cases.

``workbench bench registration --cases N --trials M --json``: N simulated cases (phantom seeds
and habitus BMI 22-35, a left and a right paramedian sweep each, reconstructed in
``Reference``, the simulator's default tracker noise), M random initial misalignments per case
(translation uniform up to 20 mm and rotation uniform up to 15 deg, random directions, about the
centroid of the targets), every method run from each. TRE is the distance between each
nerve-root target's true procedure-time position in ``Reference`` mapped through the estimated
``ReferenceToMri`` and its MRI position (``Phantom.targets_lps``); a trial's TRE is the mean over
the targets, a success is a trial TRE < 3 mm. A method that gives one ``ReferenceToMri`` per
vertebra (``"bone-icp+piecewise"``) maps each target by its own level's transform.

With ``posture_change`` every vertebra moves between the MRI and the sweeps (the procedure-time
labels are imaged), by a rotation uniform in +-2 deg and a translation uniform in +-1 mm per LPS
axis about its body centre, as in the demo case; without it (the default) MRI and sweeps show
the same anatomy and the targets' procedure-time positions are the MRI ones mapped by the true
``ReferenceToMri``. Frames: see docs/frames.md.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from workbench.errors import RegistrationError, WorkbenchError
from workbench.frames import Transform
from workbench.registration.params import Lc2Parameters
from workbench.registration.result import RegistrationResult
from workbench.registration.robust_bench import robust_methods

__all__ = [
    "DEFAULT_METHODS",
    "METHODS",
    "POSTURE_MAX_ROTATION_DEG",
    "POSTURE_MAX_TRANSLATION_MM",
    "posture_motion",
    "RegistrationCase",
    "random_misalignment",
    "register_bench",
    "run_registration_benchmark",
    "simulate_registration_case",
]

#: A trial succeeds when its TRE is below this, mm.
SUCCESS_TRE_MM = 3.0
#: Targets of an automatic registration on these cases (docs/registration.md), reported per method
#: in ``targets``: summary key -> ("max" or "min", target). Timing is checked here, not in tests.
TARGETS = {"median_tre_mm": ("max", 1.5), "success_rate": ("min", 0.95), "median_time_s": ("max", 10.0)}
#: A refinement ``"base+refinement"`` may add at most this to the median time of its base method
#: when both ran (``targets["added_time_s"]``), s.
REFINEMENT_MAX_ADDED_TIME_S = 5.0
#: Initial-offset bins of the report (translation magnitude, mm).
OFFSET_BINS_MM = {"0-10": (0.0, 10.0), "10-20": (10.0, 20.0)}
#: Posture change of ``--posture-change``: per vertebra and LPS axis, rotation uniform within
#: +-this, deg, and translation uniform within +-this, mm (the demo case's defaults).
POSTURE_MAX_ROTATION_DEG = 2.0
POSTURE_MAX_TRANSLATION_MM = 1.0
#: Realistic sweeps keep frames at least this far apart along the sweep (mm; at most 25 Hz), as
#: a reconstruction that skips near-duplicate frames does; it bounds the simulation time.
FRAME_SPACING_MM = 1.5


@dataclass(eq=False)
class RegistrationCase:
    """A simulated case prepared for every method.

    Attributes
    ----------
    mri : SimpleITK.Image
        T2 MRI, LPS mm (``Mri``).
    us_volume : SimpleITK.Image
        Reconstructed US volume in ``Reference`` mm.
    us_mask : (nz, ny, nx) bool array
        Voxels the sweeps covered.
    us_points_reference : (N, 3) float array, mm
        Bone surface points found in the frames (``Reference``).
    mri_points : (M, 3) float array, mm
        Posterior bone surface of the label map (``Mri``).
    reference_to_mri : Transform
        Ground truth ``ReferenceToMri`` (of the MRI-time anatomy; with a posture change each
        vertebra's own ``ReferenceToMri`` differs from it by that vertebra's motion).
    targets_mri : (K, 3) float array, mm
        Nerve-root targets in ``Mri`` (MRI-time posture).
    description : dict
        Seed, BMI, posture change (bool) and preparation time, s.
    frames : TrackedSequence or None
        The tracked sweeps (both sides, one after the other), for the methods that use frames.
    image_to_probe : Transform or None
        ``ImageToProbe`` calibration of the frames.
    target_names : tuple of str
        Names of the targets, in the order of ``targets_mri`` (they start with the level, "L4 ...").
    targets_reference : (K, 3) float array, mm, or None
        True procedure-time positions of the targets in ``Reference``; None: the MRI ones mapped
        by the inverse of ``reference_to_mri`` (no posture change).
    mri_points_by_level : dict of str to (M, 3) float array, mm
        ``mri_points`` split by vertebra (``Mri``), for ``"bone-icp+piecewise"``.
    landmarks_mri, landmarks_reference : dict of str to (3,) float array, mm, or None
        True positions of :data:`PHYSICIAN_LANDMARKS` in ``Mri`` (MRI time) and in ``Reference``
        (procedure time), before any localisation error.
    errors : ErrorSources or None
        The simulated error sources (None: ideal).
    """

    mri: object
    us_volume: object
    us_mask: np.ndarray
    us_points_reference: np.ndarray
    mri_points: np.ndarray
    reference_to_mri: Transform
    targets_mri: np.ndarray
    description: dict
    frames: object = None
    image_to_probe: Transform | None = None
    target_names: tuple[str, ...] = ()
    targets_reference: np.ndarray | None = None
    mri_points_by_level: dict | None = None
    landmarks_mri: dict | None = None
    landmarks_reference: dict | None = None
    errors: object = None

    def true_targets_reference(self) -> np.ndarray:
        """(K, 3) float array, mm: the targets where they are at the procedure, in ``Reference``."""
        if self.targets_reference is not None:
            return self.targets_reference
        return self.reference_to_mri.inverse().apply_to_points(self.targets_mri)


def posture_motion(
    seed: int, levels, max_rotation_deg: float = POSTURE_MAX_ROTATION_DEG,
    max_translation_mm: float = POSTURE_MAX_TRANSLATION_MM,
) -> dict[str, tuple[tuple[float, ...], tuple[float, ...]]]:
    """Random per-vertebra motion between MRI and procedure, for ``SpineParameters.vertebra_motion``.

    Parameters
    ----------
    seed : int
    levels : iterable of str
        Levels to move (e.g. ``Phantom.vertebra_centres_lps``).
    max_rotation_deg, max_translation_mm : float
        Per LPS axis, rotation uniform within +-``max_rotation_deg`` and translation within
        +-``max_translation_mm``.

    Returns
    -------
    dict of str to (rotation_deg (3,), translation_mm (3,))
    """
    rng = np.random.default_rng([seed, 101])
    return {
        level: (
            tuple(float(v) for v in rng.uniform(-max_rotation_deg, max_rotation_deg, 3)),
            tuple(float(v) for v in rng.uniform(-max_translation_mm, max_translation_mm, 3)),
        )
        for level in levels
    }


#: The physician's landmarks of a landmark start (picked in the MRI and on the US).
PHYSICIAN_LANDMARKS = (
    "L2 spinous process tip",
    "L5 spinous process tip",
    "L3-L4 left facet joint",
    "L3-L4 right facet joint",
    "L5-S1 left facet joint",
    "L5-S1 right facet joint",
)


def simulate_registration_case(
    seed: int = 0,
    bmi: float = 25.0,
    *,
    phantom_spacing_mm: float = 1.0,
    volume_spacing_mm: float = 1.0,
    sweep_speed_mm_s: float = 80.0,
    posture_change: bool = False,
    errors=None,
) -> RegistrationCase:
    """Simulate a case: phantom, MRI, a left and a right paramedian sweep, reconstruction, bone points.

    With ``posture_change`` the sweeps image a second phantom whose vertebrae moved by
    :func:`posture_motion` (seeded by ``seed``); the MRI, its bone points and ``targets_mri`` stay
    those of the first one.

    Parameters
    ----------
    seed : int
    bmi : float
    phantom_spacing_mm, volume_spacing_mm : float
        Label-map and reconstruction voxel sizes, mm.
    sweep_speed_mm_s : float
        Speed of both sweeps unless ``errors`` draws them (``sweep_speed_range_mm_s``).
    posture_change : bool
        The earlier posture change (+-2 deg / +-1 mm per vertebra), as ``errors`` ``posture``
        without the lordosis change.
    errors : workbench.phantom.error_model.ErrorSources, optional
        Error sources to simulate (default :meth:`~ErrorSources.ideal`: the earlier case exactly).
        Drawn per case by ``errors.draw(seed)``. The truth stays the truth: ``reference_to_mri``
        is the MRI-time ``ReferenceToMri`` at the start of the first sweep and the targets'
        procedure-time positions are those of the imaged anatomy; the registration inputs carry
        the errors (frames, poses, calibration ``image_to_probe``, MRI bone points of a
        segmentation). ``description["errors"]`` records the sources and the draw.
    """
    from workbench.phantom.anatomy import SpineParameters, build_phantom
    from workbench.phantom.error_model import (
        ErrorSources,
        lordosis_change_motion,
        miscalibrated,
        perturbed_bone_labels,
    )
    from workbench.phantom.labels import PHANTOM_TABLE
    from workbench.anatomy import LabelMap
    from workbench.phantom.mri import synthesize_t2
    from workbench.phantom.sweep import SweepSpec, default_reference_to_mri, default_tracker_to_mri, simulate_sweep
    from workbench.registration.piecewise import mri_bone_points_by_level
    from workbench.registration.surface import mri_bone_points, us_bone_points

    errors = ErrorSources.ideal() if errors is None else errors
    if not isinstance(errors, ErrorSources):
        raise WorkbenchError(f"errors must be an ErrorSources, got {type(errors).__name__}")
    draw = errors.draw(seed)
    start = time.perf_counter()
    params = SpineParameters(seed=seed, bmi=bmi, spacing_mm=phantom_spacing_mm)
    phantom = build_phantom(params)
    procedure = phantom
    moved = posture_change or errors.posture_rotation_deg > 0 or errors.posture_translation_mm > 0
    moved = moved or draw.lordosis_change_deg != 0.0
    if moved:
        if posture_change and not (errors.posture_rotation_deg or errors.posture_translation_mm):
            motion = posture_motion(seed, phantom.vertebra_centres_lps)
        else:
            motion = posture_motion(
                seed, phantom.vertebra_centres_lps, errors.posture_rotation_deg, errors.posture_translation_mm
            )
        if draw.lordosis_change_deg:
            bend = lordosis_change_motion(phantom.vertebra_centres_lps, draw.lordosis_change_deg)
            motion = {
                level: (
                    tuple(a + b for a, b in zip(rotation, bend[level][0])),
                    tuple(a + b for a, b in zip(translation, bend[level][1])),
                )
                for level, (rotation, translation) in motion.items()
            }
        procedure = build_phantom(SpineParameters(seed=seed, bmi=bmi, spacing_mm=phantom_spacing_mm, vertebra_motion=motion))
    mri = synthesize_t2(phantom, seed=seed)
    reference_to_mri = default_reference_to_mri(phantom, z_mm=float(phantom.vertebra_centres_lps["S1"][2]) - 15.0)
    tracker_to_mri = default_tracker_to_mri(phantom, z_mm=float(phantom.vertebra_centres_lps["L3"][2]))
    speeds = draw.sweep_speeds_mm_s or (sweep_speed_mm_s, sweep_speed_mm_s)
    shift = np.asarray(draw.reference_shift_lps_mm)
    tracking = {}
    if draw.latency_s:
        tracking["latency_s"] = draw.latency_s
    if draw.field_distortion is not None:
        tracking["field_distortion"] = draw.field_distortion
    if errors.active() and set(errors.active()) & {"speed_of_sound", "elevation_beam", "reverberation", "bone_visibility"}:
        tracking["imaging"] = draw.imaging()
    jitter = {}
    if (errors.tracker_jitter_mm, errors.tracker_jitter_deg) != (0.5, 0.3):
        jitter = {"tracker_noise_mm": errors.tracker_jitter_mm, "tracker_noise_deg": errors.tracker_jitter_deg}
    sweeps = []
    for index, side in enumerate(("left", "right")):
        extra = dict(tracking)
        if np.any(shift):
            extra["reference_drift_mm"] = np.array([shift * index / 2.0, shift * (index + 1) / 2.0])
        frame_rate = {}
        if draw.sweep_speeds_mm_s is not None:
            # Frames at least FRAME_SPACING_MM apart (as the reconstruction keeps them), at most 25 Hz.
            frame_rate = {"frame_rate_hz": min(25.0, speeds[index] / FRAME_SPACING_MM)}
        sweeps.append(
            simulate_sweep(
                phantom,
                SweepSpec.between_levels(
                    phantom, "S1", "L2", side=side, speed_mm_s=speeds[index], seed=seed * 10 + index, **jitter, **frame_rate
                ),
                reference_to_mri=reference_to_mri,
                tracker_to_mri=tracker_to_mri,
                procedure_labels=procedure.labels if moved else None,
                muscle_fat_fraction=phantom.muscle_fat_fraction,
                **extra,
            )
        )
    sequence = _concatenated([sweep.sequence for sweep in sweeps])
    probe = sweeps[0].probe
    image_to_probe = probe.image_to_probe()
    if errors.calibration_translation_mm or errors.calibration_rotation_deg:
        face_centre_probe = probe.probe_to_transducer().inverse().apply_to_points(np.zeros(3))
        image_to_probe = miscalibrated(
            image_to_probe, draw.calibration_translation_mm, draw.calibration_rotation_deg, face_centre_probe
        )
    reconstruction = _reconstruct(sequence, probe, volume_spacing_mm, image_to_probe)
    label_map, levels = phantom.label_map, phantom.levels
    if errors.mri_boundary_voxels:
        labels_image, levels = perturbed_bone_labels(
            phantom.labels, phantom.levels, voxels=errors.mri_boundary_voxels,
            fraction=errors.mri_boundary_fraction, patch_mm=errors.mri_boundary_patch_mm, seed=seed,
        )
        label_map = LabelMap(labels_image, PHANTOM_TABLE)
    names = tuple(phantom.targets_lps)
    mri_to_reference = reference_to_mri.inverse()
    description = {
        "seed": seed,
        "bmi": bmi,
        "posture_change": posture_change,
        "preparation_s": round(time.perf_counter() - start, 2),
    }
    if errors.active():
        description["errors"] = {"sources": list(errors.active()), "draw": draw.to_dict()}
    return RegistrationCase(
        mri=mri,
        us_volume=reconstruction.to_sitk(),
        us_mask=reconstruction.covered,
        us_points_reference=us_bone_points(sequence, image_to_probe),
        mri_points=mri_bone_points(label_map),
        reference_to_mri=reference_to_mri,
        targets_mri=np.array([phantom.targets_lps[name] for name in names]),
        description=description,
        frames=sequence,
        image_to_probe=image_to_probe,
        target_names=names,
        targets_reference=(
            mri_to_reference.apply_to_points(np.array([procedure.targets_lps[name] for name in names]))
            if moved
            else None
        ),
        mri_points_by_level=mri_bone_points_by_level(label_map, levels),
        landmarks_mri={name: np.asarray(phantom.landmarks_lps[name], float) for name in PHYSICIAN_LANDMARKS},
        landmarks_reference={
            name: mri_to_reference.apply_to_points(np.asarray(procedure.landmarks_lps[name], float))
            for name in PHYSICIAN_LANDMARKS
        },
        errors=errors,
    )

def _concatenated(sequences):
    """One tracked sequence holding the frames of several, one after the other (timestamps shifted)."""
    from workbench.io.sequence import TrackedSequence

    timestamps, offset_s = [], 0.0
    for sequence in sequences:
        timestamps.append(sequence.timestamps_s + offset_s)
        offset_s = timestamps[-1][-1] + 1.0
    names = sequences[0].transforms
    return TrackedSequence(
        images=np.concatenate([s.images for s in sequences]),
        timestamps_s=np.concatenate(timestamps),
        transforms={name: np.concatenate([s.transforms[name] for s in sequences]) for name in names},
        transform_status={name: np.concatenate([s.status_of(name) for s in sequences]) for name in names},
        header=dict(sequences[0].header),
        image_orientation=sequences[0].image_orientation,
    )


def _reconstruct(sequence, probe, spacing_mm: float, image_to_probe: Transform | None = None):
    from workbench.io.plus_config import VolumeReconstructionConfig
    from workbench.reconstruction.reconstruct import reconstruct_volume

    (origin_x, origin_y), (size_x, size_y) = probe.clip_rectangle
    config = VolumeReconstructionConfig(
        output_spacing_mm=(spacing_mm,) * 3,
        clip_rectangle_origin_px=(origin_x, origin_y),
        clip_rectangle_size_px=(size_x, size_y),
        fan_angles_deg=probe.fan_angles_deg,
        fan_origin_px=probe.fan_origin_px,
        fan_radius_start_px=probe.fan_radius_start_px,
        fan_radius_stop_px=probe.fan_radius_stop_px,
        interpolation="LINEAR",
    )
    return reconstruct_volume(sequence, image_to_probe or probe.image_to_probe(), config)


def random_misalignment(
    rng: np.random.Generator, centre_mm, max_translation_mm: float = 20.0, max_rotation_deg: float = 15.0
) -> tuple[np.ndarray, float, float]:
    """A random rigid motion: translation and rotation angle uniform up to the maxima, random directions.

    Returns
    -------
    matrix : (4, 4) float array
        The motion (rotation about ``centre_mm`` (3,) mm, then the translation).
    translation_mm, rotation_deg : float
        Its magnitudes.
    """
    from workbench.registration.intensity import rigid_offset

    translation_mm = rng.uniform(0.0, max_translation_mm)
    rotation_deg = rng.uniform(0.0, max_rotation_deg)
    axis, direction = (vector / np.linalg.norm(vector) for vector in rng.normal(size=(2, 3)))
    return rigid_offset(np.r_[rotation_deg * axis, translation_mm * direction], centre_mm), translation_mm, rotation_deg


# -- methods -------------------------------------------------------------------------------------


#: ``"bone-icp+lc2"``: LC2 on the reconstruction as a local refinement of the ICP result.
LC2_AFTER_ICP = Lc2Parameters(
    levels_mm=(2.0,), initial_step_mm=1.0, initial_step_deg=1.0, max_translation_mm=5.0, max_rotation_deg=5.0
)


def method_settings(name: str):
    """The :class:`~workbench.registration.pipeline.RegistrationSettings` a benchmark method runs.

    Every method runs :func:`~workbench.registration.pipeline.run_registration_pipeline` from the
    trial's initial ``ReferenceToMri`` (no landmarks) with these refinements and parameters.
    """
    from workbench.registration.pipeline import RegistrationSettings

    if name == "bone-icp+lc2":
        return RegistrationSettings(("bone-icp", "lc2"), lc2=LC2_AFTER_ICP)
    if name == "bone-icp+lc2-frames":
        from workbench.registration.frames_lc2 import REFINEMENT_PARAMETERS

        return RegistrationSettings(("bone-icp", "lc2-frames"), lc2_frames=REFINEMENT_PARAMETERS)
    if name == "bone-icp+piecewise":
        return RegistrationSettings(("bone-icp", "piecewise"))
    if name in ("bone-icp", "lc2", "lc2-frames", "mattes-mi"):
        return RegistrationSettings((name,))
    raise WorkbenchError(f"unknown registration method {name!r}; choose from {sorted(METHODS)}")


def pipeline_inputs(case: RegistrationCase, initial: Transform):
    """:class:`~workbench.registration.pipeline.RegistrationInputs` of ``case`` from ``initial`` (``ReferenceToMri``)."""
    from workbench.registration.pipeline import RegistrationInputs

    return RegistrationInputs(
        initial=initial,
        us_points_reference=case.us_points_reference,
        mri_points=case.mri_points,
        mri_points_by_level=case.mri_points_by_level,
        mri=case.mri,
        us_volume=case.us_volume,
        us_mask=case.us_mask,
        frames=case.frames,
        image_to_probe=case.image_to_probe,
    )


def _method(name: str) -> Callable[[RegistrationCase, Transform], RegistrationResult]:
    def run(case: RegistrationCase, initial: Transform) -> RegistrationResult:
        from workbench.registration.pipeline import run_registration_pipeline

        return run_registration_pipeline(pipeline_inputs(case, initial), method_settings(name))

    run.__name__ = run.__qualname__ = f"run_{name.replace('-', '_').replace('+', '_then_')}"
    return run


#: Benchmark methods: name -> run(case, initial ReferenceToMri) -> RegistrationResult (through
#: the registration pipeline, :func:`method_settings`). ``"bone-icp+piecewise"`` carries one
#: ``ReferenceToMri`` per vertebra (``per_vertebra_result``); each target is mapped by its level's.
METHODS: dict[str, Callable[[RegistrationCase, Transform], RegistrationResult]] = {
    name: _method(name)
    for name in ("bone-icp", "lc2", "bone-icp+lc2", "lc2-frames", "bone-icp+lc2-frames", "bone-icp+piecewise", "mattes-mi")
}
# "bone-robust", "bone-robust+piecewise": start search, robust ICP with speed-of-sound scale and latency, level check.
METHODS.update(robust_methods())
#: What the benchmark runs unless told otherwise, within about 10 minutes on 2 busy cores for 3 cases
#: x 5 trials. Left out ("--methods" runs them): "lc2" on the reconstructed volume (fails on the
#: simulated sweeps, 17 s a trial) and the refinements "bone-icp+lc2" and "bone-icp+lc2-frames",
#: which move the sub-millimetre ICP result to about 1 mm; see docs/registration.md.
DEFAULT_METHODS = ("bone-icp", "lc2-frames", "mattes-mi")


#: Profiles of ``run_registration_benchmark``: "realistic" simulates every error source
#: (:meth:`ErrorSources.realistic`); "ideal" the earlier benchmark (an upper bound).
PROFILES = ("realistic", "ideal")
#: Realistic profile: initial translations of exactly these lengths (mm, random directions), with
#: rotations uniform up to :data:`MAX_START_ROTATION_DEG`.
START_OFFSETS_MM = (5.0, 10.0, 15.0, 20.0)
MAX_START_ROTATION_DEG = 15.0
#: Landmark starts: 3D RMS fiducial localisation error of the physician's picks on the US
#: (drawn per start, mm) and in the MRI (mm).
LANDMARK_FLE_US_MM = (2.0, 3.0)
LANDMARK_FLE_MRI_MM = 1.0
#: Realistic defaults of the command: cases, starts per offset and case, landmark starts per case.
REALISTIC_DEFAULTS = {"cases": 2, "trials": 1, "landmark_trials": 1}


def landmark_start(case: RegistrationCase, rng: np.random.Generator) -> Transform:
    """``ReferenceToMri`` fitted to the physician's 6 landmarks picked with localisation error.

    The picks on the US (``Reference``, procedure time) get isotropic Gaussian errors of 3D RMS
    drawn uniformly in :data:`LANDMARK_FLE_US_MM`, those in the MRI :data:`LANDMARK_FLE_MRI_MM`.
    """
    from workbench.registration.landmarks import rigid_fit

    names = tuple(case.landmarks_mri)
    fle_us_mm = rng.uniform(*LANDMARK_FLE_US_MM)
    reference = np.array([case.landmarks_reference[name] for name in names])
    mri = np.array([case.landmarks_mri[name] for name in names])
    reference = reference + rng.normal(0.0, fle_us_mm / np.sqrt(3.0), reference.shape)
    mri = mri + rng.normal(0.0, LANDMARK_FLE_MRI_MM / np.sqrt(3.0), mri.shape)
    return rigid_fit(reference, mri)


def exact_misalignment(rng: np.random.Generator, centre_mm, translation_mm: float, max_rotation_deg: float = 15.0):
    """(4, 4) rigid motion: translation of exactly ``translation_mm`` and rotation uniform up to the maximum.

    Random directions; the rotation is about ``centre_mm`` (3,) mm. Returns the matrix and the rotation angle, deg.
    """
    from workbench.registration.intensity import rigid_offset

    rotation_deg = rng.uniform(0.0, max_rotation_deg)
    axis, direction = (vector / np.linalg.norm(vector) for vector in rng.normal(size=(2, 3)))
    return rigid_offset(np.r_[rotation_deg * axis, translation_mm * direction], centre_mm), rotation_deg


def run_registration_benchmark(
    cases: int = 3,
    trials: int = 5,
    seed: int = 0,
    methods=DEFAULT_METHODS,
    progress: Callable[[str], None] | None = None,
    posture_change: bool = False,
    *,
    profile: str = "realistic",
    sources=None,
    landmark_trials: int = 1,
) -> dict:
    """Run every method from initial misalignments on simulated cases and summarise TRE and time.

    Parameters
    ----------
    cases, trials : int
        Simulated cases, and starts per case: ``"ideal"``: misalignments (translation uniform up
        to 20 mm, rotation up to 15 deg); ``"realistic"``: starts per offset of
        :data:`START_OFFSETS_MM` (exact translation, rotation up to 15 deg). Each method runs
        from the same starts.
    seed : int
        Seeds the cases (seed + case index) and the misalignments.
    methods : iterable of str
        Keys of :data:`METHODS`.
    progress : callable(str), optional
    posture_change : bool
        Ideal profile: simulate cases whose vertebrae move between MRI and sweeps (see
        :func:`simulate_registration_case`); about 3 s more per case.
    profile : str
        ``"realistic"`` (every error source of :meth:`ErrorSources.realistic`) or ``"ideal"``
        (the earlier benchmark: an upper bound).
    sources : iterable of str, optional
        Realistic profile: the error sources to simulate (``SOURCE_NAMES``); each alone, then
        all of them together (the top-level figures). None: every source together only.
    landmark_trials : int
        Realistic profile: starts per case from the physician's 6 landmarks (:func:`landmark_start`).

    Returns
    -------
    dict
        ``{"methods": {name: {"median_tre_mm", "p90_tre_mm", "success_rate",
        "success_rate_all_targets", "wrong_level_rate", "max_tre_mm", "median_time_s", "trials",
        "failures", "by_offset": {...}, "by_start": {...}, "targets": {key: {"target", "limit",
        "met"}}}}, "cases", "trials", "seed", "profile", "errors", "posture_change",
        "quality_counts", "case_descriptions", "definition"}``, plus ``"sources"`` (per source:
        ``{"errors", "methods", "quality_counts"}``) when ``sources`` is given. ``by_offset``:
        ``"0-10"``, ``"10-20"`` (ideal) or ``"5"``, ``"10"``, ``"15"``, ``"20"`` mm (realistic);
        ``by_start``: ``"offset"`` and ``"landmarks"`` (realistic). ``quality_counts``: per
        method, trials the quality gate judged ``"accepted"``, ``"doubtful"``, ``"refused"``, and
        ``"failed"`` (the method raised); the gate only annotates, TRE and time are those of
        every trial.
    """
    from workbench.phantom.error_model import SOURCE_NAMES, ErrorSources

    methods = tuple(methods)
    unknown = [name for name in methods if name not in METHODS]
    if unknown:
        raise WorkbenchError(f"unknown registration method(s) {unknown}; choose from {sorted(METHODS)}")
    if cases < 1 or trials < 1:
        raise WorkbenchError(f"the benchmark needs at least 1 case and 1 trial, got {cases} and {trials}")
    if profile not in PROFILES:
        raise WorkbenchError(f"unknown benchmark profile {profile!r}; choose from {', '.join(PROFILES)}")
    if sources is not None:
        sources = tuple(SOURCE_NAMES if sources in ("all", ("all",), ["all"]) else sources)
        bad = [name for name in sources if name not in SOURCE_NAMES]
        if bad or not sources:
            raise WorkbenchError(f"unknown error source(s) {bad}; choose from all, {', '.join(SOURCE_NAMES)}")
        if profile != "realistic":
            raise WorkbenchError("--sources needs the realistic profile")
    if landmark_trials < 0:
        raise WorkbenchError(f"landmark_trials must be >= 0, got {landmark_trials}")
    say = progress or (lambda message: None)
    if profile == "ideal":
        errors = ErrorSources.ideal()
    else:
        errors = ErrorSources.realistic() if sources is None else ErrorSources.only(*sources)
    results = {
        "benchmark": "registration",
        "profile": profile,
        "errors": errors.to_dict(),
        "error_sources": list(errors.active()),
        **_benchmark_run(cases, trials, seed, methods, say, posture_change, profile, errors, landmark_trials),
        "cases": cases,
        "trials": trials,
        "landmark_trials": landmark_trials if profile == "realistic" else 0,
        "seed": seed,
        "posture_change": posture_change,
        "definition": (
            "trial TRE = mean over the nerve-root targets of the distance between the target's true procedure-time "
            "position in Reference mapped by the estimated ReferenceToMri (per-vertebra methods: that of the target's "
            "level) and its MRI position; "
            f"success = trial TRE < {SUCCESS_TRE_MM:g} mm; success_all_targets = every target < {SUCCESS_TRE_MM:g} mm; "
            "wrong level = some target mapped closer to the same-side target of a neighbouring level than to its "
            "own; max_tre_mm = the worst single target over all trials; "
            + (
                "offsets: translation up to 20 mm and rotation up to 15 deg about the targets' centroid; by_offset "
                "bins by translation; profile ideal: no error beyond tracker jitter (an upper bound)"
                if profile == "ideal"
                else "offsets: translation of exactly 5, 10, 15, 20 mm (by_offset) and rotation up to 15 deg about "
                "the targets' centroid, and starts from 6 physician landmarks with 2-3 mm FLE (by_start); profile "
                "realistic: the error sources in 'errors' (workbench.phantom.error_model)"
            )
        ),
    }
    if sources is not None:
        per_source = {}
        for name in sources if len(sources) > 1 else ():
            say(f"source {name} alone")
            single = ErrorSources.only(name)
            run = _benchmark_run(cases, trials, seed, methods, say, False, profile, single, landmark_trials)
            per_source[name] = {"errors": {f: v for f, v in single.to_dict().items() if f in _fields_of(name)}, **run}
            per_source[name].pop("case_descriptions")
        per_source["all"] = {"errors": list(sources), "methods": results["methods"], "quality_counts": results["quality_counts"]}
        results["sources"] = per_source
    return results


def _fields_of(name: str) -> tuple[str, ...]:
    from workbench.phantom.error_model import SOURCE_FIELDS

    return SOURCE_FIELDS[name]


def _benchmark_run(cases, trials, seed, methods, say, posture_change, profile, errors, landmark_trials) -> dict:
    """``{"methods", "quality_counts", "case_descriptions"}`` of one profile/error setting."""
    rng = np.random.default_rng([seed, 5])
    records = {name: [] for name in methods}
    descriptions = []
    for case_index in range(cases):
        bmi = float(rng.uniform(22.0, 35.0))
        say(f"case {case_index + 1}/{cases}: simulating (seed {seed + case_index}, BMI {bmi:.1f})")
        case = simulate_registration_case(seed + case_index, bmi, posture_change=posture_change, errors=errors)
        descriptions.append(case.description)
        centre_reference = case.reference_to_mri.inverse().apply_to_points(case.targets_mri.mean(axis=0))
        starts = []
        if profile == "ideal":
            for _ in range(trials):
                motion, translation_mm, _ = random_misalignment(rng, centre_reference)
                starts.append((translation_mm, "offset", Transform(case.reference_to_mri.matrix @ motion, "Reference", "Mri")))
        else:
            for offset_mm in START_OFFSETS_MM:
                for _ in range(trials):
                    motion, _ = exact_misalignment(rng, centre_reference, offset_mm, MAX_START_ROTATION_DEG)
                    starts.append((offset_mm, "offset", Transform(case.reference_to_mri.matrix @ motion, "Reference", "Mri")))
            for _ in range(landmark_trials):
                initial = landmark_start(case, rng)
                true_centre_mri = case.reference_to_mri.apply_to_points(centre_reference)
                offset_mm = float(np.linalg.norm(initial.apply_to_points(centre_reference) - true_centre_mri))
                starts.append((offset_mm, "landmarks", initial))
        for offset_mm, kind, initial in starts:
            for name in methods:
                row = _judged_trial(METHODS[name], case, initial)
                records[name].append((offset_mm, *row, kind))
                say(f"  {name}: {kind} start {offset_mm:.1f} mm -> TRE {row[0]:.2f} mm (worst target {row[3]:.2f})")
    return {
        "methods": _with_targets({name: _summary(rows, profile) for name, rows in records.items()}),
        "quality_counts": {name: _quality_counts(rows) for name, rows in records.items()},
        "case_descriptions": descriptions,
    }


def _run_trial(run, case: RegistrationCase, initial: Transform) -> tuple[float, float]:
    """(TRE mm, run time s); a registration that raises counts as a failure with infinite TRE."""
    return _judged_trial(run, case, initial)[:2]


def _judged_trial(run, case: RegistrationCase, initial: Transform) -> tuple[float, float, str, float, bool]:
    """(TRE mm, run time s, quality verdict, worst target mm, wrong level) as :func:`_run_trial`.

    Verdict ``"failed"`` (infinite TREs, not a wrong level) where the method raised.
    """
    from workbench.registration.quality import quality_of

    try:
        result = run(case, initial)
    except RegistrationError:
        return float("inf"), 0.0, "failed", float("inf"), False
    mapped = mapped_targets_mri(result, case)
    errors_mm = np.linalg.norm(mapped - case.targets_mri, axis=1)
    verdict = quality_of(result)
    return (
        float(errors_mm.mean()),
        float(_run_time_s(result)),
        "unjudged" if verdict is None else verdict.verdict,
        float(errors_mm.max()),
        wrong_level(mapped, case),
    )


def _quality_counts(rows) -> dict:
    """Trials per quality verdict (accepted / doubtful / refused, and failed: the method raised)."""
    counts = dict.fromkeys(("accepted", "doubtful", "refused", "failed"), 0)
    for row in rows:
        counts[row[3]] = counts.get(row[3], 0) + 1
    return counts


def wrong_level(mapped_mri: np.ndarray, case: RegistrationCase) -> bool:
    """True when some target is mapped closer to the same-side target of a neighbouring level than to its own.

    Parameters
    ----------
    mapped_mri : (K, 3) float array, mm
        The targets' true procedure-time positions mapped into ``Mri`` by the registration.
    case : RegistrationCase
        Its ``target_names`` start with the level ("L4 left ...").
    """
    from workbench.anatomy import LEVEL_NAMES

    names = case.target_names
    if not names:
        return False
    index = {name: i for i, name in enumerate(names)}
    for i, name in enumerate(names):
        level, _, rest = name.partition(" ")
        own = np.linalg.norm(mapped_mri[i] - case.targets_mri[i])
        position = LEVEL_NAMES.index(level) if level in LEVEL_NAMES else None
        if position is None:
            continue
        for step in (-1, 1):
            if 0 <= position + step < len(LEVEL_NAMES):
                other = index.get(f"{LEVEL_NAMES[position + step]} {rest}")
                if other is not None and np.linalg.norm(mapped_mri[i] - case.targets_mri[other]) < own:
                    return True
    return False


def mapped_targets_mri(result, case: RegistrationCase) -> np.ndarray:
    """(K, 3) float array, mm: the targets' true procedure-time positions mapped into ``Mri`` by ``result``.

    Parameters
    ----------
    result : RegistrationResult or PiecewiseResult
        One ``ReferenceToMri``, or one per vertebra (a pipeline result with ``"piecewise"``, or a
        PiecewiseResult; each target then mapped by its level's).
    case : RegistrationCase
    """
    from workbench.registration.piecewise import PiecewiseResult
    from workbench.registration.pipeline import per_vertebra_result

    truth_reference = case.true_targets_reference()
    if isinstance(result, RegistrationResult):
        result = per_vertebra_result(result) or result
    if isinstance(result, PiecewiseResult):
        names = case.target_names or ("",) * len(truth_reference)
        return np.array(
            [result.transform_for_target(name).apply_to_points(point) for name, point in zip(names, truth_reference)]
        )
    return result.transform.apply_to_points(truth_reference)


def target_errors_mm(result, case: RegistrationCase) -> np.ndarray:
    """(K,) float array, mm: TRE at each target of ``case`` (order of ``case.targets_mri``).

    Parameters
    ----------
    result : RegistrationResult or PiecewiseResult
        As :func:`mapped_targets_mri`.
    case : RegistrationCase
    """
    return np.linalg.norm(mapped_targets_mri(result, case) - case.targets_mri, axis=1)


def _run_time_s(result) -> float:
    """Registration time, s (a pipeline result's is the sum of its steps); a PiecewiseResult adds its global ICP's."""
    from workbench.registration.piecewise import PiecewiseResult

    if isinstance(result, PiecewiseResult):
        return result.global_result.run_time_s + result.run_time_s
    return result.run_time_s


def _summary(rows: list, profile: str = "ideal") -> dict:
    """Rows (offset mm, TRE mm, time s, verdict, worst target mm, wrong level, start kind) -> statistics."""
    summary = _statistics(rows)
    if profile == "ideal":
        summary["by_offset"] = {
            label: _statistics([row for row in rows if low <= row[0] < high])
            for label, (low, high) in OFFSET_BINS_MM.items()
        }
    else:
        summary["by_offset"] = {
            f"{offset:g}": _statistics([row for row in rows if row[6] == "offset" and row[0] == offset])
            for offset in START_OFFSETS_MM
        }
        summary["by_start"] = {kind: _statistics([row for row in rows if row[6] == kind]) for kind in ("offset", "landmarks")}
    return summary


def _with_targets(summaries: dict[str, dict]) -> dict[str, dict]:
    """Add to each method's summary ``targets``: ``{key: {"target", "limit", "met"}}`` (see :data:`TARGETS`).

    A refinement ``"base+refinement"`` whose base method also ran gets ``added_time_s`` too
    (``"value"``: its median time minus the base's, s). A failed median (None) misses its target.
    """
    for name, summary in summaries.items():
        targets = {}
        for key, (limit, target) in TARGETS.items():
            value = summary[key]
            met = value is not None and (value <= target if limit == "max" else value >= target)
            targets[key] = {"target": target, "limit": limit, "met": bool(met)}
        base = summaries.get(name.split("+")[0]) if "+" in name else None
        if base is not None and base["median_time_s"] is not None and summary["median_time_s"] is not None:
            added_s = round(summary["median_time_s"] - base["median_time_s"], 3)
            targets["added_time_s"] = {
                "target": REFINEMENT_MAX_ADDED_TIME_S, "limit": "max", "value": added_s,
                "met": bool(added_s <= REFINEMENT_MAX_ADDED_TIME_S),
            }
        summary["targets"] = targets
    return summaries


def _statistics(rows) -> dict:
    """Statistics of trial rows (offset mm, TRE mm, time s, verdict[, worst target mm, wrong level, ...])."""
    if not rows:
        empty = dict.fromkeys(
            ("median_tre_mm", "p90_tre_mm", "success_rate", "success_rate_all_targets", "wrong_level_rate",
             "max_tre_mm", "median_time_s")
        )
        return {**empty, "trials": 0, "failures": 0}
    tre_mm = np.array([row[1] for row in rows])
    worst_mm = np.array([row[4] if len(row) > 4 else row[1] for row in rows])
    finite = np.isfinite(tre_mm)
    return {
        "median_tre_mm": _rounded(np.median(tre_mm)),
        "p90_tre_mm": _rounded(np.percentile(tre_mm, 90, method="higher")),
        "success_rate": round(float(np.mean(tre_mm < SUCCESS_TRE_MM)), 3),
        "success_rate_all_targets": round(float(np.mean(worst_mm < SUCCESS_TRE_MM)), 3),
        "wrong_level_rate": round(float(np.mean([bool(row[5]) if len(row) > 5 else False for row in rows])), 3),
        "max_tre_mm": _rounded(np.max(worst_mm)),
        "median_time_s": _rounded(np.median([row[2] for row in rows])),
        "trials": len(rows),
        "failures": int(np.count_nonzero(~finite)),
    }


def _rounded(value: float) -> float | None:
    """Rounded to 3 decimals; None for an infinite value (a failed registration), which JSON lacks."""
    return round(float(value), 3) if np.isfinite(value) else None


# -- command line -----------------------------------------------------------------------------


def register_bench(bench_subparsers) -> None:
    """Add ``registration`` to the ``workbench bench`` sub-commands."""
    p = bench_subparsers.add_parser(
        "registration", help="TRE, success rate and run time of the automatic registrations on simulated cases"
    )
    p.add_argument(
        "--profile", choices=PROFILES, default="realistic",
        help="realistic (default): every simulated error source (workbench.phantom.error_model); "
        "ideal: the earlier error-free simulation, an upper bound",
    )
    p.add_argument(
        "--sources", default=None,
        help="realistic profile: comma-separated error sources, or 'all', each run alone and then together",
    )
    p.add_argument(
        "--cases", type=int, default=None,
        help=f"simulated cases (default 3 ideal, {REALISTIC_DEFAULTS['cases']} realistic)",
    )
    p.add_argument(
        "--trials", type=int, default=None,
        help=f"starts per case: ideal, random misalignments (default 5); realistic, per offset "
        f"{'/'.join(f'{v:g}' for v in START_OFFSETS_MM)} mm (default {REALISTIC_DEFAULTS['trials']})",
    )
    p.add_argument(
        "--landmark-trials", type=int, default=REALISTIC_DEFAULTS["landmark_trials"],
        help=f"realistic profile: starts per case from 6 landmarks with 2-3 mm FLE (default {REALISTIC_DEFAULTS['landmark_trials']})",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the cases and misalignments (default 0)")
    p.add_argument(
        "--methods", nargs="+", choices=sorted(METHODS), default=list(DEFAULT_METHODS),
        help=f"methods to run (default: {' '.join(DEFAULT_METHODS)})",
    )
    p.add_argument(
        "--posture-change", action="store_true",
        help=(
            f"move every vertebra between MRI and sweeps (up to {POSTURE_MAX_ROTATION_DEG:g} deg and "
            f"{POSTURE_MAX_TRANSLATION_MM:g} mm per axis, as in the demo case)"
        ),
    )
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.set_defaults(func=_cmd_bench_registration)


def _cmd_bench_registration(args: argparse.Namespace) -> int:
    import sys

    progress = None if args.json else (lambda message: print(message, file=sys.stderr, flush=True))
    profile = getattr(args, "profile", "ideal")
    realistic = profile == "realistic"
    cases = args.cases if args.cases is not None else (REALISTIC_DEFAULTS["cases"] if realistic else 3)
    trials = args.trials if args.trials is not None else (REALISTIC_DEFAULTS["trials"] if realistic else 5)
    sources = getattr(args, "sources", None)
    if sources is not None:
        sources = "all" if sources.strip() == "all" else tuple(name.strip() for name in sources.split(",") if name.strip())
    results = run_registration_benchmark(
        cases, trials, args.seed, args.methods, progress, posture_change=getattr(args, "posture_change", False),
        profile=profile, sources=sources, landmark_trials=getattr(args, "landmark_trials", 1),
    )
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{'method':<20} {'median TRE':>10} {'p90 TRE':>8} {'success':>8} {'time':>7}  targets")
    for name, row in results["methods"].items():
        missed = [key for key, target in row.get("targets", {}).items() if not target["met"]]
        print(
            f"{name:<20} {_text(row['median_tre_mm'], 'mm'):>10} {_text(row['p90_tre_mm'], 'mm'):>8} "
            f"{row['success_rate']:>8.0%} {_text(row['median_time_s'], 's'):>7}  "
            + ("missed: " + ", ".join(missed) if missed else "met")
        )
    return 0


def _text(value: float | None, unit: str) -> str:
    return "failed" if value is None else f"{value:.2f} {unit}"
