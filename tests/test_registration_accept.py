"""Accept and undo registrations from the registration panel (no kernel): case.json, history, plans and scene follow."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("ipympl")

from workbench.case import load_case
from workbench.registration.landmarks import pair_landmarks
from workbench.registration.params import IcpParameters
from workbench.widgets.session import CaseSession, WidgetError, demo_working_copy


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory):
    return demo_working_copy(tmp_path_factory.mktemp("accept") / "case")


def _fre_mm(case, transform) -> float:
    pairs = pair_landmarks(case.landmarks)
    moved = transform.apply_to_points(pairs.points_reference)
    return float(np.sqrt(np.mean(np.sum((moved - pairs.points_mri) ** 2, axis=1))))


def test_accept_and_undo_through_the_panel_save_case_json_and_steer_plans_and_scene(case_dir, tmp_path):
    from workbench.widgets.plan import EXPERT_PREFIX, PlanModel
    from workbench.widgets.registration import RegistrationPanel
    from workbench.widgets.scene import SceneBuilder

    session = CaseSession(case_dir)
    panel = RegistrationPanel(session)
    assert "wb-accept-registration" in panel.accept_button._dom_classes
    assert "wb-undo-registration" in panel.undo_button._dom_classes
    assert "no registration accepted yet" in panel.history_table.value and panel.undo_button.disabled
    with pytest.raises(WidgetError, match="nothing to accept: run the landmark fit or a refinement first"):
        panel.runner.accept()
    plan_model, scene = PlanModel(session), SceneBuilder(session)
    assert plan_model.reference_to_mri is None and scene.reference_to_mri is None  # never the ground truth

    # 1. the landmark fit, accepted with the button
    fit = panel.fit()
    panel.accept_button.click()
    on_disk = load_case(case_dir)
    first = on_disk.current_registration
    assert [r.registration_id for r in on_disk.registrations] == [first.registration_id]
    assert first.method == "landmarks" and first.fre_mm == fit.fre_mm and first.tre_mm == fit.predicted_tre_mm
    assert np.array_equal(first.reference_to_mri.matrix, fit.transform.matrix)
    assert first.fre_mm == pytest.approx(_fre_mm(on_disk, fit.transform), abs=1e-9)
    assert f"accepted landmarks as {first.registration_id}, FRE {fit.fre_mm:.2f} mm" in panel.message.value
    assert not panel.undo_button.disabled

    # 2. a bone-ICP refinement from it, accepted: FRE measured on the case's landmarks, TRE from the fit
    refined = panel.runner.run("bone-icp", IcpParameters(restart_offset_mm=0.0))
    second = panel.accept()
    on_disk = load_case(case_dir)
    assert [r.registration_id for r in on_disk.registrations] == [first.registration_id, second.registration_id]
    assert on_disk.current_registration_id == second.registration_id
    assert second.method == "bone-icp" and second.run_time_s == refined.run_time_s
    assert second.fre_mm == pytest.approx(_fre_mm(on_disk, refined.transform), abs=1e-12)
    assert second.tre_mm == fit.predicted_tre_mm and second.provenance["started_from"]["fre_mm"] == fit.fre_mm
    assert second.parameters["restart_offset_mm"] == 0.0
    rows = panel.show_history()
    assert [(r["current"], r["method"], r["FRE_mm"]) for r in rows] == [
        ("", "landmarks", round(first.fre_mm, 2)), ("▶", "bone-icp", round(second.fre_mm, 2))
    ]
    assert f"<td style='padding:2px 8px'>{second.registration_id}</td>" in panel.history_table.value

    # plans and the scene use the current registration, read when used
    assert np.array_equal(scene.reference_to_mri.matrix, second.reference_to_mri.matrix)
    assert second.registration_id in scene.registration_text()
    target = plan_model.targets()[0]
    trajectory = plan_model.trajectory(target, EXPERT_PREFIX + target)
    files = plan_model.export(trajectory, tmp_path / "after-icp", plan_id="ICP")
    document = json.loads(next(f for f in files if f.name == "plan.json").read_text())["registration"]
    assert document["registration_id"] == second.registration_id and document["method"] == "bone-icp"
    assert document["fre_mm"] == second.fre_mm and document["tre_mm"] == second.tre_mm[target]
    assert document["ReferenceToMri"] == second.reference_to_mri.to_list()

    # 3. undo: the landmark fit is current again, the history keeps both
    panel.undo_button.click()
    on_disk = load_case(case_dir)
    assert on_disk.current_registration_id == first.registration_id and len(on_disk.registrations) == 2
    assert f"undone: landmarks ({first.registration_id}) is current again" in panel.message.value
    assert plan_model.registration_summary((trajectory,)).registration_id == first.registration_id
    assert np.array_equal(scene.reference_to_mri.matrix, first.reference_to_mri.matrix)

    # 4. undo past the first: none current, plans carry no registration; a further undo is refused
    assert panel.undo() is None
    assert load_case(case_dir).current_registration is None and panel.undo_button.disabled
    assert plan_model.plan(trajectory).registration is None and scene.reference_to_mri is None
    assert panel.undo() is None
    assert "no registration to undo: none of the 2 saved registrations is current" in panel.message.value
    with pytest.raises(WidgetError, match="none of the 2 saved registrations is current"):
        panel.runner.undo()
    assert len(load_case(case_dir).registrations) == 2


def test_a_transform_given_to_the_plan_model_is_recorded_as_not_saved(case_dir):
    from workbench.widgets.plan import PlanModel
    from workbench.widgets.session import landmark_registration

    session = CaseSession(case_dir)
    fit = landmark_registration(session)
    model = PlanModel(session, fit.transform)
    summary = model.registration_summary()
    assert summary.method == "given to the plan panel (not saved in the case)"
    assert summary.registration_id is None and summary.fre_mm is None and summary.reference_to_mri is fit.transform
