"""Token statistics and de-duplication for a prepared dataset.

Owns the running counters (lengths, truncation, duplicates, empties) kept while examples stream
past, the rows removed as duplicates (where they were uploaded, and the row each repeats: the
Check's "exact" duplicates), and the summary numbers and histogram the UI and CLI show. Memory
is 4 bytes per example (lengths) plus two hashes and a (file, line) per distinct example.
"""
from __future__ import annotations

import hashlib
import json
import re
from array import array
from dataclasses import dataclass, field
from typing import Any

_NON_WORD = re.compile(r"[\W_]+")
REMOVED_KEPT = 5000  # removed duplicates listed by line (all are counted)


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
    removed: list = field(default_factory=list)  # [(file, line), (its file, its line)] per duplicate
    _exact: dict = field(default_factory=dict)     # hash → where it was first uploaded
    _near: dict = field(default_factory=dict)

    def is_duplicate(self, example: dict[str, Any], origin: Any = None) -> bool:
        e, n = exact_key(example), near_key(example)
        first = self._exact.get(e) or self._near.get(n)
        if e in self._exact:
            self.duplicates_exact += 1
        elif n in self._near:
            self.duplicates_near += 1
        else:
            self._exact[e] = self._near[n] = origin or ()
            return False
        if len(self.removed) < REMOVED_KEPT:
            self.removed.append([origin, first])
        return True

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
