"""Segment a patient's lumbar MRI into the anatomy the workbench needs (issue 15).

- :mod:`workbench.segmentation.segment`: :func:`~workbench.segmentation.segment.segment_mri`, the
  landmark-driven fit of the phantom's parametric spine plus an intensity body mask.
- :mod:`workbench.segmentation.fit`: per-level ``TemplateToMri`` transforms from named landmarks.
- :mod:`workbench.segmentation.store`: ``workbench segment``: segment a case and attach the label map.
- :mod:`workbench.segmentation.editor`: paint/erase correction with undo/redo and autosave.
- :mod:`workbench.segmentation.metrics`, :mod:`workbench.segmentation.bench`: ``workbench bench segment``.

Layer: above registration, beside planning (pyproject import-linter contract). Method, figures
and limits: docs/segmentation.md.
"""
