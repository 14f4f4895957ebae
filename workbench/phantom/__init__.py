"""Synthetic lumbar spine phantom, MRI synthesis and tracked-ultrasound simulation.

No public lumbar MRI comes with matching tracked ultrasound, so workbench generates its own
cases with known ground truth: :mod:`~workbench.phantom.labels` (tissue classes and their MR and
acoustic properties), :mod:`~workbench.phantom.anatomy` (the parametric spine as a label map in
LPS mm), :mod:`~workbench.phantom.mri` (T2 SPACE-like MRI written as DICOM),
:mod:`~workbench.phantom.ultrasound` (B-mode frames from the label map) and
:mod:`~workbench.phantom.sweep` (tracked freehand sweeps written as PLUS files).
"""
