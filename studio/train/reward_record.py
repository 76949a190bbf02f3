"""The record of one reward (train.objective=grpo|rloo): its name, the one line the UI and CLI
show, its role, its function and the predicate saying whether a dataset supports it. Its own
module so that the registry (rewards.py) and a user's reward file (reward_file.py) share it
without importing each other.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Reward:
    name: str
    why: str                                          # one line, shown in the UI and the CLI
    role: str                                         # "score" or "penalty"
    fn: Callable[..., float | None]                   # fn(completion, row, ctx) -> [0, 1] | None
    supports: Callable[[list[dict[str, Any]]], bool]  # does this dataset give it what it needs?
    runs_code: bool = False                           # runs the model's or the user's code
