"""Did it learn? Base vs tuned on held-out data, with flags in plain words.

Owns the report computed after a run: validation loss and perplexity (base vs tuned), answer
match on held-out questions (validation split, and for the sample set the paraphrased questions
shipped in assets/) by exact match, ROUGE-L and "contains the expected fact", and three flags —
no change (with which causes our checks rule out), memorised (train loss far below validation
loss), forgetting (perplexity on a general-text probe rose). Pure scoring helpers are at the top.
"""
from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import Any

ASSETS = Path(__file__).resolve().parent.parent / "assets"
PROBE = ASSETS / "general_probe.txt"
SAMPLE_HELDOUT = {"product_faq.jsonl": ASSETS / "sample" / "product_faq_heldout.jsonl"}
FORGET_THRESHOLD = 0.15   # probe perplexity may rise 15% before we call it forgetting
MEMORISE_RATIO = 0.5      # final train loss under half the validation loss
NO_CHANGE_SHARE = 0.9     # 90% of answers identical


def norm(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", text.lower())).strip()


def rouge_l(pred: str, ref: str) -> float:
    """ROUGE-L F1 on words (longest common subsequence)."""
    a, b = norm(pred).split(), norm(ref).split()
    if not a or not b:
        return 0.0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    p, r = lcs / len(a), lcs / len(b)
    return 2 * p * r / (p + r)


def score(answers: list[str], rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = max(1, len(rows))
    em = sum(norm(a) == norm(r["answer"]) for a, r in zip(answers, rows)) / n
    rl = sum(rouge_l(a, r["answer"]) for a, r in zip(answers, rows)) / n
    with_fact = [(a, r) for a, r in zip(answers, rows) if r.get("expect")]
    fact = (sum(norm(r["expect"]) in norm(a) for a, r in with_fact) / len(with_fact)) if with_fact else None
    return {"exact_match": round(em, 4), "rouge_l": round(rl, 4),
            "fact_match": round(fact, 4) if fact is not None else None, "n": len(rows)}


def heldout_sets(dataset: dict[str, Any], limit: int) -> dict[str, list[dict[str, Any]]]:
    """Question/answer rows: the validation split, plus shipped paraphrases for the sample set."""
    from .data.prepare import read_split

    sets: dict[str, list[dict[str, Any]]] = {}
    val = []
    for ex in read_split(Path(dataset["path"]), "validation", limit):
        msgs = ex.get("messages")
        if msgs and msgs[-1]["role"] == "assistant":
            val.append({"messages": msgs[:-1], "answer": msgs[-1]["content"]})
    if val:
        sets["validation"] = val
    for src in dataset.get("sources") or []:
        f = SAMPLE_HELDOUT.get(src)
        if f and f.exists():
            rows = [json.loads(x) for x in f.read_text().splitlines() if x.strip()][:limit]
            sets["paraphrased"] = [{"messages": [{"role": "user", "content": r["question"]}],
                                    "answer": r["answer"], "expect": r.get("expect")} for r in rows]
    return sets


def sample_questions() -> list[str]:
    """The shipped held-out questions, for the Compare step's picker."""
    return [json.loads(x)["question"] for f in SAMPLE_HELDOUT.values() if f.exists()
            for x in f.read_text().splitlines() if x.strip()]


def mean_loss(model, tok, examples: list[dict[str, Any]], max_len: int) -> float | None:
    """Mean token loss on the learned tokens of `examples` (the data step's loss mask)."""
    import torch

    from .data import templates

    total, count = 0.0, 0
    for ex in examples:
        enc = templates.encode(tok, ex, max_len)
        if enc.trainable < 2:
            continue
        ids = torch.tensor([enc.input_ids], device=model.device)
        labels = torch.tensor([enc.labels], device=model.device)
        with torch.no_grad():
            out = model(input_ids=ids, labels=labels)
        n = int((labels[:, 1:] != -100).sum())
        total += float(out.loss) * n
        count += n
    return total / count if count else None


def probe_examples() -> list[dict[str, Any]]:
    return [{"text": p.strip()} for p in PROBE.read_text().split("\n\n") if p.strip()]


def ppl(loss: float | None) -> float | None:
    return round(math.exp(loss), 3) if loss is not None else None


def adapter_norm(model) -> float:
    """Sum of |B| over LoRA B matrices: zero means the adapter does nothing (never trained)."""
    total = 0.0
    for name, p in model.named_parameters():
        if "lora_B" in name:
            total += float(p.detach().abs().sum())
    return total


def build(pair, run: dict[str, Any], dataset: dict[str, Any], events: list[dict[str, Any]],
          limit: int = 24, max_new_tokens: int = 48) -> dict[str, Any]:
    """The whole report for one run (pair = compare.Pair with the run's adapter selected)."""
    from .chat import generate_batch
    from .data.prepare import read_split

    t0 = time.time()
    cfg = run.get("config") or {}
    max_len = cfg.get("train", {}).get("max_len", 512)
    tok = pair.tok
    val = read_split(Path(dataset["path"]), "validation", 64)
    probe = probe_examples()
    figures: dict[str, Any] = {}
    for side in ("base", "tuned"):
        with pair.side(side) as m:
            vl = mean_loss(m, tok, val, max_len) if val else None
            pl = mean_loss(m, tok, probe, 512)
            figures[side] = {"val_loss": round(vl, 4) if vl is not None else None,
                             "val_ppl": ppl(vl), "probe_ppl": ppl(pl)}
    examples, identical, total = {}, 0, 0
    for name, rows in heldout_sets(dataset, limit).items():
        answers = {}
        for side in ("base", "tuned"):
            with pair.side(side) as m:
                answers[side] = generate_batch(m, tok, [r["messages"] for r in rows], max_new_tokens)
            figures[side][name] = score(answers[side], rows)
        identical += sum(a == b for a, b in zip(answers["base"], answers["tuned"]))
        total += len(rows)
        examples[name] = [{"question": r["messages"][-1]["content"], "expected": r["answer"],
                           "base": b, "tuned": t}
                          for r, b, t in list(zip(rows, answers["base"], answers["tuned"]))[:6]]
    with pair.side("tuned") as m:
        norm_b = adapter_norm(m)
    flags = diagnose(figures, identical, total, norm_b, cfg, events)
    return {"run_id": run["id"], "base": figures["base"], "tuned": figures["tuned"],
            "identical_answers": identical, "answers_compared": total, "flags": flags,
            "examples": examples, "verdict": verdict(figures, flags),
            "seconds": round(time.time() - t0, 1), "created_at": time.time()}


def diagnose(fig: dict[str, Any], identical: int, total: int, norm_b: float, cfg: dict[str, Any],
             events: list[dict[str, Any]]) -> list[dict[str, str]]:
    flags = []
    if total and identical / total >= NO_CHANGE_SHARE:
        t = cfg.get("train", {})
        ruled_out = ["template mismatch (training and chat use the same tokenizer template)"]
        causes = []
        if norm_b > 0:
            ruled_out.append("adapter not applied (its weights are non-zero and loaded)")
        else:
            causes.append("the adapter's weights are all zero: it never trained")
        steps = max((e.get("step", 0) for e in events), default=0)
        if steps < 30:
            causes.append(f"too few steps ({steps}); try 60 or more")
        if t.get("lr", 1) < 1e-4:
            causes.append(f"learning rate {t.get('lr')} is low for LoRA; try 2e-4 to 5e-4")
        flags.append({"flag": "no change", "text": (
            f"{identical} of {total} answers are identical to the base model's. Likely: "
            f"{'; '.join(causes) or 'too little training for this data'}. Ruled out: "
            f"{'; '.join(ruled_out)}.")})
    losses = [e["loss"] for e in events if e.get("loss") is not None and "eval_loss" not in e]
    vl = fig["tuned"].get("val_loss")
    if losses and vl:
        recent = sum(losses[-5:]) / len(losses[-5:])
        if recent < MEMORISE_RATIO * vl:
            flags.append({"flag": "memorised", "text": (
                f"Train loss ({recent:.2f}) is far below validation loss ({vl:.2f}): the model "
                "learned the training examples by heart more than the pattern. Use fewer "
                "steps/epochs, a lower learning rate, or more varied data.")})
    bp, tp = fig["base"].get("probe_ppl"), fig["tuned"].get("probe_ppl")
    if bp and tp and tp > bp * (1 + FORGET_THRESHOLD):
        flags.append({"flag": "forgetting", "text": (
            f"Perplexity on general text rose from {bp:.1f} to {tp:.1f} (+{(tp / bp - 1):.0%}): "
            "the model is losing general knowledge. Lower the learning rate or the steps, or "
            "mix in general data.")})
    return flags


def verdict(fig: dict[str, Any], flags: list[dict[str, str]]) -> str:
    b, t = fig["base"], fig["tuned"]
    parts = []
    if b.get("val_loss") and t.get("val_loss"):
        change = (t["val_loss"] - b["val_loss"]) / b["val_loss"]
        parts.append(f"Validation loss went from {b['val_loss']:.2f} to {t['val_loss']:.2f} "
                     f"({change:+.0%}).")
    for name in ("paraphrased", "validation"):
        if name in t:
            key = "fact_match" if t[name].get("fact_match") is not None else "rouge_l"
            label = "answers with the right fact" if key == "fact_match" else "ROUGE-L"
            parts.append(f"On {name} held-out questions, {label}: base {b[name][key]:.0%}, "
                         f"tuned {t[name][key]:.0%}.")
    learned = (t.get("val_loss") or 9) < (b.get("val_loss") or 0) and not any(
        f["flag"] == "no change" for f in flags)
    head = "The model learned from your data." if learned else "The model did not clearly learn."
    return " ".join([head, *parts])
