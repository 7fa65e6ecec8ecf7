"""`python -m sjc_dsds` is `run_sjc.py`."""

import sys

from sjc_dsds.cli import main

sys.exit(main())
