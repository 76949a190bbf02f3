"""Where a run's time goes: per-phase clocks around the Trainer, written to the run's record.

Owns `Phases`: wall-clock seconds spent preparing (the model's load, replay and the anchor's
targets, the forgetting check's base figures: everything from the run's start to its first
step), in data (the collator), forward+backward (each micro-batch's training_step), the optimizer
step, evaluation (the Trainer's, with the forgetting probe), checkpoints, and the studio's own
logging (events, store) — measured by wrapping those calls on the trainer instance (any Trainer:
the studio's, TRL's). On a GPU the clocks never make it wait for every step: the per-step GPU
phases (forward+backward, the optimizer) are timed by CUDA events on the GPU's own timeline,
read a few hundred at a time; host work (batching, logging) by the wall clock alone; only the
rare phases (evaluation, checkpoints) wait for the GPU at their edges, so the GPU's queued work
is charged to the phase that queued it. A wait at every step would stop the CPU from queueing the
next step while the GPU runs the last — what keeps a GPU busy on small steps. `summary()` gives the
seconds, their shares of the wall time, and one plain line for the run's notes ("training steps
86% of 210 s; evaluations 9%…"), so a run that is slow for reasons other than training says so.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable

ORDER = ("preparing", "data", "forward_backward", "optimizer", "evaluation", "checkpoints", "logging")
GPU_PHASES = ("forward_backward", "optimizer")  # per step, on a GPU: timed by CUDA events
HOST_PHASES = ("data", "logging")               # per step, host work: the wall clock, no wait
RESOLVE_EVERY = 512                             # events kept before they are read (one wait)
WORDS = {"preparing": "preparing (model, replay, base figures)", "data": "batching data",
         "forward_backward": "forward and backward passes",
         "optimizer": "optimizer steps", "evaluation": "evaluations and forgetting checks",
         "checkpoints": "checkpoints", "logging": "logging"}


class Phases:
    def __init__(self, cuda: bool = False):
        self.seconds = dict.fromkeys(ORDER, 0.0)
        self.cuda, self.t0, self.depth = cuda, time.perf_counter(), 0
        self.pending: list[tuple[str, Any, Any]] = []  # (phase, start event, end event), unread

    def _sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    @staticmethod
    def _event():
        import torch

        e = torch.cuda.Event(enable_timing=True)
        e.record()
        return e

    def _read_events(self) -> None:
        for phase, start, end in self.pending:
            end.synchronize()
            self.seconds[phase] += start.elapsed_time(end) / 1000
        self.pending.clear()

    @contextmanager
    def clock(self, phase: str):
        """Time the block; a phase inside another (a checkpoint during an evaluation) counts once."""
        if self.depth:
            yield
            return
        self.depth += 1
        events = self.cuda and phase in GPU_PHASES
        edges = self.cuda and not events and phase not in HOST_PHASES
        start = self._event() if events else None
        if edges:
            self._sync()
        t = time.perf_counter()
        try:
            yield
        finally:
            if events:
                self.pending.append((phase, start, self._event()))
                if len(self.pending) >= RESOLVE_EVERY:
                    self._read_events()
            else:
                if edges:
                    self._sync()
                self.seconds[phase] += time.perf_counter() - t
            self.depth -= 1

    def prepared(self) -> None:
        """Everything from the start until now was preparing (called before the first step)."""
        self._sync()
        self.seconds["preparing"] = time.perf_counter() - self.t0

    def wrap(self, phase: str, fn: Callable) -> Callable:
        def timed(*a, **kw):
            with self.clock(phase):
                return fn(*a, **kw)
        return timed

    def instrument(self, trainer) -> None:
        """Clocks on this trainer's data, steps, evaluation and checkpoints (the optimizer's
        step is wrapped when training begins: it does not exist before)."""
        trainer.training_step = self.wrap("forward_backward", trainer.training_step)
        trainer.evaluate = self.wrap("evaluation", trainer.evaluate)
        trainer._save_checkpoint = self.wrap("checkpoints", trainer._save_checkpoint)
        trainer.data_collator = self.wrap("data", trainer.data_collator)

    def optimizer(self, optimizer) -> None:
        if optimizer is not None and not getattr(optimizer.step, "_studio_timed", False):
            optimizer.step = self.wrap("optimizer", optimizer.step)
            optimizer.step._studio_timed = True

    def summary(self, steps: tuple[int, int] | None = None) -> dict[str, Any]:
        """`steps`: the first and last step this process trained, named in the line when the run
        was stopped or resumed (each process's time is its own line)."""
        self._read_events()
        wall = max(1e-9, time.perf_counter() - self.t0)
        shares = {k: round(v / wall, 4) for k, v in self.seconds.items()}
        other = max(0.0, 1 - sum(shares.values()))
        parts = sorted(((shares[k], WORDS[k]) for k in ORDER if shares[k] >= 0.005), reverse=True)
        span = f" in steps {steps[0]}–{steps[1]}" if steps and steps[0] <= steps[1] else ""
        line = (f"Where the time went{span} ({wall:.0f} s): " + ", ".join(f"{w} {s:.0%}" for s, w in parts)
                + (f", the rest {other:.0%}" if other >= 0.005 else "") + ".")
        return {"wall_s": round(wall, 2), "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
                "shares": shares, "other_share": round(other, 4), "line": line}
