"""Command line: `python -m studio VERB …` — a table of verbs over the Studio facade.

Owns parsing (the verb table in verbs.py), running one verb and the exit codes: 0 success,
1 a user error (one paragraph on stderr, no traceback), 2 usage errors (argparse), 130 Ctrl-C.
Output text is render.py. Imports only the facade and errors (tests/test_layering.py).
"""
from __future__ import annotations

import argparse
import json
import sys

from ..errors import StudioError
from .render import render
from .verbs import GROUPS, VERBS, open_studio


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="python -m studio",
        description="Finetune Studio: prepare data, estimate memory, train LoRA/QLoRA, compare, "
                    "export GGUF — every step of the browser studio, headless.")
    parser.add_argument("--version", action="version", version=f"finetune-studio {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")
    common.add_argument("--home", default=None, help="STUDIO_HOME folder (default: $STUDIO_HOME "
                                                     "or ~/.finetune-studio)")
    groups: dict[str, argparse._SubParsersAction] = {}
    for verb in VERBS:
        parent = sub
        if len(verb.words) == 2:
            group = verb.words[0]
            if group not in groups:
                g = sub.add_parser(group, help=GROUPS[group], description=GROUPS[group])
                groups[group] = g.add_subparsers(dest="action", metavar="ACTION", required=True)
            parent = groups[group]
        p = parent.add_parser(verb.words[-1], help=verb.help, description=verb.description or verb.help,
                              parents=[common])
        p.set_defaults(verb_record=verb)
        verb.add_flags(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    verb = args.verb_record
    try:
        result = verb.run(open_studio(args), args)
    except StudioError as e:
        if args.json:
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
