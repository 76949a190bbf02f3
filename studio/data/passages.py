"""What the document recipes share: the words of a passage, its key phrases, URL-like text, and
the chat example a recipe yields.

Owns content words (stopwords out), normalised text for comparing questions, key phrases by
TextRank (the summa library) with TF-IDF for very short texts, the pattern of URLs and e-mail
addresses (never a topic), and `chat_example` — one user turn, one assistant answer, and where
it came from. No model, no recipe logic.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

STOPWORDS = set("""a about above after again against all am an and any are as at be because been
before being below between both but by can could did do does doing down during each few for from
further had has have having he her here hers him his how i if in into is it its itself just me
more most my no nor not now of off on once only or other our out over own same she should so some
such than that the their them then there these they this those through to too under until up
very was we were what when where which while who whom why will with would you your yours also
may might must shall use used using one two three get gets like make makes see per via yes""".split())

URLISH = re.compile(r"https?://|www\.|\S+@\S+|\.(?:org|com|net|html?)\b", re.I)


def chat_example(user: str, answer: str, **meta: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}],
            "meta": meta}


def words(text: str) -> list[str]:
    return [w for w in re.findall(r"[A-Za-z][A-Za-z0-9'-]+", text.lower()) if w not in STOPWORDS]


def norm_text(t: str) -> str:
    return " ".join(words(t))


def keyphrases(text: str, k: int) -> list[str]:
    """Key phrases by TextRank (the summa library), most central first; TF-IDF when it finds
    none (very short texts)."""
    from summa import keywords as textrank

    try:
        found = [w for w, _ in textrank.keywords(text, words=k * 3, split=True, scores=True)]
    except (ValueError, ZeroDivisionError, IndexError):
        found = []
    picked: list[str] = []
    for w in found:
        w = w.strip()
        if len(w) < 3 or w in STOPWORDS or w.isdigit():
            continue
        if any(w in q or q in w or w.rstrip("s") == q.rstrip("s") for q in picked):
            continue
        picked.append(w)
        if len(picked) == k:
            break
    return picked or top_keywords([text], k, [text])[0]


def top_keywords(chunks: list[str], k: int, corpus: list[str]) -> list[list[str]]:
    """TF-IDF keywords per chunk (unigrams and bigrams of content words); no model needed."""
    df: Counter = Counter()
    grams_per = []
    for c in corpus:
        ws = words(c)
        grams = Counter(ws + [f"{a} {b}" for a, b in zip(ws, ws[1:])])
        grams_per.append(grams)
        df.update(set(grams))
    n = len(corpus)
    out = []
    for c in chunks:
        grams = grams_per[corpus.index(c)] if c in corpus else Counter(words(c))
        scored = sorted(((tf * math.log((1 + n) / (1 + df[g])) * (1.5 if " " in g else 1.0), g)
                         for g, tf in grams.items() if len(g) > 3), reverse=True)
        picked: list[str] = []
        for _, g in scored:
            if not any(g in p or p in g for p in picked):
                picked.append(g)
            if len(picked) == k:
                break
        out.append(picked)
    return out
