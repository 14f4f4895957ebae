"""The headless demo pipeline behind ``make demo`` / ``workbench demo``.

Until the built-in phantom case and the notebooks exist, the demo runs the workbench's
foundation on the public data in ``../shared/data`` and says what it did at every step:

1. list the DICOM series of the MRI folder and de-identify it into the output folder;
2. load the de-identified series (LPS geometry, warnings, a pixel digest that survives
   de-identification);
3. read the PLUS device set (``ImageToProbe`` calibration) and the tracked sweep;
4. compute every frame's ``ImageToReference`` through the transform repository and the extent
   of the swept image corners in the Reference frame;
5. write a case bundle holding the MRI volume, the sweep and the calibration, and load it back.
"""

from __future__ import annotations

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


def run_demo(out_dir: Path, shared_data: Path | None = None, stream: TextIO = sys.stdout) -> dict:
    """Run the headless pipeline; returns the summary it prints last.

    Parameters
    ----------
    out_dir : Path
        Folder for the de-identified MRI and the case bundle. Created; output of an earlier
        demo run in it is replaced, any other non-empty folder is refused.
    shared_data : Path, optional
        Folder of the shared public data (default :func:`default_shared_data`).
    """
    from workbench.anonymize import anonymize_folder
    from workbench.case import Case, MriRef, SweepRef, add_file, describe_case, load_case, save_case
    from workbench.io.dicom import list_series, load_dicom_series
    from workbench.io.plus_config import read_device_set
    from workbench.io.sequence import read_sequence, write_sequence
    from workbench.io.volume import save_volume

    shared_data = Path(shared_data) if shared_data else default_shared_data()
    if not shared_data.is_dir():
        raise WorkbenchError("shared demo data not found (set WORKBENCH_SHARED_DATA or --shared-data)", shared_data)
    out_dir = _fresh_demo_folder(Path(out_dir))
    case_dir = out_dir / "case"
    staging_dir = out_dir / "staging"
    steps = _Steps(stream)

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
