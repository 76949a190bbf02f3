"""The report of a run that started from another (--from-run): what it kept of the start run.

Owns the start run's figures — fact match (or ROUGE-L) on the same held-out questions, general-
text perplexity and the share of the base's known general questions it answers, measured like
the tuned side's: the tuned side at strength 0 of the second update (retention/delta.py), so the
one copy of the weights serves — the tuned figures against them (`vs_start`), and the sentence
that says which of the two the run kept. Does not measure the base or tuned sides (report.py),
nor choose the adapter (the forgetting budget still chooses against the base).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

NOISE = 0.05  # a fact match this much below the start's is one answer in 20: still "kept"


def start_figures(pair, tok, run: dict[str, Any], start_id: str, rows: list[dict[str, Any]],
                  probe, known: dict[str, Any], max_new_tokens: int) -> dict[str, Any] | None:
    """The start run's figures on the report's sets; None for a fresh run (or one started
    before the start adapter was kept with it: there is nothing to measure the start by)."""
    from ..data.templates import mean_loss
    from ..models.chat import generate_batch
    from ..retention.delta import start_dir
    from ..retention.replay import knows, retention_answers
    from ..retention.strength import at
    from ..scoring import ppl, score

    if not start_id or not run.get("path") or start_dir(run["path"]) is None:
        return None
    with pair.side("tuned") as m, at(m, Path(run["path"]), 0.0):
        pl = ppl(mean_loss(m, tok, probe, 512))
        got = generate_batch(m, tok, [r["messages"] for r in rows], max_new_tokens) if rows else []
        ok = knows(retention_answers(m, tok, known["rows"]), known["rows"]) if known["rows"] else []
    got_score = score(got, rows) if rows else {}
    return {"id": start_id, "fact_match": got_score.get("fact_match"), "rouge_l": got_score.get("rouge_l"),
            "probe_ppl": pl, "kept": round(sum(ok) / len(ok), 4) if ok else None,
            "known_idx": [i for i, good in enumerate(ok) if good]}


def against_start(start: dict[str, Any], tuned: dict[str, Any], name: str,
                  kept: dict[str, Any]) -> dict[str, Any]:
    """The tuned figures against the start's, and in plain words which of the two it kept."""
    scored = tuned.get(name) or {}
    key = "fact_match" if start.get("fact_match") is not None else "rouge_l"
    before, after = start.get(key), scored.get(key)
    sp, tp = start.get("probe_ppl"), tuned.get("probe_ppl")
    known, still = start.get("known_idx") or [], set(kept.get("still") or [])
    out = {"metric": key, "set": name, "start": before, "tuned": after,
           "change": round(after - before, 4) if before is not None and after is not None else None,
           "probe_ppl_rise": round(tp / sp - 1, 4) if sp and tp else None,
           "kept": round(sum(i in still for i in known) / len(known), 4) if known else None}
    out["kept_learned"] = None if out["change"] is None else out["change"] >= -NOISE
    out["words"] = words(out, start["id"])
    return out


def first_words(vs: dict[str, Any], start_id: str, head: str, verdict: str) -> tuple[str, str]:
    """(headline, verdict) of a second update: judged against the base as any run is, and
    against its start after that — but when it lost what the start learned, that comes first
    (SFT then DPO that undid the SFT's facts must not open with "It learned your facts")."""
    if vs["kept_learned"] is False:
        lost = f"It lost part of what run {start_id} (the run it started from) learned."
        return lost, f"{lost} {vs['words']} Against the base model: {verdict}"
    return head, f"{verdict} {vs['words']}"


def words(vs: dict[str, Any], start_id: str) -> str:
    """"Kept what run X learned: fact match 58% → 60%." or "Lost part of …"."""
    what = "fact match" if vs["metric"] == "fact_match" else "words shared with the expected answers"
    if vs["kept_learned"] is None:
        return f"Started from run {start_id}; no held-out questions to tell what it kept."
    head = "Kept what" if vs["kept_learned"] else "Lost part of what"
    text = f"{head} run {start_id} (the run it started from) learned: {what} {vs['start']:.0%} → {vs['tuned']:.0%}"
    extra = []
    if vs["probe_ppl_rise"] is not None:
        extra.append(f"general-text perplexity {vs['probe_ppl_rise']:+.0%} against it")
    if vs["kept"] is not None:
        extra.append(f"{vs['kept']:.0%} of the everyday answers it got right still right")
    return text + (f" ({'; '.join(extra)})." if extra else ".")
