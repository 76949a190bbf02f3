"""The causal-LM loss without the full logits: cross-entropy computed in chunks of tokens.

Owns `chunked_ce` — the loss over the final hidden states and the lm_head weight, one chunk of
tokens at a time (each chunk's gradient taken while its logits exist), so peak memory holds one
chunk of fp32 logits instead of [tokens × vocabulary] (for Llama 3's 128k-word vocabulary at 8k tokens
that is 4 GB of logits plus as much again for their gradient) — and `causal_lm_loss`, which runs a
(PEFT-wrapped) causal LM's decoder and applies it exactly as transformers' ForCausalLMLoss
would: labels shifted by one, -100 ignored, the sum divided by `num_items_in_batch` when the
Trainer passes it (gradient accumulation) or by the count of learned tokens, Gemma's final
logit soft-capping, an lm_head bias (Phi); with a batch's FACT_W (train.fact_weight, facts.py)
each token's loss times its weight, here and in `weighted_ce` (the same from full logits, for
heads it cannot chunk). Same loss and gradients as the full computation
(tests/test_loss.py); no dependency beyond torch. Liger-Kernel's fused linear cross-entropy
does the same on CUDA with Triton; it has no CPU path, and the studio must train on laptops.
"""
from __future__ import annotations

from typing import Any

FACT_W = "fact_w"  # a batch's per-token loss weights (facts.py), shaped like its labels


def _chunk_logits(h, weight, bias, softcap):
    import torch

    z = torch.nn.functional.linear(h.to(weight.dtype), weight, bias).float()
    if softcap:
        t = torch.tanh(z / softcap)
        return t * softcap, t
    return z, None


def _chunk_loss(h, lab, weight, bias, softcap, grads: bool, tw=None):
    """One chunk of rows: its summed token loss and, when `grads`, the loss's gradient with
    respect to the chunk's logits (computed in place of them: softmax − one-hot, rows with label
    -100 zeroed, times the soft-cap's derivative); (loss, None) otherwise. `tw`: each row's loss
    weight (train.fact_weight), 1 when None."""
    known = lab != -100
    keep = known if tw is None else known * tw
    z, t = _chunk_logits(h, weight, bias, softcap)
    picked = z.gather(1, lab.clamp(min=0).unsqueeze(1)).squeeze(1)
    # log-sum-exp and softmax in place: one chunk of fp32 logits plus one temporary
    # at the peak (torch.logsumexp would hold two temporaries)
    top = z.max(dim=-1, keepdim=True).values
    z.sub_(top)
    lse_shifted = z.exp().sum(dim=-1, keepdim=True).log_()
    loss = ((lse_shifted + top).squeeze(1) - picked).mul_(keep).sum()
    if not grads:
        return loss, None
    dz = z.sub_(lse_shifted).exp_()                              # softmax, in place
    dz.scatter_add_(1, lab.clamp(min=0).unsqueeze(1),                # − one-hot, as a
                    -known.unsqueeze(1).to(dz.dtype))                # scatter: no GPU wait
    dz *= keep.unsqueeze(1)
    if softcap:                                                  # d(cap·tanh(x/cap))/dx
        dz *= 1 - t * t
    return loss, dz


def make_function():
    import torch

    class ChunkedCE(torch.autograd.Function):
        """sum over rows of (logsumexp(h W^T + b) - logit[label]); rows with label -100 skip.
        While each chunk's logits exist, its gradients are taken too (softmax − one-hot, times
        the soft-cap's derivative), so backward only scales them: one lm_head matmul per
        direction, as the full computation does, and never more than one chunk of logits."""

        @staticmethod
        def forward(ctx, hidden, weight, bias, labels, chunk: int, softcap: float | None, tw=None):
            need_h, need_w = hidden.requires_grad, weight.requires_grad
            need_b = bias is not None and bias.requires_grad
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            gh = torch.zeros_like(hidden) if need_h else None
            gw = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
            gb = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
            starts = range(0, hidden.shape[0], chunk)
            # which chunks learn anything, read in one transfer (not a GPU wait per chunk)
            learned = torch.stack([(labels[s:s + chunk] != -100).any() for s in starts]).tolist() \
                if len(starts) else []
            for s, any_learned in zip(starts, learned):
                if not any_learned:
                    continue
                h, lab = hidden[s:s + chunk], labels[s:s + chunk]
                part, dz = _chunk_loss(h, lab, weight, bias, softcap, need_h or need_w or need_b,
                                       None if tw is None else tw[s:s + chunk])
                total += part
                if dz is None:
                    continue
                if need_h:
                    gh[s:s + chunk] = (dz.to(weight.dtype) @ weight).to(hidden.dtype)
                if need_w:
                    gw += dz.t() @ h.float()
                if need_b:
                    gb += dz.sum(0)
                del dz  # free this chunk's logits before the next chunk's exist
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
            return gh, gw, gb, None, None, None, None

    return ChunkedCE


_FN: list = []


def chunked_ce(hidden, weight, bias, labels, chunk: int, softcap: float | None = None, tw=None):
    """Sum of token losses over rows of `hidden` [N, H] against `labels` [N] (-100 = skip), each
    times its weight in `tw` [N] when given (train.fact_weight)."""
    if not _FN:
        _FN.append(make_function())
    return _FN[0].apply(hidden, weight, bias, labels, chunk, softcap, tw)


def _next(x, fill):
    """Each position's label (or weight): that of the token it predicts, the next one."""
    import torch

    return torch.nn.functional.pad(x, (0, 1), value=fill)[..., 1:]


def _mean(total, shifted, num_items_in_batch):
    """The summed loss divided by the Trainer's token count, or by this batch's learned tokens."""
    import torch

    if num_items_in_batch is None:
        return total / (shifted != -100).sum().clamp(min=1)
    return total / (num_items_in_batch.to(total.device) if torch.is_tensor(num_items_in_batch)
                    else num_items_in_batch)


def weighted_ce(logits, labels, tw, num_items_in_batch=None):
    """The causal-LM loss from full logits with per-token weights `tw` (shaped like `labels`):
    the path for a model whose head cannot be chunked, or train.loss=full. Divided as
    causal_lm_loss divides."""
    import torch

    shifted = _next(labels, -100)
    each = torch.nn.functional.cross_entropy(logits.float().flatten(0, -2), shifted.flatten(),
                                             ignore_index=-100, reduction="none")
    return _mean((each * _next(tw, 1.0).to(logits.device).flatten()).sum(), shifted, num_items_in_batch)


def decoder_and_head(model) -> tuple[Any, Any, float | None] | None:
    """(decoder, lm_head, soft-cap) of a causal LM, through a PEFT wrapper; None when the head
    is not a plain Linear (e.g. LoRA on lm_head) or the model is wrapped for several GPUs (DDP)
    — then the model's own (full-logits) loss is used."""
    import torch

    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return None  # the forward must go through DDP (it prepares the gradient all-reduce)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings()
    decoder = getattr(base, getattr(base, "base_model_prefix", "model"), None)
    if decoder is None or type(head) is not torch.nn.Linear:
        return None
    cfg = getattr(base.config, "get_text_config", lambda: base.config)()
    return decoder, head, getattr(cfg, "final_logit_softcapping", None)


def causal_lm_loss(model, inputs: dict[str, Any], chunk: int, num_items_in_batch=None,
                   with_hidden: bool = False):
    """The model's training loss, chunked; None when the model does not fit the pattern. With
    `with_hidden`: (loss, final hidden states, (decoder, head, soft-cap)) for a term of its own
    on the same forward pass (anchor.py)."""
    parts = decoder_and_head(model)
    labels = inputs.get("labels")
    if parts is None or labels is None:
        return None
    decoder, head, softcap = parts
    tw = inputs.get(FACT_W)
    body = {k: v for k, v in inputs.items() if k not in ("labels", FACT_W)}
    hidden = decoder(**body, use_cache=False).last_hidden_state
    shifted = _next(labels, -100)
    if tw is not None:
        tw = _next(tw, 1.0).reshape(-1).to(hidden.device)
    total = chunked_ce(hidden.reshape(-1, hidden.shape[-1]), head.weight, head.bias,
                       shifted.reshape(-1).to(hidden.device), chunk, softcap, tw)
    value = _mean(total, shifted, num_items_in_batch)
    return (value, hidden, parts) if with_hidden else value

