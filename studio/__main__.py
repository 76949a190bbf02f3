"""`python -m studio …`: the command line. See studio/cli.py."""
import sys

from .cli import main

sys.exit(main())
