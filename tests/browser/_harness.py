"""Servers, request logging and image checks shared by the real-browser tests.

Nothing here needs a browser: the pure helpers (:func:`canvas_to_lps`, :func:`grey_variance`,
:func:`is_local_url`) are unit-tested in ``test_harness.py`` without Chromium.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import numpy as np

from workbench.widgets.cli import free_port, root_flags

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")

#: Hosts a page may talk to: the servers these tests start, nothing else.
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})

#: Schemes that never leave the page (inline data, object URLs, blank pages, devtools internals).
INLINE_SCHEMES = frozenset({"data", "blob", "about", "chrome", "chrome-extension", "devtools"})

#: A viewer whose central crop has a grey-level variance below this is "blank". A uniform box
#: (an empty output, a widget that failed to render, a black VTK window) has variance ~0; JPEG
#: or anti-aliasing noise on such a box stays below 2 (std < 1.5 grey levels). An MRI slice or
#: a shaded 3D scene has a std of tens of grey levels (variance in the hundreds to thousands,
#: see docs/browser-tests.md). 25 = a std of 5 grey levels, 2 % of the 0-255 range.
BLANK_VARIANCE = 25.0

#: Fraction of each side kept for the variance: the central crop drops frames, tick labels and
#: toolbars at the borders, so an empty axes box with a frame still counts as blank.
CENTRAL_CROP = 0.6


def browser_required() -> bool:
    """True when a missing Chromium or Playwright must fail the tests rather than skip them.

    That is in CI (``CI`` set to anything but ``""``, ``0`` or ``false``) and wherever
    ``WORKBENCH_REQUIRE_BROWSER=1``.
    """
    ci = os.environ.get("CI", "").strip().lower()
    return ci not in ("", "0", "false", "no") or os.environ.get("WORKBENCH_REQUIRE_BROWSER", "") == "1"


def is_local_url(url: str) -> bool:
    """True if loading ``url`` stays on this machine (loopback host or an inline scheme)."""
    parts = urlsplit(url)
    if parts.scheme in INLINE_SCHEMES:
        return True
    if parts.scheme not in ("http", "https", "ws", "wss"):
        return False
    return (parts.hostname or "") in LOCAL_HOSTS


@dataclass
class RequestLog:
    """Every URL a browser context requested (HTTP and WebSocket), in order."""

    urls: list[str] = field(default_factory=list)

    def attach(self, context) -> None:
        """Record the requests of a Playwright ``BrowserContext`` and of every page it opens.

        Foreign requests are recorded, then aborted inside the browser, so a test that catches
        one never sends traffic off the machine (nor waits on a network that is not there).
        """
        context.on("request", lambda request: self.urls.append(request.url))
        context.on("page", lambda page: page.on("websocket", lambda ws: self.urls.append(ws.url)))
        context.route(lambda url: not is_local_url(url), lambda route: route.abort("blockedbyclient"))

        def refuse_socket(ws) -> None:
            self.urls.append(ws.url)
            ws.close()

        context.route_web_socket(lambda url: not is_local_url(url), refuse_socket)

    def foreign(self) -> list[str]:
        """The requested URLs that left the machine (should be none)."""
        return [url for url in self.urls if not is_local_url(url)]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"urls": self.urls, "foreign": self.foreign()}, indent=1))


def merge_result(path: Path, key: str, value) -> None:
    """Set ``key`` to ``value`` in the JSON object stored at ``path`` (created if missing)."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        document = {}
    document[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1))


def canvas_to_lps(geometry: dict, u_px: float, v_px: float) -> np.ndarray:
    """LPS position (mm, shape (3,)) under canvas pixel ``(u_px, v_px)`` of a slice view.

    ``geometry`` is the JSON of the ``wb-view-geometry`` widget: ``axes_px`` = ``[x0, y0, x1, y1]``
    in canvas pixels (origin top left, y down) and ``corners_lps`` the outer voxel edges of the
    displayed image at the top-left, top-right and bottom-left corners of the axes.
    """
    x0, y0, x1, y1 = (float(c) for c in geometry["axes_px"])
    corners = geometry["corners_lps"]
    top_left = np.asarray(corners["top_left"], dtype=float)
    top_right = np.asarray(corners["top_right"], dtype=float)
    bottom_left = np.asarray(corners["bottom_left"], dtype=float)
    return top_left + (u_px - x0) / (x1 - x0) * (top_right - top_left) + (v_px - y0) / (y1 - y0) * (bottom_left - top_left)


def grey_variance(png: bytes, crop: float = CENTRAL_CROP) -> float:
    """Variance of the grey levels (0-255) in the central ``crop`` of a PNG screenshot."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        grey = np.asarray(image.convert("L"), dtype=float)
    rows, cols = grey.shape
    dr, dc = int(rows * (1 - crop) / 2), int(cols * (1 - crop) / 2)
    centre = grey[dr : rows - dr or None, dc : cols - dc or None]
    return float(centre.var()) if centre.size else 0.0


def _wait_http(url: str, process: subprocess.Popen, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before answering; log: {log_path}\n{_tail(log_path)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    raise RuntimeError(f"server did not answer {url.split('?')[0]} within {timeout_s:.0f} s; log: {log_path}\n{_tail(log_path)}")


def _tail(path: Path, n_chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n_chars:]
    except OSError:
        return ""


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group (it and the kernels it started), SIGKILL if it lingers."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    # kernels live in the same process group (start_new_session below); make sure none outlives us
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


@dataclass(frozen=True)
class Server:
    """A Jupyter or Voila server these tests started on 127.0.0.1."""

    base_url: str
    token: str
    log_path: Path

    def url(self, path: str) -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.base_url}{path}{sep}token={self.token}"

    def api(self, method: str, path: str) -> object:
        request = urllib.request.Request(self.url(path), method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """Shut every running kernel down through the REST API (frees the 2 shared cores)."""
        with contextlib.suppress(urllib.error.URLError, OSError, ValueError):
            for kernel in self.api("GET", "/api/kernels") or []:
                with contextlib.suppress(urllib.error.URLError, OSError):
                    self.api("DELETE", f"/api/kernels/{kernel['id']}")


def _lab_settings(settings_dir: Path) -> None:
    """User settings that keep JupyterLab quiet: no news or update checks (they would go online)."""
    folder = settings_dir / "@jupyterlab" / "apputils-extension"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))


@contextlib.contextmanager
def running_lab(root_dir: Path, env: dict[str, str], state_dir: Path, timeout_s: float = 90) -> Iterator[Server]:
    """Start JupyterLab on 127.0.0.1 with a random token; stop it and its kernels on exit.

    ``state_dir`` receives the server log and the isolated Jupyter config/settings/workspaces,
    so the user's own JupyterLab state never leaks in.
    """
    port, token = free_port(), secrets.token_hex(16)
    state_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(state_dir / "lab-workspaces", ignore_errors=True)  # no notebook of an earlier run reopens
    settings = state_dir / "lab-settings"
    _lab_settings(settings)
    full_env = {
        **os.environ,
        **env,
        "JUPYTER_CONFIG_DIR": str(state_dir / "jupyter-config"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(state_dir / "lab-workspaces"),
        "JUPYTER_RUNTIME_DIR": str(state_dir / "jupyter-runtime"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "JUPYTER_TOKEN": token,  # never on the command line (readable in the process list)
    }
    log_path = state_dir / "jupyterlab.log"
    cmd = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root_dir}",
        "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=", "--LabApp.extension_manager=readonly",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ] + root_flags()  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(cmd, cwd=root_dir, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", token, log_path)
    try:
        _wait_http(server.url("/api/status"), process, log_path, timeout_s)
        yield server
    finally:
        if process.poll() is None:
            server.shutdown_kernels()
        _stop(process)


@contextlib.contextmanager
def running_teach(case_dir: Path, env: dict[str, str], state_dir: Path, timeout_s: float = 90) -> Iterator[Server]:
    """Start the Voila teaching app (``python -m workbench teach``) on 127.0.0.1; stop it on exit."""
    port, token = free_port(), secrets.token_hex(16)
    state_dir.mkdir(parents=True, exist_ok=True)
    # the token goes through the environment: `workbench teach` refuses --token (process list)
    full_env = {**os.environ, **env, "JUPYTER_CONFIG_DIR": str(state_dir / "jupyter-config"), "WORKBENCH_TOKEN": token}
    cmd = [sys.executable, "-m", "workbench", "teach", "--case", str(case_dir), "--port", str(port)]
    with serving(cmd, cwd=state_dir, env=full_env, port=port, token=token, log_path=state_dir / "voila.log",
                 timeout_s=timeout_s) as server:
        yield server


@contextlib.contextmanager
def serving(cmd: list[str], *, cwd: Path, env: dict[str, str], port: int, token: str, log_path: Path,
            ready_path: str = "/", timeout_s: float = 90) -> Iterator[Server]:
    """Run the server ``cmd`` (listening on 127.0.0.1:``port``) in its own process group, output to
    ``log_path``; yield its :class:`Server` once ``ready_path`` answers 200; stop it and its kernels on exit."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", token, log_path)
    try:
        _wait_http(server.url(ready_path), process, log_path, timeout_s)
        yield server
    finally:
        _stop(process)
