"""`python -m streamimb` is the `streamimb` command."""

import sys

from streamimb.cli import main

sys.exit(main())
