"""Registration tuning at scale: Optuna studies whose trials are scored on simulated cases by Dask workers.

See :mod:`workbench.tuning.study` (ask/tell driver, storage, cluster), :mod:`workbench.tuning.space`
(the search space from the registration parameter dataclasses), :mod:`workbench.tuning.cases` (the
fixed case set of a study and the per-task evaluation) and docs/tuning.md.
"""

from workbench.tuning.cases import CaseSet
from workbench.tuning.space import TuningError, method_parameters, select_parameters
from workbench.tuning.study import DEFAULT_STORAGE, StudyReport, run_study

__all__ = ["CaseSet", "DEFAULT_STORAGE", "StudyReport", "TuningError", "method_parameters", "run_study", "select_parameters"]
