"""Fixtures of the real-browser tests: Chromium through Playwright, JupyterLab, the Voila app.

Chromium is Debian's ``/usr/bin/chromium`` (``.ci/run`` installs it). Without it (or without
the ``playwright`` package) the tests skip on a developer's machine and FAIL in CI (``CI`` set)
or wherever ``WORKBENCH_REQUIRE_BROWSER=1``: the browser suite must never silently not run there.

Screenshots, the request logs, the server logs and ``round_trip.json`` go to
``$WORKBENCH_BROWSER_RESULTS`` (default ``out/browser-tests``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ._harness import CHROMIUM, REPO, RequestLog, browser_required, running_lab, running_teach


def _missing(reason: str):
    if browser_required():
        pytest.fail(f"{reason} (required: CI or WORKBENCH_REQUIRE_BROWSER=1 is set)", pytrace=False)
    pytest.skip(f"{reason}; the browser tests run in CI (.ci/run installs it)")


@pytest.fixture(scope="session")
def results_dir() -> Path:
    """Where screenshots and measured numbers are written (kept after the run)."""
    folder = Path(os.environ.get("WORKBENCH_BROWSER_RESULTS") or REPO / "out" / "browser-tests")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def browser():
    """A headless Debian Chromium driven by Playwright (no browser download: ``executable_path``)."""
    if not CHROMIUM.is_file():
        _missing(f"{CHROMIUM} not found")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright Python package is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--disable-dev-shm-usage"],
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page_and_log(browser, request, results_dir):
    """A fresh page (1400x1000 CSS px, device pixel ratio 1) and the log of every URL it requested."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
    log = RequestLog()
    log.attach(context)
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        yield page, log
    finally:
        log.save(results_dir / f"requests-{request.node.name}.json")
        context.close()


def _copy_case(tmp_root: Path) -> Path:
    """A private copy of the built-in demo case (the notebooks write into it; the cache stays untouched)."""
    from workbench.phantom.democase import default_demo_case

    source = default_demo_case()
    destination = tmp_root / "case"
    shutil.copytree(source, destination)
    return destination


def _notebooks_source() -> Path:
    # WORKBENCH_BROWSER_NOTEBOOKS lets a developer point the harness at scratch notebooks
    return Path(os.environ.get("WORKBENCH_BROWSER_NOTEBOOKS") or REPO / "notebooks")


@pytest.fixture(scope="session")
def lab_case(browser, tmp_path_factory) -> Path:
    """The case folder the JupyterLab notebooks open (``WORKBENCH_CASE``)."""
    return _copy_case(tmp_path_factory.mktemp("lab-case"))


@pytest.fixture(scope="session")
def lab(browser, lab_case, tmp_path_factory, results_dir):
    """JupyterLab on 127.0.0.1 with a random token, root = a temporary copy of ``notebooks/``."""
    root = tmp_path_factory.mktemp("lab-root")
    source = _notebooks_source()
    for notebook in sorted(source.glob("*.ipynb")):
        shutil.copy2(notebook, root / notebook.name)
    with running_lab(root, {"WORKBENCH_CASE": str(lab_case)}, results_dir / "lab-state") as server:
        yield server


@pytest.fixture(scope="session")
def teach_case(browser, tmp_path_factory) -> Path:
    """The case folder the Voila teaching app opens (``workbench teach --case``)."""
    return _copy_case(tmp_path_factory.mktemp("teach-case"))


@pytest.fixture(scope="session")
def teach(browser, teach_case, results_dir):
    """The Voila teaching app (``python -m workbench teach --case ...``) on 127.0.0.1."""
    env = {}
    if os.environ.get("WORKBENCH_BROWSER_NOTEBOOKS"):
        env["WORKBENCH_NOTEBOOKS"] = os.environ["WORKBENCH_BROWSER_NOTEBOOKS"]
    with running_teach(teach_case, env, results_dir / "teach-state") as server:
        yield server
