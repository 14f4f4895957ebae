"""The access token of ``workbench lab`` / ``workbench teach`` never appears on a command line.

Any local user can read ``/proc/<pid>/cmdline`` (the process list); only the owner can read a
process's environment or a 0600 file in a 0700 folder. These tests start the real servers on
127.0.0.1 (as the browser tests do, without a browser), read the command line of every process
of the server's session, and check that the URL the launcher prints still works: HTTP 200 with
the token, 403 without it (JupyterLab's API) or a redirect to the login page (Voila).
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from workbench.widgets.cli import TOKEN_ENV, free_port, private_token_file, server_environment

pytestmark = pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc (Linux)")

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120


def _session_pids(leader: int) -> list[int]:
    """Every live process whose session id is ``leader`` (the launcher and what it started)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == leader:  # fields after "(comm)": state ppid pgrp session ...
                pids.append(int(entry.name))
    return pids


def _cmdline(pid: int) -> bytes:
    with contextlib.suppress(OSError):
        return (Path("/proc") / str(pid) / "cmdline").read_bytes()
    return b""


def _environ(pid: int) -> dict[str, str]:
    with contextlib.suppress(OSError):
        items = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
        return dict(item.decode(errors="replace").split("=", 1) for item in items if b"=" in item)
    return {}


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url), timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _no_redirect_status(url: str) -> tuple[int, str | None]:
    """HTTP status and ``Location`` of ``url`` without following redirects (a login redirect is a refusal)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(url, timeout=10) as response:
            return response.status, response.headers.get("Location")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Location")


@contextlib.contextmanager
def _launched(args: list[str], tmp_path: Path, env_extra: dict[str, str]):
    """Start ``python -m workbench <args>``; yield (process, printed URL); stop its session on exit."""
    state = tmp_path / "jupyter-state"
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(state / "config"),
        "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(state / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(state / "workspaces"),
        "JUPYTER_PLATFORM_DIRS": "1",
        **env_extra,
    }
    env.pop("JUPYTER_TOKEN", None)
    log = tmp_path / "server.log"
    with open(log, "wb") as log_fh:
        process = subprocess.Popen(
            [sys.executable, "-m", "workbench", *args], stdout=subprocess.PIPE, stderr=log_fh, env=env,
            cwd=tmp_path, start_new_session=True,
        )  # fmt: skip
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = process.stdout.readline().decode()
            if not line:
                break
            if line.strip().startswith("http://127.0.0.1:"):
                url = line.strip()
        assert url is not None, f"no URL printed; log:\n{log.read_text()[-2000:]}"
        yield process, url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # kernels or a slow server, if any survived


def _wait_until_up(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, "the launcher exited before the server answered"
        with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError):
            if _status(url) == 200:
                return
        time.sleep(0.5)
    pytest.fail(f"server did not answer within {START_TIMEOUT_S} s")


def _check_no_token_in_any_cmdline(process: subprocess.Popen, token: str) -> tuple[int, Path]:
    """Assert no process of the session has the token in argv; return the server pid and its token file."""
    pids = _session_pids(process.pid)
    assert process.pid in pids and len(pids) >= 2, pids  # the launcher and the server at least
    for pid in pids:
        assert token.encode() not in _cmdline(pid), f"token in the command line of pid {pid}: {_cmdline(pid)!r}"
    servers = [pid for pid in pids if _environ(pid).get("JUPYTER_TOKEN_FILE")]
    assert servers, "no server process reads its token from JUPYTER_TOKEN_FILE"
    token_file = Path(_environ(servers[0])["JUPYTER_TOKEN_FILE"])
    assert "JUPYTER_TOKEN" not in _environ(servers[0]) and TOKEN_ENV not in _environ(servers[0])
    return servers[0], token_file


def _check_private(token_file: Path, token: str) -> None:
    assert token_file.read_text() == token
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700


def _minimal_case(tmp_path: Path) -> Path:
    case = tmp_path / "case"
    case.mkdir()
    (case / "case.json").write_text("{}")
    return case


def _lab_args(tmp_path: Path) -> tuple[int, list[str]]:
    """A free port and ``workbench lab`` arguments on a minimal case and an empty notebook folder."""
    case, notebooks = _minimal_case(tmp_path), tmp_path / "notebooks"
    notebooks.mkdir()
    port = free_port()
    return port, ["lab", "--case", str(case), "--notebooks", str(notebooks), "--port", str(port)]


# -- unit: the token file and the environment --------------------------------------------------------


def test_private_token_file_is_0600_in_a_0700_folder_and_removed_after(tmp_path):
    with private_token_file("abc123") as path:
        _check_private(path, "abc123")
        env = server_environment(path, base={"JUPYTER_TOKEN": "inherited", TOKEN_ENV: "abc123", "PATH": "/bin"})
        assert env == {"PATH": "/bin", "JUPYTER_TOKEN_FILE": str(path)}
    assert not path.exists() and not path.parent.exists()


def test_lab_and_teach_command_lines_hold_no_token(tmp_path):
    from workbench.teach import voila_command
    from workbench.widgets.cli import lab_command

    for command in (lab_command(tmp_path, 8888), voila_command(tmp_path, 8888)):
        assert not [arg for arg in command if "token=" in arg.lower() and arg != "--Voila.auto_token=True"]


def test_teach_refuses_a_token_on_the_command_line(tmp_path):
    case = _minimal_case(tmp_path)
    run = subprocess.run(
        [sys.executable, "-m", "workbench", "teach", "--case", str(case), "--token", "s3cret", "--dry-run"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"workbench teach: error: --token is refused: a command line is readable by every local user; set ${TOKEN_ENV} instead"
    ]


# -- the real servers -------------------------------------------------------------------------------


def test_lab_token_is_not_in_the_process_list_and_the_printed_url_works(tmp_path):
    port, args = _lab_args(tmp_path)
    with _launched(args, tmp_path, {}) as (process, url):
        token = url.split("token=", 1)[1]
        assert url == f"http://127.0.0.1:{port}/lab?token={token}" and len(token) == 48
        status_url = f"http://127.0.0.1:{port}/api/status"
        _wait_until_up(f"{status_url}?token={token}", process)
        _, token_file = _check_no_token_in_any_cmdline(process, token)
        _check_private(token_file, token)
        assert _status(f"{status_url}?token={token}") == 200
        assert _status(status_url) == 403
        assert _status(f"{status_url}?token={token[:-1]}x") == 403
    assert not token_file.exists() and not token_file.parent.exists()  # removed when the server stopped


def test_teach_token_from_the_environment_is_not_in_the_process_list(tmp_path):
    case, notebooks = _minimal_case(tmp_path), tmp_path / "notebooks"
    notebooks.mkdir()
    (notebooks / "02_landmarks_targets.ipynb").write_text(
        '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'
    )
    port, token = free_port(), "f00d" * 12
    args = ["teach", "--case", str(case), "--notebooks", str(notebooks), "--port", str(port)]
    with _launched(args, tmp_path, {TOKEN_ENV: token}) as (process, url):
        assert url == f"http://127.0.0.1:{port}/?token={token}"
        _wait_until_up(url, process)
        launcher_env_token = _environ(process.pid).get(TOKEN_ENV)
        assert launcher_env_token == token  # the environment, readable by the owner only
        _, token_file = _check_no_token_in_any_cmdline(process, token)
        _check_private(token_file, token)
        assert _no_redirect_status(url)[0] == 200
        for refused in (f"http://127.0.0.1:{port}/", f"http://127.0.0.1:{port}/?token={token[:-1]}0"):
            status, location = _no_redirect_status(refused)
            assert status == 302 and location.startswith("/login"), (refused, status, location)
    assert not token_file.exists()


def test_sigterm_to_lab_stops_the_server_and_its_kernels(tmp_path):
    """Issue 17: SIGTERM to ``workbench lab`` must not orphan the server or a running kernel."""
    import psutil

    port, args = _lab_args(tmp_path)
    with _launched(args, tmp_path, {}) as (process, url):
        token = url.split("token=", 1)[1]
        _wait_until_up(f"http://127.0.0.1:{port}/api/status?token={token}", process)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/kernels?token={token}", data=b"{}", method="POST",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 201
        tree = psutil.Process(process.pid).children(recursive=True)
        deadline = time.monotonic() + 60
        while not any("ipykernel" in " ".join(p.cmdline()) for p in tree) and time.monotonic() < deadline:
            time.sleep(0.5)
            tree = psutil.Process(process.pid).children(recursive=True)
        kernels = [p for p in tree if "ipykernel" in " ".join(p.cmdline())]
        assert kernels, "the server started no kernel process"
        pids = [p.pid for p in tree]
        os.kill(process.pid, signal.SIGTERM)  # the launcher only, as a service manager would
        assert process.wait(timeout=40) == 0
        _, alive = psutil.wait_procs([psutil.Process(pid) for pid in pids if psutil.pid_exists(pid)], timeout=15)
        alive = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
        assert not alive, f"left running after SIGTERM: {[(p.pid, p.cmdline()[:3]) for p in alive]}"


def test_stop_process_tree_kills_the_children_of_a_server_that_ignores_sigterm(tmp_path):
    """A server that does not stop within the timeout is killed, and so are its kernels (re-parented otherwise)."""
    import psutil

    from workbench.widgets.cli import stop_process_tree

    stubborn = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(300)\n"
    )
    server = subprocess.Popen([sys.executable, "-c", stubborn], stdout=subprocess.PIPE, start_new_session=True)
    try:
        child_pid = int(server.stdout.readline())
        time.sleep(0.5)  # both have installed their SIGTERM handlers
        stop_process_tree(server, timeout_s=2.0)
        assert server.poll() is not None
        assert not psutil.pid_exists(child_pid) or psutil.Process(child_pid).status() == psutil.STATUS_ZOMBIE
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)


def test_teach_culls_kernels_left_idle_without_a_page():
    """The Voila command line shuts down kernels idle with no page connected (backstop for a lost beacon)."""
    from workbench.teach import CULL_IDLE_TIMEOUT_S, voila_command

    command = voila_command(Path("/tmp/app"), 8866)
    assert f"--MappingKernelManager.cull_idle_timeout={CULL_IDLE_TIMEOUT_S}" in command
    assert "--MappingKernelManager.cull_connected=False" in command  # an open page keeps its kernel
    assert 60 <= CULL_IDLE_TIMEOUT_S <= 900
