"""Scoring shared by the report, the forgetting budget and the data triage: answer match
(normalised exact match, ROUGE-L, "contains the expected fact") and the general-text probe
(assets/general_probe.txt — evaluated, never trained on) with its perplexity. Pure functions; the
losses a model gives encoded examples are data/templates.py's (mean_loss, answer_logps).
"""
from __future__ import annotations

import math
import re
from typing import Any

from . import paths

PROBE = paths.ASSETS / "general_probe.txt"


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
    fact = (sum(states(a, r["expect"]) for a, r in with_fact) / len(with_fact)) if with_fact else None
    return {"exact_match": round(em, 4), "rouge_l": round(rl, 4),
            "fact_match": round(fact, 4) if fact is not None else None, "n": len(rows)}


def probe_examples() -> list[dict[str, Any]]:
    return [{"text": p.strip()} for p in PROBE.read_text().split("\n\n") if p.strip()]


def ppl(loss: float | None) -> float | None:
    return round(math.exp(loss), 3) if loss is not None else None


# ---- key facts: what an answer states that its question does not ----
NUMBER = re.compile(r"(?<!\w)\d+(?:[.,:]\d+)*")
NAME = re.compile(r"\b[A-Z][\w'’-]*(?:\s+(?:of\s+|de\s+|van\s+|von\s+)?[A-Z][\w'’-]*)*")
SENTENCE_START = re.compile(r"(?:^|[.!?]\s+|\n)([A-Z][\w'’-]*)")
COMMON_CAPS = set("""The A An It Its This That These Those There They He She We You I Yes No
In On At By For From To With And But Or If When While After Before Our Your Their His Her
Each Every All Some Most Many One Two Three""".split())


def key_facts(answer: str, question: str = "") -> list[str]:
    """The parts of an answer that carry its fact, most specific first: numbers (not in the
    question), then names — runs of capitalised words that are neither a common sentence opener
    nor already in the question ("Fernwick Labs", "Tallinn"). What a restatement, a rephrased
    question or a model's answer must keep to state the same fact; empty when there are none."""
    q = norm(question)
    q_words = set(q.split())
    nums = [n for n in NUMBER.findall(answer) if norm(n) not in q_words]
    names = []
    starts = {m.start(1) for m in SENTENCE_START.finditer(answer)}
    for m in NAME.finditer(answer):
        if m.start() in starts and " " not in m.group(0):
            continue  # "Press the button": a capital that only opens a sentence
        words = [w for w in m.group(0).split() if w not in COMMON_CAPS]
        while words and norm(words[0]) in q_words:   # "Mayor Elsbeth Varn" asked about the mayor
            words.pop(0)
        while words and norm(words[-1]) in q_words:
            words.pop()
        phrase = " ".join(words)
        if phrase and norm(phrase) not in q and not all(norm(w) in q_words for w in words):
            names.append(phrase)
    out: list[str] = []
    for f in nums + names:
        if f not in out:
            out.append(f)
    return out


def states(answer: str, fact: str) -> bool:
    """Whether `answer` contains `fact` as whole words (normalised: case, punctuation and spacing
    ignored; "bird" is not in "birds", "12" not in "120")."""
    f = norm(fact)
    return bool(f) and f" {f} " in f" {norm(answer)} "


def fact_share(answer: str, expected: str, question: str = "") -> float:
    """The share of `expected`'s key facts that `answer` states; its ROUGE-L when it has none."""
    facts = key_facts(expected, question)
    if not facts:
        return rouge_l(answer, expected)
    return sum(states(answer, f) for f in facts) / len(facts)
