"""Suspect rows: examples that are probably wrong, each with a score and a one-line why.

Owns the signals that need no labels (the rows are never dropped here; the Check lists them and
the user decides):
- the base model's view, in batched forward passes that score only the answer tokens (the
  vocabulary projection runs on those alone; `sequence_losses` is also the curriculum's
  difficulty, train/curriculum.py): IFD, the answer's loss with its question over its
  loss without one ("From Quantity to Quality", NAACL 2024; Superfiltering, ACL 2024, shows a
  small model computes it well enough) — IFD ≥ 1 means the question does not help predict the
  answer; loss outliers (robust z-score over the set); and answers that fit another row's
  question better than their own (the answer's loss given the question that shares most of its
  rarer words, TF-IDF, against its loss given its own: swapped answers, as CLEAR corrupts data);
- without the model: questions that say nothing without their chunk ("What are these
  functions?") and, for pairs generated from documents, answers whose words are not in their
  chunk.
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable

from ..errors import Cancelled

IFD_AT = 1.0          # IFD at or above this: the question does not help predict the answer
SWAP_MARGIN = 0.25    # nats/token another row's question must explain the answer better by
OUTLIER_Z = 3.5       # robust z (median, 1.4826·MAD) of the answer's loss given its question
SUPPORTED_AT = 0.6    # share of an answer's content words that must be in its chunk
MAX_QUESTION = 96     # tokens of a question scored (the end is kept: the ask is usually there)
MAX_ANSWER = 48       # tokens of an answer scored
BATCH_TOKENS = 3072   # padded tokens per forward pass
HEAD_ROWS = 512       # answer positions per vocabulary projection (512 × 49k fp32 logits ≈ 100 MB)
# a question that points at text the reader does not have: "What are these functions?"
POINTS = re.compile(r"\b(these|those|this|that|the following|the above|above|below|here|"
                    r"the relevant|the given|the described|the mentioned|the same|it|they|them)\b", re.I)
NAMED = re.compile(r"[A-Z][a-z]+[A-Z]|[A-Za-z]+\(|_|\d|\b[A-Z]{2,}\b|`|\"|'[^']+'|\b[A-Z][a-z]+\b")
VAGUE_NOUNS = re.compile(r"\b(functions?|code|example|section|chapter|text|passage|part|document|"
                         r"thing|things|options?|values?|steps?|items?|method|commands?|table|"
                         r"figure|list|one|ones)\b", re.I)


_FOLD = re.compile(r"[\W_]+")


def fold(text: str) -> str:
    """Case, punctuation and spacing folded, as duplicates are compared."""
    return _FOLD.sub(" ", text.lower()).strip()


def show(r) -> dict[str, Any]:
    """A row (checks.Row) as the Check lists it: where, its question and answer (or text)."""
    return {"where": r.where(), "question": r.question, "answer": r.answer[:300],
            "text": "" if r.question else r.text[:300]}


def context_free(question: str) -> bool:
    """Whether a question only makes sense beside its chunk: it points ("these", "the
    relevant") at something vague and names nothing a reader could look up."""
    q = question.strip()
    body = q[1:] if q[:1].isupper() else q  # the first word is capitalised anyway
    words = re.findall(r"\w+", q)
    return (bool(POINTS.search(q)) and not NAMED.search(body) and len(words) <= 12
            and (bool(VAGUE_NOUNS.search(q)) or len(words) <= 6))


def support(answer: str, chunk: str) -> float:
    """Share of the answer's content words that its chunk contains."""
    from .passages import words

    a, c = words(answer), set(words(chunk))
    return sum(w in c for w in a) / len(a) if a else 1.0


def alternatives(questions: list[str], answers: list[str]) -> list[int | None]:
    """For each answer, the other row whose question shares more of its rarer words (TF-IDF
    cosine) than its own question does; rows with the same answer are not alternatives. None
    where no other question does: the model then has nothing to compare (a third of the passes
    it would otherwise make, on the sample FAQ)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(stop_words="english", sublinear_tf=True).fit(questions + answers)
    a, q = vec.transform(answers), vec.transform(questions)
    sim = (a @ q.T).toarray()
    owns = sim.diagonal().copy()  # each answer against its own question
    folded = [fold(a) for a in answers]
    out: list[int | None] = []
    for i in range(len(answers)):
        sim[i, i] = -1
        order = sim[i].argsort()[::-1]
        j = next((int(j) for j in order[:8] if sim[i, j] > 0 and folded[j] != folded[i]), None)
        j = j if j is not None and sim[i, j] >= owns[i] else None
        out.append(j)
    return out


def _encode(tok, question: str | None, answer: str, prompts: dict) -> tuple[list[int], int]:
    """Token ids of (empty system turn, question, answer) and where the answer starts."""
    from .templates import render_text

    if question not in prompts:
        msgs = [{"role": "user", "content": question or ""}]
        try:
            text = render_text(tok, [{"role": "system", "content": ""}, *msgs], True)
        except Exception:  # a template without a system turn
            text = render_text(tok, msgs, True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        prompts[question] = ids
    head = prompts[question]
    if len(head) > MAX_QUESTION + 24:  # keep the template's start and the question's end
        head = head[:8] + head[-(MAX_QUESTION + 16):]
    ans = tok(answer, add_special_tokens=False)["input_ids"][:MAX_ANSWER] + [tok.eos_token_id]
    return head + ans, len(head)


def answer_losses(model, tok, pairs: list[tuple[str | None, str]], tick: Callable[[int], None],
                  cancel: Any = None) -> list[float]:
    """Mean loss per answer token of each (question, answer); question None = asked nothing.
    The pairs asked something and those asked nothing are scored apart, so that each group's
    shared opening (the chat template's, ≈ a third of a short FAQ row's tokens) is run once per
    batch instead of once per row; sequences are sorted by length and batched to BATCH_TOKENS,
    in bfloat16 on a CPU; only answer positions go through the vocabulary projection."""
    prompts: dict = {}
    enc = [_encode(tok, q, a, prompts) for q, a in pairs]
    asked = [i for i, (q, _) in enumerate(pairs) if q is not None]
    return sequence_losses(model, tok, enc, [asked, [i for i, (q, _) in enumerate(pairs) if q is None]],
                           tick, cancel)


def sequence_losses(model, tok, enc: list[tuple[list[int], int]], groups: list[list[int]] | None = None,
                    tick: Callable[[int], None] = lambda n: None, cancel: Any = None) -> list[float]:
    """Mean loss per token of each sequence (token ids, position its scored part starts at),
    scored by `groups` of indices (default: one) that each share their opening."""
    import torch

    out = [0.0] * len(enc)
    dev = model.device
    with torch.inference_mode(), torch.autocast(dev.type, torch.bfloat16, enabled=dev.type == "cpu"):
        for group in groups if groups is not None else [list(range(len(enc)))]:
            if group:
                _group_losses(model, tok, enc, group, out, tick, cancel)
    return out


def _group_losses(model, tok, enc: list[tuple[list[int], int]], group: list[int], out: list[float],
                  tick: Callable[[int], None], cancel: Any) -> None:
    """`sequence_losses` for one group of sequences (indices into `enc`), written into `out`, in
    batches of similar length (models/batching.py) that run the group's shared opening once. A
    model whose cache cannot be repeated is run without it."""
    import inspect

    from ..models.batching import shared_prefix

    seqs = [enc[k][0] for k in group]
    shared = min(shared_prefix(seqs), min(enc[k][1] for k in group) - 1) if len(seqs) > 1 else 0
    if "cache" not in inspect.signature(model.get_decoder().forward).parameters:
        shared = 0  # transformers' name for a past key/value cache
    try:
        _scored(model, tok, enc, group, out, tick, cancel, shared)
    except (TypeError, AttributeError, NotImplementedError):  # a cache that cannot be repeated
        if not shared:
            raise
        _scored(model, tok, enc, group, out, tick, cancel, 0)


def _scored(model, tok, enc, group: list[int], out: list[float], tick, cancel, shared: int) -> None:
    from ..models.batching import by_length

    for batch in by_length([len(enc[k][0]) for k in group], BATCH_TOKENS, shared):
        if cancel is not None and cancel.is_set():
            raise Cancelled("Cancelled; the check was not saved.")
        for j, loss in zip(batch, _batch_losses(model, tok, [enc[group[j]] for j in batch], shared)):
            out[group[j]] = loss
        tick(len(batch))


def _batch_losses(model, tok, seqs: list[tuple[list[int], int]], shared: int) -> list[float]:
    """One forward pass over a batch whose first `shared` tokens are the same in every row: those
    are run once (batch 1) and their keys and values repeated for the rest, right-padded."""
    import torch

    decoder, head, dev = model.get_decoder(), model.get_output_embeddings(), model.device
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    width = max(len(s) for s, _ in seqs) - shared
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    for r, (seq, _) in enumerate(seqs):
        ids[r, :len(seq) - shared] = torch.tensor(seq[shared:])
    past = None
    if shared:
        past = decoder(input_ids=torch.tensor([seqs[0][0][:shared]], device=dev), use_cache=True).cache
        past.batch_repeat_interleave(len(seqs))
    # no padding mask: the padding is on the right, and causal attention never lets a real token
    # see what comes after it (a plain causal mask lets attention take its fast path)
    hidden = decoder(input_ids=ids.to(dev), cache=past, use_cache=past is not None).last_hidden_state
    # the positions that predict each answer, all rows' together: one projection per HEAD_ROWS
    # positions instead of one per row (≈3× faster on a CPU)
    picks = [hidden[r, start - 1 - shared:len(seq) - 1 - shared] for r, (seq, start) in enumerate(seqs)]
    h = torch.cat(picks)
    target = torch.tensor([t for seq, start in seqs for t in seq[start:]], device=dev)
    nll = torch.cat([torch.nn.functional.cross_entropy(head(h[j:j + HEAD_ROWS]).float(), target[j:j + HEAD_ROWS],
                                                       reduction="none") for j in range(0, len(h), HEAD_ROWS)])
    out, at = [], 0
    for p in picks:
        out.append(float(nll[at:at + len(p)].mean()))
        at += len(p)
    return out


def find(model, tok, rows: list, progress: Callable[[float, str], None] | None = None,
         cancel: Any = None) -> list[dict[str, Any]]:
    """Every suspect among `rows` (checks.Row): [{row, line, why, score, kind}], strongest first
    within each kind. `model` None: only the signals that need no model."""
    out: list[dict[str, Any]] = []
    qa = [r for r in rows if r.question and r.answer]
    for r in qa:
        if context_free(r.question):
            out.append(flag(r, "context", 1.0, "the question says nothing without its document "
                            "chunk (it points at 'these'/'the relevant' text the reader never sees)"))
        chunk = (r.example.get("meta") or {}).get("chunk")
        if chunk:
            s = support(r.answer, chunk)
            if s < SUPPORTED_AT:
                out.append(flag(r, "unsupported", round(1 - s, 3), f"only {s:.0%} of the answer's "
                                "words are in the chunk it was written from: not supported by it"))
    if model is None or len(qa) < 2:
        return out
    alt = alternatives([r.question for r in qa], [r.answer for r in qa])
    asks = [(r.question, r.answer) for r in qa] + [(None, r.answer) for r in qa] + \
           [(qa[j].question, r.answer) for r, j in zip(qa, alt) if j is not None]
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress:
            progress(done[0] / len(asks), f"base model: {done[0]} of {len(asks)} answers scored")
    losses = answer_losses(model, tok, asks, tick, cancel)
    given, alone, swapped = losses[:len(qa)], losses[len(qa):2 * len(qa)], iter(losses[2 * len(qa):])
    med = sorted(given)[len(given) // 2]
    mad = sorted(abs(x - med) for x in given)[len(given) // 2] * 1.4826 or 1e-6
    for r, lc, lu, j in zip(qa, given, alone, alt):
        ifd = math.exp(lc - lu)
        if ifd >= IFD_AT:
            out.append(flag(r, "ifd", round(ifd, 3), f"IFD {ifd:.2f} ≥ 1: the question does not help "
                            "the base model predict this answer (a mismatched pair?)"))
        z = (lc - med) / mad
        if z >= OUTLIER_Z:
            out.append(flag(r, "loss", round(z, 2), f"loss outlier: the base model finds this answer "
                            f"far less likely than the others' (robust z {z:.1f})"))
        if j is not None:
            better = lc - next(swapped)
            if better > SWAP_MARGIN:
                other = qa[j]
                out.append(flag(r, "swapped", round(better, 3), f"the answer fits {other.where()}'s "
                                f"question better than its own (\"{other.question[:60]}\")", other))
    return out


def flag(r, kind: str, score: float, why: str, other=None) -> dict[str, Any]:
    return {"row": r.index, "line": r.line, "file": r.file, "kind": kind, "why": why,
            "score": score, "example": show(r), "neighbour": show(other) if other else None}
