"""`python -m vfiosim` is the `vfiosim` command."""

import sys

from vfiosim.cli import main

sys.exit(main())
