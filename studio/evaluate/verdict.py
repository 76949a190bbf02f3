"""The report in plain words: flags, the headline, the verdict and the suggested strength.

Owns reading a report's figures (report.py measures them) against the run spec: the flags — no
change (with the causes our checks rule out), memorised (train loss far below validation loss),
forgetting (general-text perplexity rose past the budget), general answers lost past the
retention budget — the one-sentence headline, the verdict with the figures behind it (uncertain
when too few held-out questions), the Wilson interval for small sets, the forgetting figures, the
strength to suggest from the trade-off table, and whether a report measured anything at all.
Pure functions: no model, no files.
"""
from __future__ import annotations

from typing import Any

from ..spec import RunSpec

FORGET_THRESHOLD = 0.15   # probe perplexity may rise 15% before we call it forgetting
MEMORISE_RATIO = 0.5      # final train loss under half the validation loss
NO_CHANGE_SHARE = 0.9     # 90% of answers identical


def inconclusive(rep: dict[str, Any]) -> bool:
    """A report that measured nothing about the tuning: the adapter was not in effect while it
    was scored, or the tuned side answered exactly like the base on every question. Such a
    report is shown but not kept, so asking again measures again."""
    n = rep.get("answers_compared") or 0
    return rep.get("adapter_applied") is False or (n > 0 and rep.get("identical_answers") == n)


FEW_QUESTIONS = 10        # fewer held-out questions than this: the verdict is uncertain


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


def forgetting_figures(fig: dict[str, Any], spec: RunSpec) -> dict[str, Any]:
    bp, tp = fig["base"].get("probe_ppl"), fig["tuned"].get("probe_ppl")
    budget = spec.train.forget_budget
    rise = round(tp / bp - 1, 4) if bp and tp else None
    return {"probe_ppl_base": bp, "probe_ppl_tuned": tp, "rise": rise, "budget": budget,
            "within_budget": rise is not None and rise <= budget,
            "retention_budget": spec.train.retention_budget}


def diagnose(fig: dict[str, Any], identical: int, total: int, norm_b: float, spec: RunSpec,
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
        if spec.train.lr < 1e-4:
            causes.append(f"learning rate {spec.train.lr} is low for LoRA; try 2e-4 to 5e-4")
        flags.append({"flag": "no change", "text": (
            f"{identical} of {total} answers are identical to the base model's. Likely: "
            f"{'; '.join(causes) or 'too little training for this data'}. Ruled out: "
            f"{'; '.join(ruled_out)}.")})
    # a preference or RL run's logged loss is not the answers' cross-entropy, nor is one with
    # key-fact weights (train.fact_weight: its fact tokens count more): not comparable
    losses = [e["loss"] for e in events if e.get("loss") is not None and "eval_loss" not in e
              ] if spec.train.objective == "sft" and spec.train.fact_weight == 1.0 else []
    vl = fig["tuned"].get("val_loss")
    if losses and vl:
        recent = sum(losses[-5:]) / len(losses[-5:])
        if recent < MEMORISE_RATIO * vl:
            flags.append({"flag": "memorised", "text": (
                f"Train loss ({recent:.2f}) is far below validation loss ({vl:.2f}): the model "
                "learned the training examples by heart more than the pattern. Use fewer "
                "steps/epochs, a lower learning rate, or more varied data.")})
    budget = spec.train.forget_budget
    bp, tp = fig["base"].get("probe_ppl"), fig["tuned"].get("probe_ppl")
    if bp and tp and tp > bp * (1 + max(budget, FORGET_THRESHOLD)):
        flags.append({"flag": "forgetting", "text": (
            f"Perplexity on general text rose from {bp:.1f} to {tp:.1f} (+{(tp / bp - 1):.0%}): "
            "the model is losing general knowledge. Lower the learning rate or the steps, or "
            "mix in general data.")})
    lost_budget = spec.train.retention_budget
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
    kept = rep.get("retention") or {}
    some = "what it knew"
    if kept.get("known") and kept.get("kept") is not None and kept["kept"] < kept["known"]:  # the count follows
        some = "most of what it knew" if kept["kept"] >= kept["known"] / 2 else "less than half of what it knew"
    if learned:
        return ("It learned your facts but forgot some of what it knew." if forgot_
                else f"It learned your facts and kept {some}.")
    return ("It did not clearly learn your facts, and it forgot some of what it knew." if forgot_
            else f"It did not clearly learn your facts; it kept {some}.")


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
    elif kept.get("asked"):
        parts.append(f"The base model answered none of the {kept['asked']} general questions right, so "
                     "what it kept of them cannot be measured" + ("; general-text perplexity still "
                     "shows any forgetting." if fg.get("rise") is not None else "."))
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
        from ..retention.safety import words

        parts.append(words(rep["safety"]) + ("" if rep["safety"]["harmful"]["refused_base"] else
                                             " (the base model refuses little, so there is little to keep)"))
    if rep.get("chosen_step") is not None:
        parts.append(f"The adapter is the one from step {rep['chosen_step']} (forgetting budget).")
    return " ".join(parts)
