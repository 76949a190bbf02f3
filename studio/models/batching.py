"""Batching many token sequences through one model: the opening they share, and batches by length.

Owns two pieces every batched scoring pass needs (the soft anchor's base distributions,
train/anchor.py; the data check's and the curriculum's losses, data/suspects.py; the shared
opening of the evaluations' greedy answers, models/greedy.py): how many
leading tokens all sequences share (a chat template's system prompt and turn header — run once,
its keys and values repeated for the batch), and the batches themselves — indices sorted
shortest first, as many per batch as fit a budget of padded tokens after that opening (a batch's
last sequence is its longest). Pure Python: no torch.
"""
from __future__ import annotations

from typing import Iterator


def shared_prefix(seqs: list[list[int]]) -> int:
    """How many leading tokens every sequence shares, leaving each at least one of its own."""
    n = min(len(s) for s in seqs) - 1
    for s in seqs[1:]:
        i = 0
        while i < n and s[i] == seqs[0][i]:
            i += 1
        n = i
    return max(n, 0)


def by_length(lengths: list[int], budget: int, shared: int = 0) -> Iterator[list[int]]:
    """Indices of `lengths`, shortest first, in batches of at most `budget` padded tokens after
    the first `shared` (one sequence alone may be longer)."""
    order = sorted(range(len(lengths)), key=lambda j: lengths[j])
    i = 0
    while i < len(order):
        n = 1
        while i + n < len(order) and (n + 1) * (lengths[order[i + n]] - shared) <= budget:
            n += 1
        yield order[i:i + n]
        i += n
