"""Segmenting a lumbar MRI from its named landmarks (issue 15): figures, levels, bad input, the CLI.

The figures are measured on one generated case (phantom seed 11, BMI 26; not a benchmark case)
with 1 mm RMS landmark localisation error, against the phantom's own label map. Measured when
written (similarity fit, the default): posterior bone surface MSD 1.02 mm / p95 3.32 mm, canal
Dice 0.938, 6/6 levels; the thresholds below leave a margin.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from workbench.anatomy import LabelMap
from workbench.case import Landmark, load_case, save_case
from workbench.case.create import new_case
from workbench.case.labels import read_case_label_map
from workbench.cli import main
from workbench.io.label_table import read_label_table, sidecar_path
from workbench.segmentation.bench import evaluate_generated, evaluate_real_crop
from workbench.segmentation.fit import SegmentationError, fit_level_transforms, landmarks_by_level
from workbench.segmentation.segment import SegmentParameters, segment_mri, template_landmarks
from workbench.segmentation.store import PROVENANCE_FILE, segment_case

SEED, BMI = 11, 26.0


@pytest.fixture(scope="module")
def phantom_and_mri():
    from workbench.phantom.anatomy import SpineParameters, build_phantom
    from workbench.phantom.mri import synthesize_t2

    phantom = build_phantom(SpineParameters(seed=SEED, bmi=BMI, age_years=55.0))
    return phantom, synthesize_t2(phantom, "seed-3d-space", seed=SEED)


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory, phantom_and_mri) -> Path:
    """A case bundle made as a user makes one: the MRI, then named Mri landmarks (no label map)."""
    phantom, mri = phantom_and_mri
    folder = tmp_path_factory.mktemp("segment")
    sitk.WriteImage(mri, str(folder / "t2.nrrd"))
    case_path = new_case(folder / "case", mri=folder / "t2.nrrd")
    case = load_case(case_path)
    case.landmarks = [
        Landmark(name, "Mri", tuple(float(v) for v in point)) for name, point in phantom.landmarks_lps.items()
    ]
    save_case(case, case_path)
    return case_path


# -- figures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def figures():
    return evaluate_generated(SEED, BMI, fle_mm=1.0)


def test_posterior_bone_surface_distance_on_a_generated_case(figures):
    # measured 1.02 / 3.32 mm (the p95 misses the 3 mm here); the grid alone
    # (2.28 x 1 x 2.28 mm voxels) costs 0.5 / 1.1 mm
    assert figures["posterior_surface_msd_mm"] <= 1.3
    assert figures["posterior_surface_p95_mm"] <= 4.0
    assert figures["grid_floor_msd_mm"] <= figures["posterior_surface_msd_mm"]


def test_canal_dice_on_a_generated_case(figures):
    assert figures["canal_dice"] >= 0.88  # measured 0.938


def test_every_vertebra_carries_its_level(figures):
    assert figures["levels"] == {level: level for level in ("L1", "L2", "L3", "L4", "L5", "S1")}
    assert figures["level_correct_percent"] == 100.0


def test_the_real_tptbox_mri_crop_within_its_measured_figures(shared_data):
    """Real anatomy, landmarks derived from the reference masks (the goals are not met here, as documented).

    Measured when written: MSD 3.09 mm, p95 7.04 mm, canal Dice 0.698, 3/3 levels (docs/segmentation.md).
    """
    figures = evaluate_real_crop("mri")
    assert figures["landmarks"] >= 12
    assert figures["posterior_surface_msd_mm"] <= 3.6
    assert figures["posterior_surface_p95_mm"] <= 8.5
    assert figures["canal_dice"] >= 0.6
    assert figures["levels"] == {"L1": "L1", "L2": "L2", "L3": "L3"}


# -- level labelling ----------------------------------------------------------------------------------


def test_landmarks_are_grouped_by_the_level_they_name():
    grouped = landmarks_by_level(
        {"L4 spinous process tip": [0, 1, 2], "L4-L5 left facet joint": [1, 2, 3], "skin marker 1": [0, 0, 0]}
    )
    assert set(grouped) == {"L4", "L5"}
    assert set(grouped["L4"]) == {"L4 spinous process tip", "L4-L5 left facet joint"}


def test_the_segmented_bone_under_each_landmark_carries_its_level(phantom_and_mri):
    phantom, mri = phantom_and_mri
    segmentation = segment_mri(mri, phantom.landmarks_lps)
    label_map = segmentation.label_map
    for level in ("L1", "L2", "L3", "L4", "L5"):
        value = int(label_map.values_at(phantom.landmarks_lps[f"{level} body centre"][None])[0])
        assert label_map.names[value] == f"vertebral_body_{level}"
    # the nerve-root corridors of the target levels, by side (LPS +x is the patient's left)
    names = set(label_map.names.values())
    for level in ("L3", "L4", "L5"):
        assert {f"nerve_root_{level}_left", f"nerve_root_{level}_right"} <= names
    for fit in segmentation.fits.values():
        assert fit.model == "similarity" and fit.rms_residual_mm < 2.0  # exact landmarks, other seed


def test_levels_follow_the_landmark_names_not_a_count(phantom_and_mri):
    """Only L4's landmarks: only L4 is drawn, and it is drawn where those landmarks are."""
    phantom, mri = phantom_and_mri
    only_l4 = {name: p for name, p in phantom.landmarks_lps.items() if name.startswith("L4 ")}
    label_map = segment_mri(mri, only_l4).label_map
    levels = {label_map.levels[v] for v in label_map.values_of(["SPINOUS_PROCESS", "VERTEBRAL_BODY", "LAMINA"])}
    assert levels == {"L4"}
    value = int(label_map.values_at(phantom.landmarks_lps["L4 body centre"][None])[0])
    assert label_map.names[value] == "vertebral_body_L4"


def test_an_affine_fit_recovers_a_known_transform_of_the_template():
    template = template_landmarks()
    truth = np.eye(4)
    truth[:3, :3] = np.diag([1.05, 0.95, 1.02])
    truth[:3, 3] = [3.0, -2.0, 5.0]
    moved = {name: truth[:3, :3] @ p + truth[:3, 3] for name, p in template.items()}
    fits = fit_level_transforms(template, moved, "affine")
    assert set(fits) == {"L1", "L2", "L3", "L4", "L5", "S1"}
    for fit in fits.values():
        assert np.allclose(fit.template_to_mri, truth, atol=1e-6)


def test_a_similarity_fit_recovers_a_rotated_scaled_template():
    template = template_landmarks()
    angle = np.radians(10.0)
    rotation = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    truth = np.eye(4)
    truth[:3, :3] = 1.08 * rotation
    truth[:3, 3] = [-4.0, 7.0, 1.0]
    moved = {name: truth[:3, :3] @ p + truth[:3, 3] for name, p in template.items()}
    for fit in fit_level_transforms(template, moved, "similarity").values():
        assert np.allclose(fit.template_to_mri, truth, atol=1e-6)
        assert fit.scale == pytest.approx(1.08) and fit.rms_residual_mm < 1e-6


# -- bad input -------------------------------------------------------------------------------------------


def test_misplaced_landmarks_are_refused_with_the_level_named():
    template = template_landmarks()
    squashed = {name: 0.3 * p for name, p in template.items() if name.startswith("L3 ")}
    with pytest.raises(SegmentationError, match="L3 landmarks"):
        fit_level_transforms(template, squashed)


def test_no_named_landmarks_is_refused(phantom_and_mri):
    _, mri = phantom_and_mri
    with pytest.raises(SegmentationError, match="three named landmarks"):
        segment_mri(mri, {"skin marker 1": [0.0, 90.0, 0.0], "my point": [1.0, 2.0, 3.0]})


def test_landmarks_outside_the_mri_are_refused(phantom_and_mri):
    phantom, mri = phantom_and_mri
    far = {name: p + [0.0, 0.0, 2000.0] for name, p in phantom.landmarks_lps.items()}
    with pytest.raises(SegmentationError, match="outside the MRI"):
        segment_mri(mri, far)


def test_a_2d_image_is_refused():
    with pytest.raises(SegmentationError, match="3D"):
        segment_mri(sitk.Image(10, 10, sitk.sitkUInt16), {})


def test_cli_refuses_a_case_without_landmarks_and_attaches_nothing(tmp_path, capsys, phantom_and_mri):
    _, mri = phantom_and_mri
    sitk.WriteImage(mri, str(tmp_path / "t2.nrrd"))
    case_path = new_case(tmp_path / "case", mri=tmp_path / "t2.nrrd")
    before = (case_path / "case.json").read_bytes()
    assert main(["segment", str(case_path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "landmarks" in err and str(case_path) in err
    assert (case_path / "case.json").read_bytes() == before
    assert not (case_path / "labels").exists() or not any((case_path / "labels").iterdir())


def test_cli_refuses_a_case_without_mri(tmp_path, capsys):
    folder = tmp_path / "case"
    folder.mkdir()
    from workbench.case import Case

    save_case(Case(case_id="NO-MRI-1"), folder)
    assert main(["segment", str(folder), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no MRI" in err


def test_cli_refuses_a_folder_that_is_not_a_case(tmp_path, capsys):
    assert main(["segment", str(tmp_path), "--quiet"]) == 2
    assert "case.json" in capsys.readouterr().err


# -- the command line attaches a named label map -------------------------------------------------------------


def test_cli_attaches_a_label_map_with_its_table(case_dir, tmp_path, capsys):
    out = tmp_path / "copy.nii.gz"
    assert main(["segment", str(case_dir), "--out", str(out), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["levels"] == ["L1", "L2", "L3", "L4", "L5", "S1"]
    case = load_case(case_dir)  # digests verified
    label_map = read_case_label_map(case, case_dir)
    assert isinstance(label_map, LabelMap)
    attached = next(a for a in case.attachments if a.role == "label_map")
    table = read_label_table(sidecar_path(case_dir / attached.path))
    assert dict(label_map.names) == table
    assert label_map.array.shape == tuple(case.mri.size_px[::-1])
    assert {"spinous_process_L4", "lamina_L4", "transverse_process_L4_left", "csf", "nerve_root_L4_right"} <= set(table.values())
    assert label_map.bone_mask().sum() > 10_000
    provenance = json.loads((case_dir / PROVENANCE_FILE).read_text())
    assert provenance["method"].startswith("landmark-driven fit")
    assert provenance["mri"]["sha256"] == case.mri.sha256 and len(provenance["input_sha256"]) == 64
    assert provenance["parameters"]["fit_model"] == "similarity" and provenance["software"].startswith("workbench ")
    # the --out copy holds the same labels and table
    copy = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    assert np.array_equal(copy, label_map.array)
    assert read_label_table(sidecar_path(out)) == table


def test_a_failed_attach_leaves_the_case_as_it_was(case_dir, monkeypatch, phantom_and_mri):
    import workbench.case.storage as storage

    before = (case_dir / "case.json").read_bytes()
    previous = {p.name: p.read_bytes() for p in (case_dir / "labels").iterdir()} if (case_dir / "labels").exists() else {}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(storage, "save_case", broken)
    with pytest.raises(OSError, match="disk full"):
        segment_case(case_dir, parameters=SegmentParameters(fit_model="affine"))
    assert (case_dir / "case.json").read_bytes() == before
    after = {p.name: p.read_bytes() for p in (case_dir / "labels").iterdir()} if (case_dir / "labels").exists() else {}
    assert after == previous
