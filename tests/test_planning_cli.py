"""``workbench plan`` on the synthetic demo case: every export written, valid, and re-checkable."""

from __future__ import annotations

import argparse
import json
import re

import numpy as np
import pytest
from jsonschema import Draft7Validator

from workbench.errors import PlanError
from workbench.phantom.democase import DemoCaseSpec, generate_demo_case
from workbench.planning.cli import EXIT_BLOCKED, register
from workbench.planning.export import load_plan, read_registration_transform, write_plan_json


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="workbench")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["plan", *argv])
    return args.func(args)


@pytest.fixture(scope="module")
def demo_case(tmp_path_factory):
    spec = DemoCaseSpec(seed=3, sweep_speed_mm_s=90.0, sweeps=("transverse",), posture_change=False)
    return generate_demo_case(tmp_path_factory.mktemp("plan-case") / "case", spec)


@pytest.fixture(scope="module")
def built(demo_case, tmp_path_factory):
    out = tmp_path_factory.mktemp("plan-out")
    assert _run(str(demo_case), "--out", str(out), "--author", "QA") == 0
    return out / "DEMO-LUMBAR-001-expert"


def test_build_writes_every_export_of_the_expert_plan(built, demo_case, shared_data, capsys):
    assert sorted(p.name for p in built.iterdir()) == [
        "plan.csv", "plan.json", "plan.mrk.json", "registration.h5", "registration.tfm", "report.html"
    ]
    ground_truth = json.loads((demo_case / "ground_truth.json").read_text())
    plan = load_plan(built / "plan.json")
    assert len(plan.trajectories) == len(ground_truth["expert_plans"]) == 8
    document = json.loads((built / "plan.json").read_text())
    for expert, trajectory in zip(ground_truth["expert_plans"], document["trajectories"]):
        assert trajectory["structure"] == expert["target"]
        assert trajectory["derived"]["insertion_depth_mm"] == pytest.approx(expert["insertion_depth_mm"], abs=1e-9)
        # the S1 roots run close to the expert path just outside the 5 mm target zone
        expected = "warning" if expert["target"].startswith("S1") else "ok"
        assert trajectory["safety"]["status"] == expected, trajectory["safety"]["reasons"]
        assert 0.0 <= trajectory["derived"]["angle_to_skin_normal_deg"] < 45.0
    assert document["provenance"]["author"] == "QA"
    assert re.fullmatch(r"[0-9a-f]{64}", document["provenance"]["mri_digest"])
    reference_to_mri = np.reshape(ground_truth["ReferenceToMri"], (4, 4))
    assert np.allclose(read_registration_transform(built / "registration.h5").matrix, reference_to_mri, atol=1e-9)
    schema = json.loads((shared_data / "slicer-markups-schema" / "markups-schema-v1.0.3.json").read_text())
    assert list(Draft7Validator(schema).iter_errors(json.loads((built / "plan.mrk.json").read_text()))) == []
    report = (built / "report.html").read_text()
    assert report.count("data:image/png;base64,") == 5 * 8
    assert report.count("<figcaption>Fused US/MRI, 50 % blend") == 8


def test_check_reruns_the_safety_checks_with_the_case_label_map(built, demo_case, capsys):
    capsys.readouterr()
    assert _run(str(demo_case), "--check", str(built / "plan.json")) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["label_map_checked"] is True
    statuses = {t["name"]: t["status"] for t in summary["plans"][0]["trajectories"]}
    assert statuses == {name: ("warning" if name.startswith("S1") else "ok") for name in statuses}


def test_check_without_labels_says_what_was_not_checked(built, capsys):
    capsys.readouterr()
    assert _run("--check", str(built / "plan.json")) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["label_map_checked"] is False
    assert summary["plans"][0]["trajectories"][0]["reasons"] == ["no label map: critical structures and bone were not checked"]


def test_check_flags_a_too_short_needle_and_exits_blocked(built, tmp_path, capsys):
    import dataclasses

    from workbench.planning.model import NeedleSpec

    plan = load_plan(built / "plan.json")
    short = dataclasses.replace(plan, trajectories=(dataclasses.replace(plan.trajectories[0], needle=NeedleSpec(50.0, "23G")),))
    write_plan_json(short, tmp_path / "short.json")
    capsys.readouterr()
    assert _run("--check", str(tmp_path / "short.json")) == EXIT_BLOCKED
    reasons = json.loads(capsys.readouterr().out)["plans"][0]["trajectories"][0]["reasons"]
    assert any("50 mm 23G needle is" in r and "too short" in r for r in reasons)


def test_plans_saved_in_the_case_are_built_instead_of_the_expert_plans(built, demo_case, tmp_path):
    import shutil

    from workbench.case import Attachment, load_case, path_sha256, save_case

    case_dir = tmp_path / "case"
    shutil.copytree(demo_case, case_dir)
    plan = load_plan(built / "plan.json")
    saved = tmp_path / "case" / "plans" / "plan.json"
    write_plan_json(type(plan)("MY-PLAN", plan.trajectories[:1], plan.provenance, plan.registration), saved)
    case = load_case(case_dir)
    case.attachments.append(Attachment("plan", "plans/plan.json", path_sha256(saved), "a saved plan"))
    save_case(case, case_dir)
    assert _run(str(case_dir), "--out", str(tmp_path / "out"), "--no-ultrasound") == 0
    rebuilt = load_plan(tmp_path / "out" / "MY-PLAN" / "plan.json")
    assert [t.name for t in rebuilt.trajectories] == ["L3 left"]
    assert "no ultrasound volume to fuse" in (tmp_path / "out" / "MY-PLAN" / "report.html").read_text()


def test_bad_invocations_raise_plan_errors(tmp_path):
    with pytest.raises(PlanError, match="give CASE_DIR and --out OUT_DIR"):
        _run(str(tmp_path))
    with pytest.raises(PlanError, match="no such plan file"):
        _run("--check", str(tmp_path / "missing.json"))


def _small_case(folder, attachments: dict | None = None):
    """A case with a 10^3 MRI and the given attachments (role -> (relative path, text or volume))."""
    import SimpleITK as sitk

    from workbench.case import Attachment, Case, MriRef, add_file, path_sha256, save_case
    from workbench.io.volume import save_volume

    folder.mkdir(parents=True, exist_ok=True)
    save_volume(sitk.Image(10, 10, 10, sitk.sitkUInt8), folder.parent / "mri.nrrd")
    relative, digest = add_file(folder, folder.parent / "mri.nrrd", "mri")
    case = Case("SMALL", mri=MriRef(relative, digest))
    for role, (relative, content) in (attachments or {}).items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content)
        else:
            save_volume(content, path)
        case.attachments.append(Attachment(role, relative, path_sha256(path)))
    save_case(case, folder)
    return folder


def test_cases_without_plans_or_with_malformed_expert_plans_are_refused(tmp_path):
    import SimpleITK as sitk

    bare = _small_case(tmp_path / "bare" / "case")
    with pytest.raises(PlanError, match="no saved plans and no expert_plans"):
        _run(str(bare), "--out", str(tmp_path / "out"))
    from workbench.planning.model import NeedleSpec, Plan, Trajectory

    plan_path = write_plan_json(Plan("P", (Trajectory("a", "b", (0, 0, 0), (0, 9, 0), NeedleSpec(50.0, "23G")),)), tmp_path / "p.json")
    with pytest.raises(PlanError, match="the case has no label map attachment"):
        _run(str(bare), "--check", str(plan_path))
    from workbench.io.ground_truth import GROUND_TRUTH_FORMAT

    plan = {"target": "L4 right", "target_lps_mm": [0, 0, 0], "entry_lps_mm": [0, 60, 0], "insertion_depth_mm": 60.0,
            "needle": {"length_mm": 90.0, "gauge": "19G"}, "injectate_ml": 6.0, "approach": "paramedian"}
    document = {"format": GROUND_TRUTH_FORMAT, "ReferenceToMri": np.eye(4).ravel().tolist(), "targets_mri": {},
                "landmarks_mri": {}, "expert_plans": [plan]}
    labels = ("labels/labels.nrrd", sitk.Image(10, 10, 10, sitk.sitkUInt8))
    malformed = _small_case(tmp_path / "malformed" / "case", {"ground_truth": ("ground_truth.json", json.dumps(document)),
                                                              "label_map": labels})
    with pytest.raises(PlanError, match="an expert plan in ground_truth.json is malformed .*unknown needle gauge '19G'"):
        _run(str(malformed), "--out", str(tmp_path / "out"))
    del plan["entry_lps_mm"]
    incomplete = _small_case(tmp_path / "incomplete" / "case", {"ground_truth": ("ground_truth.json", json.dumps(document)),
                                                                "label_map": labels})
    with pytest.raises(PlanError, match=r"cannot read ground_truth.json \(expert_plans\[0\] has no key 'entry_lps_mm'\)"):
        _run(str(incomplete), "--out", str(tmp_path / "out"))
    broken = _small_case(tmp_path / "broken" / "case", {"ground_truth": ("ground_truth.json", "{")})
    with pytest.raises(PlanError, match="cannot read ground_truth.json"):
        _run(str(broken), "--out", str(tmp_path / "out"))
