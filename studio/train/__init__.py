"""train step (see module docstrings)."""
