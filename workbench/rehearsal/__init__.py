"""Rehearsal: a simulated paravertebral nerve block on a case (probe, needle, injectate, score).

Layer: above :mod:`workbench.teaching` and :mod:`workbench.outcomes` (an attempt can be scored
and appended to the procedure log), below :mod:`workbench.widgets`. No UI toolkit is imported
here; the notebook and Voila page drive these models. Frames: docs/frames.md.
"""
