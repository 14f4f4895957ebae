"""Shared fixtures.

Real data lives in ``../shared/data`` beside the checkout (see DEVELOPERS.md); tests read it in
place and never copy it into the project. ``WORKBENCH_SHARED_DATA`` overrides the location.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path:
    env = os.environ.get("WORKBENCH_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


SHARED_DATA = _shared_data_dir()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ``../shared/data``. Missing data is a failure, not a skip: CI has it."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared test data not found at {SHARED_DATA} (set WORKBENCH_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture()
def demo_cache(tmp_path_factory, monkeypatch):
    """A demo-case cache shared by the tests of the headless demo (each small case is generated once)."""
    cache = tmp_path_factory.getbasetemp() / "demo-cache"
    monkeypatch.setenv("WORKBENCH_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def small_demo_case(tmp_path_factory) -> Path:
    """A small demo case (seed 3, one transverse sweep, no posture change), generated once per session.

    Read-only for the tests that share it (the rehearsal tests); copy it before changing it.
    """
    from workbench.phantom.democase import DemoCaseSpec, generate_demo_case

    spec = DemoCaseSpec(seed=3, sweep_speed_mm_s=90.0, sweeps=("transverse",), posture_change=False)
    return generate_demo_case(tmp_path_factory.mktemp("small-demo-case") / "case", spec)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """SQLAlchemy URL of a real PostgreSQL server (``postgresql+psycopg://...``).

    ``.ci/run`` starts one on 127.0.0.1 with ``tools/postgres.sh`` and exports it as
    ``WORKBENCH_TEST_POSTGRES_URL``; locally run ``tools/postgres.sh start DIR`` and export the URL
    it prints. Without one the test skips, except under ``WORKBENCH_REQUIRE_POSTGRES=1`` (CI),
    where a missing server is a failure, never a silent skip.
    """
    url = os.environ.get("WORKBENCH_TEST_POSTGRES_URL", "").strip()
    if url:
        return url
    message = "no PostgreSQL server: set WORKBENCH_TEST_POSTGRES_URL (tools/postgres.sh start DIR prints it)"
    if os.environ.get("WORKBENCH_REQUIRE_POSTGRES") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def postgres_schema_url(postgres_url):
    """:func:`postgres_url` with a fresh schema of its own as the search path, dropped afterwards
    (the server may be shared between tests and runs)."""
    import uuid

    import sqlalchemy as sa

    schema = f"wb_test_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(postgres_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in postgres_url else "?"
    try:
        yield f"{postgres_url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()


@pytest.fixture(scope="session")
def teaching_library(tmp_path_factory) -> Path:
    """A 3-case teaching library (seed 1: a plain case, a sacralised L5, a lumbarised S1; a fast
    sweep, fewer frames), built once per test session for tests/test_teaching.py and the teaching
    browser test. Read it only: a test that changes cases works on a copy."""
    from workbench.teaching.library import build_library

    folder = tmp_path_factory.mktemp("teaching-library") / "library"
    build_library(folder, 3, seed=1, sweep_speed_mm_s=90.0)
    return folder
