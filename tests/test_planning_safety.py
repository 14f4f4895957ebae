"""Safety checks on a synthetic label map with hand-placed structures (1 mm voxels, LPS = index)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workbench.anatomy import WORKBENCH_TABLE, Label, LabelMapError
from workbench.errors import PlanError
from workbench.planning.model import NeedleSpec, Trajectory
from workbench.planning.mri_checks import BodyMask
from workbench.planning.safety import LabelMap, SafetyThresholds, skin_normal_at, suggest_entries
from workbench.planning.safety import check_trajectory as _check_trajectory

SIZE = 60
SKIN_P_MM = 50  # body where P < 50 mm, air behind
TARGET = (30.0, 10.0, 30.0)
ENTRY = (30.0, 50.0, 30.0)  # 40 mm straight posterior of the target
NEEDLE = NeedleSpec(90.0, "22G")
RADIUS_MM = 0.718 / 2
HALF_DIAGONAL_MM = math.sqrt(3) / 2
#: The map reaches this far anterior of P 0, mm, so the zone searched around a path to P 10 (up to
#: 11.2 mm for the aorta/IVC) lies inside it and every structure group counts as checked.
ANTERIOR_MM = 20


def _label_map(**boxes) -> LabelMap:
    """Soft tissue for P < 50, air behind; ``boxes``: label name -> (lo_lps, hi_lps) inclusive voxel boxes.

    1 mm voxels, LPS = index except P = j - ANTERIOR_MM (the map spans P -20 .. 59).
    """
    labels = np.full((SIZE, SIZE + ANTERIOR_MM, SIZE), Label.SOFT_TISSUE, dtype=np.uint8)  # [k=S, j=P+20, i=L]
    labels[:, ANTERIOR_MM + SKIN_P_MM :, :] = Label.AIR
    for name, (lo, hi) in boxes.items():
        labels[lo[2] : hi[2] + 1, ANTERIOR_MM + lo[1] : ANTERIOR_MM + hi[1] + 1, lo[0] : hi[0] + 1] = Label[name]
    mri_voxel_to_mri = np.eye(4)
    mri_voxel_to_mri[1, 3] = -ANTERIOR_MM
    return LabelMap(labels, WORKBENCH_TABLE, mri_voxel_to_mri)


def check_trajectory(trajectory, label_map, thresholds=None):
    """check_trajectory with the label map's body (every label but AIR) standing in for the MRI's."""
    body = None if label_map is None else BodyMask.from_label_map(label_map, np.array([0.0, -ANTERIOR_MM, 0.0]), np.full(3, SIZE - 1.0))
    return _check_trajectory(trajectory, label_map, thresholds, body)


def _trajectory(entry=ENTRY, needle=NEEDLE) -> Trajectory:
    return Trajectory("L4 right", "nerve root", TARGET, entry, needle)


def test_path_that_misses_every_structure_is_ok():
    report = check_trajectory(_trajectory(), _label_map(AORTA=((0, 0, 0), (5, 5, 5))))
    assert report.status == "ok"
    assert report.reasons == ()
    assert set(report.clearance_mm.values()) == {None}
    assert report.needle_margin_mm == pytest.approx(50.0)


def test_path_through_an_artery_is_blocked():
    report = check_trajectory(_trajectory(), _label_map(RADICULAR_ARTERY=((29, 29, 29), (31, 31, 31))))
    assert report.status == "blocked"
    assert report.clearance_mm["radicular artery"] < 0
    assert any("radicular artery" in reason for reason in report.reasons)


def test_clearance_is_the_lower_bound_from_voxel_centres():
    far = check_trajectory(_trajectory(), _label_map(RADICULAR_ARTERY=((36, 30, 30), (36, 30, 30))))
    assert far.clearance_mm["radicular artery"] == pytest.approx(6.0 - RADIUS_MM - HALF_DIAGONAL_MM)
    assert far.status == "ok"
    near = check_trajectory(_trajectory(), _label_map(RADICULAR_ARTERY=((33, 30, 30), (33, 30, 30))))
    assert near.clearance_mm["radicular artery"] == pytest.approx(3.0 - RADIUS_MM - HALF_DIAGONAL_MM)
    assert near.status == "warning"
    assert near.reasons == ("radicular artery 1.8 mm from the needle (< 3 mm)",)


def test_the_target_nerve_root_is_not_counted_in_the_target_zone():
    at_target = _label_map(NERVE_ROOT=((28, 8, 28), (32, 10, 32)))  # 5 mm short of the target zone end
    assert check_trajectory(_trajectory(), at_target).status == "ok"
    on_the_way = _label_map(NERVE_ROOT=((28, 25, 28), (32, 27, 32)))
    assert check_trajectory(_trajectory(), on_the_way).status == "blocked"


def test_bone_before_the_target_blocks_and_names_the_bone():
    report = check_trajectory(_trajectory(), _label_map(LAMINA=((25, 20, 25), (35, 24, 35))))
    assert report.status == "blocked"
    assert report.bone_crossed == "lamina"
    assert report.bone_depth_mm == pytest.approx(25.5, abs=0.5)  # entry at P 50, lamina face at P 24.5
    assert "path crosses bone (lamina)" in report.reasons[0]


def test_needle_length_margin_warns_and_too_short_blocks():
    warn = check_trajectory(_trajectory(needle=NeedleSpec(45.0, "22G")), _label_map())
    assert (warn.status, warn.needle_margin_mm) == ("warning", pytest.approx(5.0))
    assert "only 5.0 mm of needle left outside the skin" in warn.reasons[0]
    short = check_trajectory(_trajectory(needle=NeedleSpec(30.0, "22G")), _label_map())
    assert short.status == "blocked"
    assert short.reasons == ("30 mm 22G needle is 10.0 mm too short",)


def test_without_a_label_map_or_mri_only_the_needle_is_checked_and_it_says_so():
    report = check_trajectory(_trajectory(), None)
    assert report.status == "incomplete"  # no finding, nothing but the needle checked: never "ok"
    assert report.checked_structures == () and set(report.unchecked_structures) == {
        "nerve root", "radicular artery", "dura/CSF", "aorta/IVC", "disc", "kidney", "bone", "skin/body"
    }
    assert report.reasons == (
        "not checked: target inside the MRI (no MRI given)",
        "not checked: entry inside the MRI (no MRI given)",
        "not checked: entry on the skin (no MRI given)",
        "not checked: path through air (no MRI given)",
        "not checked: critical structures and bone (no label map)",
    )
    assert [(c.name, c.status) for c in report.checks][-2:] == [
        ("critical structures and bone", "not checked"), ("needle length", "ok")
    ]
    assert report.checks[-1].value_mm == pytest.approx(50.0)


def test_the_mri_body_checks_run_beside_the_label_map_checks():
    report = check_trajectory(_trajectory(), _label_map())
    assert [(c.name, c.status) for c in report.checks] == [
        ("target inside the MRI", "ok"), ("entry inside the MRI", "ok"), ("entry on the skin", "ok"),
        ("path through air", "ok"), ("critical structures", "ok"), ("bone", "ok"), ("needle length", "ok"),
    ]
    assert report.checks[2].value_mm == pytest.approx(0.5)  # entry at P 50, body voxels up to P 49 (face at 49.5)
    # 20 mm behind the skin: blocked twice (off the skin, through air), and the needle check still runs
    in_air = check_trajectory(_trajectory(entry=(30.0, 56.0, 30.0)), _label_map())
    assert in_air.status == "blocked"
    assert in_air.reasons[:2] == (
        "entry is 6.5 mm outside the skin, in the air (label map) (tolerance 5 mm)",
        "path through air 6.5 mm (label map) (outside the body; tolerance 5 mm)",
    )


def test_thresholds_are_configurable_and_validated():
    label_map = _label_map(RADICULAR_ARTERY=((36, 30, 30), (36, 30, 30)))
    strict = SafetyThresholds(warning_clearance_mm={"radicular artery": 6.0})
    assert check_trajectory(_trajectory(), label_map, strict).status == "warning"
    assert strict.warning_clearance_mm["aorta/IVC"] == 10.0  # the other groups keep their defaults
    with pytest.raises(PlanError, match="unknown structure group"):
        SafetyThresholds(warning_clearance_mm={"spleen": 1.0})
    with pytest.raises(PlanError, match="finite and >= 0"):
        SafetyThresholds(needle_margin_mm=-1.0)
    with pytest.raises(LabelMapError, match="must be 3D"):
        LabelMap(np.zeros((4, 4), np.uint8), WORKBENCH_TABLE, np.eye(4))


def test_skin_normal_of_a_flat_back_points_posterior():
    normal = skin_normal_at(_label_map(), ENTRY)
    assert normal == pytest.approx((0.0, 1.0, 0.0), abs=1e-9)
    assert skin_normal_at(_label_map(), (30.0, 20.0, 30.0)) is None  # deep inside: no surface


def test_safer_entries_rank_a_clear_path_above_the_one_through_an_artery():
    label_map = _label_map(RADICULAR_ARTERY=((28, 28, 28), (32, 32, 32)))
    body = BodyMask.from_label_map(label_map, np.array([0.0, -ANTERIOR_MM, 0.0]), np.full(3, SIZE - 1.0))
    suggestions = suggest_entries(_trajectory(), label_map, ring_radii_mm=(0.0, 15.0), directions=8, body=body)
    assert len(suggestions) == 9
    # without the body the MRI checks cannot run: no suggestion may then read "ok"
    unchecked = suggest_entries(_trajectory(), label_map, ring_radii_mm=(0.0, 15.0), directions=8)
    assert "ok" not in {s.safety.status for s in unchecked} and "incomplete" in {s.safety.status for s in unchecked}
    assert all(s.safety.unchecked_structures["skin/body"].reason == "unknown" for s in unchecked)
    assert any(r.startswith("not checked") for r in unchecked[0].safety.reasons)
    best, original = suggestions[0], next(s for s in suggestions if s.angle_change_deg < 1e-6)
    assert best.safety.status == "ok"
    assert original.safety.status == "blocked"
    assert suggestions.index(original) == 8
    assert best.trajectory.entry_lps_mm[1] == pytest.approx(SKIN_P_MM, abs=0.5)  # on the skin
    assert best.angle_change_deg == pytest.approx(math.degrees(math.atan(15.0 / 40.0)), abs=0.5)


def test_checks_read_label_values_through_the_label_maps_table():
    """The same anatomy in another encoding (a foreign segmentation's table) gives the same reports."""
    workbench = _label_map(LAMINA=((25, 20, 25), (35, 24, 35)), RADICULAR_ARTERY=((33, 30, 30), (33, 30, 30)))
    # the foreign table names every critical class (a segmentation that looked for them), most with no voxel here
    others = ("NERVE_ROOT", "DURA", "AORTA", "DISC", "KIDNEY")
    table = {200: "AIR", 3: "SOFT_TISSUE", 77: "LAMINA", 78: "RADICULAR_ARTERY", **{90 + i: name for i, name in enumerate(others)}}
    foreign_values = np.select(
        [workbench.array == Label.AIR, workbench.array == Label.SOFT_TISSUE, workbench.array == Label.LAMINA],
        [200, 3, 77],
        78,
    ).astype(np.uint8)
    foreign = LabelMap(foreign_values, table, workbench.mri_voxel_to_mri)
    assert check_trajectory(_trajectory(), foreign) == check_trajectory(_trajectory(), workbench)
    assert check_trajectory(_trajectory(), foreign).bone_crossed == "lamina"
    assert skin_normal_at(foreign, ENTRY) == skin_normal_at(workbench, ENTRY)
    entries = [(s.trajectory, s.safety) for s in suggest_entries(_trajectory(), foreign, ring_radii_mm=(0.0, 15.0), directions=4)]
    assert entries == [(s.trajectory, s.safety) for s in suggest_entries(_trajectory(), workbench, ring_radii_mm=(0.0, 15.0), directions=4)]
