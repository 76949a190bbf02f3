"""`python -m studio …`: the command line. See studio/cli/."""
import sys

from .cli import main

sys.exit(main())
