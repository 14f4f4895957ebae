"""A small fuzzing campaign over every format, in a worker subprocess (a crash or hang is counted, not fatal).

The same code as ``workbench bench fuzz --inputs N``, at a budget that fits the test suite: each
format gets a few byte-level and structural mutations of the real files in ``../shared/data`` and
of small files workbench writes. Expectation: every input ends in a clean WorkbenchError or in an
accepted result the validation layer passes; no uncaught exception, crash or hang.
"""

from __future__ import annotations

import json

from workbench.cli import main
from workbench.fuzzing import inputs_per_format, run_campaign
from workbench.fuzzing.formats import FORMATS


def test_every_format_refuses_or_accepts_cleanly(shared_data):
    report = run_campaign(len(FORMATS) * 6, seed=2026, shared=shared_data, timeout_s=30)
    assert set(report["formats"]) == set(FORMATS)
    for name, entry in report["formats"].items():
        assert entry["inputs"] >= 1, name
        bad = {key: entry[key] for key in ("uncaught", "crashes", "hangs", "garbage_accepted")}
        assert bad == {"uncaught": 0, "crashes": 0, "hangs": 0, "garbage_accepted": 0}, (name, entry["examples"])
        assert entry["clean_errors"] + entry["accepted"] == entry["inputs"], name
    assert report["totals"]["clean_errors"] > 0  # the mutations do reach the checks


def test_inputs_are_split_by_weight_and_reproducible(tmp_path, shared_data):
    plan = inputs_per_format(20_000)
    assert sum(plan.values()) == 20_000 and plan["sequence"] == 6000 and plan["dicom"] == 1000
    from workbench.fuzzing import write_input

    first = write_input("case", 5, 17, tmp_path / "a", shared=shared_data)
    second = write_input("case", 5, 17, tmp_path / "b", shared=shared_data)
    assert first.read_bytes() == second.read_bytes()


def test_bench_fuzz_cli_reports_json(capsys, shared_data):
    code = main(["bench", "fuzz", "--inputs", "3", "--formats", "plan", "--json", "--shared-data", str(shared_data)])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["benchmark"] == "fuzz" and report["totals"]["inputs"] == 3
    assert set(report["formats"]["plan"]) >= {"inputs", "clean_errors", "uncaught", "crashes", "hangs", "accepted"}
