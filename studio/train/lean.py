"""Long contexts on one card: the recomputed block's working set, made smaller.

Owns two changes to a loaded model, each a run-spec setting the estimator models term by term
(memory/estimate.py). `norms_to_compute_dtype` (train.kbit_norms=compute): PEFT's
prepare_model_for_kbit_training keeps every norm weight in fp32, and an fp32 weight times a half
input makes the whole residual stream fp32 — twice the bytes per token of every block input that
checkpointing keeps and of every recomputed block; the norms keep computing their statistics in
fp32 inside (transformers' RMSNorm does), only their weights and outputs follow the compute dtype.
`chunk_mlps` (train.mlp_chunk): each decoder block's MLP runs its tokens a chunk at a time under
its own (non-reentrant) checkpoint, so a recomputed block holds one chunk's gate/up activations
instead of the whole sequence's — the largest buffer at long lengths (3 × intermediate size per
token) — for the same gradients (tests/test_loss.py) and one more MLP forward per chunk.
"""
from __future__ import annotations


def norms_to_compute_dtype(model, dtype) -> int:
    """Norm weights (RMSNorm/LayerNorm) back to a half compute dtype; returns how many."""
    import torch

    if dtype not in (torch.bfloat16, torch.float16):
        return 0
    n = 0
    for m in model.modules():
        name = type(m).__name__
        if name.endswith(("RMSNorm", "LayerNorm")) and getattr(m, "weight", None) is not None:
            m.to(dtype)
            n += 1
    return n


def decoder_layers(model):
    """The decoder blocks of a causal LM (through a PEFT wrapper)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = getattr(base, getattr(base, "base_model_prefix", "model"), base)
    return getattr(inner, "layers", None) or getattr(inner, "h", None) or []


def chunk_mlps(model, tokens: int) -> int:
    """Every block's MLP over `tokens` at a time under its own checkpoint when gradients are on
    and the sequence is longer; returns how many MLPs were wrapped."""
    import torch
    from torch.utils.checkpoint import checkpoint

    n = 0
    for layer in decoder_layers(model):
        mlp = getattr(layer, "mlp", None)
        if mlp is None or getattr(mlp, "_studio_chunked", False):
            continue
        plain = mlp.forward

        def forward(x, _plain=plain):
            length = x.shape[-2]
            if not torch.is_grad_enabled() or length <= tokens:
                return _plain(x)
            return torch.cat([checkpoint(_plain, x[..., i:i + tokens, :], use_reentrant=False)
                              for i in range(0, length, tokens)], dim=-2)
        mlp.forward = forward
        mlp._studio_chunked = True
        n += 1
    return n
