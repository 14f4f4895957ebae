"""``workbench lab [--case DIR]``: JupyterLab on the notebooks, bound to 127.0.0.1 with a token.

Prepares the case (``--case DIR``, else a working copy of the built-in demo case), passes it to
the notebooks through ``$WORKBENCH_CASE`` and starts JupyterLab on ``notebooks/`` at
``127.0.0.1`` on a free port with a generated token; prints the URL to open.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

from workbench.errors import WorkbenchError

__all__ = ["register", "lab_command", "default_notebook_dir", "free_port", "root_flags", "server_folders"]

#: Environment variable naming the notebook folder ``workbench lab`` and ``workbench teach`` serve.
NOTEBOOKS_ENV = "WORKBENCH_NOTEBOOKS"


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
        print("Preparing the demo case (generated on first use, about 30 s)...", file=sys.stderr, flush=True)
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


def lab_command(notebook_dir: Path, port: int, token: str, open_browser: bool = False) -> list[str]:
    """The JupyterLab command line: 127.0.0.1 only, the given token, no port hopping.

    Adds :func:`root_flags` where the user is root.
    """
    return [
        sys.executable, "-m", "jupyterlab",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={notebook_dir}",
        f"--ServerApp.open_browser={open_browser}",
        *root_flags(),
    ]


def register(subparsers) -> None:
    """Add the ``lab`` sub-command to an ``argparse`` sub-parser collection."""
    p = subparsers.add_parser("lab", help="start JupyterLab on the notebooks (127.0.0.1, token) with the demo case")
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
    token = secrets.token_hex(24)
    url = f"http://127.0.0.1:{port}/lab?token={token}"
    command = lab_command(notebook_dir, port, token, args.browser)
    if args.dry_run:
        print(json.dumps({"case": str(case_dir), "notebooks": str(notebook_dir), "url": url, "command": command}))
        return 0
    print(f"Case: {case_dir}\nNotebooks: {notebook_dir}\nOpen JupyterLab at:\n\n    {url}\n\n(Ctrl-C to stop)", flush=True)
    env = dict(os.environ, **{CASE_ENV: str(case_dir)})
    try:
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:
        return 0
