"""The training child process: one run folder in, events, checkpoints and an adapter out.

Owns what happens inside `python -m studio train`: loading the model (LoRA/QLoRA/rsLoRA/DoRA
through models.py), encoding the dataset with the data step's loss mask, padding-free batching
(examples laid end to end with their own position ids; transformers builds a block-diagonal
mask from them, so no example attends to another), the transformers Trainer, and the callback
that writes events.jsonl, updates the store, moves finished checkpoints into place atomically,
honours Stop (SIGTERM) and stops on NaN loss. Only rank 0 writes files and the store.
"""
from __future__ import annotations

import math
import os
import shutil
import signal
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from ..errors import RunError
from ..faults import crash_point, disk_guard, disk_message, hold_point, likely_disk_full
from ..records import RunStatus
from ..data.prepare import read_split
from ..spec import OPTIMIZERS
from . import batches, preference
from . import checkpoints as ckpt
from .config import RunConfig, total_steps
from .trainer import trainer_class
from ..paths import RUN, Home, append_event



def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def peak_mem_gb(device: str) -> float:
    if device == "cuda":
        import torch

        return round(torch.cuda.max_memory_allocated() / 2**30, 3)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)  # KB → GB


def build_callback(run_dir: Path, store, run_id: str, steps: int, collator, device: str,
                   keep: int = 3, watcher=None):
    from transformers import TrainerCallback

    class StudioCallback(TrainerCallback):
        """Events, store updates, atomic checkpoints, Stop and NaN handling."""

        def __init__(self):
            self.t_last, self.tok_last, self.t0 = time.time(), 0, time.time()
            self.window: deque[tuple[float, int]] = deque(maxlen=6)
            self.step0: int | None = None
            # the run's first trainer process (a test may hold it at a step until Stop; a resume,
            # even one from step 0 after a Stop during start-up, is never held)
            marker = run_dir / ".trainer-started"
            self.first = not marker.exists()
            marker.touch()
            self.rows: dict[int, dict[str, Any]] = {}
            self.stopped = False
            self.nan_step: int | None = None
            self.last_loss: float | None = None
            self.eval_steps: set[int] = set()  # every rank records this: evaluation is collective

        phases = None  # train/phases.Phases, set by train()

        def on_train_begin(self, args, state, control, **kw):
            if self.phases is not None:
                self.phases.optimizer(kw.get("optimizer"))
            self.step0 = state.global_step
            self.t0 = self.t_last = time.time()
            self.window.append((self.t0, collator.tokens))

        def on_step_end(self, args, state, control, **kw):
            if self.first:  # the run's first trainer process may be held for a test
                hold_point("train.step", state.global_step, (run_dir / RUN.stop).exists)
            if (run_dir / RUN.stop).exists():  # written by Stop, or by SIGTERM below
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
                # over the last few logs: the collator counts a batch when the loader fetches
                # it, so one log's window can hold zero batches and the next two
                self.window.append((now, collator.tokens))
                t_old, tok_old = self.window[0] if len(self.window) > 1 else (self.t_last, self.tok_last)
                ev["tokens_per_s"] = round((collator.tokens - tok_old) / max(1e-6, now - t_old), 1)
                self.t_last, self.tok_last = now, collator.tokens
                done = step - (self.step0 or 0)
                ev["eta_s"] = round((now - self.t0) / max(1, done) * (steps - step), 1)
                ev["peak_mem_gb"] = peak_mem_gb(device)
                if not math.isfinite(loss) or (ev["grad_norm"] is not None and not math.isfinite(ev["grad_norm"])):
                    self.nan_step = step
                    control.should_training_stop = True
            if "eval_loss" in logs:
                ev.update(eval_loss=float(logs["eval_loss"]), loss=self.last_loss)
                ev.update({ours: logs[theirs] for theirs, ours in preference.TRL_LOGS.items()
                           if theirs in logs and theirs.startswith("eval_")})
            if rank() != 0 or len(ev) == 1:
                return
            append_event(run_dir, ev)
            crash_point("train.event_logged", step)
            row = self.rows.setdefault(step, {"step": step})
            row.update({k: v for k, v in ev.items() if v is not None})
            store.add_metrics(run_id, [row])
            store.update_run(run_id, step=step)

        def on_evaluate(self, args, state, control, metrics=None, model=None, **kw):
            self.eval_steps.add(state.global_step)
            if watcher is None or model is None:
                return
            fig = watcher.evaluate(model, state.global_step, (metrics or {}).get("eval_loss"))
            ev = {k: fig[k] for k in ("step", "probe_ppl", "answer_match", "forgetting")}
            append_event(run_dir, ev)
            store.add_metrics(run_id, [{**self.rows.setdefault(state.global_step, {"step": state.global_step}),
                                        **{k: v for k, v in ev.items() if v is not None}}])

        def on_save(self, args, state, control, **kw):
            if rank() == 0:
                ckpt.publish(Path(args.output_dir), run_dir, state.global_step, keep=keep)

    return StudioCallback()


def embeddings_to_half(model, dtype) -> None:
    """prepare_model_for_kbit_training upcasts every unquantized weight to fp32. The norms keep
    that (stability); the frozen embeddings and lm_head go back to a half load dtype: in fp32
    they cost 2 bytes × vocab × hidden more each (≈2 GB for Llama 3.1 8B), and autocast would
    keep a half copy of the lm_head for backward — the difference between fitting a 12 GB card
    or not."""
    import torch

    if dtype in (torch.bfloat16, torch.float16):
        for emb in {model.get_input_embeddings(), model.get_output_embeddings()} - {None}:
            emb.to(dtype)


def load_for_training(model_path: Path, device: str, p, start_adapter: Path | None = None):
    """The base model (quantized for QLoRA) with fresh LoRA adapters — or, with
    `start_adapter`, an earlier run's adapter to train on — ready for padding-free batches: the
    KV cache is off, because transformers builds the block-diagonal mask from position ids only
    when there is no cache — with one, packed examples would see each other. `p` is the run
    spec (method, quant, lora and train sections)."""
    from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training

    from ..models import registry as models

    quant = p.quant if p.method == "qlora" else None
    model = models.load_model(model_path, device, p.train.dtype, quant)
    model.config.use_cache = False
    if quant is not None:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=p.train.grad_ckpt)
        embeddings_to_half(model, models.resolve_dtype(p.train.dtype, device))
        if p.train.kbit_norms == "compute":
            from .lean import norms_to_compute_dtype

            norms_to_compute_dtype(model, models.resolve_dtype(p.train.dtype, device))
    if p.train.mlp_chunk and p.train.grad_ckpt:
        from .lean import chunk_mlps

        chunk_mlps(model, p.train.mlp_chunk)
    if start_adapter is not None:
        return PeftModel.from_pretrained(model, str(start_adapter), is_trainable=True)
    n_layers = getattr(model.config.get_text_config(), "num_hidden_layers", None)
    return get_peft_model(model, models.lora_config(p.lora, n_layers))


def clear_stale_stop(run_dir: Path) -> None:
    """A STOP left by an earlier stop is cleared; one written since this process started is a
    Stop pressed while the trainer was still starting (a minute of imports on a busy machine)
    and is honoured at the first step — clearing it lost that Stop: the page said "stopped"
    while the run trained on."""
    import psutil

    stop = run_dir / RUN.stop
    try:
        if stop.stat().st_mtime < psutil.Process().create_time():
            stop.unlink()
    except FileNotFoundError:
        pass


def train(run_dir: Path, store, run_id: str, model_path: Path, device: str,
          progress: bool = False) -> dict[str, Any]:
    """Run (or resume) the run in `run_dir`; return its final status and artifacts."""
    import torch
    from transformers import Trainer, TrainingArguments

    from ..models import registry as models
    from .phases import Phases

    cfg = RunConfig.read(run_dir)
    p = cfg.spec
    t = p.train
    phases = Phases(device == "cuda")  # the run's wall starts here: preparing is part of it
    clear_stale_stop(run_dir)
    # SIGTERM asks for the same clean stop as the Stop button: checkpoint, adapter, exit.
    signal.signal(signal.SIGTERM, lambda *_: (run_dir / RUN.stop).write_text("stop"))
    torch.manual_seed(t.seed)
    tok = models.load_tokenizer(model_path)
    data_dir = Path(cfg.dataset.path)
    train_rows = read_split(data_dir, "train")
    train_set = batches.encode_examples(tok, train_rows, t.max_len, numbered=True)
    eval_set = batches.encode_split(tok, data_dir, "validation", t.max_len)
    if not train_set:
        raise RunError("No training example has any learnable token at this max length.")
    staging = run_dir / "trainer"
    ckpt.clean_staging(staging)
    resume_from, notes = ckpt.latest_intact(run_dir)
    start = ckpt.step_of(resume_from) if resume_from else 0
    # a resumed run keeps the step count it started with (augmented data may count differently)
    recorded = ckpt.max_steps_of(resume_from) if resume_from else None
    if rank() == 0:  # the record continues from the point we resume from, never repeats (with
        # no checkpoint the run starts over, and its step-0 notes are written again: none kept)
        ckpt.trim_events(run_dir / RUN.events, start if resume_from else -1)
        store.trim_metrics(run_id, start)
        for note in notes:
            log_note(run_dir, start, note)
    result: dict[str, Any] = {"steps": start, "max_steps": recorded, "world_size": world_size(),
                              "notes": notes}
    if resume_from is not None and start >= (recorded or total_steps(p, len(train_set), world_size())):
        if rank() == 0:  # killed while saving after the last step
            with disk_guard(run_dir):
                result["adapter"] = str(ckpt.save_adapter(None, tok, run_dir, from_checkpoint=resume_from))
            result["status"] = RunStatus.COMPLETED.value
        return result
    model = load_for_training(model_path, device, p,
                              Home.of_run(run_dir).run_dir(p.from_run) / RUN.adapter if p.from_run else None)
    say = (lambda text: log_note(run_dir, start, text)) if rank() == 0 else (lambda text: None)
    if t.objective == "sft":
        train_set, anchor = batches.assemble(run_dir, p, tok, model, model_path, train_rows, start == 0, say)
    else:  # pairs: replay and augmentation are for supervised runs
        anchor = None
    steps = recorded or total_steps(p, len(train_set), world_size())
    result["max_steps"] = steps
    watcher = None
    if eval_set and rank() == 0 and t.forget_budget > 0:
        from .selection import Watcher

        from ..retention.base_answers import memo_for

        watcher = Watcher(run_dir, tok, read_split(data_dir, "validation"), t.forget_budget, start,
                          lost_budget=t.retention_budget)
        watcher.baseline(model, memo_for(Home.of_run(run_dir).replay, p.model, model_path, model))
    preferring = t.objective != "sft"
    collator = (preference.CountingWrapper(None) if preferring else
                batches.make_collator(tok, t.packing, anchor))
    dtype = models.resolve_dtype(t.dtype, device)
    args = dict(
        output_dir=str(staging), max_steps=steps, per_device_train_batch_size=t.micro_batch,
        per_device_eval_batch_size=t.micro_batch, gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr, lr_scheduler_type=t.schedule if t.schedule != "constant" else "constant_with_warmup",
        warmup_steps=int(round(t.warmup_ratio * steps)), weight_decay=t.weight_decay,
        optim=OPTIMIZERS[t.optimizer].hf_name, seed=t.seed, data_seed=t.seed,
        logging_steps=t.log_every, save_strategy="steps", save_steps=t.save_every,
        save_total_limit=None, eval_strategy="steps" if (t.eval_every and eval_set) else "no",
        eval_steps=t.eval_every or None, report_to=[], use_cpu=device == "cpu",
        bf16=dtype == torch.bfloat16 and device != "cpu", fp16=dtype == torch.float16,
        activation_checkpointing=t.grad_ckpt,
        activation_checkpointing_kwargs={"use_reentrant": False} if t.grad_ckpt else None,
        remove_unused_columns=False, dataloader_num_workers=0, disable_tqdm=not progress,
        prediction_loss_only=True,  # evaluation needs the loss, never the [tokens × vocab] logits
        ddp_find_unused_parameters=False if world_size() > 1 else None)
    cb = build_callback(run_dir, store, run_id, steps, collator, device, t.keep_checkpoints, watcher)
    if preferring:  # TRL's DPO/ORPO trainers on the run's preference pairs
        trainer = preference.make_trainer(t.objective, p, model, args, tok, train_rows,
                                          read_split(data_dir, "validation"), [cb], collator)
    else:
        trainer = trainer_class(Trainer, t.loss, t.loss_chunk, t.offload == "on" and device == "cuda",
                                t.replay_weight if anchor else 0.0)(
            model=model, args=TrainingArguments(**args), train_dataset=train_set,
            eval_dataset=eval_set or None, data_collator=collator, callbacks=[cb])
    cb.phases = phases
    phases.instrument(trainer)
    if not progress:  # keep stdout clean for --json: no printed log dicts
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
    if rank() == 0:
        store.update_run(run_id, status=RunStatus.RUNNING.value, pid=os.getpid(), max_steps=steps,
                         error=None)
    phases.prepared()
    try:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except torch.OutOfMemoryError:
        raise RunError(oom_message(p)) from None
    except Exception as e:
        if likely_disk_full(e, run_dir):  # a checkpoint could not be written: the last complete one stays
            shutil.rmtree(staging, ignore_errors=True)
            raise RunError(disk_message(run_dir) + " The last complete checkpoint was kept; "
                           "resume the run once there is room.") from None
        raise
    crash_point("train.after_last_step")
    result.update(steps=trainer.state.global_step, world_size=trainer.args.world_size)
    if cb.nan_step is not None:
        raise RunError(f"The loss became NaN/inf at step {cb.nan_step}, so training stopped. Lower "
                       f"the learning rate (e.g. train.lr={t.lr / 4:g}), and on GPUs without bf16 "
                       "use fp32 or a smaller lr with fp16. Resume is not useful: start a new run.")
    if eval_set and not cb.stopped and trainer.state.global_step not in cb.eval_steps:
        trainer.evaluate()  # logs eval_loss through the callback
    if rank() == 0:
        done = not (cb.stopped and trainer.state.global_step < steps)
        with phases.clock("evaluation"):  # the budget's choice, strengths, the adapter's rewrites
            result.update(finish(run_dir, p, trainer, tok, watcher, done))
        result["status"] = (RunStatus.COMPLETED if done else RunStatus.STOPPED).value
        shutil.rmtree(staging, ignore_errors=True)
        spent = phases.summary((start + 1, trainer.state.global_step) if start or not done else None)
        result["phases"] = spent
        append_event(run_dir, {"step": trainer.state.global_step, "phases": spent})
        log_note(run_dir, trainer.state.global_step, spent["line"])
    return result


def finish(run_dir: Path, p, trainer, tok, watcher, done: bool) -> dict[str, Any]:
    """The run's adapter: the forgetting budget's choice (a checkpoint, a strength), then the
    targeted strength (intruders.py) — written whole, with what was chosen and why."""
    t, step = p.train, trainer.state.global_step
    choose = watcher is not None and done and t.forget_budget > 0  # 0: the last step, as trained
    if choose and not p.lora.dora:  # DoRA: a scaled update is no blend with the base
        watcher.strengths(trainer.model, step)
    choice = watcher.choice(step) if choose else None
    out: dict[str, Any] = {}
    with disk_guard(run_dir):
        out["adapter"] = str(ckpt.save_adapter(trainer.model, tok, run_dir,
                                               from_checkpoint=choice and choice["adapter"]))
        if choice and choice["strength"] != 1.0:
            from ..retention.strength import apply

            apply(run_dir, choice["strength"])
        if done and t.intruder_scale < 1.0 and not p.lora.dora:  # DoRA: no singular directions
            from ..retention import intruders

            cut = intruders.apply(run_dir, intruders.base_weights(trainer.model), t.intruder_scale)
            log_note(run_dir, step, f"Targeted strength: {cut['intruders']} intruder dimensions (new "
                                    f"directions the base weights did not have) found; the "
                                    f"{cut['directions_scaled']} update directions that make them are "
                                    f"scaled by {t.intruder_scale:g}, the rest kept as trained "
                                    "(adapter-full/ holds the adapter as trained).")
    if choice:
        out["chosen_step"] = choice["chosen_step"]
        log_note(run_dir, step, choice["reason"])
    return out


def log_note(run_dir: Path, step: int, note: str) -> None:
    """A note in the run's record (events.jsonl) and its log."""
    append_event(run_dir, {"step": step, "note": note})
    print(f"note: {note}", file=sys.stderr, flush=True)  # stdout is for --json


def oom_message(spec) -> str:
    t = spec.train
    return (f"The GPU ran out of memory (micro_batch {t.micro_batch}, max_len {t.max_len}, "
            f"method {spec.method}). Try, in this order: train.grad_ckpt=true, "
            f"train.micro_batch={max(1, t.micro_batch // 2)} with train.grad_accum="
            f"{t.grad_accum * 2}, method=qlora, or a shorter train.max_len. The Memory step "
            "(python -m studio estimate) shows what fits your GPU.")
