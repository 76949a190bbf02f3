"""Known or new: what a Q/A dataset would teach the model, found before training.

Owns asking the base model each training question (greedy, short) and sorting the examples into
"already known" (its answer states every key fact of the expected one — names, and numbers and
years in full, scoring.key_facts; for an answer without any, the words the question does not
already give match at ROUGE-L ≥ KNOWN_AT) and "new", the verdict in plain words — almost all
new (learned slowly; fine-tuning on unknown facts raises hallucination, Gekhman et al. 2024:
train longer and watch the held-out check), almost all known (little to gain), or a mix — and
the same split for any question/answer rows (`split`), which the report uses for its held-out
scores. Data without question/answer pairs
(paragraphs, code) is skipped with the reason.
"""
from __future__ import annotations

from typing import Any

from ..scoring import key_facts, norm, rouge_l, states

KNOWN_AT = 0.5      # ROUGE-L of the base answer against the expected one (answers without key facts)
MOSTLY = 0.85       # share above which a dataset is "almost all" new or known
LIMIT = 64          # training questions asked (a sample of a bigger set)
MAX_NEW_TOKENS = 48


def qa_rows(examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat examples ending in the assistant's turn, as question (the turns before) + answer."""
    out = []
    for ex in examples:
        msgs = ex.get("messages")
        if msgs and len(msgs) >= 2 and msgs[-1]["role"] == "assistant" and msgs[-2]["role"] == "user":
            out.append({"messages": msgs[:-1], "answer": msgs[-1]["content"]})
    return out


def question_of(row: dict[str, Any]) -> str:
    msgs = row.get("messages") or []
    return msgs[-1]["content"] if msgs else ""


def knows(answer: str, expected: str, question: str = "", expect: str | None = None) -> bool:
    """Whether the base model's `answer` already says what `expected` says. A fact it cannot
    know is never "known": every key fact (the row's `expect`, then the numbers and names the
    question does not give) must be stated as whole words — an answer cut at "opened in 19"
    does not state 1987. Without key facts, the words the question does not already give must
    match (ROUGE-L ≥ KNOWN_AT): repeating the question scores nothing."""
    facts = ([expect] if expect else []) + key_facts(expected, question)
    if facts:
        return all(states(answer, f) for f in facts)
    asked = set(norm(question).split())
    return rouge_l(unasked(answer, asked), unasked(expected, asked)) >= KNOWN_AT


def unasked(text: str, asked: set[str]) -> str:
    """`text`'s words that the question does not contain."""
    return " ".join(w for w in norm(text).split() if w not in asked)


def known(base_answers: list[str], rows: list[dict[str, Any]]) -> list[bool]:
    return [knows(a, r["answer"], question_of(r), r.get("expect")) for a, r in zip(base_answers, rows)]


def triage(model, tok, examples: list[dict[str, Any]]) -> dict[str, Any]:
    from ..models.chat import generate_batch

    rows = qa_rows(examples)
    if not rows:
        return {"skipped": True, "reason": "This dataset has no question/answer pairs (it is "
                "paragraphs, code or plain text), so there is nothing to ask the model before "
                "training. The report's held-out check still applies."}
    asked = rows[:LIMIT]
    answers = generate_batch(model, tok, [r["messages"] for r in asked], MAX_NEW_TOKENS)
    flags = known(answers, asked)
    n_known = sum(flags)
    share_new = round(1 - n_known / len(asked), 4)
    if share_new >= MOSTLY:
        verdict = ("Almost all new to the model: it will learn these facts slowly, and training "
                   "on facts a model does not know makes it more likely to make things up. Train "
                   "for more steps and check the report's held-out questions before you trust it.")
    elif share_new <= 1 - MOSTLY:
        verdict = ("The model already answers almost all of these: there is little for training "
                   "to add. Fine-tuning is worth it for facts or a style it does not have yet.")
    else:
        verdict = "A mix of new facts and things the model already knows: a good set to train on."
    ex = [{"question": r["messages"][-1]["content"], "expected": r["answer"], "base": a, "known": k}
          for r, a, k in zip(asked, answers, flags)]
    return {"skipped": False, "asked": len(asked), "of": len(rows), "known": n_known,
            "new": len(asked) - n_known, "share_new": share_new, "verdict": verdict,
            "examples": [e for e in ex if e["known"]][:3] + [e for e in ex if not e["known"]][:3]}


def split(base_answers: list[str], tuned_answers: list[str], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Held-out scores apart for the questions the base model already answered and the new ones."""
    out = {}
    flags = known(base_answers, rows)
    for name, want in (("known", True), ("new", False)):
        pick = [(t, r) for t, r, k in zip(tuned_answers, rows, flags) if k == want]
        out[name] = {"n": len(pick), "tuned_rouge_l":
                     round(sum(rouge_l(t, r["answer"]) for t, r in pick) / len(pick), 4) if pick else None}
    return out
