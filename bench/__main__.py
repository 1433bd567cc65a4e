"""python -m bench <scenario> [flags] (from the repository root)"""

import sys

from bench.command import main

sys.exit(main())
