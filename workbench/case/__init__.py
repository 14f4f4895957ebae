"""Case bundles: a folder with ``case.json`` and the volumes and sweeps it references.

Layout, fields and rules: ``docs/case-bundle.md``; frames: ``docs/frames.md``.
"""

from workbench.case.storage import *  # noqa: F403
from workbench.case.storage import __all__  # noqa: F401
