"""A user's own reward: a Python file defining `reward(prompt, completion, **row)`.

Owns loading such a file by its path (`--reward path/to/reward.py`) with clear errors for a
missing file, a syntax error, a failure while loading, no `reward` function, and a call that
raises or returns something other than a number in [0, 1] or None — and wrapping it as a reward
record (rewards.Reward). The file is the user's own code, run in this process on their own
machine with their permissions: the studio says so where it lists the reward.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DataError
from .reward_record import Reward


def load_user(path: str) -> Reward:
    """A Python file defining `reward(prompt, completion, **row) -> float | None` — the user's own
    code, run in this process on their own machine with their permissions."""
    import importlib.util

    file = Path(path).expanduser()
    how = "Give the path of a .py file that defines reward(prompt, completion, **row) -> float | None."
    if file.is_dir():
        raise DataError(f"Reward file {file} is a folder. {how}")
    if not file.is_file():
        raise DataError(f"Reward file {file} does not exist. {how}")
    if file.suffix != ".py":
        raise DataError(f"Reward file {file} is not a Python file (.py). {how}")
    spec = importlib.util.spec_from_file_location(f"studio_user_reward_{file.stem}", file)
    if spec is None or spec.loader is None:
        raise DataError(f"Reward file {file} cannot be loaded as Python. {how}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise DataError(f"Reward file {file}, line {e.lineno}: {e.msg}. Fix the file and try again.") from None
    except Exception as e:
        raise DataError(f"Reward file {file} failed while loading: {type(e).__name__}: {e}. "
                        "Fix the file and try again.") from None
    fn = getattr(module, "reward", None)
    if not callable(fn):
        raise DataError(f"Reward file {file} defines no function named reward. Add "
                        "def reward(prompt, completion, **row): return a number in [0, 1] or None.")

    def call(c: str, row: dict[str, Any], ctx: dict[str, Any]) -> float | None:
        try:
            value = fn(row.get("question", ""), c, **{k: v for k, v in row.items() if k != "prompt"})
        except Exception as e:
            raise DataError(f"Reward file {file}: reward() raised {type(e).__name__}: {e} "
                            f"(prompt {row.get('question', '')[:60]!r}).") from None
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DataError(f"Reward file {file}: reward() returned {value!r}; return a number in "
                            "[0, 1] or None.")
        return min(1.0, max(0.0, float(value)))

    return Reward(name=str(file), role="score", fn=call, supports=lambda rows: bool(rows), runs_code=True,
                  why=f"Your own reward ({file.name}): your code, run on your machine.")
