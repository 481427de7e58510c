"""`python -m minilora ...`: the command line (see minilora/cli/)."""
import sys

from .cli import main

sys.exit(main())
