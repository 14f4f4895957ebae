"""Registrations saved in the case: model, case.json schema 2, migration of version 1, undo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from workbench.case import Case, load_case, save_case
from workbench.case.model import (
    SavedRegistration,
    new_registration_id,
    undo_registration,
    with_registration,
)
from workbench.errors import CaseBundleError
from workbench.frames import Transform
from workbench.registration.landmarks import LandmarkPairs, register_landmarks
from workbench.registration.result import RegistrationResult, landmark_fre_mm, saved_registration

# A rotation of 90 degrees about z and a translation: Reference -> Mri, mm.
MATRIX = np.array([[0.0, -1.0, 0.0, 12.5], [1.0, 0.0, 0.0, -40.25], [0.0, 0.0, 1.0, 101.0], [0.0, 0.0, 0.0, 1.0]])


def _saved(registration_id: str, shift_mm: float = 0.0, **changes) -> SavedRegistration:
    matrix = MATRIX.copy()
    matrix[0, 3] += shift_mm
    values = dict(
        registration_id=registration_id,
        method="landmarks",
        reference_to_mri=Transform.from_name("ReferenceToMri", matrix),
        created_utc="2024-05-01T09:30:00Z",
        parameters={"fle_mm": None, "weights": (1.0, 2.0)},
        fre_mm=1.25,
        tre_mm={"L4 left": 2.5, "L5 left": 3.0},
        run_time_s=0.125,
        message="3 landmarks, FRE 1.25 mm",
        provenance={"landmarks": ["a", "b", "c"]},
    )
    values.update(changes)
    return SavedRegistration(**values)


def test_round_trip_keeps_every_field_and_the_exact_matrix(tmp_path):
    case = with_registration(with_registration(Case("PVB-1"), _saved("reg-a")), _saved("reg-b", shift_mm=0.5, fre_mm=None, tre_mm=None))
    save_case(case, tmp_path)
    loaded = load_case(tmp_path)
    assert [r.to_dict() for r in loaded.registrations] == [r.to_dict() for r in case.registrations]
    assert loaded.current_registration_id == "reg-b"
    assert np.array_equal(loaded.current_registration.reference_to_mri.matrix, MATRIX + np.pad([[0.5]], ((0, 3), (3, 0))))
    document = json.loads((tmp_path / "case.json").read_text())
    assert document["schema_version"] == 2
    first = document["registrations"][0]
    assert first == {
        "registration_id": "reg-a",
        "method": "landmarks",
        "reference_to_mri": MATRIX.ravel().tolist(),
        "created_utc": "2024-05-01T09:30:00Z",
        "parameters": {"fle_mm": None, "weights": [1.0, 2.0]},  # tuples are stored as lists
        "fre_mm": 1.25,
        "tre_mm": {"L4 left": 2.5, "L5 left": 3.0},
        "run_time_s": 0.125,
        "message": "3 landmarks, FRE 1.25 mm",
        "software": first["software"],
        "provenance": {"landmarks": ["a", "b", "c"]},
    }
    assert first["software"].startswith("workbench ")
    assert '"reference_to_mri": [0.0, -1.0, 0.0, 12.5, 1.0, 0.0, 0.0, -40.25,' in (tmp_path / "case.json").read_text()


def test_undo_walks_back_through_the_history_and_never_deletes_it():
    case = Case("PVB-1")
    with pytest.raises(CaseBundleError, match="no registration to undo: none has been accepted"):
        undo_registration(case)
    for name in ("reg-1", "reg-2", "reg-3"):
        case = with_registration(case, _saved(name))
    assert case.current_registration.registration_id == "reg-3"
    seen = []
    while case.current_registration is not None:
        case = undo_registration(case)
        seen.append(case.current_registration_id)
        assert [r.registration_id for r in case.registrations] == ["reg-1", "reg-2", "reg-3"]
    assert seen == ["reg-2", "reg-1", None]
    with pytest.raises(CaseBundleError, match="none of the 3 saved registrations is current"):
        undo_registration(case)
    # a new acceptance goes to the end of the history and is current
    case = with_registration(case, _saved("reg-4"))
    assert [r.registration_id for r in case.registrations] == ["reg-1", "reg-2", "reg-3", "reg-4"]
    assert case.current_registration_id == "reg-4"
    assert undo_registration(case).current_registration_id == "reg-3"


def test_helpers_return_new_cases_and_refuse_a_repeated_id():
    case = Case("PVB-1")
    accepted = with_registration(case, _saved("reg-1"))
    assert case.registrations == [] and case.current_registration_id is None  # unchanged
    with pytest.raises(CaseBundleError, match="'reg-1' is already in the case's history"):
        with_registration(accepted, _saved("reg-1"))
    undone = undo_registration(accepted)
    assert accepted.current_registration_id == "reg-1" and undone.current_registration_id is None


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"fre_mm": float("nan")}, r"fre_mm must be a finite number >= 0, got nan"),
        ({"run_time_s": -1.0}, r"run_time_s must be a finite number >= 0, got -1.0"),
        ({"tre_mm": {"L4": float("inf")}}, r"tre_mm\['L4'\] must be a finite number >= 0, got inf"),
        ({"provenance": {"trace": [1.0, float("nan")]}}, r"provenance.trace\[1\] is nan"),
        ({"registration_id": "bad id"}, r"registration id 'bad id' must match"),
        ({"reference_to_mri": Transform.from_name("ImageToProbe", np.eye(4))}, "must be a ReferenceToMri Transform"),
    ],
)
def test_saved_registration_refuses_bad_values(changes, message):
    with pytest.raises(CaseBundleError, match=message):
        _saved(**{"registration_id": "reg-1", **changes})


def test_new_ids_are_valid_and_distinct():
    ids = {new_registration_id("2024-05-01T09:30:00Z") for _ in range(50)}
    assert len(ids) == 50
    assert all(i.startswith("reg-20240501T093000-") and len(i) == len("reg-20240501T093000-") + 8 for i in ids)


# -- case.json: schema and checks ------------------------------------------------------------


@pytest.fixture
def saved_case(tmp_path) -> Path:
    save_case(with_registration(Case("PVB-1"), _saved("reg-1")), tmp_path)
    return tmp_path


def _rewrite(folder: Path, mutate) -> None:
    document = json.loads((folder / "case.json").read_text())
    mutate(document)
    (folder / "case.json").write_text(json.dumps(document))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["registrations"][0].update(reference_to_mri=[1.0] * 15), r"at registrations\[0\].reference_to_mri: .* is too short"),
        (lambda d: d["registrations"][0].update(fre_mm=-0.5), r"at registrations\[0\].fre_mm"),
        (lambda d: d["registrations"][0].update(patient="x"), r"at registrations\[0\]: Additional properties"),
        (lambda d: d["registrations"][0].pop("method"), r"at registrations\[0\]: 'method' is a required property"),
        (lambda d: d.pop("current_registration_id"), r"at \(top level\): 'current_registration_id' is a required property"),
    ],
)
def test_schema_rejects_malformed_registrations(saved_case, mutate, message):
    _rewrite(saved_case, mutate)
    with pytest.raises(CaseBundleError, match="does not match schema version 2 " + message):
        load_case(saved_case)


def test_schema_rejects_a_non_finite_matrix(saved_case):
    text = (saved_case / "case.json").read_text().replace('"reference_to_mri": [0.0, -1.0', '"reference_to_mri": [NaN, -1.0')
    (saved_case / "case.json").write_text(text)
    with pytest.raises(CaseBundleError, match=r"registrations\[0\].reference_to_mri\[0\] is nan; numbers in case.json must be finite"):
        load_case(saved_case)


def test_a_singular_matrix_is_refused(saved_case):
    _rewrite(saved_case, lambda d: d["registrations"][0].update(reference_to_mri=[0.0] * 12 + [0.0, 0.0, 0.0, 1.0]))
    with pytest.raises(CaseBundleError, match=r"registrations\[0\].reference_to_mri"):
        load_case(saved_case)


def test_current_id_must_name_a_registration_and_ids_are_unique(saved_case):
    _rewrite(saved_case, lambda d: d.update(current_registration_id="reg-9"))
    with pytest.raises(CaseBundleError, match="current_registration_id 'reg-9' names no entry of registrations"):
        load_case(saved_case)
    _rewrite(saved_case, lambda d: (d.update(current_registration_id="reg-1"), d["registrations"].append(dict(d["registrations"][0]))))
    with pytest.raises(CaseBundleError, match=r"registrations\[1\]: another registration has id 'reg-1'"):
        load_case(saved_case)


def test_identifiers_are_refused_inside_a_registration(tmp_path):
    case = with_registration(Case("PVB-1"), _saved("reg-1", provenance={"PatientName": "x"}))
    with pytest.raises(CaseBundleError, match="DICOM identifying attribute PatientName"):
        save_case(case, tmp_path)
    assert not (tmp_path / "case.json").exists()


def test_a_version_1_case_loads_with_an_empty_history_and_keeps_its_transforms(saved_case):
    version_1 = json.loads((saved_case / "case.json").read_text())
    del version_1["registrations"], version_1["current_registration_id"]
    version_1.update(schema_version=1, transforms={"ReferenceToMri": MATRIX.ravel().tolist()})
    (saved_case / "case.json").write_text(json.dumps(version_1))
    case = load_case(saved_case)
    assert case.schema_version == 2 and case.registrations == [] and case.current_registration is None
    assert np.array_equal(case.transforms["ReferenceToMri"].matrix, MATRIX)  # kept, but not a recorded registration
    save_case(case, saved_case)
    document = json.loads((saved_case / "case.json").read_text())
    assert (document["schema_version"], document["registrations"], document["current_registration_id"]) == (2, [], None)


def test_a_version_1_file_with_registrations_is_refused_by_its_own_schema(saved_case):
    _rewrite(saved_case, lambda d: d.update(schema_version=1))
    with pytest.raises(CaseBundleError, match=r"schema version 1 at \(top level\): Additional .*'registrations' were unexpected"):
        load_case(saved_case)


# -- from a registration result ------------------------------------------------------------------


POINTS_REFERENCE = np.array([[0.0, 0.0, 0.0], [40.0, 0.0, 0.0], [0.0, 30.0, 0.0], [0.0, 0.0, 20.0]])


def _landmark_fit():
    truth = Transform.from_name("ReferenceToMri", MATRIX)
    noise_mm = np.array([[0.3, 0.0, 0.0], [-0.3, 0.0, 0.0], [0.0, 0.4, 0.0], [0.0, -0.4, 0.0]])
    points_mri = truth.apply_to_points(POINTS_REFERENCE) + noise_mm
    fit = register_landmarks(["a", "b", "c", "d"], POINTS_REFERENCE, points_mri, targets_mri={"L4 left": [10.0, -30.0, 110.0]})
    return fit, points_mri


def test_saved_registration_of_a_landmark_fit_keeps_its_figures():
    fit, _ = _landmark_fit()
    saved = saved_registration(fit, "reg-fit", created_utc="2024-05-01T09:30:00Z")
    assert (saved.registration_id, saved.method, saved.created_utc) == ("reg-fit", "landmarks", "2024-05-01T09:30:00Z")
    assert saved.fre_mm == fit.fre_mm and saved.tre_mm == fit.predicted_tre_mm and saved.run_time_s == fit.run_time_s
    assert saved.reference_to_mri is fit.transform and saved.message == fit.message
    assert saved.provenance["residuals_mm"] == fit.residuals_mm
    assert saved.provenance["tre_basis"] == "predicted (Fitzpatrick) for this landmark fit"
    json.dumps(saved.to_dict(), allow_nan=False)


def test_saved_refinement_measures_fre_on_the_case_landmarks_and_labels_the_tre():
    fit, points_mri = _landmark_fit()
    shift = MATRIX.copy()
    shift[:3, 3] += [1.0, 0.0, 0.0]  # 1 mm off the truth along x
    refined = RegistrationResult("bone-icp", Transform.from_name("ReferenceToMri", shift), run_time_s=2.5,
                                 parameters={"distance_schedule_mm": (20.0, 10.0)}, metric_trace=[3.0, np.nan])
    pairs = LandmarkPairs(["a", "b", "c", "d"], POINTS_REFERENCE, points_mri, [])
    saved = saved_registration(refined, landmarks=pairs, started_from=fit)
    expected_fre = float(np.sqrt(np.mean(np.sum((refined.transform.apply_to_points(POINTS_REFERENCE) - points_mri) ** 2, axis=1))))
    assert saved.fre_mm == pytest.approx(expected_fre, abs=1e-12) == landmark_fre_mm(refined.transform, pairs)
    # by hand: residuals (0.7, 1.3, 1.077, 1.077) mm -> RMS sqrt(4.5 / 4) = 1.0607 mm
    assert saved.fre_mm == pytest.approx(np.sqrt(4.5 / 4), abs=1e-9)
    assert saved.tre_mm == fit.predicted_tre_mm
    assert saved.provenance["tre_basis"] == "predicted (Fitzpatrick) for the landmark fit this refinement started from"
    assert saved.provenance["started_from"]["fre_mm"] == fit.fre_mm
    assert saved.parameters == {"distance_schedule_mm": [20.0, 10.0]}
    assert saved.run_time_s == 2.5 and saved.registration_id.startswith("reg-")
    # without landmarks or a starting fit there is nothing to report
    bare = saved_registration(refined)
    assert bare.fre_mm is None and bare.tre_mm is None and bare.provenance["fre_basis"] == "no paired landmarks"
