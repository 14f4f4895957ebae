"""``workbench teach [--case DIR]``: the Voila teaching app (notebooks 02-04) on 127.0.0.1.

Voila renders notebooks as apps: the code cells run, only their widgets and text are shown.
The teaching app serves three notebooks, copied into a temporary folder so Voila's tree page
lists only them:

- ``02_landmarks_targets.ipynb``: click on the MRI to place landmarks, targets and entry points;
- ``03_register_sweep.ipynb``: register to a tracked sweep, fused view with a blend slider;
- ``04_plan_export.ipynb``: choose target, entry and needle, check safety, export the plan.

The case (``--case DIR``, else a working copy of the built-in demo case) reaches the notebooks
through ``$WORKBENCH_CASE``. Voila binds to ``127.0.0.1`` and asks for a token (generated, or
``$WORKBENCH_TOKEN``); the URL to open is printed. The token never appears on a command line:
Voila reads it from a 0600 file in a private temporary folder (``JUPYTER_TOKEN_FILE`` with
``--Voila.auto_token=True``), see :func:`workbench.widgets.cli.private_token_file`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.widgets.cli import (
    TOKEN_ENV,
    default_notebook_dir,
    free_port,
    private_token_file,
    run_until_interrupted,
    server_environment,
    server_folders,
    server_token,
)

__all__ = ["TEACHING_NOTEBOOKS", "default_notebook_dir", "prepare_app_folder", "register", "voila_command", "voila_environment"]

#: The notebooks of the teaching app, in the order the tree page lists them.
TEACHING_NOTEBOOKS = ("02_landmarks_targets.ipynb", "03_register_sweep.ipynb", "04_plan_export.ipynb")

#: Voila template ("lab" without the Font Awesome CDN links, so the app loads nothing from the
#: network) and the Jupyter data folder that holds it (``voila/templates/workbench``).
TEMPLATE = "workbench"
TEMPLATE_ROOT = Path(__file__).resolve().parent / "teach_data"


def prepare_app_folder(notebook_dir: Path, app_dir: Path) -> list[str]:
    """Copy the teaching notebooks found in ``notebook_dir`` into ``app_dir``; return their names.

    Raises
    ------
    WorkbenchError
        If ``notebook_dir`` holds none of :data:`TEACHING_NOTEBOOKS`.
    """
    found = [name for name in TEACHING_NOTEBOOKS if (notebook_dir / name).is_file()]
    if not found:
        raise WorkbenchError(f"none of the teaching notebooks {', '.join(TEACHING_NOTEBOOKS)} is here", notebook_dir)
    app_dir.mkdir(parents=True, exist_ok=True)
    for name in found:
        shutil.copy2(notebook_dir / name, app_dir / name)
    return found


def voila_command(app_dir: Path, port: int, open_browser: bool = False) -> list[str]:
    """The Voila command line: 127.0.0.1 only, no port hopping, no tracebacks, and no token.

    ``--Voila.auto_token=True`` makes Voila ask jupyter-server's identity provider for the token,
    which reads ``JUPYTER_TOKEN_FILE`` (:func:`voila_environment`); without it Voila would run
    with no token at all.
    """
    command = [
        sys.executable, "-m", "voila", str(app_dir),
        "--Voila.ip=127.0.0.1",
        f"--Voila.port={port}",
        "--Voila.port_retries=0",
        "--Voila.auto_token=True",
        f"--Voila.open_browser={open_browser}",
        "--VoilaConfiguration.show_tracebacks=False",
        f"--template={TEMPLATE}",
        "--theme=light",
    ]  # fmt: skip
    return command


def voila_environment(case_dir: Path, token_file: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of the Voila process: the case, the token file, our template on ``JUPYTER_PATH``."""
    env = server_environment(token_file, base)
    env["WORKBENCH_CASE"] = str(case_dir)
    env["JUPYTER_PATH"] = os.pathsep.join(p for p in (str(TEMPLATE_ROOT), env.get("JUPYTER_PATH", "")) if p)
    return env


def register(subparsers) -> None:
    """Add the ``teach`` sub-command to an ``argparse`` sub-parser collection."""
    p = subparsers.add_parser(
        "teach",
        help=f"serve notebooks 02-04 as a Voila teaching app (127.0.0.1, token: random or ${TOKEN_ENV}) on the demo case",
    )
    p.add_argument("--case", type=Path, default=None, help="case folder for the app (default: demo working copy)")
    p.add_argument("--notebooks", type=Path, default=None, help="notebook folder (default: notebooks/ of the checkout)")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    # kept only to refuse it with a clear message: a command line is readable in the process list
    p.add_argument("--token", default=None, help=argparse.SUPPRESS)
    p.add_argument("--browser", action="store_true", help="also open a web browser")
    p.add_argument("--dry-run", action="store_true", help="prepare the case, print the plan as JSON, start nothing")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    """Run ``workbench teach``; returns Voila's exit status (0 after Ctrl-C)."""
    if args.token is not None:
        raise WorkbenchError(
            f"--token is refused: a command line is readable by every local user; set ${TOKEN_ENV} instead"
        )
    case_dir, notebook_dir = server_folders(args.case, args.notebooks)
    port = args.port or free_port()
    token = server_token()
    url = f"http://127.0.0.1:{port}/?token={token}"
    with tempfile.TemporaryDirectory(prefix="workbench-teach-") as tmp, private_token_file(token) as token_file:
        app_dir = Path(tmp) / "teach"
        names = prepare_app_folder(notebook_dir, app_dir)
        command = voila_command(app_dir, port, args.browser)
        if args.dry_run:
            plan = {"case": str(case_dir), "notebooks": names, "url": url, "command": command}
            print(json.dumps(plan))
            return 0
        missing = sorted(set(TEACHING_NOTEBOOKS) - set(names))
        if missing:
            print(f"workbench teach: not found in {notebook_dir}: {', '.join(missing)}", file=sys.stderr)
        print(f"Case: {case_dir}\nApps: {', '.join(names)}\nOpen the teaching app at:\n\n    {url}\n\n(Ctrl-C to stop)", flush=True)
        return run_until_interrupted(command, voila_environment(case_dir, token_file))

