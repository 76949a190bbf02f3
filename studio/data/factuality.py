"""Factuality pairs, made automatically ("Fine-tuning Language Models for Factuality", Tian et
al. 2023): prefer the answer grounded in a source over the model's own unsupported one.

Owns turning question/answer rows whose answer is grounded (a Q/A dataset of the user's, or the
qa-pairs recipe's pairs, each checked against its chunk) into preference pairs: the base model
answers each question closed book (no source in its prompt, greedy); when its answer does not
state the grounded answer's key facts (scoring.key_facts; for an answer without any, when it
shares too few of its words), the pair is (chosen = the grounded answer, rejected = the model's
own). Questions it already answers right are left out and counted — DPO on them would teach
nothing — and so are empty answers. The rejected answer is cut after the sentence where it first
states a claim of its own (`shown`): the wrong fact is what DPO should push away, and the rest of
a small model's long answer only adds length to every step (256-token rejected answers made a
DPO step ≈ 30 s on 2 cores) and a length difference for the loss to learn instead of the fact.
The generator is whatever the Data step lends: llama.cpp on the model's GGUF or the user's
OpenAI-compatible server.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterator

from ..scoring import key_facts, rouge_l, states

KNOWN_ROUGE = 0.5  # an answer without key facts counts as known when it shares this much
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
MIN_WORDS = 24     # a cut rejected answer keeps at least this many words (or all it has)…
CHOSEN_TIMES = 2   # …and at most twice the chosen answer's words beyond that


def qa_rows(examples: list[dict[str, Any]]) -> list[tuple[list[dict[str, str]], str]]:
    """(prompt messages, grounded answer) of single-answer chat examples."""
    out = []
    for ex in examples:
        msgs = ex.get("messages")
        if msgs and msgs[-1]["role"] == "assistant" and len(msgs) >= 2 and msgs[-2]["role"] == "user":
            out.append((msgs[:-1], msgs[-1]["content"]))
    return out


def knows(answer: str, grounded: str, question: str) -> bool:
    """Whether the model's closed-book answer already states the grounded answer's fact."""
    facts = key_facts(grounded, question)
    if facts:
        return all(states(answer, f) for f in facts)
    return rouge_l(answer, grounded) >= KNOWN_ROUGE


def shown(rejected: str, question: str, chosen: str) -> str:
    """The model's answer up to the sentence where it first states a claim of its own (a name
    or number that is not in the question: scoring.key_facts), its first sentence when it states
    none; at most max(MIN_WORDS, CHOSEN_TIMES × the chosen answer's words) words."""
    facts = key_facts(rejected, question)
    kept: list[str] = []
    for sentence in (x for x in SENTENCE_END.split(rejected.strip()) if x.strip()):
        kept.append(sentence.strip())
        if not facts or any(states(sentence, f) for f in facts):
            break
    words = " ".join(kept).split()
    limit = max(MIN_WORDS, CHOSEN_TIMES * len(chosen.split()))
    return " ".join(words[:limit])


def pairs(rows: list[tuple[list[dict[str, str]], str]], answer: Callable[[list[dict[str, str]]], str],
          counters, drop: Callable[[str, str], None], check: Callable[[], None] | None = None
          ) -> Iterator[dict[str, Any]]:
    """Preference rows {prompt, chosen, rejected, system?} for the questions the model gets wrong."""
    for prompt, grounded in rows:
        if check:
            check()
        question = prompt[-1]["content"]
        said = (answer(prompt) or "").strip()
        if not said:
            drop("the model gave no answer", f"Q: {question}")
            continue
        if knows(said, grounded, question):
            counters["factuality_known"] += 1
            drop("the model already answers it right (nothing to prefer)", f"Q: {question}\nA: {said}")
            continue
        counters["factuality_pairs"] += 1
        cut = shown(said, question, grounded)
        counters["factuality_cut"] += cut != said
        row = {"prompt": question, "chosen": grounded, "rejected": cut}
        system = next((m["content"] for m in prompt if m["role"] == "system"), None)
        if system:
            row["system"] = system
        yield row
