"""`python -m flamed` is the `flamed` command."""

import sys

from flamed.cli.flamed import main

sys.exit(main())
