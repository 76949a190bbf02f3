"""How far the tuned model moved from the base model on the user's own task: the KL drift.

Owns `task_kl`: on the held-out questions, each of the tuned model's own answers is read by both
sides (adapter on and off), and at every answer token the tuned model's next-token distribution is
compared with the base model's, KL(tuned ‖ base), summed over the vocabulary. The mean over the
answer tokens is the report's `drift.kl` (nats per token; 0 = the base model would predict the
same). "RL's Razor" (arXiv 2509.04259) found that forgetting tracks this figure — the drift on the
new task — across methods, and that RL moves less than SFT at the same accuracy; the report gives
it for every run so runs of different methods can be set side by side.
"""
from __future__ import annotations

from typing import Any

BATCH = 8


def sequences(tok, conversations: list[list[dict[str, str]]], answers: list[str], max_len: int
              ) -> list[tuple[list[int], int]]:
    """(prompt + answer token ids, where the answer starts) per non-empty answer, cut to max_len."""
    out = []
    for conv, answer in zip(conversations, answers):
        if not answer.strip():
            continue
        prompt = tok(tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True),
                     add_special_tokens=False)["input_ids"]
        said = tok(answer, add_special_tokens=False)["input_ids"]
        ids = (prompt + said)[:max_len]
        if len(ids) > len(prompt):
            out.append((ids, len(prompt)))
    return out


def task_kl(pair, conversations: list[list[dict[str, str]]], answers: list[str], max_len: int = 512
            ) -> dict[str, Any] | None:
    """`{"kl": nats per answer token, "tokens": n, "answers": k}` of the tuned answers under the
    tuned and the base model, or None without an answer to read."""
    import torch

    seqs = sequences(pair.tok, conversations, answers, max_len)
    if not seqs:
        return None
    pad = pair.tok.pad_token_id if pair.tok.pad_token_id is not None else 0
    total, tokens = 0.0, 0
    for i in range(0, len(seqs), BATCH):
        batch = seqs[i:i + BATCH]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.tensor([s + [pad] * (width - len(s)) for s, _ in batch])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s, _ in batch])
        # the logits at position t predict token t + 1: answer tokens start at `start`
        where = torch.zeros(len(batch), width, dtype=torch.bool)
        for j, (s, start) in enumerate(batch):
            where[j, start - 1:len(s) - 1] = True
        logp = {}
        for side in ("tuned", "base"):
            with pair.side(side) as m, torch.no_grad():
                out = m(input_ids=ids.to(m.device), attention_mask=mask.to(m.device)).logits
                logp[side] = torch.log_softmax(out.float(), dim=-1)[where.to(out.device)]
        kl = (logp["tuned"].exp() * (logp["tuned"] - logp["base"])).sum(-1)
        total += float(kl.clamp_min(0).sum())
        tokens += int(kl.numel())
    return {"kl": round(total / tokens, 4), "tokens": tokens, "answers": len(seqs)}
