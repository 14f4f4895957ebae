"""Widget controllers driven programmatically (no browser): clicks, DOM-hook JSON, fused view, plan, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("ipympl")

from workbench.case import load_case
from workbench.widgets.session import CaseSession, demo_working_copy, landmark_registration


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory):
    return demo_working_copy(tmp_path_factory.mktemp("controllers") / "case")


def _click(view, canvas_u: float, canvas_v: float, button: int = 1):
    """A mouse press at CSS canvas pixel (u, v) (origin top-left), through matplotlib's event path."""
    from matplotlib.backend_bases import MouseEvent

    figure = view.figure
    ratio = figure.canvas.device_pixel_ratio
    x, y = canvas_u * ratio, figure.bbox.height - canvas_v * ratio
    event = MouseEvent("button_press_event", figure.canvas, x, y, button=button)
    figure.canvas.callbacks.process("button_press_event", event)


def test_editor_click_places_the_point_at_the_hooked_lps_position_and_autosaves(case_dir):
    from workbench.widgets.editor import LandmarkEditor

    editor = LandmarkEditor(CaseSession(case_dir), orientation="coronal")
    editor.view.figure.canvas.draw()
    geometry = json.loads(editor.view.geometry_hook.value)
    x0, y0, x1, y1 = geometry["axes_px"]
    corners = {k: np.array(v) for k, v in geometry["corners_lps"].items()}
    assert geometry["canvas_px"] == [540.0, 540.0] and x1 > x0 and y1 > y0
    count = json.loads(editor.last_point.value)["count"]

    u, v = x0 + 0.3 * (x1 - x0), y0 + 0.6 * (y1 - y0)  # where a browser test would click
    expected = corners["top_left"] + 0.3 * (corners["top_right"] - corners["top_left"]) + 0.6 * (
        corners["bottom_left"] - corners["top_left"]
    )
    editor.name.value = "clicked landmark"
    _click(editor.view, u, v)
    last = json.loads(editor.last_point.value)
    assert last["name"] == "clicked landmark" and last["kind"] == "landmark" and last["count"] == count + 1
    assert np.max(np.abs(np.array(last["point_lps"]) - expected)) < 0.01  # mm (hook pixels are rounded to 1e-3 px)
    saved = next(mark for mark in load_case(case_dir).landmarks if mark.name == "clicked landmark")
    assert np.allclose(saved.point_mm, last["point_lps"], atol=1e-9)
    assert editor.name.value == "clicked landmark 2"  # the next click gets the next name

    # a right click does nothing
    _click(editor.view, u, v, button=3)
    assert json.loads(editor.last_point.value)["count"] == count + 1

    # move tool: the selected point goes to the click; delete tool removes the nearest point
    editor.listing.value = "clicked landmark"
    editor.tool.value = "move"
    moved = editor.click_pixel(20.0, 30.0)
    assert np.allclose(moved.point_lps, editor.view.model.pixel_to_lps([20.0, 30.0]))
    editor.tool.value = "delete"
    editor.click_pixel(20.2, 30.1)
    assert "clicked landmark" not in editor.model.names()
    editor.undo_button.click()
    assert "clicked landmark" in editor.model.names()
    assert "clicked landmark" in [mark.name for mark in load_case(case_dir).landmarks]


def test_fused_view_blend_slider_changes_the_image(case_dir):
    from PIL import Image
    import io

    from workbench.widgets.fusion import FusionModel
    from workbench.widgets.sweep import FusedView

    session = CaseSession(case_dir)
    fusion = FusionModel.from_session(session, landmark_registration(session).transform)
    view = FusedView(fusion)
    half = np.asarray(Image.open(io.BytesIO(view.image.value)))
    view.blend.value = 0
    mri_only = np.asarray(Image.open(io.BytesIO(view.image.value)))
    view.blend.value = 100
    us_only = np.asarray(Image.open(io.BytesIO(view.image.value)))
    assert np.array_equal(us_only, fusion.images[fusion.frame])
    expected = np.rint(0.5 * mri_only.astype(float) + 0.5 * us_only.astype(float))
    assert np.max(np.abs(half.astype(float) - expected)) <= 1.0
    assert half.std() > 5.0  # not blank
    view.mode.value = "colour"
    assert np.asarray(Image.open(io.BytesIO(view.image.value))).shape[2] == 3


def test_plan_model_numbers_follow_the_planning_package(case_dir, tmp_path):
    from workbench.planning.model import derive_geometry
    from workbench.widgets.plan import EXPERT_PREFIX, PlanModel

    session = CaseSession(case_dir)
    model = PlanModel(session, landmark_registration(session).transform)
    target = model.targets()[0]
    trajectory = model.trajectory(target, EXPERT_PREFIX + target)
    values = model.evaluate(trajectory)
    truth = next(p for p in session.ground_truth()["expert_plans"] if p["target"] == target)
    assert values["depth_mm"] == pytest.approx(truth["insertion_depth_mm"], abs=1e-9)
    assert values["angle_to_axial_deg"] == pytest.approx(derive_geometry(trajectory).angle_to_axial_deg, abs=1e-12)
    assert values["needle"] == "120 mm 22G"  # the shortest catalogue needle with 10 mm to spare at 82 mm
    assert values["status"] in ("ok", "warning")
    best = model.suggest(trajectory)[0]
    assert best.safety.status == "ok"
    files = model.export(trajectory, tmp_path)
    assert {f.name for f in files} == {"plan.json", "plan.mrk.json", "plan.csv", "report.html", "registration.tfm", "registration.h5"}
    plan = json.loads(next(f for f in files if f.name == "plan.json").read_text())
    assert "PatientName" not in json.dumps(plan)


def test_registration_parameters_from_widget_values():
    from workbench.registration.params import IcpParameters
    from workbench.widgets.registration import params_from_values
    from workbench.widgets.session import WidgetError

    params = params_from_values(IcpParameters, {"distance_schedule_mm": "10, 4; 2", "trim_fraction": 0.7})
    assert params.distance_schedule_mm == (10.0, 4.0, 2.0) and params.trim_fraction == 0.7
    with pytest.raises(WidgetError, match="distance_schedule_mm"):
        params_from_values(IcpParameters, {"distance_schedule_mm": "ten"})


def test_lab_dry_run_binds_localhost_with_a_token(case_dir):
    out = subprocess.run([sys.executable, "-m", "workbench", "lab", "--case", str(case_dir), "--dry-run"],
                         capture_output=True, text=True, check=True).stdout
    plan = json.loads(out)
    assert plan["url"].startswith("http://127.0.0.1:") and len(plan["url"].split("token=")[1]) == 48
    assert "--ServerApp.ip=127.0.0.1" in plan["command"] and plan["case"] == str(case_dir.resolve())
    assert plan["notebooks"].endswith("notebooks")


def test_bench_ui_reports_median_and_p90():
    out = subprocess.run([sys.executable, "-m", "workbench", "bench", "ui", "--json", "--repeats", "3"],
                         capture_output=True, text=True, check=True).stdout
    report = json.loads(out)
    for key in ("slice_update", "fused_overlay"):
        row = report[key]
        assert row["samples"] == 3 and 0 < row["median_ms"] <= row["p90_ms"] and row["target_ms"] == 50.0
    assert report["slice_px"] == [512, 512]


def test_every_name_of_workbench_widgets_resolves():
    import workbench.widgets as widgets

    missing = [name for name in widgets.__all__ if getattr(widgets, name, None) is None]
    assert missing == []
    with pytest.raises(AttributeError):
        widgets.NoSuchWidget  # noqa: B018
