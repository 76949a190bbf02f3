"""The training run's record while the Trainer runs: the callback that writes events.jsonl
(loss, rate, throughput, ETA, peak memory, evaluation figures), adds the store's metric rows,
moves finished checkpoints into place atomically, honours Stop (the STOP file, written by the
button or by SIGTERM) and stops on a NaN/inf loss; and `log_note`, a note in that record.

Does not own the run's setup, the trainer or the finish (loop.py). Only the training child
imports this module (through loop.py), so transformers is imported at its top and the callback
is a module-level class. Only rank 0 writes files and the store.
"""
from __future__ import annotations

import math
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ..faults import atomic_write_text, crash_point, hold_point
from ..paths import RUN, append_event
from . import checkpoints as ckpt
from . import preference, rl
from .config import rank


def peak_mem_gb(device: str) -> float:
    """The peak memory so far, in GB: CUDA allocations on a GPU, the process's max RSS on a CPU."""
    if device == "cuda":
        import torch

        return round(torch.cuda.max_memory_allocated() / 2**30, 3)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)  # KB → GB


SEPARATED_MARGIN = 4.6  # β-scaled reward margin past which the sigmoid DPO loss is under 0.01


class StudioCallback(TrainerCallback):
    """Events, store updates, atomic checkpoints, Stop and NaN handling."""

    def __init__(self, run_dir: Path, store, run_id: str, steps: int, collator, device: str,
                 keep: int = 3, watcher=None):
        self.run_dir, self.store, self.run_id, self.steps = run_dir, store, run_id, steps
        self.collator, self.device, self.keep, self.watcher = collator, device, keep, watcher
        self.t_last, self.tok_last, self.t0 = time.time(), 0, time.time()
        self.window: deque[tuple[float, int]] = deque(maxlen=6)
        self.step0: int | None = None
        # the run's first trainer process (a test may hold it at a step until Stop; a resume,
        # even one from step 0 after a Stop during start-up, is never held)
        marker = self.run_dir / ".trainer-started"
        self.first = not marker.exists()
        marker.touch()
        self.rows: dict[int, dict[str, Any]] = {}
        self.stopped = False
        self.nan_step: int | None = None
        self.last_loss: float | None = None
        self.eval_steps: set[int] = set()  # every rank records this: evaluation is collective
        self.watch_every = 0  # RL runs: the forgetting budget's evaluations, TRL evaluating nothing
        self.separate_for = 0  # dpo with train.stop_separated: a pass over the pairs, in steps
        self.separated = 0     # steps in a row with every pair preferred by a wide margin
        self.logged_at: int | None = None  # the step of the last log (its window's end)

    phases = None  # train/phases.Phases, set by train()

    def on_train_begin(self, args, state, control, **kw):
        if self.phases is not None:
            self.phases.optimizer(kw.get("optimizer"))
        self.step0 = state.global_step
        self.t0 = self.t_last = time.time()
        self.window.append((self.t0, self.collator.tokens))

    def on_step_end(self, args, state, control, **kw):
        if self.first:  # the run's first trainer process may be held for a test
            hold_point("train.step", state.global_step, (self.run_dir / RUN.stop).exists)
        if self.watch_every and state.global_step % self.watch_every == 0:
            self.on_evaluate(args, state, control, model=kw.get("model"))
        if (self.run_dir / RUN.stop).exists():  # written by Stop, or by SIGTERM below
            self.stopped = True
            control.should_save = True
            control.should_training_stop = True

    def on_log(self, args, state, control, logs=None, **kw):
        if self.phases is None:
            return self._log(state, control, logs)
        with self.phases.clock("logging"):
            return self._log(state, control, logs)

    def _log(self, state, control, logs):
        logs, step = logs or {}, state.global_step
        if "train_runtime" in logs:
            return
        now = time.time()
        ev: dict[str, Any] = {"step": step}
        if "loss" in logs:
            loss = float(logs["loss"])
            self.last_loss = loss
            ev.update(loss=loss, lr=logs.get("learning_rate"), grad_norm=logs.get("grad_norm"))
            if "kl" in logs:  # the soft anchor's mean (replay_mode kl)
                ev["kl"] = logs["kl"]
            ev.update({ours: logs[theirs] for theirs, ours in preference.TRL_LOGS.items()
                       if theirs in logs and not theirs.startswith("eval_")})
            ev.update({ours: logs[theirs] for theirs, ours in rl.TRL_LOGS.items() if theirs in logs})
            ev.update({"reward_" + k[len(rl.PREFIX):]: v for k, v in logs.items() if k.startswith(rl.PREFIX)})
            # over the last few logs: the collator counts a batch when the loader fetches
            # it, so one log's window can hold zero batches and the next two
            self.window.append((now, self.collator.tokens))
            t_old, tok_old = self.window[0] if len(self.window) > 1 else (self.t_last, self.tok_last)
            ev["tokens_per_s"] = round((self.collator.tokens - tok_old) / max(1e-6, now - t_old), 1)
            self.t_last, self.tok_last = now, self.collator.tokens
            done = step - (self.step0 or 0)
            ev["eta_s"] = round((now - self.t0) / max(1, done) * (self.steps - step), 1)
            ev["peak_mem_gb"] = peak_mem_gb(self.device)
            if not math.isfinite(loss) or (ev["grad_norm"] is not None and not math.isfinite(ev["grad_norm"])):
                self.nan_step = step
                control.should_training_stop = True
            elif self.separate_for:
                self._stop_when_separated(ev, step, control)
        if "eval_loss" in logs:
            ev.update(eval_loss=float(logs["eval_loss"]), loss=self.last_loss)
            ev.update({ours: logs[theirs] for theirs, ours in preference.TRL_LOGS.items()
                       if theirs in logs and theirs.startswith("eval_")})
        if rank() != 0 or len(ev) == 1:
            return
        append_event(self.run_dir, ev)
        crash_point("train.event_logged", step)
        row = self.rows.setdefault(step, {"step": step})
        row.update({k: v for k, v in ev.items() if v is not None})
        self.store.add_metrics(self.run_id, [row])
        self.store.update_run(self.run_id, step=step)

    def _stop_when_separated(self, ev: dict[str, Any], step: int, control) -> None:
        """train.stop_separated: as many steps as a pass over the pairs takes, each with every
        pair of its batch preferred (reward accuracy 1) by a margin past SEPARATED_MARGIN — the
        point where the sigmoid loss is under 0.01, judged on the margin so that a supervised
        term in the loss (train.pref_sft) does not hide it. A log covers the steps since the
        last one (train.log_every: their means). The run is done: completed, not stopped; the
        step is kept (RUN.separated_at) so a resume after a kill goes straight to the finish."""
        wide = ((ev.get("reward_margin") or 0) >= SEPARATED_MARGIN
                and (ev.get("reward_accuracy") or 0) >= 1.0)
        covered = step - (self.logged_at if self.logged_at is not None else (self.step0 or 0))
        self.logged_at = step
        self.separated = self.separated + covered if wide else 0
        if self.separated >= self.separate_for and step < self.steps:
            control.should_training_stop = True
            control.should_save = True
            if rank() == 0:
                atomic_write_text(self.run_dir / RUN.separated_at, str(step))
                log_note(self.run_dir, step, (
                    f"Every training pair was preferred by a wide margin at each of the last "
                    f"{self.separated} steps (as many as a pass over the pairs takes): stopped at "
                    f"step {step} of {self.steps}, since more steps would only widen the margins "
                    "(train.stop_separated=false trains on)."))

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kw):
        self.eval_steps.add(state.global_step)
        if self.watcher is None or model is None:
            return
        fig = self.watcher.evaluate(model, state.global_step, (metrics or {}).get("eval_loss"))
        ev = {k: fig[k] for k in ("step", "probe_ppl", "answer_match", "forgetting")}
        append_event(self.run_dir, ev)
        self.store.add_metrics(self.run_id, [{**self.rows.setdefault(state.global_step, {"step": state.global_step}),
                                    **{k: v for k, v in ev.items() if v is not None}}])

    def on_save(self, args, state, control, **kw):
        if rank() == 0:
            ckpt.publish(Path(args.output_dir), self.run_dir, state.global_step, keep=self.keep)


def log_note(run_dir: Path, step: int, note: str) -> None:
    """A note in the run's record (events.jsonl) and its log."""
    append_event(run_dir, {"step": step, "note": note})
    print(f"note: {note}", file=sys.stderr, flush=True)  # stdout is for --json
