"""python -m pgrealtime.bench <scenario> [flags]"""

import sys

from pgrealtime.bench.command import main

sys.exit(main())
