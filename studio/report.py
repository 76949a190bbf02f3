"""Did it learn? Base vs tuned on held-out data, with flags in plain words.

Owns the report computed after a run: validation loss and perplexity (base vs tuned), answer
match on held-out questions (validation split, and for the sample set the paraphrased questions
shipped in assets/) by exact match, ROUGE-L and "contains the expected fact", and three flags —
no change (with which causes our checks rule out), memorised (train loss far below validation
loss), forgetting (perplexity on a general-text probe rose). Also: retention (how many of the
general questions the base model answered right the tuned one still does), the forgetting
budget's chosen step, the adapter strength, training-question recall for small Q/A sets, and a
verdict that says when too few held-out questions make it uncertain. Pure scoring helpers are
at the top.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from . import levers
from .scoring import answer_logps, mean_loss, ppl, probe_examples, score

ASSETS = Path(__file__).resolve().parent.parent / "assets"
SAMPLE_HELDOUT = {"product_faq.jsonl": ASSETS / "sample" / "product_faq_heldout.jsonl"}
FORGET_THRESHOLD = 0.15   # probe perplexity may rise 15% before we call it forgetting
MEMORISE_RATIO = 0.5      # final train loss under half the validation loss
NO_CHANGE_SHARE = 0.9     # 90% of answers identical


def heldout_sets(dataset: dict[str, Any], limit: int) -> dict[str, list[dict[str, Any]]]:
    """Question/answer rows: the validation split, plus the dataset's held-out questions (the
    user's held-out file, or the shipped paraphrases of the sample) as "paraphrased"."""
    from .data import heldout
    from .data.prepare import read_split

    sets: dict[str, list[dict[str, Any]]] = {}
    val = []
    for ex in read_split(Path(dataset["path"]), "validation", limit):
        msgs = ex.get("messages")
        if "chosen" in ex and "prompt" in ex:  # a preference pair: its prompt, answered as chosen
            val.append({"messages": ex["prompt"], "answer": ex["chosen"][0]["content"]})
        elif msgs and msgs[-1]["role"] == "assistant":
            val.append({"messages": msgs[:-1], "answer": msgs[-1]["content"]})
    if val:
        sets["validation"] = val
    rows = heldout.load(Path(dataset["path"]), limit)
    if rows is None:  # a dataset prepared before held-out files were kept with it
        for src in dataset.get("sources") or []:
            f = SAMPLE_HELDOUT.get(src)
            if f and f.exists():
                rows = [{"messages": [{"role": "user", "content": r["question"]}], "answer": r["answer"],
                         "expect": r.get("expect")}
                        for r in (json.loads(x) for x in f.read_text().splitlines() if x.strip())][:limit]
    if rows:
        sets["paraphrased"] = rows
    return sets


def sample_questions() -> list[str]:
    """The shipped held-out questions, for the Compare step's picker."""
    return [json.loads(x)["question"] for f in SAMPLE_HELDOUT.values() if f.exists()
            for x in f.read_text().splitlines() if x.strip()]


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
    from .chat import generate_groups
    from .data.prepare import read_split
    from .data.triage import split

    t0 = time.time()
    cfg = run.get("config") or {}
    max_len = cfg.get("train", {}).get("max_len", 512)
    tok = pair.tok
    from .data.preference import is_pair, sides

    raw_val = read_split(Path(dataset["path"]), "validation", 64)
    val = [sides(ex)[0] if is_pair(ex) else ex for ex in raw_val]  # a pair's loss: its chosen answer
    probe = probe_examples()
    figures: dict[str, Any] = {}
    for side in ("base", "tuned"):
        with pair.side(side) as m:
            vl = mean_loss(m, tok, val, max_len) if val else None
            pl = mean_loss(m, tok, probe, 512)
            figures[side] = {"val_loss": round(vl, 4) if vl is not None else None,
                             "val_ppl": ppl(vl), "probe_ppl": ppl(pl)}
    examples, identical, total = {}, 0, 0
    sets, known_new = heldout_sets(dataset, limit), {}
    # a small Q/A set: can it recall what it trained on? (not evidence of learning)
    small = len(read_split(Path(dataset["path"]), "train", RECALL_MAX + 1)) <= RECALL_MAX
    recall = recall_rows(dataset, 12) if small or not sets else []
    groups = [*sets.values(), recall]
    said = {}
    for side in ("base", "tuned"):  # every set in one go per side (bigger batches answer faster)
        with pair.side(side) as m:
            said[side] = generate_groups(m, tok, [[r["messages"] for r in rows] for rows in groups],
                                         max_new_tokens)
    for k, (name, rows) in enumerate(sets.items()):
        answers = {side: said[side][k] for side in said}
        for side in said:
            figures[side][name] = score(answers[side], rows)
        known_new[name] = split(answers["base"], answers["tuned"], rows)
        identical += sum(a == b for a, b in zip(answers["base"], answers["tuned"]))
        total += len(rows)
        examples[name] = [{"question": r["messages"][-1]["content"], "expected": r["answer"],
                           "base": b, "tuned": t}
                          for r, b, t in list(zip(rows, answers["base"], answers["tuned"]))[:6]]
    if recall:
        for side in said:
            figures[side]["training_recall"] = score(said[side][-1], recall)
    with pair.side("tuned") as m:
        norm_b = adapter_norm(m)
    name = "paraphrased" if "paraphrased" in sets else "validation"
    trade = trade_off(pair, tok, run, (sets.get(name) or [])[:12], probe, figures, name, max_new_tokens)
    kept = retention(pair, tok)
    flags = diagnose(figures, identical, total, norm_b, cfg, events)
    chosen = selection(run)
    forgetting = forgetting_figures(figures, cfg)
    lever_rows = levers.rows(run, events, intruder_count(pair, run, cfg))
    pairs = [ex for ex in raw_val if is_pair(ex)]
    prefers = preference_figures(pair, tok, pairs, max_len) if pairs else None
    from . import safety
    from .data.templates import has_chat_template

    refusals = safety.check(pair, tok, memo=getattr(pair, "memo", None)) if has_chat_template(tok) else None
    out = {"run_id": run["id"], "base": figures["base"], "tuned": figures["tuned"],
           "identical_answers": identical, "answers_compared": total, "flags": flags,
           "examples": examples, "retention": kept, "forgetting": forgetting, "known_new": known_new,
           "chosen_step": chosen.get("chosen_step") if chosen else None, "selection": chosen,
           "strength": strength_of(run), "trade_off": trade,
           "suggested_strength": suggest(trade, cfg), "levers": lever_rows, "preference": prefers,
           "safety": refusals,
           "seconds": round(time.time() - t0, 1), "created_at": time.time()}
    out["verdict"] = verdict(figures, flags, out)
    return out


def preference_figures(pair, tok, pairs: list[dict[str, Any]], max_len: int) -> dict[str, Any]:
    """On held-out preference pairs: how often the model gives the chosen answer a higher
    log-probability than the rejected one, base (before) and tuned (after), and how often the
    tuned model's implicit reward margin is positive — it moved toward chosen and away from
    rejected, relative to the base: (log π(c) − log π_base(c)) − (log π(r) − log π_base(r)) > 0."""
    from .data.preference import sides

    chosen = [sides(p)[0] for p in pairs]
    rejected = [sides(p)[1] for p in pairs]
    lp = {}
    for side in ("base", "tuned"):
        with pair.side(side) as m:
            lp[side] = (answer_logps(m, tok, chosen, max_len), answer_logps(m, tok, rejected, max_len))
    n = len(pairs)
    share = {side: round(sum(c > r for c, r in zip(*lp[side])) / n, 4) for side in lp}
    margins = [(tc - bc) - (tr - br) for tc, tr, bc, br in zip(*lp["tuned"], *lp["base"])]
    return {"before": share["base"], "after": share["tuned"], "n": n,
            "reward_accuracy": round(sum(m > 0 for m in margins) / n, 4),
            "mean_margin": round(sum(margins) / n, 4)}


def intruder_count(pair, run: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any] | None:
    """The adapter's intruder dimensions (intruders.py), for the targeted-strength row; None
    for DoRA adapters (no sum of singular directions)."""
    from . import intruders

    if (cfg.get("lora") or {}).get("dora"):
        return None
    return intruders.count(Path(run["path"]) / "adapter", intruders.base_weights(pair.model))


RECALL_MAX = 200          # training sets this small also get a recall score
FEW_QUESTIONS = 10        # fewer held-out questions than this: the verdict is uncertain
RETENTION_TOKENS = 20     # the retention questions ask for a few words


def recall_rows(dataset: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    from .data.prepare import read_split

    rows = []
    for ex in read_split(Path(dataset["path"]), "train", limit):
        msgs = ex.get("messages")
        if "chosen" in ex and "prompt" in ex:
            rows.append({"messages": ex["prompt"], "answer": ex["chosen"][0]["content"]})
        elif msgs and msgs[-1]["role"] == "assistant":
            rows.append({"messages": msgs[:-1], "answer": msgs[-1]["content"]})
    return rows


def retention(pair, tok) -> dict[str, Any]:
    """Kept N of the M general questions the base model answers right (assets/retention.jsonl)."""
    from . import replay
    from .chat import generate_batch

    rows = replay.retention_rows()
    convs = [[{"role": "user", "content": r["question"]}] for r in rows]

    def generate(questions: list[str]) -> list[str]:
        with pair.side("base") as m:
            return generate_batch(m, tok, [[{"role": "user", "content": q}] for q in questions], RETENTION_TOKENS)
    memo = getattr(pair, "memo", None)
    questions = [r["question"] for r in rows]
    base = memo.answers("retention", questions, RETENTION_TOKENS, generate) if memo else generate(questions)
    known = [(r, c, b) for r, c, b, ok in zip(rows, convs, base, replay.knows(base, rows)) if ok]
    if not known:
        return {"known": 0, "kept": 0, "share": None, "asked": len(rows), "lost": []}
    with pair.side("tuned") as m:
        tuned = generate_batch(m, tok, [c for _, c, _ in known], RETENTION_TOKENS)
    ok = replay.knows(tuned, [r for r, _, _ in known])
    lost = [{"question": r["question"], "expected": r["expect"], "base": b, "tuned": t}
            for (r, _, b), t, good in zip(known, tuned, ok) if not good]
    return {"known": len(known), "kept": sum(ok), "share": round(sum(ok) / len(known), 4),
            "asked": len(rows), "lost": lost[:6]}


def selection(run: dict[str, Any]) -> dict[str, Any] | None:
    """The forgetting budget's choice, as the run recorded it (train/selection.py)."""
    from .train.selection import STATE

    try:
        state = json.loads((Path(run["path"]) / STATE).read_text())
    except (OSError, ValueError, TypeError):
        return None
    evals = state.get("evals") or []
    chosen = state.get("chosen")  # absent: no choice was made (budget 0, or a stopped run)
    full = [e for e in evals if e.get("strength", 1.0) == 1.0]
    last = max(full, key=lambda e: e["step"]) if full else None
    if chosen is None or last is None:
        return None
    return {"chosen_step": chosen["step"], "budget": state.get("budget"), "reason": state.get("reason"),
            "chosen": chosen,
            "last": last, "base": state.get("base"), "evaluations": evals}


STRENGTHS = (0.5, 0.75, 1.0)


def trade_off(pair, tok, run, rows, probe, figures, name, max_new_tokens) -> list[dict[str, Any]]:
    """Held-out answer match and general-text perplexity of the tuned model at a few adapter
    strengths (in memory, nothing is written); the strength it has now is already scored."""
    from .chat import generate_batch
    from .strength import current, scaled

    now = current(Path(run["path"]))
    if not rows or now == 0:
        return []
    base, tuned = figures["base"].get("probe_ppl"), figures["tuned"]
    key = "fact_match" if any(r.get("expect") for r in rows) else "rouge_l"

    def row(value, pl, match):
        return {"strength": value, "probe_ppl": pl, "match": match, "metric": key,
                "rise": round(pl / base - 1, 4) if pl and base else None}

    out = [row(now, tuned.get("probe_ppl"), tuned[name][key])]
    for value in sorted(set(STRENGTHS) - {now}):
        with pair.side("tuned") as m, scaled(m, value / now):
            pl = ppl(mean_loss(m, tok, probe, 512))
            got = generate_batch(m, tok, [r["messages"] for r in rows], max_new_tokens)
        out.append(row(value, pl, score(got, rows)[key]))
    return sorted(out, key=lambda r: r["strength"])


def suggest(trade: list[dict[str, Any]], cfg: dict[str, Any]) -> float | None:
    """The strength with the best held-out match whose forgetting stays within the budget (ties:
    the one that forgot less); none within it: the one that forgot least."""
    budget = cfg.get("train", {}).get("forget_budget", 0.10)
    rated = [t for t in trade if t["rise"] is not None and t["match"] is not None]
    inside = [t for t in rated if t["rise"] <= budget]
    if inside:
        return max(inside, key=lambda t: (round(t["match"], 2), -t["rise"]))["strength"]
    return min(rated, key=lambda t: t["rise"])["strength"] if rated else None


def strength_of(run: dict[str, Any]) -> float:
    from .strength import current

    return current(Path(run["path"]))


def forgetting_figures(fig: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    bp, tp = fig["base"].get("probe_ppl"), fig["tuned"].get("probe_ppl")
    budget = cfg.get("train", {}).get("forget_budget", 0.10)
    rise = round(tp / bp - 1, 4) if bp and tp else None
    return {"probe_ppl_base": bp, "probe_ppl_tuned": tp, "rise": rise, "budget": budget,
            "within_budget": rise is not None and rise <= budget}


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


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a share `p` of `n`: honest about small held-out sets."""
    if n == 0:
        return 0.0, 1.0
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def verdict(fig: dict[str, Any], flags: list[dict[str, str]], rep: dict[str, Any] | None = None) -> str:
    b, t = fig["base"], fig["tuned"]
    rep = rep or {}
    parts = []
    if b.get("val_loss") and t.get("val_loss"):
        change = (t["val_loss"] - b["val_loss"]) / b["val_loss"]
        parts.append(f"Validation loss went from {b['val_loss']:.2f} to {t['val_loss']:.2f} "
                     f"({change:+.0%}).")
    for name, what in (("paraphrased", "reworded held-out questions"),
                       ("validation", "held-out questions")):
        if name in t:
            key = "fact_match" if t[name].get("fact_match") is not None else "rouge_l"
            label = ("answers with the right fact" if key == "fact_match"
                     else "words shared with the expected answers (ROUGE-L)")
            parts.append(f"On {what}, {label}: base {b[name][key]:.0%}, tuned {t[name][key]:.0%}.")
    if "training_recall" in t:
        parts.append(f"On training questions (recall, not proof of learning), words shared with the "
                     f"expected answers: base {b['training_recall']['rouge_l']:.0%}, tuned "
                     f"{t['training_recall']['rouge_l']:.0%}.")
    kept, fg = rep.get("retention") or {}, rep.get("forgetting") or {}
    if kept.get("known"):
        parts.append(f"It kept {kept['kept']} of the {kept['known']} general questions the base model "
                     "answered right.")
    if fg.get("rise") is not None:
        parts.append(f"General-text perplexity {fg['rise']:+.0%} "
                     f"({'within' if fg['within_budget'] else 'over'} the {fg['budget']:.0%} budget).")
    pref = rep.get("preference")
    if pref:
        lo, hi = wilson(pref["after"], pref["n"])
        parts.append(f"On {pref['n']} held-out preference pairs it gives the chosen answer the higher "
                     f"probability {pref['before']:.0%} of the time before and {pref['after']:.0%} after "
                     f"(95% interval {lo:.0%}–{hi:.0%}" + ("; few pairs, so a rough figure" if pref["n"] < 30
                                                          else "") + ").")
    if rep.get("safety"):
        from .safety import words

        parts.append(words(rep["safety"]) + ("" if rep["safety"]["harmful"]["refused_base"] else
                                             " (the base model refuses little, so there is little to keep)"))
    if rep.get("chosen_step") is not None:
        parts.append(f"The adapter is the one from step {rep['chosen_step']} (forgetting budget).")
    learned = (t.get("val_loss") or 9) < (b.get("val_loss") or 0) and not any(
        f["flag"] == "no change" for f in flags)
    n = max((t[k]["n"] for k in ("validation", "paraphrased") if k in t), default=0)
    if n < FEW_QUESTIONS:
        head = (f"Uncertain: only {n} held-out question{'s' if n != 1 else ''} to check, too few for a "
                "verdict" + (" (the validation loss points to learning)." if learned else ".") +
                " Add more data or a larger validation fraction for a reliable one.")
    else:
        head = "The model learned from your data." if learned else "The model did not clearly learn."
    return " ".join([head, *parts])
