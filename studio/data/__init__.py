"""data step (see module docstrings)."""
