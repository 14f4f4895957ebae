"""workbench: planning workbench for US-MRI fusion-guided lumbar paravertebral nerve blocks.

Importing this package is cheap: it pulls in neither pyvista nor ipywidgets nor
SimpleITK. Sub-modules import what they need.

Coordinate frames and the transform naming rule are in ``docs/frames.md``.
"""

__version__ = "0.1.0"

from workbench.errors import WorkbenchError

__all__ = ["WorkbenchError", "__version__"]
