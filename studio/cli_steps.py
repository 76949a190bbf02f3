"""CLI verbs of the workflow steps (data, estimate, train, runs, compare, report, export).

Each handler parses flags into one Studio call; help for run settings comes from the dataclass
fields (presets.py, recipes.py, memory.py), never retyped here.
"""
from __future__ import annotations

import argparse

from .cli import studio
from .errors import ConfigError


def parse_pairs(items: list[str] | None, flag: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"{flag} '{item}' should look like ours=theirs, e.g. {flag} prompt=question.")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def add_step_verbs(sub, verb) -> None:
    from .data.recipes import RECIPES, RecipeParams
    from .presets import field_help

    rhelp = field_help(RecipeParams)
    data = sub.add_parser("data", help="prepare and inspect training data",
                          description="prepare and inspect training data")
    dsub = data.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = verb(dsub, "prepare", "files → a checked, split dataset version with token statistics",
             data_prepare)
    p.add_argument("files", nargs="+", metavar="FILE", help="jsonl/json/csv/tsv/parquet, "
                   "txt/md/pdf/docx, .py, or .zip of those")
    p.add_argument("--name", required=True, help="dataset name (a new version if it exists)")
    p.add_argument("--recipe", default="auto", choices=["auto", *RECIPES],
                   help="auto: structured files use their detected format, documents use "
                        "paragraphs, code uses code-functions")
    p.add_argument("--model", default="smollm2-135m-instruct", help="model whose tokenizer and "
                   "chat template are used")
    p.add_argument("--max-tokens", type=int, default=256, help=rhelp["max_tokens"])
    p.add_argument("--max-len", type=int, default=None, help="max training length for the "
                   "statistics (default: --max-tokens)")
    p.add_argument("--overlap", type=int, default=32, help=rhelp["overlap"])
    p.add_argument("--val-fraction", type=float, default=0.1, help="share kept for validation")
    p.add_argument("--seed", type=int, default=42, help="seed of the train/validation split")
    p.add_argument("--map", action="append", metavar="OURS=COLUMN", help="manual column mapping "
                   "(prompt, completion, system or text), e.g. --map prompt=question")
    p.add_argument("--generator", default=None, help="model that writes qa-pairs / summaries "
                   "(default: --model)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", dest="params",
                   help="other recipe parameters: " + ", ".join(
                       k for k in rhelp if k not in ("max_tokens", "overlap")))
    add_train_verbs(sub, verb)
    add_compare_verbs(sub, verb)
    add_export_verbs(sub, verb)
    add_estimate_verb(sub, verb)
    verb(dsub, "list", "prepared datasets, newest version first", lambda a: studio(a).data_list())
    p = verb(dsub, "show", "one dataset: sources, recipe, stats and a few examples",
             lambda a: studio(a).data_show(a.name))
    p.add_argument("name", help="NAME or NAME@vN")


def add_train_verbs(sub, verb) -> None:
    p = sub.add_parser("train", help="train a LoRA/QLoRA adapter (foreground) or resume a run",
                       description="Train in the foreground with progress; the run folder and its "
                                   "store row exist as soon as it starts. Ctrl-C stops after a "
                                   "checkpoint; --resume continues.")
    p.set_defaults(func=train)
    p.add_argument("--json", action="store_true", help="print the final run as JSON")
    p.add_argument("--home", default=None, help="STUDIO_HOME folder")
    p.add_argument("--preset", help="preset name (python -m studio presets list)")
    p.add_argument("--dataset", help="dataset NAME or NAME@vN")
    p.add_argument("--model", default=None, help="override the preset's model")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a preset value, e.g. --set train.lr=2e-4 --set lora.rank=8")
    p.add_argument("--max-steps", type=int, default=None, help="optimizer steps (overrides the preset)")
    p.add_argument("--resume", metavar="RUN_ID", help="continue a stopped/failed/queued run from "
                   "its last checkpoint")
    p.add_argument("--detach", action="store_true", help="start in a background process and "
                   "return at once (watch it with `runs show`)")
    p.add_argument("--gpus", type=int, default=None, help="create the run, write an accelerate "
                   "config for this many GPUs (DDP) and print the launch command instead of training")
    p.add_argument("--machines", type=int, default=1, help="with --gpus: machines in the job")
    runs = sub.add_parser("runs", help="training runs: list, show, stop", description="training runs")
    rsub = runs.add_subparsers(dest="action", metavar="ACTION", required=True)
    verb(rsub, "list", "all runs, newest first", lambda a: studio(a).runs_list())
    q = verb(rsub, "show", "one run with metrics and artifacts", lambda a: studio(a).run_show(a.run_id))
    q.add_argument("run_id")
    q = verb(rsub, "stop", "stop a running run (it saves a checkpoint first)",
             lambda a: studio(a).run_stop(a.run_id))
    q.add_argument("run_id")
    q = verb(rsub, "delete", "delete a run and its files", lambda a: studio(a).run_delete(a.run_id))
    q.add_argument("run_id")


def add_compare_verbs(sub, verb) -> None:
    p = verb(sub, "compare", "one prompt answered by the base and the tuned model, side by side",
             lambda a: studio(a).compare(a.run, a.prompt, a.system, None, a.max_new_tokens,
                                         a.temperature, a.seed, a.engine, a.model))
    p.add_argument("--run", required=True, metavar="RUN_ID")
    p.add_argument("--prompt", required=True, help="the user message")
    p.add_argument("--system", default=None, help="optional system prompt")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--engine", choices=["hf", "llama.cpp"], default="hf")
    p.add_argument("--model", default=None, help="base model (default: the run's)")
    p = verb(sub, "report", "did the model learn? base vs tuned on held-out data, with flags",
             lambda a: studio(a).report(a.run, refresh=a.refresh))
    p.add_argument("--run", required=True, metavar="RUN_ID")
    p.add_argument("--refresh", action="store_true", help="compute again instead of reading the "
                   "stored report")


def add_export_verbs(sub, verb) -> None:
    from .export.exporter import FORMATS, GGUF_QUANTS

    p = verb(sub, "export", "write the tuned (or any) model as adapter, merged, GGUF, LoRA GGUF "
             "or an Ollama folder, optionally checking parity with llama.cpp",
             lambda a: studio(a).export(a.format, a.run, a.model, a.quant, a.out, a.verify))
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", metavar="RUN_ID", help="export this run's tuned model")
    src.add_argument("--model", help="export a model without a run (e.g. the embedded base)")
    p.add_argument("--format", required=True, choices=list(FORMATS),
                   help="; ".join(f"{k}: {v}" for k, v in FORMATS.items()))
    p.add_argument("--quant", default=None, metavar="|".join(GGUF_QUANTS),
                   help="GGUF type (default q8_0; f32/f16 for lora-gguf)")
    p.add_argument("--out", default=None, help="file path for gguf/lora-gguf, folder for "
                   "adapter/merged/ollama (default: under $STUDIO_HOME/exports/)")
    p.add_argument("--verify", action="store_true", help="check the GGUF answers like the tuned "
                   "model (needs llama-cpp-python)")


def add_estimate_verb(sub, verb) -> None:
    p = verb(sub, "estimate", "GPU memory a run needs, with a breakdown, a fit verdict and advice "
             "(instant, no download)", estimate)
    p.add_argument("--model", required=True, help="catalogue name (presets/catalog/models.yaml), "
                   "config.json, model folder or registry model")
    p.add_argument("--method", choices=["full", "lora", "qlora"], default="lora")
    p.add_argument("--bits", type=int, choices=[16, 8, 4], default=None)
    p.add_argument("--quant-type", choices=["nf4", "fp4"], default=None)
    p.add_argument("--double-quant", action="store_true", default=None)
    p.add_argument("--rank", type=int, default=None)
    p.add_argument("--targets", default=None, help="all-linear or q,k,v,o,gate,up,down")
    p.add_argument("--seq-len", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--grad-ckpt", dest="grad_ckpt", action="store_true", default=None)
    p.add_argument("--no-grad-ckpt", dest="grad_ckpt", action="store_false")
    p.add_argument("--optimizer", choices=["adamw", "adamw-8bit", "paged-adamw-8bit", "sgd"], default=None)
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None)
    p.add_argument("--attention", choices=["sdpa", "flash", "eager"], default=None)
    p.add_argument("--loop", choices=["trainer", "plain"], default=None, help="trainer: as "
                   "Finetune Studio trains (autocast, logits dropped before backward); plain: a "
                   "PyTorch loop without autocast that keeps the output")
    p.add_argument("--device", choices=["cuda", "cpu"], default=None, help="estimate for a GPU "
                   "(default) or the CPU (fp32, no CUDA context)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--gpu", default=None, help="GPU name from presets/catalog/gpus.yaml, or 'local'")
    g.add_argument("--vram-gb", type=float, default=None)
    p.add_argument("--measure", action="store_true", help="also run a few real steps here and "
                   "record estimate vs measurement")


def estimate(a: argparse.Namespace):
    bits = a.bits if a.bits is not None else (4 if a.method == "qlora" else 16)
    out = studio(a).estimate(a.model, a.gpu, a.vram_gb, a.measure, method=a.method, bits=bits,
                             quant_type=a.quant_type, double_quant=a.double_quant, rank=a.rank,
                             targets=a.targets, seq_len=a.seq_len, batch=a.batch,
                             grad_ckpt=a.grad_ckpt, optimizer=a.optimizer, dtype=a.dtype,
                             attention=a.attention, loop=a.loop, device=a.device)
    if a.json:
        return out
    lines = [f"{out['model']}: {out['total_gb']:.2f} GB at peak ({out['total_params']:,} params, "
             f"{out['trainable_params']:,} trainable)"]
    lines += [f"  {k:20s} {v:8.3f} GB  {out['why'][k]}" for k, v in out["breakdown_gb"].items()]
    if out.get("gpu"):
        verdict = "fits" if out["fits"] else "does NOT fit"
        lines.append(f"{out['gpu']['name']} ({out['gpu']['usable_gb']} GB usable): {verdict}. "
                     + " ".join(out["advice"]))
        lines.append(f"largest micro-batch: {out['max_micro_batch']}, longest sequence: "
                     f"{out['max_seq_len']}; preset: {out['preset']}")
    lines += [f"warning: {w}" for w in out["warnings"]]
    if out.get("measured"):
        m = out["measured"]
        lines.append(f"measured on {m['device']}: {m['measured_gb']} GB vs estimate "
                     f"{m['estimate_gb']} GB ({m['error_pct']:+}%)")
    return "\n".join(lines)


def train(a: argparse.Namespace):
    import sys

    s = studio(a)
    if a.resume:
        if a.preset or a.dataset:
            raise ConfigError("--resume RUN_ID continues a run with its saved config; leave out "
                              "--preset/--dataset.")
        run_id = a.resume
    else:
        if not a.preset or not a.dataset:
            raise ConfigError("train needs --preset NAME and --dataset NAME (or --resume RUN_ID). "
                              "See python -m studio presets list and data list.")
        run = s.train_create(a.preset, a.dataset, a.model, a.overrides, a.max_steps)
        run_id = run["id"]
        for note in run["notes"]:
            print(f"note: {note}", file=sys.stderr)
        print(f"run {run_id} created in {s.home.runs / run_id}", file=sys.stderr, flush=True)
    if a.gpus:
        from .train.runner import accelerate_config

        path, cmd = accelerate_config(s.home.runs / run_id, a.gpus, a.machines)
        out = {"id": run_id, "accelerate_config": str(path), "command": cmd}
        return out if a.json else (f"wrote {path}\nrun on each machine:\n  {cmd}"
                                   + ("\n(set main_process_ip and machine_rank per machine)"
                                      if a.machines > 1 else ""))
    if a.detach:
        return s.train_spawn(run_id)
    import os

    rank0 = int(os.environ.get("RANK", "0")) == 0
    try:
        result = s.train_run(run_id, progress=not a.json and rank0)
        if not rank0:
            return None  # under accelerate/torchrun only rank 0 reports
    except KeyboardInterrupt:
        print(f"stopped; resume with: python -m studio train --resume {run_id}", file=sys.stderr)
        return s.run_show(run_id) if a.json else None, 130
    return (result, 0 if result["status"] == "completed" else 1)


def data_prepare(a: argparse.Namespace):
    from .presets import parse_scalar

    extra = {k: parse_scalar(v) for k, v in parse_pairs(a.params, "--set").items()}
    s = studio(a)
    summary = s.data_prepare(a.files, a.name, recipe=a.recipe, model=a.model,
                             max_tokens=a.max_tokens, max_len=a.max_len, overlap=a.overlap,
                             val_fraction=a.val_fraction, seed=a.seed,
                             mapping=parse_pairs(a.map, "--map") or None,
                             generator_model=a.generator, **extra)
    if a.json:
        return summary
    t = summary["tokens"]
    lines = [f"dataset {summary['name']} v{summary['version']}: {summary['records']} examples "
             f"(train {summary['splits']['train']}, validation {summary['splits']['validation']})",
             f"tokens p50 {t['p50']}, p95 {t['p95']}, max {t['max']}; {summary['truncated']} longer "
             f"than {summary['max_len']} (truncated), {summary['dropped_too_long']} dropped",
             f"duplicates removed: {summary['duplicates_removed']}, empty removed: "
             f"{summary['empty_removed']}", f"saved in {summary['path']}"]
    lines += [f"  {e['file']}{':' + str(e['line']) if e['line'] else ''}: {e['reason']}"
              for e in summary["errors"][:20]]
    if len(summary["errors"]) > 20:
        lines.append(f"  … and {len(summary['errors']) - 20} more problems (see --json)")
    return "\n".join(lines)
