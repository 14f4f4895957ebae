"""Honest safety: every report says which structure groups it checked and which not, and why;
a group that was not checked never lets a path read "ok" (at best "incomplete"), in every export.

Fixtures: the phantom's label map (every class of the workbench table; the "full phantom"), the same
anatomy re-encoded as a segmentation without vessels, cropped so the path leaves it, and a small
hand-made map (1 mm voxels, LPS = index) whose edge lies a known distance from the path.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from workbench.anatomy import WORKBENCH_TABLE, Label, LabelMap
from workbench.equipment import shortest_needle
from workbench.errors import PlanError
from workbench.phantom.anatomy import SpineParameters, build_phantom
from workbench.planning.export import load_plan, plan_to_dict, read_plan_document, write_plan_bundle
from workbench.planning.model import NeedleSpec, Plan, Trajectory
from workbench.planning.mri_checks import BodyMask, check_path
from workbench.planning.report import VolumeSampler
from workbench.planning.safety import (
    STATUS_ORDER,
    STRUCTURE_GROUPS,
    SafetyReport,
    SafetyThresholds,
    check_trajectory,
    suggest_entries,
)

TARGET = "L4 left exiting nerve root, dorsal aspect"
NEEDLE_RADIUS_MM = 0.718 / 2  # 22G
HALF_DIAGONAL_1MM = np.sqrt(3) / 2


@pytest.fixture(scope="module")
def phantom():
    return build_phantom(SpineParameters(seed=3, spacing_mm=1.0, levels=("L3", "L4", "L5")))


@pytest.fixture(scope="module")
def trajectory(phantom) -> Trajectory:
    """The phantom's own clear path to the L4 left root (its skin entry hint)."""
    target, entry = phantom.targets_lps[TARGET], phantom.skin_entry_hint_lps[TARGET]
    return Trajectory("L4 left", TARGET, target, entry, shortest_needle(float(np.linalg.norm(entry - target)), 10.0))


def _body_around(label_map: LabelMap, trajectory: Trajectory, margin_mm: float = 40.0) -> BodyMask:
    """The body (every label but AIR) of ``label_map`` in a box around the path: stands in for the MRI's."""
    ends = np.array([trajectory.entry_lps_mm, trajectory.target_lps_mm])
    return BodyMask.from_label_map(label_map, ends.min(axis=0) - margin_mm, ends.max(axis=0) + margin_mm)


@pytest.fixture(scope="module")
def body(phantom, trajectory) -> BodyMask:
    return _body_around(phantom.label_map, trajectory)


def _without(label_map: LabelMap, names: tuple[str, ...]) -> LabelMap:
    """A segmentation that never labelled ``names``: their voxels become soft tissue and its table lacks them."""
    dropped = label_map.values_of(names)
    values = np.where(np.isin(label_map.array, dropped), int(Label.SOFT_TISSUE), label_map.array).astype(np.uint8)
    table = {value: name for value, name in WORKBENCH_TABLE.items() if value not in dropped}
    return LabelMap(values, table, label_map.mri_voxel_to_mri)


def test_the_full_phantom_is_ok_with_every_structure_group_checked(phantom, trajectory, body):
    report = check_trajectory(trajectory, phantom.label_map, body=body)
    assert report.status == "ok" and report.reasons == ()
    assert report.checked_structures == STRUCTURE_GROUPS and report.unchecked_structures == {}
    assert STRUCTURE_GROUPS == ("nerve root", "radicular artery", "dura/CSF", "aorta/IVC", "disc", "kidney", "bone", "skin/body")
    document = report.to_dict()
    assert document["structures_checked"] == list(STRUCTURE_GROUPS) and document["structures_not_checked"] == []


def test_a_label_map_without_vessels_is_incomplete_and_lists_them_as_absent(phantom, trajectory, body):
    full = check_trajectory(trajectory, phantom.label_map, body=body)
    report = check_trajectory(trajectory, _without(phantom.label_map, ("RADICULAR_ARTERY", "AORTA", "IVC")), body=body)
    assert report.status == "incomplete"
    missing = report.unchecked_structures
    assert set(missing) == {"radicular artery", "aorta/IVC"}
    assert {(c.reason, c.detail) for c in missing.values()} == {("absent", "absent from the label map")}
    assert report.reasons == ("not checked: radicular artery, aorta/IVC (absent from the label map)",)
    assert set(report.checked_structures) == set(STRUCTURE_GROUPS) - set(missing)
    # the groups that were checked measure the same as on the full phantom
    for name in ("nerve root", "dura/CSF", "disc", "kidney"):
        assert report.clearance_mm[name] == full.clearance_mm[name]
    checks = {c.name: c for c in report.checks}
    assert checks["critical structures"].status == "incomplete"
    assert checks["critical structures"].detail.endswith("not checked: radicular artery, aorta/IVC")
    with pytest.raises(PlanError, match="cannot be 'ok'"):  # a report cannot claim ok over what it did not check
        SafetyReport("ok", (), {}, None, None, 10.0, (), report.structures)


def test_a_warning_still_lists_what_was_not_checked(phantom, trajectory, body):
    short = Trajectory("L4 left", TARGET, trajectory.target_lps_mm, trajectory.entry_lps_mm,
                       NeedleSpec(trajectory.insertion_depth_mm + 5.0, "22G"))
    report = check_trajectory(short, _without(phantom.label_map, ("KIDNEY",)), body=body)
    assert report.status == "warning"  # the needle margin: a finding outranks "incomplete"
    assert STATUS_ORDER == ("ok", "incomplete", "warning", "blocked")
    assert list(report.unchecked_structures) == ["kidney"]
    assert "not checked: kidney (absent from the label map)" in report.reasons


def test_a_path_that_leaves_the_label_map_is_incomplete_outside(phantom, trajectory, body):
    """The map cropped 15 mm in front of the skin entry (along P): the path's last part runs beyond it."""
    label_map = phantom.label_map
    entry, target = np.array(trajectory.entry_lps_mm), np.array(trajectory.target_lps_mm)
    cut_p_mm = entry[1] - 15.0
    last_j = int(np.floor(label_map.to_ijk(np.array([[0.0, cut_p_mm, 0.0]]))[0, 1]))
    cropped = LabelMap(label_map.array[:, : last_j + 1, :].copy(), WORKBENCH_TABLE, label_map.mri_voxel_to_mri)
    report = check_trajectory(trajectory, cropped, body=body)
    assert report.status == "incomplete"
    missing = report.unchecked_structures
    assert set(missing) == set(STRUCTURE_GROUPS) - {"skin/body"}  # the MRI (here: the full map's body) still covers the skin
    assert {c.reason for c in missing.values()} == {"outside"}
    # expected: the length of path inside the body between the map's posterior face and the skin
    face_p_mm = float(label_map.mri_voxel_to_mri.apply_to_points(np.array([[0.0, last_j + 0.5, 0.0]]))[0, 1])
    points = entry + np.outer(np.linspace(0.0, 1.0, 2001), target - entry)
    inside_body = body.surface_distance_mm(points) <= 0
    expected_mm = np.count_nonzero(inside_body & (points[:, 1] > face_p_mm)) * np.linalg.norm(target - entry) / 2000
    measured_mm = float(missing["bone"].detail.split(": ")[1].split(" mm")[0])
    assert measured_mm == pytest.approx(expected_mm, abs=1.0)
    assert missing["bone"].detail.startswith("outside the label map: ")
    assert {c.name: c.status for c in report.checks}["bone"] == "not checked"


SIZE = 60


def _small_map(first_i: int) -> LabelMap:
    """Soft tissue for P < 50, air behind, spanning L ``first_i`` .. 59, P -20 .. 59, S 0 .. 59 (1 mm voxels)."""
    labels = np.full((SIZE, SIZE + 20, SIZE - first_i), Label.SOFT_TISSUE, dtype=np.uint8)
    labels[:, 70:, :] = Label.AIR
    mri_voxel_to_mri = np.eye(4)
    mri_voxel_to_mri[:3, 3] = (first_i, -20, 0)
    return LabelMap(labels, WORKBENCH_TABLE, mri_voxel_to_mri)


def test_each_group_is_searched_as_far_as_its_clearance_threshold():
    """The map ends 5.5 mm to the right of a straight posterior path at L 30: the groups searched farther are outside it."""
    label_map = _small_map(first_i=25)  # edge at L 24.5
    trajectory = Trajectory("t", "nerve root", (30.0, 10.0, 30.0), (30.0, 50.0, 30.0), NeedleSpec(90.0, "22G"))
    body = BodyMask.from_label_map(label_map, np.array([25.0, -20.0, 0.0]), np.full(3, SIZE - 1.0))
    report = check_trajectory(trajectory, label_map, body=body)
    reach = {name: limit + NEEDLE_RADIUS_MM + HALF_DIAGONAL_1MM for name, limit in SafetyThresholds().warning_clearance_mm.items()}
    outside = {name for name, mm in reach.items() if mm > 5.5}
    assert outside == {"kidney", "aorta/IVC"}  # 6.2 and 11.2 mm; the others search 3.2-4.2 mm
    assert set(report.unchecked_structures) == outside and report.status == "incomplete"
    assert report.unchecked_structures["kidney"].detail == (
        f"outside the label map: it ends 5.5 mm from the path, inside the {reach['kidney']:.1f} mm searched around it"
    )
    whole = _small_map(first_i=0)
    whole_body = BodyMask.from_label_map(whole, np.array([0.0, -20.0, 0.0]), np.full(3, SIZE - 1.0))
    assert check_trajectory(trajectory, whole, body=whole_body).status == "ok"


def test_without_mri_or_label_map_nothing_is_claimed():
    trajectory = Trajectory("t", "nerve root", (30.0, 10.0, 30.0), (30.0, 50.0, 30.0), NeedleSpec(90.0, "22G"))
    report = check_trajectory(trajectory, None)
    assert report.status == "incomplete"
    assert {n: (c.reason, c.detail) for n, c in report.unchecked_structures.items()} == {
        **{n: ("unknown", "no label map") for n in STRUCTURE_GROUPS[:-1]},
        "skin/body": ("unknown", "entry on the skin: no MRI given"),
    }
    # unknown label values near the path: nothing there can be read
    label_map = _small_map(first_i=0)
    label_map.array[30, 40, 30] = 99
    assert {c.reason for c in check_trajectory(trajectory, label_map).unchecked_structures.values()} == {"unknown"}


def test_an_mri_that_covers_part_of_the_path_makes_the_air_check_incomplete():
    """The MRI (here a label map's body) ends at P 53.5 (the voxel face), 3.5 mm in front of an entry at P 57: the air check ran on
    the rest of the path only (4 mm in the air behind the skin at P 49.5, within the 5 mm tolerance)."""
    label_map = _small_map(first_i=0)
    body = BodyMask.from_label_map(label_map, np.array([0.0, -20.0, 0.0]), np.array([59.0, 53.0, 59.0]))
    trajectory = Trajectory("t", "nerve root", (30.0, 10.0, 30.0), (30.0, 57.0, 30.0), NeedleSpec(90.0, "22G"))
    results = {c.name: c for c in check_path(trajectory, body)}
    assert results["path through air"].status == "incomplete"
    assert results["path through air"].value_mm == pytest.approx(4.0, abs=0.3)  # skin face P 49.5 to MRI face P 53.5
    assert "3.5 mm of the path outside the MRI not checked" in results["path through air"].detail
    assert results["entry on the skin"].status == "not checked"
    skin = check_trajectory(trajectory, None, body=body).unchecked_structures["skin/body"]
    assert (skin.reason, skin.detail) == ("outside", "entry on the skin: the entry is outside the MRI")
    # a label map that covers the path and knows the air checks the skin instead (the demo case's slab MRI)
    assert "skin/body" in check_trajectory(trajectory, label_map, body=body).checked_structures


def test_an_imported_map_without_air_finds_the_skin_on_the_mri_body(phantom, trajectory, body):
    """A segmentation whose 0 is "unlabelled" (not air) cannot say where the skin is: the MRI's body does."""
    label_map = phantom.label_map
    table = {value: name for value, name in WORKBENCH_TABLE.items() if name not in ("AIR",)}
    table[int(Label.AIR)] = "UNLABELLED"
    imported = LabelMap(label_map.array, table, label_map.mri_voxel_to_mri)
    with pytest.raises(PlanError, match="safer entries need the skin"):
        suggest_entries(trajectory, imported, ring_radii_mm=(0.0,))
    (native,) = suggest_entries(trajectory, label_map, ring_radii_mm=(0.0,), body=body)
    (on_mri,) = suggest_entries(trajectory, imported, ring_radii_mm=(0.0,), body=body)
    # the same skin to within a voxel (label map: first air voxel; MRI body: where the distance turns positive)
    assert np.linalg.norm(np.subtract(native.trajectory.entry_lps_mm, on_mri.trajectory.entry_lps_mm)) <= 1.0
    assert on_mri.safety.status == native.safety.status == "ok"


def test_every_export_of_an_incomplete_plan_says_incomplete_and_what_was_not_checked(phantom, trajectory, body, tmp_path):
    without_vessels = _without(phantom.label_map, ("RADICULAR_ARTERY", "AORTA", "IVC"))
    plan = Plan("P-HONEST", (trajectory,))
    voxels = (without_vessels.array != int(Label.AIR)).astype(np.float32) * 100.0
    mri = VolumeSampler(voxels, without_vessels.mri_voxel_to_mri.matrix)
    bundle = write_plan_bundle(plan, tmp_path / "out", without_vessels, mri, body=body)
    assert bundle.status == "incomplete"

    document = read_plan_document(tmp_path / "out" / "plan.json")  # schema-valid
    assert document["schema_version"] == 2 and document["status"] == "incomplete"
    safety = document["trajectories"][0]["safety"]
    assert safety["status"] == "incomplete"
    assert safety["structures_checked"] == ["nerve root", "dura/CSF", "disc", "kidney", "bone", "skin/body"]
    assert [(s["name"], s["reason"]) for s in safety["structures_not_checked"]] == [("radicular artery", "absent"), ("aorta/IVC", "absent")]
    assert document["structures_not_checked"] == [
        {"trajectory": "L4 left", "name": "radicular artery", "reason": "absent", "detail": "absent from the label map"},
        {"trajectory": "L4 left", "name": "aorta/IVC", "reason": "absent", "detail": "absent from the label map"},
    ]
    load_plan(tmp_path / "out" / "plan.json")

    # the schema refuses a version-2 plan that reads "ok" over structures it did not check, or lacks the lists
    doctored = json.loads((tmp_path / "out" / "plan.json").read_text())
    doctored["trajectories"][0]["safety"]["status"] = "ok"
    (tmp_path / "ok.json").write_text(json.dumps(doctored))
    with pytest.raises(PlanError, match="plan schema at trajectories/0/safety"):
        load_plan(tmp_path / "ok.json")
    del doctored["trajectories"][0]["safety"]["structures_not_checked"]
    (tmp_path / "missing.json").write_text(json.dumps(doctored))
    with pytest.raises(PlanError, match="plan schema at trajectories/0/safety"):
        load_plan(tmp_path / "missing.json")

    markups = json.loads((tmp_path / "out" / "plan.mrk.json").read_text())["markups"]
    assert markups[0]["controlPoints"][0]["description"].startswith(
        "INCOMPLETE: not checked: radicular artery, aorta/IVC (absent from the label map)"
    )
    (row,) = csv.DictReader((tmp_path / "out" / "plan.csv").open())
    assert (row["safety_status"], row["structures_not_checked"]) == ("incomplete", "radicular artery (absent); aorta/IVC (absent)")
    report = (tmp_path / "out" / "report.html").read_text()
    assert report.count('<div class="banner incomplete">') == 2  # at the top and on the trajectory
    assert "INCOMPLETE — 1 of 1 trajectories were not checked against every structure" in report
    assert "<li>L4 left: not checked: radicular artery (absent), aorta/IVC (absent)</li>" in report
    assert "Safety: INCOMPLETE" in report and "NOT CHECKED (absent)" in report

    # a version-1 plan (written before the structures were listed) still loads
    old = plan_to_dict(plan)
    old.update(schema_version=1)
    del old["structures_not_checked"]
    (tmp_path / "v1.json").write_text(json.dumps(old))
    assert load_plan(tmp_path / "v1.json").plan_id == "P-HONEST"


def test_an_mri_without_air_does_not_take_a_muscle_boundary_for_the_skin():
    """A crop inside the body: bright tissue (60) and dark muscle (12, 20 % of it) but no air: the skin is not in it."""
    import SimpleITK as sitk

    voxels_kji = np.full((40, 40, 40), 60.0, np.float32)
    voxels_kji[:, 25:, :] = 12.0  # dark muscle behind, where a flat back's air would be
    image = sitk.GetImageFromArray(voxels_kji)
    body = BodyMask.from_image(image)
    assert body.no_air is not None and "20% of the body's median signal" in body.no_air
    trajectory = Trajectory("t", "nerve root", (20.0, 5.0, 20.0), (20.0, 30.0, 20.0), NeedleSpec(90.0, "22G"))
    results = {c.name: c for c in check_path(trajectory, body)}
    assert results["entry on the skin"].status == results["path through air"].status == "not checked"
    assert results["entry on the skin"].detail == body.no_air
    assert body.outward_normal_at((20.0, 24.5, 20.0)) is None
    # the same image with air (noise floor 2, 3 % of the tissue) behind is trusted
    voxels_kji[:, 25:, :] = 2.0
    assert BodyMask.from_image(sitk.GetImageFromArray(voxels_kji)).no_air is None
