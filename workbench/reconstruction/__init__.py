"""Tracked-ultrasound volume reconstruction that reproduces PLUS (see docs/reconstruction.md).

Public API (imported lazily so that ``import workbench.reconstruction`` does not load numba)::

    reconstruct_volume(sequence, image_to_probe, config, ...) -> ReconstructionResult
    reconstruct_from_files(sequence_path, device_set_path, ...) -> ReconstructionResult
    compare_volumes(image_a, image_b) / compare_files(path_a, path_b) -> VolumeComparison
    OutputGrid, grid_covering(...)
"""

from __future__ import annotations

import importlib

__all__ = [
    "OutputGrid",
    "ReconstructionResult",
    "VolumeComparison",
    "compare_files",
    "compare_volumes",
    "grid_covering",
    "reconstruct_from_files",
    "reconstruct_volume",
]

_HOMES = {
    "OutputGrid": "geometry",
    "grid_covering": "geometry",
    "ReconstructionResult": "reconstruct",
    "reconstruct_from_files": "reconstruct",
    "reconstruct_volume": "reconstruct",
    "VolumeComparison": "compare",
    "compare_files": "compare",
    "compare_volumes": "compare",
}


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
