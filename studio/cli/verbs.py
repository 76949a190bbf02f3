"""The CLI's verbs as a table: each record names its words, help, flags and one facade call.

Owns the verb records, the table (VERBS, GROUPS) and the handlers that parse flags into one
Studio call and return what to print. The longer flag lists (made from the run spec's field
metadata where they are run settings) are flags.py's.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import ConfigError
from .flags import (Flag, compare_flags, data_prepare_flags, estimate_flags, export_flags, flag,
                    help_of, train_flags)

GROUPS = {"models": "list, inspect and prepare models",
          "presets": "training presets shipped in presets/",
          "data": "prepare and inspect training data",
          "runs": "training runs: list, show, stop, delete",
          "rewards": "RL rewards (grpo, rloo): list them, preview them on a dataset",
          "evals": "stored benchmark evaluations (made by `eval`): list, delete"}


@dataclass(frozen=True)
class Verb:
    words: tuple[str, ...]
    help: str
    run: Callable[[Any, argparse.Namespace], Any]
    flags: Callable[[], list[Flag]] = list
    required_groups: tuple[str, ...] = ()
    description: str | None = None

    def add_flags(self, p: argparse.ArgumentParser) -> None:
        groups: dict[str, Any] = {}
        for f in self.flags():
            target = p
            if f.group:
                if f.group not in groups:
                    groups[f.group] = p.add_mutually_exclusive_group(
                        required=f.group in self.required_groups)
                target = groups[f.group]
            target.add_argument(*f.names, **f.kw)


def open_studio(args: argparse.Namespace):
    from ..api import Studio

    return Studio(args.home)


def print_progress(args: argparse.Namespace):
    return None if args.json else (lambda msg: print(msg, file=sys.stderr, flush=True))


def export_progress(args: argparse.Namespace):
    """The export's stages on stderr ("parity: answer 3 of 8 compared"), unless --json."""
    return None if args.json else (
        lambda frac, msg: print(f"{frac:4.0%}  {msg}", file=sys.stderr, flush=True))


def parse_pairs(items: list[str] | None, name: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"{name} '{item}' should look like ours=theirs, e.g. {name} prompt=question.")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


# ---- handlers that do more than one call ------------------------------------------------------
def estimate(s, a: argparse.Namespace):
    from .render import estimate_text

    setting = {k: getattr(a, k) for k in s.estimate_fields()}
    out = s.estimate(a.model, a.gpu, a.vram_gb, a.measure, **setting)
    return out if a.json else estimate_text(out)


def data_prepare(s, a: argparse.Namespace):
    from .render import dataset_text

    summary = s.data_prepare(a.files, a.name, recipe=a.recipe, model=a.model,
                             max_tokens=a.max_tokens, max_len=a.max_len, overlap=a.overlap,
                             val_fraction=a.val_fraction, seed=a.seed,
                             mapping=parse_pairs(a.map, "--map") or None,
                             generator_model=a.generator, generator_url=a.generator_url,
                             heldout=a.heldout, settings=a.params)
    return summary if a.json else dataset_text(summary)


def data_check(s, a: argparse.Namespace):
    """`data check NAME`: the check, or with --drop a new version without the flagged rows."""
    from .render import check_text

    if a.drop:
        out = s.data_drop(a.name, a.drop, a.heldout, a.model, progress=export_progress(a))
        return out if a.json else f"{out['name']}: {out['dropped']} rows dropped from {out['from']} " \
                                  f"({out['records']} rows left; {out['from']} is unchanged)"
    out = s.data_check(a.name, a.heldout, a.model, not a.quick, progress=export_progress(a))
    return s.check_contract(out) if a.json else check_text(out)


def train(s, a: argparse.Namespace):
    if a.resume:
        if a.preset or a.dataset:
            raise ConfigError("--resume RUN_ID continues a run with its saved config; leave out "
                              "--preset/--dataset.")
        run_id = a.resume
    else:
        if not a.preset or not a.dataset:
            raise ConfigError("train needs --preset NAME and --dataset NAME (or --resume RUN_ID). "
                              "See python -m studio presets list and data list.")
        run = s.train_create(a.preset, a.dataset, a.model, a.overrides, a.max_steps,
                             objective=a.method, from_run=a.from_run, rewards=a.reward)
        run_id = run["id"]
        for note in run["notes"]:
            print(f"note: {note}", file=sys.stderr)
        print(f"run {run_id} created in {s.home.runs / run_id}", file=sys.stderr, flush=True)
    if a.gpus:
        path, cmd = s.train_launch_config(run_id, a.gpus, a.machines)
        out = {"id": run_id, "accelerate_config": str(path), "command": cmd}
        return out if a.json else (f"wrote {path}\nrun on each machine:\n  {cmd}"
                                   + ("\n(set main_process_ip and machine_rank per machine)"
                                      if a.machines > 1 else ""))
    if a.detach:
        return s.train_spawn(run_id)
    rank0 = int(os.environ.get("RANK", "0")) == 0
    try:
        result = s.train_run(run_id, progress=not a.json and rank0)
        if not rank0:
            return None  # under accelerate/torchrun only rank 0 reports
    except KeyboardInterrupt:
        print(f"stopped; resume with: python -m studio train --resume {run_id}", file=sys.stderr)
        return s.run_show(run_id) if a.json else None, 130
    return (result, 0 if result["status"] == "completed" else 1)


def rewards_preview(s, a: argparse.Namespace):
    out = s.rewards_preview(a.dataset, a.preset, a.model, a.from_run, a.reward, a.groups)
    if a.json:
        return out
    groups = "".join(f"\n  {', '.join(f'{v:.2f}' for v in e['rewards'])}  ← {' '.join(e['prompt'].split())[:70]}"
                     for e in out.get("examples", []))
    return (f"rewards: {', '.join(out['rewards'])}\n{out['groups']} prompts, mean reward "
            f"{out['mean']:.2f}, {out['zero_spread']:.0%} with no spread{groups}\nverdict: {out['verdict']}")


def _one(name: str) -> list[Flag]:
    return [flag(name)]


VERBS: list[Verb] = [
    Verb(("models", "list"), "models you can use: embedded, local, and catalogue names that download from the hub", lambda s, a: s.models_list()),
    Verb(("models", "info"), "architecture, size and chat template of a model (no torch needed)",
         lambda s, a: s.model_info(a.model),
         lambda: [flag("model", help="registry name, HF folder, .gguf file")]),
    Verb(("models", "prepare"), "convert the embedded model / download a hub model once",
         lambda s, a: {"path": str(s.model_path(a.model, progress=print_progress(a), token=a.hf_token))},
         lambda: [flag("model", nargs="?", default="smollm2-135m-instruct"),
                  flag("--hf-token", default=None, help="token for gated hub models (or HF_TOKEN)")]),
    Verb(("presets", "list"), "all presets with who they are for", lambda s, a: s.presets_list()),
    Verb(("presets", "show"), "every setting of one preset", lambda s, a: s.preset_show(a.name),
         lambda: _one("name")),
    Verb(("data", "prepare"), "files → a checked, split dataset version with token statistics",
         data_prepare, data_prepare_flags),
    Verb(("data", "pairs"), "factuality pairs for DPO: the model answers your Q/A data closed book; "
         "where it misses the fact, your answer is chosen over its own",
         lambda s, a: s.data_pairs(a.name, a.out, from_run=a.from_run, model=a.model,
                                   generator_model=a.generator, generator_url=a.generator_url),
         lambda: [flag("name", metavar="NAME", help="a Q/A dataset (NAME or NAME@vN)"),
                  flag("--out", default=None, help="the new dataset's name (default NAME-pairs)"),
                  flag("--model", default=None, help="the model whose answers are rejected "
                       "(default: the dataset's)"),
                  flag("--generator-model", "--generator", dest="generator", default=None, metavar="NAME",
                       help="with --generator-url: the model's name on that server"),
                  flag("--generator-url", default=None, metavar="URL",
                       help="an OpenAI-compatible server that answers instead of llama.cpp"),
                  flag("--from-run", default=None, metavar="ID",
                       help="the run's tuned model answers (its own wrong answers rejected: the "
                            "pairs for DPO after that run, `train --from-run ID`)")]),
    Verb(("eval",), "benchmarks before and after: lm-evaluation-harness tasks on a run's base and "
         "tuned model (or a model alone), with the harness's own task and metric names",
         lambda s, a: s.evaluate([t for t in a.tasks.split(",")], a.run, a.model, a.limit, a.gguf,
                                 refresh=a.again),
         lambda: [flag("--run", default=None, metavar="RUN_ID", help="the run: its base and tuned model"),
                  flag("--model", default=None, metavar="REF", help="or a model alone (only `base`)"),
                  flag("--tasks", default="studio_general", metavar="T1,T2",
                       help="harness task names and/or folders of task YAML files, comma separated "
                            "(default: studio_general, 197 questions shipped with the studio)"),
                  flag("--limit", type=int, default=None, help="questions per task (default: all)"),
                  flag("--gguf", action="store_true", help="also score the run's exported GGUF "
                       "through llama.cpp (what quantization costs)"),
                  flag("--again", action="store_true", help="compute again even if stored")]),
    Verb(("evals", "list"), "stored evaluations, newest first (a run's only with --run)",
         lambda s, a: s.evaluations(a.run),
         lambda: [flag("--run", default=None, metavar="RUN_ID", help="only this run's")]),
    Verb(("evals", "delete"), "delete a stored evaluation (an id from `evals list`)",
         lambda s, a: s.evaluation_delete(a.eval_id), lambda: [flag("eval_id", type=int)]),
    Verb(("data", "list"), "prepared datasets, newest version first", lambda s, a: s.data_list()),
    Verb(("data", "show"), "one dataset: sources, recipe, stats and a few examples",
         lambda s, a: s.data_show(a.name), lambda: [flag("name", help="NAME or NAME@vN")]),
    Verb(("data", "triage"), "known or new: the base model answers the training questions, so "
         "you see how much the dataset teaches it (Q/A data; ~1 min on CPU)",
         lambda s, a: s.data_triage(a.name, a.model),
         lambda: [flag("name", help="NAME or NAME@vN"),
                  flag("--model", default=None, help="base model (default: the dataset's)")]),
    Verb(("data", "check"), "duplicates, held-out leaks and suspect rows (the base model's IFD, "
         "loss outliers, swapped answers, questions that need their chunk), each with its line "
         "and why; --drop makes a new version without them (~1 min per 1,000 rows on 2 cores)",
         data_check,
         lambda: [flag("name", help="NAME or NAME@vN"),
                  flag("--heldout", default=None, metavar="FILE", help="an evaluation file whose "
                       "questions must not be in training (default: the dataset's held-out questions)"),
                  flag("--drop", default=None, metavar="KINDS", help="make the next version without "
                       "the rows flagged as these, comma separated: suspects, duplicates, leaks; "
                       "prints its name (NAME@vK); rows you kept stay"),
                  flag("--model", default=None, help="base model that scores the rows (default: the dataset's)"),
                  flag("--quick", action="store_true", help="leave out the base model's signals "
                       "(duplicates, leaks and the model-free suspects only; seconds)")]),
    Verb(("estimate",), "GPU memory a run needs, with a breakdown, a fit verdict and advice "
         "(instant, no download)", estimate, estimate_flags),
    Verb(("train",), "train a LoRA/QLoRA adapter (foreground) or resume a run", train, train_flags,
         description="Train in the foreground with progress; the run folder and its store row "
                     "exist as soon as it starts. Ctrl-C stops after a checkpoint; --resume "
                     "continues."),
    Verb(("rewards", "list"), "the rewards RL runs (grpo, rloo) can use, with what each checks",
         lambda s, a: s.rewards_list() if a.json else "\n".join(
             f"{r['name']:<11} {r['role']:<8} {r['why']}" for r in s.rewards_list())),
    Verb(("rewards", "preview"), "before an RL run: the rewards chosen from a dataset, sampled answers "
         "from the starting model rewarded per prompt, the share with no spread, and a verdict",
         rewards_preview, lambda: [
             flag("--dataset", required=True, help="dataset NAME or NAME@vN"),
             flag("--from-run", default=None, metavar="RUN_ID", help="start from this run's adapter "
                  "(the usual recipe: SFT first, then RL)"),
             flag("--reward", default=None, metavar="A,B", help=help_of("rewards")),
             flag("--preset", default="cpu-quickstart-grpo", help="the preset whose generations, "
                  "answer length and temperature are sampled with"),
             flag("--model", default=None, help="override the preset's model"),
             flag("--groups", type=int, default=8, help="prompts sampled")]),
    Verb(("runs", "list"), "all runs, newest first", lambda s, a: s.runs_list()),
    Verb(("runs", "show"), "one run with metrics and artifacts", lambda s, a: s.run_show(a.run_id),
         lambda: _one("run_id")),
    Verb(("runs", "stop"), "stop a running run (it saves a checkpoint first)",
         lambda s, a: s.run_stop(a.run_id), lambda: _one("run_id")),
    Verb(("runs", "delete"), "delete a run and its files", lambda s, a: s.run_delete(a.run_id),
         lambda: _one("run_id")),
    Verb(("compare",), "one prompt answered by the base and the tuned model, side by side",
         lambda s, a: s.compare(a.run, a.prompt, a.system, None, a.max_new_tokens, a.temperature,
                                a.seed, a.engine, a.model, a.strength), compare_flags),
    Verb(("report",), "did the model learn? base vs tuned on held-out data, with flags",
         lambda s, a: s.report(a.run, refresh=a.refresh),
         lambda: [flag("--run", required=True, metavar="RUN_ID"),
                  flag("--refresh", action="store_true", help="compute again instead of reading "
                       "the stored report")]),
    Verb(("strength",), "keep an adapter strength for a run: 1 = as trained, 0 = the base model "
         "(for a --from-run run: the run it started from); Compare, the report and every export "
         "then use it (the report suggests one)",
         lambda s, a: s.set_strength(a.run, a.value),
         lambda: [flag("--run", required=True, metavar="RUN_ID"),
                  flag("--value", required=True, type=float, help="strength from 0 to 1 "
                       "(up to 2 exaggerates the change)")]),
    Verb(("export",), "write the tuned (or any) model as adapter, merged, GGUF, LoRA GGUF or an "
         "Ollama folder; a GGUF is checked against the tuned model in llama.cpp (parity) unless "
         "--no-parity",
         lambda s, a: s.export(a.format, a.run, a.model, a.quant, a.out, a.parity,
                               progress=export_progress(a), force=a.force),
         export_flags, required_groups=("source",)),
]
