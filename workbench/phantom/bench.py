"""``workbench bench demo-case``: how long generating the demo case takes, stage by stage."""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

from workbench.phantom.democase import DEFAULT_DEMO_CASE, DemoCaseSpec, generate_demo_case

__all__ = ["run_demo_case_benchmark"]


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def run_demo_case_benchmark(spec: DemoCaseSpec = DEFAULT_DEMO_CASE) -> dict:
    """Generate the demo case into a temporary folder and report the time of each stage.

    Peak memory is the process's peak resident set size (``getrusage`` ``ru_maxrss``), which
    includes whatever the process held before the run.
    """
    stages: list[dict] = []
    started = time.perf_counter()

    def progress(message: str) -> None:
        now = time.perf_counter() - started
        if stages:
            stages[-1]["seconds"] = round(now - stages[-1].pop("_start"), 3)
        stages.append({"stage": message, "_start": now})

    with tempfile.TemporaryDirectory(prefix="workbench-bench-") as tmp:
        folder = generate_demo_case(Path(tmp) / "case", spec, progress=progress)
        total_s = time.perf_counter() - started
        stages[-1].pop("_start", None)  # the final "written to" message closes the last stage
        stages = [s for s in stages if "seconds" in s]
        size_bytes = _folder_bytes(folder)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "benchmark": "demo-case",
        "spec": {"seed": spec.seed, "bmi": spec.bmi, "protocol": spec.protocol, "sweeps": list(spec.sweeps)},
        "seconds": round(total_s, 3),
        "target_seconds": 60,
        "stages": stages,
        "case_bytes": size_bytes,
        "peak_rss_bytes": peak_kib * 1024 if sys.platform != "darwin" else peak_kib,
        "memory_method": "getrusage ru_maxrss of the benchmark process",
    }
