"""The forgetting budget: which evaluation's adapter becomes the run's adapter.

Owns the figures taken at each evaluation — perplexity on the general-text probe
(assets/general_probe.txt, never trained on) against the base model's (the same weights with the
adapter switched off), the share of the general questions the base model answers right
(assets/retention.jsonl) that it still answers right, and answer match on the validation
questions (greedy answers: the share of the expected answers' key facts they state, ROUGE-L where
an answer has none) —
kept in run_dir/selection.json, a copy of the adapter at the best evaluation so far
(run_dir/best-adapter/), and the choice at the end: the evaluation with the best answer match
whose forgetting stays within budget — perplexity rise within `train.forget_budget`, general
answers lost within `train.retention_budget` — (ties: the one that lost fewer); when none does, the one that forgot least.
The choice carries its reason and what the last step would have given (the report shows both).

A run that started from another (--from-run) is judged as the second update: its lower strengths
scale only what it added (retention/delta.py), and each evaluation also carries `vs_start` — the
same figures against the start run's adapter (taken once, before the first step): perplexity
rise, answer match change, and of the general questions the base and the start both answered
right, the share still answered. The choice is still made against the base.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..faults import atomic_write_text
from ..models.chat import evaluating
from ..retention.levers import recorded_choice
from ..paths import RUN

LOWER_STRENGTHS = (0.75, 0.5, 0.25)  # the last adapter is also tried at these, below full
MAX_QUESTIONS = 8
MAX_NEW_TOKENS = 32
FIGURES = 2  # bump when what `_figures` computes changes: kept base figures are made again


def questions(val: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validation chat examples whose last turn is the assistant's: question → expected answer."""
    from ..data.preference import qa_pairs

    return qa_pairs(val)[:MAX_QUESTIONS]


def probe_loss(model, tok) -> float | None:
    from ..data.templates import mean_loss
    from ..scoring import probe_examples

    return mean_loss(model, tok, probe_examples(), 512)


def answer_match(model, tok, qs: list[dict[str, Any]]) -> float | None:
    """How well greedy answers to the held-out questions state what the expected answers state:
    per question the share of its key facts (numbers, names: scoring.key_facts) the answer
    states, or — for an answer without any — its ROUGE-L. A fact learned counts; wording does
    not, so a model that only learned the answers' shape does not look like it learned them."""
    from ..models.chat import generate_batch
    from ..scoring import fact_share

    if not qs:
        return None
    got = generate_batch(model, tok, [q["messages"] for q in qs], MAX_NEW_TOKENS)
    return round(sum(fact_share(a, q["answer"], q["messages"][-1]["content"])
                     for a, q in zip(got, qs)) / len(qs), 4)


class Watcher:
    """Takes the figures at each evaluation and keeps the best adapter; survives a resume (the
    evaluations after the checkpoint resumed from are dropped, as the events are)."""

    def __init__(self, run_dir: Path, tok, val: list[dict[str, Any]], budget: float, start: int,
                 lost_budget: float = 1.0, start_adapter: Path | None = None):
        self.run_dir, self.tok, self.budget, self.lost_budget = run_dir, tok, budget, lost_budget
        self.start_adapter = start_adapter  # --from-run: the start run's adapter (delta.keep_start)
        self.qs = questions(val)
        self.state: dict[str, Any] = {"budget": budget, "base": None, "evals": [], "best_step": None}
        try:
            old = json.loads((run_dir / RUN.selection).read_text())
            self.state.update(base=old.get("base"), start=old.get("start"),
                              evals=[e for e in old.get("evals", []) if e["step"] <= start])
            best = old.get("best_step")
            if best is not None and best <= start and (run_dir / RUN.best_adapter).is_dir():
                self.state["best_step"] = best
        except (OSError, ValueError, KeyError, TypeError):
            pass  # no state yet, or a damaged one: the figures are taken again
        if self.state["best_step"] is None:
            shutil.rmtree(run_dir / RUN.best_adapter, ignore_errors=True)

    def _save(self) -> None:
        atomic_write_text(self.run_dir / RUN.selection, json.dumps(self.state, indent=1))

    def _figures(self, model, rows: list[dict[str, str]] | None = None) -> dict[str, Any]:
        """Perplexity, answer match, and the share of general questions still answered right:
        of the base model's known ones (self.known()), or — for the base itself — of `rows`,
        with the indices it knows."""
        import math

        from ..retention.replay import knows, retention_answers

        base = rows is not None
        rows = rows if base else self.known()
        ok = knows(retention_answers(model, self.tok, rows), rows) if rows else []
        loss = probe_loss(model, self.tok)
        out = {"probe_ppl": round(math.exp(loss), 3) if loss is not None else None,
               "answer_match": answer_match(model, self.tok, self.qs),
               "kept": round(sum(ok) / len(ok), 4) if ok else None}
        if base:
            out["known"] = [i for i, k in enumerate(ok) if k]
        else:  # which of the base's known questions it still answers (vs_start needs the start's)
            out["kept_idx"] = [i for i, k in enumerate(ok) if k]
        return out

    def known(self) -> list[dict[str, str]]:
        """The general questions the base model answers right (taken with its figures)."""
        from ..retention.replay import retention_rows

        rows, idx = retention_rows(), (self.state["base"] or {}).get("known") or []
        return [rows[i] for i in idx if i < len(rows)]

    def _forgetting(self, fig: dict[str, Any]) -> None:
        """The evaluation's two forgetting figures against the base: perplexity rise and the share
        of known general answers lost."""
        base = (self.state["base"] or {}).get("probe_ppl")
        fig["forgetting"] = round(fig["probe_ppl"] / base - 1, 4) if base and fig["probe_ppl"] else None
        fig["lost"] = round(1 - fig["kept"], 4) if fig.get("kept") is not None else None
        if self.state.get("start"):
            fig["vs_start"] = vs_start(fig, self.state["start"])

    def over(self, e: dict[str, Any]) -> bool:
        """Over a budget: perplexity (forget_budget) or everyday answers lost (retention_budget)."""
        return ((e["forgetting"] is not None and e["forgetting"] > self.budget)
                or (e.get("lost") is not None and e["lost"] > self.lost_budget + 1e-9))

    @staticmethod
    def forgot(e: dict[str, Any]) -> float:
        """How much an evaluation forgot, both figures together (for the least-forgetting pick)."""
        return max(e["forgetting"] or 0.0, 0.0) + (e.get("lost") or 0.0)

    def baseline(self, model, memo=None) -> None:
        """The base model's figures (adapter off), once per run — and with a memo
        (base_answers.Memo), once per model revision and validation set: a second run on the
        same data reads them back."""
        if self.state["base"] is not None:
            return

        from ..retention.replay import retention_rows
        from ..scoring import probe_examples

        rows = retention_rows()

        def figures() -> dict[str, Any]:
            with model.disable_adapter(), evaluating(model):
                return self._figures(model, rows)

        inputs = {"version": FIGURES, "questions": self.qs, "probe": probe_examples(),
                  "max_new_tokens": MAX_NEW_TOKENS, "retention": rows}
        self.state["base"] = memo.figures(inputs, figures) if memo is not None else figures()
        self._save()

    def start_figures(self, model) -> None:
        """A --from-run run's start figures: the model before its first step is the start run's
        adapter. Once per run (a resume reads them back; its model is the start again too)."""
        if self.start_adapter is None or self.state.get("start") is not None:
            return
        with evaluating(model):
            self.state["start"] = self._figures(model)
        self._save()

    def evaluate(self, model, step: int, eval_loss: float | None) -> dict[str, Any]:
        with evaluating(model):
            fig = {"step": step, "eval_loss": eval_loss, **self._figures(model)}
        self._forgetting(fig)
        self.state["evals"] = [e for e in self.state["evals"] if e["step"] != step] + [fig]
        if self.best() is fig:
            tmp = self.run_dir / f".{RUN.best_adapter}-tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            model.save_pretrained(tmp, safe_serialization=True)
            shutil.rmtree(self.run_dir / RUN.best_adapter, ignore_errors=True)
            tmp.rename(self.run_dir / RUN.best_adapter)
            self.state["best_step"] = step
        self._save()
        return fig

    def strengths(self, model, step: int) -> None:
        """The last adapter at lower strengths too (in memory): scaling the whole update down
        often keeps more of the facts than stopping early for the same forgetting."""
        from functools import partial

        from ..retention import delta
        from ..retention.strength import scaled

        at = partial(scaled, model)
        if self.start_adapter is not None:  # a second update: scale only what this run added
            start, cfg = delta.read(self.start_adapter)
            at = partial(delta.swapped, model, delta.weights_of(model), start, cfg)
        last = next((e for e in self.state["evals"] if e["step"] == step and e.get("strength", 1.0) == 1.0), None)
        if last is None or not self.over(last):
            return  # within the budget at full strength: nothing to trade
        self.state["evals"] = [e for e in self.state["evals"] if not (e["step"] == step and e.get("strength", 1.0) != 1.0)]
        for value in LOWER_STRENGTHS:
            with evaluating(model), at(value):
                fig = {"step": step, "strength": value, "eval_loss": None, **self._figures(model)}
            self._forgetting(fig)
            self.state["evals"].append(fig)
        self._save()

    def best(self) -> dict[str, Any] | None:
        """Within the budget: the best answer match (then the lowest eval loss, then the least
        forgetting). None within it: the least forgetting."""
        evals = self.state["evals"]
        if not evals:
            return None
        inside = [e for e in evals if not self.over(e)]
        if inside:
            return max(inside, key=lambda e: (e["answer_match"] or 0.0, -(e.get("lost") or 0.0),
                                              e.get("strength", 1.0), -(e["eval_loss"] or 0.0),
                                              -self.forgot(e)))
        return min(evals, key=self.forgot)

    def choice(self, last_step: int) -> dict[str, Any] | None:
        """What the run keeps, why, and what the last step would have given; None without
        evaluations."""
        best, evals = self.best(), self.state["evals"]
        if best is None:
            return None
        last = max((e for e in evals if e.get("strength", 1.0) == 1.0), key=lambda e: e["step"])
        value = best.get("strength", 1.0)
        pct = f"{self.budget:.0%}"
        if self.over(best):
            lost = f", {best['lost']:.0%} of the known general answers lost" if best.get("lost") else ""
            reason = (f"No evaluation stayed within the forgetting budget ({pct}); kept step "
                      f"{best['step']}, the one that forgot least ({(best['forgetting'] or 0):+.0%} "
                      f"general-text perplexity{lost}). Lower the learning rate or the steps, or "
                      "raise train.replay_weight.")
        elif best["step"] == last["step"] and value != 1.0:
            reason = (f"The last adapter at strength {value:g} answered the held-out questions best "
                      f"within the forgetting budget ({pct}); at full strength it "
                      + ("forgot more than the budget allows." if self.over(last) else "was no better.") + " The adapter is kept at that strength "
                      + ("of what this run added to the run it started from " if self.start_adapter else "")
                      + "(adapter-full/ holds it as trained).")
        elif best["step"] == last["step"]:
            reason = f"The last evaluation (step {best['step']}) was the best within the forgetting budget ({pct})."
        else:
            reason = (f"Step {best['step']} answered the held-out questions best within the "
                      f"forgetting budget ({pct}); the last evaluation (step {last['step']}) "
                      + ("forgot more than the budget allows." if self.over(last) else "was no better."))
        self.state["reason"], self.state["chosen"] = reason, best
        self._save()
        kept = self.run_dir / RUN.best_adapter
        return {**recorded_choice(self.state), "strength": value, "last_step": last_step,
                "adapter": kept if best["step"] != last_step and kept.is_dir() else None}


def vs_start(fig: dict[str, Any], start: dict[str, Any]) -> dict[str, Any]:
    """An evaluation against the start run's adapter: perplexity rise, answer match change, and
    of the general questions the base and the start both answered right, the share still right."""
    sp, sm, known = start.get("probe_ppl"), start.get("answer_match"), start.get("kept_idx")
    still = set(fig.get("kept_idx") or [])
    return {"forgetting": round(fig["probe_ppl"] / sp - 1, 4) if sp and fig["probe_ppl"] else None,
            "answer_match": sm,
            "match_change": (round(fig["answer_match"] - sm, 4)
                             if sm is not None and fig["answer_match"] is not None else None),
            "kept": round(sum(i in still for i in known) / len(known), 4) if known else None}
