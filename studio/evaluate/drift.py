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

BATCH = 8  # rows per forward pass: 8 × a few hundred tokens keeps two sides' logits small on a CPU


def sequences(tok, conversations: list[list[dict[str, str]]], answers: list[str], context: int
              ) -> list[tuple[list[int], int]]:
    """(prompt + answer token ids, where the answer starts) per non-empty answer: the prompt encoded
    as the report's answers were generated (chat.encode_prompt: the template, cut from the left),
    the answer cut to fit the model's context."""
    from ..models.chat import encode_prompt

    out = []
    for conv, answer in zip(conversations, answers):
        if not answer.strip():
            continue
        said = tok(answer, add_special_tokens=False)["input_ids"][:max(1, context // 2)]
        prompt, _ = encode_prompt(tok, conv, context, len(said))
        out.append((prompt + said, len(prompt)))
    return out


def task_kl(pair, conversations: list[list[dict[str, str]]], answers: list[str]) -> dict[str, Any] | None:
    """`{"kl": nats per answer token, "tokens": n, "answers": k}` of the tuned answers under the
    tuned and the base model (empty answers left out), or None without an answer to read."""
    import torch

    from ..models.chat import context_of

    seqs = sequences(pair.tok, conversations, answers, context_of(pair.base))
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
                logp[side] = torch.log_softmax(out[where.to(out.device)].float(), dim=-1)  # answer rows only
        kl = (logp["tuned"].exp() * (logp["tuned"] - logp["base"])).sum(-1)
        total += float(kl.clamp_min(0).sum())
        tokens += int(kl.numel())
    return {"kl": round(total / tokens, 4), "tokens": tokens, "answers": len(seqs)}
