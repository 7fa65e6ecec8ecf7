"""`python -m sjc_dsds.sweep SPEC.yaml ...`."""

import sys

from sjc_dsds.sweep.cli import main

if __name__ == "__main__":
    sys.exit(main())
