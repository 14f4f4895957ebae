"""The Voila teaching app's home page, case library and page behaviour, without a browser (issue 17).

The browser side (the page as a trainee sees it) is in tests/browser/test_voila.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.teach import EXPORT_FILE_ALLOWLIST, TEACHING_NOTEBOOKS, landing_cases_html, prepare_template, voila_command
from workbench.widgets.plan import export_href
from workbench.widgets.session import LIBRARY_ENV, WidgetError, library_cases, resolve_case_folder, running_in_voila


def _library(tmp_path: Path, names=("PVB-001", "PVB-002")) -> Path:
    library = tmp_path / "library"
    for name in names:
        (library / name).mkdir(parents=True)
        (library / name / "case.json").write_text("{}")
    (library / "not-a-case").mkdir()
    (library / ".hidden").mkdir()
    (library / ".hidden" / "case.json").write_text("{}")
    return library


def test_library_lists_only_case_bundles_by_name(tmp_path):
    library = _library(tmp_path)
    assert [p.name for p in library_cases(library)] == ["PVB-001", "PVB-002"]
    with pytest.raises(WidgetError, match="no case bundle"):
        library_cases(tmp_path / "library" / "not-a-case")


def test_a_page_opens_the_library_case_its_address_names(tmp_path, monkeypatch):
    library = _library(tmp_path)
    monkeypatch.setenv(LIBRARY_ENV, str(library))
    monkeypatch.setenv("WORKBENCH_CASE", str(library / "PVB-001"))
    monkeypatch.setenv("QUERY_STRING", "case=PVB-002")
    assert resolve_case_folder() == library / "PVB-002"
    monkeypatch.setenv("QUERY_STRING", "")  # the home page's default: the app's own case
    assert resolve_case_folder() == library / "PVB-001"


@pytest.mark.parametrize("query", ["case=../PVB-001", "case=%2Fetc", "case=PVB-001/..", "case=.hidden", "case=nope"])
def test_a_case_id_in_an_address_is_a_library_folder_name_never_a_path(tmp_path, monkeypatch, query):
    library = _library(tmp_path)
    monkeypatch.setenv(LIBRARY_ENV, str(library))
    monkeypatch.setenv("QUERY_STRING", query)
    with pytest.raises(WidgetError, match="not a case id|no case"):
        resolve_case_folder()


def test_home_page_table_names_cases_and_steps_but_no_path(tmp_path):
    library = _library(tmp_path)
    cases = library_cases(library)
    page = landing_cases_html(cases, list(TEACHING_NOTEBOOKS))
    hrefs = re.findall(r'href="([^"]+)"', page)
    assert len(hrefs) == 2 * 3
    assert "/voila/render/04_plan_export.ipynb?case=PVB-002" in hrefs
    assert str(tmp_path) not in page and "case.json" not in page
    assert "1 · Landmarks and targets" in page and "3 · Plan the needle path" in page
    single = landing_cases_html(cases[:1], list(TEACHING_NOTEBOOKS), query_case=False)
    assert "?case=" not in single


def test_the_template_of_a_run_holds_the_case_table(tmp_path):
    root = prepare_template(tmp_path / "data", "<table>cases</table>")
    template = root / "voila" / "templates" / "workbench"
    assert (template / "landing_cases.html").read_text() == "<table>cases</table>"
    assert 'include "landing_cases.html"' in (template / "tree.html").read_text()
    assert "_xsrf" in (template / "index.html.j2").read_text()  # the leave-page beacon's token


def test_voila_serves_plan_exports_and_nothing_else_of_the_app_folder():
    command = voila_command(Path("/tmp/app"), 8866)
    allow = [arg for arg in command if arg.startswith("--VoilaConfiguration.file_allowlist=")]
    patterns = json.loads(allow[0].split("=", 1)[1])
    assert tuple(patterns) == EXPORT_FILE_ALLOWLIST

    def served(path):
        return any(re.fullmatch(p, path) for p in patterns)

    assert served("exports/PVB-expert-L4/report.html") and served("exports/p/plan.json")
    assert not served("02_landmarks_targets.ipynb") and not served("secrets.txt")


def test_export_links_go_through_voila_files_only_in_a_voila_kernel(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    report = tmp_path / "exports" / "plan-1" / "report.html"
    monkeypatch.delenv("SERVER_SOFTWARE", raising=False)
    assert not running_in_voila()
    assert export_href(report) == "exports/plan-1/report.html"
    monkeypatch.setenv("SERVER_SOFTWARE", "voila/0.5.13")
    assert running_in_voila()
    assert export_href(report) == "../files/exports/plan-1/report.html"


def test_teach_dry_run_with_a_library_lists_its_cases(tmp_path):
    library = _library(tmp_path)
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    for name in TEACHING_NOTEBOOKS:
        (notebooks / name).write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    out = subprocess.run(
        [sys.executable, "-m", "workbench", "teach", "--library", str(library), "--notebooks", str(notebooks), "--dry-run"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    plan = json.loads(out.stdout)
    assert plan["library"] == ["PVB-001", "PVB-002"] and plan["case"].endswith("PVB-001")
