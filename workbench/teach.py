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
import html
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from urllib.parse import quote

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

__all__ = [
    "TEACHING_NOTEBOOKS",
    "TEACHING_STEPS",
    "default_notebook_dir",
    "landing_cases_html",
    "prepare_app_folder",
    "prepare_template",
    "register",
    "voila_command",
    "voila_environment",
]

#: The notebooks of the teaching app, in the order the tree page lists them.
TEACHING_NOTEBOOKS = ("02_landmarks_targets.ipynb", "03_register_sweep.ipynb", "04_plan_export.ipynb")

#: The steps of a teaching session as the home page names them: notebook -> button label.
TEACHING_STEPS = {
    "02_landmarks_targets.ipynb": "1 · Landmarks and targets",
    "03_register_sweep.ipynb": "2 · Register to ultrasound",
    "04_plan_export.ipynb": "3 · Plan the needle path",
}
#: Pages the app serves besides the teaching steps (linked below the case table of the home page):
#: notebook -> link label. The rehearsal (issue 18) performs a simulated block on the same case.
EXTRA_PAGES = {"08_rehearsal.ipynb": "Rehearse the block (probe, needle, injectate, score)"}
#: The teacher's page (class results) served with a library (``--library``); its widgets read the
#: results database and session from the environment (workbench.widgets.session.RESULTS_DB_ENV, SESSION_ENV).
TEACHER_NOTEBOOK = Path(__file__).resolve().parent / "teach_data" / "teacher_view.ipynb"
#: Exports a plan page writes (``exports/`` beside the notebooks) that Voila may serve as files.
EXPORT_FILE_ALLOWLIST = (r".*\.(png|jpg|gif|svg)", r"exports/.*\.(html|json|csv|tfm|txt|png|h5)")

#: A kernel idle this long with no page connected is shut down (s), checked every CULL_INTERVAL_S.
CULL_IDLE_TIMEOUT_S = 300
CULL_INTERVAL_S = 30

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
    for name in EXTRA_PAGES:  # served too, listed apart from the steps (extra_pages_html)
        if (notebook_dir / name).is_file():
            shutil.copy2(notebook_dir / name, app_dir / name)
    return found


def extra_pages_html(app_dir: Path, base_url: str = "/", cases: list[Path] | None = None) -> str:
    """Links of the home page to the :data:`EXTRA_PAGES` present in ``app_dir`` (empty when none).

    With ``cases`` (a library) one link per page and case, ``?case=<folder name>`` as the steps' links.
    """
    style = ("display:inline-block;margin:2px 8px 2px 0;padding:4px 10px;border-radius:4px;"
             "background:var(--jp-brand-color1);color:white;text-decoration:none")
    links = []
    for name, label in EXTRA_PAGES.items():
        if not (app_dir / name).is_file():
            continue
        href = base_url + "voila/render/" + quote(name)
        if cases is None:
            links.append(f'<a style="{style}" href="{html.escape(href)}">{html.escape(label)}</a>')
        else:
            links.extend(f'<a style="{style}" href="{html.escape(href + "?case=" + quote(case.name))}">'
                         f"{html.escape(label)}: {html.escape(case.name)}</a>" for case in cases)
    if not links:
        return ""
    return ("<h2>Rehearse</h2>\n<p>Perform the planned block on a simulated patient made from the case: move the "
            "probe, insert and steer the needle, inject, and see your score.</p>\n"
            f'<p class="wb-extra-pages">{" ".join(links)}</p>\n')


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
        # a kernel whose page was left (closed tab, crashed browser, refused beacon) and that stays
        # idle with no connection is shut down; an open page keeps its kernel (cull_connected off)
        f"--MappingKernelManager.cull_idle_timeout={CULL_IDLE_TIMEOUT_S}",
        f"--MappingKernelManager.cull_interval={CULL_INTERVAL_S}",
        "--MappingKernelManager.cull_connected=False",
        # the home page is workbench's Jinja page (tree.html of the template), not Voila's file browser
        "--VoilaConfiguration.classic_tree=True",
        # the plan page's export links (report.html, plan.json, ...) are served from exports/
        "--VoilaConfiguration.file_allowlist=" + json.dumps(list(EXPORT_FILE_ALLOWLIST)),
        f"--template={TEMPLATE}",
        "--theme=light",
    ]  # fmt: skip
    return command


def voila_environment(
    case_dir: Path,
    token_file: Path,
    base: dict[str, str] | None = None,
    *,
    template_root: Path = TEMPLATE_ROOT,
    library: Path | None = None,
) -> dict[str, str]:
    """Environment of the Voila process: the case (and library), the token file, our template on ``JUPYTER_PATH``."""
    from workbench.widgets.session import LIBRARY_ENV

    env = server_environment(token_file, base)
    env["WORKBENCH_CASE"] = str(case_dir)
    if library is not None:
        env[LIBRARY_ENV] = str(library)
    env["JUPYTER_PATH"] = os.pathsep.join(p for p in (str(template_root), env.get("JUPYTER_PATH", "")) if p)
    return env


def _case_summary(case_dir: Path) -> str:
    """One line on a case for the home page: levels with targets, sweeps, anatomy. Never a path or a name."""
    from workbench.case import load_case
    from workbench.errors import WorkbenchError

    try:
        case = load_case(case_dir)
    except WorkbenchError:
        return "cannot be opened here (the teacher can run `workbench info` on it)"
    from workbench.case.readiness import ENTRY_STRUCTURE

    targets = [t for t in case.targets if t.structure != ENTRY_STRUCTURE]  # entry points are stored as targets too
    parts = [f"{len(targets)} target{'s' if len(targets) != 1 else ''}" if targets else "no targets yet",
             f"{len(case.sweeps)} ultrasound sweep{'s' if len(case.sweeps) != 1 else ''}" if case.sweeps else "no ultrasound"]
    if case.title:
        parts.insert(0, case.title)
    from workbench.teaching.library import library_case_for

    entry = library_case_for(case_dir)
    if entry is not None:  # a library case: what to plan, and how hard
        about = [f"task: {entry.task}", f"difficulty {entry.difficulty:.1f} of 5 ({entry.difficulty_label})"]
        parts = about + [p for p in parts if p != case.title]
    return ", ".join(parts)


def landing_cases_html(cases: list[Path], notebooks: list[str], base_url: str = "/", *, query_case: bool = True) -> str:
    """The home page's case table: one row per case, a link per teaching step.

    ``query_case`` adds ``?case=<folder name>`` to each link (a library: the page opens that case);
    without it the links open the app's one case. Only folder names and case summaries appear.
    """
    rows = []
    for case_dir in cases:
        links = []
        for notebook in notebooks:
            href = f"{base_url}voila/render/{quote(notebook)}"
            if query_case:
                href += f"?case={quote(case_dir.name)}"
            links.append(f'<a href="{html.escape(href)}">{html.escape(TEACHING_STEPS.get(notebook, notebook))}</a>')
        rows.append(
            f"<tr><td><b>{html.escape(case_dir.name)}</b><br><small>{html.escape(_case_summary(case_dir))}</small></td>"
            f"<td>{''.join(links)}</td></tr>"
        )
    return ('<table class="wb-cases"><thead><tr><th>Case</th><th>Steps</th></tr></thead><tbody>'
            + "".join(rows) + "</tbody></table>\n")


def prepare_template(dest_root: Path, cases_html: str) -> Path:
    """Copy workbench's Voila template under ``dest_root`` and write this run's case table into it.

    Returns the Jupyter data folder to put on ``JUPYTER_PATH`` (it holds ``voila/templates/workbench``).
    """
    template_dir = dest_root / "voila" / "templates" / TEMPLATE
    shutil.copytree(TEMPLATE_ROOT / "voila" / "templates" / TEMPLATE, template_dir)
    (template_dir / "landing_cases.html").write_text(cases_html, encoding="utf-8")
    return dest_root


def teaching_results(library: Path, db: str | None, session: str | None, create: bool = True) -> tuple[str, str]:
    """The results database and session id of a library's teaching app: ``db`` (URL or SQLite
    path; default ``results.sqlite`` in ``library``), with ``create`` created or migrated now so a
    wrong URL fails before the app starts; ``session`` checked (default today's UTC date)."""
    from datetime import datetime, timezone

    from workbench.teaching.store import DEFAULT_DB_NAME, check_session, open_store

    results_db = str(db) if db else str(library / DEFAULT_DB_NAME)
    session = check_session(session or datetime.now(timezone.utc).strftime("%Y-%m-%d"))
    if create:
        open_store(results_db).close()
    return results_db, session


def teacher_page_html(base_url: str = "/") -> str:
    """The home page's link to the teacher's page (class results) of a library's teaching app."""
    href = html.escape(base_url + "voila/render/" + quote(TEACHER_NOTEBOOK.name))
    return ('<h2>For the teacher</h2>\n<p class="wb-teacher-link"><a href="' + href + '">Class results</a> '
            "the class table, score distributions, learning curves, the cases that caused most errors, CSV export.</p>\n")


def register(subparsers) -> None:
    """Add the ``teach`` sub-command to an ``argparse`` sub-parser collection."""
    p = subparsers.add_parser(
        "teach",
        help=f"serve notebooks 02-04 as a Voila teaching app (127.0.0.1, token: random or ${TOKEN_ENV}) on the demo case",
    )
    p.add_argument("--case", type=Path, default=None, help="case folder for the app (default: demo working copy)")
    p.add_argument("--library", type=Path, default=None,
                   help="folder of case bundles: the home page lists them and each page opens the case picked there")
    p.add_argument("--db", default=None,
                   help="results database of the session (with --library): SQLite file or postgresql:// URL "
                        "(default: results.sqlite in the library folder)")
    p.add_argument("--session", default=None, help="teaching session id the trainees submit under (default: today's UTC date)")
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
    library, library_case_dirs = None, []
    if args.library is not None:
        from workbench.widgets.session import library_cases

        library = args.library.expanduser().resolve()
        library_case_dirs = library_cases(library)
        results_db, session = teaching_results(library, args.db, args.session, create=not args.dry_run)
    elif args.db is not None or args.session is not None:
        raise WorkbenchError("--db and --session need --library: results are kept for the cases of a library")
    case_dir, notebook_dir = server_folders(args.case or (library_case_dirs[0] if library_case_dirs else None), args.notebooks)
    port = args.port or free_port()
    token = server_token()
    url = f"http://127.0.0.1:{port}/?token={token}"
    with tempfile.TemporaryDirectory(prefix="workbench-teach-") as tmp, private_token_file(token) as token_file:
        app_dir = Path(tmp) / "teach"
        names = prepare_app_folder(notebook_dir, app_dir)
        steps = [name for name in TEACHING_NOTEBOOKS if name in names]
        cases_html = landing_cases_html(library_case_dirs or [case_dir], steps, query_case=library is not None)
        cases_html += extra_pages_html(app_dir, cases=library_case_dirs if library is not None else None)
        if library is not None:  # the teacher's page of the session's results, last on the home page
            shutil.copy2(TEACHER_NOTEBOOK, app_dir / TEACHER_NOTEBOOK.name)
            cases_html += teacher_page_html()
        template_root = prepare_template(Path(tmp) / "jupyter-data", cases_html)
        command = voila_command(app_dir, port, args.browser)
        if args.dry_run:
            plan = {"case": str(case_dir), "notebooks": names, "url": url, "command": command}
            if library is not None:
                plan["library"] = [p.name for p in library_case_dirs]
            print(json.dumps(plan))
            return 0
        missing = sorted(set(TEACHING_NOTEBOOKS) - set(names))
        if missing:
            print(f"workbench teach: not found in {notebook_dir}: {', '.join(missing)}", file=sys.stderr)
        print(f"Case: {case_dir}\nApps: {', '.join(names)}\nOpen the teaching app at:\n\n    {url}\n\n(Ctrl-C to stop)", flush=True)
        env = voila_environment(case_dir, token_file, template_root=template_root, library=library)
        if library is not None:
            from workbench.widgets.session import RESULTS_DB_ENV, SESSION_ENV

            env.update({RESULTS_DB_ENV: str(results_db), SESSION_ENV: session})
        return run_until_interrupted(command, env)

