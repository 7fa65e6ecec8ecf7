"""Text-to-3D with Score Jacobian Chaining and D-SDS: see README.md and `run_sjc.py --help`."""

import sys

from sjc_dsds.cli import main

if __name__ == "__main__":
    sys.exit(main())
