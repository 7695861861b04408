"""``python -m minifuse embed ...``: the command line of minifuse.cli."""
import sys

from .cli import main

sys.exit(main())
