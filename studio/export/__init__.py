"""export step (see module docstrings)."""
