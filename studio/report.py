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


def leaked_heldout(dataset: dict[str, Any]) -> set[int]:
    """Held-out rows (by position) that the dataset's check found copied from a training
    question: a fact match on them is memory, so the report gives the figure without them."""
    from .data import checks

    found = checks.load(Path(dataset["path"])) or {}
    if found.get("heldout_file"):  # checked against another file: its positions are not ours
        return set()
    return {e["heldout_index"] for e in found.get("leaks", []) if e.get("heldout_index") is not None}


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
    leaked = leaked_heldout(dataset)
    for k, (name, rows) in enumerate(sets.items()):
        answers = {side: said[side][k] for side in said}
        for side in said:
            figures[side][name] = score(answers[side], rows)
            clean = [i for i in range(len(rows)) if i not in leaked] if name == "paraphrased" else []
            if leaked and clean and len(clean) < len(rows):  # measured on copies of training rows
                figures[side][name]["leaked"] = len(rows) - len(clean)
                figures[side][name]["without_leaks"] = score([answers[side][i] for i in clean],
                                                             [rows[i] for i in clean])
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
    applied = adapter_in_effect(pair, tok) if norm_b > 0 and strength_of(run) > 0 else None
    name = "paraphrased" if "paraphrased" in sets else "validation"
    known = known_general(pair, tok)
    kept = retention(pair, tok, known)
    trade = trade_off(pair, tok, run, (sets.get(name) or [])[:12], probe, figures, name, max_new_tokens,
                      known, kept)
    budget = forget_budget(cfg)
    flags = diagnose(figures, identical, total, norm_b, cfg, events, applied, kept)
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
           "strength": strength_of(run), "trade_off": trade, "adapter_applied": applied,
           "levers": lever_rows, "preference": prefers, "safety": refusals,
           "validation_facts_trained": facts_trained(sets.get("validation"), dataset),
           "seconds": round(time.time() - t0, 1), "created_at": time.time()}
    out["suggested_strength"], out["suggested_why"] = suggest(trade, budget, out["strength"],
                                                              forget_budget(cfg, "retention_budget"))
    out["headline"] = headline(figures, flags, out)
    out["verdict"] = verdict(figures, flags, out)
    return out


def adapter_in_effect(pair, tok) -> bool:
    """Whether the tuned side's next-token scores differ from the base side's on one sentence:
    the check behind "adapter applied" — measured, never assumed from the weights alone."""
    import torch

    ids = tok("The weather today is mild, and the market opens at nine.", return_tensors="pt",
              add_special_tokens=False)["input_ids"].to(pair.model.device)
    logits = {}
    for side in ("base", "tuned"):
        with pair.side(side) as m, torch.no_grad():
            logits[side] = m(input_ids=ids).logits.float()
    return not torch.equal(logits["base"], logits["tuned"])


def inconclusive(rep: dict[str, Any]) -> bool:
    """A report that measured nothing about the tuning: the adapter was not in effect while it
    was scored, or the tuned side answered exactly like the base on every question. Such a
    report is shown but not kept, so asking again measures again."""
    n = rep.get("answers_compared") or 0
    return rep.get("adapter_applied") is False or (n > 0 and rep.get("identical_answers") == n)


def facts_trained(rows: list[dict[str, Any]] | None, dataset: dict[str, Any], limit: int = 5000) -> float | None:
    """The share of validation questions whose expected answer's key facts (scoring.key_facts)
    all appear in some training answer. Low when the validation split holds distinct facts
    (one fact per row, split at random): those questions test facts never taught, so a low
    match there is no failure to learn."""
    from .scoring import key_facts, states

    rows = [r for r in rows or [] if key_facts(r["answer"], r["messages"][-1]["content"])]
    if not rows:
        return None
    taught = " \n ".join(r["answer"] for r in recall_rows(dataset, limit))
    hits = sum(all(states(taught, f) for f in key_facts(r["answer"], r["messages"][-1]["content"]))
               for r in rows)
    return round(hits / len(rows), 4)


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


def known_general(pair, tok) -> dict[str, Any]:
    """The general questions (assets/retention.jsonl) the base model answers right, with its
    answers: what retention is measured on (the base side's answers kept per model by the memo)."""
    from . import replay

    rows = replay.retention_rows()

    def generate(questions: list[str]) -> list[str]:
        with pair.side("base") as m:
            return replay.retention_answers(m, tok, [{"question": q} for q in questions])
    memo = getattr(pair, "memo", None)
    questions = [r["question"] for r in rows]
    base = (memo.answers("retention", questions, replay.RETENTION_TOKENS, generate) if memo
            else generate(questions))
    known = [(r, b) for r, b, ok in zip(rows, base, replay.knows(base, rows)) if ok]
    return {"asked": len(rows), "rows": [r for r, _ in known], "base": [b for _, b in known]}


def still_known(model, tok, known: dict[str, Any]) -> tuple[list[str], list[bool]]:
    """The model's answers to the known general questions, and which it still gets right."""
    from . import replay

    said = replay.retention_answers(model, tok, known["rows"])
    return said, replay.knows(said, known["rows"])


def retention(pair, tok, known: dict[str, Any]) -> dict[str, Any]:
    """Kept N of the M general questions the base model answers right."""
    if not known["rows"]:
        return {"known": 0, "kept": 0, "share": None, "asked": known["asked"], "lost": []}
    with pair.side("tuned") as m:
        tuned, ok = still_known(m, tok, known)
    lost = [{"question": r["question"], "expected": r["expect"], "base": b, "tuned": t}
            for r, b, t, good in zip(known["rows"], known["base"], tuned, ok) if not good]
    return {"known": len(ok), "kept": sum(ok), "share": round(sum(ok) / len(ok), 4),
            "asked": known["asked"], "lost": lost[:6]}


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


def trade_off(pair, tok, run, rows, probe, figures, name, max_new_tokens, known, kept
              ) -> list[dict[str, Any]]:
    """Held-out answer match, general-text perplexity and retention (the share of the known
    general questions still answered right) of the tuned model at a few adapter strengths (in
    memory, nothing is written); the strength it has now is already scored."""
    from .chat import generate_batch
    from .strength import current, scaled

    now = current(Path(run["path"]))
    if not rows or now == 0:
        return []
    base, tuned = figures["base"].get("probe_ppl"), figures["tuned"]
    key = "fact_match" if any(r.get("expect") for r in rows) else "rouge_l"

    def row(value, pl, match, share):
        return {"strength": value, "probe_ppl": pl, "match": match, "metric": key, "kept": share,
                "rise": round(pl / base - 1, 4) if pl and base else None}

    out = [row(now, tuned.get("probe_ppl"), tuned[name][key], kept["share"])]
    for value in sorted(set(STRENGTHS) - {now}):
        with pair.side("tuned") as m, scaled(m, value / now):
            pl = ppl(mean_loss(m, tok, probe, 512))
            got = generate_batch(m, tok, [r["messages"] for r in rows], max_new_tokens)
            ok = still_known(m, tok, known)[1] if known["rows"] else []
        out.append(row(value, pl, score(got, rows)[key], round(sum(ok) / len(ok), 4) if ok else None))
    return sorted(out, key=lambda r: r["strength"])


def forgot(t: dict[str, Any], budget: float, lost_budget: float) -> bool:
    """Over a forgetting budget: general-text perplexity rose by more than `budget`, or more
    than `lost_budget` of the known general answers were lost."""
    return ((t.get("rise") is not None and t["rise"] > budget)
            or (t.get("kept") is not None and 1 - t["kept"] > lost_budget + 1e-9))


def suggest(trade: list[dict[str, Any]], budget: float, now: float, lost_budget: float = 1.0
            ) -> tuple[float | None, str]:
    """(strength, why): the best held-out match among the strengths within the forgetting budget
    (perplexity and retention; ties: the one that forgot less); none within it, the one that
    forgot least. When every strength scored the same on the held-out questions, strength buys
    nothing there: keep the one the run has unless it is over the budget."""
    rated = [t for t in trade if t["rise"] is not None and t["match"] is not None]
    if not rated:
        return None, ""
    lost = {t["strength"]: (max(t["rise"], 0) + (1 - (t["kept"] if t.get("kept") is not None else 1)))
            for t in rated}
    inside = [t for t in rated if not forgot(t, budget, lost_budget)]
    same = len({round(t["match"], 2) for t in rated}) == 1
    current = next((t for t in rated if t["strength"] == now), None)
    if same and current is not None and current in inside:
        return now, (f"Every strength tried answered the held-out questions equally well "
                     f"({current['match']:.0%}), and strength {now:g} stays within the forgetting "
                     "budget: no reason to change it.")
    if inside:
        best = max(inside, key=lambda t: (round(t["match"], 2), -lost[t["strength"]]))
        return best["strength"], ("The best held-out answers among the strengths that stay within "
                                  "the forgetting budgets.")
    best = min(rated, key=lambda t: lost[t["strength"]])
    return best["strength"], "No strength tried stays within the forgetting budgets; this one forgot least."


def forget_budget(cfg: dict[str, Any], name: str = "forget_budget") -> float:
    """The run's forgetting budget (or `retention_budget`), as its spec's default gives it when
    the config has none."""
    from .spec import TrainSpec

    value = (cfg.get("train") or {}).get(name)
    return float(getattr(TrainSpec(), name) if value is None else value)


def strength_of(run: dict[str, Any]) -> float:
    from .strength import current

    return current(Path(run["path"]))


def forgetting_figures(fig: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    bp, tp = fig["base"].get("probe_ppl"), fig["tuned"].get("probe_ppl")
    budget = forget_budget(cfg)
    rise = round(tp / bp - 1, 4) if bp and tp else None
    return {"probe_ppl_base": bp, "probe_ppl_tuned": tp, "rise": rise, "budget": budget,
            "within_budget": rise is not None and rise <= budget,
            "retention_budget": forget_budget(cfg, "retention_budget")}


def diagnose(fig: dict[str, Any], identical: int, total: int, norm_b: float, cfg: dict[str, Any],
             events: list[dict[str, Any]], applied: bool | None = None,
             kept: dict[str, Any] | None = None) -> list[dict[str, str]]:
    flags = []
    if applied is False:
        flags.append({"flag": "adapter not in effect", "text": (
            "While this report was scored, the tuned side gave exactly the base model's scores "
            "although the adapter's weights are not zero: the adapter was not applied. That is "
            "the studio's fault, not your run's; this report is not kept — press **Recompute "
            "report** to measure again.")})
    if total and identical / total >= NO_CHANGE_SHARE:
        t = cfg.get("train", {})
        ruled_out = ["template mismatch (training and chat use the same tokenizer template)"]
        causes = []
        if norm_b > 0 and applied:
            ruled_out.append("adapter not applied (measured: the tuned side's scores differ from "
                             "the base side's)")
        elif norm_b <= 0:
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
    budget = forget_budget(cfg)
    bp, tp = fig["base"].get("probe_ppl"), fig["tuned"].get("probe_ppl")
    if bp and tp and tp > bp * (1 + max(budget, FORGET_THRESHOLD)):
        flags.append({"flag": "forgetting", "text": (
            f"Perplexity on general text rose from {bp:.1f} to {tp:.1f} (+{(tp / bp - 1):.0%}): "
            "the model is losing general knowledge. Lower the learning rate or the steps, or "
            "mix in general data.")})
    lost_budget = forget_budget(cfg, "retention_budget")
    if kept and kept.get("known") and 1 - kept["share"] > lost_budget + 1e-9:
        lost = kept["known"] - kept["kept"]
        flags.append({"flag": "forgot general answers", "text": (
            f"It now gets {lost} of the {kept['known']} general questions the base model answered "
            f"right wrong ({1 - kept['share']:.0%} lost; the budget for everyday answers, "
            f"train.retention_budget, allows {lost_budget:.0%}). Lower the adapter strength (the table below), or train with fewer "
            "steps, a lower learning rate or a stronger anchor (train.replay_weight).")})
    return flags


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a share `p` of `n`: honest about small held-out sets."""
    if n == 0:
        return 0.0, 1.0
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def learned_on(fig: dict[str, Any], rep: dict[str, Any]) -> tuple[str, str, float, float, int] | None:
    """(set, metric, base, tuned, n) of the held-out set that measures learning: the reworded
    held-out questions, else the validation questions — unless those ask about facts the
    training data does not contain."""
    b, t = fig["base"], fig["tuned"]
    share = rep.get("validation_facts_trained")
    distinct = share is not None and share < DISTINCT_FACTS
    for name in ("paraphrased", "validation"):
        if name in t and not (name == "validation" and distinct):
            key = "fact_match" if t[name].get("fact_match") is not None else "rouge_l"
            return name, key, b[name][key], t[name][key], t[name]["n"]
    return None


DISTINCT_FACTS = 0.5  # under half the validation questions' facts in training: a split of distinct facts
LEARNED_GAIN = 0.10   # held-out match up by 10 points: learned


def headline(fig: dict[str, Any], flags: list[dict[str, str]], rep: dict[str, Any]) -> str:
    """One plain sentence first: learned or not, forgot or not (figures follow in `verdict`)."""
    names = {f["flag"] for f in flags}
    if "adapter not in effect" in names or inconclusive(rep):
        return ("Not measured: the tuned model answered exactly like the base model on every "
                "question — press Recompute report; if it says so again, the run did not change "
                "the model.")
    forgot_ = bool(names & {"forgetting", "forgot general answers"})
    held = learned_on(fig, rep)
    b, t = fig["base"], fig["tuned"]
    if held is not None:
        name, key, before, after, n = held
        if n < FEW_QUESTIONS:
            return (f"Uncertain: only {n} held-out question{'s' if n != 1 else ''} to check — too few "
                    "to say whether it learned; add held-out questions (Data step) for a verdict.")
        learned = after - before >= LEARNED_GAIN and "no change" not in names
    else:
        learned = ((t.get("val_loss") or 9) < (b.get("val_loss") or 0)) and "no change" not in names
    if learned:
        return ("It learned your facts but forgot some of what it knew." if forgot_
                else "It learned your facts and kept what it knew.")
    return ("It did not clearly learn your facts, and it forgot some of what it knew." if forgot_
            else "It did not clearly learn your facts; it kept what it knew.")


def verdict(fig: dict[str, Any], flags: list[dict[str, str]], rep: dict[str, Any] | None = None) -> str:
    """The headline, then the figures behind it, in plain words."""
    b, t = fig["base"], fig["tuned"]
    rep = rep or {}
    parts = [rep.get("headline") or headline(fig, flags, rep)]
    for name, what in (("paraphrased", "reworded held-out questions"),
                       ("validation", "held-out questions")):
        if name in t:
            key = "fact_match" if t[name].get("fact_match") is not None else "rouge_l"
            label = ("answers stating the expected fact" if key == "fact_match"
                     else "words shared with the expected answers")
            parts.append(f"On {what}, {label}: base {b[name][key]:.0%}, tuned {t[name][key]:.0%}.")
            clean = t[name].get("without_leaks")
            if clean:  # the figure above counts questions the run trained on word for word
                parts.append(f"{t[name]['leaked']} of them copy a training question (the data check's "
                             f"leaks), so that figure is partly memory; without them: base "
                             f"{b[name]['without_leaks'][key]:.0%}, tuned {clean[key]:.0%}.")
    share = rep.get("validation_facts_trained")
    if "validation" in t and share is not None and share < DISTINCT_FACTS:
        parts.append(f"Only {share:.0%} of the held-out questions ask about facts that are in your "
                     "training data (each row holds its own fact), so a low score there is not a "
                     "failure to learn. Held-out questions that ask your training facts in other "
                     "words measure learning: add them in the Data step (\"Held-out questions\").")
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
    if b.get("val_loss") and t.get("val_loss"):
        change = (t["val_loss"] - b["val_loss"]) / b["val_loss"]
        parts.append(f"Validation loss {b['val_loss']:.2f} → {t['val_loss']:.2f} ({change:+.0%}).")
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
    return " ".join(parts)
