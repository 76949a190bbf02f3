"""Augmenting training examples with the base model's own words: self-distilled targets and
question paraphrases (train.self_distill, train.paraphrases).

Owns the two recipes and their checks. Self-distillation (SDFT, arXiv 2402.13669): the base
model, given the answer as a fact in its prompt, restates it in its own words; the restatement
replaces the answer when it keeps the answer's key facts (scoring.key_facts: numbers, names) —
training then pulls the model toward its own style instead of a foreign one. Paraphrases
(Physics of Language Models 3.1, arXiv 2309.14316: a fact seen in one wording is memorised but not
extractable): the base model rewrites each training question in k other wordings, each checked —
a question, its names and numbers kept, the answer not given away, not a copy — and each joins
training with the example's answer. Only single-turn question/answer examples are augmented;
held-out questions are never a source. The model's outputs are cached per dataset version and
model revision (STUDIO_HOME/augment/), so a second run, or a resume, generates nothing.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..scoring import key_facts, norm, rouge_l, states

DISTILL_PROMPT = ("Here is a fact:\n{answer}\n\nUsing this fact, answer the question in one or two "
                  "sentences, in your own words.\nQuestion: {question}")
PARAPHRASE_PROMPTS = (  # one greedy wording each: k paraphrases use the first k
    "Rewrite this question in other words. Keep every name and number. Write only the new "
    "question.\n\nQuestion: {question}",
    "Ask the same thing in a different way, as a customer would ask it. Write only the "
    "question.\n\nQuestion: {question}",
    "Rephrase this question with different words and a different sentence order. Reply with the "
    "question only.\n\nQuestion: {question}",
    "Write a shorter question that asks for the same information. Reply with the question "
    "only.\n\nQuestion: {question}",
    "Write a more polite, longer question that asks for the same information. Reply with the "
    "question only.\n\nQuestion: {question}",
    "How else could someone ask this? Write one question only.\n\nQuestion: {question}",
    "Turn this into a question a beginner would ask. Write only the question.\n\nQuestion: {question}",
    "Write this question as a friend would ask it in a chat. Only the question.\n\nQuestion: {question}",
)
DISTILL_TOKENS, PARAPHRASE_TOKENS = 64, 40
HEDGES = ("i don't know", "i do not know", "not sure", "as an ai", "i cannot", "i can't",
          "there is no information", "not mentioned", "the fact does not")
FORMAT = 1  # bump when prompts or checks change: cached outputs are made again

Generate = Callable[[list[list[dict[str, str]]], int], list[str]]


@dataclass
class Report:
    """What augmentation did, for the run's notes and the report's lever rows."""
    distilled: int = 0
    distill_kept_original: dict[str, int] = field(default_factory=dict)   # reason → count
    paraphrases: int = 0
    paraphrase_dropped: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, str]] = field(default_factory=list)

    def drop(self, bucket: dict[str, int], why: str) -> None:
        bucket[why] = bucket.get(why, 0) + 1


def qa_of(example: dict[str, Any]) -> tuple[list[dict[str, str]], str, str] | None:
    """(messages before the answer, question, answer) of a single-turn chat example, else None."""
    msgs = example.get("messages")
    if not msgs or msgs[-1]["role"] != "assistant" or len(msgs) < 2 or msgs[-2]["role"] != "user":
        return None
    if any(m["role"] == "assistant" for m in msgs[:-1]):
        return None  # multi-turn: left as it is
    return msgs[:-1], msgs[-2]["content"], msgs[-1]["content"]


def distill_problem(restated: str, question: str, answer: str) -> str | None:
    """Why a restatement cannot replace the answer, or None."""
    from ..retention.replay import complete

    text = complete(restated)
    if not text:
        return "empty or cut off"
    if any(h in text.lower() for h in HEDGES):
        return "hedges instead of stating the fact"
    facts = key_facts(answer, question)
    if facts and not all(states(text, f) for f in facts):
        return "lost a key fact"
    if not facts and rouge_l(text, answer) < 0.35:
        return "drifted from the answer"
    if len(text.split()) > 3 * len(answer.split()) + 20:
        return "much longer than the answer"
    return None


def paraphrase_problem(new: str, question: str, answer: str, seen: set[str]) -> str | None:
    """Why a rewritten question cannot join training, or None."""
    q = new.strip().strip('"').strip()
    if not q.endswith("?"):
        return "not a question"
    if norm(q) in seen:
        return "a copy of the question or of another wording"
    if any(not states(q, f) for f in key_facts(question)):
        return "lost a name or number of the question"
    if any(states(q, f) and not states(question, f) for f in key_facts(answer, question)):
        return "gives the answer away"
    n, m = len(q.split()), len(question.split())
    if n < max(3, m // 3) or n > 3 * m + 10:
        return "much shorter or longer than the question"
    return None


def _cache_key(kind: str, rows: list[dict[str, Any]], model_key: str, k: int = 0) -> str:
    h = hashlib.sha256(f"{FORMAT}:{kind}:{model_key}:{k}".encode())
    for r in rows:
        h.update(json.dumps(r.get("messages"), sort_keys=True).encode())
    return h.hexdigest()[:16]


def _cached(path: Path, make: Callable[[], list[Any]]) -> list[Any]:
    from ..faults import atomic_write_text

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    got = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(got, ensure_ascii=False))
    return got


def augment(rows: list[dict[str, Any]], distill: bool, k: int, generate: Generate, cache: Path,
            model_key: str, note: Callable[[str], None]) -> tuple[list[dict[str, Any]], Report]:
    """The training rows with self-distilled answers (if `distill`) and `k` question paraphrases
    each; the model writes only what the cache does not hold yet."""
    rep = Report()
    qa = [(i, *got) for i, ex in enumerate(rows) if (got := qa_of(ex)) is not None]
    out = [dict(ex) for ex in rows]
    if distill and qa:
        def make() -> list[str]:
            note(f"The base model restates {len(qa)} answers in its own words (self-distilled "
                 "targets; once per dataset version and model, then cached).")
            convs = [[*before[:-1], {"role": "user", "content": DISTILL_PROMPT.format(
                answer=answer, question=question)}] for _, before, question, answer in qa]
            return generate(convs, DISTILL_TOKENS)
        said = _cached(Path(cache) / f"distill-{_cache_key('distill', rows, model_key)}.json", make)
        for (i, before, question, answer), restated in zip(qa, said):
            why = distill_problem(restated, question, answer)
            if why:
                rep.drop(rep.distill_kept_original, why)
                continue
            from ..retention.replay import complete

            out[i] = {**rows[i], "messages": [*before, {"role": "assistant", "content": complete(restated)}]}
            rep.distilled += 1
            if len(rep.examples) < 3:
                rep.examples.append({"question": question, "answer": answer, "restated": complete(restated)})
    if k > 0 and qa:
        prompts = PARAPHRASE_PROMPTS[:k]

        def make_p() -> list[list[str]]:
            note(f"The base model rewrites {len(qa)} questions in {len(prompts)} other wording"
                 f"{'s' if len(prompts) > 1 else ''} each (paraphrases; once per dataset version "
                 "and model, then cached).")
            convs = [[{"role": "user", "content": p.format(question=question)}]
                     for _, _, question, _ in qa for p in prompts]
            flat = generate(convs, PARAPHRASE_TOKENS)
            return [flat[j * len(prompts):(j + 1) * len(prompts)] for j in range(len(qa))]
        written = _cached(Path(cache) / f"paraphrase-{_cache_key('paraphrase', rows, model_key, k)}.json",
                          make_p)
        asked = {norm(q) for _, _, q, _ in qa}
        for (i, before, question, _), wordings in zip(qa, written):
            seen = set(asked)
            for new in wordings:
                why = paraphrase_problem(new, question, out[i]["messages"][-1]["content"], seen)
                if why:
                    rep.drop(rep.paraphrase_dropped, why)
                    continue
                q = new.strip().strip('"').strip()
                seen.add(norm(q))
                out.append({**rows[i], "messages": [*before[:-1], {"role": "user", "content": q},
                                                    out[i]["messages"][-1]]})
                rep.paraphrases += 1
    return out, rep
