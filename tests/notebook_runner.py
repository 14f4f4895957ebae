"""Run one notebook headless (nbclient, kernel ``python3``) on a case: the helper the notebook tests share."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat


def execute_notebook(source: Path, case: Path, work: Path, timeout_s: int = 300) -> tuple[list[dict], Path]:
    """Copy ``source`` into ``work`` and run it with ``WORKBENCH_CASE=case`` and the Agg backend.

    Every cell runs (errors are collected, not raised) so the failure names the cell; any error
    output fails the calling test.

    Returns
    -------
    outputs : list of dict
        ``{"cell": index, "output": nbformat output}`` for every output, in order.
    work : Path
        The folder the notebook ran in (its exports land there).
    """
    from nbclient import NotebookClient

    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, work / source.name)
    notebook = nbformat.read(work / source.name, as_version=4)
    old = {k: os.environ.get(k) for k in ("WORKBENCH_CASE", "MPLBACKEND")}
    os.environ["WORKBENCH_CASE"] = str(case)
    os.environ["MPLBACKEND"] = "Agg"
    try:
        NotebookClient(notebook, timeout=timeout_s, kernel_name="python3", allow_errors=True,
                       resources={"metadata": {"path": str(work)}}).execute()
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    outputs = [{"cell": index, "output": output} for index, cell in enumerate(notebook.cells) for output in cell.get("outputs", [])]
    for item in outputs:
        output = item["output"]
        assert output.get("output_type") != "error", (
            f"{source.name} cell {item['cell']} on {case.name}: {output.get('ename')}: {output.get('evalue')}")
    return outputs, work
