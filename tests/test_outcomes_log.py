"""The procedure log: schema, validation messages naming file/row/column, atomic save, append from a plan."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from workbench.case import Case
from workbench.errors import OutcomesError, WorkbenchError
from workbench.outcomes.example import EXAMPLE_SPEC, example_log_path, simulate_cohort
from workbench.outcomes.log import (
    COLUMN_NAMES,
    LOG_COLUMNS,
    append_procedure,
    load_log,
    procedure_row,
    save_log,
)
from workbench.planning.model import NeedleSpec, Plan, Trajectory


def _csv(tmp_path, text: str):
    path = tmp_path / "log.csv"
    path.write_text(text)
    return path


@pytest.fixture()
def good_csv_text() -> str:
    return example_log_path().read_text().splitlines()[0] + "\n" + "\n".join(example_log_path().read_text().splitlines()[1:4]) + "\n"


def test_shipped_example_log_is_the_reproducible_simulation():
    shipped = load_log(example_log_path())
    regenerated = simulate_cohort(EXAMPLE_SPEC)
    assert len(shipped) == EXAMPLE_SPEC.n == 300
    assert list(shipped.columns) == list(COLUMN_NAMES)
    pd.testing.assert_frame_equal(shipped, regenerated, check_exact=False, rtol=1e-9)
    assert set(shipped["group"]) == {"fusion", "us"}
    assert shipped["nrs_baseline"].between(0, 10).all() and shipped["adverse_event"].isin([0, 1]).all()


def test_typed_columns_and_empty_outcomes(tmp_path, good_csv_text):
    lines = good_csv_text.splitlines()
    cells = lines[1].split(",")
    cells[COLUMN_NAMES.index("nrs_7d")] = ""
    cells[COLUMN_NAMES.index("adverse_event")] = ""
    log = load_log(_csv(tmp_path, "\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n"))
    assert log["age_years"].dtype == np.float64 and log["adverse_event"].dtype == "Int64"
    assert math.isnan(log.loc[0, "nrs_7d"]) and log["adverse_event"].isna().sum() == 1
    assert log.loc[0, "case_id"] is None


@pytest.mark.parametrize(
    "column, value, expected",
    [
        ("nrs_1h", "11", "row 2 (line 3), column 'nrs_1h': 11 is outside 0-10 NRS points"),
        ("age_years", "abc", "row 2 (line 3), column 'age_years': 'abc' is not a number (years)"),
        ("bmi_kg_m2", "5", "row 2 (line 3), column 'bmi_kg_m2': 5 is outside 12-70 kg/m^2"),
        ("disease_type", "sciatica", "row 2 (line 3), column 'disease_type': 'sciatica' is not one of"),
        ("sex", "", "row 2 (line 3), column 'sex': empty, but the column is required"),
        ("adverse_event", "2", "row 2 (line 3), column 'adverse_event': '2' is not 0 or 1"),
        ("patient_id", "Doe^John", "row 2 (line 3), column 'patient_id': 'Doe^John' is not a pseudonymous id"),
        ("procedure_utc", "02.05.2024", "row 2 (line 3), column 'procedure_utc': '02.05.2024' is not an ISO 8601"),
        ("procedure_id", "SIM0001", "column 'procedure_id': 'SIM0001' is repeated in row 1 (line 2), row 2 (line 3)"),
    ],
)
def test_bad_cells_name_file_row_and_column(tmp_path, good_csv_text, column, value, expected):
    lines = good_csv_text.splitlines()
    cells = lines[2].split(",")
    cells[COLUMN_NAMES.index(column)] = value
    path = _csv(tmp_path, "\n".join([lines[0], lines[1], ",".join(cells), lines[3]]) + "\n")
    with pytest.raises(OutcomesError) as info:
        load_log(path)
    assert isinstance(info.value, WorkbenchError)
    assert str(info.value).startswith(f"{path}: ")
    assert expected in info.value.problem


def test_unknown_and_missing_columns_are_refused(tmp_path, good_csv_text):
    lines = good_csv_text.splitlines()
    path = _csv(tmp_path, lines[0] + ",patient_name\n" + lines[1] + ",Jane Doe\n")
    with pytest.raises(OutcomesError, match=r"unknown column\(s\) 'patient_name'.*never names"):
        load_log(path)
    header = lines[0].split(",")
    keep = [i for i, c in enumerate(header) if c != "group"]
    text = "\n".join(",".join(line.split(",")[i] for i in keep) for line in lines) + "\n"
    with pytest.raises(OutcomesError, match=r"missing required column\(s\) 'group'"):
        load_log(_csv(tmp_path, text))


def test_many_problems_are_summarised(tmp_path, good_csv_text):
    lines = good_csv_text.splitlines()
    bad = []
    for line in lines[1:]:
        cells = line.split(",")
        for name in ("nrs_baseline", "nrs_1h", "nrs_7d"):
            cells[COLUMN_NAMES.index(name)] = "-1"
        bad.append(",".join(cells))
    with pytest.raises(OutcomesError, match=r"\(and 4 more\)$"):
        load_log(_csv(tmp_path, "\n".join([lines[0], *bad]) + "\n"))


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(OutcomesError, match="no such procedure log"):
        load_log(tmp_path / "nope.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(OutcomesError, match="not a readable CSV table"):
        load_log(empty)


def test_save_is_atomic_and_round_trips(tmp_path):
    log = simulate_cohort(EXAMPLE_SPEC)[:20]
    path = save_log(log, tmp_path / "sub" / "log.csv")
    pd.testing.assert_frame_equal(load_log(path), log.reset_index(drop=True))
    before = path.read_bytes()
    broken = log.copy().astype(object)
    broken.loc[3, "nrs_7d"] = 12.0
    with pytest.raises(OutcomesError, match="row 4, column 'nrs_7d': 12 is outside 0-10"):
        save_log(broken, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["log.csv"]


def test_parquet_round_trips(tmp_path):
    log = simulate_cohort(EXAMPLE_SPEC)[:10]
    path = save_log(log, tmp_path / "log.parquet")
    assert path.read_bytes()[:4] == b"PAR1"
    pd.testing.assert_frame_equal(load_log(path), log.reset_index(drop=True))


def test_a_corrupt_parquet_log_names_the_file(tmp_path):
    path = tmp_path / "log.parquet"
    path.write_bytes(b"PAR1 this is not a parquet file")
    with pytest.raises(OutcomesError, match="not a readable Parquet file") as excinfo:
        load_log(path)
    assert "log.parquet" in str(excinfo.value)


def _plan() -> Plan:
    trajectory = Trajectory(
        name="L4 right", structure="L4 right exiting nerve root", target_lps_mm=(-20.0, 40.0, 10.0),
        entry_lps_mm=(-35.0, 95.0, 12.0), needle=NeedleSpec(90.0, "22G"), injectate_ml=5.0,
    )
    return Plan(plan_id="CASE7-expert", trajectories=(trajectory,))


def test_append_a_row_from_a_plan_grows_the_log(tmp_path):
    path = tmp_path / "log.csv"
    covariates = dict(sex="F", age_years=61, disease_duration_weeks=10, bmi_kg_m2=27.5,
                      disease_type="radiculopathy", nrs_baseline=7)
    row = procedure_row(_plan(), Case(case_id="CASE7"), group="fusion", procedure_utc="2024-06-01T10:00:00Z", **covariates)
    assert row["procedure_id"] == "CASE7-expert-20240601100000"
    assert (row["patient_id"], row["case_id"], row["plan_id"]) == ("CASE7", "CASE7", "CASE7-expert")
    log = append_procedure(path, row)
    assert len(log) == 1 and math.isnan(log.loc[0, "nrs_7d"])
    second = procedure_row(_plan(), Case(case_id="CASE7"), group="fusion", procedure_utc="2024-06-08T10:00:00Z",
                           nrs_1h=2, nrs_7d=3, operation_time_s=900, adverse_event=0, **covariates)
    log = append_procedure(path, second)
    assert list(load_log(path)["nrs_7d"].fillna(-1)) == [-1, 3]
    before = path.read_bytes()
    with pytest.raises(OutcomesError, match=r"row 3, column 'procedure_id'|is repeated"):
        append_procedure(path, second)
    bad = dict(second, procedure_id="CASE7-other", nrs_1h=15)
    with pytest.raises(OutcomesError, match="row 3, column 'nrs_1h': 15 is outside 0-10"):
        append_procedure(path, bad)
    assert path.read_bytes() == before
    with pytest.raises(OutcomesError, match="unknown log column"):
        procedure_row(_plan(), group="fusion", patient_name="Jane")


def test_schema_lists_every_column_once_with_units_and_ranges():
    names = [c.name for c in LOG_COLUMNS]
    assert len(names) == len(set(names)) == 18
    numbers = [c for c in LOG_COLUMNS if c.kind == "number"]
    assert all(c.unit and c.minimum is not None and c.maximum > c.minimum for c in numbers)
    assert {c.name: (c.minimum, c.maximum) for c in numbers}["nrs_7d"] == (0, 10)


def test_docs_list_every_column_with_its_unit_and_range():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "outcomes.md").read_text()
    rows = {line.split("|")[1].strip().strip("`"): line for line in doc.splitlines() if line.startswith("| `")}
    for column in LOG_COLUMNS:
        assert column.name in rows, f"docs/outcomes.md does not list {column.name}"
        if column.kind == "number":
            assert f"| {column.minimum:g}–{column.maximum:g} |" in rows[column.name], column.name
