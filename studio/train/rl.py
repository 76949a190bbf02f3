"""Reinforcement learning (train.objective=grpo|rloo) through TRL's GRPOTrainer / RLOOTrainer,
and the reward preview.

Owns the dataset TRL reads (each prompt with its reference answer and recipe, as columns the
reward reads), TRL's config from the same arguments an SFT run gets (steps, schedule,
checkpoints — so the studio's callback, Stop, resume after kill -9 and the forgetting budget work
unchanged) plus the RL knobs (train.generations, completion_len, temperature, beta), the one
reward function TRL calls (rewards.combine over the run's chosen rewards, each reward's mean
logged too), and `preview`: sampled answers from the starting model, rewarded per group, with
the verdict in words. The reference for the KL term is the same weights with the adapter
switched off (TRL does this for a PEFT model): no second copy. Generation is plain transformers.
`micro_batch` counts prompts: a step trains on micro_batch × generations sampled answers.
"""
from __future__ import annotations

from typing import Any, Callable

from . import rewards as rw

TRL_LOGS = {"reward": "reward_mean", "reward_std": "reward_std",
            "frac_reward_zero_std": "zero_spread", "completions/mean_length": "completion_len"}
PREFIX = "studio_reward/"  # each chosen reward's mean, logged by RewardFn


class RewardFn:
    """The reward TRL calls: the run's rewards combined, per completion (None: unscorable)."""
    __name__ = "reward"

    def __init__(self, chosen: list[rw.Reward], ctx: dict[str, Any]):
        self.chosen, self.ctx = chosen, ctx

    def __call__(self, prompts, completions, question, answer, recipe, log_metric=None, **kw):
        texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
        rows = [{"question": q, "answer": a, "recipe": r} for q, a, r in zip(question, answer, recipe)]
        each = [rw.values(self.chosen, t, row, self.ctx) for t, row in zip(texts, rows)]  # once per reward
        if log_metric is not None:
            for j, r in enumerate(self.chosen):
                vals = [v[j] for v in each if v[j] is not None]
                if vals:
                    log_metric(PREFIX + r.name.rsplit("/", 1)[-1], sum(vals) / len(vals))
        return [rw.combined(self.chosen, v) for v in each]


class StateTokens:
    """Tokens seen (prompts and sampled answers), read from the trainer's state for tokens/s."""

    def __init__(self):
        self.trainer = None

    @property
    def tokens(self) -> int:
        return int(self.trainer.state.num_input_tokens_seen) if self.trainer is not None else 0


def chosen_rewards(spec, train_rows: list[dict[str, Any]], dataset: str = "the dataset"):
    rows = rw.reward_rows(train_rows)
    chosen = rw.choose(rows, spec.train.rewards, dataset)
    ctx = rw.context(chosen, rows)
    if any(r.name == "safety" for r in chosen):
        rows = rows + safety_rows(len(rows))
    return rows, chosen, ctx


def safety_rows(n_prompts: int) -> list[dict[str, Any]]:
    """The harmful requests the safety reward mixes into a run of `n_prompts` prompts: from the
    safety-replay set (the report's safety check asks others), one per ten, at least one and at
    most the whole set."""
    from ..retention.safety import read

    asks = read(rw.SAFETY_SET)[:max(1, round(rw.SAFETY_SHARE * n_prompts))]
    return [{"prompt": [{"role": "user", "content": a["prompt"]}], "question": a["prompt"], "answer": "",
             "recipe": rw.SAFETY} for a in asks]


def make_trainer(objective: str, spec, model, args_kw: dict[str, Any], tok, train_rows,
                 callbacks: list, counting: StateTokens):
    """The TRL trainer for a grpo or rloo run on the run's questions."""
    from datasets import Dataset

    t = spec.train
    rows, chosen, ctx = chosen_rewards(spec, train_rows)
    data = Dataset.from_list([{k: r[k] for k in ("prompt", "question", "answer", "recipe")} for r in rows])
    kw = {**args_kw, "per_device_train_batch_size": t.micro_batch * t.generations,
          "per_device_eval_batch_size": t.micro_batch * t.generations, "eval_strategy": "no",
          "num_generations": t.generations, "max_completion_length": t.completion_len,
          "temperature": t.temperature, "beta": t.beta, "log_completions": False,
          "shuffle_dataset": True}
    kw.pop("prediction_loss_only", None)
    if t.vllm:  # checked before the run started (config.vllm_check): installed, on a CUDA GPU
        kw.update(use_vllm=True, vllm_mode="colocate")
    if objective == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        cls, args = GRPOTrainer, GRPOConfig(**kw)
    else:
        from trl import RLOOConfig, RLOOTrainer

        cls, args = RLOOTrainer, RLOOConfig(**kw)
    trainer = cls(model=model, reward_funcs=[RewardFn(chosen, ctx)], args=args, train_dataset=data,
                  processing_class=tok, callbacks=callbacks)
    counting.trainer = trainer
    return trainer


def sample(model, tok, prompts: list[list[dict[str, str]]], n: int, max_new_tokens: int,
           temperature: float, seed: int = 0, on_prompt: Callable[[int, int], None] | None = None,
           per_batch: int = 4) -> list[list[str]]:
    """`n` sampled answers per conversation (plain transformers generate, left padding), the
    conversations `per_batch` at a time (on 2 CPU cores 4 prompts × 4 answers take about the time
    of 1.5 prompts one by one); `on_prompt(done, total)` after each batch."""
    import torch

    torch.manual_seed(seed)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out: list[list[str]] = []
    for i in range(0, len(prompts), per_batch):
        rows = [tok(tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True),
                    add_special_tokens=False)["input_ids"] for c in prompts[i:i + per_batch]]
        width = max(map(len, rows))
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=model.device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=model.device)
        with torch.no_grad():
            got = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=temperature,
                                 top_p=1.0, max_new_tokens=max_new_tokens, num_return_sequences=n,
                                 pad_token_id=pad)
        said = [tok.decode(x, skip_special_tokens=True).strip() for x in got[:, width:]]
        out.extend(said[j:j + n] for j in range(0, len(said), n))
        if on_prompt:
            on_prompt(len(out), len(prompts))
    return out


def preview(model, tok, spec, train_rows: list[dict[str, Any]], dataset: str, groups: int = 8,
            on_prompt: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Rewards of `groups` prompts × train.generations sampled answers from the starting model:
    the names, the groups, the share with zero spread, the mean and the verdict, and each
    group's prompt with its rewards (`examples`)."""
    rows, chosen, ctx = chosen_rewards(spec, train_rows, dataset)
    step = max(1, len(rows) // groups)
    picked = rows[::step][:groups]
    t = spec.train
    said = sample(model, tok, [r["prompt"] for r in picked], t.generations, t.completion_len,
                  t.temperature, t.seed, on_prompt)
    scores = [[v if (v := rw.combine(chosen, a, r, ctx)) is not None else 0.0 for a in answers]
              for answers, r in zip(said, picked)]
    examples = [{"prompt": r["prompt"][-1]["content"], "rewards": [round(v, 3) for v in g],
                 "best": answers[max(range(len(g)), key=g.__getitem__)] if g else "",
                 "spread": round(max(g) - min(g), 4) if g else 0.0}
                for r, g, answers in zip(picked, scores, said)]
    return {"rewards": [r.name for r in chosen], **rw.verdict(scores), "examples": examples}
