"""Command line: verbs → Studio methods. `--json` on every verb, `--help` on every verb.

Exit codes: 0 success, 1 a user error (one paragraph on stderr, no traceback), 2 usage errors
(argparse). Output formatting lives here; computing lives in the Studio facade.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

from .errors import StudioError

COMMANDS: dict[str, Callable[[argparse.Namespace], Any]] = {}


def command(name: str):
    def deco(fn):
        COMMANDS[name] = fn
        return fn
    return deco


def common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument("--home", default=None, help="STUDIO_HOME folder (default: $STUDIO_HOME or "
                                                "~/.finetune-studio)")
    return p


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .cli_verbs import add_verbs

    parser = argparse.ArgumentParser(
        prog="python -m studio",
        description="Finetune Studio: prepare data, estimate memory, train LoRA/QLoRA, compare, "
                    "export GGUF — every step of the browser studio, headless.")
    parser.add_argument("--version", action="version", version=f"finetune-studio {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    add_verbs(sub, common())
    return parser


def studio(args: argparse.Namespace):
    from .api import Studio

    return Studio(args.home)


def render(value: Any) -> str:
    """Human-readable text for a result: tables for lists of dicts, `key: value` for dicts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        keys = [k for k in value[0] if not isinstance(value[0][k], (dict, list))][:7]
        widths = {k: min(40, max(len(k), *(len(_cell(v.get(k))) for v in value))) for k in keys}
        lines = ["  ".join(k.ljust(widths[k]) for k in keys)]
        lines += ["  ".join(_cell(v.get(k))[:40].ljust(widths[k]) for k in keys) for v in value]
        return "\n".join(lines)
    if isinstance(value, list):
        return "\n".join(map(str, value)) or "(none)"
    if isinstance(value, dict):
        width = max((len(k) for k in value), default=0)
        out = []
        for k, v in value.items():
            if isinstance(v, (dict, list)):
                v = json.dumps(v, default=str)
                v = v if len(v) < 400 else v[:400] + "…"
            out.append(f"{k.ljust(width)}  {v}")
        return "\n".join(out)
    return str(value)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except StudioError as e:
        if getattr(args, "json", False):
            print(json.dumps({"error": str(e)}))
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    code = 0
    if isinstance(result, tuple):  # (payload, exit code)
        result, code = result
    if result is not None:
        try:
            print(json.dumps(result, indent=2, default=str) if args.json else render(result))
        except BrokenPipeError:  # `| head` closed the pipe: not an error
            sys.stderr.close()
    return code
