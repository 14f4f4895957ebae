"""Plan exports: plan.json + schema, Slicer markups, ITK transforms, CSV, HTML report, no identifiers."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
import SimpleITK as sitk
from jsonschema import Draft7Validator

from dicom_factory import IDENTIFIERS, write_series
from workbench.errors import PlanError
from workbench.frames import Transform
from workbench.io.dicom import load_dicom_series
from workbench.planning.export import (
    CSV_COLUMNS,
    load_plan,
    plan_to_dict,
    points_from_markups,
    read_registration_transform,
    trajectories_from_markups,
    write_csv,
    write_markups,
    write_plan_json,
    write_registration_transform,
)
from workbench.planning.model import NeedleSpec, Plan, Provenance, RegistrationSummary, Trajectory
from workbench.planning.report import VolumeSampler, encode_png, render_report, write_report
from workbench.planning.safety import SafetyThresholds, check_trajectory

# ReferenceToMri: 30 deg about S, then a shift
_C, _S = np.cos(np.radians(30)), np.sin(np.radians(30))
REFERENCE_TO_MRI = Transform.from_name(
    "ReferenceToMri", [[_C, -_S, 0.0, 12.0], [_S, _C, 0.0, -4.0], [0.0, 0.0, 1.0, 7.5], [0.0, 0.0, 0.0, 1.0]]
)


def _plan(mri_digest: str | None = "ab" * 32) -> Plan:
    needle = NeedleSpec(50.0, "23G")
    trajectories = (
        Trajectory("L4 right", "L4 right exiting nerve root", (-3.0, 22.0, 34.0), (-3.0, 50.0, 40.0), needle,
                   6.0, "ropivacaine 0.375 %", "paramedian in-plane", (0.0, 1.0, 0.0)),
        Trajectory("L5 right", "L5 right exiting nerve root", (-2.0, 24.0, 30.0), (-1.0, 52.0, 30.0), needle),
    )
    registration = RegistrationSummary("landmarks", REFERENCE_TO_MRI, fre_mm=1.2, tre_mm=2.5)
    provenance = Provenance(mri_digest=mri_digest, author="AB", created_utc="2026-01-02T03:04:05Z")
    return Plan("PLAN-1", trajectories, provenance, registration, "test plan")


def _markups_validator(shared_data) -> Draft7Validator:
    schema = json.loads((shared_data / "slicer-markups-schema" / "markups-schema-v1.0.3.json").read_text())
    return Draft7Validator(schema)


def test_plan_json_round_trips_and_carries_derived_values(tmp_path):
    plan = _plan()
    path = write_plan_json(plan, tmp_path / "plan.json", thresholds=SafetyThresholds())
    document = json.loads(path.read_text())
    assert document["schema_version"] == 2
    derived = document["trajectories"][0]["derived"]
    assert derived["insertion_depth_mm"] == pytest.approx(np.hypot(28.0, 6.0))
    assert derived["remaining_needle_mm"] == pytest.approx(50.0 - np.hypot(28.0, 6.0))
    assert derived["reference"]["entry_mm"] == pytest.approx(REFERENCE_TO_MRI.inverse().apply_to_points([-3.0, 50.0, 40.0]))
    loaded = load_plan(path)
    assert plan_to_dict(loaded) == plan_to_dict(plan)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(plan_id="bad id!"), "plan schema at plan_id"),
        (lambda d: d["trajectories"][0].update(target_lps_mm=[1, 2]), "plan schema at trajectories/0/target_lps_mm"),
        (lambda d: d.update(extra=1), "Additional properties are not allowed"),
        (lambda d: d.update(schema_version=9), "schema version 9; this workbench reads up to 2"),
        (lambda d: d.update(format="other"), "not a workbench plan"),
        (lambda d: d["trajectories"][0]["needle"].update(gauge="19G"), "unknown needle gauge '19G'"),
        (lambda d: d["registration"].update(ReferenceToMri=[1.0] * 16), "last row must be 0 0 0 1"),
        (lambda d: d["trajectories"].append(d["trajectories"][0]), "repeated: L4 right"),
    ],
)
def test_loading_a_bad_plan_names_the_problem(tmp_path, edit, message):
    document = plan_to_dict(_plan())
    edit(document)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(document))
    with pytest.raises(PlanError, match=re.escape(message)):
        load_plan(path)


def test_unreadable_plan_files_raise_plan_errors(tmp_path):
    with pytest.raises(PlanError, match="no such plan file"):
        load_plan(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(PlanError, match="plan is not valid JSON"):
        load_plan(tmp_path / "broken.json")


def test_writing_refuses_a_plan_the_schema_rejects(tmp_path):
    plan = Plan("bad id!", _plan().trajectories)
    with pytest.raises(PlanError, match="plan schema at plan_id"):
        write_plan_json(plan, tmp_path / "plan.json")
    assert not (tmp_path / "plan.json").exists()


def test_slicer_markups_validate_and_import_back(tmp_path, shared_data):
    plan = _plan()
    path = write_markups(plan, tmp_path / "plan.mrk.json")
    document = json.loads(path.read_text())
    assert list(_markups_validator(shared_data).iter_errors(document)) == []
    assert [m["type"] for m in document["markups"]] == ["Fiducial", "Line", "Line"]
    assert {m["coordinateSystem"] for m in document["markups"]} == {"LPS"}
    imported = trajectories_from_markups(path, NeedleSpec(90.0, "22G"))
    assert [t.name for t in imported] == ["L4 right", "L5 right"]
    assert imported[0].entry_lps_mm == (-3.0, 50.0, 40.0)
    assert imported[0].target_lps_mm == (-3.0, 22.0, 34.0)


def test_ras_lines_and_labelled_points_are_imported_as_lps(tmp_path):
    document = {
        "@schema": "x",
        "markups": [
            {"type": "Line", "name": "drawn", "coordinateSystem": "RAS",
             "controlPoints": [{"position": [1.0, 2.0, 3.0]}, {"position": [4.0, 5.0, 6.0]}]},
            {"type": "Fiducial", "coordinateSystem": "LPS",
             "controlPoints": [{"label": "p entry", "position": [0, 0, 0]}, {"label": "p target", "position": [0, 0, 9]}]},
        ],
    }
    path = tmp_path / "drawn.mrk.json"
    path.write_text(json.dumps(document))
    drawn, pair = trajectories_from_markups(path, NeedleSpec(50.0, "23G"))
    assert (drawn.entry_lps_mm, drawn.target_lps_mm) == ((-1.0, -2.0, 3.0), (-4.0, -5.0, 6.0))
    assert (pair.name, pair.target_lps_mm) == ("p", (0.0, 0.0, 9.0))


def test_markups_without_trajectories_or_with_bad_lines_are_refused(tmp_path, shared_data):
    example = shared_data / "slicer-markups-schema" / "example_pointlist_from_slicer_docs.mrk.json"
    with pytest.raises(PlanError, match="no trajectory in the markups"):
        trajectories_from_markups(example, NeedleSpec(50.0, "23G"))
    path = tmp_path / "three.mrk.json"
    path.write_text(json.dumps({"markups": [{"type": "Line", "controlPoints": [{"position": [0, 0, i]} for i in range(3)]}]}))
    with pytest.raises(PlanError, match="line markup 0 has 3 control points"):
        trajectories_from_markups(path, NeedleSpec(50.0, "23G"))


def test_slicer_docs_point_list_imports(shared_data):
    points = points_from_markups(shared_data / "slicer-markups-schema" / "example_pointlist_from_slicer_docs.mrk.json")
    assert list(points) == ["F-1", "F-2", "F-3"]
    assert points["F-2"] == pytest.approx([49.8682950191571, -88.58955938697324, 0.0])


@pytest.mark.parametrize("suffix", [".tfm", ".h5"])
def test_itk_transform_round_trip_and_direction(tmp_path, suffix):
    path = write_registration_transform(REFERENCE_TO_MRI, tmp_path / f"registration{suffix}")
    assert read_registration_transform(path).allclose(REFERENCE_TO_MRI, atol=1e-9)
    # ITK resampling convention, fixed = Mri, moving = Reference: the file maps Mri points to Reference
    mri_point = np.array([10.0, -20.0, 30.0])
    reference_point = sitk.ReadTransform(str(path)).TransformPoint(mri_point.tolist())
    assert reference_point == pytest.approx(REFERENCE_TO_MRI.inverse().apply_to_points(mri_point), abs=1e-9)
    assert REFERENCE_TO_MRI.apply_to_points(reference_point) == pytest.approx(mri_point, abs=1e-9)


def test_itk_transform_bad_inputs(tmp_path):
    with pytest.raises(PlanError, match="end in .tfm or .h5, got '.txt'"):
        write_registration_transform(REFERENCE_TO_MRI, tmp_path / "r.txt")
    with pytest.raises(PlanError, match="must be ReferenceToMri, got MriToReference"):
        write_registration_transform(REFERENCE_TO_MRI.inverse(), tmp_path / "r.tfm")
    with pytest.raises(PlanError, match="no such transform file"):
        read_registration_transform(tmp_path / "none.tfm")


def test_csv_has_one_row_per_trajectory_with_units_in_the_columns(tmp_path):
    path = write_csv(_plan(), tmp_path / "plan.csv")
    rows = list(csv.DictReader(path.open()))
    assert tuple(rows[0]) == CSV_COLUMNS
    texts = {"name", "structure", "needle_gauge", "drugs", "approach", "safety_status", "safety_reasons", "structures_not_checked"}
    assert all(re.search(r"_(mm|deg|ml)$", c) for c in CSV_COLUMNS if c not in texts)
    assert [r["name"] for r in rows] == ["L4 right", "L5 right"]
    assert float(rows[0]["insertion_depth_mm"]) == pytest.approx(np.hypot(28.0, 6.0), abs=0.01)
    assert float(rows[0]["angle_to_skin_normal_deg"]) == pytest.approx(np.degrees(np.arctan(6.0 / 28.0)), abs=0.01)


def test_png_encoder_round_trips_through_simpleitk(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (7, 5, 3), dtype=np.uint8)
    (tmp_path / "x.png").write_bytes(encode_png(rgb))
    decoded = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "x.png")))
    assert np.array_equal(decoded, rgb)


def test_report_embeds_five_views_per_trajectory_and_the_status():
    volume = np.arange(40 * 60 * 50, dtype=np.float32).reshape(40, 60, 50)
    mri = VolumeSampler(volume, np.diag([1.0, 1.0, 1.0, 1.0]))
    plan = _plan()
    text = render_report(plan, mri, us=mri, safety={"L4 right": check_trajectory(plan.trajectories[0], None)})
    # both targets lie outside the volume (x < 0) that stands in for the sweep: no fused image
    assert text.count("data:image/png;base64,") == 8 and text.count("no sweep covers this target") == 2 * 2
    assert "Fused US/MRI, 50 % blend" not in text and "Safety: INCOMPLETE" in text and "Safety: NOT CHECKED" in text
    assert "@media print" in text
    assert "<script" not in text and "http" not in text  # self-contained


def test_no_patient_identifier_in_any_export(tmp_path, shared_data):
    series = write_series(tmp_path / "dicom", n_slices=12, rows=40, cols=40, pixel_spacing_mm=(2.0, 2.0), slice_step_mm=3.0)
    mri = load_dicom_series(series.folder)
    plan = _plan(mri_digest=mri.source_digest)
    out = tmp_path / "out"
    reports = {t.name: check_trajectory(t, None) for t in plan.trajectories}
    files = [
        write_plan_json(plan, out / "plan.json", reports),
        write_markups(plan, out / "plan.mrk.json"),
        write_csv(plan, out / "plan.csv", reports),
        write_report(out / "report.html", plan, VolumeSampler.from_volume(mri), None, reports),
        write_registration_transform(REFERENCE_TO_MRI, out / "registration.tfm"),
        write_registration_transform(REFERENCE_TO_MRI, out / "registration.h5"),
    ]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in files)
    forbidden = [*IDENTIFIERS.values(), series.series_uid, series.study_uid, "Doe^Jane", "8675309"]
    for path in files:
        data = path.read_bytes()
        for value in forbidden:
            assert value.encode() not in data, f"{value} in {path.name}"
    assert json.loads(files[0].read_text())["provenance"]["mri_digest"] == mri.source_digest
