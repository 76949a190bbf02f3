"""Curriculum ordering (train.order=curriculum): a supervised run's examples, easy → hard.

Owns the order of the training set when the user asks for one: each example's difficulty is the
base model's mean loss on what the example trains (its first answer on, the adapter off, in the
data check's batched pass: data/suspects.sequence_losses); the examples are grouped into topics
(TF-IDF of their text, k-means, about one topic per 16 examples, at most 8) and ranked easy →
hard within each topic; the run then takes them by that rank with the topics in turn, so no topic
comes all at once. Replay examples mixed into the set (replay_mode ce, safety replay) are spread
evenly through it. The trainer reads the set in this order on every pass (transformers'
sequential sampler); the order is kept in the run folder (curriculum.json), so a resumed run
reads it back and skips exactly what it had seen. Published gains from such orderings are about a point and sometimes negative;
benchmarks/RESULTS.md has what we measured.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

TOPIC_SIZE = 16   # about one topic per this many examples
MAX_TOPICS = 8


def difficulty(model, tok, rows: list[dict[str, Any]]) -> list[float]:
    """The base model's mean loss per token of each encoded example from its first trained token
    (labels != -100) on — a multi-turn example's later questions included —, the adapter off."""
    from ..data.suspects import sequence_losses
    from ..data.templates import IGNORE
    from ..models.chat import evaluating

    enc = []
    for r in rows:
        start = next((i for i, y in enumerate(r["labels"]) if y != IGNORE), len(r["labels"]) - 1)
        enc.append((list(r["input_ids"]), max(1, start)))
    with model.disable_adapter(), evaluating(model):
        return sequence_losses(model, tok, enc)


def topics(texts: list[str], seed: int) -> list[int]:
    """A topic number per text: k-means over TF-IDF, k ≈ len/TOPIC_SIZE (1 for small sets)."""
    k = max(1, min(MAX_TOPICS, round(len(texts) / TOPIC_SIZE)))
    if k == 1:
        return [0] * len(texts)
    from sklearn.cluster import KMeans
    from sklearn.feature_extraction.text import TfidfVectorizer

    try:
        vectors = TfidfVectorizer(stop_words="english", sublinear_tf=True).fit_transform(texts)
    except ValueError:  # no word to tell them apart (numbers, stop words only): one topic
        return [0] * len(texts)
    k = min(k, vectors.shape[0], max(1, len({tuple(v.indices) for v in vectors})))
    if k == 1:
        return [0] * len(texts)
    return [int(t) for t in KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(vectors)]


def order(n: int, user: list[int], losses: dict[int, float], topic: dict[int, int]) -> list[int]:
    """Positions 0..n-1 in curriculum order: the `user` examples by their rank within their topic
    (easy first, topics in turn at each rank), the rest spread evenly between them."""
    by_topic: dict[int, list[int]] = {}
    for i in user:
        by_topic.setdefault(topic[i], []).append(i)
    key: dict[int, tuple[float, int]] = {}
    for t, members in by_topic.items():
        members.sort(key=lambda i: (losses[i], i))
        for rank, i in enumerate(members):
            key[i] = ((rank + 0.5) / len(members), t)
    ordered = sorted(user, key=lambda i: key[i])
    others = [i for i in range(n) if i not in key]
    place = {i: (p + 0.5) / len(ordered) for p, i in enumerate(ordered)}
    place.update({i: (p + 0.5) / len(others) for p, i in enumerate(others)})
    return sorted(range(n), key=lambda i: (place[i], i in key))


def arrange(train_set: list[dict[str, Any]], model, tok, seed: int, index_key: str,
            say: Callable[[str], None], kept: Path | None = None
            ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The training set in curriculum order, and what was done (for levers.json and the note).
    The order is kept in `kept` (the run folder's curriculum.json) and read back from it, so a
    resumed run — on another machine or library version too — skips the same examples."""
    t0 = time.time()
    user = [i for i, r in enumerate(train_set) if index_key in r]
    if len(user) < 2:
        return train_set, {"examples": len(user), "topics": 0}
    stored = _read(kept, len(train_set))
    if stored is not None:
        return [train_set[i] for i in stored["order"]], {**stored["done"], "read_back": True}
    scored = difficulty(model, tok, [train_set[i] for i in user])
    losses = dict(zip(user, scored))
    texts = [tok.decode(train_set[i]["input_ids"], skip_special_tokens=True) for i in user]
    topic = dict(zip(user, topics(texts, seed)))
    ordered = order(len(train_set), user, losses, topic)
    done = {"examples": len(user), "topics": len(set(topic.values())),
            "easiest": round(min(scored), 3), "hardest": round(max(scored), 3),
            "first": [train_set[i][index_key] for i in ordered if i in losses][:8],
            "seconds": round(time.time() - t0, 1)}
    if kept is not None:
        from ..faults import atomic_write_text

        atomic_write_text(kept, json.dumps({"size": len(train_set), "order": ordered, "done": done}))
    say(f"Curriculum: {done['examples']} examples ordered easy → hard by the base model's loss "
        f"({done['easiest']:.2f} to {done['hardest']:.2f} per token), {done['topics']} topic(s) taken "
        f"in turn; every pass reads them in this order ({done['seconds']:g} s to order).")
    return [train_set[i] for i in ordered], done


def _read(kept: Path | None, size: int) -> dict[str, Any] | None:
    """The order kept by an earlier start of this run, if it fits this training set."""
    try:
        data = json.loads(Path(kept).read_text()) if kept is not None else None
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("size") != size or sorted(data.get("order", [])) != list(range(size)):
        return None
    return data
