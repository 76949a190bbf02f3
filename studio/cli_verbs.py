"""The CLI's verbs and their flags; each handler calls one Studio method.

Flag help for run settings comes from the dataclass fields in presets.py (written once there).
"""
from __future__ import annotations

import argparse

from .cli import studio


def add_verbs(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    def verb(parent, name: str, help: str, func) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help, description=help, parents=[common])
        p.set_defaults(func=func)
        return p

    def group(name: str, help: str):
        p = sub.add_parser(name, help=help, description=help)
        return p.add_subparsers(dest="action", metavar="ACTION", required=True)

    models = group("models", "list, inspect and prepare models")
    verb(models, "list", "models you can use (embedded and local)",
         lambda a: studio(a).models_list())
    p = verb(models, "info", "architecture, size and chat template of a model (no torch needed)",
             lambda a: studio(a).model_info(a.model))
    p.add_argument("model", help="registry name, HF folder, .gguf file")
    p = verb(models, "prepare", "convert the embedded model / download a hub model once",
             lambda a: {"path": str(studio(a).model_path(a.model, progress=print_progress(a),
                                                         token=a.hf_token))})
    p.add_argument("model", nargs="?", default="smollm2-135m-instruct")
    p.add_argument("--hf-token", default=None, help="token for gated hub models (or HF_TOKEN)")

    pre = group("presets", "training presets shipped in presets/")
    verb(pre, "list", "all presets with who they are for", lambda a: studio(a).presets_list())
    p = verb(pre, "show", "every setting of one preset", lambda a: studio(a).preset_show(a.name))
    p.add_argument("name")

    from .cli_steps import add_step_verbs

    add_step_verbs(sub, verb)


def print_progress(args: argparse.Namespace):
    import sys

    return None if args.json else (lambda msg: print(msg, file=sys.stderr, flush=True))
