"""Preference training (train.objective=dpo|orpo) through TRL's trainers.

Owns turning the run's preference pairs (data/preference.py's canonical form, which is TRL's
conversational one) into the datasets TRL reads, TRL's config from the same arguments an SFT run
gets (steps, batch, schedule, checkpoints, evaluation — so the studio's callback, Stop, resume
after kill -9 and the forgetting budget work unchanged), and the trainer: DPO with the reference
taken from the same weights (TRL adds a frozen copy of the run's starting adapter, or switches
the adapter off for a fresh one: no second copy of the model), or ORPO (no reference). TRL's
collator is wrapped so tokens/s counts every real token. The loss variant, beta and the weight of
a supervised term on the chosen answers are the spec's (train.pref_loss, train.beta,
train.pref_sft).
"""
from __future__ import annotations

from typing import Any

from ..errors import DataError

TRL_LOGS = {"rewards/margins": "reward_margin", "rewards/accuracies": "reward_accuracy",
            "eval_rewards/margins": "eval_reward_margin", "eval_rewards/accuracies": "eval_reward_accuracy"}


def pairs(rows: list[dict[str, Any]], split: str) -> list[dict[str, Any]]:
    """The preference pairs of a split; a split of other examples is refused."""
    from ..data.preference import is_pair

    out = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows if is_pair(r)]
    if rows and len(out) < len(rows):
        raise DataError(f"The {split} split mixes preference pairs with other examples "
                        f"({len(rows) - len(out)} of {len(rows)} are not pairs); prepare the pairs "
                        "as a dataset of their own.")
    return out


class CountingWrapper:
    """TRL's collator, counting the real (non-padding) tokens it hands out."""

    def __init__(self, inner):
        self.inner, self.tokens = inner, 0

    def __call__(self, features):
        batch = self.inner(features)
        # DPO: one attention_mask over chosen and rejected rows; ORPO: chosen_/rejected_ ones
        # (its prompt_ ones are the prompt again, inside both)
        self.tokens += sum(int(v.sum()) for k, v in batch.items()
                           if k.endswith("attention_mask") and not k.startswith("prompt_"))
        return batch


def dpo_losses(t) -> tuple[list[str], list[float]]:
    """TRL's loss types and their weights for a dpo run: the preference loss, and the supervised
    term on the chosen answers where train.pref_sft weighs it."""
    losses = {t.pref_loss: 1.0, **({"sft": t.pref_sft} if t.pref_sft else {})}
    return list(losses), list(losses.values())


def make_trainer(objective: str, spec, model, args_kw: dict[str, Any], tok, train_rows, eval_rows,
                 callbacks: list, counting: CountingWrapper):
    """The TRL trainer for a dpo or orpo run; `counting` (which the callback reads) is made to
    wrap its collator."""
    from datasets import Dataset

    t = spec.train
    train = Dataset.from_list(pairs(train_rows, "train"))
    evals = pairs(eval_rows, "validation")
    kw = {**args_kw, "max_length": t.max_len, "beta": t.beta}
    if objective == "dpo":
        from trl import DPOConfig, DPOTrainer

        types, weights = dpo_losses(t)
        args = DPOConfig(**kw, loss_type=types, loss_weights=weights)
        trainer = DPOTrainer(model=model, args=args, train_dataset=train,
                             eval_dataset=Dataset.from_list(evals) if evals else None,
                             processing_class=tok, callbacks=callbacks)
    else:
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        args = ORPOConfig(**kw)
        trainer = ORPOTrainer(model=model, args=args, train_dataset=train,
                              eval_dataset=Dataset.from_list(evals) if evals else None,
                              processing_class=tok, callbacks=callbacks)
    counting.inner = trainer.data_collator
    trainer.data_collator = counting
    return trainer
