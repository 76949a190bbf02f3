"""The soft anchor: KL(base ‖ tuned) on replay text, the term that keeps a model what it was.

The base model's next-token distribution at every position of the replay sequences is taken once,
before training, from the same weights with the adapter switched off (no second copy in memory):
its K most likely tokens and their log-probabilities, the rest of the mass as one bucket
(`targets`, cached per model revision). Each training batch carries a few replay sequences
(batches.AnchorCollator puts them there, with those targets); the tuned model's distribution at
their positions is pulled toward the base model's by `chunked_kl` — the KL between the two
distributions over (the K tokens, everything else), exact when the K tokens hold all the mass,
computed from the final hidden states one chunk of positions at a time (as loss.py's
cross-entropy: each chunk's gradient taken while its logits exist, never [positions ×
vocabulary] at once). The whole next-token distribution is a far richer anchor per token than one
greedy answer (Learning without Forgetting; "Anchored SFT", arXiv 2509.23753), and it is what
general-text perplexity measures. Taking the base side once saves a base forward pass per step.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..models.batching import by_length, shared_prefix

TOP_K = 64       # base tokens kept per position: the rest of the mass is one bucket
KEYS = ("kl_mask", "kl_rows", "kl_from", "kl_ids", "kl_logp")
FORMAT = 2       # bump when the targets change: cached ones are made again
MIN_SHARED = 8   # a shared prefix shorter than this is not worth a pass of its own


@dataclass(frozen=True)
class Anchor:
    """The replay part of a batch: trailing `rows` rows from column `start`, the positions of
    the whole batch whose next token is in the same replay sequence (`mask`), and at each of them
    (in order) the base model's K token ids and log-probabilities."""
    mask: Any
    rows: int
    start: int
    ids: Any
    logp: Any


def take(inputs: dict[str, Any]) -> Anchor | None:
    """The anchor of a batch, removed from the model inputs (None for a batch without one)."""
    if "kl_mask" not in inputs:
        return None
    mask, rows, start, ids, logp = (inputs.pop(k) for k in KEYS)
    return Anchor(mask, int(rows), int(start), ids, logp)


def targets(model, pool: list[dict[str, Any]], k: int = TOP_K, batch_tokens: int = 4096
            ) -> list[tuple[Any, Any]]:
    """For each replay sequence: the base model's top-k token ids [L-1, k] (int32) and their
    log-probabilities [L-1, k] at each position that predicts a token of the sequence. `model`
    is the PEFT model; the adapter is switched off here. The prefix all sequences share (with
    SmolLM2's default system prompt, a quarter of the tokens) is run once and its keys and values
    reused, a few sequences of similar length per forward pass."""
    import inspect

    import torch

    from ..models.chat import evaluating

    seqs = [p["input_ids"] for p in pool]
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    takes_cache = "cache" in inspect.signature(base.forward).parameters  # transformers' name for it
    shared = shared_prefix(seqs) if len(seqs) > 1 and takes_cache else 0
    with torch.no_grad(), model.disable_adapter(), evaluating(model):
        if shared >= MIN_SHARED:
            try:
                return _targets(model, seqs, k, batch_tokens, shared)
            except (TypeError, AttributeError, NotImplementedError):  # a cache that cannot be repeated
                pass
        return _targets(model, seqs, k, batch_tokens, 0)


def _top(z, k: int):
    """Top-k token ids (int32, CPU) and their log-probabilities at each row of logits `z`."""
    import torch

    z = z.float()
    top = z.topk(min(k, z.shape[-1]), dim=-1)  # the same tokens as the log-probabilities'
    return top.indices.to(torch.int32).cpu(), (top.values - z.logsumexp(-1, keepdim=True)).cpu()


def _targets(model, seqs: list[list[int]], k: int, batch_tokens: int, shared: int):
    import copy

    import torch

    device = next(model.parameters()).device
    head, prefix_cache = None, None
    if shared:  # positions 0 … shared-1, the same in every sequence, once
        got = model(input_ids=torch.tensor([seqs[0][:shared]], device=device), use_cache=True)
        head, prefix_cache = _top(got.logits[0], k), got.cache
    out: dict[int, tuple[Any, Any]] = {}
    for batch in by_length([len(s) for s in seqs], batch_tokens, shared):  # right-padded, little padding
        n = len(batch)
        group = [seqs[j] for j in batch]
        width = max(len(s) for s in group) - shared
        ids = torch.zeros(n, width, dtype=torch.long)
        att = torch.zeros(n, shared + width, dtype=torch.long)
        att[:, :shared] = 1
        for r, s in enumerate(group):
            ids[r, :len(s) - shared] = torch.tensor(s[shared:])
            att[r, shared:len(s)] = 1
        extra = {}
        if prefix_cache is not None:
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(n)
            extra = {"cache": cache, "use_cache": True}
        logits = model(input_ids=ids.to(device), attention_mask=att.to(device), **extra).logits
        for r, (j, s) in enumerate(zip(batch, group)):
            got = _top(logits[r, :len(s) - 1 - shared], k)
            out[j] = got if head is None else (torch.cat([head[0], got[0]]), torch.cat([head[1], got[1]]))
        del logits
    return [out[j] for j in range(len(seqs))]


def cached_targets(cache: Path, key: str, model, pool: list[dict[str, Any]], note) -> list[tuple[Any, Any]]:
    """`targets`, kept in `cache` per sequence for this model revision: a run takes only the
    sequences no earlier run of the model took (a longer run's pool holds a shorter one's)."""
    import hashlib
    import io

    import torch

    from ..faults import atomic_write_bytes

    path = Path(cache) / f"anchor-{hashlib.sha256(f'{FORMAT}:{key}:{TOP_K}'.encode()).hexdigest()[:16]}.pt"
    names = [hashlib.sha256(bytes(str(p["input_ids"]), "ascii")).hexdigest()[:24] for p in pool]
    try:
        kept = torch.load(path, weights_only=True)
        kept = kept if isinstance(kept, dict) else {}
    except Exception:  # a missing, damaged or foreign cache file: taken again
        kept = {}
    missing = [i for i, n in enumerate(names) if not (isinstance(kept.get(n), (tuple, list))
                                                    and len(kept[n]) == 2)]
    if missing:
        note(f"Taking the base model's next-token distributions on {len(missing)} replay sequences "
             "(once per model; cached).")
        for i, made in zip(missing, targets(model, [pool[i] for i in missing])):
            kept[names[i]] = made
        buf = io.BytesIO()
        torch.save(kept, buf)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buf.getvalue())
    return [tuple(kept[n]) for n in names]


def _logits(h, weight, bias, softcap):
    import torch

    z = torch.nn.functional.linear(h.to(weight.dtype), weight, bias).float()
    if softcap:
        t = torch.tanh(z / softcap)
        return t * softcap, t
    return z, None


def make_function():
    import torch

    class ChunkedKL(torch.autograd.Function):
        """Σ over rows of KL(P_b ‖ P_t) over the classes (each of the base's K tokens, the rest):
        Σ_K p_b (log p_b − log p_t) + r_b (log r_b − log r_t). Its gradient on the tuned logits
        is p_t − q, with q = p_b on the K tokens and p_t · r_b / r_t on the rest."""

        @staticmethod
        def forward(ctx, ht, ids, logp_b, weight, bias, chunk: int, softcap: float | None):
            need_h, need_w = ht.requires_grad, weight.requires_grad
            need_b = bias is not None and bias.requires_grad
            total = torch.zeros((), dtype=torch.float32, device=ht.device)
            gh = torch.zeros_like(ht) if need_h else None
            gw = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
            gb = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
            for s in range(0, ht.shape[0], chunk):
                h = ht[s:s + chunk]
                idx = ids[s:s + chunk].long()
                lb = logp_b[s:s + chunk].float()
                z, t = _logits(h.detach(), weight, bias, softcap)
                top = z.max(dim=-1, keepdim=True).values                  # log-softmax in place:
                z.sub_(top)                                                # one chunk × vocabulary
                z.sub_(z.exp().sum(dim=-1, keepdim=True).log_())           # buffer (+1 temporary)
                lt = z.gather(1, idx)                                      # log p_t on the K tokens
                pb = lb.exp()
                rest_b = (1 - pb.sum(-1)).clamp(min=0)
                pt_k = lt.exp()
                rest_t = (1 - pt_k.sum(-1)).clamp(min=1e-12)
                total += (pb * (lb - lt)).sum() + torch.special.xlogy(rest_b, rest_b).sum() \
                    - (rest_b * rest_t.log()).sum()
                if need_h or need_w or need_b:
                    dz = z.exp_()                                          # p_t
                    dz.mul_(torch.where(rest_b > 0, 1 - rest_b / rest_t, torch.ones_like(rest_b)).unsqueeze(1))
                    dz.scatter_(1, idx, pt_k - pb)                         # the K tokens: p_t − p_b
                    if softcap:
                        dz *= 1 - t * t
                    if need_h:
                        gh[s:s + chunk] = (dz.to(weight.dtype) @ weight).to(ht.dtype)
                    if need_w:
                        gw += dz.t() @ h.float()
                    if need_b:
                        gb += dz.sum(0)
                del z, t
            ctx.save_for_backward(*(g for g in (gh, gw, gb) if g is not None))
            ctx.needs = (need_h, need_w, need_b)
            ctx.dtypes = (weight.dtype, bias.dtype if bias is not None else None)
            return total

        @staticmethod
        def backward(ctx, grad_out):
            saved = iter(ctx.saved_tensors)
            need_h, need_w, need_b = ctx.needs
            gh = next(saved) if need_h else None
            gh = gh * grad_out.to(gh.dtype) if gh is not None else None
            gw = (next(saved) * grad_out).to(ctx.dtypes[0]) if need_w else None
            gb = (next(saved) * grad_out).to(ctx.dtypes[1]) if need_b else None
            return gh, None, None, gw, gb, None, None

    return ChunkedKL


_FN: list = []


def chunked_kl(ht, ids, logp_b, weight, bias, chunk: int, softcap: float | None = None):
    """Σ over rows of KL(base ‖ tuned) for tuned hidden states `ht` [N, H] against the base
    model's top tokens `ids` [N, K] and their log-probabilities `logp_b` [N, K]."""
    if not _FN:
        _FN.append(make_function())
    return _FN[0].apply(ht, ids, logp_b, weight, bias, chunk, softcap)


def _positions(anchor: Anchor, t):
    """The rows of `t` ([B, T, …]) at the anchor's marked positions, in order."""
    return t[-anchor.rows:, anchor.start:][anchor.mask[-anchor.rows:, anchor.start:].to(t.device)]


def anchor_kl(head, softcap, hidden, anchor: Anchor, chunk: int):
    """Mean KL(base ‖ tuned) per marked position, from the tuned forward's final hidden states
    (`hidden`, [B, T, H])."""
    h = _positions(anchor, hidden)
    if h.shape[0] == 0:
        return hidden.sum() * 0.0
    ids, logp = anchor.ids.to(h.device), anchor.logp.to(h.device)
    return chunked_kl(h, ids, logp, head.weight, head.bias, chunk, softcap) / h.shape[0]


def anchor_kl_logits(logits, anchor: Anchor):
    """The same term from full logits (the model's own loss path: several GPUs, a head that is
    not a plain Linear)."""
    import torch

    z = _positions(anchor, logits).float()
    if z.shape[0] == 0:
        return logits.sum() * 0.0
    lt_all = torch.log_softmax(z, -1)
    ids, lb = anchor.ids.to(z.device).long(), anchor.logp.to(z.device).float()
    lt = lt_all.gather(1, ids)
    pb = lb.exp()
    rest_b = (1 - pb.sum(-1)).clamp(min=0)
    rest_t = (1 - lt.exp().sum(-1)).clamp(min=1e-12)
    kl = (pb * (lb - lt)).sum(-1) + torch.special.xlogy(rest_b, rest_b) - rest_b * rest_t.log()
    return kl.mean()
