"""``workbench plan``: the case's own targets and entries, saved plans, the demo's expert plans (``--expert``);
every export written, valid, re-checkable, and a blocked trajectory marked BLOCKED with its reasons in each."""

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


#: The registration saved in the test copy of the demo case: the ground truth moved 1.5 mm to the left,
#: so a plan that used the ground truth instead of the case's registration would show.
REGISTRATION_SHIFT_MM = np.array([1.5, 0.0, 0.0])


@pytest.fixture(scope="module")
def registered_case(demo_case, tmp_path_factory):
    """A copy of the demo case with a saved, current registration (not the ground truth)."""
    import shutil

    from workbench.case import SavedRegistration, load_case, save_case, with_registration
    from workbench.frames import Transform

    copy = tmp_path_factory.mktemp("registered") / "case"
    shutil.copytree(demo_case, copy)
    truth = np.reshape(json.loads((copy / "ground_truth.json").read_text())["ReferenceToMri"], (4, 4))
    moved = truth.copy()
    moved[:3, 3] += REGISTRATION_SHIFT_MM
    saved = SavedRegistration("reg-test", "landmarks", Transform.from_name("ReferenceToMri", moved), fre_mm=1.25,
                              tre_mm={"L3 left": 2.0, "S1 right": 3.5})
    save_case(with_registration(load_case(copy), saved), copy)
    return copy


@pytest.fixture(scope="module")
def built(registered_case, tmp_path_factory):
    out = tmp_path_factory.mktemp("plan-out")
    assert _run(str(registered_case), "--out", str(out), "--author", "QA", "--expert") == 0
    return out / "DEMO-LUMBAR-001-expert"


def test_the_demo_case_has_targets_but_no_entries_so_only_expert_plans_are_built(demo_case, tmp_path):
    expected = r"no target has an entry point \('L3 left exiting nerve root, dorsal aspect', .*, 'S1 right .*'\): place an entry"
    with pytest.raises(PlanError, match=expected):
        _run(str(demo_case), "--out", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_build_writes_every_export_of_the_expert_plan(built, registered_case, shared_data, capsys):
    assert sorted(p.name for p in built.iterdir()) == [
        "plan.csv", "plan.json", "plan.mrk.json", "registration.h5", "registration.tfm", "report.html"
    ]
    ground_truth = json.loads((registered_case / "ground_truth.json").read_text())
    plan = load_plan(built / "plan.json")
    assert len(plan.trajectories) == len(ground_truth["expert_plans"]) == 8
    document = json.loads((built / "plan.json").read_text())
    for expert, trajectory in zip(ground_truth["expert_plans"], document["trajectories"]):
        assert trajectory["structure"] == expert["target"]
        assert trajectory["derived"]["insertion_depth_mm"] == pytest.approx(expert["insertion_depth_mm"], abs=1e-9)
        # the MRI slab reaches 15 mm behind the skin (docs/phantom.md): every entry lies inside it; only
        # the S1 roots run close to the expert path (a warning)
        reasons = trajectory["safety"]["reasons"]
        is_s1 = expert["target"].startswith("S1")
        assert not any("outside the MRI" in reason for reason in reasons), reasons
        assert trajectory["safety"]["status"] == ("warning" if is_s1 else "ok"), reasons
        assert len(reasons) == (1 if is_s1 else 0), reasons
        checks = {c["name"]: c for c in trajectory["safety"]["checks"]}
        # measured on the MRI's body mask now that the entry is inside the MRI (2.28 mm pixels across)
        assert abs(checks["entry on the skin"]["value_mm"]) < 1.5 and checks["path through air"]["value_mm"] < 0.5
        assert 0.0 <= trajectory["derived"]["angle_to_skin_normal_deg"] < 45.0
    assert document["provenance"]["author"] == "QA"
    assert re.fullmatch(r"[0-9a-f]{64}", document["provenance"]["mri_digest"])
    assert document["status"] == "warning"
    reference_to_mri = np.reshape(ground_truth["ReferenceToMri"], (4, 4))
    reference_to_mri[:3, 3] += REGISTRATION_SHIFT_MM  # the case's registration, not the ground truth
    assert np.allclose(read_registration_transform(built / "registration.h5").matrix, reference_to_mri, atol=1e-9)
    assert document["registration"]["registration_id"] == "reg-test" and document["registration"]["fre_mm"] == 1.25
    schema = json.loads((shared_data / "slicer-markups-schema" / "markups-schema-v1.0.3.json").read_text())
    assert list(Draft7Validator(schema).iter_errors(json.loads((built / "plan.mrk.json").read_text()))) == []
    report = (built / "report.html").read_text()
    # a fused image only for the targets the transverse sweep covers; the others say so, with no image
    fused = report.count("<figcaption>Fused US/MRI, 50 % blend")
    uncovered = report.count("<figcaption>No fused view: no sweep covers this target")
    assert fused >= 1 and fused + uncovered == 8
    assert report.count("data:image/png;base64,") == 4 * 8 + fused


def test_check_reruns_the_safety_checks_with_the_case_label_map_and_mri(built, demo_case, capsys):
    capsys.readouterr()
    assert _run(str(demo_case), "--check", str(built / "plan.json")) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["label_map_checked"] is True and summary["mri_checked"] is True
    statuses = {t["name"]: t["status"] for t in summary["plans"][0]["trajectories"]}
    assert len(statuses) == 8  # entries inside the MRI: ok, but the S1 roots run close to the expert path
    assert {name for name, status in statuses.items() if status == "warning"} == {n for n in statuses if n.startswith("S1")}
    assert {status for name, status in statuses.items() if not name.startswith("S1")} == {"ok"}
    assert summary["blocked"] == []


def test_check_without_labels_says_what_was_not_checked(built, capsys):
    capsys.readouterr()
    assert _run("--check", str(built / "plan.json")) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["label_map_checked"] is False and summary["mri_checked"] is False
    assert summary["plans"][0]["trajectories"][0]["reasons"] == [
        "not checked: target inside the MRI (no MRI given)",
        "not checked: entry inside the MRI (no MRI given)",
        "not checked: entry on the skin (no MRI given)",
        "not checked: path through air (no MRI given)",
        "not checked: critical structures and bone (no label map)",
    ]


def test_check_flags_a_too_short_needle_and_exits_blocked(built, tmp_path, capsys):
    import dataclasses

    from workbench.planning.model import NeedleSpec

    plan = load_plan(built / "plan.json")
    short = dataclasses.replace(plan, trajectories=(dataclasses.replace(plan.trajectories[0], needle=NeedleSpec(50.0, "23G")),))
    write_plan_json(short, tmp_path / "short.json")
    capsys.readouterr()
    assert _run("--check", str(tmp_path / "short.json")) == 0  # blocked is reported, not an error
    summary = json.loads(capsys.readouterr().out)
    reasons = summary["plans"][0]["trajectories"][0]["reasons"]
    assert any("50 mm 23G needle is" in r and "too short" in r for r in reasons)
    assert len(summary["blocked"]) == 1 and summary["blocked"][0].startswith("DEMO-LUMBAR-001-expert / L3 left: ")
    assert _run("--check", str(tmp_path / "short.json"), "--strict") == EXIT_BLOCKED == 3


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
    with pytest.raises(PlanError, match="the case has no targets and no saved plans"):
        _run(str(bare), "--out", str(tmp_path / "out"))
    with pytest.raises(PlanError, match="--expert: the case has no expert_plans"):
        _run(str(bare), "--out", str(tmp_path / "out"), "--expert")
    from workbench.planning.model import NeedleSpec, Plan, Trajectory

    plan_path = write_plan_json(Plan("P", (Trajectory("a", "b", (0, 0, 0), (0, 9, 0), NeedleSpec(50.0, "23G")),)), tmp_path / "p.json")
    assert _run(str(bare), "--check", str(plan_path)) == 0  # no label map: those checks are "not checked"
    from workbench.io.ground_truth import GROUND_TRUTH_FORMAT

    plan = {"target": "L4 right", "target_lps_mm": [0, 0, 0], "entry_lps_mm": [0, 60, 0], "insertion_depth_mm": 60.0,
            "needle": {"length_mm": 90.0, "gauge": "19G"}, "injectate_ml": 6.0, "approach": "paramedian"}
    document = {"format": GROUND_TRUTH_FORMAT, "ReferenceToMri": np.eye(4).ravel().tolist(), "targets_mri": {},
                "landmarks_mri": {}, "expert_plans": [plan]}
    labels = ("labels/labels.nrrd", sitk.Image(10, 10, 10, sitk.sitkUInt8))
    malformed = _small_case(tmp_path / "malformed" / "case", {"ground_truth": ("ground_truth.json", json.dumps(document)),
                                                              "label_map": labels})
    with pytest.raises(PlanError, match="an expert plan in ground_truth.json is malformed .*unknown needle gauge '19G'"):
        _run(str(malformed), "--out", str(tmp_path / "out"), "--expert")
    del plan["entry_lps_mm"]
    incomplete = _small_case(tmp_path / "incomplete" / "case", {"ground_truth": ("ground_truth.json", json.dumps(document)),
                                                                "label_map": labels})
    with pytest.raises(PlanError, match=r"cannot read ground_truth.json \(expert_plans\[0\] has no key 'entry_lps_mm'\)"):
        _run(str(incomplete), "--out", str(tmp_path / "out"), "--expert")
    broken = _small_case(tmp_path / "broken" / "case", {"ground_truth": ("ground_truth.json", "{")})
    with pytest.raises(PlanError, match="cannot read ground_truth.json"):
        _run(str(broken), "--out", str(tmp_path / "out"), "--expert")


# -- the case's own targets and entries, on an MRI with a known skin -------------------------------------


def _body_case(folder):
    """A case on the flat-back MRI of test_planning_mri_checks (skin at P 49.5 mm, 1 mm voxels, LPS = index):

    ``L4 right`` with its entry on the skin, ``L5 right`` with its entry 30 mm behind the skin (in the air),
    ``far`` 0.5 m above the MRI, ``L3 left`` with no entry, and no registration.
    """
    from test_planning_mri_checks import SKIN_P_MM, body_image

    from workbench.case import Case, MriRef, Target, add_file, save_case
    from workbench.io.volume import save_volume

    folder.mkdir(parents=True, exist_ok=True)
    save_volume(body_image(), folder.parent / "mri.nrrd")
    relative, digest = add_file(folder, folder.parent / "mri.nrrd", "mri")
    targets = [
        Target("L4 right", "nerve root", (40.0, 10.0, 30.0)),
        Target("L4 right entry", "entry point", (40.0, SKIN_P_MM, 30.0)),
        Target("L5 right", "nerve root", (30.0, 10.0, 20.0)),
        Target("L5 right entry", "entry point", (30.0, SKIN_P_MM + 30.0, 20.0)),
        Target("far target", "nerve root", (40.0, 10.0, 559.5)),
        Target("far entry", "entry point", (40.0, SKIN_P_MM, 530.0)),
        Target("L3 left", "nerve root", (50.0, 10.0, 40.0)),
    ]
    save_case(Case("BODY", mri=MriRef(relative, digest), targets=targets), folder)
    return folder


def test_the_case_targets_are_planned_and_a_blocked_one_says_blocked_and_why_in_every_export(tmp_path, capsys):
    case_dir = _body_case(tmp_path / "case")
    capsys.readouterr()
    assert _run(str(case_dir), "--out", str(tmp_path / "out"), "--no-ultrasound") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["registration"] == "missing"
    assert summary["unplanned_targets"] == [{"name": "L3 left", "reason": "no entry placed"}]
    assert summary["unpaired_entries"] == []
    (plan,) = summary["plans"]
    assert (plan["plan_id"], plan["source"], plan["status"]) == ("BODY-targets", "case targets", "blocked")
    statuses = {t["name"]: t["status"] for t in plan["trajectories"]}
    assert statuses == {"L4 right": "incomplete", "L5 right": "blocked", "far target": "blocked"}  # no label map: never ok
    assert [line.split(":")[0] for line in summary["blocked"]] == ["BODY-targets / L5 right", "BODY-targets / far target"]
    folder = tmp_path / "out" / "BODY-targets"
    assert sorted(p.name for p in folder.iterdir()) == ["plan.csv", "plan.json", "plan.mrk.json", "report.html"]  # no registration

    # plan.json: status and reasons per trajectory, every check with its number; the needle chosen from the catalogue
    document = json.loads((folder / "plan.json").read_text())
    load_plan(folder / "plan.json")  # schema-valid
    assert document["status"] == "blocked" and document["registration"] is None
    by_name = {t["name"]: t for t in document["trajectories"]}
    ok = by_name["L4 right"]["safety"]
    assert ok["reasons"] == ["not checked: critical structures and bone (no label map)"]
    assert [c["status"] for c in ok["checks"]] == ["ok", "ok", "ok", "ok", "not checked", "ok"]
    assert by_name["L4 right"]["needle"] == {"length_mm": 50.0, "gauge": "23G"}  # 39.5 mm deep + 10 mm margin
    air = by_name["L5 right"]["safety"]
    assert air["status"] == "blocked"
    air_mm = next(c["value_mm"] for c in air["checks"] if c["name"] == "path through air")
    assert 27.5 <= air_mm <= 30.0
    assert f"path through air {air_mm:.1f} mm (outside the body; tolerance 5 mm)" in air["reasons"]
    assert "target is 500.0 mm outside the MRI volume" in by_name["far target"]["safety"]["reasons"]
    assert by_name["far target"]["derived"]["angle_to_skin_normal_deg"] is None  # no skin normal off the MRI

    # markups: each control point of a blocked path says BLOCKED and why
    markups = json.loads((folder / "plan.mrk.json").read_text())["markups"]
    descriptions = {cp["label"]: cp["description"] for cp in markups[0]["controlPoints"]}
    assert descriptions["L5 right entry"].startswith("BLOCKED: ") and "path through air" in descriptions["L5 right entry"]
    assert descriptions["far target target"].startswith("BLOCKED: target is 500.0 mm outside the MRI volume")
    line = next(m for m in markups if m["name"] == "L5 right")
    assert all(cp["description"].startswith("BLOCKED: ") for cp in line["controlPoints"])
    assert not descriptions["L4 right target"].startswith("BLOCKED")

    # CSV: status and reasons columns
    import csv

    rows = {r["name"]: r for r in csv.DictReader((folder / "plan.csv").open())}
    assert [rows[n]["safety_status"] for n in ("L4 right", "L5 right", "far target")] == ["incomplete", "blocked", "blocked"]
    assert f"path through air {air_mm:.1f} mm" in rows["L5 right"]["safety_reasons"]

    # report.html: a red BLOCKED banner at the top listing both, one on each blocked trajectory, registration missing
    report = (folder / "report.html").read_text()
    assert report.count('<div class="banner blocked">') == 3
    top = report.split('<div class="banner blocked">')[1]
    assert top.startswith("<p>BLOCKED — 2 of 3 trajectories failed a safety check</p>")
    assert "<li>L5 right: " in top and "<li>far target: target is 500.0 mm outside the MRI volume" in top
    assert report.index('class="banner blocked"') < report.index("<h1>")
    assert "Registration missing" in report and "Fused US/MRI" not in report and "Needle plane (no ultrasound" not in report

    # --strict: the same run exits 3
    assert _run(str(case_dir), "--out", str(tmp_path / "strict"), "--no-ultrasound", "--strict") == EXIT_BLOCKED


def test_entries_pair_with_targets_by_name_or_as_the_only_pair():
    from workbench.case import Case, Target
    from workbench.planning.cli import pair_entries

    case = Case("C", targets=[
        Target("L4 right", "nerve root", (0, 0, 0)), Target("L5 target", "nerve root", (0, 0, 1)),
        Target("L4 right entry", "entry point", (0, 9, 0)), Target("L5 entry", "entry point", (0, 9, 1)),
        Target("stray", "entry point", (0, 9, 2)), Target("S1", "nerve root", (0, 0, 2)),
    ])
    pairs, unplanned, unpaired = pair_entries(case)
    assert [(t.name, e.name) for t, e in pairs] == [("L4 right", "L4 right entry"), ("L5 target", "L5 entry")]
    assert unplanned == [{"name": "S1", "reason": "no entry placed"}] and unpaired == ["stray"]
    single = Case("C", targets=[Target("target 1", "nerve root", (0, 0, 0)), Target("entry 1", "entry point", (0, 9, 0))])
    assert [(t.name, e.name) for t, e in pair_entries(single)[0]] == [("target 1", "entry 1")]
