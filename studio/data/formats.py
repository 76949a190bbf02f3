"""Structured records → training examples in one canonical form.

Owns format detection (alpaca, sharegpt, chat messages, prompt/completion, plain text, and the
preference pairs of preference.py), the
manual column mapping that overrides it, and conversion with per-record checks (empty answer,
no assistant turn, unknown roles). Canonical examples are `{"messages": [{"role", "content"}]}`
or `{"text": ...}` for continued pretraining. Does not tokenize.
"""
from __future__ import annotations

from typing import Any, Callable

from .values import ROLE_ALIASES, Skip, Unrecognised, _text  # noqa: F401 (Skip, Unrecognised: formats' API)

FORMATS = ("messages", "sharegpt", "alpaca", "prompt-completion", "text",
           "preference", "preference-chat", "preference-hh")
# Column names we accept for each field of prompt/completion-like tables.
PROMPT_KEYS = ("prompt", "question", "query", "input_text", "user")
COMPLETION_KEYS = ("completion", "answer", "response", "output_text", "assistant", "chosen")


def detect_one(row: dict[str, Any]) -> str | None:
    from . import preference

    keys = set(row)
    pair = preference.detect(row)
    if pair:
        return pair
    if isinstance(row.get("messages"), list):
        return "messages"
    conv = row.get("conversations")
    if isinstance(conv, list) and conv and isinstance(conv[0], dict):
        return "sharegpt" if "from" in conv[0] else "messages"
    if {"instruction", "output"} <= keys:
        return "alpaca"
    if keys & set(PROMPT_KEYS) and keys & set(COMPLETION_KEYS):
        return "prompt-completion"
    if "text" in keys or "content" in keys:
        return "text"
    return None


def describe_missing(columns: list[str]) -> str:
    return (f"columns {', '.join(columns) or '(none)'} match no known format. Expected one of: "
            "messages (list of role/content), conversations (sharegpt from/value), "
            "instruction + output (alpaca), prompt + completion (or question + answer), or text. "
            "Say which column is the question and which the answer: in the Data step under "
            "'Column mapping', or on the command line with --map prompt=COLUMN --map completion=COLUMN.")


def _first(row: dict[str, Any], keys: tuple[str, ...]) -> str:
    for k in keys:
        if k in row:
            return _text(row[k], f"'{k}'")
    return ""


def _check_turns(msgs: list[dict[str, str]]) -> dict[str, Any]:
    if not any(m["role"] == "assistant" for m in msgs):
        raise Skip("conversation has no assistant turn, so there is nothing to learn")
    last = [m for m in msgs if m["role"] == "assistant"][-1]
    if not last["content"]:
        raise Skip("the assistant answer is empty")
    if not any(m["role"] == "user" and m["content"] for m in msgs):
        raise Skip("conversation has no user turn")
    return {"messages": msgs}


def from_messages(row: dict[str, Any]) -> dict[str, Any]:
    raw = row.get("messages") or row.get("conversations") or []
    msgs = []
    for m in raw:
        if not isinstance(m, dict):
            raise Skip("a message is not an object with role and content")
        role = ROLE_ALIASES.get(str(m.get("role", "")).lower())
        if role is None:
            raise Skip(f"unknown role {m.get('role')!r} (use system, user or assistant)")
        msgs.append({"role": role, "content": _text(m.get("content"), f"a {role} message")})
    return _check_turns(msgs)


def from_sharegpt(row: dict[str, Any]) -> dict[str, Any]:
    msgs = []
    if _text(row.get("system"), "'system'"):
        msgs.append({"role": "system", "content": _text(row["system"], "'system'")})
    for m in row.get("conversations") or []:
        role = ROLE_ALIASES.get(str(m.get("from", "")).lower()) if isinstance(m, dict) else None
        if role is None:
            raise Skip(f"unknown speaker {m.get('from') if isinstance(m, dict) else m!r} "
                       "(use human/gpt/system)")
        msgs.append({"role": role, "content": _text(m.get("value"), f"a {role} turn")})
    return _check_turns(msgs)


def from_alpaca(row: dict[str, Any]) -> dict[str, Any]:
    instruction, extra = _text(row.get("instruction"), "'instruction'"), _text(row.get("input"), "'input'")
    prompt = f"{instruction}\n\n{extra}" if extra else instruction
    msgs = [{"role": "user", "content": prompt},
            {"role": "assistant", "content": _text(row.get("output"), "'output'")}]
    if _text(row.get("system"), "'system'"):
        msgs.insert(0, {"role": "system", "content": _text(row["system"], "'system'")})
    return _check_turns(msgs)


def from_prompt_completion(row: dict[str, Any]) -> dict[str, Any]:
    msgs = [{"role": "user", "content": _first(row, PROMPT_KEYS)},
            {"role": "assistant", "content": _first(row, COMPLETION_KEYS)}]
    if _text(row.get("system"), "'system'"):
        msgs.insert(0, {"role": "system", "content": _text(row["system"], "'system'")})
    return _check_turns(msgs)


def from_text(row: dict[str, Any]) -> dict[str, Any]:
    text = _text(row.get("text", row.get("content")), "'text'")
    if not text:
        raise Skip("the text is empty")
    return {"text": text}


def _pair(fmt: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def convert(row: dict[str, Any]) -> dict[str, Any]:
        from . import preference

        return preference.convert(row, fmt)
    return convert


CONVERTERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "messages": from_messages, "sharegpt": from_sharegpt, "alpaca": from_alpaca,
    "prompt-completion": from_prompt_completion, "text": from_text,
    **{f: _pair(f) for f in ("preference", "preference-chat", "preference-hh")},
}


def apply_mapping(row: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    """Rename the user's columns to ours: mapping = {prompt|completion|system|text: column}."""
    out = {}
    for ours, theirs in mapping.items():
        if theirs not in row:
            raise Skip(f"mapped column '{theirs}' (for {ours}) is missing; columns are "
                       f"{', '.join(map(str, row))}")
        out[ours] = row[theirs]
    return out


def mapped_format(mapping: dict[str, str]) -> str:
    return "text" if "text" in mapping else "prompt-completion"


def convert(row: dict[str, Any], mapping: dict[str, str] | None = None) -> tuple[dict[str, Any], str]:
    """One record → (canonical example, its format), or raise Skip with the reason. Each row is
    detected on its own, so files that mix formats convert row by row."""
    if mapping:
        row = apply_mapping(row, mapping)
    fmt = mapped_format(mapping) if mapping else detect_one(row)
    if fmt is None:
        raise Unrecognised(describe_missing(list(row)))
    return CONVERTERS[fmt](row), fmt
