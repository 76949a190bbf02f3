"""The training child process: one run folder in, events, checkpoints and an adapter out.

Owns what happens inside `python -m studio train`: loading the model (LoRA/QLoRA/rsLoRA/DoRA
through models/registry.py), encoding the dataset with the data step's loss mask, padding-free
batching (examples laid end to end with their own position ids; transformers builds a
block-diagonal mask from them, so no example attends to another), the transformers Trainer, and
the run's finish (the forgetting budget's choice, the targeted strength). What the trainer writes
while it runs — events.jsonl, the store's metrics, checkpoints moved into place, Stop and NaN
handling — is the callback's (callback.py). Only rank 0 writes files and the store.

`train()` reads top to bottom as setup steps (data, resume point, model, trainer), the run, and
the finish. Only the training child imports this module (runs.execute and the measured check,
inside functions; tests/test_layering.py checks it).
"""
from __future__ import annotations

import math
import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.prepare import read_split
from ..errors import RunError
from ..faults import crash_point, disk_guard, disk_message, likely_disk_full
from ..paths import RUN, Home, append_event
from ..records import RunStatus
from ..optimizers import OPTIMIZERS
from . import batches, preference, rl
from . import checkpoints as ckpt
from .callback import StudioCallback, log_note
from .config import RL, RunConfig, cpu_mixed, rank, total_steps, world_size
from .trainer import trainer_class


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
    # bf16 mixed precision on a CPU keeps fp32 weights: autocast multiplies in bf16 (cpu_mixed)
    model = models.load_model(model_path, device, "fp32" if cpu_mixed(p, device) else p.train.dtype, quant)
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


@dataclass
class Data:
    """The run's dataset, encoded: training rows and examples, validation examples."""
    train_rows: list[dict[str, Any]]
    train_set: list
    eval_set: list
    val_rows: list[dict[str, Any]]


@dataclass
class Resume:
    """Where the run starts: the checkpoint resumed from (None: from the start), its step, the
    step count the run started with, and notes about damaged checkpoints passed over."""
    staging: Path
    checkpoint: Path | None
    start: int
    recorded: int | None
    notes: list[str]


def train(run_dir: Path, store, run_id: str, model_path: Path, device: str,
          progress: bool = False) -> dict[str, Any]:
    """Run (or resume) the run in `run_dir`; return its final status and artifacts."""
    import torch

    from ..models import registry as models
    from .phases import Phases

    cfg = RunConfig.read(run_dir)
    p, t = cfg.spec, cfg.spec.train
    phases = Phases(device == "cuda")  # the run's wall starts here: preparing is part of it
    clear_stale_stop(run_dir)
    # SIGTERM asks for the same clean stop as the Stop button: checkpoint, adapter, exit.
    signal.signal(signal.SIGTERM, lambda *_: (run_dir / RUN.stop).write_text("stop"))
    torch.manual_seed(t.seed)
    tok = models.load_tokenizer(model_path)
    data = _setup_data(cfg, tok)
    at = _setup_resume(run_dir, store, run_id)
    result: dict[str, Any] = {"steps": at.start, "max_steps": at.recorded, "world_size": world_size(),
                              "notes": at.notes}
    if at.checkpoint is not None and (at.start >= (at.recorded or total_steps(p, len(data.train_set), world_size()))
                                      or separated_at(run_dir) == at.start):
        if rank() == 0:  # killed while saving after the last step (or the step dpo stopped at)
            with disk_guard(run_dir):
                result["adapter"] = str(ckpt.save_adapter(None, tok, run_dir, from_checkpoint=at.checkpoint))
            result["status"] = RunStatus.COMPLETED.value
        return result
    model, anchor, watcher = _setup_model(run_dir, p, tok, model_path, device, data, at)
    steps = result["max_steps"] = at.recorded or total_steps(p, len(data.train_set), world_size())
    trainer, cb = _setup_trainer(run_dir, store, run_id, p, model, tok, data, anchor, watcher,
                                 steps, at, device, progress)
    cb.phases = phases
    phases.instrument(trainer)
    if rank() == 0:
        store.update_run(run_id, status=RunStatus.RUNNING.value, pid=os.getpid(), max_steps=steps,
                         error=None)
    phases.prepared()
    _run_trainer(trainer, p, run_dir, at)
    crash_point("train.after_last_step")
    result.update(steps=trainer.state.global_step, world_size=trainer.args.world_size)
    if cb.nan_step is not None:
        raise RunError(f"The loss became NaN/inf at step {cb.nan_step}, so training stopped. Lower "
                       f"the learning rate (e.g. train.lr={t.lr / 4:g}), and on GPUs without bf16 "
                       "use fp32 or a smaller lr with fp16. Resume is not useful: start a new run.")
    if data.eval_set and not cb.stopped and trainer.state.global_step not in cb.eval_steps:
        if t.objective in RL:  # TRL would sample answers to evaluate: the budget's figures only
            cb.on_evaluate(trainer.args, trainer.state, trainer.control, model=trainer.model)
        else:
            trainer.evaluate()  # logs eval_loss through the callback
    if rank() == 0:
        done = not (cb.stopped and trainer.state.global_step < steps)
        with phases.clock("evaluation"):  # the budget's choice, strengths, the adapter's rewrites
            result.update(finish(run_dir, p, trainer, tok, watcher, done))
        result["status"] = (RunStatus.COMPLETED if done else RunStatus.STOPPED).value
        shutil.rmtree(at.staging, ignore_errors=True)
        spent = phases.summary((at.start + 1, trainer.state.global_step) if at.start or not done else None)
        result["phases"] = spent
        append_event(run_dir, {"step": trainer.state.global_step, "phases": spent})
        log_note(run_dir, trainer.state.global_step, spent["line"])
    return result


def separated_at(run_dir: Path) -> int | None:
    """The step a dpo run ended at because its pairs were separated (train.stop_separated)."""
    try:
        return int((run_dir / RUN.separated_at).read_text())
    except (OSError, ValueError):
        return None


def _setup_data(cfg: RunConfig, tok) -> Data:
    t, data_dir = cfg.spec.train, Path(cfg.dataset.path)
    train_rows = read_split(data_dir, "train")
    train_set = batches.encode_examples(tok, train_rows, t.max_len, numbered=True)
    eval_set = batches.encode_split(tok, data_dir, "validation", t.max_len)
    if not train_set:
        raise RunError("No training example has any learnable token at this max length.")
    return Data(train_rows, train_set, eval_set, read_split(data_dir, "validation"))


def _setup_resume(run_dir: Path, store, run_id: str) -> Resume:
    """The latest intact checkpoint; the record (events, metrics) continues from it, never
    repeats (with no checkpoint the run starts over, and its step-0 notes are written again)."""
    staging = run_dir / "trainer"
    ckpt.clean_staging(staging)
    resume_from, notes = ckpt.latest_intact(run_dir)
    start = ckpt.step_of(resume_from) if resume_from else 0
    # a resumed run keeps the step count it started with (augmented data may count differently)
    recorded = ckpt.max_steps_of(resume_from) if resume_from else None
    if rank() == 0:
        ckpt.trim_events(run_dir / RUN.events, start if resume_from else -1)
        store.trim_metrics(run_id, start)
        for note in notes:
            log_note(run_dir, start, note)
    return Resume(staging, resume_from, start, recorded, notes)


def _setup_model(run_dir: Path, p, tok, model_path: Path, device: str, data: Data, at: Resume):
    """The model with its adapter, the training set with replay and augmentation (supervised
    runs: `data.train_set` is replaced), the soft anchor, and the forgetting budget's watcher."""
    home = Home.of_run(run_dir)
    t = p.train
    start = None  # --from-run: the start run's adapter, kept with this run (retention/delta.py)
    if p.from_run:
        from ..retention.delta import keep_start, start_dir

        earlier = home.run_dir(p.from_run) / RUN.adapter  # other ranks: either copy is the same
        start = keep_start(run_dir, earlier) if rank() == 0 else (start_dir(run_dir) or earlier)
    model = load_for_training(model_path, device, p, start)
    say = (lambda text: log_note(run_dir, at.start, text)) if rank() == 0 else (lambda text: None)
    anchor = None  # pairs: replay and augmentation are for supervised runs
    if t.objective == "sft":
        data.train_set, anchor = batches.assemble(run_dir, p, tok, model, model_path, data.train_rows,
                                                  at.start == 0, say)
    watcher = None
    if data.eval_set and rank() == 0 and t.forget_budget > 0:
        from ..retention.base_answers import memo_for
        from .selection import Watcher

        watcher = Watcher(run_dir, tok, data.val_rows, t.forget_budget, at.start,
                          lost_budget=t.retention_budget, start_adapter=start)
        watcher.baseline(model, memo_for(home.replay, p.model, model_path, model))
        watcher.start_figures(model)
    return model, anchor, watcher


def _training_args(p, steps: int, staging: Path, has_eval: bool, device: str, progress: bool
                   ) -> dict[str, Any]:
    import torch

    from ..models.registry import resolve_dtype

    t, dtype = p.train, resolve_dtype(p.train.dtype, device)
    return dict(
        output_dir=str(staging), max_steps=steps, per_device_train_batch_size=t.micro_batch,
        per_device_eval_batch_size=t.micro_batch, gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr, lr_scheduler_type=t.schedule if t.schedule != "constant" else "constant_with_warmup",
        warmup_steps=int(round(t.warmup_ratio * steps)), weight_decay=t.weight_decay,
        optim=OPTIMIZERS[t.optimizer].hf_name, seed=t.seed, data_seed=t.seed,
        train_sampling_strategy="sequential" if t.order == "curriculum" else "random",
        logging_steps=t.log_every, save_strategy="steps", save_steps=t.save_every,
        save_total_limit=None, eval_strategy="steps" if (t.eval_every and has_eval) else "no",
        eval_steps=t.eval_every or None, report_to=[], use_cpu=device == "cpu",
        bf16=dtype == torch.bfloat16 and device != "cpu", fp16=dtype == torch.float16,
        activation_checkpointing=t.grad_ckpt,
        activation_checkpointing_kwargs={"use_reentrant": False} if t.grad_ckpt else None,
        remove_unused_columns=False, dataloader_num_workers=0, disable_tqdm=not progress,
        prediction_loss_only=True,  # evaluation needs the loss, never the [tokens × vocab] logits
        ddp_find_unused_parameters=False if world_size() > 1 else None)


def _setup_trainer(run_dir: Path, store, run_id: str, p, model, tok, data: Data, anchor, watcher,
                   steps: int, at: Resume, device: str, progress: bool):
    """The Trainer (ours, or TRL's for preference pairs and RL) with the studio's callback."""
    from transformers import Trainer, TrainingArguments

    t = p.train
    preferring, learning = t.objective in ("dpo", "orpo"), t.objective in RL
    collator = (preference.CountingWrapper(None) if preferring else rl.StateTokens() if learning else
                batches.make_collator(tok, t.packing, anchor, t.fact_weight != 1.0))
    args = _training_args(p, steps, at.staging, bool(data.eval_set), device, progress)
    cb = StudioCallback(run_dir, store, run_id, steps, collator, device, t.keep_checkpoints, watcher)
    if preferring:  # TRL's DPO/ORPO trainers on the run's preference pairs
        trainer = preference.make_trainer(t.objective, p, model, args, tok, data.train_rows,
                                          data.val_rows, [cb], collator)
        if t.objective == "dpo" and t.stop_separated:
            per_step = t.micro_batch * t.grad_accum * world_size()
            cb.separate_for = math.ceil(len(trainer.train_dataset) / per_step)
    elif learning:  # TRL's GRPO/RLOO trainers on the run's questions and rewards
        trainer = rl.make_trainer(t.objective, p, model, args, tok, data.train_rows, [cb], collator)
        cb.watch_every = t.eval_every if data.eval_set else 0
    else:
        trainer = trainer_class(Trainer, t.loss, t.loss_chunk, t.offload == "on" and device == "cuda",
                                t.replay_weight if anchor else 0.0, cpu_mixed(p, device),
                                t.fact_weight != 1.0)(
            model=model, args=TrainingArguments(**args), train_dataset=data.train_set,
            eval_dataset=data.eval_set or None, data_collator=collator, callbacks=[cb])
    if not progress:  # keep stdout clean for --json: no printed log dicts
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
    return trainer, cb


def _run_trainer(trainer, p, run_dir: Path, at: Resume) -> None:
    """trainer.train(), with an out-of-memory or a full disk said in words."""
    import torch

    try:
        trainer.train(resume_from_checkpoint=str(at.checkpoint) if at.checkpoint else None)
    except torch.OutOfMemoryError:
        raise RunError(oom_message(p)) from None
    except Exception as e:
        if likely_disk_full(e, run_dir):  # a checkpoint could not be written: the last complete one stays
            shutil.rmtree(at.staging, ignore_errors=True)
            raise RunError(disk_message(run_dir) + " The last complete checkpoint was kept; "
                           "resume the run once there is room.") from None
        raise


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


def oom_message(spec) -> str:
    t = spec.train
    return (f"The GPU ran out of memory (micro_batch {t.micro_batch}, max_len {t.max_len}, "
            f"method {spec.method}). Try, in this order: train.grad_ckpt=true, "
            f"train.micro_batch={max(1, t.micro_batch // 2)} with train.grad_accum="
            f"{t.grad_accum * 2}, method=qlora, or a shorter train.max_len. The Memory step "
            "(python -m studio estimate) shows what fits your GPU.")
