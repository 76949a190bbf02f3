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
# a piece that ends like this did not end a sentence: a list number ("1."), an initial or an
# abbreviation ("Acme Inc.", "Dr.", "e.g.")
NOT_AN_END = re.compile(r"(?:^|\s)(?:\d+|[A-Z]|Inc|Ltd|Co|Corp|Dr|Mr|Mrs|Ms|St|Mt|No|vs|etc|e\.g|i\.e|approx)\.$")
CAP_WORDS = 24     # a cut rejected answer keeps at most max(this, CHOSEN_TIMES × the chosen's words)
CHOSEN_TIMES = 2


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


def sentences(text: str) -> list[str]:
    """`text` in sentences: split after . ! ? or at a line break, but not after a list number, an
    initial or a common abbreviation."""
    out: list[str] = []
    for piece in (x.strip() for x in SENTENCE_END.split(text.strip()) if x.strip()):
        if out and NOT_AN_END.search(out[-1]):
            out[-1] = f"{out[-1]} {piece}"
        else:
            out.append(piece)
    return out


def shown(rejected: str, question: str, chosen: str) -> str:
    """The model's answer up to the sentence where it states a claim of the kind the chosen
    answer's fact is (a number when the chosen one states a number, else any name or number not
    in the question: scoring.key_facts); its first sentence when it states none; at most
    max(CAP_WORDS, CHOSEN_TIMES × the chosen answer's words) words."""
    facts = key_facts(rejected, question)
    if any(any(c.isdigit() for c in f) for f in key_facts(chosen, question)):
        facts = [f for f in facts if any(c.isdigit() for c in f)] or facts
    kept: list[str] = []
    for sentence in sentences(rejected):
        kept.append(sentence)
        if not facts or any(states(sentence, f) for f in facts):
            break
    words = " ".join(kept).split()
    return " ".join(words[:max(CAP_WORDS, CHOSEN_TIMES * len(chosen.split()))])


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
        counters["factuality_cut"] += cut.split() != said.split()
        row = {"prompt": question, "chosen": grounded, "rejected": cut}
        system = next((m["content"] for m in prompt if m["role"] == "system"), None)
        if system:
            row["system"] = system
        yield row
