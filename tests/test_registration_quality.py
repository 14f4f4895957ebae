"""The registration quality gate: accepted / doubtful / refused on simulated cases, with numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from workbench.errors import PlanError, RegistrationError
from workbench.frames import Transform
from workbench.registration.bench import pipeline_inputs, simulate_registration_case
from workbench.registration.intensity import register_lc2, rigid_offset
from workbench.registration.params import Lc2Parameters
from workbench.registration.pipeline import RegistrationInputs, RegistrationSettings, run_registration_pipeline
from workbench.registration.quality import QualityThresholds, QualityVerdict, assess_registration, quality_of
from workbench.registration.result import RegistrationResult, saved_registration


@pytest.fixture(scope="module")
def case():
    return simulate_registration_case(0, 25.0)


def _inputs(case, start: Transform) -> RegistrationInputs:
    """The benchmark's inputs plus the case's named targets (for the largest target displacement)."""
    inputs = pipeline_inputs(case, start)
    return RegistrationInputs(**{**inputs.__dict__, "targets_mri": dict(zip(case.target_names, case.targets_mri))})


def _shifted(case, shift_mm) -> Transform:
    offset = np.eye(4)
    offset[:3, 3] = shift_mm
    return Transform(offset @ case.reference_to_mri.matrix, "Reference", "Mri")


@pytest.fixture(scope="module")
def one_level_off(case):
    """Bone ICP started exactly one level (35 mm) superior of the truth."""
    start = _shifted(case, (0.0, 0.0, 35.0))
    return start, run_registration_pipeline(_inputs(case, start), RegistrationSettings(("bone-icp",)))


def test_a_correct_icp_from_a_small_offset_is_accepted_and_its_movement_is_the_offset(case):
    shift_mm = np.array([4.8, 0.0, 8.0])  # 9.33 mm
    result = run_registration_pipeline(_inputs(case, _shifted(case, shift_mm)), RegistrationSettings(("bone-icp",)))
    verdict = quality_of(result)
    assert verdict.verdict == "accepted" and verdict.reasons[0].startswith("passed: moved 9.3 mm")
    figures = verdict.figures
    # ICP undoes the offset to ~0.2 mm: the correction is the offset, at the data's centre and every target
    assert figures["translation_mm"] == pytest.approx(np.linalg.norm(shift_mm), abs=0.5)
    assert figures["max_target_displacement_mm"] == pytest.approx(np.linalg.norm(shift_mm), abs=0.5)
    assert figures["rotation_deg"] < 0.5
    assert figures["overlap_fraction"] > 0.8 and figures["kept_pair_fraction"] == pytest.approx(0.8, abs=0.01)
    assert figures["residual_mm"] < 1.0 <= figures["robust_residual_mm"] < 2.0
    # neighbouring levels fit clearly worse
    assert figures["level_ratio"] > 1.5 and set(figures["level_residuals_mm"]) == {"+35", "-35"}
    assert figures["thresholds"]["level_shift_mm"] == 35.0
    json.dumps(result.provenance["quality"])  # JSON-ready


def test_movement_reports_a_rotation_about_the_data_centre_in_degrees(case):
    centre_mri = case.reference_to_mri.apply_to_points(case.us_points_reference).mean(axis=0)
    axis = np.array([1.0, 2.0, 0.5]) / np.linalg.norm([1.0, 2.0, 0.5])
    offset = rigid_offset(np.r_[6.0 * axis, 0.0, 0.0, 0.0], centre_mri)  # 6 deg about the US points' centre
    start = Transform(offset @ case.reference_to_mri.matrix, "Reference", "Mri")
    # judged at the truth: the correction is exactly the inverse of the offset
    truth = RegistrationResult("bone-icp", case.reference_to_mri)
    verdict = assess_registration(truth, _inputs(case, start), start)
    assert verdict.figures["rotation_deg"] == pytest.approx(6.0, abs=1e-6)
    assert verdict.figures["translation_mm"] == pytest.approx(0.0, abs=1e-6)
    assert verdict.verdict == "accepted"


def test_icp_started_one_level_off_is_refused_for_a_one_level_slip(one_level_off):
    _, result = one_level_off
    verdict = quality_of(result)
    assert verdict.verdict in ("doubtful", "refused")
    assert "one-level slip" in verdict.reasons[0]
    # the level below (back where the truth is) fits clearly better
    assert verdict.figures["level_ratio"] < QualityThresholds().doubtful_level_ratio
    residuals = verdict.figures["level_residuals_mm"]
    assert residuals["-35"] < verdict.figures["robust_residual_mm"] < residuals["+35"]
    assert f"{verdict.figures['level_ratio']:.2f}x" in verdict.reasons[0]


def test_lc2_on_a_sweep_that_misses_the_mri_is_not_converged_and_refused(case):
    start = _shifted(case, (0.0, 400.0, 0.0))  # the sweep lies 40 cm behind the MRI
    params = Lc2Parameters(levels_mm=(4.0,), max_evaluations=30)
    direct = register_lc2(case.mri, case.us_volume, start, case.us_mask, params)
    assert direct.converged is False and "does not overlap the MRI (0%" in direct.message
    assert direct.provenance["overlap_fraction"] == 0.0
    result = run_registration_pipeline(_inputs(case, start), RegistrationSettings(("lc2",), lc2=params))
    verdict = quality_of(result)
    assert verdict.verdict == "refused" and verdict.figures["overlap_fraction"] == 0.0
    assert verdict.reasons[0].startswith("overlap 0% (of the covered US voxels fall inside the MRI)")
    assert any("did not converge" in reason for reason in verdict.reasons)


def test_a_landmark_fit_alone_is_accepted_with_nothing_automatic_to_check():
    result = RegistrationResult("landmarks", Transform(np.eye(4), "Reference", "Mri"), fre_mm=1.5)
    verdict = assess_registration(result, RegistrationInputs(initial=result.transform), None)
    assert verdict.verdict == "accepted" and verdict.figures["fre_mm"] == 1.5


def test_thresholds_and_verdicts_are_checked():
    with pytest.raises(RegistrationError, match="refuse_level_ratio < doubtful_level_ratio"):
        QualityThresholds(refuse_level_ratio=2.0)
    with pytest.raises(RegistrationError, match="doubtful_overlap_fraction"):
        QualityThresholds(refuse_overlap_fraction=0.6)
    with pytest.raises(RegistrationError, match="one of"):
        QualityVerdict("fine", ())
    assert quality_of(RegistrationResult("bone-icp", Transform(np.eye(4), "Reference", "Mri"))) is None


def test_the_saved_registration_records_the_verdict(one_level_off):
    start, result = one_level_off
    saved = saved_registration(result)
    assert saved.provenance["quality"]["verdict"] == quality_of(result).verdict
    assert quality_of(saved).reasons == quality_of(result).reasons
    assert saved.provenance["quality"]["figures"]["thresholds"]["level_axis_mri"] == [0.0, 0.0, 1.0]


def test_a_refused_result_cannot_be_accepted_and_a_doubtful_one_is_accepted_with_its_warning(one_level_off, tmp_path):
    pytest.importorskip("ipywidgets")
    from workbench.case import load_case
    from workbench.widgets.registration import RegistrationRunner
    from workbench.widgets.session import CaseSession, WidgetError, demo_working_copy

    case_dir = demo_working_copy(tmp_path / "case")
    before = (case_dir / "case.json").read_bytes()
    runner = RegistrationRunner(CaseSession(case_dir))
    _, refused = one_level_off
    refused = refused.with_updates(provenance={**refused.provenance, "quality": QualityVerdict(
        "refused", ("one-level slip: the best neighbouring level has 0.58x this fit's robust residual",)).to_dict()})
    with pytest.raises(WidgetError, match="quality gate refused it .one-level slip"):
        runner.accept(refused)
    assert (case_dir / "case.json").read_bytes() == before
    doubtful = refused.with_updates(provenance={**refused.provenance, "quality": QualityVerdict(
        "doubtful", ("possible one-level slip: 1.10x",)).to_dict()})
    saved = runner.accept(doubtful)
    reloaded = load_case(case_dir).current_registration
    assert reloaded.registration_id == saved.registration_id
    assert reloaded.provenance["quality"] == {"verdict": "doubtful", "reasons": ["possible one-level slip: 1.10x"], "figures": {}}


def _saved_with(verdict: str, reasons=("possible one-level slip: 1.10x",)):
    result = RegistrationResult("bone-icp", Transform(np.eye(4), "Reference", "Mri"),
                                provenance={"quality": QualityVerdict(verdict, reasons).to_dict()})
    return saved_registration(result, registration_id="REG-1")


def test_a_plan_warns_of_a_doubtful_registration_and_never_uses_a_refused_one(tmp_path):
    from workbench.planning.export import plan_from_dict, plan_to_dict
    from workbench.planning.model import NeedleSpec, Plan, Provenance, Trajectory, registration_summary
    from workbench.planning.report import VolumeSampler, render_report

    summary = registration_summary(_saved_with("doubtful"))
    assert summary.quality_warning == "doubtful registration: possible one-level slip: 1.10x"
    assert registration_summary(_saved_with("accepted", ("passed",))).quality_warning is None
    with pytest.raises(PlanError, match="REG-1 .bone-icp. was refused by the quality gate .one-level slip"):
        registration_summary(_saved_with("refused", ("one-level slip",)))
    trajectory = Trajectory("L4 right", "L4 right exiting nerve root", (-3.0, 22.0, 34.0), (-3.0, 50.0, 40.0),
                            NeedleSpec(50.0, "23G"))
    plan = Plan("PLAN-1", (trajectory,), Provenance(mri_digest=None, author="AB", created_utc="2026-01-02T03:04:05Z"),
                summary, "test plan")
    document = plan_to_dict(plan)
    assert document["registration"]["quality_warning"] == "doubtful registration: possible one-level slip: 1.10x"
    assert plan_from_dict(json.loads(json.dumps(document))).registration.quality_warning == summary.quality_warning
    html_text = render_report(plan, VolumeSampler(np.zeros((20, 20, 20), np.float32), np.eye(4)))
    assert "Registration doubtful" in html_text and "WARNING: doubtful registration: possible one-level slip" in html_text


def test_the_benchmark_counts_verdicts_per_method():
    from workbench.registration.bench import _quality_counts

    rows = [(1.0, 0.5, 0.2, "accepted"), (2.0, 0.6, 0.2, "accepted"), (30.0, np.inf, 0.0, "failed"), (20.0, 35.0, 0.3, "refused")]
    assert _quality_counts(rows) == {"accepted": 2, "doubtful": 0, "refused": 1, "failed": 1}
