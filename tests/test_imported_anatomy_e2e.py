"""End to end on imported anatomy: a case whose label map came from ``workbench labels import`` (never the
phantom's own) gets bone-surface ICP, clearances and safer entries, read only through its label table.

1. Planning: a phantom (1 mm, L3-L5) imaged by the isotropic 1 mm MRI protocol (the skin is in the
   image), exported as TotalSegmentator-style per-structure masks (``vertebrae_L4.nii.gz`` ...), a
   new case from the MRI alone, the masks imported; compared with the phantom-native label map on
   the same MRI.
2. Registration: the small demo case's clinical slab MRI and tracked sweep in a new case, its
   anatomy imported from TotalSegmentator-style masks at 1 mm; landmarks + bone ICP, TRE against
   the ground truth compared with the phantom-native label map. Synthetic case, simulated echoes:
   an ideal-simulation figure, an upper bound of what a patient gives.
3. The real TPTBox T2w crop with its SPINEPS masks: a foramen target; the crop holds no vessels,
   nerve roots or skin, and the reports say so: "incomplete" or worse, never "ok".
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from tests.conftest import SHARED_DATA
from workbench.anatomy import BONE_NAMES, WORKBENCH_TABLE, Label
from workbench.case import Target, load_case, save_case
from workbench.case.create import new_case
from workbench.case.labels import import_label_map, read_case_label_map
from workbench.cli import main
from workbench.equipment import shortest_needle
from workbench.io.volume import load_volume, save_volume
from workbench.phantom.anatomy import SpineParameters, build_phantom
from workbench.phantom.democase import DemoCaseSpec, generate_demo_case
from workbench.phantom.mri import synthesize_t2
from workbench.planning.model import Trajectory
from workbench.planning.mri_checks import BodyMask
from workbench.planning.safety import STRUCTURE_GROUPS, check_trajectory, suggest_entries

TARGET = "L4 left exiting nerve root, dorsal aspect"
#: What a TotalSegmentator-style export of the phantom holds: no nerve roots, radicular arteries or kidneys
#: (TotalSegmentator has no class for the first two; the phantom has no kidney, the empty mask is skipped).
NOT_IN_TOTALSEGMENTATOR = {"nerve root", "radicular artery", "kidney"}


def _write_totalsegmentator(folder, labels_kji: np.ndarray, level_of_bone_kji: dict[str, np.ndarray], reference: sitk.Image):
    """Per-structure masks named as TotalSegmentator names them, on ``reference``'s grid (uint8 NIfTI)."""
    folder.mkdir(parents=True, exist_ok=True)
    masks = {f"vertebrae_{level}": mask for level, mask in level_of_bone_kji.items()}
    masks.update({
        "spinal_canal": np.isin(labels_kji, [Label.DURA, Label.CSF, Label.EPIDURAL_FAT]),
        "intervertebral_discs": np.isin(labels_kji, [Label.DISC_ANNULUS, Label.DISC_NUCLEUS]),
        "aorta": labels_kji == Label.AORTA,
        "inferior_vena_cava": labels_kji == Label.IVC,
        "kidney_left": np.zeros(labels_kji.shape, bool),  # TotalSegmentator writes every class, empty ones too
        "skin": labels_kji == Label.SKIN,
        "subcutaneous_fat": labels_kji == Label.FAT,
    })
    for name, mask in masks.items():
        image = sitk.GetImageFromArray(mask.astype(np.uint8))
        image.CopyInformation(reference)
        sitk.WriteImage(image, str(folder / f"{name}.nii.gz"))
    return folder


def _bone_kji(labels_kji: np.ndarray) -> np.ndarray:
    return np.isin(labels_kji, [int(Label[name]) for name in BONE_NAMES])


# -- 1. planning on a case whose MRI holds the skin ------------------------------------------------------


@pytest.fixture(scope="module")
def planning_case(tmp_path_factory):
    """(case_dir, phantom, MRI body): new case from the phantom's MRI, TotalSegmentator masks imported by the CLI."""
    root = tmp_path_factory.mktemp("imported-planning")
    phantom = build_phantom(SpineParameters(seed=3, spacing_mm=1.0, levels=("L3", "L4", "L5")))
    mri_path = save_volume(synthesize_t2(phantom, "isotropic-1mm", seed=3), root / "t2.nrrd")
    labels_kji, levels_kji = sitk.GetArrayFromImage(phantom.labels), sitk.GetArrayFromImage(phantom.levels)
    bone = _bone_kji(labels_kji)
    by_level = {level: bone & (levels_kji == index) for index, level in enumerate(("", "L1", "L2", "L3", "L4", "L5", "S1")) if index}
    masks = _write_totalsegmentator(root / "totalsegmentator", labels_kji, by_level, phantom.labels)
    case_dir = new_case(root / "case", mri=mri_path)
    assert main(["labels", "import", str(case_dir), "--from", str(masks), "--format", "totalsegmentator"]) == 0
    body = BodyMask.from_volume(load_volume(mri_path))
    return case_dir, phantom, body


def _trajectory(phantom, entry=None) -> Trajectory:
    target = phantom.targets_lps[TARGET]
    entry = phantom.skin_entry_hint_lps[TARGET] if entry is None else np.asarray(entry)
    return Trajectory("L4 left", TARGET, target, entry, shortest_needle(float(np.linalg.norm(entry - target)), 10.0))


def test_the_imported_label_map_carries_its_own_names_not_the_phantom_numbering(planning_case):
    case_dir, phantom, _ = planning_case
    case = load_case(case_dir)
    assert not any(a.role == "ground_truth" for a in case.attachments)  # a plain case: no workbench-encoding fallback
    imported = read_case_label_map(case, case_dir)
    names = set(imported.names.values())
    assert {"vertebra_L3", "vertebra_L4", "vertebra_L5", "spinal_canal", "disc", "aorta", "ivc", "skin", "fat"} <= names
    assert "kidney_left" not in names and "AIR" not in imported.table.values()  # value 0: unlabelled, not air
    assert imported.values_of(["VERTEBRA"]) != (int(Label.VERTEBRAL_BODY),)
    # the same bone as the phantom's, voxel for voxel (same grid, named by level); the isotropic MRI's grid is
    # the label map's plus 15 mm of air behind the skin (+y, docs/phantom.md), where there is no bone
    phantom_bone = phantom.label_map.bone_mask()
    rows = phantom_bone.shape[1]
    assert imported.bone_mask().shape[1] == rows + 15
    assert np.array_equal(imported.bone_mask()[:, :rows], phantom_bone) and not imported.bone_mask()[:, rows:].any()
    assert imported.values_at_level("L4") and imported.level_of(imported.values_at_level("L4")[0]) == "L4"


def test_clearances_on_imported_anatomy_match_the_phantom_and_say_what_is_missing(planning_case):
    case_dir, phantom, body = planning_case
    imported = read_case_label_map(load_case(case_dir), case_dir)
    trajectory = _trajectory(phantom)
    native = check_trajectory(trajectory, phantom.label_map, body=body)
    report = check_trajectory(trajectory, imported, body=body)
    assert native.status == "ok" and native.checked_structures == STRUCTURE_GROUPS
    assert report.status == "incomplete"  # same path, same findings (none), but less anatomy: never "ok"
    assert set(report.unchecked_structures) == NOT_IN_TOTALSEGMENTATOR
    assert {c.reason for c in report.unchecked_structures.values()} == {"absent"}
    assert set(report.checked_structures) == set(STRUCTURE_GROUPS) - NOT_IN_TOTALSEGMENTATOR
    # the groups both maps hold measure the same (same voxels); the canal holds the epidural fat too: nearer or equal
    for name in ("aorta/IVC", "disc"):
        assert report.clearance_mm[name] == pytest.approx(native.clearance_mm[name], abs=1e-9)
    beyond = float("inf")  # None: nothing of the group within its search distance
    canal, dura = (r.clearance_mm["dura/CSF"] for r in (report, native))
    assert (beyond if canal is None else canal) <= (beyond if dura is None else dura) + 1e-9
    assert report.bone_crossed is native.bone_crossed is None
    # from the midline skin straight over the L4 spinous process tip to the L4 body centre: through bone on both
    tip = np.asarray(phantom.landmarks_lps["L4 spinous process tip"], float)
    midline = np.array([tip[0], float(phantom.skin_surface_y_mm(tip[0], tip[2])), tip[2]])
    centre = np.asarray(phantom.landmarks_lps["L4 body centre"], float)
    through_bone = Trajectory("midline", "L4 body", centre, midline, shortest_needle(float(np.linalg.norm(midline - centre)), 10.0))
    native_bone, imported_bone = (check_trajectory(through_bone, m, body=body) for m in (phantom.label_map, imported))
    assert native_bone.status == imported_bone.status == "blocked"
    assert native_bone.bone_crossed is not None and imported_bone.bone_crossed == "vertebra"  # TotalSegmentator: whole vertebrae
    assert imported_bone.bone_depth_mm == pytest.approx(native_bone.bone_depth_mm, abs=1e-9)


def test_workbench_plan_on_the_imported_case_writes_incomplete_with_the_unchecked_structures(planning_case, tmp_path, capsys):
    case_dir, phantom, _ = planning_case
    case = load_case(case_dir)
    target, entry = phantom.targets_lps[TARGET], phantom.skin_entry_hint_lps[TARGET]
    case = type(case)(**{**case.__dict__, "targets": [
        Target("L4 left", "exiting nerve root", tuple(map(float, target))),
        Target("L4 left entry", "entry point", tuple(map(float, entry))),
    ]})
    save_case(case, case_dir)
    capsys.readouterr()
    assert main(["plan", str(case_dir), "--out", str(tmp_path / "out"), "--no-ultrasound"]) == 0
    summary = json.loads(capsys.readouterr().out)
    (plan,) = summary["plans"]
    (trajectory,) = plan["trajectories"]
    assert plan["status"] == trajectory["status"] == "incomplete"
    assert set(trajectory["structures_not_checked"]) == NOT_IN_TOTALSEGMENTATOR
    document = json.loads((tmp_path / "out" / plan["plan_id"] / "plan.json").read_text())
    assert document["status"] == "incomplete"
    assert {row["name"] for row in document["structures_not_checked"]} == NOT_IN_TOTALSEGMENTATOR


def test_safer_entries_on_imported_anatomy_find_the_skin_on_the_mri_and_are_never_ok(planning_case):
    case_dir, phantom, body = planning_case
    imported = read_case_label_map(load_case(case_dir), case_dir)
    rings = (0.0, 10.0, 20.0)
    native = suggest_entries(_trajectory(phantom), phantom.label_map, ring_radii_mm=rings, directions=8, body=body)
    suggestions = suggest_entries(_trajectory(phantom), imported, ring_radii_mm=rings, directions=8, body=body)
    assert len(suggestions) == len(native) == 17
    assert "ok" not in {s.safety.status for s in suggestions} and suggestions[0].safety.status == "incomplete"
    assert all(set(s.safety.unchecked_structures) >= NOT_IN_TOTALSEGMENTATOR for s in suggestions)
    # every entry on the skin of the MRI (its body surface), within a voxel
    entries = np.array([s.trajectory.entry_lps_mm for s in suggestions])
    assert np.abs(body.surface_distance_mm(entries)).max() <= 1.0
    # the same candidates as on the phantom's own map (skin of its label map), paired by direction: same bone verdicts
    for candidate in suggestions:
        twin = min(native, key=lambda n: abs(n.angle_change_deg - candidate.angle_change_deg)
                   + np.linalg.norm(np.subtract(n.trajectory.entry_lps_mm, candidate.trajectory.entry_lps_mm)))
        # the MRI mask's skin lies 1-2.5 mm outside the label map's (docs/planning.md, mri_checks)
        assert np.linalg.norm(np.subtract(twin.trajectory.entry_lps_mm, candidate.trajectory.entry_lps_mm)) <= 2.5
        assert (twin.safety.bone_crossed is None) == (candidate.safety.bone_crossed is None)


# -- 2. registration on imported anatomy --------------------------------------------------------------


@pytest.fixture(scope="module")
def registration_cases(tmp_path_factory):
    """(demo case, new case with the demo's MRI and sweep and TotalSegmentator masks imported, ground truth)."""
    from workbench.io.ground_truth import read_ground_truth

    root = tmp_path_factory.mktemp("imported-registration")
    spec = DemoCaseSpec(seed=3, sweep_speed_mm_s=90.0, sweeps=("transverse",), posture_change=False)
    demo_dir = generate_demo_case(root / "demo", spec)
    demo = load_case(demo_dir)
    truth = read_ground_truth(demo_dir / "ground_truth.json")
    # the phantom's label map at 1 mm (TotalSegmentator's resolution); its bone split into vertebrae by the
    # nearest body-centre landmark (at 1 mm neighbouring articular processes touch, so connected components
    # merge levels). Where one vertebra ends matters little here: the ICP takes every bone surface point.
    native_image = sitk.ReadImage(str(demo_dir / next(a.path for a in demo.attachments if a.role == "label_map")))
    coarse = sitk.Resample(native_image, [n // 2 for n in native_image.GetSize()], sitk.Transform(), sitk.sitkNearestNeighbor,
                           native_image.GetOrigin(), [2 * s for s in native_image.GetSpacing()], native_image.GetDirection())
    labels_kji = sitk.GetArrayFromImage(coarse)
    bone_kji = _bone_kji(labels_kji)
    centres = {name.split()[0]: np.asarray(p, float) for name, p in truth.landmarks_mri.items() if name.endswith(" body centre")}
    assert sorted(centres) == ["L1", "L2", "L3", "L4", "L5", "S1"]
    kji = np.argwhere(bone_kji)
    origin, spacing = np.array(coarse.GetOrigin()), np.array(coarse.GetSpacing())  # identity direction (the phantom's grid)
    points = origin + kji[:, ::-1] * spacing
    names = list(centres)
    nearest = np.argmin(np.linalg.norm(points[:, None, :] - np.array([centres[n] for n in names])[None], axis=2), axis=1)
    by_level = {}
    for index, level in enumerate(names):
        mask = np.zeros(bone_kji.shape, bool)
        mask[tuple(kji[nearest == index].T)] = True
        by_level[level] = mask
    masks = _write_totalsegmentator(root / "totalsegmentator", labels_kji, by_level, coarse)
    sweep = demo.sweeps[0]
    case_dir = new_case(root / "case", mri=demo_dir / demo.mri.path, sweeps=[demo_dir / sweep.path],
                        device_set=demo_dir / sweep.device_set.path)
    import_label_map(case_dir, masks, fmt="totalsegmentator")
    return demo_dir, case_dir, truth


def test_bone_icp_on_imported_anatomy_reaches_the_phantom_native_accuracy(registration_cases):
    from workbench.io.plus_config import read_device_set
    from workbench.io.sequence import read_sequence
    from workbench.registration.landmarks import pair_landmarks
    from workbench.registration.piecewise import mri_bone_points_by_level
    from workbench.registration.pipeline import (
        RegistrationInputs,
        RegistrationSettings,
        per_vertebra_result,
        quality_of,
        run_registration_pipeline,
        stage_transform,
    )
    from workbench.registration.surface import mri_bone_points, us_bone_points

    demo_dir, case_dir, truth = registration_cases
    case, demo = load_case(case_dir), load_case(demo_dir)
    assert [a.role for a in case.attachments if a.role in ("label_map", "ground_truth")] == ["label_map"]
    imported = read_case_label_map(case, case_dir)
    native = read_case_label_map(demo, demo_dir)
    assert dict(native.table) == {v: Label(v).name for v in WORKBENCH_TABLE}  # the phantom's own, for comparison only
    sweep = case.sweeps[0]
    image_to_probe = read_device_set(case_dir / sweep.device_set.path).image_to_probe()
    points_reference = us_bone_points(read_sequence(case_dir / sweep.path), image_to_probe)
    pairs = pair_landmarks(demo.landmarks)  # the physician's landmarks (the new case has none yet)
    targets_mri = truth.target_points_mri
    targets_reference = truth.reference_to_mri.inverse().apply_to_points(targets_mri)

    def tre_mm(transform) -> np.ndarray:
        return np.linalg.norm(transform.apply_to_points(targets_reference) - targets_mri, axis=1)

    results = {}
    for name, label_map in (("native", native), ("imported", imported)):
        inputs = RegistrationInputs(landmarks=pairs, targets_mri=truth.targets_mri, us_points_reference=points_reference,
                                    mri_points=mri_bone_points(label_map))
        results[name] = run_registration_pipeline(inputs, RegistrationSettings(("bone-icp",)))
    landmarks_tre = tre_mm(stage_transform(results["imported"], "landmarks"))
    native_tre, imported_tre = tre_mm(results["native"].transform), tre_mm(results["imported"].transform)
    # measured (seed 3): landmarks median 0.51 mm; ICP median 0.38 mm native, 0.42 mm imported (max 0.46 / 0.49 mm)
    assert np.median(imported_tre) <= 1.0 and imported_tre.max() <= 1.5
    assert abs(np.median(imported_tre) - np.median(native_tre)) <= 0.3
    assert np.median(imported_tre) <= np.median(landmarks_tre) + 0.1  # the ICP on imported bone does not make it worse
    assert quality_of(results["imported"]).verdict in ("accepted", "doubtful")  # never refused

    # per vertebra, the levels read from the imported table's names (vertebra_L4 ...), no phantom level map
    by_level = mri_bone_points_by_level(imported)
    assert set(by_level) == {"L1", "L2", "L3", "L4", "L5", "S1"}
    inputs = RegistrationInputs(landmarks=pairs, targets_mri=truth.targets_mri, us_points_reference=points_reference,
                                mri_points=mri_bone_points(imported), mri_points_by_level=by_level)
    piecewise = per_vertebra_result(run_registration_pipeline(inputs, RegistrationSettings(("bone-icp", "piecewise"))))
    names = list(truth.targets_mri)
    per_target_mm = [float(np.linalg.norm(piecewise.transform_for_target(name).apply_to_points(targets_reference[i]) - targets_mri[i]))
                     for i, name in enumerate(names)]
    assert np.median(per_target_mm) <= 1.0 and max(per_target_mm) <= 2.0  # no posture change in this case: ~ the rigid TRE


# -- 3. the real TPTBox crop ---------------------------------------------------------------------------

CROP = SHARED_DATA / "spine-crops-tptbox-mri-ct" / "sample_mri"


@pytest.fixture(scope="module")
def crop_case(tmp_path_factory):
    case_dir = new_case(tmp_path_factory.mktemp("tptbox") / "case", mri=CROP / "sub-mri_label-6_T2w.nii.gz")
    assert main(["labels", "import", str(case_dir), "--from", str(CROP / "sub-mri_seg-vert_label-6_msk.nii.gz")]) == 0
    case = load_case(case_dir)
    return read_case_label_map(case, case_dir), BodyMask.from_volume(load_volume(case_dir / case.mri.path))


def _foramen(label_map) -> np.ndarray:
    """An unlabelled point lateral (patient left) of the canal at the level of the lower disc, between the disc's back
    and the articular processes: the voxel there farthest from bone, disc and canal, mm (LPS)."""
    from workbench.frames import apply_affine

    def points(names):
        return apply_affine(label_map.mri_voxel_to_mri.matrix, np.argwhere(label_map.mask(names))[:, ::-1])

    canal, articular = points(["SPINAL_CANAL"]), points(["ARTICULAR_PROCESS"])
    disc_value = max(label_map.values_of(["DISC"]), key=lambda v: -np.mean(np.argwhere(label_map.array == v)[:, 0]))
    disc = apply_affine(label_map.mri_voxel_to_mri.matrix, np.argwhere(label_map.array == disc_value)[:, ::-1])
    solid = label_map.bone_mask() | label_map.mask(["DISC", "SPINAL_CANAL", "SPINAL_CORD", "ENDPLATE"])
    distance_kji = ndimage.distance_transform_edt(~solid, sampling=label_map.spacing_mm[::-1])
    grid = np.stack(np.meshgrid(
        np.arange(canal[:, 0].max() + 1.0, canal[:, 0].max() + 10.0, 1.0),
        np.arange(disc[:, 1].max(), np.median(articular[:, 1]), 1.0),
        np.arange(disc[:, 2].min(), disc[:, 2].max() + 8.0, 1.0), indexing="ij"), axis=-1).reshape(-1, 3)
    ijk = np.rint(label_map.to_ijk(grid)).astype(int)
    free = distance_kji[ijk[:, 2], ijk[:, 1], ijk[:, 0]]
    free[label_map.values_at(grid) != label_map.values_of(["UNLABELLED"])[0]] = -1.0
    return grid[int(np.argmax(free))]


def test_the_real_crop_says_what_it_could_not_check_and_is_never_ok(crop_case):
    label_map, body = crop_case
    assert body.no_air is not None and "no air in the MRI" in body.no_air  # a crop inside the body: no skin in it
    target = _foramen(label_map)
    assert label_map.name_of(label_map.values_at(target[None])[0]) == "UNLABELLED"
    entry = np.array([target[0] + 10.0, -20.0, target[2]])  # at the crop's posterior end, lateral of the spinous process
    needle = shortest_needle(float(np.linalg.norm(entry - target)), 10.0)
    trajectory = Trajectory("foramen left", "intervertebral foramen", target, entry, needle)
    report = check_trajectory(trajectory, label_map, body=body)
    assert report.status == "incomplete"
    missing = report.unchecked_structures
    assert {n for n, c in missing.items() if c.reason == "absent"} == {"nerve root", "radicular artery", "aorta/IVC", "kidney"}
    assert missing["skin/body"].reason == "outside" and "no air in the MRI" in missing["skin/body"].detail
    assert set(report.checked_structures) == {"dura/CSF", "disc", "bone"}
    assert 0.0 < report.clearance_mm["dura/CSF"] < 15.0 and report.bone_crossed is None
    suggestions = suggest_entries(trajectory, label_map, ring_radii_mm=(0.0, 5.0, 10.0), directions=8, body=body)
    assert suggestions and "ok" not in {s.safety.status for s in suggestions}
    assert all({"radicular artery", "aorta/IVC", "skin/body"} <= set(s.safety.unchecked_structures) for s in suggestions)
    # without the skin the candidates end at the image's edge, which their reports say
    assert np.max(body.distance_outside_volume_mm(np.array([s.trajectory.entry_lps_mm for s in suggestions]))) <= 1e-6
