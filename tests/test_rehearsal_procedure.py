"""The rehearsal procedure (issue 18): scene, needle kinematics, events, injectate, metrics, recording.

Two kinds of case: the small demo case (session fixture), and a toy "imported" case whose label
map is built here with its own label values (100+), so the events can be checked against what
the needle is known to cross, and so nothing depends on the workbench encoding.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from workbench.anatomy import LabelMap
from workbench.rehearsal.attempt import ADVANCE_SPEED_MM_S, INJECT_RATE_ML_S, INSERT_TIME_S, Attempt, scripted_attempt
from workbench.rehearsal.events import NERVE_CONTACT_DEPTH_MM, PUNCTURE_TYPES
from workbench.rehearsal.injectate import InjectateState, make_bolus, spread_segments
from workbench.rehearsal.metrics import discrete_frechet_mm
from workbench.rehearsal.needle import TIP_STEP_MM
from workbench.rehearsal.recording import read_recording, replay
from workbench.rehearsal.scene import RehearsalError, load_scene

# -- the toy imported case ------------------------------------------------------------------------
#: Label values of the toy map: deliberately not the workbench encoding.
TOY_TABLE = {100: "air", 101: "skin", 102: "fat", 103: "erector_spinae", 104: "soft_tissue", 105: "lamina",
             106: "dura", 107: "csf", 108: "aorta", 109: "nerve_root", 110: "kidney"}
SKIN_Y = 70  # skin voxel row (y, LPS: posterior up); air above
#: Structure boxes (x range, y range) over z 20..40, voxel indices inclusive (1 mm voxels, origin 0).
BOXES = {
    105: ((5, 15), (30, 35)),   # lamina under x = 10
    106: ((25, 35), (30, 31)),  # dura under x = 30 ...
    107: ((25, 35), (20, 29)),  # ... with CSF inside
    108: ((45, 55), (20, 30)),  # aorta under x = 50
    109: ((38, 42), (30, 35)),  # nerve root under x = 40
    110: ((17, 22), (25, 35)),  # kidney under x = 20 (beside the lamina)
}


def toy_label_map() -> LabelMap:
    values = np.full((60, 80, 60), 104, dtype=np.int16)  # (z, y, x)
    values[:, SKIN_Y + 1 :, :] = 100
    values[:, SKIN_Y, :] = 101
    values[:, 60:SKIN_Y, :] = 102
    values[:, 40:60, :] = 103
    for value, ((x0, x1), (y0, y1)) in BOXES.items():
        values[20:41, y0 : y1 + 1, x0 : x1 + 1] = value
    return LabelMap(values, TOY_TABLE, np.eye(4))


@pytest.fixture(scope="module")
def toy_case(tmp_path_factory):
    """A case without ground truth whose label map was 'imported' (with its table), one target beside the root."""
    from workbench.case import Case, Target, save_case
    from workbench.case.labels import attach_label_map

    folder = tmp_path_factory.mktemp("toy-case")
    save_case(Case(case_id="TOY-IMPORTED-01", targets=[Target("root", "nerve root, dorsal aspect", (40.0, 37.0, 30.0))]),
              folder)
    attach_label_map(folder, toy_label_map(), "toy segmentation, imported with its table")
    return folder


@pytest.fixture(scope="module")
def toy_scene(toy_case):
    return load_scene(toy_case)


@pytest.fixture(scope="module")
def demo_scene(small_demo_case):
    return load_scene(small_demo_case, load_mri=False)


def straight_down(scene, x_mm: float, depth_mm: float, z_mm: float = 30.0) -> Attempt:
    """An attempt on the toy case: the needle inserted at the skin above (x, z), pointing anterior (-y), advanced."""
    attempt = Attempt(scene, "root")
    attempt.insert([x_mm, SKIN_Y, z_mm], [0.0, -1.0, 0.0])
    attempt.advance(depth_mm)
    return attempt


# -- scenes ------------------------------------------------------------------------------------------
def test_demo_scene_has_expert_paths_with_the_plans_catalogue_needle(demo_scene):
    assert len(demo_scene.targets_mri) == 8
    path = demo_scene.expert_paths[demo_scene.target("L4 left")]
    assert path.source == "expert plan"
    assert path.needle.label in ("50 mm 23G", "90 mm 22G", "120 mm 22G")
    assert path.injectate_ml == 6.0
    assert np.allclose(path.target_mri, demo_scene.targets_mri[path.target_name])
    # segment height from the L1..S1 body centres of the case: a lumbar segment is 30-45 mm
    assert demo_scene.vertebra_centres_source == "landmarks"
    assert 30.0 < demo_scene.segment_height_mm < 45.0


def test_imported_case_is_read_through_its_table_and_gets_a_suggested_entry(toy_scene):
    assert toy_scene.label_map.name_of(106) == "DURA"
    path = toy_scene.expert_paths["root"]
    assert path.source == "suggested entry"
    # the suggested entry is on the skin: the label there is skin (or the air just outside it)
    assert toy_scene.label_map.names[int(toy_scene.label_map.values_at(path.entry_mri[None])[0])] in ("skin", "air")
    assert abs(path.entry_mri[1] - SKIN_Y) <= 1.0
    assert toy_scene.vertebra_centres_source == "none" and toy_scene.segment_height_mm == 35.0


def test_case_without_label_map_or_target_is_refused_naming_the_file(tmp_path):
    from workbench.case import Case, Target, save_case

    save_case(Case(case_id="NO-LABELS-01", targets=[Target("t", "x", (0.0, 0.0, 0.0))]), tmp_path / "c")
    with pytest.raises(RehearsalError, match="no label map") as info:
        load_scene(tmp_path / "c")
    assert info.value.path.endswith("case.json")
    with pytest.raises(RehearsalError, match="not a case folder"):
        load_scene(tmp_path / "missing")


def test_unknown_or_ambiguous_target_names_the_targets(demo_scene):
    with pytest.raises(RehearsalError, match="is not a target") as info:
        demo_scene.target("T12 left")
    assert "L4 left exiting nerve root" in str(info.value)
    with pytest.raises(RehearsalError, match="fits several"):
        demo_scene.target("L4")


# -- events against the label map ----------------------------------------------------------------
def test_bone_stops_the_tip_at_its_surface_and_pushing_does_not_enter(toy_scene):
    attempt = straight_down(toy_scene, 10.0, 60.0)
    # lamina rows 30..35: with nearest-voxel lookup the bone starts at y = 35.5
    tip_y = attempt.needle.tip_mri[1]
    assert 35.5 <= tip_y <= 35.5 + TIP_STEP_MM + 1e-9
    attempt.advance(10.0)
    assert attempt.needle.tip_mri[1] == pytest.approx(tip_y)
    events = attempt.events
    assert [(e.type, e.structure) for e in events] == [("bone_contact", "lamina")]


def test_dura_puncture_once_when_the_tip_crosses_dura_into_csf(toy_scene):
    attempt = straight_down(toy_scene, 30.0, 45.0)  # y 70 -> 25: dura (30-31) then CSF (20-29)
    assert [(e.type, e.structure) for e in attempt.events] == [("dura_puncture", "dura")]
    event_y = attempt.events[0].tip_mri[1]
    assert 31.0 <= event_y <= 31.5  # the first sample inside the dura row 31
    result = attempt.finish()
    assert result.metrics["structure_punctures"] == 1 and result.metrics["punctures"] == 1


def test_vessel_kidney_and_nerve_events_by_name(toy_scene):
    aorta = straight_down(toy_scene, 50.0, 45.0)
    assert [(e.type, e.structure) for e in aorta.events] == [("vessel_puncture", "aorta")]
    kidney = straight_down(toy_scene, 20.0, 40.0)
    assert [(e.type, e.structure) for e in kidney.events] == [("kidney_puncture", "kidney")]
    # nerve root rows 30..35 (surface at y = 35.5): contact only NERVE_CONTACT_DEPTH_MM inside
    shallow = straight_down(toy_scene, 40.0, SKIN_Y - 35.5 + 0.5)
    assert shallow.events == []
    deep = straight_down(toy_scene, 40.0, SKIN_Y - 35.5 + NERVE_CONTACT_DEPTH_MM + 0.5)
    assert [(e.type, e.structure) for e in deep.events] == [("nerve_contact", "nerve_root")]
    assert deep.events[0].tip_mri[1] == pytest.approx(35.5 - NERVE_CONTACT_DEPTH_MM, abs=TIP_STEP_MM)


def test_following_the_plan_on_the_imported_case(toy_scene):
    result = scripted_attempt(toy_scene, "root")
    m = result.metrics
    assert m["tip_to_target_mm"] < 1.0
    assert m["events"] == []
    assert m["injection_compartment"] == "paravertebral"  # root 1.5 mm away


# -- the demo case: the done conditions -------------------------------------------------------
def test_following_the_expert_plan_reaches_the_target_without_punctures(demo_scene):
    result = scripted_attempt(demo_scene, "L4 left")
    m = result.metrics
    path = demo_scene.expert_paths[demo_scene.target("L4 left")]
    assert m["tip_to_target_mm"] < 1.0
    assert not [e for e in m["events"] if e["type"] in PUNCTURE_TYPES]
    assert m["structure_punctures"] == 0 and m["punctures"] == 1 and m["redirections"] == 0
    assert m["path_length_mm"] == pytest.approx(path.depth_mm, abs=1e-3)
    assert m["frechet_to_expert_mm"] < 0.5
    assert m["tissue_damage_mm2"] == pytest.approx(0.0, abs=1e-6)  # straight in: nothing swept
    assert m["time_s"] == pytest.approx(INSERT_TIME_S + path.depth_mm / ADVANCE_SPEED_MM_S + 6.0 / INJECT_RATE_ML_S, abs=1e-3)
    # the probe is snapped to the needle plane: tip in plane and visible all the way
    assert m["tip_to_plane_mm_max"] < 0.5 and m["needle_to_plane_angle_deg_max"] < 1.0
    assert m["tip_visible_fraction"] > 0.9
    assert m["injected_ml"] == 6.0 and m["injection_compartment"] == "paravertebral"
    assert 1.0 <= m["spread_segments"] <= 1.5


def test_a_deviation_across_the_canal_gives_a_dura_event(demo_scene):
    result = scripted_attempt(demo_scene, "L3 left", deviation_deg=20.0, deviation_azimuth_deg=20.0, inject=False)
    dura = [e for e in result.events if e.type == "dura_puncture"]
    assert len(dura) == 1
    label_map = demo_scene.label_map
    assert label_map.name_of(int(label_map.values_at(dura[0].tip_mri[None])[0])) == "DURA"
    assert result.metrics["structure_punctures"] == 1
    assert result.metrics["tip_to_target_mm"] > 20.0


def test_a_medial_deviation_at_the_target_level_stops_on_the_lamina(demo_scene):
    result = scripted_attempt(demo_scene, "L4 left", deviation_deg=10.0, inject=False)
    assert [(e.type, e.structure) for e in result.events] == [("bone_contact", "lamina")]
    assert result.metrics["frechet_to_expert_mm"] > 5.0


# -- injectate -------------------------------------------------------------------------------------
@pytest.mark.parametrize("volume_ml", [2.0, 6.0, 10.0])
def test_paravertebral_spread_volume_and_extent(volume_ml):
    axis = np.array([0.0, 0.0, 1.0])
    bolus = make_bolus("paravertebral", [0.0, 0.0, 0.0], volume_ml, axis, 36.0)
    # the ellipsoid holds the injected volume: count 0.5 mm grid cells inside (within 2 %)
    half = float(np.max(bolus.semi_axes_mm)) + 1.0
    grid = np.arange(-half, half, 0.5) + 0.25
    points = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), axis=-1).reshape(-1, 3)
    inside_ml = InjectateState((bolus,)).contains(points).sum() * 0.125 / 1000.0
    assert inside_ml == pytest.approx(volume_ml, rel=0.02)
    # craniocaudal extent: 1.25 segments at 6 mL, scaling with the cube root of the volume
    segments = spread_segments(bolus, axis, 36.0)
    assert segments == pytest.approx(1.25 * (volume_ml / 6.0) ** (1 / 3), rel=1e-9)
    assert bolus.semi_axes_mm[0] > bolus.semi_axes_mm[1]  # elongated along the spine


def test_misplaced_injections_spread_differently_and_are_flagged(toy_scene):
    muscle = straight_down(toy_scene, 40.0, 15.0)  # y 55: erector spinae
    muscle.inject(6.0)
    bolus = muscle.injectate.boluses[0]
    assert bolus.compartment == "intramuscular"
    assert np.allclose(bolus.semi_axes_mm, (3 * 6000 / (4 * math.pi)) ** (1 / 3))  # a compact sphere, 11.3 mm
    assert [(e.type, e.structure) for e in muscle.events] == [("intramuscular_injection", "erector_spinae")]
    assert spread_segments(bolus, [0, 0, 1], 35.0) < 0.7
    vessel = straight_down(toy_scene, 50.0, 45.0)
    vessel.inject(2.0)
    assert vessel.events[-1].type == "intravascular_injection"
    assert not vessel.injectate.contains(np.array([[50.0, 25.0, 30.0]])).any()  # carried away: no pool
    canal = straight_down(toy_scene, 30.0, 45.0)
    canal.inject(1.0)
    assert canal.events[-1].type == "epidural_injection"
    # the canal is narrow: 1 mL tracks 2.21 * (1/3)^(1/3) = 1.53 segments (Jeong 2013: 2.21 at 3 mL)
    assert spread_segments(canal.injectate.boluses[-1], [0, 0, 1], 35.0) == pytest.approx(1.532, abs=1e-3)


def test_injecting_in_steps_grows_one_pool(demo_scene):
    attempt = Attempt(demo_scene, "L4 left")
    path = attempt.expert
    attempt.insert(path.entry_mri, path.direction_mri)
    attempt.advance(path.depth_mm)
    for _ in range(3):
        attempt.inject(2.0)
    assert len(attempt.injectate.boluses) == 1
    assert attempt.injectate.total_ml == pytest.approx(6.0)
    assert attempt.injectate.contains(path.target_mri[None]).all()


# -- metrics ------------------------------------------------------------------------------------------
def test_discrete_frechet_of_known_paths():
    a = np.column_stack([np.linspace(0, 10, 21), np.zeros(21), np.zeros(21)])
    assert discrete_frechet_mm(a, a + [0.0, 3.0, 0.0]) == pytest.approx(3.0)
    assert discrete_frechet_mm(a, a[::-1]) == pytest.approx(10.0)  # order matters


def test_redirection_sweeps_the_area_perk_tutor_counts(toy_scene):
    attempt = straight_down(toy_scene, 40.0, 10.0)
    turned = np.array([math.sin(math.radians(30)), -math.cos(math.radians(30)), 0.0])
    attempt.redirect(turned)
    m = attempt.finish().metrics
    assert m["redirections"] == 1
    # the 10 mm shaft pivots 30 deg about the skin point: a triangle of 0.5 * 10 * 10 * sin 30 = 25 mm^2
    assert m["tissue_damage_mm2"] == pytest.approx(25.0, abs=1e-4)
    assert m["path_length_mm"] == pytest.approx(10.0 + 2 * 10.0 * math.sin(math.radians(15)), abs=1e-4)


def test_tip_to_plane_distance_and_angle(toy_scene):
    from workbench.rehearsal.attempt import in_plane_image_to_mri

    attempt = Attempt(toy_scene, "root")
    entry, target = np.array([40.0, SKIN_Y, 30.0]), np.array([40.0, 45.0, 30.0])
    plane = in_plane_image_to_mri(entry + [2.0, 0.0, 0.0], target + [2.0, 0.0, 0.0], attempt.probe)
    attempt.set_probe(plane)  # a sagittal plane parallel to the path, 2 mm to its left
    attempt.insert(entry, target - entry)
    attempt.advance(10.0)
    tilted = np.array([math.sin(math.radians(10)), -math.cos(math.radians(10)), 0.0])
    attempt.insert(entry, tilted)  # out of plane by 10 deg, crossing it
    attempt.advance(10.0)
    m = attempt.finish().metrics
    assert m["punctures"] == 2
    assert m["needle_to_plane_angle_deg_max"] == pytest.approx(10.0, abs=1e-4)
    first_distances = 2.0  # the first pass runs parallel, 2 mm from the plane
    assert m["tip_to_plane_mm_max"] == pytest.approx(first_distances, abs=1e-4)
    assert m["tip_to_plane_mm_mean"] < first_distances


# -- recording ------------------------------------------------------------------------------------------
def test_recording_reads_back_and_replays_to_identical_metrics(demo_scene, tmp_path):
    attempt = Attempt(demo_scene, "L5 right")
    path = attempt.expert
    from workbench.rehearsal.attempt import _planned_plane

    attempt.set_probe(_planned_plane(demo_scene, path, attempt.probe))
    attempt.insert(path.entry_mri, path.direction_mri + [0.05, 0.0, 0.0])
    attempt.advance(30.0)
    attempt.withdraw(5.0)
    attempt.redirect(path.direction_mri)
    attempt.advance(path.depth_mm)
    attempt.inject(3.0)
    result = attempt.finish()
    files = result.write(tmp_path)
    sequence = read_recording(files["recording"])
    assert len(sequence) == len(result.samples)
    assert np.allclose(sequence.timestamps_s, [s.time_s for s in result.samples], atol=0)
    last = result.samples[-1]
    assert np.allclose(sequence.transforms["NeedleTipToMri"][-1][:3, 3], last.tip_mri, atol=1e-9)
    assert np.allclose(sequence.transforms["NeedleTipToMri"][-1][:3, 2], last.direction_mri, atol=1e-9)
    assert np.array_equal(sequence.transforms["ImageToMri"][-1], last.image_to_mri)
    assert not sequence.transform_status["NeedleTipToMri"][0]  # no needle before the insertion
    replayed = replay(demo_scene, files["recording"])
    assert replayed.metrics == result.metrics
    assert result.metrics["redirections"] == 1


def test_a_plan_saved_in_the_case_is_the_expert_path(toy_case, tmp_path):
    import shutil

    from workbench.case import Attachment, load_case, save_case
    from workbench.case.storage import file_sha256
    from workbench.equipment import NeedleSpec
    from workbench.planning.export import write_plan_json
    from workbench.planning.model import Plan, Trajectory

    folder = tmp_path / "case"
    shutil.copytree(toy_case, folder)
    entry = (45.0, float(SKIN_Y), 32.0)
    trajectory = Trajectory("root", "nerve root, dorsal aspect", (40.0, 37.0, 30.0), entry, NeedleSpec(50.0, "23G"),
                            injectate_ml=5.0)
    path = write_plan_json(Plan("TOY-PLAN-01", (trajectory,)), folder / "plans" / "plan.json")
    case = load_case(folder)
    case.attachments.append(Attachment("plan", "plans/plan.json", file_sha256(path), "the physician's plan"))
    save_case(case, folder)
    expert = load_scene(folder).expert_paths["root"]
    assert expert.source == "saved plan"
    assert np.allclose(expert.entry_mri, entry) and expert.needle == NeedleSpec(50.0, "23G") and expert.injectate_ml == 5.0


def test_a_wall_clock_times_every_step_and_the_recording_keeps_it(toy_scene, tmp_path):
    from workbench.rehearsal.attempt import in_plane_image_to_mri

    now = [1000.0]
    attempt = Attempt(toy_scene, "root", clock=lambda: now[0])
    entry, target = np.array([40.0, SKIN_Y, 30.0]), np.array([40.0, 37.0, 30.0])
    now[0] = 1002.5
    attempt.set_probe(in_plane_image_to_mri(entry, target, attempt.probe))
    now[0] = 1004.0
    attempt.insert(entry, target - entry)
    now[0] = 1010.0
    attempt.advance(2.0)
    result = attempt.finish()
    assert [s.time_s for s in result.samples] == [0.0, 2.5, 4.0, 10.0, 10.0]
    assert result.metrics["time_s"] == 10.0
    files = result.write(tmp_path)
    assert replay(toy_scene, files["recording"]).metrics == result.metrics


def test_an_imported_map_without_air_gets_its_entry_from_the_mri_body(tmp_path):
    """TotalSegmentator-like maps call value 0 'unlabelled', not air: the skin comes from the MRI's body outline."""
    import SimpleITK as sitk

    from workbench.case import Case, MriRef, Target, save_case
    from workbench.case.labels import attach_label_map
    from workbench.case.storage import file_sha256
    from workbench.io.volume import save_volume

    toy = toy_label_map()
    label_map = LabelMap(toy.array, {**dict(toy.names), 100: "unlabelled"}, np.eye(4))
    mri_path = save_volume(sitk.GetImageFromArray(np.where(toy.array == 100, 0.0, 300.0).astype(np.float32)),
                           tmp_path / "mri" / "t2.nrrd")
    save_case(Case(case_id="TOY-NOAIR-01", mri=MriRef("mri/t2.nrrd", file_sha256(mri_path), "MR"),
                   targets=[Target("root", "nerve root, dorsal aspect", (40.0, 37.0, 30.0))]), tmp_path)
    attach_label_map(tmp_path, label_map, "imported, background named unlabelled")
    scene = load_scene(tmp_path)
    path = scene.expert_paths["root"]
    assert path.source == "suggested entry"
    assert SKIN_Y - 2.0 <= path.entry_mri[1] <= SKIN_Y + 0.5  # on the body outline
    assert path.needle.label == "50 mm 23G"  # ~33 mm deep + the 10 mm margin: the study's needle
    assert scripted_attempt(scene, "root", inject=False).metrics["tip_to_target_mm"] < 1.0
    # the headless CLI loads without the MRI view; the entry still comes from the MRI body outline
    headless = load_scene(tmp_path, load_mri=False)
    assert headless.mri is None
    np.testing.assert_allclose(headless.expert_paths["root"].entry_mri, path.entry_mri, atol=1e-9)
