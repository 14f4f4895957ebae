"""Fuzzing campaign over every input format workbench reads (``workbench bench fuzz``).

:mod:`workbench.fuzzing.mutate` mutates files with ``numpy.random``; :mod:`workbench.fuzzing.formats`
lists the formats, their base inputs, the reader each input goes through and the validation of
what is accepted; :mod:`workbench.fuzzing.campaign` runs inputs in worker subprocesses, counting
clean errors, accepted inputs, garbage accepted, uncaught exceptions, crashes and hangs.
Figures and method: docs/robustness.md.
"""

from workbench.fuzzing.campaign import inputs_per_format, run_campaign, write_input

__all__ = ["inputs_per_format", "run_campaign", "write_input"]
