"""The headless demo pipeline behind ``make demo`` / ``workbench demo``.

Until the notebooks exist, the demo runs the workbench headless and says what it did at every
step. First on the built-in synthetic case (``workbench.phantom.democase``, generated on first
use and cached):

1. copy the demo case bundle (the cached case is never edited), load its MRI from the DICOM
   series it was written as;
2. read the first tracked sweep and its PLUS device set, and reconstruct it into a volume
   in the Reference frame as PLUS would;
3. register the MRI to the Reference frame from the paired landmarks, refine by bone-surface
   ICP on the sweep, and report both against the case's ground truth;
4. refine the ICP result per vertebra (piecewise-rigid, one ``ReferenceToMri`` per level) and
   report the TRE per level of both against each vertebra's procedure-time position (the demo
   case moves every vertebra between MRI and procedure); the plans still use one transform;
5. accept the registration into the working copy's ``case.json`` (its ``registrations``, made
   current), then build the expert plans with it and write every export (plan.json, Slicer
   markups, ITK transforms, CSV, HTML report): plan.json names that registration, its method,
   FRE and predicted TRE; the ground truth only measures the errors.

Then, where the public data of ``../shared/data`` is present:

6. list the DICOM series of the MRI folder and de-identify it into the output folder;
7. load the de-identified series (LPS geometry, warnings, a pixel digest that survives
   de-identification);
8. read the PLUS device set (``ImageToProbe`` calibration) and the tracked sweep;
9. compute every frame's ``ImageToReference`` through the transform repository and the extent
   of the swept image corners in the Reference frame;
10. write a case bundle holding the MRI volume, the sweep and the calibration, and load it back.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import TextIO

import numpy as np

from workbench.errors import WorkbenchError
from workbench.frames import Transform

DEMO_CASE_ID = "DEMO-SPINE-PHANTOM"
#: Voxel size of the demo's sweep reconstruction, mm (the device set asks for 0.5 mm; 1 mm keeps
#: the demo quick and is still finer than the MRI's 2.3 mm pixels).
DEMO_VOLUME_SPACING_MM = 1.0
MRI_SUBDIR = Path("mri-dicom-dcm_qa_decubitus") / "HFS"
SWEEP_FILE = Path("plus-spine-phantom-freehand") / "SpinePhantomFreehand.igs.mha"
DEVICE_SET_FILE = Path("plus-spine-phantom-freehand") / "PlusDeviceSet_VolumeReconstructionOnly_SpinePhantom_NN_MEAN.xml"


def default_shared_data() -> Path:
    """``$WORKBENCH_SHARED_DATA`` or ``../shared/data`` beside the checkout."""
    env = os.environ.get("WORKBENCH_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


class _Steps:
    """Numbered, timed progress lines on a stream."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.number = 0
        self.started = time.perf_counter()

    def say(self, text: str) -> None:
        self.number += 1
        elapsed_s = time.perf_counter() - self.started
        print(f"[{self.number}] {text}  ({elapsed_s:.1f} s)", file=self.stream, flush=True)

    def detail(self, text: str) -> None:
        print(f"    {text}", file=self.stream, flush=True)


def image_corners_px(width_px: int, height_px: int) -> np.ndarray:
    """(4, 3) pixel-centre positions of the four image corners in the Image frame (z = 0)."""
    w, h = width_px - 1, height_px - 1
    return np.array([[0, 0, 0], [w, 0, 0], [0, h, 0], [w, h, 0]], dtype=float)


def sweep_poses(sequence, image_to_probe: Transform) -> tuple[list[Transform], list[int]]:
    """``ImageToReference`` for every frame whose needed transforms are OK.

    Returns the transforms and the indices of the frames skipped for an INVALID transform.
    """
    poses, skipped = [], []
    for index in range(len(sequence)):
        repository = sequence.repository(index)
        repository.set_transform(image_to_probe)
        if not repository.has("ImageToReference"):
            skipped.append(index)
            continue
        poses.append(repository.get("ImageToReference"))
    return poses, skipped


_DEMO_MARKER = ".workbench-demo-output"


def _fresh_demo_folder(out_dir: Path) -> Path:
    """Create ``out_dir`` for demo output, clearing an earlier demo run (and nothing else).

    A non-empty folder that a demo run did not create is refused, so the demo can never
    delete a user's work.
    """
    import shutil

    if out_dir.exists() and any(out_dir.iterdir()):
        if not (out_dir / _DEMO_MARKER).is_file():
            raise WorkbenchError("output folder is not empty and was not made by `workbench demo`; choose another", out_dir)
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / _DEMO_MARKER).write_text("created by workbench demo; the folder is replaced on the next run\n")
    return out_dir


def run_demo(
    out_dir: Path,
    shared_data: Path | None = None,
    stream: TextIO = sys.stdout,
    demo_spec=None,
) -> dict:
    """Run the headless pipeline; returns a summary of both parts.

    Parameters
    ----------
    out_dir : Path
        Folder for the reconstructed volume, the de-identified MRI and the case bundle. Created;
        output of an earlier demo run in it is replaced, any other non-empty folder is refused.
    shared_data : Path, optional
        Folder of the shared public data. Default :func:`default_shared_data`, skipped with a
        note when absent; a folder given explicitly must exist.
    demo_spec : workbench.phantom.democase.DemoCaseSpec, optional
        Which synthetic case to open (default: the built-in one).
    """
    from workbench.phantom.democase import DEFAULT_DEMO_CASE

    if shared_data is not None and not Path(shared_data).is_dir():
        raise WorkbenchError("shared demo data not found (set WORKBENCH_SHARED_DATA or --shared-data)", shared_data)
    out_dir = _fresh_demo_folder(Path(out_dir))
    steps = _Steps(stream)
    summary = {"demo_case": _demo_case_part(out_dir, steps, demo_spec or DEFAULT_DEMO_CASE)}
    shared_data = Path(shared_data) if shared_data is not None else default_shared_data()
    if not shared_data.is_dir():
        steps.say(f"Public data not found at {shared_data}: skipped the PLUS/DICOM part")
        return summary
    summary["public_data"] = _public_data_part(out_dir, steps, shared_data)
    return summary


def _working_copy(cached: Path, out_dir: Path) -> Path:
    """A copy of the cached demo case in ``out_dir/demo-case``, where the demo saves its registration."""
    import shutil

    copy = out_dir / "demo-case"
    shutil.copytree(cached, copy)
    return copy


def _demo_case_part(out_dir: Path, steps: "_Steps", spec) -> dict:
    """Copy the synthetic demo case, load its DICOM MRI, reconstruct its first sweep, register, accept, plan."""
    from workbench.case import load_case
    from workbench.io.dicom import load_dicom_series
    from workbench.io.plus_config import read_device_set
    from workbench.io.sequence import read_sequence
    from workbench.phantom.democase import default_demo_case
    from workbench.reconstruction.reconstruct import reconstruct_volume

    cached_dir = default_demo_case(spec, progress=steps.detail)
    case_dir = _working_copy(cached_dir, out_dir)
    case = load_case(case_dir)
    steps.say(f"Opened the built-in demo case {case.case_id} at {cached_dir}")
    steps.detail(f"working copy (the cached case is never edited): {case_dir}")
    steps.detail(case.title)
    steps.detail(f"{len(case.landmarks)} landmarks, {len(case.targets)} targets, {len(case.sweeps)} tracked sweeps")

    dicom = next(a for a in case.attachments if a.role == "mri_dicom")
    mri = load_dicom_series(case_dir / dicom.path)
    steps.say(f"Loaded the MRI from its DICOM series ({mri.metadata.get('patient_position')}, {len(mri.warnings)} warnings)")
    steps.detail(f"size {list(mri.size)}, spacing {np.round(mri.spacing_mm, 3).tolist()} mm")

    sweep = case.sweeps[0]
    sequence = read_sequence(case_dir / sweep.path)
    device_set = read_device_set(case_dir / sweep.device_set.path)
    config = dataclasses.replace(device_set.volume_reconstruction, output_spacing_mm=(DEMO_VOLUME_SPACING_MM,) * 3)
    result = reconstruct_volume(sequence, device_set.image_to_probe(), config)
    volume_path = result.write(out_dir / "demo_sweep_volume.mha")
    covered = float(result.covered.mean())
    steps.say(f"Reconstructed {Path(sweep.path).name} in the Reference frame as PLUS would, at {DEMO_VOLUME_SPACING_MM:g} mm")
    steps.detail(
        f"{result.frames_inserted} frames in, {result.frames_skipped} skipped (INVALID); "
        f"{list(result.grid.size_px)} voxels of {result.grid.spacing_mm[0]:g} mm, {covered:.0%} hit by a frame"
    )
    steps.detail(f"written to {volume_path}")
    registration, saved = _register_demo_case(case, case_dir, sequence, device_set.image_to_probe(), steps)

    from workbench.case import save_case
    from workbench.case.model import with_registration
    from workbench.planning.cli import build_plans

    save_case(with_registration(case, saved), case_dir)
    plans = build_plans(case_dir, out_dir / "plans", author="workbench demo", expert=True)
    steps.say(f"Accepted the registration into the working copy's case.json, planned the expert trajectories with it "
              f"and wrote every export to {out_dir / 'plans'}")
    steps.detail(
        f"registration {saved.registration_id}: {saved.method}, FRE {saved.fre_mm:.2f} mm on the case's landmarks, "
        f"largest predicted TRE {max(saved.tre_mm.values()):.2f} mm"
    )
    for plan in plans["plans"]:
        steps.detail(json.dumps(plan))
    registration["registration_id"] = saved.registration_id
    return {
        "case": str(cached_dir),
        "working_case": str(case_dir),
        "landmarks": len(case.landmarks),
        "targets": len(case.targets),
        "sweep_volume": str(volume_path),
        "frames_inserted": result.frames_inserted,
        "frames_skipped": result.frames_skipped,
        "registration": registration,
        "plans": plans["plans"],
    }


def _register_demo_case(case, case_dir: Path, sequence, image_to_probe, steps: "_Steps") -> dict:
    """The registration pipeline on the demo case: landmarks, bone-surface ICP on the sweep, then
    one transform per vertebra; the TRE of each step against the ground truth.

    The demo case stores no level map, so the MRI-time phantom is rebuilt from the spec in the
    ground truth for the per-vertebra step.

    Returns
    -------
    dict
        ``"landmarks_fre_mm"``, ``"landmarks_median_tre_mm"``, ``"icp_median_tre_mm"``, and from
        :func:`_tre_by_level`: ``"icp_tre_by_level_mm"``, ``"piecewise_tre_by_level_mm"``,
        ``"piecewise_fallbacks"``.
    SavedRegistration
        The pipeline's result as the case keeps it once accepted: FRE of its ``ReferenceToMri`` on
        the case's landmark pairs, the landmark fit's predicted TRE, and in ``provenance`` the
        median error at the targets against the ground truth (``"median_error_vs_ground_truth_mm"``).
    """
    from workbench.case.labels import read_case_label_map
    from workbench.io.ground_truth import read_ground_truth
    from workbench.phantom.anatomy import SpineParameters, build_phantom
    from workbench.registration.landmarks import pair_landmarks
    from workbench.registration.piecewise import mri_bone_points_by_level
    from workbench.registration.pipeline import (
        RegistrationInputs,
        RegistrationSettings,
        per_vertebra_result,
        run_registration_pipeline,
        stage_transform,
    )
    from workbench.registration.result import saved_registration
    from workbench.registration.surface import mri_bone_points, us_bone_points

    truth = read_ground_truth(case_dir / next(a.path for a in case.attachments if a.role == "ground_truth"))
    targets = truth.target_points_mri
    true_targets_reference = truth.reference_to_mri.inverse().apply_to_points(targets)

    def tre_mm(transform) -> float:
        return float(np.median(np.linalg.norm(transform.apply_to_points(true_targets_reference) - targets, axis=1)))

    # With its table (a sidecar), or, the demo case having ground truth, in the workbench encoding.
    label_map = read_case_label_map(case, case_dir)
    spec = truth.spec
    phantom = build_phantom(SpineParameters(seed=spec["seed"], bmi=spec["bmi"], age_years=spec["age_years"]))
    pairs = pair_landmarks(case.landmarks)
    points_reference = us_bone_points(sequence, image_to_probe)  # frames with INVALID poses are skipped
    inputs = RegistrationInputs(
        landmarks=pairs,
        targets_mri=truth.targets_mri,
        us_points_reference=points_reference,
        mri_points=mri_bone_points(label_map),
        mri_points_by_level=mri_bone_points_by_level(label_map, phantom.levels),
    )
    result = run_registration_pipeline(inputs, RegistrationSettings(("bone-icp", "piecewise")))
    by_landmarks, by_surface = result.provenance["stages"][:2]
    landmarks_transform, icp_transform = stage_transform(result, "landmarks"), stage_transform(result, "bone-icp")
    steps.say(f"Registered MRI to Reference from {len(pairs.names)} paired landmarks")
    steps.detail(
        f"FRE {by_landmarks['fre_mm']:.2f} mm; median predicted TRE {np.median(list(by_landmarks['predicted_tre_mm'].values())):.2f} mm; "
        f"median TRE at the nerve-root targets against the ground truth {tre_mm(landmarks_transform):.2f} mm"
    )
    steps.say(f"Refined it by bone-surface ICP on {len(points_reference)} bone echoes of the sweep")
    steps.detail(
        f"median TRE at the targets {tre_mm(icp_transform):.2f} mm in {by_surface['run_time_s']:.1f} s ({by_surface['message']})"
    )
    saved = saved_registration(result, landmarks=pairs)
    saved = dataclasses.replace(saved, provenance={**saved.provenance, "median_error_vs_ground_truth_mm": tre_mm(result.transform)})
    summary = {
        "landmarks_fre_mm": by_landmarks["fre_mm"],
        "landmarks_median_tre_mm": tre_mm(landmarks_transform),
        "icp_median_tre_mm": tre_mm(icp_transform),
        **_tre_by_level(truth, icp_transform, per_vertebra_result(result), steps),
    }
    return summary, saved


def _tre_by_level(truth, icp_transform: Transform, piecewise, steps: "_Steps") -> dict:
    """Per-level TRE of the rigid and the per-vertebra transforms against the ground truth.

    A target's true procedure-time position in ``Reference`` is its MRI position moved by its
    vertebra's posture change (``vertebra_motion``, about the body centre) and mapped by the
    inverse of the true ``ReferenceToMri``.

    Returns
    -------
    dict
        ``"icp_tre_by_level_mm"`` and ``"piecewise_tre_by_level_mm"``: level -> mean TRE over that
        level's targets, mm; ``"piecewise_fallbacks"``: levels that kept the rigid transform, why.
    """
    from workbench.phantom.anatomy import vertebra_motion_matrix
    from workbench.registration.piecewise import level_of_target

    rigid_by_level, piecewise_by_level = {}, {}
    for name, target_mri in truth.targets_mri.items():
        level = level_of_target(name)
        motion = truth.vertebra_motion.get(level)
        moved_mri = np.asarray(target_mri, float)
        if motion is not None:
            rotation_deg, translation_mm = motion
            matrix = vertebra_motion_matrix(rotation_deg, translation_mm, truth.landmarks_mri[f"{level} body centre"])
            moved_mri = matrix[:3, :3] @ moved_mri + matrix[:3, 3]
        target_reference = truth.reference_to_mri.inverse().apply_to_points(moved_mri)
        for transform, errors in ((icp_transform, rigid_by_level), (piecewise.transform_for_target(name), piecewise_by_level)):
            errors.setdefault(level, []).append(float(np.linalg.norm(transform.apply_to_points(target_reference) - target_mri)))
    rigid_tre = {level: float(np.mean(values)) for level, values in rigid_by_level.items()}
    piecewise_tre = {level: float(np.mean(values)) for level, values in piecewise_by_level.items()}
    moved = "moved" if truth.vertebra_motion else "no posture change in this case"
    steps.say(f"Refined the ICP result per vertebra (piecewise-rigid, {len(piecewise.transforms)} levels) in {piecewise.run_time_s:.1f} s")
    steps.detail(
        f"TRE per level, rigid ICP -> per-vertebra, against each vertebra's procedure-time position ({moved}): "
        + ", ".join(f"{level} {rigid_tre[level]:.2f} -> {piecewise_tre[level]:.2f} mm" for level in rigid_tre)
    )
    for level, why in piecewise.fallbacks.items():
        steps.detail(f"{level} kept the rigid transform: {why}")
    steps.detail("the plans below use one ReferenceToMri per case, so they do not use the per-vertebra transforms")
    return {
        "icp_tre_by_level_mm": rigid_tre,
        "piecewise_tre_by_level_mm": piecewise_tre,
        "piecewise_fallbacks": dict(piecewise.fallbacks),
    }


def _public_data_part(out_dir: Path, steps: "_Steps", shared_data: Path) -> dict:
    """The foundation on real public data: DICOM de-identification, PLUS sweep, a case bundle."""
    from workbench.anonymize import anonymize_folder
    from workbench.case import Case, MriRef, SweepRef, add_file, describe_case, load_case, save_case
    from workbench.io.dicom import list_series, load_dicom_series
    from workbench.io.plus_config import read_device_set
    from workbench.io.sequence import read_sequence, write_sequence
    from workbench.io.volume import save_volume

    if not shared_data.is_dir():
        raise WorkbenchError("shared demo data not found (set WORKBENCH_SHARED_DATA or --shared-data)", shared_data)
    case_dir = out_dir / "case"
    staging_dir = out_dir / "staging"

    mri_dir = shared_data / MRI_SUBDIR
    series = list_series(mri_dir)
    steps.say(f"Found {len(series)} DICOM series in {mri_dir}")
    for s in series:
        steps.detail(f"{s.modality} '{s.description}': {s.size} voxels, {s.orientation_label}, patient position {s.patient_position}")

    anonymized_dir = out_dir / "mri-deidentified"
    report = anonymize_folder(mri_dir, anonymized_dir, case_id=DEMO_CASE_ID)
    steps.say(f"De-identified the MRI into {anonymized_dir} (PS3.15 basic profile)")
    steps.detail(json.dumps(report.to_dict()))

    original = load_dicom_series(mri_dir)
    mri = load_dicom_series(anonymized_dir)
    if mri.source_digest != original.source_digest:
        raise WorkbenchError("de-identification changed the pixel data or geometry", anonymized_dir)
    steps.say("Loaded the de-identified series in LPS mm (pixels and geometry identical to the original)")
    steps.detail(f"size {list(mri.size)}, spacing {np.round(mri.spacing_mm, 4).tolist()} mm")
    steps.detail(f"origin {np.round(mri.origin_lps_mm, 3).tolist()} mm (LPS), digest {mri.source_digest[:16]}...")
    for warning in mri.warnings:
        steps.detail(f"warning: {warning}")

    device_set = read_device_set(shared_data / DEVICE_SET_FILE)
    image_to_probe = device_set.image_to_probe()
    calibration_error = next(
        (d.error for d in device_set.coordinate_definitions if d.name == image_to_probe.name), None
    )
    pixel_mm = image_to_probe.scale[:2]
    steps.say(f"Read the ultrasound calibration ImageToProbe from {DEVICE_SET_FILE.name}")
    steps.detail(f"pixel size {pixel_mm[0]:.4f} x {pixel_mm[1]:.4f} mm, calibration error {calibration_error}")

    sequence = read_sequence(shared_data / SWEEP_FILE)
    width_px, height_px = sequence.image_size_px
    steps.say(f"Read the tracked sweep: {len(sequence)} frames of {width_px}x{height_px} px")
    for name, status in sequence.transform_status.items():
        steps.detail(f"{name}: {int(status.sum())} OK, {int((~status).sum())} INVALID")

    poses, skipped = sweep_poses(sequence, image_to_probe)
    corners_reference = np.vstack([pose.apply_to_points(image_corners_px(width_px, height_px)) for pose in poses])
    extent_mm = corners_reference.max(axis=0) - corners_reference.min(axis=0)
    image_centres = np.array([pose.apply_to_points([width_px / 2, height_px / 2, 0.0]) for pose in poses])
    travel_mm = float(np.linalg.norm(np.diff(image_centres, axis=0), axis=1).sum())
    steps.say(f"Computed ImageToReference = ProbeToReference @ ImageToProbe for {len(poses)} frames")
    steps.detail(f"{len(skipped)} frames skipped for an INVALID transform")
    steps.detail(f"swept image corners span {np.round(extent_mm, 1).tolist()} mm in Reference")
    steps.detail(f"image centre travelled {travel_mm:.1f} mm")

    mri_file = staging_dir / "mri.nrrd"
    save_volume(mri, mri_file)
    sweep_file = staging_dir / "sweep.igs.mha"
    write_sequence(sequence, sweep_file, compress=True)
    mri_relative, mri_sha256 = add_file(case_dir, mri_file, "mri")
    sweep_relative, sweep_sha256 = add_file(case_dir, sweep_file, "sweep")
    case = Case(
        case_id=DEMO_CASE_ID,
        title="Demo: PLUS spine phantom sweep with a public MRI series (not the same subject)",
        mri=MriRef(
            path=mri_relative,
            sha256=mri_sha256,
            modality="MR",
            description=str(mri.metadata.get("series_description", "")),
            size_px=tuple(int(v) for v in mri.size),
            spacing_mm=tuple(float(v) for v in mri.spacing_mm),
        ),
        sweeps=[
            SweepRef(
                path=sweep_relative,
                sha256=sweep_sha256,
                image_to_probe=image_to_probe,
                calibration_error_mm=calibration_error,
            )
        ],
        notes="Generated by `workbench demo`. The MRI and the sweep are unrelated, so there is no ReferenceToMri.",
    )
    save_case(case, case_dir)
    reloaded = load_case(case_dir)
    summary = describe_case(case_dir)
    steps.say(f"Wrote and re-loaded the case bundle {case_dir} (schema version {reloaded.schema_version})")
    steps.detail(json.dumps(summary))
    return summary
