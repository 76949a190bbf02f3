"""What each training step sees: the encoded examples, replay, and the collators.

Owns encoding a dataset split with the data step's loss mask (each training example numbered, so a
batch can be told from an evaluation batch and its replay picked reproducibly), the self-replay
examples (the base model's own answers to general prompts: shipped, cached or generated now with
the adapter off), the key facts' token weights (train.fact_weight; facts.py), and batching:
padding-free (examples end to end with their own position ids) or padded, wrapped by a counter
of tokens for the tokens/s figure and — for `train.replay_mode=kl` — by the anchor that appends
replay sequences to every training batch and marks the positions where the tuned model's
next-token distribution is pulled toward the base model's (loss.py computes that term). Knows nothing of the Trainer.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable

from ..data.templates import IGNORE
from ..paths import RUN, Home

INDEX = "example_index"  # a training example's number: present on training batches only


def encode_examples(tok, examples: list[dict[str, Any]], max_len: int,
                    numbered: bool = False, fact_weight: float = 1.0) -> list[dict[str, Any]]:
    """input_ids/labels of the examples that have a learnable token (numbered if asked; with the
    key facts' token weights, facts.py, when `fact_weight` is not 1)."""
    from ..data import templates
    from . import facts

    out = []
    for ex in examples:
        enc = templates.encode(tok, ex, max_len)
        if enc.trainable:
            row: dict[str, Any] = {"input_ids": enc.input_ids, "labels": enc.labels}
            if numbered:
                row[INDEX] = len(out)
            w = facts.weights(tok, ex, len(enc.input_ids), fact_weight) if fact_weight != 1.0 else None
            if w:
                row[facts.FACT_W] = w
            out.append(row)
    return out


def encode_split(tok, folder: Path, split: str, max_len: int) -> list[dict[str, Any]]:
    from ..data import prepare

    return encode_examples(tok, prepare.read_split(folder, split), max_len)


def replay_count(ratio: float, n_train: int, whole: bool = False) -> tuple[int, str | None]:
    """How many self-replay examples the run uses (`ratio` per training example, or with
    `whole` every prompt of the set), and why none when the set is missing."""
    from ..retention import replay
    from ..errors import DataError

    if ratio <= 0:
        return 0, None
    try:
        total = len(replay.prompts())
        return (total if whole else min(total, round(ratio * n_train))), None
    except DataError as e:
        return 0, f"Training without self-replay: {e}"


def anchor_draws(t, per_batch: int, n_train: int) -> int:
    """How many replay sequences a run's batches draw in all (steps × micro-batches × per batch,
    every process together): a pool larger than that is never seen whole, so a short run takes
    the base model's distributions on that many sequences only, not on the whole set."""
    import math
    import os

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    steps = t.max_steps or math.ceil(t.epochs * n_train / (t.micro_batch * t.grad_accum * world))
    return max(1, steps * t.grad_accum * world * per_batch)


def replay_examples(cache_dir: Path, model_ref: str, model_path: Path, model, tok, n: int, seed: int,
                    short_weight: float, note: Callable[[str], None], checked: bool = False
                    ) -> tuple[list[dict[str, Any]], int, int]:
    """`n` self-replay chat examples: the base model's own answers (shipped, cached under
    `cache_dir`, or generated now with the adapter off) — with `checked`, only the right ones
    where the right answer is known (replay.checked) — the short factual ones `short_weight`
    times as likely to be among them; how many answers there were to choose from, and how many
    wrong ones were left out."""
    from ..retention import replay
    from ..models.chat import generate_batch
    from ..models.chat import evaluating

    def generate(prompts: list[str]) -> list[str]:
        note(f"Generating the base model's answers to {len(prompts)} general prompts for "
             "self-replay (once per model; cached).")
        with model.disable_adapter(), evaluating(model):
            return generate_batch(model, tok, [[{"role": "user", "content": q}] for q in prompts],
                                  replay.MAX_NEW_TOKENS)

    rows = replay.answers(cache_dir, model_ref, model_path, generate, note)
    rows, wrong = replay.checked(rows) if checked else (rows, 0)
    return replay.mix(rows, n, 1.0, seed, short_weight), len(rows), wrong


class CountingCollator:
    """Wraps a collator and counts the real (non-padding) tokens it hands out, replay included."""

    def __init__(self, inner):
        self.inner, self.tokens = inner, 0

    def __call__(self, features):
        batch = self.inner(features)
        mask = batch.get("attention_mask") if hasattr(batch, "get") else None
        self.tokens += int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())
        return batch


class AnchorCollator:
    """Every training batch gets `per_batch` replay sequences appended (picked by a generator
    seeded with the run's seed and the batch's example numbers, so a resumed run sees the same
    ones), plus what the KL term needs (anchor.py): `kl_mask` (the positions whose next token is
    in the same replay sequence), `kl_rows`/`kl_from` (the trailing rows and first column that
    hold the replay part: padding-free, one row's tail; padded, the last rows), and the base
    model's top tokens and log-probabilities at those positions, in order (`kl_ids`, `kl_logp`).
    Pool entries are {input_ids, targets: (ids, logp), weight (optional, 1 if absent)}: with any
    weight other than 1 a batch draws entries ∝ their weights (train.replay_short); with all 1 it
    draws the plain seeded sample it always did, so earlier runs resume and repeat the same.
    Evaluation batches (no example numbers) pass through unchanged."""

    def __init__(self, inner, pool: list[dict[str, Any]], per_batch: int, seed: int, packing: bool):
        self.inner, self.pool, self.per_batch = inner, pool, per_batch
        self.seed, self.packing = seed, packing

    def __call__(self, features):
        import torch

        ids = [f[INDEX] for f in features if INDEX in f]
        features = [{k: v for k, v in f.items() if k != INDEX} for f in features]  # never edit the set
        if not ids or not self.pool or self.per_batch <= 0:
            return self.inner(features)
        rng = random.Random(self.seed * 1_000_003 + min(ids) * 7_919 + len(ids))
        k = min(self.per_batch, len(self.pool))
        weights = [p.get("weight", 1.0) for p in self.pool]
        if all(w == 1.0 for w in weights):
            order = rng.sample(range(len(self.pool)), k)
        else:
            from ..retention.replay import weighted_order

            order = weighted_order(rng, weights, k)
        picked = [self.pool[i] for i in order]
        replay = [{"input_ids": p["input_ids"], "labels": [IGNORE] * len(p["input_ids"])} for p in picked]
        batch = self.inner(features + replay)
        width = batch["input_ids"].shape[-1]
        if self.packing:  # one row: the replay sequences are its last tokens
            tail = sum(len(p["input_ids"]) for p in picked)
            mask = torch.zeros(1, width, dtype=torch.bool)
            at = width - tail
            for p in picked:
                mask[0, at:at + len(p["input_ids"]) - 1] = True
                at += len(p["input_ids"])
            batch.update(kl_mask=mask, kl_rows=1, kl_from=width - tail)
        else:  # padded rows: the last rows; the attention mask says where their tokens are
            real = batch["attention_mask"].bool()
            mask = torch.zeros(real.shape, dtype=torch.bool)
            for r in range(len(features), len(features) + len(picked)):
                where = real[r].nonzero().flatten()
                mask[r, where[:-1]] = True  # the last token's next one is not in the sequence
            batch.update(kl_mask=mask, kl_rows=len(picked), kl_from=0)
        batch.update(kl_ids=torch.cat([p["targets"][0] for p in picked]),
                     kl_logp=torch.cat([p["targets"][1] for p in picked]))
        return batch


class OneSequence:
    """A padding-free batch of one sequence goes without position ids: the model numbers its
    tokens itself and attention runs causal with no [tokens × tokens] mask (transformers builds
    one from packed position ids) — at long lengths, with micro-batch 1, that mask is the
    largest buffer of all (memory/estimate.py)."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, features):
        batch = self.inner(features)
        if len(features) == 1:
            batch.pop("position_ids", None)
        return batch


def make_collator(tok, packing: bool, anchor: tuple[list[dict[str, Any]], int, int] | None = None,
                  fact_weights: bool = False) -> CountingCollator:
    """The batching the run uses; `anchor` = (replay pool, sequences per batch, seed) for KL;
    `fact_weights`: the rows carry key-fact token weights (facts.py) to lay out with them."""
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening

    if packing:
        inner = OneSequence(DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE))
    else:
        inner = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=IGNORE)
    if fact_weights:
        from .facts import FactCollator

        inner = FactCollator(inner, packing, getattr(tok, "padding_side", "right") or "right")
    if anchor is not None:
        pool, per_batch, seed = anchor
        inner = AnchorCollator(inner, pool, per_batch, seed, packing)
    return CountingCollator(inner)


def assemble(run_dir: Path, spec, tok, model, model_path: Path, rows: list[dict[str, Any]],
             fresh: bool, say: Callable[[str], None]) -> tuple[list[dict[str, Any]], tuple | None]:
    """The run's training set and its KL anchor (or None): the user's examples — self-distilled
    and paraphrased when the spec asks (augment.py) — and self-replay, mixed in (replay_mode ce)
    or carried by every batch as the anchor (kl) — in curriculum order when the spec asks
    (curriculum.py). What each lever did is kept in levers.json for the report; `fresh` (not a
    resume) says it in the run's notes too."""
    import json

    from ..faults import atomic_write_text

    t = spec.train
    home = Home.of_run(run_dir)
    quiet = say if fresh else (lambda text: None)
    levers: dict[str, Any] = {"replay_mode": t.replay_mode, "replay": t.replay}
    if t.self_distill or t.paraphrases:
        rows, levers["augment"] = augmented(spec, tok, model, model_path, home, rows, say, quiet)
    train_set = encode_examples(tok, rows, t.max_len, numbered=True, fact_weight=t.fact_weight)
    if t.fact_weight != 1.0:
        from .facts import FACT_W, summary

        levers["fact_weight"] = {"weight": t.fact_weight, "examples": len(train_set),
                                 "with_facts": sum(FACT_W in r for r in train_set)}
        quiet(summary(train_set, t.fact_weight))
    train_set, anchor, levers["replayed"], levers["replay_wrong"] = mix_replay(
        spec, tok, model, model_path, home, train_set, say, quiet)
    levers["safety_replayed"] = safety_replay(spec, tok, model, model_path, home, len(rows), train_set, say, quiet)
    if t.order == "curriculum":
        from . import curriculum

        train_set, levers["curriculum"] = curriculum.arrange(train_set, model, tok, t.seed, INDEX, quiet,
                                                             run_dir / RUN.curriculum)
    atomic_write_text(run_dir / RUN.levers, json.dumps(levers, indent=1))
    return train_set, anchor


def augmented(spec, tok, model, model_path: Path, home: Home, rows: list[dict[str, Any]], say, quiet
              ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The user's rows self-distilled and paraphrased as the spec asks (augment.py, the base
    model writing with the adapter off), and what that did, for levers.json."""
    from ..models.chat import evaluating, generate_batch
    from ..retention.replay import model_key
    from . import augment

    t = spec.train

    def generate(convs, max_new):
        with model.disable_adapter(), evaluating(model):
            return generate_batch(model, tok, convs, max_new)
    rows, rep = augment.augment(rows, t.self_distill, t.paraphrases, generate, home.augment,
                                model_key(model_path), say)
    did = {"distilled": rep.distilled, "kept_original": rep.distill_kept_original,
           "paraphrases": rep.paraphrases, "paraphrases_dropped": rep.paraphrase_dropped,
           "examples": rep.examples}
    if t.self_distill:
        quiet(f"Self-distilled targets: {rep.distilled} of the answers are the base model's own "
              "restatements; the rest kept their wording (" + (", ".join(
                  f"{n} {why}" for why, n in rep.distill_kept_original.items()) or "none") + ").")
    if t.paraphrases:
        quiet(f"Paraphrases: {rep.paraphrases} rewritten questions joined training; "
              f"{sum(rep.paraphrase_dropped.values())} were left out (" + (", ".join(
                  f"{n} {why}" for why, n in rep.paraphrase_dropped.items()) or "none") + ").")
    return rows, did


def mix_replay(spec, tok, model, model_path: Path, home: Home, train_set: list[dict[str, Any]], say, quiet
               ) -> tuple[list[dict[str, Any]], tuple | None, int, int]:
    """Self-replay: mixed into the training set (replay_mode ce) or carried by every batch as the
    KL anchor (kl) — the training set, the anchor (or None), how many replay examples and how
    many of the base model's wrong answers train.replay_checked left out."""
    from ..retention.replay import model_key, short_prompts

    t = spec.train
    # kl: every batch draws its replay from the whole set (the pool's size costs nothing per step;
    # its base distributions are taken once, for as many sequences as the run can draw)
    n_replay, why_not = replay_count(t.replay, len(train_set), whole=t.replay_mode == "kl")
    if why_not:
        say(why_not)
    if t.replay_checked and not t.replay:
        quiet("train.replay_checked=true changes nothing here: self-replay is off (train.replay=0).")
    kl = t.replay_mode == "kl"  # kl weighs each batch's draw; ce weighs which answers are mixed in
    replay, answered, wrong = replay_examples(home.replay, spec.model, model_path, model, tok, n_replay, t.seed,
                                              1.0 if kl else t.replay_short, say, t.replay_checked
                                              ) if n_replay else ([], 0, 0)
    if wrong:
        quiet(f"Replay: {wrong} of the base model's answers to questions with a known answer were wrong "
              "and are left out, so training rehearses what it knows, not its mistakes "
              "(train.replay_checked).")
    short = short_prompts()
    n_short = sum(ex["messages"][0]["content"] in short for ex in replay)
    if replay and t.replay_short != 1.0 and (not n_short or (not kl and len(replay) == answered)):
        quiet(f"train.replay_short={t.replay_short:g} changes nothing here: " + (
            "the base model finished none of the replay set's short factual answers." if not n_short
            else "every replay answer is mixed in anyway (lower train.replay to choose among them)."))
    anchor = None
    if replay and kl:
        from .anchor import cached_targets

        per_batch = max(1, round(t.replay * t.micro_batch))
        pool = []
        for ex in replay[:anchor_draws(t, per_batch, len(train_set))]:
            for row in encode_examples(tok, [ex], t.max_len):  # none when it has no learnable token
                row["weight"] = t.replay_short if ex["messages"][0]["content"] in short else 1.0
                pool.append(row)
        for row, target in zip(pool, cached_targets(home.replay, model_key(model_path), model, pool, say)):
            row["targets"] = target
        anchor = (pool, per_batch, t.seed)
        quiet(f"Soft anchor: each batch of {t.micro_batch} examples carries {anchor[1]} of the base "
              f"model's own answers to general prompts, on which the tuned model's next-token "
              f"distribution is pulled toward the base model's (KL, weight {t.replay_weight:g})"
              + (f"; its {n_short} short factual answers are drawn {t.replay_short:g}× as readily as "
                 "the rest." if t.replay_short != 1.0 and n_short else "."))
    elif replay:
        train_set += encode_examples(tok, replay, t.max_len)
        quiet(f"Self-replay: {len(replay)} of the base model's own answers to general prompts are "
              f"mixed into training (train.replay={t.replay:g}"
              + (f"; {n_short} of them short factual answers, weighted ×{t.replay_short:g}"
                 if t.replay_short != 1.0 else "") + "), so it keeps what it could already do.")
    elif n_replay:
        say("Training without self-replay: the base model gave no finished answer to the general "
            "prompts (they are cut off or empty), so there is nothing to replay.")
    return train_set, anchor, len(anchor[0]) if anchor else len(replay), wrong


def safety_replay(spec, tok, model, model_path: Path, home: Home, n_train: int,
                  train_set: list[dict[str, Any]], say, quiet) -> int:
    """train.safety_replay: the base model's own refusals mixed in (safety.py); how many."""
    from ..retention import safety
    from ..retention.base_answers import memo_for
    from ..data.templates import has_chat_template

    t = spec.train
    if t.safety_replay <= 0 or not has_chat_template(tok):
        return 0
    want = max(1, round(t.safety_replay * n_train))
    rows = safety.replay_examples(model, tok, want, t.seed, memo_for(home.replay, spec.model, model_path, model), say)
    if not rows:
        quiet("Safety replay is on, but the base model refused none of the harmful requests it was "
              "asked, so there is no refusal to keep; training without it.")
        return 0
    train_set += encode_examples(tok, rows, t.max_len)
    quiet(f"Safety replay: {len(rows)} of the base model's own refusals to harmful requests are mixed "
          f"into training (train.safety_replay={t.safety_replay:g}), so it keeps refusing them.")
    return len(rows)
