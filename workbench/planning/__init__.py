"""Puncture planning: trajectories, safety checks against the label map, exports and reports.

- :mod:`workbench.planning.model`: :class:`Plan`, :class:`Trajectory`, needle catalogue, derived geometry;
- :mod:`workbench.planning.mri_checks`: checks that need no label map (body mask from the MRI: target and
  entry inside the MRI, entry on the skin, path through air);
- :mod:`workbench.planning.safety`: every check of a path (the MRI ones, clearance to critical structures,
  bone, needle length) and safer entries;
- :mod:`workbench.planning.export`: ``plan.json`` (JSON Schema), 3D Slicer markups, ITK transforms, CSV;
- :mod:`workbench.planning.report`: the self-contained HTML report;
- :mod:`workbench.planning.cli`: ``workbench plan``.

Formats, thresholds and their defaults: ``docs/planning.md``. Frames: ``docs/frames.md``.
"""
