"""Scoring shared by the report, the forgetting budget and the data triage: answer match
(normalised exact match, ROUGE-L, "contains the expected fact"), the mean loss on the learned
tokens of examples, and the general-text probe (assets/general_probe.txt — evaluated, never
trained on) with its perplexity. Pure functions, plus the two that run a model.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

PROBE = Path(__file__).resolve().parent.parent / "assets" / "general_probe.txt"


def norm(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", text.lower())).strip()


def rouge_l(pred: str, ref: str) -> float:
    """ROUGE-L F1 on words (longest common subsequence)."""
    a, b = norm(pred).split(), norm(ref).split()
    if not a or not b:
        return 0.0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    p, r = lcs / len(a), lcs / len(b)
    return 2 * p * r / (p + r)


def score(answers: list[str], rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = max(1, len(rows))
    em = sum(norm(a) == norm(r["answer"]) for a, r in zip(answers, rows)) / n
    rl = sum(rouge_l(a, r["answer"]) for a, r in zip(answers, rows)) / n
    with_fact = [(a, r) for a, r in zip(answers, rows) if r.get("expect")]
    fact = (sum(norm(r["expect"]) in norm(a) for a, r in with_fact) / len(with_fact)) if with_fact else None
    return {"exact_match": round(em, 4), "rouge_l": round(rl, 4),
            "fact_match": round(fact, 4) if fact is not None else None, "n": len(rows)}


def mean_loss(model, tok, examples: list[dict[str, Any]], max_len: int) -> float | None:
    """Mean token loss on the learned tokens of `examples` (the data step's loss mask)."""
    import torch

    from .data import templates

    total, count = 0.0, 0
    for ex in examples:
        enc = templates.encode(tok, ex, max_len)
        if enc.trainable < 2:
            continue
        ids = torch.tensor([enc.input_ids], device=model.device)
        labels = torch.tensor([enc.labels], device=model.device)
        with torch.no_grad():
            out = model(input_ids=ids, labels=labels)
        n = int((labels[:, 1:] != -100).sum())
        total += float(out.loss) * n
        count += n
    return total / count if count else None


def probe_examples() -> list[dict[str, Any]]:
    return [{"text": p.strip()} for p in PROBE.read_text().split("\n\n") if p.strip()]


def ppl(loss: float | None) -> float | None:
    return round(math.exp(loss), 3) if loss is not None else None
