"""Packaging promises: cheap import, same dependencies in pyproject and environment.yml, entry points."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import workbench

REPO = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _environment_deps() -> dict[str, str]:
    deps = {}
    in_deps = False
    for line in (REPO / "environment.yml").read_text().splitlines():
        if line.startswith("dependencies:"):
            in_deps = True
            continue
        if in_deps and line.strip().startswith("- "):
            spec = line.strip()[2:].strip()
            deps[_name(spec)] = spec[len(_name(spec)) :].strip()
    return deps


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["test"]
    env = _environment_deps()
    for requirement in wanted:
        name = _name(requirement)
        assert name in env, f"{name} is in pyproject.toml but not in environment.yml"
        # pip extras ("psycopg[binary]": its prebuilt wheel) have no conda spelling: compare the bounds
        bounds = re.sub(r"^\[[^\]]*\]", "", requirement[len(name) :].strip())
        assert env[name] == bounds, f"version bounds of {name} differ"
    assert project["requires-python"] == ">=3.11" and env["python"] == ">=3.11"
    extra = set(env) - {_name(r) for r in wanted} - {"python", "pip"}
    assert not extra, f"environment.yml has dependencies pyproject.toml lacks: {sorted(extra)}"


def test_import_workbench_is_cheap():
    code = (
        "import sys, workbench, workbench.frames, workbench.cli; "
        "heavy = [m for m in ('pyvista', 'vtk', 'ipywidgets', 'SimpleITK', 'pydicom', 'itkwidgets') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"import workbench pulled in {out}"


def test_python_m_workbench_and_console_script_report_version():
    out = subprocess.run([sys.executable, "-m", "workbench", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"workbench {workbench.__version__}"
    script = Path(sys.executable).with_name("workbench")
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"workbench {workbench.__version__}"


def test_version_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["version"] == workbench.__version__


def test_readme_starts_with_the_two_commands():
    first_section = (REPO / "README.md").read_text().split("\n## ", 2)[:2]
    text = "\n".join(first_section)
    assert "make demo" in text and "make test" in text
    assert "make test" in (REPO / ".ci" / "run").read_text()
