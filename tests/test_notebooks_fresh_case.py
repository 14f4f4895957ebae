"""The notebooks on a fresh case made by ``new_case`` from real data: guidance instead of errors, then a plan.

A new user's case (``tests/real_cases.py``: the SCT lumbar T2 NIfTI, or the dcm_qa_decubitus DICOM
series, with the PLUS spine-phantom sweep and its device set) has an MRI and a sweep and nothing
else. Every notebook must run top to bottom on it with nbclient, no cell may error, and where a
step cannot be done yet the notebook prints the line that says what to do first. Then the path a
user takes: 4 landmarks clicked on ultrasound frames (checked against ``ProbeToReference @
ImageToProbe`` computed independently from the files, to 1e-6 mm), the same 4 names on the MRI,
the live fit (checked against ``register_landmarks`` on the same points), notebook 03 accepts the
fit into ``case.json``, a target and an entry, and notebook 04 exports the plan.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.notebook_runner import execute_notebook
from tests.real_cases import fresh_dicom_case_fixture, fresh_nifti_case_fixture  # noqa: F401 (fixtures)
from tests.test_widgets_us_landmarks import NAMES, PICKS, _independent_reference
from workbench.frames import Transform
from workbench.registration.landmarks import register_landmarks
from workbench.widgets.points import PointListModel
from workbench.widgets.session import CaseSession
from workbench.widgets.us_landmarks import LandmarkFitModel, UsFramePickModel

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
PAIRS_MISSING = "place 3 landmark pairs to register (3 more: the same named point on the MRI"

#: What each notebook must print on a fresh case (the guidance lines), besides running without error.
GUIDANCE = {
    "01_load_case.ipynb": ["landmarks     to do  place 3 landmark pairs to register", "targets       to do  place at least one target",
                           "no label map yet:"],
    "02_landmarks_targets.ipynb": ["no target yet: place at least one target on the MRI (notebook 02)", "save status: saved"],
    "03_register_sweep.ipynb": [f"paired-point fit: {PAIRS_MISSING}", f"refinement starts from the landmark fit: {PAIRS_MISSING}",
                                "frame plane and fused view: no registration yet: place 3 landmark pairs to register",
                                "fused view: waiting for a registration"],
    "04_plan_export.ipynb": ["targets: 0 | no registration yet: place 3 landmark pairs to register",
                             "nothing to plan yet: place at least one target on the MRI",
                             "no export: nothing to plan yet"],
    "05_scene_3d.ipynb": ["ultrasound frames: no registration yet: place 3 landmark pairs to register", "scene image: (540, 720, 3)"],
    "06_registration_tuning.ipynb": ["has no ground truth: tuning on simulated cases only"],
    "07_outcomes.ipynb": ["procedures;"],
    "08_rehearsal.ipynb": ["nothing to rehearse yet: no label map yet: import or segment one in notebook 01",
                           "no attempt: no label map yet"],
}


def execute(name: str, case: Path, work: Path) -> str:
    """Run notebook ``name`` on ``case`` in ``work``; fail on any error or stray stderr; return the printed text."""
    outputs, _ = execute_notebook(NOTEBOOKS / name, case, work)
    texts = []
    for item in outputs:
        output = item["output"]
        if output.get("output_type") == "stream":
            assert output.get("name") != "stderr" or "Warning" in output.get("text", ""), (
                f"{name} cell {item['cell']} wrote to stderr: {output.get('text')}")
            texts.append(output.get("text", ""))
    return "".join(texts)


@pytest.mark.parametrize("name", sorted(GUIDANCE))
def test_every_notebook_runs_on_a_fresh_nifti_case_and_says_what_is_missing(name, fresh_nifti_case, tmp_path):
    out = execute(name, fresh_nifti_case, tmp_path / "work")
    for line in GUIDANCE[name]:
        assert line in out, f"{name}: {line!r} not printed:\n{out}"


@pytest.mark.parametrize("name", sorted(GUIDANCE)[:5])
def test_the_case_notebooks_run_on_a_fresh_dicom_case(name, fresh_dicom_case, tmp_path):
    out = execute(name, fresh_dicom_case, tmp_path / "work")
    for line in GUIDANCE[name]:
        assert line in out, f"{name}: {line!r} not printed:\n{out}"


def test_a_fresh_case_goes_from_ultrasound_landmarks_to_an_exported_plan(fresh_nifti_case, shared_data, tmp_path):
    session = CaseSession(fresh_nifti_case)
    # 1. four landmarks clicked on ultrasound frames, no registration needed
    picker = UsFramePickModel(session)
    points_reference = []
    for (frame, x, y), name in zip(PICKS, NAMES):
        point = np.asarray(picker.pick(frame, (x, y), name).point_mm)
        np.testing.assert_allclose(point, _independent_reference(shared_data, frame, x, y), atol=1e-6, rtol=0)
        points_reference.append(point)
    # 2. the same names on the MRI: a rigid motion of those points into the MRI's field of view, with
    #    a few tenths of a millimetre of picking error
    mri = session.mri
    centre_mri = mri.mri_voxel_to_mri.apply_to_points((np.asarray(mri.size, float) - 1.0) / 2.0)
    rotation = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    truth = Transform.from_rotation_translation(rotation, centre_mri - rotation @ np.mean(points_reference, axis=0),
                                                "Reference", "Mri")
    offsets_mm = np.array([[0.4, -0.2, 0.1], [-0.3, 0.5, 0.0], [0.0, -0.4, -0.3], [0.2, 0.1, 0.5]])
    points_mri = truth.apply_to_points(np.array(points_reference)) + offsets_mm
    editor = PointListModel(session.case, session.folder)
    for name, point in zip(NAMES, points_mri):
        editor.place(name, "landmark", point)
    target_mri = centre_mri + np.array([0.0, 0.0, 10.0])
    entry_mri = target_mri + np.array([0.0, 45.0, 0.0])
    editor.place("L3 left root", "target", target_mri)
    editor.place("L3 left entry", "entry", entry_mri)
    assert editor.save_error is None
    # 3. the live fit gives what register_landmarks gives on the same points
    fit = LandmarkFitModel(CaseSession(fresh_nifti_case))
    expected = register_landmarks(NAMES, points_reference, points_mri, targets_mri={"L3 left root": target_mri})
    assert fit.result.fre_mm == pytest.approx(expected.fre_mm, abs=1e-9)
    assert fit.result.predicted_tre_mm["L3 left root"] == pytest.approx(expected.predicted_tre_mm["L3 left root"], abs=1e-9)
    assert fit.result.provenance["leave_one_out_mm"] == pytest.approx(expected.provenance["leave_one_out_mm"], abs=1e-9)
    assert fit.summary().startswith(f"4 landmarks, FRE {expected.fre_mm:.2f} mm")
    # 4. notebook 03 fits and accepts the fit into case.json (no label map: no bone ICP, it says so)
    out = execute("03_register_sweep.ipynb", fresh_nifti_case, tmp_path / "n03")
    assert f"landmark fit FRE: {expected.fre_mm:.2f} mm" in out
    assert "bone ICP needs the MRI bone surface (a label map)" in out
    document = json.loads((fresh_nifti_case / "case.json").read_text())
    (saved,) = document["registrations"]
    assert saved["method"] == "landmarks" and document["current_registration_id"] == saved["registration_id"]
    assert saved["fre_mm"] == pytest.approx(expected.fre_mm, abs=1e-9)
    np.testing.assert_allclose(np.reshape(saved["reference_to_mri"], (4, 4)), expected.transform.matrix, atol=1e-9)
    assert "fused frame" in out  # the fused view now has a registration
    # 5. notebook 04 plans the case's own target and entry and exports
    work = tmp_path / "n04"
    out = execute("04_plan_export.ipynb", fresh_nifti_case, work)
    assert f"registration {saved['registration_id']} (landmarks) saved in the case, FRE {expected.fre_mm:.2f} mm" in out
    assert "no safer entries: they are searched against a label map" in out
    (plan_json,) = (work / "exports").rglob("plan.json")
    (trajectory,) = json.loads(plan_json.read_text())["trajectories"]
    np.testing.assert_allclose(trajectory["target_lps_mm"], target_mri, atol=1e-9)
    np.testing.assert_allclose(trajectory["entry_lps_mm"], entry_mri, atol=1e-9)
    assert trajectory["derived"]["insertion_depth_mm"] == pytest.approx(45.0, abs=1e-9)
    assert f"depth {45.0:.1f} mm" in out
