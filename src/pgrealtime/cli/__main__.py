"""`python -m pgrealtime.cli` runs the command line (tests and the bench start servers so)."""

import sys

from pgrealtime.cli.main import main

sys.exit(main())
