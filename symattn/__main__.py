"""`python -m symattn ...`: the `symattn` command."""

import sys

from symattn.cli import main

sys.exit(main())
