"""Widgets for the workbench notebooks, and the UI-free models they drive.

Models (no ipywidgets, no pyvista; tests drive them without a kernel):
:class:`CaseSession`, :class:`SliceModel`, :class:`PointListModel`, :class:`FusionModel`,
:class:`UsFramePickModel`, :class:`LandmarkFitModel`.

Controllers (thin ipywidgets/ipympl/pyvista wrappers, imported on first use):
:class:`CaseLoader`, :class:`NewCaseForm`, :class:`LabelImportForm`, :class:`SliceView`, :class:`UsLandmarkPicker`,
:class:`StylusLandmarkPanel`, :class:`LandmarkEditor`, :class:`SweepScrubber`,
:class:`RegistrationPanel`, :class:`FusedView`, :class:`PlanPanel`, :class:`Scene3D`,
:class:`TuningPanel`. Notebooks: docs/notebooks.md.

Everything here is imported lazily, so ``import workbench.widgets`` stays cheap.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "CaseSession": "workbench.widgets.session",
    "WidgetError": "workbench.widgets.session",
    "demo_working_copy": "workbench.widgets.session",
    "landmark_registration": "workbench.widgets.session",
    "case_registration": "workbench.widgets.session",
    "SliceModel": "workbench.widgets.slices",
    "PointListModel": "workbench.widgets.points",
    "Point": "workbench.widgets.points",
    "FusionModel": "workbench.widgets.fusion",
    "SliceView": "workbench.widgets.viewer",
    "LandmarkEditor": "workbench.widgets.editor",
    "CaseLoader": "workbench.widgets.loader",
    "NewCaseForm": "workbench.widgets.loader",
    "LabelImportForm": "workbench.widgets.loader",
    "UsFramePickModel": "workbench.widgets.us_landmarks",
    "LandmarkFitModel": "workbench.widgets.us_landmarks",
    "UsLandmarkPicker": "workbench.widgets.us_landmarks",
    "StylusLandmarkPanel": "workbench.widgets.us_landmarks",
    "SweepScrubber": "workbench.widgets.sweep",
    "FusedView": "workbench.widgets.sweep",
    "RegistrationPanel": "workbench.widgets.registration",
    "PlanPanel": "workbench.widgets.plan",
    "Scene3D": "workbench.widgets.scene",
    "TuningPanel": "workbench.widgets.tuning",
    "itk_viewer": "workbench.widgets.optional",
    "niivue_viewer": "workbench.widgets.optional",
}

__all__ = sorted(_EXPORTS)  # noqa: PLE0605 - the lazily exported names, computed once


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'workbench.widgets' has no attribute {name!r}")


def __dir__():
    return __all__
