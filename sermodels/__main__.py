"""``python -m sermodels``: the command line (see :mod:`sermodels.cli`)."""
import sys

from .cli import main

sys.exit(main())
