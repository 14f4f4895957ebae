"""The built-in demo case: a synthetic lumbar spine with MRI, tracked sweeps and ground truth.

:func:`generate_demo_case` writes a complete case bundle (``docs/case-bundle.md``):

- ``mri/dicom/``: the synthetic T2 SPACE-like MRI as a DICOM series (HFP, synthetic identifiers),
  and ``mri/t2_space.nrrd``, the same series as loaded back through workbench's DICOM loader;
- ``labels/labels.nrrd``: the MRI-time label map (``workbench.phantom.labels.Label`` values);
- ``sweeps/<name>.igs.mha`` + ``sweeps/<name>_DeviceSet.xml``: tracked freehand sweeps simulated
  from the *procedure-time* anatomy (optionally with per-vertebra posture change);
- landmarks (spinous and transverse process tips, facet joints, skin markers) in ``Mri`` and, as a
  user would pick them with some localisation error, in ``Reference``; nerve-root targets;
- ``ground_truth.json``: ``ReferenceToMri`` (4x4 row major), the per-vertebra motion, the exact
  landmark positions, an expert reference plan per target and the noise-free frame poses;
- ``previews/*.png``: mid-sagittal and axial MRI slices and three ultrasound frames.

:func:`default_demo_case` generates the default case once and caches it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from workbench import __version__
from workbench._atomic import current_umask
from workbench.equipment import NEEDLE_MARGIN_MM, shortest_needle
from workbench.errors import PhantomError
from workbench.io.ground_truth import ExpertPlan, GroundTruth, SweepTruth, write_ground_truth

__all__ = ["DemoCaseSpec", "DEFAULT_DEMO_CASE", "generate_demo_case", "default_demo_case", "demo_cache_dir", "demo_case_folder"]

ProgressCallback = Callable[[str], None]

#: Localisation error (RMS, mm, per axis) added to the Reference-frame landmarks a user would
#: pick with a tracked stylus or on ultrasound; the exact positions stay in ground_truth.json.
REFERENCE_LANDMARK_FLE_MM = 1.0


@dataclass(frozen=True)
class DemoCaseSpec:
    """What to generate. The same spec always gives the same bytes.

    Attributes
    ----------
    seed : int
        Seeds anatomy variation, MRI noise, sweeps, tracker noise and posture change.
    bmi : float
        Body-mass index, kg/m^2 (drives subcutaneous fat thickness).
    age_years : float
        Drives muscle echogenicity and disc degeneration.
    protocol : str
        MRI protocol preset (``"seed-3d-space"`` as in the clinical study, or ``"isotropic-1mm"``).
    posture_change : bool
        Move each vertebra by a small rigid motion between MRI and procedure.
    max_posture_rotation_deg, max_posture_translation_mm : float
        Bounds of the per-vertebra posture change (uniform in each axis).
    sweeps : tuple of str
        Names from :data:`SWEEP_PRESETS`; the default is a left paramedian sagittal and a transverse sweep.
    sweep_speed_mm_s : float
        Probe speed along the spine (a steady freehand sweep is 10-30 mm/s); with the 25 frames/s
        of the simulator it sets the number of frames.
    scoliosis_deg, transitional, foraminal_stenosis :
        Anatomical variants, passed to :class:`~workbench.phantom.anatomy.SpineParameters`
        (coronal L1-S1 angle in deg; ``"none"``/``"sacralised-L5"``/``"lumbarised-S1"``; 0..1).
        At their defaults they are left out of :meth:`digest` and of ``ground_truth.json``, so
        the cases generated before they existed keep their bytes and cache keys.
    """

    seed: int = 7
    bmi: float = 28.0
    age_years: float = 55.0
    protocol: str = "seed-3d-space"
    posture_change: bool = True
    max_posture_rotation_deg: float = 2.0
    max_posture_translation_mm: float = 1.0
    sweeps: tuple[str, ...] = ("paramedian-sagittal-left", "transverse")
    sweep_speed_mm_s: float = 20.0
    case_id: str = field(default="DEMO-LUMBAR-001")
    scoliosis_deg: float = 0.0
    transitional: str = "none"
    foraminal_stenosis: float = 0.0

    def as_dict(self) -> dict:
        """The spec as a JSON-able dict; the anatomical variants only where they differ from
        their defaults (see the class docstring)."""
        out = dataclasses.asdict(self)
        for name, default in _VARIANT_DEFAULTS.items():
            if out[name] == default:
                del out[name]
        return out

    def spine_parameters(self, **changes):
        """The :class:`~workbench.phantom.anatomy.SpineParameters` of this spec's anatomy (seed, BMI,
        age and the anatomical variants), with ``changes`` (e.g. ``spacing_mm``, ``levels``) applied."""
        from workbench.phantom.anatomy import SpineParameters

        values = {
            "seed": self.seed,
            "bmi": self.bmi,
            "age_years": self.age_years,
            "scoliosis_deg": self.scoliosis_deg,
            "transitional": self.transitional,
            "foraminal_stenosis": self.foraminal_stenosis,
        }
        return SpineParameters(**{**values, **changes})

    def digest(self) -> str:
        """Short digest of the spec, the software version and the MRI synthesis version (the
        cache key: a case cached before the MRI signal model changed is not reused)."""
        from workbench.phantom.mri import MRI_SYNTHESIS_VERSION

        text = json.dumps(
            {**self.as_dict(), "software": __version__, "mri_synthesis": MRI_SYNTHESIS_VERSION}, sort_keys=True
        )
        return hashlib.sha256(text.encode()).hexdigest()[:12]


_VARIANT_DEFAULTS = {"scoliosis_deg": 0.0, "transitional": "none", "foraminal_stenosis": 0.0}


DEFAULT_DEMO_CASE = DemoCaseSpec()


def demo_cache_dir() -> Path:
    """Folder for cached demo cases: ``$WORKBENCH_CACHE`` or ``$XDG_CACHE_HOME/workbench`` (``~/.cache/workbench``)."""
    if os.environ.get("WORKBENCH_CACHE"):
        return Path(os.environ["WORKBENCH_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "workbench"


def demo_case_folder(spec: DemoCaseSpec = DEFAULT_DEMO_CASE) -> Path:
    """Where :func:`default_demo_case` caches the case of ``spec`` (it holds ``case.json`` once generated)."""
    return demo_cache_dir() / f"demo-case-{spec.digest()}"


def default_demo_case(spec: DemoCaseSpec = DEFAULT_DEMO_CASE, progress: ProgressCallback | None = None) -> Path:
    """The demo case folder, generated on first use and cached (keyed by spec and version)."""
    folder = demo_case_folder(spec)
    if (folder / "case.json").is_file():
        return folder
    return generate_demo_case(folder, spec, progress=progress)


def _posture_motion(spec: DemoCaseSpec, levels: tuple[str, ...]) -> dict[str, tuple[tuple[float, ...], tuple[float, ...]]]:
    """Per-vertebra (rotation_deg xyz, translation_mm xyz), uniform within the spec's bounds."""
    if not spec.posture_change:
        return {}
    rng = np.random.default_rng([spec.seed, 101])
    motion = {}
    for level in levels:
        rotation = rng.uniform(-spec.max_posture_rotation_deg, spec.max_posture_rotation_deg, 3)
        translation = rng.uniform(-spec.max_posture_translation_mm, spec.max_posture_translation_mm, 3)
        motion[level] = (tuple(float(v) for v in rotation), tuple(float(v) for v in translation))
    return motion


def _expert_plan(name: str, target_lps: np.ndarray, entry_lps: np.ndarray) -> ExpertPlan:
    """A reference trajectory: entry to target, with the shortest catalogue needle that reaches
    with :data:`workbench.equipment.NEEDLE_MARGIN_MM` to spare (:func:`workbench.equipment.shortest_needle`)."""
    depth_mm = float(np.linalg.norm(target_lps - entry_lps))
    needle = shortest_needle(depth_mm, NEEDLE_MARGIN_MM)
    return ExpertPlan(
        target=name,
        target_lps_mm=np.asarray(target_lps, dtype=float),
        entry_lps_mm=np.asarray(entry_lps, dtype=float),
        insertion_depth_mm=depth_mm,
        needle_length_mm=needle.length_mm,
        needle_gauge=needle.gauge,
        injectate_ml=6.0,
        approach="paramedian in-plane",
    )


def _save_previews(folder: Path, mri_image, sweep_frames: list[tuple[str, np.ndarray]]) -> list[Path]:
    """PNG previews a person can glance at: MRI mid-sagittal and axial slices, three US frames."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    # Reorient so numpy axes are (z, y, x) with +x Left, +y Posterior, +z Superior.
    lps = sitk.DICOMOrient(mri_image, "LPS")
    volume = sitk.GetArrayFromImage(lps)
    spacing_x, spacing_y, spacing_z = lps.GetSpacing()
    written = []

    def save(name: str, image: np.ndarray, aspect: float, title: str) -> None:
        fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
        ax.imshow(image, cmap="gray", aspect=aspect, vmin=np.percentile(image, 1), vmax=np.percentile(image, 99.5))
        ax.set_title(title, fontsize=9)
        ax.axis("off")
        fig.tight_layout()
        path = folder / name
        fig.savefig(path)
        plt.close(fig)
        written.append(path)

    sagittal = volume[::-1, :, volume.shape[2] // 2]  # rows: superior first; columns: anterior -> posterior
    save("mri_mid_sagittal.png", sagittal, spacing_z / spacing_y, "MRI mid-sagittal (superior up, posterior right)")
    axial = volume[volume.shape[0] // 2]  # rows: anterior -> posterior; columns: patient right -> left
    save("mri_axial.png", axial, spacing_y / spacing_x, "MRI axial (radiological view, posterior down)")
    for name, frame in sweep_frames:
        save(f"us_{name}.png", frame, 1.0, f"US frame: {name}")
    return written


#: Sweep presets of the demo case: (kind, side). Each runs from S1 to L2, covering the L3-S1 targets.
SWEEP_PRESETS = {
    "paramedian-sagittal-left": ("paramedian-sagittal", "left"),
    "paramedian-sagittal-right": ("paramedian-sagittal", "right"),
    "transverse": ("transverse", "left"),
}
#: Where along the sweeps the preview frames are taken (fractions of the frame count),
#: handed out to the sweeps in turn.
PREVIEW_FRAME_FRACTIONS = (0.35, 0.5, 0.65)
#: Landmarks a user can pick on ultrasound or with a stylus (the others exist only on MRI).
_REACHABLE_LANDMARKS = ("spinous process", "transverse process", "facet joint", "skin marker")


def _new_staging_folder(out_dir: Path) -> Path:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise PhantomError("output folder exists and is not empty; choose a new folder for the demo case", out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    staging.chmod(0o777 & ~current_umask())  # mkdtemp makes 0700; the case folder gets normal permissions
    return staging


def generate_demo_case(
    out_dir: str | Path, spec: DemoCaseSpec = DEFAULT_DEMO_CASE, progress: ProgressCallback | None = None
) -> Path:
    """Write the demo case bundle into ``out_dir`` (a new or empty folder) and return it.

    Everything is written into a temporary folder beside ``out_dir`` and renamed into place at
    the end, so an interrupted run never leaves a half-written case behind.

    Parameters
    ----------
    out_dir : str or Path
    spec : DemoCaseSpec
    progress : callable(str), optional
        Called with a line of text before each stage.
    """
    from workbench.case import Attachment, Case, FileRef, Landmark, MriRef, SweepRef, Target, path_sha256, save_case
    from workbench.io.dicom import load_dicom_series
    from workbench.io.volume import save_volume
    from workbench.phantom.anatomy import build_phantom
    from workbench.phantom.mri import synthesize_t2, write_dicom_series
    from workbench.phantom.sweep import SweepSpec, default_reference_to_mri, default_tracker_to_mri, simulate_sweep

    say = progress or (lambda message: None)
    unknown = [name for name in spec.sweeps if name not in SWEEP_PRESETS]
    if unknown:
        raise PhantomError(f"unknown sweep preset(s) {unknown}; choose from {sorted(SWEEP_PRESETS)}")
    out_dir = Path(out_dir)
    staging = _new_staging_folder(out_dir)
    try:
        params = spec.spine_parameters()
        say(f"building the lumbar spine phantom (seed {spec.seed}, BMI {spec.bmi:g}, age {spec.age_years:g})")
        phantom = build_phantom(params)
        motion = _posture_motion(spec, tuple(phantom.vertebra_centres_lps))
        if motion:
            say("building the procedure-time anatomy (per-vertebra posture change)")
            procedure = build_phantom(dataclasses.replace(params, vertebra_motion=motion))
        else:
            procedure = phantom

        say(f"synthesising the T2 MRI ({spec.protocol}) and writing it as a DICOM series")
        mri_image = synthesize_t2(phantom, spec.protocol, seed=spec.seed)
        dicom_dir = staging / "mri" / "dicom"
        write_dicom_series(
            mri_image, dicom_dir, series_description="t2_space_cor", patient_position="HFP", case_id=spec.case_id, seed=spec.seed
        )
        mri = load_dicom_series(dicom_dir)
        mri_path = save_volume(mri, staging / "mri" / "t2_space.nrrd")
        labels_path = save_volume(phantom.labels, staging / "labels" / "labels.nrrd")

        sacrum_z_mm = float(phantom.vertebra_centres_lps["S1"][2])
        reference_to_mri = default_reference_to_mri(phantom, z_mm=sacrum_z_mm - 15.0)
        tracker_to_mri = default_tracker_to_mri(phantom, z_mm=float(phantom.vertebra_centres_lps["L3"][2]))
        sweeps, sweep_truth, simulated_sweeps = [], [], []
        for index, name in enumerate(spec.sweeps):
            kind, side = SWEEP_PRESETS[name]
            sweep_spec = SweepSpec.between_levels(
                phantom, "S1", "L2", kind=kind, side=side, speed_mm_s=spec.sweep_speed_mm_s, seed=spec.seed * 100 + index
            )
            say(f"simulating the {name} sweep ({sweep_spec.frame_count} frames)")
            simulated = simulate_sweep(
                phantom,
                sweep_spec,
                reference_to_mri=reference_to_mri,
                tracker_to_mri=tracker_to_mri,
                procedure_labels=procedure.labels,
                muscle_fat_fraction=phantom.muscle_fat_fraction,
            )
            sequence_path, device_set_path = simulated.write(staging / "sweeps", name)
            sweeps.append(
                SweepRef(
                    path=sequence_path.relative_to(staging).as_posix(),
                    sha256=path_sha256(sequence_path),
                    image_to_probe=simulated.probe.image_to_probe(),
                    calibration_error_mm=0.0,
                    device_set=FileRef(device_set_path.relative_to(staging).as_posix(), path_sha256(device_set_path)),
                )
            )
            sweep_truth.append(
                SweepTruth(
                    sequence=sequence_path.relative_to(staging).as_posix(),
                    probe=simulated.probe.name,
                    true_image_to_mri=np.asarray(simulated.true_image_to_mri, dtype=float),
                )
            )
            simulated_sweeps.append((name, simulated.sequence.images))

        say("placing landmarks and targets, writing ground truth and previews")
        rng = np.random.default_rng([spec.seed, 202])
        mri_to_reference = reference_to_mri.inverse()
        landmarks = [Landmark(name, "Mri", tuple(map(float, p)), pair=name) for name, p in phantom.landmarks_lps.items()]
        reference_exact = {}
        for name, point_at_procedure in procedure.landmarks_lps.items():
            if not any(word in name for word in _REACHABLE_LANDMARKS):
                continue
            exact = mri_to_reference.apply_to_points(point_at_procedure)
            reference_exact[name] = exact
            picked = exact + rng.normal(0.0, REFERENCE_LANDMARK_FLE_MM, 3)
            landmarks.append(Landmark(name, "Reference", tuple(map(float, picked)), pair=name))
        targets = [
            Target(name, "exiting nerve root, dorsal aspect (paravertebral block target)", tuple(map(float, p)))
            for name, p in phantom.targets_lps.items()
        ]
        ground_truth = GroundTruth(
            reference_to_mri=reference_to_mri,
            tracker_to_mri=tracker_to_mri,
            spec=spec.as_dict(),
            vertebra_motion=dict(motion),
            landmarks_mri=dict(phantom.landmarks_lps),
            landmarks_mri_at_procedure=dict(procedure.landmarks_lps),
            landmarks_reference_exact=reference_exact,
            reference_landmark_fle_mm=REFERENCE_LANDMARK_FLE_MM,
            targets_mri=dict(phantom.targets_lps),
            expert_plans=tuple(
                _expert_plan(name, phantom.targets_lps[name], phantom.skin_entry_hint_lps[name]) for name in phantom.targets_lps
            ),
            fat_thickness_mm=float(phantom.fat_thickness_mm),
            sweeps=tuple(sweep_truth),
        )
        ground_truth_path = write_ground_truth(ground_truth, staging / "ground_truth.json")
        preview_frames = []
        for i, fraction in enumerate(PREVIEW_FRAME_FRACTIONS):
            name, images = simulated_sweeps[i % len(simulated_sweeps)]
            index = int(fraction * (len(images) - 1))
            preview_frames.append((f"{name}_frame{index:03d}", images[index]))
        previews = _save_previews(staging / "previews", mri.image, preview_frames)

        def attachment(role: str, path: Path, description: str) -> Attachment:
            return Attachment(role, path.relative_to(staging).as_posix(), path_sha256(path), description)

        case = Case(
            case_id=spec.case_id,
            title=f"Synthetic lumbar spine (seed {spec.seed}, BMI {spec.bmi:g}) with tracked ultrasound",
            mri=MriRef(
                path=mri_path.relative_to(staging).as_posix(),
                sha256=path_sha256(mri_path),
                modality="MR",
                description=f"synthetic T2 SPACE-like, {spec.protocol}",
                size_px=tuple(int(v) for v in mri.size),
                spacing_mm=tuple(float(v) for v in mri.spacing_mm),
            ),
            sweeps=sweeps,
            landmarks=landmarks,
            targets=targets,
            attachments=[
                attachment("mri_dicom", dicom_dir, "the MRI as the DICOM series it was written as (HFP, synthetic identifiers)"),
                attachment("label_map", labels_path, "MRI-time label map, workbench.phantom.labels.Label values"),
                attachment("ground_truth", ground_truth_path, "ReferenceToMri, posture change, exact landmarks, expert plans"),
                *(attachment("preview", p, p.stem.replace("_", " ")) for p in previews),
            ],
            notes=(
                "Generated by `workbench demo-case`. Reference landmarks carry a simulated localisation error of "
                f"{REFERENCE_LANDMARK_FLE_MM:g} mm RMS per axis; the exact values are in ground_truth.json. "
                "ReferenceToMri is deliberately not in transforms: finding it is the registration's job."
            ),
        )
        save_case(case, staging)
        if out_dir.exists():
            out_dir.rmdir()  # empty, as _new_staging_folder checked
        staging.replace(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    say(f"demo case written to {out_dir}")
    return out_dir

