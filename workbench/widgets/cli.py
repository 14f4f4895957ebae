"""``workbench lab [--case DIR]``: JupyterLab on the notebooks, bound to 127.0.0.1 with a token.

Prepares the case (``--case DIR``, else a working copy of the built-in demo case), passes it to
the notebooks through ``$WORKBENCH_CASE`` and starts JupyterLab on ``notebooks/`` at
``127.0.0.1`` on a free port with a generated token (or ``$WORKBENCH_TOKEN``); prints the URL
to open.

The token never appears on a command line (any local user can read the process list): the
server reads it from a file of mode 0600 in a private temporary folder (mode 0700), named by
``JUPYTER_TOKEN_FILE`` in the server's environment (jupyter-server's ``IdentityProvider.token``
default; Voila uses it with ``--Voila.auto_token=True``). The folder is removed when the server
stops. See :func:`private_token_file` and :func:`server_environment`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

from workbench.errors import WorkbenchError

__all__ = [
    "TOKEN_ENV",
    "default_notebook_dir",
    "free_port",
    "lab_command",
    "private_token_file",
    "register",
    "root_flags",
    "run_until_interrupted",
    "server_environment",
    "server_folders",
    "server_token",
]

#: Environment variable naming the notebook folder ``workbench lab`` and ``workbench teach`` serve.
NOTEBOOKS_ENV = "WORKBENCH_NOTEBOOKS"
#: Environment variable holding the access token to use instead of a random one (never a flag:
#: a command line is readable by every local user).
TOKEN_ENV = "WORKBENCH_TOKEN"


def server_token() -> str:
    """``$WORKBENCH_TOKEN`` if set, else a new random token (48 hex digits)."""
    return os.environ.get(TOKEN_ENV) or secrets.token_hex(24)


@contextlib.contextmanager
def private_token_file(token: str) -> Iterator[Path]:
    """A file holding ``token`` (no newline), mode 0600, in a new temporary folder of mode 0700.

    Only the user can list the folder or read the file; both are removed on exit.
    """
    folder = Path(tempfile.mkdtemp(prefix="workbench-token-"))  # mkdtemp creates it 0700
    try:
        path = folder / "token"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(token)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def server_environment(token_file: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of a Jupyter/Voila server that reads its token from ``token_file``.

    ``JUPYTER_TOKEN_FILE`` names the file; an inherited ``JUPYTER_TOKEN`` is dropped (jupyter-server
    prefers it over the file), and so is ``$WORKBENCH_TOKEN`` (the kernels need neither).
    """
    env = dict(os.environ if base is None else base)
    env.pop("JUPYTER_TOKEN", None)
    env.pop(TOKEN_ENV, None)
    env["JUPYTER_TOKEN_FILE"] = str(token_file)
    return env


def default_notebook_dir() -> Path:
    """``$WORKBENCH_NOTEBOOKS``, else ``notebooks/`` of the checkout (beside the package), else the current folder."""
    if os.environ.get(NOTEBOOKS_ENV):
        return Path(os.environ[NOTEBOOKS_ENV])
    here = Path(__file__).resolve().parents[2] / "notebooks"
    return here if here.is_dir() else Path.cwd()


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the servers bind there only)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_folders(case: Path | None, notebooks: Path | None) -> tuple[Path, Path]:
    """The case folder and notebook folder a local server (lab, teach) works on.

    ``case`` None means a working copy of the demo case (generated on first use); ``notebooks``
    None means :func:`default_notebook_dir`. Raises WorkbenchError naming a missing folder.
    """
    from workbench.widgets.session import demo_working_copy, resolve_case_folder

    if case is not None:
        case_dir = resolve_case_folder(case).resolve()
    else:
        from workbench.phantom.democase import demo_case_folder

        cached = (demo_case_folder() / "case.json").is_file()
        if cached:
            print("Using the cached demo case...", file=sys.stderr, flush=True)
        else:
            print("Generating the demo case (first use only, about 30 s)...", file=sys.stderr, flush=True)
        case_dir = demo_working_copy().resolve()
    notebook_dir = (notebooks or default_notebook_dir()).resolve()
    if not notebook_dir.is_dir():
        raise WorkbenchError("notebook folder not found", notebook_dir)
    return case_dir, notebook_dir


def root_flags() -> list[str]:
    """``--ServerApp.allow_root=True`` when running as root, else nothing.

    Jupyter refuses to start as root without it; containers and CI machines often run as root
    (the server still listens on 127.0.0.1 only).
    """
    return ["--ServerApp.allow_root=True"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []


def _terminate_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def run_until_interrupted(command: list[str], env: dict[str, str]) -> int:
    """Run a server until it exits (its status) or until Ctrl-C or SIGTERM (then stop it, return 0).

    SIGTERM is handled like Ctrl-C so that the caller's clean-up (the private token folder)
    runs; the server gets SIGTERM, then SIGKILL if it is still running after 10 s. The kernels it
    started are stopped with it (see :func:`stop_process_tree`): a server killed on its own leaves
    them running, each holding hundreds of MB.
    """
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        process = subprocess.Popen(command, env=env)
        try:
            return process.wait()
        except KeyboardInterrupt:
            stop_process_tree(process)
            return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


def stop_process_tree(process: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """Stop a server and every process it started (its kernels), SIGTERM first, SIGKILL after ``timeout_s``.

    The descendants are listed before the server is signalled: once it is gone they are
    re-parented and can no longer be found through it.
    """
    import psutil

    try:
        descendants = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    alive = []
    for child in descendants:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.terminate()
            alive.append(child)
    _, still_alive = psutil.wait_procs(alive, timeout=timeout_s)
    for child in still_alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    psutil.wait_procs(still_alive, timeout=timeout_s)


def lab_command(notebook_dir: Path, port: int, open_browser: bool = False) -> list[str]:
    """The JupyterLab command line: 127.0.0.1 only, no port hopping, no token (see :func:`server_environment`).

    Adds :func:`root_flags` where the user is root.
    """
    return [
        sys.executable, "-m", "jupyterlab",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={notebook_dir}",
        f"--ServerApp.open_browser={open_browser}",
        *root_flags(),
    ]


def register(subparsers) -> None:
    """Add the ``lab`` sub-command to an ``argparse`` sub-parser collection."""
    p = subparsers.add_parser(
        "lab",
        help=f"start JupyterLab on the notebooks (127.0.0.1, token: random or ${TOKEN_ENV}) with the demo case",
    )
    p.add_argument("--case", type=Path, default=None, help="case folder for the notebooks (default: demo working copy)")
    p.add_argument("--notebooks", type=Path, default=None, help="notebook folder (default: notebooks/ of the checkout)")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--browser", action="store_true", help="also open a web browser")
    p.add_argument("--dry-run", action="store_true", help="prepare the case, print the plan as JSON, start nothing")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    """Run ``workbench lab``; returns JupyterLab's exit status."""
    from workbench.widgets.session import CASE_ENV

    case_dir, notebook_dir = server_folders(args.case, args.notebooks)
    port = args.port or free_port()
    token = server_token()
    url = f"http://127.0.0.1:{port}/lab?token={token}"
    command = lab_command(notebook_dir, port, args.browser)
    if args.dry_run:
        print(json.dumps({"case": str(case_dir), "notebooks": str(notebook_dir), "url": url, "command": command}))
        return 0
    print(f"Case: {case_dir}\nNotebooks: {notebook_dir}\nOpen JupyterLab at:\n\n    {url}\n\n(Ctrl-C to stop)", flush=True)
    with private_token_file(token) as token_file:
        env = server_environment(token_file)
        env[CASE_ENV] = str(case_dir)
        return run_until_interrupted(command, env)
