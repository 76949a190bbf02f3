"""What one browser tab has chosen so far: a typed record, never a dict of string keys.

Owns the fields the steps share (the dataset just prepared and its lengths, the memory verdict,
the run in view, the Compare engine, the cancel flag a running prepare polls) and the steps in the
stepper. Handlers return a changed copy (`dataclasses.replace`); the store holds the shared truth.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Step(enum.IntEnum):
    """The tabs of the stepper, in order; a handler selects one by this value."""
    DATA = 0
    MEMORY = 1
    TRAIN = 2
    COMPARE = 3
    EXPORT = 4
    HISTORY = 5


@dataclass(frozen=True)
class MemoryNote:
    """The Memory step's last verdict, shown on the Train step: with its plan applied, when it
    has one (the settings the Train step is given)."""
    total_gb: float
    fits: bool | None
    preset: str | None
    gpu: str
    model: str | None = None       # the model it was estimated for (a note for another is stale)
    settings: tuple = ()           # (name, value) pairs the run needs to fit: the plan applied


class CancelFlag:
    """Set by Cancel, polled by a running job. One per tab, shared by reference between the
    job and the Cancel click (a plain flag: gradio deep-copies the first state of each tab)."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def clear(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set


@dataclass(frozen=True)
class Session:
    dataset: str | None = None      # "name@vN" prepared in this tab
    max_len: int | None = None      # p95 length of that dataset, rounded up to 64
    train_len: int | None = None    # its longest example, rounded up to 64
    memory: MemoryNote | None = None
    run_id: str | None = None       # the run this tab follows
    run_active: bool = False
    plotted: str | None = None      # "run:events" last drawn, so the plot redraws only on news
    engine: str = "hf"              # Compare engine (Export's "chat with the GGUF" sets llama.cpp)
    cancel: CancelFlag = field(default_factory=CancelFlag)  # of a running prepare
    planned: tuple = ()             # Memory's settings the user chose to use: (name, value) pairs


LONGEST_UI = 131_072  # the Memory step's longest length: Llama 3.1's and Qwen3's (with YaRN) context


def round_up(n: int, to: int = 64, lo: int = 64, hi: int = LONGEST_UI) -> int:
    return min(hi, max(lo, -(-int(n) // to) * to))


TAB_NAMES = {Step.DATA: "1 · Data", Step.MEMORY: "2 · Memory", Step.TRAIN: "3 · Train",
             Step.COMPARE: "4 · Compare", Step.EXPORT: "5 · Export", Step.HISTORY: "History"}
