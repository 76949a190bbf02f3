"""The CLI's flags: the Flag record and the flag lists of the verbs that take many.

Flags for run settings are made from the run spec's field metadata (help, type and choices
written once there, reached through the facade); the rest are the CLI's own. Which verb takes
which list is the verb table's (verbs.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TYPES = {"int": int, "float": float, "str": str}


@dataclass(frozen=True)
class Flag:
    names: tuple[str, ...]
    kw: dict[str, Any] = field(default_factory=dict)
    group: str | None = None  # flags of one group exclude each other


def flag(*names: str, group: str | None = None, **kw: Any) -> Flag:
    if kw.get("help"):  # argparse reads "%" as a format code: help texts say "~30%", "10%"
        kw["help"] = kw["help"].replace("%", "%%")
    return Flag(names, kw, group)


# ---- flags made from the run spec ------------------------------------------------------------
def estimate_flags() -> list[Flag]:
    from ..api import Studio

    out = [flag("--model", required=True, help="catalogue name (presets/catalog/models.yaml), "
                "config.json, model folder or registry model")]
    for name, f in Studio.estimate_fields().items():
        meta, opt = f.metadata, "--" + name.replace("_", "-")
        if f.type == "bool":
            out.append(flag(opt, dest=name, action="store_true", default=None, help=meta["help"]))
            out.append(flag(f"--no-{opt[2:]}", dest=name, action="store_false",
                            help=f"turn {opt} off"))
            continue
        choices = meta.get("flag_choices") or meta.get("choices")
        out.append(flag(opt, dest=name, type=TYPES[f.type], default=None,
                        choices=list(choices) if choices else None, help=meta["help"]))
    return out + [
        flag("--gpu", group="gpu", default=None, help="GPU name from presets/catalog/gpus.yaml, "
             "or 'local'"),
        flag("--vram-gb", group="gpu", type=float, default=None, help="GPU memory in GB"),
        flag("--measure", action="store_true", help="also run a few real steps here and record "
             "estimate vs measurement")]


def data_prepare_flags() -> list[Flag]:
    from ..api import Studio

    data = Studio.choices()["data"]
    rhelp = data["params_help"]
    return [
        flag("files", nargs="+", metavar="FILE", help="jsonl/json/csv/tsv/parquet, txt/md/pdf/"
             "docx, .py, or .zip of those"),
        flag("--name", required=True, help="dataset name (a new version if it exists)"),
        flag("--recipe", default="auto", choices=["auto", *data["recipes"]],
             help="auto: structured files use their detected format, documents use paragraphs, "
                  "code uses code-functions"),
        flag("--model", default="smollm2-135m-instruct", help="model whose tokenizer and chat "
             "template are used"),
        flag("--max-tokens", type=int, default=256, help=rhelp["max_tokens"]),
        flag("--max-len", type=int, default=None, help="max training length for the statistics "
             "(default: --max-tokens)"),
        flag("--overlap", type=int, default=32, help=rhelp["overlap"]),
        flag("--val-fraction", type=float, default=0.1, help="share kept for validation"),
        flag("--seed", type=int, default=42, help="seed of the train/validation split"),
        flag("--heldout", default=None, metavar="FILE", help="questions the model never trains on, "
             "with their answers (and optionally `expect`, the key fact a right answer states): the "
             "report checks learning on them — ask the same facts in other words"),
        flag("--map", action="append", metavar="OURS=COLUMN", help="manual column mapping "
             "(prompt, completion, system or text), e.g. --map prompt=question"),
        flag("--generator-model", "--generator", dest="generator", default=None, metavar="NAME",
             help="model that writes qa-pairs / summaries: a local model — a catalogue name "
                  "(downloaded once), a folder or a .gguf (default: --model, run with llama.cpp "
                  "when it has a GGUF) — or with --generator-url the model's name on that server"),
        flag("--generator-url", default=None, metavar="URL", help="an OpenAI-compatible server that writes the "
             "pairs instead (Ollama http://127.0.0.1:11434/v1, LM Studio http://127.0.0.1:1234/v1, "
             "llama.cpp's server, vLLM); checked before any work"),
        flag("--set", action="append", metavar="KEY=VALUE", dest="params",
             help="other recipe parameters: " + ", ".join(
                 k for k in rhelp if k not in ("max_tokens", "overlap")))]


def export_flags() -> list[Flag]:
    from ..api import Studio

    ex = Studio.choices()["export"]
    return [
        flag("--run", group="source", metavar="RUN_ID", help="export this run's tuned model"),
        flag("--model", group="source", help="export a model without a run (e.g. the embedded base)"),
        flag("--format", required=True, choices=list(ex["formats"]),
             help="; ".join(f"{k}: {v}" for k, v in ex["formats"].items())),
        flag("--quant", default=None, metavar="|".join(ex["gguf_quants"]),
             help="GGUF type (default q8_0; f32/f16 for lora-gguf)"),
        flag("--out", default=None, help="file path for gguf/lora-gguf, folder for "
             "adapter/merged/ollama (default: under $STUDIO_HOME/exports/)"),
        flag("--verify", group="parity", dest="parity", action="store_true", default=None,
             help="check that the GGUF answers like the tuned model, and fail if llama-cpp-python "
                  "is missing (default: checked where llama-cpp-python is installed)"),
        flag("--no-parity", group="parity", dest="parity", action="store_false", default=None,
             help="skip the parity check (a minute or more on a CPU); the result says how to "
                  "run it later"),
        flag("--force", action="store_true", help="replace an existing file or earlier export "
             "at --out")]


def help_of(leaf: str) -> str:
    """A run-spec setting's help text, written once on its field."""
    from ..api import Studio

    return next(v for k, v in Studio.preset_help().items() if k.split(".")[-1] == leaf)


def train_flags() -> list[Flag]:
    return [
        flag("--preset", help="preset name (python -m studio presets list)"),
        flag("--dataset", help="dataset NAME or NAME@vN"),
        flag("--model", default=None, help="override the preset's model"),
        flag("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
             help="override a preset value, e.g. --set train.lr=2e-4 --set lora.rank=8"),
        flag("--max-steps", type=int, default=None, help="optimizer steps (overrides the preset)"),
        flag("--method", choices=["sft", "dpo", "orpo", "grpo", "rloo"], default=None,
             help="what the run learns from (overrides the preset's train.objective): " + help_of("objective")),
        flag("--from-run", default=None, metavar="RUN_ID", help=help_of("from_run")),
        flag("--reward", default=None, metavar="A,B", help=help_of("rewards")),
        flag("--resume", metavar="RUN_ID", help="continue a stopped/failed/queued run from its "
             "last checkpoint"),
        flag("--detach", action="store_true", help="start in a background process and return at "
             "once (watch it with `runs show`)"),
        flag("--gpus", type=int, default=None, help="create the run, write an accelerate config "
             "for this many GPUs (DDP) and print the launch command instead of training"),
        flag("--machines", type=int, default=1, help="with --gpus: machines in the job")]


def compare_flags() -> list[Flag]:
    return [flag("--run", required=True, metavar="RUN_ID"),
            flag("--prompt", required=True, help="the user message"),
            flag("--system", default=None, help="optional system prompt"),
            flag("--max-new-tokens", type=int, default=128),
            flag("--temperature", type=float, default=0.0, help="0 = greedy (default)"),
            flag("--seed", type=int, default=0),
            flag("--engine", choices=["hf", "llama.cpp"], default="hf"),
            flag("--model", default=None, help="base model (default: the run's)"),
            flag("--strength", type=float, default=None, help="try the tuned side at this adapter "
                 "strength (0–1; the `strength` verb keeps one)")]
