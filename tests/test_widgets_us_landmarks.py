"""Landmarks in Reference on a fresh case (no registration): picked on ultrasound frames or with a stylus; the live fit.

Fresh cases come from the real data (``tests/real_cases.py``: the SCT lumbar T2 NIfTI with the PLUS
spine-phantom sweep and its device set). Every position is checked against an independent
computation from the files themselves (the raw ``ProbeToTracker`` / ``ReferenceToTracker`` of the
sequence and the device set's ``ImageToProbe``), to 1e-6 mm.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.real_cases import DEVICE_SET, SWEEP, fresh_nifti_case_fixture  # noqa: F401 (fixture)
from workbench.errors import RegistrationError
from workbench.frames import Transform
from workbench.io.plus_config import read_device_set
from workbench.io.sequence import TrackedSequence, read_sequence, write_sequence
from workbench.registration.landmarks import register_landmarks, still_stylus_tip, stylus_tip_points_reference
from workbench.widgets.points import PointListModel
from workbench.widgets.session import CaseSession, WidgetError, case_registration
from workbench.widgets.us_landmarks import LandmarkFitModel, UsFramePickModel, stylus_landmark

#: (frame, pixel x, pixel y) picked on the real sweep (820 x 616 frames, MF orientation).
PICKS = [(2, 120.0, 80.0), (7, 700.25, 150.5), (12, 400.0, 560.0), (18, 250.75, 330.0)]
NAMES = ["L3 spinous tip", "L4 spinous tip", "L3 left transverse", "L4 right transverse"]


def _independent_reference(shared_data, frame: int, x: float, y: float) -> np.ndarray:
    """ProbeToReference @ ImageToProbe @ (x, y, 0, 1) from the original sweep file and device set."""
    sequence = read_sequence(shared_data / SWEEP)
    image_to_probe = read_device_set(shared_data / DEVICE_SET).image_to_probe().matrix
    reference_to_tracker = sequence.transforms["ReferenceToTracker"][frame]
    probe_to_tracker = sequence.transforms["ProbeToTracker"][frame]
    return (np.linalg.inv(reference_to_tracker) @ probe_to_tracker @ image_to_probe @ np.array([x, y, 0.0, 1.0]))[:3]


def test_a_click_on_a_frame_is_stored_in_reference_through_the_pose_and_calibration(fresh_nifti_case, shared_data):
    session = CaseSession(fresh_nifti_case)
    model = UsFramePickModel(session)
    assert model.ready and model.frame_count == 21 and model.image_shape_px == (616, 820)
    for (frame, x, y), name in zip(PICKS, NAMES):
        landmark = model.pick(frame, (x, y), name)
        assert (landmark.name, landmark.frame, landmark.pair) == (f"{name} (US)", "Reference", name)
        np.testing.assert_allclose(landmark.point_mm, _independent_reference(shared_data, frame, x, y), atol=1e-6, rtol=0)
    saved = json.loads((fresh_nifti_case / "case.json").read_text())["landmarks"]
    assert [(m["name"], m["frame"], m["pair"]) for m in saved] == [(f"{n} (US)", "Reference", n) for n in NAMES]
    # picking the same name again replaces its point (one Reference landmark per pair)
    again = model.pick(3, (10.0, 10.0), NAMES[0])
    assert len(CaseSession(fresh_nifti_case).case.landmarks) == 4
    np.testing.assert_allclose(again.point_mm, _independent_reference(shared_data, 3, 10.0, 10.0), atol=1e-6, rtol=0)


def test_a_frame_with_an_invalid_pose_refuses_the_click(fresh_nifti_case):
    path = fresh_nifti_case / "sweeps" / "sweep1.igs.mha"
    sequence = read_sequence(path)
    sequence.transform_status["ProbeToTracker"][5] = False
    write_sequence(sequence, path)
    session = CaseSession(fresh_nifti_case)
    model = UsFramePickModel(session)
    with pytest.raises(WidgetError, match=r"frame 5 has no valid pose \(tracking INVALID\)") as caught:
        model.pick(5, (100.0, 100.0), "L3 spinous tip")
    assert caught.value.path.endswith("sweep1.igs.mha")
    with pytest.raises(WidgetError, match=r"pixel \(820.0, 10.0\) is outside the 820 x 616 frame"):
        model.pick(4, (820.0, 10.0), "L3 spinous tip")
    with pytest.raises(WidgetError, match="needs a name"):
        model.pick(4, (10.0, 10.0), "  ")
    assert CaseSession(fresh_nifti_case).case.landmarks == []  # nothing stored


def test_the_fit_says_how_many_pairs_are_missing_then_matches_register_landmarks(fresh_nifti_case):
    session = CaseSession(fresh_nifti_case)
    fit = LandmarkFitModel(session)
    assert fit.result is None and fit.missing.startswith("place 3 landmark pairs to register (3 more")
    assert case_registration(session).transform is None
    picker = UsFramePickModel(session)
    points_reference = [picker.pick(frame, (x, y), name).point_mm for (frame, x, y), name in zip(PICKS, NAMES)]
    # Mri landmarks of the same names: a known rigid motion of the Reference points plus fixed offsets (mm)
    rotation = Transform.from_rotation_translation(
        np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), [10.0, -20.0, -380.0], "Reference", "Mri")
    offsets_mm = np.array([[0.4, -0.2, 0.1], [-0.3, 0.5, 0.0], [0.0, -0.4, -0.3], [0.2, 0.1, 0.5]])
    points_mri = rotation.apply_to_points(np.array(points_reference)) + offsets_mm
    editor = PointListModel(session.case, session.folder)
    for count, (name, point) in enumerate(zip(NAMES, points_mri), start=1):
        editor.place(name, "landmark", point)
        session = CaseSession(fresh_nifti_case)
        fit = LandmarkFitModel(session)
        if count < 3:
            assert fit.result is None
            assert f"place 3 landmark pairs to register ({3 - count} more" in fit.missing
    editor.place("L3 left root", "target", points_mri.mean(axis=0) + [0.0, 0.0, 30.0])
    fit = LandmarkFitModel(CaseSession(fresh_nifti_case))
    expected = register_landmarks(NAMES, points_reference, points_mri, targets_mri={"L3 left root": points_mri.mean(axis=0) + [0, 0, 30.0]})
    assert fit.pair_names == NAMES
    assert fit.result.fre_mm == pytest.approx(expected.fre_mm, abs=1e-9)
    np.testing.assert_allclose(fit.result.transform.matrix, expected.transform.matrix, atol=1e-9)
    rows = {row["landmark"]: row for row in fit.rows()}
    for name in NAMES:
        assert rows[name]["residual_mm"] == pytest.approx(expected.residuals_mm[name], abs=1e-9)
        assert rows[name]["leave_one_out_mm"] == pytest.approx(expected.provenance["leave_one_out_mm"][name], abs=1e-9)
    assert fit.target_rows()[0]["predicted_TRE_mm"] == pytest.approx(expected.predicted_tre_mm["L3 left root"], abs=1e-9)
    assert 0.1 < fit.result.fre_mm < 1.0  # the offsets above: a few tenths of a millimetre
    registration = case_registration(CaseSession(fresh_nifti_case))
    assert registration.source in ("landmarks", "saved")
    np.testing.assert_allclose(registration.transform.matrix, expected.transform.matrix, atol=1e-9)


def test_a_pair_name_waiting_for_its_partner_is_named_in_the_guidance(fresh_nifti_case):
    session = CaseSession(fresh_nifti_case)
    UsFramePickModel(session).pick(2, (100.0, 100.0), "L5 spinous tip")
    PointListModel(session.case, session.folder).place("L2 spinous tip", "landmark", [0.0, 0.0, -400.0])
    fit = LandmarkFitModel(CaseSession(fresh_nifti_case))
    assert "'L2 spinous tip' has no ultrasound/stylus point" in fit.missing
    assert "'L5 spinous tip' has no MRI landmark" in fit.missing


def test_a_case_without_sweeps_says_so_instead_of_failing(fresh_nifti_case):
    document = json.loads((fresh_nifti_case / "case.json").read_text())
    document["sweeps"] = []
    (fresh_nifti_case / "case.json").write_text(json.dumps(document))
    model = UsFramePickModel(CaseSession(fresh_nifti_case))
    assert not model.ready and "no tracked ultrasound sweep" in model.missing
    with pytest.raises(WidgetError, match="no tracked ultrasound sweep"):
        model.pick(0, (1.0, 1.0), "x")


# -- stylus --------------------------------------------------------------------------------

#: The pivot calibration of the test stylus: tip 160 mm along the marker's z, slightly off axis (mm).
TIP_IN_STYLUS_MM = np.array([1.5, -0.75, 160.0])


def _rigid(angles_deg, translation_mm) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_euler("xyz", angles_deg, degrees=True).as_matrix()
    matrix[:3, 3] = translation_mm
    return matrix


def _stylus_recording(folder, tip_reference_mm, still=range(6, 16), invalid=(9,)):
    """A tracking-only PLUS recording (StylusToTracker, ReferenceToTracker) and a device set with StylusTipToStylus.

    During the ``still`` frames the stylus pivots about its tip held at ``tip_reference_mm`` (Reference,
    mm); elsewhere it moves by centimetres. ``invalid`` frames have a garbage, INVALID stylus pose.
    """
    count = 24
    reference_to_tracker = _rigid([5.0, -10.0, 30.0], [100.0, -50.0, -1200.0])
    stylus_to_tracker = np.empty((count, 4, 4))
    for n in range(count):
        rotation = _rigid([20.0 + 2.0 * np.sin(n), -15.0 + 3.0 * np.cos(n), 40.0 + n], [0.0, 0.0, 0.0])
        tip_mm = np.asarray(tip_reference_mm, float) if n in still else np.asarray(tip_reference_mm) + [0.0, 8.0 * n, 5.0]
        stylus_to_reference = rotation.copy()
        stylus_to_reference[:3, 3] = tip_mm - rotation[:3, :3] @ TIP_IN_STYLUS_MM  # the tip lands on tip_mm
        stylus_to_tracker[n] = reference_to_tracker @ stylus_to_reference
    status = np.ones(count, bool)
    for n in invalid:
        stylus_to_tracker[n, :3, 3] += 500.0
        status[n] = False
    sequence = TrackedSequence(
        images=None, timestamps_s=np.arange(count) * 0.05,
        transforms={"StylusToTracker": stylus_to_tracker, "ReferenceToTracker": np.repeat(reference_to_tracker[None], count, 0)},
        transform_status={"StylusToTracker": status},
    )
    recording = write_sequence(sequence, folder / "stylus.igs.mha")
    tip = " ".join(f"{v:.17g}" for v in np.r_[np.c_[np.eye(3), TIP_IN_STYLUS_MM], [[0, 0, 0, 1]]].ravel())
    device_set = folder / "PlusDeviceSet_stylus.xml"
    device_set.write_text(
        f'<PlusConfiguration version="2.1"><CoordinateDefinitions>'
        f'<Transform From="StylusTip" To="Stylus" Matrix="{tip}" Error="0.3"/>'
        f"</CoordinateDefinitions></PlusConfiguration>")
    return recording, device_set


def test_stylus_tip_from_a_tracking_only_recording_averaged_over_the_still_segment(fresh_nifti_case, tmp_path):
    tip_reference_mm = np.array([12.5, -40.25, 77.0])
    recording, device_set = _stylus_recording(tmp_path, tip_reference_mm)
    session = CaseSession(fresh_nifti_case)
    landmark, still = stylus_landmark(session, recording, "L3 spinous tip", device_set=device_set)
    assert (landmark.name, landmark.frame, landmark.pair) == ("L3 spinous tip (stylus)", "Reference", "L3 spinous tip")
    # frames 6-15 are still, 9 is INVALID: the longest still run of valid frames is 10-15
    assert still.frames.tolist() == [10, 11, 12, 13, 14, 15]
    np.testing.assert_allclose(landmark.point_mm, tip_reference_mm, atol=1e-6, rtol=0)
    assert still.spread_mm < 1e-6
    assert CaseSession(fresh_nifti_case).case.landmarks[0].point_mm == landmark.point_mm
    # a chosen segment: the INVALID frame is skipped, the others averaged
    _, chosen = stylus_landmark(session, recording, "L3 spinous tip", device_set=device_set, frames=(6, 16))
    assert chosen.frames.tolist() == [6, 7, 8, 10, 11, 12, 13, 14, 15]
    assert [m.name for m in CaseSession(fresh_nifti_case).case.landmarks] == ["L3 spinous tip (stylus)"]


def test_stylus_refusals_name_the_file_and_the_problem(fresh_nifti_case, tmp_path):
    recording, device_set = _stylus_recording(tmp_path, [0.0, 0.0, 0.0], still=range(3, 6))
    session = CaseSession(fresh_nifti_case)
    with pytest.raises(WidgetError, match="no still segment in the stylus recording") as caught:
        stylus_landmark(session, recording, "a", device_set=device_set)
    assert caught.value.path == str(recording)
    with pytest.raises(WidgetError, match=r"the stylus tip moved [\d.]+ mm during frames 0-9"):
        stylus_landmark(session, recording, "a", device_set=device_set, frames=(0, 10))
    with pytest.raises(WidgetError, match="no StylusTipToStylus") as caught:
        stylus_landmark(session, recording, "a")  # the case's own device set has no pivot calibration
    assert caught.value.path.endswith(".xml")
    assert CaseSession(fresh_nifti_case).case.landmarks == []


def test_stylus_tip_points_are_the_pose_applied_to_the_pivot_offset():
    poses = np.stack([_rigid([10.0 * n, -5.0, 3.0 * n], [n, 2.0 * n, -n]) for n in range(4)])
    tip = Transform.from_rotation_translation(np.eye(3), TIP_IN_STYLUS_MM, "StylusTip", "Stylus")
    expected = [(pose @ np.r_[TIP_IN_STYLUS_MM, 1.0])[:3] for pose in poses]
    np.testing.assert_allclose(stylus_tip_points_reference(poses, tip), expected, atol=1e-12, rtol=0)
    with pytest.raises(Exception, match="expected the StylusTipToStylus transform"):
        stylus_tip_points_reference(poses, tip.inverse())
    with pytest.raises(RegistrationError, match="no frame of the stylus recording has a valid pose"):
        still_stylus_tip(np.zeros((3, 3)), [False, False, False])


def test_the_picker_widget_stores_a_click_and_shows_the_fit_or_the_guidance(fresh_nifti_case, shared_data):
    from workbench.widgets.us_landmarks import UsLandmarkPicker

    session = CaseSession(fresh_nifti_case)
    PointListModel(session.case, session.folder).place(NAMES[0], "landmark", [0.0, 0.0, -400.0])
    picker = UsLandmarkPicker(CaseSession(fresh_nifti_case))
    assert "wb-us-landmarks" in picker.widget._dom_classes and picker.name.value == NAMES[0]
    assert "place 3 landmark pairs to register (3 more" in picker.fit_view.value
    picker.frame.value = 7
    picker.click_pixel(700.25, 150.5)
    hook = json.loads(picker.last_pick.value)
    assert (hook["name"], hook["frame"], hook["pairs"]) == (NAMES[0], 7, 1)
    np.testing.assert_allclose(hook["point_reference"], _independent_reference(shared_data, 7, 700.25, 150.5), atol=1e-6)
    assert "place 3 landmark pairs to register (2 more" in picker.fit_view.value
    # a case without sweeps: the widget is the guidance line
    document = json.loads((fresh_nifti_case / "case.json").read_text())
    document["sweeps"] = []
    (fresh_nifti_case / "case.json").write_text(json.dumps(document))
    empty = UsLandmarkPicker(CaseSession(fresh_nifti_case))
    assert "no tracked ultrasound sweep" in empty.status.value and "wb-guidance" in empty.status.value
