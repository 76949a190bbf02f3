"""What each forgetting lever did in a run, in plain words: a row per lever for the report and
Compare.

Owns reading a run's record of its levers — the typed run spec (spec.stored), levers.json (written by
train/batches.assemble: what augmentation and replay did), the events (the soft anchor's KL at
each log), selection.json (the forgetting budget's choice) and the adapter's own state (its
strength, its intruder scaling) — into rows {lever, on, setting, did}. A lever that was off says
so in one short row, so the user sees every lever there is. Measuring a lever's effect on the
held-out questions and general text (a run without it) is benchmarks/bench_outcome.py's job; the
rows say what each lever did inside this run.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..paths import RUN
from ..spec import stored


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def recorded_choice(state: dict[str, Any]) -> dict[str, Any] | None:
    """The forgetting budget's choice as selection.json holds it (train/selection.Watcher writes
    it): the chosen evaluation, why, the last full-strength one, the base figures and every
    evaluation; None when no choice was made (budget 0, or a stopped run)."""
    if not isinstance(state, dict):
        return None
    evals = state.get("evals") or []
    chosen = state.get("chosen")
    full = [e for e in evals if e.get("strength", 1.0) == 1.0]
    last = max(full, key=lambda e: e["step"]) if full else None
    if chosen is None or last is None:
        return None
    return {"chosen_step": chosen["step"], "budget": state.get("budget"), "reason": state.get("reason"),
            "chosen": chosen, "last": last, "base": state.get("base"), "evaluations": evals,
            "start": state.get("start")}  # --from-run: the start run's figures (vs_start's basis)


def selection(run_dir: Path | None) -> dict[str, Any] | None:
    """The run's recorded choice (recorded_choice), None without one."""
    return recorded_choice(_json(run_dir / RUN.selection)) if run_dir else None


def rows(run: dict[str, Any], events: list[dict[str, Any]], intruders: dict[str, Any] | None = None
         ) -> list[dict[str, Any]]:
    """The lever rows of `run` (a store row with its config); `intruders` is the adapter's
    intruder count (intruders.count) when the report measured it."""
    spec = stored(run.get("config"))
    t = spec.train
    run_dir = Path(run["path"]) if run.get("path") else None
    done = _json(run_dir / RUN.levers) if run_dir else {}
    aug = done.get("augment") or {}
    sel = selection(run_dir) or {}
    return [replay_row(t, done, events), safety_row(t, done), distill_row(t, aug),
            paraphrase_row(t, aug), fact_weight_row(t, done.get("fact_weight") or {}),
            targeted_row(t, intruders), placement_row(spec.lora), budget_row(t, sel),
            strength_row(run_dir, sel)]


def row(lever: str, on: bool, setting: str, did: str) -> dict[str, Any]:
    return {"lever": lever, "on": on, "setting": setting, "did": did}


def replay_row(t, done: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    """Replay: off, a soft anchor (kl, with its first and last KL) or cross-entropy (ce)."""
    ratio, mode = t.replay, t.replay_mode
    kls = [e["kl"] for e in events if e.get("kl") is not None]
    if not ratio:
        return row("replay", False, "train.replay=0", "Off: nothing held the model to what it was.")
    short = (f", short answers ×{t.replay_short:g}" if t.replay_short != 1.0 else "") + (
        ", checked answers only" if t.replay_checked else "")
    wrong = (f" {done['replay_wrong']} of the base model's answers to questions with a known answer "
             "were wrong and were left out." if done.get("replay_wrong") else "")
    if mode == "kl":
        drift = (f" The KL to the base model on replay text was {kls[0]:.3f} at the first step and "
                 f"{kls[-1]:.3f} at the last (0 = the base model's own predictions)." if kls else "")
        return row("replay", True, f"kl, weight {t.replay_weight:g}, {ratio:g} per example{short}",
                   f"A soft anchor: {done.get('replayed', '?')} of the base model's own answers to general "
                   f"prompts rode along in the batches, and on them the tuned model's next-token "
                   f"predictions were pulled toward the base model's." + drift + wrong)
    return row("replay", True, f"ce, {ratio:g} per example{short}",
               f"{done.get('replayed', '?')} of the base model's own answers to general prompts were "
               "mixed into training and learned like your examples." + wrong)


def safety_row(t, done: dict[str, Any]) -> dict[str, Any]:
    keep = t.safety_replay
    return row("safety replay", bool(keep and done.get("safety_replayed")), f"train.safety_replay={keep:g}",
               f"{done['safety_replayed']} of the base model's own refusals to harmful requests were mixed "
               "into training, so it keeps refusing them." if done.get("safety_replayed") else
               ("Off." if not keep else "On, but the base model refused none of the harmful requests it was "
                                        "asked: there was no refusal to keep."))


def distill_row(t, aug: dict[str, Any]) -> dict[str, Any]:
    if not t.self_distill:
        return row("self-distilled targets", False, "train.self_distill=false", "Off: the model learned "
                   "your answers in your wording.")
    kept = aug.get("kept_original") or {}
    why = "; ".join(f"{n} {w}" for w, n in kept.items())
    return row("self-distilled targets", True, "train.self_distill=true",
               f"{aug.get('distilled', 0)} answers were the base model's own restatement of your answer, "
               f"so training pulled it less far from its own style"
               + (f"; {sum(kept.values())} kept your wording ({why})." if kept else "."))


def paraphrase_row(t, aug: dict[str, Any]) -> dict[str, Any]:
    if not t.paraphrases:
        return row("paraphrases", False, "train.paraphrases=0", "Off: each fact was seen in the wordings "
                   "of your data only.")
    dropped = aug.get("paraphrases_dropped") or {}
    return row("paraphrases", True, f"train.paraphrases={t.paraphrases}",
               f"{aug.get('paraphrases', 0)} rewritten questions joined training with their answers, "
               f"so each fact was seen in more than one wording"
               + (f"; {sum(dropped.values())} were left out by the checks." if dropped else "."))


def fact_weight_row(t, did: dict[str, Any]) -> dict[str, Any]:
    """Key-fact weighting (train/facts.py): how many examples had facts to weigh."""
    w = t.fact_weight
    if w == 1.0:
        return row("key-fact weight", False, "train.fact_weight=1", "Off: every answer token counted the same.")
    n = did.get("with_facts")
    return row("key-fact weight", bool(n), f"train.fact_weight={w:g}",
               (f"In {n} of {did.get('examples')} examples the tokens of the names and numbers the answer "
                f"states counted {w:g}× in the loss." if n else
                "No answer stated a name or a number its question did not, so nothing was weighted.")
               if did else "Set, but the run recorded no weighting (it was not a supervised run).")


def targeted_row(t, intruders: dict[str, Any] | None) -> dict[str, Any]:
    scale = t.intruder_scale
    counted = (f"The adapter as kept has {intruders['intruders']} intruder dimensions (new "
               f"directions the base weights did not have) in {intruders['layers_with']} of "
               f"{intruders['layers']} adapted layers." if intruders else "")
    if scale < 1:
        return row("targeted strength", True, f"train.intruder_scale={scale:g}",
                   f"The update's directions that add intruder dimensions were scaled by {scale:g}; the "
                   f"rest stayed as trained. {counted}".strip())
    return row("targeted strength", False, "train.intruder_scale=1", ("Off. " + counted).strip())


def placement_row(lora) -> dict[str, Any]:
    layers, targets = lora.layers, lora.targets
    return row("where the update goes", layers != "all" or targets != "all-linear",
               f"lora.targets={targets}, lora.layers={layers}",
               f"Adapters on {targets} of {'every' if layers == 'all' else 'the ' + layers} layer"
               f"{'s' if layers != 'all' else ''}.")


def budget_row(t, sel: dict[str, Any]) -> dict[str, Any]:
    budget = t.forget_budget
    return row("forgetting budget", bool(budget), f"train.forget_budget={budget:g}",
               sel.get("reason") or ("Off: the adapter is the last step's." if not budget else
                                     "No evaluation was made, so the last step is the adapter."))


def strength_row(run_dir: Path | None, sel: dict[str, Any]) -> dict[str, Any]:
    """The adapter's strength as kept, and the step the budget chose it at when it is not 1."""
    from .strength import current

    chosen = sel.get("chosen") or {}
    value = current(run_dir) if run_dir else 1.0
    return row("adapter strength", value != 1.0, f"{value:g}",
               f"The adapter applies {value:.0%} of its update" + (
                   f" (chosen at step {chosen.get('step')})." if chosen.get("strength", 1.0) != 1.0 else "."))
