"""Token statistics and de-duplication for a prepared dataset.

Owns the running counters (lengths, truncation, duplicates, empties) kept while examples stream
past, and the summary numbers and histogram the UI and CLI show. Memory is 4 bytes per example
(lengths) plus 16 bytes per distinct example (two hashes).
"""
from __future__ import annotations

import hashlib
import json
import re
from array import array
from dataclasses import dataclass, field
from typing import Any

_NON_WORD = re.compile(r"[\W_]+")


def content_of(example: dict[str, Any]) -> str:
    if "text" in example:
        return example["text"]
    if "chosen" in example:  # a preference pair: its prompt and both answers
        msgs = [*example["prompt"], *example["chosen"], {"role": "rejected", "content": example["rejected"][0]["content"]}]
        return "\n".join(f"{m['role']}: {m['content']}" for m in msgs)
    return "\n".join(f"{m['role']}: {m['content']}" for m in example["messages"])


def exact_key(example: dict[str, Any]) -> bytes:
    return hashlib.blake2b(content_of(example).encode(), digest_size=8).digest()


def near_key(example: dict[str, Any]) -> bytes:
    """Case, punctuation and spacing folded: 'Hello, world!' and 'hello world' collide."""
    folded = _NON_WORD.sub(" ", content_of(example).lower()).strip()
    return hashlib.blake2b(folded.encode(), digest_size=8).digest()


@dataclass
class Stats:
    max_len: int
    lengths: array = field(default_factory=lambda: array("I"))
    trainable: int = 0
    truncated: int = 0
    dropped_too_long: int = 0
    duplicates_exact: int = 0
    duplicates_near: int = 0
    empty_removed: int = 0
    formats: dict[str, int] = field(default_factory=dict)
    _exact: set = field(default_factory=set)
    _near: set = field(default_factory=set)

    def is_duplicate(self, example: dict[str, Any]) -> bool:
        e, n = exact_key(example), near_key(example)
        if e in self._exact:
            self.duplicates_exact += 1
            return True
        if n in self._near:
            self.duplicates_near += 1
            return True
        self._exact.add(e)
        self._near.add(n)
        return False

    def add(self, full_length: int, trainable: int) -> None:
        self.lengths.append(full_length)
        self.trainable += trainable
        if full_length > self.max_len:
            self.truncated += 1

    def summary(self) -> dict[str, Any]:
        s = sorted(self.lengths)

        def pct(p: float) -> int:
            return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))] if s else 0

        return {
            "examples": len(s), "max_len": self.max_len,
            "tokens": {"total": int(sum(s)), "mean": round(sum(s) / len(s), 1) if s else 0,
                       "min": s[0] if s else 0, "p50": pct(50), "p95": pct(95),
                       "max": s[-1] if s else 0,
                       "trainable": self.trainable},
            "truncated": self.truncated, "dropped_too_long": self.dropped_too_long,
            "duplicates_removed": {"exact": self.duplicates_exact, "near": self.duplicates_near},
            "empty_removed": self.empty_removed, "formats": dict(self.formats),
            "histogram": histogram(s, self.max_len),
        }


def histogram(sorted_lengths: list[int], max_len: int, bins: int = 20) -> dict[str, list]:
    """Equal-width bins from 0 to max(longest, max_len); edges and counts."""
    top = max([max_len, *sorted_lengths[-1:]])
    width = max(1, -(-top // bins))
    counts = [0] * bins
    for n in sorted_lengths:
        counts[min(bins - 1, n // width)] += 1
    return {"edges": [i * width for i in range(bins + 1)], "counts": counts}


def dumps(example: dict[str, Any]) -> str:
    return json.dumps(example, ensure_ascii=False)
