"""Procedure log and outcome analysis as in the clinical study (NRS-WV, propensity matching, tests).

Modules
-------
:mod:`~workbench.outcomes.log`
    The procedure log: columns, validation, loading, atomic saving, appending a row from a plan.
:mod:`~workbench.outcomes.nrs`
    NRS weighted value and its categories.
:mod:`~workbench.outcomes.matching`
    Propensity score (statsmodels Logit), 1:1 caliper matching, SMD balance, love plot.
:mod:`~workbench.outcomes.compare`
    t-tests, Mann-Whitney, Fisher's exact, effect sizes with CIs, power and sample size.
:mod:`~workbench.outcomes.reanalysis`
    Re-analysis of published mean ± SD summaries; the study's own numbers.
:mod:`~workbench.outcomes.analysis`, :mod:`~workbench.outcomes.report`
    The whole analysis of a log, written as CSV tables and a self-contained HTML report.
:mod:`~workbench.outcomes.example`
    A synthetic log with a known treatment effect (the shipped example log).

Needs pandas and statsmodels (imported by the modules that use them, never at ``import workbench``).
See docs/outcomes.md.
"""

from __future__ import annotations

__all__ = ["append_procedure", "load_log", "procedure_row", "save_log", "validate_log"]


def __getattr__(name: str):
    # lazy, so that ``workbench --help`` (which imports workbench.outcomes.cli) does not load pandas
    if name in __all__:
        from workbench.outcomes import log

        return getattr(log, name)
    raise AttributeError(f"module 'workbench.outcomes' has no attribute {name!r}")
