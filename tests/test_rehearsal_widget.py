"""The rehearsal panel (notebook 08): its controller performs whole attempts without a kernel, the
ipywidgets view follows button clicks, and notebook 08 runs top to bottom on the demo case.

Numbers checked: following the plan puts the tip within 1 mm of the target with no puncture event
and 6 mL injected; a path turned towards the canal raises events; the saved ``metrics.json``
holds the attempt's metrics; the needle shows on the B-mode as bright pixels along its projected
line. The time of one probe-slider update (render + MRI reslice + blend + three PNGs) is printed,
never asserted (docs/notebooks.md, latency).
"""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest

from workbench.widgets.session import demo_working_copy
from tests.pixels import line_brightness

REPO = Path(__file__).resolve().parents[1]
#: Events that mean the needle went where it must not (a plan followed exactly raises none of them).
PUNCTURES = {"dura_puncture", "vessel_puncture", "kidney_puncture", "nerve_contact", "intravascular_injection",
             "epidural_injection"}


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory):
    return demo_working_copy(tmp_path_factory.mktemp("rehearsal") / "case")


@pytest.fixture(scope="module")
def scene(case_dir):
    from workbench.rehearsal.scene import load_scene

    return load_scene(case_dir)


@pytest.fixture(scope="module")
def controller(scene):
    from workbench.widgets.rehearsal import RehearsalController

    return RehearsalController(scene)


def test_an_attempt_along_the_plan_reaches_the_target_and_is_saved(controller, case_dir):
    c = controller
    c.new_attempt(c.target_names(c.scene)[0])
    c.snap()
    pixels_before = c.needle_pixels()
    assert pixels_before is None  # nothing inserted yet
    c.insert()
    steps = c.advance_to_target(5.0)
    assert steps == int(np.ceil(c.plan_depth_mm / 5.0))  # every step moved: no bone on the plan's path
    tip_error_mm = float(np.linalg.norm(c.needle.tip_mri - c.target_mri))
    assert tip_error_mm < 1.0, tip_error_mm
    # the snapped plane holds the path: entry and tip on the image plane (within 0.5 mm)
    pixels = c.needle_pixels()
    assert abs(pixels["entry_off_plane_mm"]) < 0.5 and abs(pixels["tip_off_plane_mm"]) < 0.5, pixels
    injected = 0
    while c.can_inject():
        c.inject(1.0)
        injected += 1
    assert injected == 6 and c.injected_ml == pytest.approx(c.plan_volume_ml) == pytest.approx(6.0)
    metrics = c.finish()
    assert metrics["tip_to_target_mm"] < 1.0
    assert metrics["tip_to_target_mm"] == pytest.approx(tip_error_mm, abs=1e-3)  # metrics.json rounds to 1e-4
    assert metrics["injected_ml"] == pytest.approx(6.0)
    types = {e["type"] for e in metrics["events"]}
    assert not types & PUNCTURES, metrics["events"]
    assert metrics["punctures"] == 1 and metrics["structure_punctures"] == 0 and metrics["redirections"] == 0
    # saved into the case: metrics.json equal to the metrics shown, no staging folder left behind
    folder = c.saved_to
    assert folder.parent == case_dir / "rehearsals" and folder.is_dir()
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved["tip_to_target_mm"] == pytest.approx(metrics["tip_to_target_mm"], abs=1e-9)
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]
    rows = {row["metric"]: row for row in c.score_rows()}
    assert rows["tip to target mm"]["pass"] == "yes" and rows["structure punctures"]["pass"] == "yes"
    assert rows["injection compartment"]["value"] == "paravertebral" and rows["injection compartment"]["pass"] == "yes"
    with pytest.raises(Exception, match="finished"):
        c.finish()
    teaching = c.teaching_score()  # the teaching sessions' scorer, where it is there
    if teaching is not None:
        assert teaching["passed"] and teaching["safety_status"] == "ok" and teaching["score"] >= 80.0, teaching


def test_a_shallow_needle_is_a_bright_line_on_the_b_mode(controller):
    """In plane and 50 deg from the plan's steep path (about 40 deg to the transducer face) the shaft
    is a specular reflector: bright pixels all along its projected line, darker beside it. The plan's
    own path, nearly along the beam, shows faintly (imaging.needle_visibility)."""
    c = controller
    c.new_attempt(c.target_names(c.scene)[0])
    c.snap()
    c.insert()
    c.redirect(-45.0, "in-plane")
    c.advance(25.0)
    pixels = c.needle_pixels()
    assert abs(pixels["tip_off_plane_mm"]) < 0.5  # an in-plane redirect keeps the needle in the image plane
    bmode = c.images["bmode"]
    along = line_brightness(bmode, pixels["entry_px"], pixels["tip_px"])
    beside = [np.median(line_brightness(bmode, *[np.asarray(pixels[k]) + np.array([dx, 0.0]) for k in ("entry_px", "tip_px")]))
              for dx in (-25.0, 25.0)]
    print(f"needle line on the B-mode: median {np.median(along):.0f} grey, 25 px beside it {beside[0]:.0f} / {beside[1]:.0f}")
    assert len(along) >= 30 and np.median(along) >= 200 and np.median(along) > max(beside) + 40


def test_a_needle_turned_towards_the_canal_raises_events(controller):
    c = controller
    c.new_attempt(c.target_names(c.scene)[0])
    c.snap()
    c.insert()
    c.advance(20.0)
    # turn the needle towards the midline (in the image plane) and push on past the target depth
    entry_x = float(c.needle.entry_mri[0])
    toward_midline = min((c.redirect_direction(a, "in-plane") for a in (25.0, -25.0)),
                         key=lambda d: np.sign(entry_x) * d[0])
    c.attempt.redirect(toward_midline)
    c._after_action()
    for _ in range(14):
        before = c.needle.depth_mm
        c.advance(5.0)
        if c.needle.depth_mm <= before + 1e-9:
            break
    types = [m["type"] for m in c.messages]
    print("events on the deviated path:", [m["text"] for m in c.messages])
    assert "bone_contact" in types, types  # the spinous process (or lamina) stops the tip before the canal
    assert c.needle.depth_mm < c.plan_depth_mm  # the tip rests on bone, short of the plan's depth
    metrics = c.finish(save=False)
    assert metrics["redirections"] == 1
    assert metrics["tip_to_target_mm"] > 5.0
    assert [e["type"] for e in metrics["events"]] == types
    teaching = c.teaching_score()
    if teaching is not None:
        assert not teaching["passed"], teaching  # 25 deg off and on bone is no pass


def test_probe_slider_update_time_is_measured(controller):
    """One slider step: new pose, B-mode render, MRI reslice, blend and the three PNGs (printed only)."""
    from workbench.widgets.rehearsal import png_bytes

    c = controller
    c.new_attempt()
    start_z = float(c.pose.centre_z_mm)
    times_ms = []
    for step in range(8):
        t0 = time.perf_counter()
        images = c.set_pose(centre_z_mm=start_z + step)
        for image in images.values():
            png_bytes(image)
        times_ms.append((time.perf_counter() - t0) * 1000.0)
    height, width = c.images["bmode"].shape
    print(f"probe slider update: median {np.median(times_ms):.1f} ms, max {np.max(times_ms):.1f} ms "
          f"({width} x {height} px B-mode + MRI + fused)")
    assert c.pose.centre_z_mm == pytest.approx(start_z + 7)
    assert c.images["mri"].shape == c.images["bmode"].shape == c.images["fused"].shape
    # the MRI reslice is on the same plane: a grey image, not empty
    assert float(np.std(c.images["mri"])) > 10.0


def test_the_panel_follows_clicks_and_shows_the_metrics(controller):
    pytest.importorskip("ipywidgets")
    from PIL import Image

    from workbench.widgets.rehearsal import RehearsalPanel

    controller.new_attempt()
    panel = RehearsalPanel(controller)
    labels = [b.description for b in panel.step_buttons]
    assert labels == ["Advance 1 mm", "Advance 5 mm", "Withdraw 1 mm", "Withdraw 5 mm"]
    assert all(b.disabled for b in panel.step_buttons) and panel.inject_button.disabled  # nothing inserted
    panel.snap_button.click()
    panel.insert_button.click()
    state = json.loads(panel.hook.value)
    assert state["inserted_mm"] == 0.0 and not any(b.disabled for b in panel.step_buttons)
    five, one = panel.step_buttons[1], panel.step_buttons[0]
    for _ in range(4):
        five.click()
    one.click()
    state = json.loads(panel.hook.value)
    assert state["inserted_mm"] == pytest.approx(21.0, abs=0.05)
    panel.step_buttons[2].click()  # withdraw 1 mm
    assert json.loads(panel.hook.value)["inserted_mm"] == pytest.approx(20.0, abs=0.05)
    assert "20.0 mm inserted" in panel.status.value
    # a sweep plays 12 poses head to foot and comes back to where the probe was
    pose, revision = controller.pose, json.loads(panel.hook.value)["revision"]
    panel.sweep_button.click()
    assert controller.pose == pose and json.loads(panel.hook.value)["revision"] == revision + 13
    assert panel.along.value == pytest.approx(pose.centre_z_mm)
    panel.recorded_button.click()  # 24 frames of the recorded sweep, then back to the sliders' pose
    assert json.loads(panel.hook.value)["revision"] == revision + 13 + 25 and controller.pose == pose
    np.testing.assert_allclose(controller._image_to_mri, controller.image_to_mri(pose), atol=1e-9)
    # out of plane by 10 deg: the redirect withdraws to 10 mm, 5 mm more puts the tip 15 sin(10 deg) off the plane
    panel.angle.value = 10.0
    panel.redirect_out.click()
    five.click()
    state = json.loads(panel.hook.value)
    assert state["inserted_mm"] == pytest.approx(15.0, abs=0.05)
    assert abs(state["needle"]["tip_off_plane_mm"]) == pytest.approx(15.0 * np.sin(np.radians(10.0)), abs=0.3)
    assert abs(state["needle"]["entry_off_plane_mm"]) < 0.3
    png = Image.open(io.BytesIO(panel.image_widgets["bmode"].value))
    assert png.size == tuple(state["png_px"])
    # depth marks at the right edge every 10 mm below the transducer face (the fan leaves that edge black)
    edge = np.asarray(png.convert("L"))[:, -3]
    probe = controller.probe
    marks = probe.transducer_origin_px[1] + np.arange(0, 400, 10.0) / probe.pixel_spacing_mm
    marks = marks[(marks >= 0) & (marks < png.size[1] - 1)]
    assert len(marks) >= 8 and all(edge[int(round(r)) - 1: int(round(r)) + 1].max() == 255 for r in marks)
    assert (edge == 255).sum() <= 2 * len(marks)
    panel.inject_button.click()
    assert json.loads(panel.hook.value)["injected_ml"] == pytest.approx(1.0)
    panel.finish_button.click()
    state = json.loads(panel.hook.value)
    assert state["finished"] and "tip_to_target_mm" in state["metrics"]
    assert "tip to target mm" in panel.metrics.value and panel.finish_button.disabled
    shown = float(re.search(r"tip to target mm</td><td[^>]*>([\d.]+)", panel.metrics.value).group(1))
    assert shown == pytest.approx(state["metrics"]["tip_to_target_mm"], abs=0.005 + 1e-9)
    panel.new_button.click()
    state = json.loads(panel.hook.value)
    assert not state["finished"] and state["inserted_mm"] is None and panel.metrics.value == ""


def test_a_case_without_label_map_gets_one_line_of_guidance(case_dir, tmp_path):
    import shutil

    from workbench.widgets.rehearsal import rehearsal_guidance
    from workbench.widgets.session import CaseSession

    copy = tmp_path / "case"
    shutil.copytree(case_dir, copy, ignore=shutil.ignore_patterns("labels", "rehearsals"))
    document = json.loads((copy / "case.json").read_text())
    document["attachments"] = [a for a in document["attachments"] if a["role"] != "label_map"]
    (copy / "case.json").write_text(json.dumps(document))
    line = rehearsal_guidance(CaseSession(copy))
    assert line.startswith("no label map yet: import or segment one in notebook 01")
    assert rehearsal_guidance(CaseSession(case_dir)) is None


def test_notebook_08_runs_on_the_demo_case(case_dir, tmp_path):
    from tests.notebook_runner import execute_notebook

    outputs, _ = execute_notebook(REPO / "notebooks" / "08_rehearsal.ipynb", case_dir, tmp_path, timeout_s=240)
    out = "".join(item["output"].get("text", "") for item in outputs if item["output"].get("output_type") == "stream")
    tip_mm = float(re.search(r"tip to target ([\d.]+) mm", out).group(1))
    assert tip_mm < 1.0, out
    assert re.search(r"injected 6 mL", out) and re.search(r"saved: rehearsals/\S+", out), out
    print(out)


def test_the_teaching_app_links_the_rehearsal_for_its_case_or_each_library_case(tmp_path):
    from workbench.teach import EXTRA_PAGES, TEACHING_NOTEBOOKS, extra_pages_html, prepare_app_folder

    app = tmp_path / "app"
    assert prepare_app_folder(REPO / "notebooks", app) == list(TEACHING_NOTEBOOKS)  # the rehearsal is no step
    assert (app / "08_rehearsal.ipynb").is_file() and list(EXTRA_PAGES) == ["08_rehearsal.ipynb"]
    single = re.findall(r'href="([^"]+)"', extra_pages_html(app))
    assert single == ["/voila/render/08_rehearsal.ipynb"]
    library = re.findall(r'href="([^"]+)"', extra_pages_html(app, cases=[tmp_path / "PVB-001", tmp_path / "PVB-002"]))
    assert library == ["/voila/render/08_rehearsal.ipynb?case=PVB-001", "/voila/render/08_rehearsal.ipynb?case=PVB-002"]
    assert extra_pages_html(tmp_path) == ""  # a folder without notebook 08 links nothing


def test_the_recorded_sweep_is_followed_through_the_case_registration(controller, case_dir):
    from workbench.io.sequence import pose_series
    from workbench.widgets.session import CaseSession, case_registration

    c = controller
    c.new_attempt()
    planes = c.recorded_sweep_planes(count=5)
    session = CaseSession(case_dir)
    sequence, sweep = session.sweep(0), session.case.sweeps[0]
    probe_to_reference, valid = pose_series(sequence, "ProbeToReference")
    first = int(np.flatnonzero(valid)[0])
    expected = case_registration(session).transform.matrix @ probe_to_reference[first] @ sweep.image_to_probe.matrix
    assert len(planes) == 5
    np.testing.assert_allclose(planes[0], expected, atol=1e-9)  # the demo's recording has the probe's pixels
    pose = c.pose
    images = c.set_plane(planes[2])
    assert c.pose == pose and images["bmode"].shape == images["mri"].shape
    # a recording with other pixels (0.5 mm, 300 wide) keeps its plane and its top-centre point
    recorded = np.eye(4)
    recorded[:3, :3] = np.diag([0.5, 0.5, 0.5])
    recorded[:3, 3] = [10.0, 20.0, 30.0]
    converted = c._in_probe_pixels(recorded, 300)
    assert np.linalg.norm(converted[:3, 0]) == pytest.approx(c.probe.pixel_spacing_mm)
    top_centre_mm = recorded @ np.array([149.5, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(converted @ np.array([c.probe.transducer_origin_px[0], 0.0, 0.0, 1.0]), top_centre_mm,
                               atol=1e-9)


def test_a_library_attempt_is_submitted_to_the_results_database(teaching_library, tmp_path):
    """The submit box of a teaching-library case (notebook 08 in ``workbench teach --library``):
    a scripted attempt along the plan, finished through the controller, submitted under a
    pseudonym to a temporary SQLite store: one ``rehearsal`` row of that trainee, case and task
    whose score equals ``score_rehearsal`` of the saved ``metrics.json`` (1e-9); a name is refused
    and a second submit of the same attempt adds no row. A case outside a library has no box."""
    import shutil

    from workbench.teaching.library import LIBRARY_INDEX, library_case_for
    from workbench.teaching.score import score_rehearsal
    from workbench.teaching.store import PLAN_GEOMETRY_COLUMNS, open_store
    from workbench.widgets.rehearsal import RehearsalController, RehearsalPanel
    from workbench.widgets.session import WidgetError

    case_id = "LIB-001-01"
    library = tmp_path / "library"  # a copy: finishing saves the attempt into the case
    library.mkdir()
    shutil.copy2(teaching_library / LIBRARY_INDEX, library / LIBRARY_INDEX)
    shutil.copytree(teaching_library / case_id, library / case_id)
    task = library_case_for(library / case_id).task
    db = tmp_path / "results.sqlite"

    c = RehearsalController.from_case(library / case_id, task)
    panel = RehearsalPanel(c, submit=True, db=db, session="R-08")
    assert panel.submit_button.disabled  # nothing to submit before Finish
    c.snap()
    c.insert()
    c.advance_to_target(5.0)
    while c.can_inject():
        c.inject(1.0)
    panel.finish()
    assert c.result is not None and not panel.submit_button.disabled
    shown = c.teaching_score()  # what the metrics box showed at Finish

    panel.trainee.value = "John Smith"  # a name, not a pseudonym: refused, nothing stored
    assert panel.submit() is None and "not a pseudonym" in panel.submit_result.value
    panel.trainee.value = " t08 "
    stored = panel.submit()
    assert stored is not None, panel.submit_result.value
    metrics = json.loads(stored["metrics_path"].read_text(encoding="utf-8"))
    expected = score_rehearsal(metrics, case_id=case_id, task=task)
    with open_store(db) as store:
        rows = store.results()
    assert len(rows) == 1, rows
    row = rows[0]
    assert (row["trainee"], row["session"], row["case_id"], row["kind"], row["task"]) == (
        "t08", "R-08", case_id, "rehearsal", task)
    assert row["id"] == stored["attempt_id"]
    assert row["score"] == pytest.approx(expected.score, abs=1e-9) == pytest.approx(shown["score"], abs=1e-9)
    assert row["passed"] == expected.passed and expected.passed and row["score"] >= 90.0  # along the expert path
    assert all(row[name] is None for name in PLAN_GEOMETRY_COLUMNS)
    assert row["metrics"]["tip_to_target_mm"] == pytest.approx(metrics["tip_to_target_mm"], abs=1e-9)
    assert metrics["tip_to_target_mm"] < 1.0
    assert f"Score {expected.score:.0f} / 100, passed" in panel.submit_result.value
    assert f"data-attempt='{row['id']}'" in panel.submit_result.value
    assert json.loads(panel.hook.value)["submitted"]["score"] == pytest.approx(expected.score, abs=1e-9)
    assert panel.submit_button.disabled  # one row per attempt
    with pytest.raises(WidgetError, match="submitted already"):
        c.submit("t08", "R-08", db=db)
    with open_store(db) as store:
        assert len(store.results()) == 1
    panel.new_attempt()
    assert c.submitted is None and panel.submit_result.value == "" and panel.submit_button.disabled
    assert RehearsalPanel(c).submit_box is None  # outside a teaching library: no submit box
