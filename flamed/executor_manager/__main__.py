"""`python -m flamed.executor_manager [flags]` = `flamed executor-manager [flags]`."""

import sys

from flamed.cli.flamed import main

sys.exit(main(["executor-manager", *sys.argv[1:]]))
