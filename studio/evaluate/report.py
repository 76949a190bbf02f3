"""Did it learn? The report's measurements: base vs tuned on held-out data.

Owns measuring a finished run with its adapter switched on and off (compare.Pair): validation
loss and perplexity, answer match on held-out questions (the validation split, and the dataset's
held-out questions — for the sample set the paraphrases shipped in assets/) by exact match,
ROUGE-L and "contains the expected fact", general-text perplexity, retention (how many of the
general questions the base model answered right the tuned one still does), the trade-off table at
a few adapter strengths, preference-pair figures, refusals, intruder dimensions, the KL drift
from the base on the held-out questions (drift.py), the held-out rewards RL would use, training-question
recall for small Q/A sets, whether the adapter was in effect at all, and for a --from-run run
its figures against the run it started from (second.py). The words — flags,
headline, verdict, suggested strength — are verdict.py's; the lever rows and the forgetting
budget's recorded choice are retention/levers.py's. Reads the typed run spec (spec.stored).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ..data.preference import qa_pairs
from ..data.templates import answer_logps, mean_loss
from ..paths import RUN
from ..retention import levers
from ..scoring import ppl, probe_examples, score
from ..spec import RunSpec, stored
from . import second
from .verdict import diagnose, forgetting_figures, headline, suggest, verdict


REWARD_ROWS = 2000  # training rows a non-RL run's report reads to choose the rewards it scores


def heldout_sets(dataset: dict[str, Any], limit: int) -> dict[str, list[dict[str, Any]]]:
    """Question/answer rows: the validation split, plus the dataset's held-out questions (the
    user's held-out file, or the shipped paraphrases of the sample) as "paraphrased"."""
    from ..data import heldout
    from ..data.prepare import read_split

    sets: dict[str, list[dict[str, Any]]] = {}
    val = qa_pairs(read_split(Path(dataset["path"]), "validation", limit))
    if val:
        sets["validation"] = val
    rows = heldout.load(Path(dataset["path"]), limit)
    if rows is None:  # a dataset prepared before held-out files were kept with it
        for src in dataset.get("sources") or []:
            f = heldout.SAMPLE_HELDOUT.get(src)
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
    from ..data import checks

    found = checks.load(Path(dataset["path"])) or {}
    if found.get("heldout_file"):  # checked against another file: its positions are not ours
        return set()
    return {e["heldout_index"] for e in found.get("leaks", []) if e.get("heldout_index") is not None}


def sample_questions() -> list[str]:
    """The shipped held-out questions, for the Compare step's picker."""
    from ..data import heldout

    return [json.loads(x)["question"] for f in heldout.SAMPLE_HELDOUT.values() if f.exists()
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
    from ..data.prepare import read_split
    from ..data.preference import is_pair, sides
    from ..data.templates import has_chat_template
    from ..retention import safety

    t0 = time.time()
    spec = stored(run.get("config"))
    max_len = spec.train.max_len
    tok = pair.tok
    raw_val = read_split(Path(dataset["path"]), "validation", 64)
    val = [sides(ex)[0] if is_pair(ex) else ex for ex in raw_val]  # a pair's loss: its chosen answer
    probe = probe_examples()
    figures = loss_figures(pair, val, probe, max_len)
    sets = heldout_sets(dataset, limit)
    # a small Q/A set: can it recall what it trained on? (not evidence of learning)
    small = len(read_split(Path(dataset["path"]), "train", RECALL_MAX + 1)) <= RECALL_MAX
    recall = recall_rows(dataset, 12) if small or not sets else []
    said = answer_groups(pair, [*sets.values(), recall], max_new_tokens)
    examples, identical, total, known_new = score_sets(figures, sets, said, leaked_heldout(dataset))
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
    flags = diagnose(figures, identical, total, norm_b, spec, events, applied, kept)
    chosen = levers.selection(Path(run["path"]) if run.get("path") else None)
    forgetting = forgetting_figures(figures, spec)
    lever_rows = levers.rows(run, events, intruder_count(pair, run, spec))
    pairs = [ex for ex in raw_val if is_pair(ex)]
    reward = held_out_reward(spec, dataset, sets, said) if not pairs else None
    prefers = preference_figures(pair, tok, pairs, max_len) if pairs else None
    refusals = safety.check(pair, tok, memo=getattr(pair, "memo", None)) if has_chat_template(tok) else None
    drift = task_drift(pair, sets, said, name, max_new_tokens)
    out = {"run_id": run["id"], "base": figures["base"], "tuned": figures["tuned"], "reward": reward,
           "identical_answers": identical, "answers_compared": total, "flags": flags,
           "examples": examples, "retention": kept, "forgetting": forgetting, "known_new": known_new,
           "chosen_step": chosen.get("chosen_step") if chosen else None, "selection": chosen,
           "strength": strength_of(run), "trade_off": trade, "adapter_applied": applied,
           "levers": lever_rows, "preference": prefers, "safety": refusals, "drift": drift,
           "validation_facts_trained": facts_trained(sets.get("validation"), dataset),
           "seconds": round(time.time() - t0, 1), "created_at": time.time()}
    start = second.start_figures(pair, tok, run, spec.from_run, sets.get(name) or [], probe, known,
                                 max_new_tokens)
    return conclude(out, figures, flags, trade, spec, start, name, kept)


def loss_figures(pair, val: list[dict[str, Any]], probe: list[dict[str, Any]], max_len: int
                 ) -> dict[str, dict[str, Any]]:
    """Per side: validation loss and perplexity, and general-text (probe) perplexity."""
    figures: dict[str, Any] = {}
    for side in ("base", "tuned"):
        with pair.side(side) as m:
            vl = mean_loss(m, pair.tok, val, max_len) if val else None
            pl = mean_loss(m, pair.tok, probe, 512)
            figures[side] = {"val_loss": round(vl, 4) if vl is not None else None,
                             "val_ppl": ppl(vl), "probe_ppl": ppl(pl)}
    return figures


def answer_groups(pair, groups: list[list[dict[str, Any]]], max_new_tokens: int) -> dict[str, list]:
    """Per side, the answers to every group of question rows, in one go per side (bigger batches
    answer faster)."""
    from ..models.chat import generate_groups

    said = {}
    for side in ("base", "tuned"):
        with pair.side(side) as m:
            said[side] = generate_groups(m, pair.tok, [[r["messages"] for r in rows] for rows in groups],
                                         max_new_tokens)
    return said


def score_sets(figures: dict[str, Any], sets: dict[str, list], said: dict[str, list], leaked: set[int]):
    """Each held-out set's scores per side (into `figures`; without the leaked rows too, where the
    data check found some), and its examples, identical answers, answers compared and known/new."""
    from ..data.triage import split

    examples, identical, total, known_new = {}, 0, 0, {}
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
    return examples, identical, total, known_new


def conclude(out: dict[str, Any], figures: dict[str, Any], flags: list, trade, spec: RunSpec,
             start: dict[str, Any] | None, name: str, kept: dict[str, Any]) -> dict[str, Any]:
    """The report's words: a --from-run run judged against its start too, the suggested strength,
    the headline and the verdict."""
    if start is not None:  # --from-run: judged as the second update, against the start too
        out["vs_start"] = second.against_start(start, figures["tuned"], name, kept)
        out["from_run"] = {k: start[k] for k in ("id", "fact_match", "rouge_l", "probe_ppl", "kept")}
    out["suggested_strength"], out["suggested_why"] = suggest(
        trade, spec.train.forget_budget, out["strength"], spec.train.retention_budget)
    out["headline"] = headline(figures, flags, out)
    out["verdict"] = verdict(figures, flags, out)
    if start is not None:
        out["headline"], out["verdict"] = second.first_words(out["vs_start"], start["id"],
                                                             out["headline"], out["verdict"])
    return out


def held_out_reward(spec: RunSpec, dataset: dict[str, Any], sets: dict[str, list], said: dict[str, list]
                    ) -> dict[str, Any] | None:
    """The rewards an RL run on this data uses (an RL run's own choice; for other runs the ones
    chosen from the data, less those that run code) on the held-out questions, base and tuned —
    so an SFT run and an RL run can be set side by side (`rl`: whether this run optimised them);
    where the references are JSON, the share of answers to them that parse as a JSON object
    (`valid_json`). None for data no reward applies to."""
    from ..data.prepare import read_split
    from ..errors import DataError
    from ..train import rewards as rw

    name = "paraphrased" if "paraphrased" in sets else "validation" if "validation" in sets else None
    if name is None:
        return None
    k = list(sets).index(name)
    rows = rw.reward_rows(sets[name])
    rl = spec.train.objective in ("grpo", "rloo")
    try:
        chosen = rw.choose(rw.reward_rows(read_split(Path(dataset["path"]), "train", None if rl else REWARD_ROWS)),
                           spec.train.rewards if rl else "")  # an RL run: chosen as its training chose
    except DataError:  # e.g. a reward file moved since the run, or data no reward applies to
        return None
    if not rl:  # the user agreed to run code for an RL run only
        chosen = [r for r in chosen if not r.runs_code]
        if not any(r.role == "score" for r in chosen):
            return None
    ctx = rw.context(chosen, rows)
    before, after = (rw.mean_reward(chosen, said[side][k], rows, ctx) for side in ("base", "tuned"))
    out = {"before": before, "after": after, "n": len(rows), "on": name, "rl": rl,
           "rewards": [r.name for r in chosen]}
    objects = [i for i, r in enumerate(rows) if isinstance(rw.as_json(r["answer"]), dict)]
    if rw.json_answers(rows) and objects:  # structured answers: how many parse at all
        out["valid_json"] = {when: round(sum(isinstance(rw.as_json(said[side][k][i]), dict) for i in objects)
                                         / len(objects), 4) for when, side in (("before", "base"), ("after", "tuned"))}
    return out


def task_drift(pair, sets: dict[str, list], said: dict[str, list], name: str, max_new_tokens: int
               ) -> dict[str, Any] | None:
    """The KL drift from the base model on the held-out questions, read on the tuned answers."""
    from .drift import task_kl

    if name not in sets:
        return None
    got = task_kl(pair, [r["messages"] for r in sets[name]], said["tuned"][list(sets).index(name)],
                  max_new_tokens)
    return {**got, "on": name} if got else None


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


def facts_trained(rows: list[dict[str, Any]] | None, dataset: dict[str, Any], limit: int = 5000) -> float | None:
    """The share of validation questions whose expected answer's key facts (scoring.key_facts)
    all appear in some training answer. Low when the validation split holds distinct facts
    (one fact per row, split at random): those questions test facts never taught, so a low
    match there is no failure to learn."""
    from ..scoring import key_facts, states

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
    from ..data.preference import sides

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


def intruder_count(pair, run: dict[str, Any], spec: RunSpec) -> dict[str, Any] | None:
    """The adapter's intruder dimensions (intruders.py), for the targeted-strength row; None
    for DoRA adapters (no sum of singular directions)."""
    from ..retention import intruders

    if spec.lora.dora:
        return None
    return intruders.count(Path(run["path"]) / RUN.adapter, intruders.base_weights(pair.model))


RECALL_MAX = 200          # training sets this small also get a recall score
def recall_rows(dataset: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    from ..data.prepare import read_split

    return qa_pairs(read_split(Path(dataset["path"]), "train", limit))


def known_general(pair, tok) -> dict[str, Any]:
    """The general questions (assets/retention.jsonl) the base model answers right, with its
    answers: what retention is measured on (the base side's answers kept per model by the memo)."""
    from ..retention import replay

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
    from ..retention import replay

    said = replay.retention_answers(model, tok, known["rows"])
    return said, replay.knows(said, known["rows"])


def retention(pair, tok, known: dict[str, Any]) -> dict[str, Any]:
    """Kept N of the M general questions the base model answers right."""
    if not known["rows"]:
        return {"known": 0, "kept": 0, "share": None, "asked": known["asked"], "lost": [], "still": []}
    with pair.side("tuned") as m:
        tuned, ok = still_known(m, tok, known)
    lost = [{"question": r["question"], "expected": r["expect"], "base": b, "tuned": t}
            for r, b, t, good in zip(known["rows"], known["base"], tuned, ok) if not good]
    return {"known": len(ok), "kept": sum(ok), "share": round(sum(ok) / len(ok), 4),
            "asked": known["asked"], "lost": lost, "still": [i for i, good in enumerate(ok) if good]}


TRADE_OFF_STRENGTHS = (0.5, 0.75, 1.0)  # the trade-off table's rows (with the strength it has)


def trade_off(pair, tok, run, rows, probe, figures, name, max_new_tokens, known, kept
              ) -> list[dict[str, Any]]:
    """Held-out answer match, general-text perplexity and retention (the share of the known
    general questions still answered right) of the tuned model at a few adapter strengths (in
    memory, nothing is written); the strength it has now is already scored."""
    from ..models.chat import generate_batch
    from ..retention.delta import start_dir
    from ..retention.strength import at, current

    now = current(Path(run["path"]))
    if not rows or (now == 0 and start_dir(run["path"]) is None):
        return []
    base, tuned = figures["base"].get("probe_ppl"), figures["tuned"]
    key = "fact_match" if any(r.get("expect") for r in rows) else "rouge_l"

    def row(value, pl, match, share):
        return {"strength": value, "probe_ppl": pl, "match": match, "metric": key, "kept": share,
                "rise": round(pl / base - 1, 4) if pl and base else None}

    out = [row(now, tuned.get("probe_ppl"), tuned[name][key], kept["share"])]
    for value in sorted(set(TRADE_OFF_STRENGTHS) - {now}):
        with pair.side("tuned") as m, at(m, Path(run["path"]), value):
            pl = ppl(mean_loss(m, tok, probe, 512))
            got = generate_batch(m, tok, [r["messages"] for r in rows], max_new_tokens)
            ok = still_known(m, tok, known)[1] if known["rows"] else []
        out.append(row(value, pl, score(got, rows)[key], round(sum(ok) / len(ok), 4) if ok else None))
    return sorted(out, key=lambda r: r["strength"])


def strength_of(run: dict[str, Any]) -> float:
    from ..retention.strength import current

    return current(Path(run["path"]))


