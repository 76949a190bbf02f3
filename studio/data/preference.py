"""Preference rows → one canonical pair: {prompt: messages, chosen: [answer], rejected: [answer]}.

Owns the three shapes a preference file comes in, detected per row like every other format:
`preference` (prompt, chosen and rejected as strings), `preference-chat` (chosen and rejected as
message lists, with or without a separate prompt: without one, the turns the two sides share are
the prompt), and `preference-hh` (Anthropic HH-RLHF's full transcripts, "\\n\\nHuman: … \\n\\nAssistant:
…", the shared turns again being the prompt) — an optional `system` in each. Rows that teach no
preference are refused with their reason: identical sides, an empty side, sides whose prompts
differ, a side that does not end in an assistant turn. The canonical form is TRL's conversational
one, so the trainer reads it as it is. Does not tokenize.
"""
from __future__ import annotations

import re
from typing import Any

from .values import ROLE_ALIASES, Skip, _text

FORMATS = ("preference", "preference-chat", "preference-hh")
HH_TURN = re.compile(r"\n\n(Human|Assistant):[ \t]?")


def detect(row: dict[str, Any]) -> str | None:
    if "chosen" not in row or "rejected" not in row:
        return None
    c, r = row["chosen"], row["rejected"]
    if isinstance(c, list) or isinstance(r, list):
        return "preference-chat"
    if isinstance(c, str) and isinstance(r, str) and "prompt" not in row and HH_TURN.search(c or ""):
        return "preference-hh"
    return "preference"


def _messages(raw: Any, side: str) -> list[dict[str, str]]:
    if isinstance(raw, str):
        return [{"role": "user", "content": _text(raw, f"'{side}'")}]
    if not isinstance(raw, list):
        raise Skip(f"'{side}' is a {type(raw).__name__}, expected a list of messages or text")
    out = []
    for m in raw:
        if not isinstance(m, dict):
            raise Skip(f"a message of '{side}' is not an object with role and content")
        role = ROLE_ALIASES.get(str(m.get("role", m.get("from", ""))).lower())
        if role is None:
            raise Skip(f"unknown role {m.get('role')!r} in '{side}' (use system, user or assistant)")
        out.append({"role": role, "content": _text(m.get("content", m.get("value")), f"a {role} message")})
    return out


def _hh(text: str, side: str) -> list[dict[str, str]]:
    parts = HH_TURN.split("\n\n" + text.lstrip("\n") if not text.startswith("\n\n") else text)
    if len(parts) < 3:
        raise Skip(f"'{side}' is not a transcript of \\n\\nHuman: … \\n\\nAssistant: … turns")
    return [{"role": "user" if who == "Human" else "assistant", "content": body.strip()}
            for who, body in zip(parts[1::2], parts[2::2])]


def _split(side: list[dict[str, str]], name: str) -> tuple[list[dict[str, str]], str]:
    if not side or side[-1]["role"] != "assistant":
        raise Skip(f"the '{name}' side does not end in an assistant answer")
    if not side[-1]["content"]:
        raise Skip(f"the '{name}' answer is empty")
    return side[:-1], side[-1]["content"]


def convert(row: dict[str, Any], fmt: str) -> dict[str, Any]:
    """The canonical pair, or Skip with the reason the row teaches no preference."""
    system = _text(row.get("system"), "'system'")
    if fmt == "preference":
        prompt = [{"role": "user", "content": _text(row.get("prompt", row.get("question")), "'prompt'")}]
        chosen, rejected = _text(row["chosen"], "'chosen'"), _text(row["rejected"], "'rejected'")
        if not prompt[0]["content"]:
            raise Skip("the prompt is empty")
        for name, v in (("chosen", chosen), ("rejected", rejected)):
            if not v:
                raise Skip(f"the '{name}' answer is empty")
    else:
        parse = _hh if fmt == "preference-hh" else _messages
        c = parse(row["chosen"], "chosen")
        r = parse(row["rejected"], "rejected")
        if "prompt" in row:  # the prompt apart; each side is the answer (one assistant turn)
            prompt = _messages(row["prompt"], "prompt")
            c, r = prompt + c, prompt + r
        c_prompt, chosen = _split(c, "chosen")
        r_prompt, rejected = _split(r, "rejected")
        if c_prompt != r_prompt:
            raise Skip("the chosen and rejected sides answer different prompts (their turns before "
                       "the last answer differ)")
        prompt = c_prompt
        if not any(m["role"] == "user" and m["content"] for m in prompt):
            raise Skip("the prompt has no user turn")
    if " ".join(chosen.split()) == " ".join(rejected.split()):
        raise Skip("chosen and rejected are the same answer, so there is no preference to learn")
    if system and not any(m["role"] == "system" for m in prompt):
        prompt = [{"role": "system", "content": system}] + prompt
    return {"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}]}


def is_pair_format(name: str) -> bool:
    """Whether a dataset's format or recipe (its stats' `formats`) makes preference pairs."""
    return name in FORMATS or name == "factuality-pairs"


def is_pair(example: dict[str, Any]) -> bool:
    return "chosen" in example and "rejected" in example and "prompt" in example


def sides(example: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pair as two chat examples (prompt + chosen, prompt + rejected): what the token
    statistics, the preview and the trainer's length checks read."""
    return ({"messages": example["prompt"] + example["chosen"]},
            {"messages": example["prompt"] + example["rejected"]})


def qa_pairs(examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Examples as question → expected answer ({messages, answer}): a chat example whose last
    turn is the assistant's, or a pair's prompt answered as chosen; any other is left out."""
    out = []
    for ex in examples:
        msgs = ex.get("messages")
        if is_pair(ex):
            out.append({"messages": ex["prompt"], "answer": ex["chosen"][0]["content"]})
        elif msgs and msgs[-1]["role"] == "assistant":
            out.append({"messages": msgs[:-1], "answer": msgs[-1]["content"]})
    return out
