"""Key-fact weighting: the tokens of an answer's facts count more in the training loss.

Owns `train.fact_weight`'s part of a supervised run. A fact-answer's key facts are what the
report scores and what a user asks after: the numbers and names it states that its question does
not ("612", "Fernwick Labs", "IP65"; scoring.key_facts). A tuned model that answers "It
recognises 611 bird species." has the sentence and not the fact: most of the answer's tokens are
wording it already predicts, and the fact is a token or two of the loss. With weight w each
token that carries a key fact counts w times (the others once), so a step's gradient leans
toward the facts. Here: each example's per-token weights (`weights`, kept on the encoded row
under FACT_W), and the collator wrapper that lays them out as the batch's labels are
(`FactCollator`: padding-free rows end to end, padded rows padded). loss.py applies them.
"""
from __future__ import annotations

import re
from typing import Any

from .loss import FACT_W  # an encoded row's, then a batch's, per-token loss weights (absent: all 1)


def spans(answer: str, question: str) -> list[tuple[int, int]]:
    """Character spans of the answer's key facts (every place each one is stated)."""
    from ..scoring import NUMBER, key_facts

    out = []
    for fact in key_facts(answer, question):
        body = r"\s+".join(re.escape(w) for w in fact.split())
        # a number is a whole number ("12" in "12th", "10am", "500MB"; not in "120", "1.12");
        # a name is whole words
        pattern = (r"(?<![\w.,:])" + body + r"(?![.,:]?\d)") if NUMBER.fullmatch(fact) else \
            (r"(?<!\w)" + body + r"(?!\w)")
        out += [m.span() for m in re.finditer(pattern, answer)]
    return out


def weights(tok, example: dict[str, Any], n_tokens: int, weight: float) -> list[float] | None:
    """Per-token loss weights for one chat example as templates.encode renders it (`n_tokens`
    after truncation): `weight` on tokens inside an assistant answer's key facts, 1 elsewhere;
    None when no answer has a key fact (or the example is plain text, or a preference pair)."""
    from ..data.templates import assistant_spans

    messages = example.get("messages")
    if weight == 1.0 or not messages:
        return None
    text, turns = assistant_spans(tok, messages)
    marked: list[tuple[int, int]] = []
    turn = iter(turns)
    question = ""
    for m in messages:
        if m["role"] == "user":
            question = m["content"]
        if m["role"] != "assistant":
            continue
        start, end = next(turn)
        content = m["content"].strip()  # some templates trim the answer (Llama 3)
        at = text.find(content, start, end) if content else -1
        if at >= 0:
            marked += [(at + a, at + b) for a, b in spans(content, question)]
    if not marked:
        return None
    offsets = tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return [weight if b > a and any(a < e and b > s for s, e in marked) else 1.0
            for a, b in offsets[:n_tokens]]


class FactCollator:
    """Wraps the inner collator: takes each row's FACT_W off before it batches them, then gives
    the batch FACT_W — a float tensor shaped like its labels, 1 where a row has none (replay,
    augmented rows without facts) and on padding (whose labels are ignored anyway)."""

    def __init__(self, inner, packing: bool, padding_side: str = "right"):
        self.inner, self.packing, self.side = inner, packing, padding_side

    def __call__(self, features):
        import torch

        given = [f.get(FACT_W) for f in features]
        if all(w is None for w in given):
            return self.inner(features)
        features = [{k: v for k, v in f.items() if k != FACT_W} for f in features]
        batch = self.inner(features)
        rows = [w if w is not None else [1.0] * len(f["input_ids"]) for w, f in zip(given, features)]
        shape = batch["input_ids"].shape
        if self.packing and shape[0] == 1:
            w = torch.tensor([[x for row in rows for x in row]])
        else:
            pad = [[1.0] * (shape[-1] - len(r)) for r in rows]
            w = torch.tensor([r + p if self.side == "right" else p + r for r, p in zip(rows, pad)])
        if tuple(w.shape) != tuple(shape):
            raise RuntimeError(f"fact weights {tuple(w.shape)} do not line up with the batch {tuple(shape)}")
        batch[FACT_W] = w
        return batch


def summary(rows: list[dict[str, Any]], weight: float) -> str:
    """The run's note: how many examples and answer tokens carry key facts."""
    with_facts = [r for r in rows if r.get(FACT_W)]
    marked = sum(sum(1 for x in r[FACT_W] if x != 1.0) for r in with_facts)
    learned = sum(sum(1 for x in r["labels"] if x != -100) for r in rows)
    return (f"Key facts weighted ×{weight:g}: {len(with_facts)} of your {len(rows)} examples state "
            f"names or numbers their question does not; their {marked} token{'s' * (marked != 1)} (of "
            f"{learned} answer tokens) count{'s' * (marked == 1)} that many times in the loss."
            if with_facts else
            f"train.fact_weight={weight:g} changes nothing here: no answer states a number or a name "
            "that its question does not.")
