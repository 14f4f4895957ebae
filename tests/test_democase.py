"""The synthetic demo case: a complete, reproducible bundle whose ground truth holds together."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import SimpleITK as sitk

from workbench.case import load_case, path_sha256
from workbench.cli import main
from workbench.equipment import NEEDLE_MARGIN_MM
from workbench.errors import WorkbenchError
from workbench.frames import Transform
from workbench.io.dicom import load_dicom_series
from workbench.io.plus_config import read_device_set
from workbench.io.sequence import read_sequence
from workbench.phantom.democase import DemoCaseSpec, generate_demo_case

# Small but complete: both sweep kinds, posture change on, fast sweeps (few frames).
SPEC = DemoCaseSpec(seed=3, sweep_speed_mm_s=90.0)


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory):
    return generate_demo_case(tmp_path_factory.mktemp("demo") / "case", SPEC)


@pytest.fixture(scope="module")
def truth(case_dir):
    return json.loads((case_dir / "ground_truth.json").read_text())


def test_info_reports_a_case_with_counts(case_dir, capsys):
    assert main(["info", str(case_dir)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "case"
    assert info["targets"] == 8  # L3, L4, L5, S1 exiting roots, both sides
    assert info["sweeps"]["count"] == 2
    assert info["landmarks"] >= 40
    assert info["attachments"] == {"ground_truth": 1, "label_map": 1, "mri_dicom": 1, "preview": 5}


def test_mri_is_a_dicom_series_with_the_study_protocol(case_dir):
    case = load_case(case_dir)
    mri = load_dicom_series(case_dir / "mri" / "dicom")
    assert mri.size[:2] == (184, 184)
    assert 120 <= mri.size[2] <= 200  # the study's 80 slices extended from the bodies to behind the skin
    np.testing.assert_allclose(mri.spacing_mm, [420 / 184, 420 / 184, 1.0], atol=1e-3)
    assert mri.metadata["patient_position"] == "HFP"
    assert case.mri.size_px == mri.size
    # coronal slices: the slice normal is the patient's anterior-posterior axis
    normal = np.array(mri.direction).reshape(3, 3)[:, 2]
    assert abs(abs(normal[1]) - 1.0) < 1e-6


def test_sweeps_and_device_sets_read_back_and_match_the_calibration(case_dir):
    case = load_case(case_dir)
    for sweep in case.sweeps:
        sequence = read_sequence(case_dir / sweep.path)
        device_set = read_device_set(case_dir / sweep.device_set.path)
        np.testing.assert_allclose(device_set.image_to_probe().matrix, sweep.image_to_probe.matrix, atol=1e-9)
        assert len(sequence) > 20
        assert set(sequence.transforms) == {"ProbeToTracker", "ReferenceToTracker"}


def test_written_poses_agree_with_the_ground_truth(case_dir, truth):
    """ReferenceToTracker in the files is TrackerToMri^-1 @ ReferenceToMri plus tracker noise."""
    reference_to_mri = Transform.from_name("ReferenceToMri", np.reshape(truth["ReferenceToMri"], (4, 4)))
    tracker_to_mri = Transform.from_name("TrackerToMri", np.reshape(truth["TrackerToMri"], (4, 4)))
    expected = tracker_to_mri.inverse() @ reference_to_mri
    case = load_case(case_dir)
    sequence = read_sequence(case_dir / case.sweeps[0].path)
    ok = sequence.transform_status["ReferenceToTracker"]
    errors_mm = np.linalg.norm(sequence.transforms["ReferenceToTracker"][ok, :3, 3] - expected.translation, axis=1)
    assert np.sqrt(np.mean(errors_mm**2)) < 3.0  # 0.5 mm RMS noise, breathing up to ~1 mm
    # The noise-free frame poses recorded as truth agree with the chain written in the files:
    # ImageToMri = ReferenceToMri @ TrackerToReference @ ProbeToTracker @ ImageToProbe.
    true_image_to_mri = np.reshape(truth["sweeps"][0]["true_image_to_mri"], (-1, 4, 4))
    assert true_image_to_mri.shape[0] == len(sequence)
    image_to_probe = case.sweeps[0].image_to_probe
    centre_px = [sequence.image_size_px[0] / 2, sequence.image_size_px[1] / 2, 0.0]
    errors_mm = []
    for k in np.flatnonzero(ok & sequence.transform_status["ProbeToTracker"]):
        repository = sequence.repository(int(k))
        repository.set_transform(image_to_probe)
        repository.set_transform(reference_to_mri)
        from_files = repository.get("ImageToMri").apply_to_points(centre_px)
        truth_point = Transform(true_image_to_mri[k], "Image", "Mri").apply_to_points(centre_px)
        errors_mm.append(np.linalg.norm(from_files - truth_point))
    assert len(errors_mm) > 0.9 * len(sequence)
    assert np.sqrt(np.mean(np.square(errors_mm))) < 3.0  # tracker noise on two sensors, lever arm


def test_reference_landmarks_are_the_procedure_anatomy_seen_from_the_reference(case_dir, truth):
    reference_to_mri = Transform.from_name("ReferenceToMri", np.reshape(truth["ReferenceToMri"], (4, 4)))
    case = load_case(case_dir)
    picked = {lm.name: np.array(lm.point_mm) for lm in case.landmarks if lm.frame == "Reference"}
    assert picked and set(picked) == set(truth["landmarks_reference_exact"])
    errors = []
    for name, exact in truth["landmarks_reference_exact"].items():
        np.testing.assert_allclose(
            reference_to_mri.apply_to_points(exact), truth["landmarks_mri_at_procedure"][name], atol=1e-6
        )
        errors.append(picked[name] - exact)
    rms_per_axis = np.sqrt(np.mean(np.square(errors)))
    assert 0.6 < rms_per_axis < 1.4  # the stated 1 mm RMS localisation error
    # posture change: at least one vertebra moved, by no more than the spec's bounds
    assert truth["vertebra_motion"]
    for motion in truth["vertebra_motion"].values():
        assert max(abs(v) for v in motion["rotation_deg"]) <= SPEC.max_posture_rotation_deg
        assert max(abs(v) for v in motion["translation_mm"]) <= SPEC.max_posture_translation_mm


def test_the_typed_ground_truth_reads_back_what_was_written(case_dir, truth):
    from workbench.io.ground_truth import read_ground_truth, write_ground_truth

    typed = read_ground_truth(case_dir / "ground_truth.json")
    assert np.array_equal(typed.reference_to_mri.matrix.ravel(), truth["ReferenceToMri"])
    assert list(typed.targets_mri) == list(truth["targets_mri"])
    assert [p.target for p in typed.expert_plans] == [p["target"] for p in truth["expert_plans"]]
    assert set(typed.vertebra_motion) == set(truth["vertebra_motion"])
    assert typed.to_dict() == truth
    written = write_ground_truth(typed, case_dir.parent / "copy.json")
    assert written.read_bytes() == (case_dir / "ground_truth.json").read_bytes()


def test_expert_plans_reach_every_target_with_a_long_enough_needle(case_dir, truth):
    plans = truth["expert_plans"]
    assert {p["target"] for p in plans} == set(truth["targets_mri"])
    for plan in plans:
        depth = np.linalg.norm(np.subtract(plan["target_lps_mm"], plan["entry_lps_mm"]))
        assert plan["insertion_depth_mm"] == pytest.approx(depth)
        assert 20.0 < depth < 110.0
        assert plan["needle"]["length_mm"] >= depth + NEEDLE_MARGIN_MM or plan["needle"]["length_mm"] == 120.0
        assert plan["injectate_ml"] == 6.0


def test_previews_are_real_pictures(case_dir):
    previews = sorted((case_dir / "previews").glob("*.png"))
    assert len(previews) == 5
    for path in previews:
        pixels = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        assert pixels.shape[0] >= 300 and pixels.std() > 10, path.name


def test_same_spec_same_bytes(case_dir, tmp_path):
    again = generate_demo_case(tmp_path / "again", SPEC)
    for relative in ("mri/dicom", "labels/labels.nrrd", "ground_truth.json", "sweeps"):
        assert path_sha256(again / relative) == path_sha256(case_dir / relative), relative


def test_refuses_a_non_empty_folder_and_leaves_nothing_on_failure(tmp_path, monkeypatch):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(WorkbenchError, match="not empty"):
        generate_demo_case(tmp_path / "busy", SPEC)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"

    def broken(*args, **kwargs):
        raise RuntimeError("simulator crashed")

    monkeypatch.setattr("workbench.phantom.sweep.simulate_sweep", broken)
    with pytest.raises(RuntimeError, match="simulator crashed"):
        generate_demo_case(tmp_path / "new", dataclasses.replace(SPEC, posture_change=False))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]


def test_unknown_sweep_preset_is_a_clear_error(tmp_path):
    with pytest.raises(WorkbenchError, match="unknown sweep preset"):
        generate_demo_case(tmp_path / "x", dataclasses.replace(SPEC, sweeps=("diagonal",)))
