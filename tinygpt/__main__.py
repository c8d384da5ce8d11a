"""`python -m tinygpt COMMAND ...`: the command line (floor 7)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
