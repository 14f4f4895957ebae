"""``python -m workbench`` runs the command line interface."""

import sys

from workbench.cli import main

sys.exit(main())
