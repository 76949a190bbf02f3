"""How far the tuned model moved from the base model on the user's own task: the KL drift.

Owns `task_kl`: on the held-out questions, each of the tuned model's own answers is read by both
sides (adapter on and off), and at every answer token the tuned model's next-token distribution is
compared with the base model's, KL(tuned ‖ base), summed over the vocabulary. The mean over the
answer tokens is the report's `drift.kl` (nats per token; 0 = the base model would predict the
same). "RL's Razor" (arXiv 2509.04259) found that forgetting tracks this figure — the drift on the
new task — across methods, and that RL moves less than SFT at the same accuracy; the report gives
it for every run so runs of different methods can be set side by side. The answers themselves
(generated greedily by the report) and the words around the figure are the report's and the
Compare step's.
"""
from __future__ import annotations

from typing import Any

BATCH_TOKENS = 4096  # prompt + answer tokens per forward pass (padding included)


def sequences(tok, conversations: list[list[dict[str, str]]], answers: list[str], context: int,
              reserve: int) -> list[tuple[list[int], int]]:
    """(prompt + answer token ids, where the answer starts) per non-empty answer: the prompt encoded
    as the report's answers were generated (chat.encode_prompt: the template, cut from the left to
    leave `reserve` tokens for the answer), the answer cut to fit the model's context."""
    from ..models.chat import encode_prompt

    out = []
    for conv, answer in zip(conversations, answers):
        if not answer.strip():
            continue
        said = tok(answer, add_special_tokens=False)["input_ids"][:max(1, context // 2)]
        prompt, _ = encode_prompt(tok, conv, context, max(reserve, len(said)))
        out.append((prompt + said, len(prompt)))
    return out


def batches(seqs: list[tuple[list[int], int]]) -> list[list[tuple[list[int], int]]]:
    """Rows in order, as many per pass as fit BATCH_TOKENS at the longest row's width (one at least)."""
    out: list[list[tuple[list[int], int]]] = []
    for s in seqs:
        if out and max(len(x) for x, _ in out[-1] + [s]) * (len(out[-1]) + 1) <= BATCH_TOKENS:
            out[-1].append(s)
        else:
            out.append([s])
    return out


def task_kl(pair, conversations: list[list[dict[str, str]]], answers: list[str], reserve: int = 48
            ) -> dict[str, Any] | None:
    """`{"kl": nats per answer token, "tokens": n, "answers": k}` of the tuned answers under the
    tuned and the base model (empty answers left out), or None without an answer to read. Rows
    are padded on the left (position ids from the mask), so every answer ends the row and only
    the last positions' next-token scores are computed (`logits_to_keep`): a long prompt costs
    its forward pass, not a vocabulary-wide score per prompt token."""
    import torch

    from ..models.chat import context_of

    seqs = sequences(pair.tok, conversations, answers, context_of(pair.base), reserve)
    if not seqs:
        return None
    pad = pair.tok.pad_token_id if pair.tok.pad_token_id is not None else 0
    total, tokens = 0.0, 0
    for batch in batches(seqs):
        width = max(len(ids) for ids, _ in batch)
        keep = max(len(s) - start for s, start in batch) + 1  # every answer token's prediction
        ids = torch.tensor([[pad] * (width - len(s)) + s for s, _ in batch])
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s, _ in batch])
        position = (mask.cumsum(-1) - 1).clamp_min(0)
        # of the last `keep` positions, the answer's predictions are the ones before its last token
        where = torch.zeros(len(batch), keep, dtype=torch.bool)
        for j, (s, start) in enumerate(batch):
            where[j, keep - (len(s) - start) - 1:keep - 1] = True
        logp = {}
        for side in ("tuned", "base"):
            with pair.side(side) as m, torch.no_grad():
                out = m(input_ids=ids.to(m.device), attention_mask=mask.to(m.device),
                        position_ids=position.to(m.device), logits_to_keep=keep).logits
                logp[side] = torch.log_softmax(out[where.to(out.device)].float(), dim=-1)
        kl = (logp["tuned"].exp() * (logp["tuned"] - logp["base"])).sum(-1)
        total += float(kl.clamp_min(0).sum())
        tokens += int(kl.numel())
    return {"kl": round(total / tokens, 4), "tokens": tokens, "answers": len(seqs)}
