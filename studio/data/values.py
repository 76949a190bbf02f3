"""One field of a record, read strictly: the text it holds, or the reason it holds none.

Owns `Skip` (a record or document that yields no example, with the reason shown to the user) and
`_text` — strings as they are, whole numbers and finite floats written out, OpenAI-style content
parts joined, UTF-8 bytes decoded, and anything else (lists, objects, NaN, binary, invalid
Unicode) refused by name, never as a Python repr — plus the role names chat data may use. Shared
by formats.py and preference.py.
"""
from __future__ import annotations

from typing import Any

ROLE_ALIASES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                "bot": "assistant", "model": "assistant", "system": "system", "tool": "tool"}


class Skip(Exception):
    """A record (or document) that yields no example; the message is the reason shown."""

    def __init__(self, reason: str, line: int | None = None):
        super().__init__(reason)
        self.line = line


class Unrecognised(Skip):
    """A row in no format we know: reported once per file, not once per row."""


MAX_FIELD_CHARS = 1_000_000  # one field of one example; a longer one is a data error, not text


def _text(v: Any, field: str = "a field") -> str:
    """A field's text, strictly: strings as they are; whole numbers and finite floats written
    out; OpenAI-style content parts ([{"type": "text", "text": …}]) joined; UTF-8 bytes decoded.
    Anything else (lists, objects, NaN/inf, binary, invalid Unicode) is a Skip naming the field,
    never its Python repr."""
    if v is None:
        return ""
    if isinstance(v, bool):
        raise Skip(f"{field} is true/false, expected text")
    if isinstance(v, int):
        v = str(v)
    elif isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            raise Skip(f"{field} is {v} (not a number), expected text")
        v = repr(v)
    elif isinstance(v, (bytes, bytearray)):
        try:
            v = bytes(v).decode("utf-8")
        except UnicodeDecodeError:
            raise Skip(f"{field} holds binary data, not text (a binary column?)") from None
    elif isinstance(v, list) and v and all(isinstance(p, dict) and "text" in p for p in v):
        v = "\n".join(_text(p.get("text"), field) for p in v)  # content parts
    elif not isinstance(v, str):
        raise Skip(f"{field} is a {type(v).__name__}, expected text")
    if len(v) > MAX_FIELD_CHARS:
        raise Skip(f"{field} is {len(v):,} characters long, over the {MAX_FIELD_CHARS:,} limit "
                   "for one example; split it into smaller examples")
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise Skip(f"{field} holds invalid Unicode (a lone surrogate such as \\ud800); fix the "
                   "text and upload again") from None
    return v.strip()
