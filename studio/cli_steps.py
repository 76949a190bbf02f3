"""CLI verbs of the workflow steps (data, estimate, train, runs, compare, report, export)."""
from __future__ import annotations


def add_step_verbs(sub, verb) -> None:
    """Filled in as each step lands; every verb calls one Studio method."""
