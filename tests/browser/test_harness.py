"""The pieces of the browser tests that need no browser: click geometry, blank detection, the
request filter, when a missing browser fails, and the ``workbench teach`` command line.

The last test drives Chromium (marker ``browser``): the request logger really catches a page
that reaches for a CDN, and stops that request inside the browser.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ._harness import BLANK_VARIANCE, canvas_to_lps, grey_variance, is_local_url

REPO = Path(__file__).resolve().parents[2]


def _png(grey: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(grey.astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------- click geometry (contract formula)

GEOMETRY = {
    "canvas_px": [540, 540],
    "axes_px": [40.0, 20.0, 500.0, 480.0],
    # a coronal view: right-to-left along +L across, superior at the top (S decreasing downwards)
    "corners_lps": {"top_left": [-210.0, 21.0, 191.0], "top_right": [210.0, 21.0, 191.0], "bottom_left": [-210.0, 21.0, -229.0]},
}


def test_axes_corners_map_to_the_image_corners_and_the_centre_to_the_middle():
    assert np.allclose(canvas_to_lps(GEOMETRY, 40.0, 20.0), [-210.0, 21.0, 191.0], atol=1e-12)
    assert np.allclose(canvas_to_lps(GEOMETRY, 500.0, 20.0), [210.0, 21.0, 191.0], atol=1e-12)
    assert np.allclose(canvas_to_lps(GEOMETRY, 40.0, 480.0), [-210.0, 21.0, -229.0], atol=1e-12)
    assert np.allclose(canvas_to_lps(GEOMETRY, 270.0, 250.0), [0.0, 21.0, -19.0], atol=1e-12)


def test_one_canvas_pixel_moves_the_point_by_the_display_scale():
    # 420 mm over 460 axes pixels: 0.913 mm per pixel along L and along -S
    step_mm = canvas_to_lps(GEOMETRY, 101.0, 301.0) - canvas_to_lps(GEOMETRY, 100.0, 300.0)
    assert np.allclose(step_mm, [420.0 / 460.0, 0.0, -420.0 / 460.0], atol=1e-12)


def test_oblique_corners_keep_the_point_in_the_image_plane():
    rotation = np.array([[0.8, -0.6, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]])
    corners = {key: (rotation @ np.asarray(value)).tolist() for key, value in GEOMETRY["corners_lps"].items()}
    oblique = dict(GEOMETRY, corners_lps=corners)
    point_lps = canvas_to_lps(oblique, 123.0, 321.0)
    assert np.allclose(point_lps, rotation @ canvas_to_lps(GEOMETRY, 123.0, 321.0), atol=1e-9)


# ------------------------------------------------------------------------- blank-viewer detection


def test_a_uniform_box_and_an_empty_framed_axes_are_blank():
    uniform = np.full((300, 400), 255.0)
    framed = uniform.copy()
    framed[10:12, :] = framed[-12:-10, :] = 0  # axes frame and tick marks at the borders
    framed[:, 10:12] = framed[:, -12:-10] = 0
    noisy = uniform - np.random.default_rng(1).integers(0, 3, uniform.shape)  # JPEG-like noise
    for image in (uniform, framed, noisy):
        assert grey_variance(_png(image)) < BLANK_VARIANCE


def test_an_image_with_anatomy_like_contrast_is_not_blank():
    rows, cols = np.mgrid[0:300, 0:400]
    disc = ((rows - 150) ** 2 + (cols - 200) ** 2 < 60**2) * 180.0 + 30.0  # a bright structure on dark
    variance = grey_variance(_png(disc))
    assert variance > 40 * BLANK_VARIANCE  # thousands, far above the threshold


# ---------------------------------------------------------------------------------- request filter


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8888/lab?token=x",
        "ws://127.0.0.1:8888/api/kernels/abc/channels",
        "http://localhost:8866/voila/render/02.ipynb",
        "http://[::1]:8888/static/x.js",
        "data:image/png;base64,AAAA",
        "blob:http://127.0.0.1:8888/0b1c",
        "about:blank",
    ],
)
def test_local_and_inline_urls_are_allowed(url):
    assert is_local_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://cdn.jsdelivr.net/npm/@fortawesome/fontawesome-free@^5/css/all.min.css",
        "http://127.0.0.1.nip.io/x.js",
        "wss://example.org/socket",
        "http://10.0.0.5:8888/lab",
        "ftp://127.0.0.1/x",
    ],
)
def test_foreign_urls_are_caught(url):
    assert not is_local_url(url)


@pytest.mark.parametrize(
    ("env", "required"),
    [({}, False), ({"CI": "true"}, True), ({"CI": "1"}, True), ({"CI": "0"}, False), ({"WORKBENCH_REQUIRE_BROWSER": "1"}, True)],
)
def test_a_missing_browser_fails_in_ci_and_skips_elsewhere(monkeypatch, env, required):
    from . import _harness

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("WORKBENCH_REQUIRE_BROWSER", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert _harness.browser_required() is required


# ------------------------------------------------------------------------- workbench teach (no UI)


def test_teach_serves_only_notebooks_02_to_04_on_loopback_with_a_token(tmp_path):
    from workbench.teach import TEACHING_NOTEBOOKS, prepare_app_folder, voila_command, voila_environment

    source = tmp_path / "notebooks"
    source.mkdir()
    for name in ("01_load_case.ipynb", *TEACHING_NOTEBOOKS, "05_scene_3d.ipynb"):
        (source / name).write_text("{}")
    app = tmp_path / "app"
    assert prepare_app_folder(source, app) == list(TEACHING_NOTEBOOKS)
    assert sorted(p.name for p in app.iterdir()) == sorted(TEACHING_NOTEBOOKS)

    command = voila_command(app, 8899)
    assert "--Voila.ip=127.0.0.1" in command and "--Voila.port=8899" in command
    assert "--Voila.auto_token=True" in command and "--Voila.open_browser=False" in command
    assert not [arg for arg in command if "token=" in arg.lower() and "auto_token" not in arg]
    env = voila_environment(tmp_path / "case", tmp_path / "token", base={"JUPYTER_PATH": "/elsewhere", "JUPYTER_TOKEN": "x"})
    assert env["WORKBENCH_CASE"] == str(tmp_path / "case")
    assert env["JUPYTER_TOKEN_FILE"] == str(tmp_path / "token") and "JUPYTER_TOKEN" not in env
    template_root = env["JUPYTER_PATH"].split(":")[0]
    assert (Path(template_root) / "voila" / "templates" / "workbench" / "index.html.j2").is_file()
    assert env["JUPYTER_PATH"].endswith(":/elsewhere")


def test_teach_template_loads_nothing_from_the_network():
    folder = REPO / "workbench" / "teach_data" / "voila" / "templates" / "workbench"
    for path in folder.iterdir():
        text = path.read_text()
        links = [line for line in text.splitlines() if "href=" in line or "src=" in line]
        assert not [line for line in links if "http" in line], f"{path} links to the network: {links}"


def test_teach_without_teaching_notebooks_exits_2_naming_the_folder(tmp_path):
    case = tmp_path / "case"
    case.mkdir()
    (case / "case.json").write_text("{}")
    empty = tmp_path / "empty"
    empty.mkdir()
    run = subprocess.run(
        [sys.executable, "-m", "workbench", "teach", "--case", str(case), "--notebooks", str(empty), "--dry-run"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert str(empty) in run.stderr and "teaching notebooks" in run.stderr


def test_teach_dry_run_names_the_case_the_notebooks_and_a_loopback_url(tmp_path):
    case = tmp_path / "case"
    case.mkdir()
    (case / "case.json").write_text("{}")
    run = subprocess.run(
        [sys.executable, "-m", "workbench", "teach", "--case", str(case), "--port", "8877", "--dry-run"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "WORKBENCH_TOKEN": "t0k"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    plan = json.loads(run.stdout)
    assert plan["case"] == str(case.resolve())
    assert plan["url"] == "http://127.0.0.1:8877/?token=t0k"
    assert plan["notebooks"][0] == "02_landmarks_targets.ipynb"


# ------------------------------------------------------------------ request logger, in a real browser


@pytest.mark.browser
def test_request_logger_records_and_blocks_a_cdn_request(page_and_log):
    page, log = page_and_log
    page.set_content(
        '<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/x@1/x.css">'
        '<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=">'
    )
    page.wait_for_timeout(300)
    assert log.foreign() == ["https://cdn.jsdelivr.net/npm/x@1/x.css"]
    css_loaded = page.evaluate(
        "() => Array.from(document.styleSheets).some(s => { try { return s.cssRules.length > 0 } catch (e) { return false } })"
    )
    assert not css_loaded
