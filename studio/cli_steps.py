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
    verb(dsub, "list", "prepared datasets, newest version first", lambda a: studio(a).data_list())
    p = verb(dsub, "show", "one dataset: sources, recipe, stats and a few examples",
             lambda a: studio(a).data_show(a.name))
    p.add_argument("name", help="NAME or NAME@vN")


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
