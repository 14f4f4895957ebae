"""A case made from a real DICOM series, carried to an exported plan: no identifying value anywhere.

The bundle itself is checked byte by byte in tests/test_new_case.py; here the same search runs over
everything `workbench plan` writes after landmarks, an accepted registration, a target and its entry
have been added, so the claim covers the exports too (plan.json, Slicer markups, CSV, ITK
transforms, report.html with its embedded images).
"""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np

from tests.real_cases import DICOM_ROOT, fresh_dicom_case_fixture  # noqa: F401 (fixture)
from tests.test_new_case import _run, _source_identifiers
from workbench.case import Landmark, Target, load_case, save_case
from workbench.case.model import with_registration
from workbench.case.readiness import ENTRY_STRUCTURE
from workbench.io.volume import load_volume
from workbench.registration.landmarks import pair_landmarks, register_landmarks
from workbench.registration.result import saved_registration


def test_plan_exports_of_a_real_dicom_case_hold_no_identifier(fresh_dicom_case, shared_data, capsys):
    case_dir = fresh_dicom_case
    case = load_case(case_dir)
    mri = load_volume(case_dir / case.mri.path)
    centre_lps = mri.mri_voxel_to_mri.apply_to_points((np.array(mri.size) - 1) / 2.0)

    # four landmark pairs related by a known ReferenceToMri (a 90 mm shift and a 10 degree turn)
    angle = np.deg2rad(10.0)
    reference_to_mri = np.eye(4)
    reference_to_mri[:3, :3] = [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    reference_to_mri[:3, 3] = [90.0, -20.0, 5.0]
    offsets_mm = np.array([[30, 0, 0], [0, 30, 0], [0, 0, 30], [-20, -20, 10]], float)
    landmarks = []
    for number, offset_mm in enumerate(offsets_mm):
        point_mri = centre_lps + offset_mm
        point_reference = np.linalg.solve(reference_to_mri, np.append(point_mri, 1.0))[:3]
        landmarks += [Landmark(f"mark {number}", "Mri", tuple(point_mri), pair=f"mark {number}"),
                      Landmark(f"mark {number} (US)", "Reference", tuple(point_reference), pair=f"mark {number}")]
    pairs = pair_landmarks(landmarks)
    fit = register_landmarks(pairs.names, pairs.points_reference, pairs.points_mri)
    np.testing.assert_allclose(fit.transform.matrix, reference_to_mri, atol=1e-9)
    target_lps = centre_lps
    entry_lps = centre_lps + np.array([0.0, 0.0, 60.0])
    case = with_registration(
        dataclasses.replace(case, landmarks=landmarks, targets=[
            Target("T1", "nerve root", tuple(target_lps)), Target("T1 entry", ENTRY_STRUCTURE, tuple(entry_lps))]),
        saved_registration(fit),
    )
    save_case(case, case_dir)

    out_dir = case_dir.parent / "exports"
    code, out, err = _run(["plan", case_dir, "--out", out_dir, "--no-ultrasound"], capsys)
    assert code == 0, err
    exported = sorted(p for p in out_dir.rglob("*") if p.is_file())
    names = {p.name for p in exported}
    assert {"plan.json", "plan.mrk.json", "plan.csv", "report.html", "registration.tfm", "registration.h5"} <= names
    plan = json.loads(next(p for p in exported if p.name == "plan.json").read_text())
    assert plan["registration"]["registration_id"] == case.current_registration_id
    assert plan["registration"]["fre_mm"] < 1e-9  # the landmarks fit exactly
    trajectory = plan["trajectories"][0]
    assert np.allclose(trajectory["target_lps_mm"], target_lps) and np.allclose(trajectory["entry_lps_mm"], entry_lps)

    identifying = _source_identifiers(shared_data / DICOM_ROOT)
    assert len(identifying) > 100
    blobs = {p.relative_to(out_dir).as_posix(): p.read_bytes() for p in exported}
    blobs.update({f"bundle/{p.relative_to(case_dir).as_posix()}": p.read_bytes() for p in case_dir.rglob("*") if p.is_file()})
    blobs["stdout"] = out.encode()
    blobs["file names"] = "\n".join(blobs).encode()
    text_names = [n for n in blobs if n.endswith((".json", ".csv", ".html", ".tfm")) or n in ("stdout", "file names")]
    for value in identifying:
        needle = value.encode()
        if len(value) >= 5:
            hits = [name for name, blob in blobs.items() if needle in blob]
        elif len(value) >= 2:
            pattern = re.compile(rb"(?<![A-Za-z0-9.])" + re.escape(needle) + rb"(?![A-Za-z0-9])", re.IGNORECASE)
            hits = [name for name in text_names if pattern.search(blobs[name])]
        else:
            continue
        assert hits == [], f"{value!r} found in {hits}"
