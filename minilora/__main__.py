"""`python -m minilora ...`: the command line (see minilora/cli.py)."""
import sys

from .cli import main

sys.exit(main())
