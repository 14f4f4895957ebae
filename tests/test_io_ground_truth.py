"""``ground_truth.json``: the typed reader and writer, and a clear error for each bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from workbench.errors import WorkbenchError
from workbench.frames import Transform
from workbench.io.ground_truth import (
    GROUND_TRUTH_FORMAT,
    ExpertPlan,
    GroundTruth,
    GroundTruthError,
    SweepTruth,
    read_ground_truth,
    write_ground_truth,
)


def _truth() -> GroundTruth:
    reference_to_mri = np.eye(4)
    reference_to_mri[:3, 3] = [1.5, -2.25, 30.0]
    tracker_to_mri = np.eye(4)
    tracker_to_mri[:3, :3] = [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    return GroundTruth(
        reference_to_mri=Transform.from_name("ReferenceToMri", reference_to_mri),
        tracker_to_mri=Transform.from_name("TrackerToMri", tracker_to_mri),
        spec={"seed": 7, "bmi": 28.0, "age_years": 55.0, "sweeps": ["transverse"]},
        vertebra_motion={"L4": ((0.5, -1.0, 0.25), (0.1, 0.2, -0.3))},
        landmarks_mri={"L4 body centre": np.array([0.0, 10.0, 20.0]), "L4 spinous process tip": np.array([0.1, 60.2, 21.0])},
        landmarks_mri_at_procedure={"L4 body centre": np.array([0.1, 10.2, 19.7])},
        landmarks_reference_exact={"L4 spinous process tip": np.array([1.0 / 3.0, 2.0, 3.0])},
        reference_landmark_fle_mm=1.0,
        targets_mri={"L4 right exiting nerve root": np.array([-25.0, 20.0, 15.0]),
                     "L4 left exiting nerve root": np.array([25.0, 20.0, 15.0])},
        expert_plans=(ExpertPlan("L4 right exiting nerve root", np.array([-25.0, 20.0, 15.0]), np.array([-40.0, 80.0, 20.0]),
                                 62.0, 90.0, "22G", 6.0, "paramedian in-plane"),),
        fat_thickness_mm=22.5,
        sweeps=(SweepTruth("sweeps/a.igs.mha", "linear", np.stack([np.eye(4), np.eye(4)])),),
    )


def test_round_trip_keeps_every_value_and_the_bytes(tmp_path):
    truth = _truth()
    path = write_ground_truth(truth, tmp_path / "ground_truth.json")
    back = read_ground_truth(path)
    assert np.array_equal(back.reference_to_mri.matrix, truth.reference_to_mri.matrix)
    assert np.array_equal(back.tracker_to_mri.matrix, truth.tracker_to_mri.matrix)
    assert list(back.targets_mri) == list(truth.targets_mri)
    assert np.array_equal(back.target_points_mri, truth.target_points_mri)
    assert back.vertebra_motion == truth.vertebra_motion
    assert back.expert_plan("L4 right exiting nerve root").needle_gauge == "22G"
    assert back.expert_plan("nowhere") is None
    assert back.landmarks_reference_exact["L4 spinous process tip"][0] == 1.0 / 3.0
    assert back.sweeps[0].true_image_to_mri.shape == (2, 4, 4)
    assert back.to_dict() == truth.to_dict()
    assert write_ground_truth(back, tmp_path / "again.json").read_bytes() == path.read_bytes()
    document = json.loads(path.read_text())
    assert document["format"] == GROUND_TRUTH_FORMAT
    assert list(document)[:3] == ["format", "ReferenceToMri", "TrackerToMri"]


def test_optional_keys_may_be_missing(tmp_path):
    document = {"format": GROUND_TRUTH_FORMAT, "ReferenceToMri": np.eye(4).ravel().tolist(),
                "targets_mri": {"t": [1, 2, 3]}, "landmarks_mri": {}}
    path = tmp_path / "minimal.json"
    path.write_text(json.dumps(document))
    truth = read_ground_truth(path)
    assert truth.expert_plans == () and truth.vertebra_motion == {} and truth.tracker_to_mri is None
    assert truth.target_points_mri.shape == (1, 3)


def _document() -> dict:
    return _truth().to_dict()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: "{", "ground truth is not valid JSON"),
        (lambda d: [1, 2], "ground truth must be a JSON object"),
        (lambda d: {**d, "format": "something-else/1"}, "not a workbench ground truth: format 'something-else/1'"),
        (lambda d: {k: v for k, v in d.items() if k != "format"}, "not a workbench ground truth: format None"),
        (lambda d: {k: v for k, v in d.items() if k != "ReferenceToMri"}, "ground truth has no 'ReferenceToMri'"),
        (lambda d: {k: v for k, v in d.items() if k != "targets_mri"}, "ground truth has no 'targets_mri'"),
        (lambda d: {**d, "ReferenceToMri": [1, 2, 3]}, r"ReferenceToMri must be 16 numbers \(4x4 row major\), got 3"),
        (lambda d: {**d, "ReferenceToMri": ["a"] * 16}, "ReferenceToMri must be 16 numbers"),
        (lambda d: {**d, "ReferenceToMri": [0.0] * 16}, "last row must be 0 0 0 1"),
        (lambda d: {**d, "TrackerToMri": [float("nan")] + [0.0] * 15}, "NaN or infinity"),
        (lambda d: {**d, "targets_mri": {"t": [1, 2]}}, r"targets_mri\['t'\] must be 3 finite numbers"),
        (lambda d: {**d, "targets_mri": [1, 2, 3]}, "targets_mri must map names to points"),
        (lambda d: {**d, "expert_plans": [{"target": "x"}]}, r"expert_plans\[0\] has no key"),
        (lambda d: {**d, "expert_plans": {}}, "expert_plans must be a list"),
        (lambda d: {**d, "vertebra_motion": {"L4": {"rotation_deg": [0, 0, 0]}}}, "vertebra_motion entries need"),
        (lambda d: {**d, "fat_thickness_mm": "thick"}, "fat_thickness_mm must be a finite number"),
        (lambda d: {**d, "sweeps": [{"sequence": "a"}]}, r"sweeps\[0\] needs sequence, probe"),
    ],
)
def test_bad_input_raises_an_error_naming_the_file(tmp_path, change, message):
    path = tmp_path / "ground_truth.json"
    changed = change(_document())
    path.write_text(changed if isinstance(changed, str) else json.dumps(changed))
    with pytest.raises(GroundTruthError, match=message) as caught:
        read_ground_truth(path)
    assert caught.value.path == str(path)
    assert isinstance(caught.value, WorkbenchError)


def test_an_unreadable_file_names_it(tmp_path):
    with pytest.raises(GroundTruthError, match="cannot read the ground truth") as caught:
        read_ground_truth(tmp_path / "missing.json")
    assert caught.value.path == str(tmp_path / "missing.json")
    (tmp_path / "latin1.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(GroundTruthError, match="cannot read the ground truth"):
        read_ground_truth(tmp_path / "latin1.json")


def test_transforms_must_be_the_named_ones():
    with pytest.raises(GroundTruthError, match="reference_to_mri must be ReferenceToMri"):
        GroundTruth(Transform.identity("Mri", "Reference"), {}, {})
