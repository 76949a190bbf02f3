"""A preset run end to end against its bare training step (issue #28): how much of what a user
waits for is training.

1. The studio: `train` as a user runs it (the API the CLI calls) — a preset on the sample FAQ,
   timed from the call to its return: model load, replay and anchor targets, the steps, the
   evaluations and forgetting checks, checkpoints, logging, the adapter's finishing. The run's
   own per-phase clocks (train/phases.py, written to its events) say where the time went.
2. The bare step, in the same process after it: the same model, the same training set and anchor
   (assembled from the run's cache), the same collator, the same Trainer class and loss — only
   `training_step` (forward + backward) and the optimizer's step, for the same number of steps:
   no callbacks, evaluations, checkpoints or logging.
Both count the same real (non-padding) training tokens; the script prints each tokens/s and the
ratio studio / bare (aim ≥ 0.85), and the run's phase shares. The preset runs twice in one home:
the first run on a model pays once-per-model work (the anchor's base-model targets on the replay
text, cached), the second is what every later run costs.

Usage: .venv/bin/python benchmarks/bench_e2e.py [--preset cpu-quickstart] [--steps N] [--set k=v ...]
  on a GPU: --preset gpu-8gb-qlora --model <a model folder> (the run's device is picked as a user's
  is; benchmarks/gpu_session.sh builds one with random weights where no hub can be reached)
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def studio_run(s, preset: str, dataset: str, model: str | None, steps: int | None, sets: list[str]):
    run = s.train_create(preset, dataset, model, overrides=sets, max_steps=steps)
    t0 = time.perf_counter()
    result = s.train_run(run["id"])
    wall = time.perf_counter() - t0
    run_dir = Path(s.run_show(run["id"])["path"])
    phases = [json.loads(x)["phases"] for x in (run_dir / "events.jsonl").read_text().splitlines()
              if '"phases"' in x][-1]
    return run["id"], run_dir, result, wall, phases


def bare_steps(run_dir: Path, model_path: Path, device: str) -> tuple[float, int, int]:
    """The run's training step alone: (seconds, real tokens, optimizer steps)."""
    import torch
    from transformers import Trainer, TrainingArguments

    from studio.models import registry as models
    from studio.data.prepare import read_split
    from studio.optimizers import OPTIMIZERS
    from studio.train import batches
    from studio.train.config import RunConfig, cpu_mixed
    from studio.train.loop import load_for_training
    from studio.train.trainer import trainer_class

    cfg = RunConfig.read(run_dir)
    p, t = cfg.spec, cfg.spec.train
    torch.manual_seed(t.seed)
    tok = models.load_tokenizer(model_path)
    rows = read_split(Path(cfg.dataset.path), "train")
    model = load_for_training(model_path, device, p)
    scratch = Path(tempfile.mkdtemp(prefix="bare-", dir=run_dir.parent))  # the run's caches, not its files
    train_set, anchor = batches.assemble(scratch, p, tok, model, model_path, rows, False, lambda _: None)
    collator = batches.make_collator(tok, t.packing, anchor)
    steps = t.max_steps or max(1, len(train_set) * t.epochs // (t.micro_batch * t.grad_accum))
    dtype = models.resolve_dtype(t.dtype, device)
    args = TrainingArguments(
        output_dir=str(scratch), max_steps=steps, per_device_train_batch_size=t.micro_batch,
        gradient_accumulation_steps=t.grad_accum, learning_rate=t.lr, optim=OPTIMIZERS[t.optimizer].hf_name,
        seed=t.seed, data_seed=t.seed, report_to=[], use_cpu=device == "cpu", save_strategy="no",
        bf16=dtype == torch.bfloat16 and device != "cpu", fp16=dtype == torch.float16,
        activation_checkpointing=t.grad_ckpt,
        activation_checkpointing_kwargs={"use_reentrant": False} if t.grad_ckpt else None,
        remove_unused_columns=False, dataloader_num_workers=0, disable_tqdm=True)
    trainer = trainer_class(Trainer, t.loss, t.loss_chunk, t.offload == "on" and device == "cuda",
                            t.replay_weight if anchor else 0.0, cpu_mixed(p, device))(
        model=model, args=args, train_dataset=train_set, data_collator=collator)
    if t.grad_ckpt:  # as Trainer.train() does before its first step: the same recompute
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    trainer.create_optimizer_and_scheduler(num_training_steps=steps)
    opt, loader = trainer.optimizer, trainer.get_train_dataloader()
    trainer.current_gradient_accumulation_steps = t.grad_accum
    model.train()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    done, micro, t0 = 0, 0, None
    while done < steps:
        for batch in loader:
            if t0 is None:  # the first step pays one-time costs in both: start the clock after it
                collator.tokens = 0
            batch = trainer._prepare_inputs(batch)
            trainer.training_step(model, batch, num_items_in_batch=(batch["labels"] != batches.IGNORE).sum())
            micro += 1
            if micro % t.grad_accum == 0:
                opt.step()
                opt.zero_grad(set_to_none=True)
                done += 1
                if t0 is None:
                    sync()
                    t0 = time.perf_counter()
            if done >= steps:
                break
    sync()
    secs = time.perf_counter() - t0
    shutil.rmtree(scratch, ignore_errors=True)
    return secs, collator.tokens, steps - 1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="cpu-quickstart")
    ap.add_argument("--model", default=None)
    ap.add_argument("--steps", type=int, default=None, help="the preset's max_steps unless given")
    ap.add_argument("--set", action="append", default=[], help="key=value, as `train --set`")
    ap.add_argument("--out", default=None, help="write the numbers as JSON here too")
    a = ap.parse_args()

    from studio.models import registry as models
    from studio.api import Studio

    home = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    if a.model is None:  # the embedded model, converted once into the tests' cache
        src = models.prepare_embedded(ROOT / ".venv" / ".test-cache")
        shutil.copytree(src, home / "models" / src.name, copy_function=os.link)
    s = Studio(home)
    s.data_prepare([str(ROOT / "assets/sample/product_faq.jsonl")], "faq", val_fraction=0.1,
                   **({"model": a.model} if a.model else {}))
    ds = "faq"
    first = studio_run(s, a.preset, ds, a.model, a.steps, a.set)
    second = studio_run(s, a.preset, ds, a.model, a.steps, a.set)
    device = s.runs.cache.device()
    model_path = s.model_path(s.run_show(first[0])["model"])
    bare_s, tokens_after_first, bare_n = bare_steps(second[1], model_path, device)
    steps = second[2].get("steps") or bare_n + 1
    tokens = tokens_after_first * steps / max(1, bare_n)  # the whole run's training tokens
    bare_tps = tokens_after_first / bare_s
    out = {"preset": a.preset, "device": device, "steps": steps, "training_tokens": round(tokens),
           "bare_step_tokens_per_s": round(bare_tps, 1)}
    print(f"{a.preset} on {device}, {steps} steps, ≈{tokens:.0f} real training tokens")
    print(f"  bare step:              {bare_s:7.1f} s for {bare_n} steps = {bare_tps:7.1f} tokens/s")
    for label, (_, _, _, wall, ph) in (("first run", first), ("second run", second)):
        tps = tokens / wall
        out[label.replace(" ", "_")] = {"wall_s": round(wall, 1), "tokens_per_s": round(tps, 1),
                                        "ratio": round(tps / bare_tps, 3), "phases": ph}
        print(f"  studio, {label:11s}: {wall:7.1f} s end to end = {tps:7.1f} tokens/s, "
              f"ratio studio / bare {tps / bare_tps:.2f} (aim ≥ 0.85)")
        print(f"    the run's own clocks: {ph['line']}")
        print("    seconds: " + ", ".join(f"{k} {v}" for k, v in ph["seconds"].items())
              + f"; outside the trainer's clocks {max(0.0, wall - ph['wall_s']):.1f}")
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1))

if __name__ == "__main__":
    main()
