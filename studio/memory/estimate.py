"""GPU memory estimator: pure arithmetic on a model's shape and a run spec. No torch.

Owns the memory breakdown of one training step: every term (weights, optimizer, activations,
loss, gradients, the backward's transients, replay anchor, generation, reference pass) is derived
from shapes and settings and carries its `why`; the only constants are the CUDA context and the
allocator slack below, each with its source. The shape and its exact parameter counts live in
shapes.py (re-exported here); fit advice lives in advice.py. It reads the run spec
(spec.RunSpec) directly: the train section says what runs, the estimate section how to model it.
"""
from __future__ import annotations

from typing import Any

from ..optimizers import OPTIMIZERS
from ..spec import RunSpec, flat_view, update
from .shapes import ARCHS, Shape, layer_linears, param_counts, shape_from_config, targeted

__all__ = ["ARCHS", "Shape", "layer_linears", "param_counts", "shape_from_config", "targeted",
           "GIB", "CUDA_CONTEXT_GB", "ALLOCATOR_SLACK", "SLACK_RANGE", "DTYPE_BYTES",
           "activations_per_token", "logits_per_token", "normalise", "offloaded", "loss_bytes",
           "REPLAY_TOKENS", "step_tokens", "RL", "generation_bytes", "estimate", "comparable",
           "warnings"]

GIB = 2**30
# CUDA context + cuBLAS/cuDNN workspaces that a PyTorch process holds outside its allocator:
# 0.5 GiB is what nvidia-smi shows beyond torch.cuda.memory_reserved() for torch 2.x on
# CUDA 12 (PyTorch's CUDA-semantics notes put it at 0.3–1 GiB depending on GPU and driver).
CUDA_CONTEXT_GB = 0.5
# Caching-allocator slack: the peak reserved runs 0–15% above the peak allocated. PEFT's
# MetaMathQA benchmark runs (benchmarks/memory_points.csv) peaked within 0–5% of our allocated
# estimate; loops that never empty the cache and see varied batch shapes fragment more. We add
# 5% and report the 0–15% range.
ALLOCATOR_SLACK = 0.05
SLACK_RANGE = (0.0, 0.15)
DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}



def _amp(st: RunSpec, b: int) -> bool:
    """Whether matmuls and attention run under half-precision autocast: the Trainer on a GPU
    with bf16/fp16 weights."""
    return st.estimate.loop == "trainer" and st.estimate.device == "cuda" and b == 2


def _saved_input(d_in: int, dim: int, adapted: int, st: RunSpec, amp: bool) -> float:
    """Bytes per token a linear group keeps of its input for backward.

    Full training: the input itself (one tensor for the group; autocast's half copy under amp).
    LoRA: PEFT casts the input to the adapter's fp32 for every adapted layer — a copy each when
    the input is narrower (shared when it is already fp32); under amp autocast then makes a half
    copy per adapted layer, and that copy is what is kept. Frozen layers keep nothing.
    """
    if st.method == "full":
        return (2 if amp else d_in) * dim
    if not adapted:
        return 0
    if amp:
        return 2 * dim * adapted
    return 4 * dim * (adapted if d_in < 4 else 1)


def activations_per_token(s: Shape, st: RunSpec, b: int) -> dict[str, float]:
    """Bytes kept for backward per token: one block, and what checkpointing keeps per block.

    Derived from what autograd saves in transformers' blocks: every RMSNorm keeps an fp32 copy
    of its input (4·H; LayerNorm keeps its input); attention (sdpa/flash) keeps q, k, v repeated
    to all heads and its output, an fp32 log-sum-exp per head, and sdpa the additive mask it
    builds each layer from the boolean one; a gated MLP keeps gate, act(gate) and up (an ungated
    one its fc1 output); a linear keeps its input only when it is trained or LoRA-adapted
    (_saved_input); LoRA keeps its rank-r middle. Dtypes follow the loop: under amp (the
    Trainer with bf16/fp16) matmuls and attention run in half precision; QLoRA's
    prepare_model_for_kbit_training makes the residual stream fp32 and bitsandbytes returns
    fp32 from fp32 inputs.
    """
    amp = _amp(st, b)
    # residual stream / norm output dtype: fp32 norm weights make it fp32 (kbit_norms=fp32)
    res = 4 if st.method == "qlora" and st.train.kbit_norms == "fp32" else b

    def out_of(d_in: int) -> int:                    # dtype a linear returns for an input dtype
        if st.method == "qlora":
            return d_in
        return 2 if amp else b

    adapted = {m for m, *_ in targeted(s, st.lora.targets)} if st.method != "full" else set()
    q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    n = s.module_names
    norms = s.norms_per_layer * ((res * s.hidden + 8) if s.layernorm else 4 * s.hidden)
    qk = 4 * (q + kv) if s.qk_norm else 0
    attn_names = {n["q"], n["k"], n["v"]}
    d_att = 2 if amp else out_of(res)                 # sdpa inputs (autocast casts them)
    attn = 4 * d_att * q + 4 * s.heads
    if st.estimate.attention == "sdpa" and not (st.train.packing and st.train.micro_batch == 1):
        # the per-layer additive mask; one unpadded sequence has none (batches.make_collator
        # leaves out its position ids, so sdpa runs causal without a T×T mask)
        attn += d_att * st.train.max_len
    elif st.estimate.attention == "eager":
        attn += (d_att + 1) * s.heads * st.train.max_len   # T×T probabilities (+ dropout mask)
    keep = _saved_input(res, s.hidden, len(attn_names & adapted), st, amp)
    keep += _saved_input(d_att, q, int(n["o"] in adapted), st, amp)
    up_names = {n["up"]} | ({n["gate"]} if s.gated else set())
    d_mlp = out_of(res)
    mlp = (3 if s.gated else 1) * d_mlp * s.inter
    keep += _saved_input(res, s.hidden, len(up_names & adapted), st, amp)
    keep += _saved_input(d_mlp, s.inter, int(n["down"] in adapted), st, amp)
    lora = (2 if amp else 4) * st.lora.rank * len(adapted)
    block = norms + qk + attn + mlp + keep + lora
    return {"block": block, "checkpoint": res * s.hidden, "residual": res, "mlp": mlp}


def logits_per_token(s: Shape, st: RunSpec, b: int) -> tuple[float, str]:
    """Bytes per token at the loss's peak (the backward of log-softmax): the fp32 log-softmax
    kept for backward, the fp32 gradient arriving and the one leaving it (4 + 4 + 4), plus the
    logits themselves when the loop still holds the model's output (a plain loop; the Trainer
    drops them before backward)."""
    out = 2 if _amp(st, b) else (4 if st.method == "qlora" else b)
    per = 12 + (out if st.estimate.loop == "plain" else 0)
    return per * s.vocab, (f"{s.vocab:,}-word vocabulary × ({'logits ' + str(out) + ' + ' if st.estimate.loop == 'plain' else ''}"
                           f"fp32 log-softmax 4 + its gradients 4 + 4) bytes")


def normalise(st: RunSpec) -> RunSpec:
    """The spec as the estimate models it: the CPU trains in fp32 (bf16 mixed precision keeps
    fp32 weights and saves smaller activations, so the fp32 figure bounds it from above); "auto"
    is bf16 on a GPU (every GPU of the catalogue has it)."""
    if st.estimate.device == "cpu":
        return update(st, dtype="fp32")
    return update(st, dtype="bf16") if st.train.dtype == "auto" else st


def offloaded(st: RunSpec) -> bool:
    """Activation offloading as this estimate models it: on, on a GPU ("auto" is decided by
    the fit advice, which knows the GPU)."""
    return st.train.offload == "on" and st.estimate.device == "cuda"


def loss_bytes(s: Shape, st: RunSpec, b: int, tokens: int) -> tuple[float, str]:
    """Bytes at the loss's peak, and why. Full: every token's logits at once
    (logits_per_token). Chunked (train/loss.py): one chunk of fp32 logits and one fp32
    temporary of the same size (the exp of the log-sum-exp; the softmax gradient then reuses
    the logits' memory), plus the final hidden states' gradient for all tokens."""
    if st.train.loss == "full":
        per, text = logits_per_token(s, st, b)
        return per * tokens, f"{tokens:,} tokens × {text}"
    chunk = min(tokens, st.train.loss_chunk)
    hidden_grad = 4 if st.method == "qlora" else b   # the residual stream's dtype
    total = chunk * s.vocab * 8 + tokens * (s.hidden * hidden_grad + 8)
    return total, (f"chunked loss: {chunk:,} tokens × {s.vocab:,}-word vocabulary × (fp32 logits 4 "
                   f"+ one fp32 temporary 4) bytes, + the hidden states' gradient for {tokens:,} tokens")


REPLAY_TOKENS = 160  # one replay sequence: a general prompt, the base's ≤64-token answer, the template


def step_tokens(st: RunSpec) -> tuple[int, int, str]:
    """(tokens through the model in one micro-batch, of them the KL anchor's positions, why):
    a preference run carries both sides of each pair; KL replay adds its sequences."""
    t = st.train
    tokens = t.max_len * t.micro_batch
    if t.objective in RL:  # every sampled answer is trained on with its prompt
        n = t.micro_batch * t.generations
        return (n * (t.max_len + t.completion_len), 0, f"{t.micro_batch} prompts × {t.generations} sampled "
                f"answers × ({t.max_len} prompt + {t.completion_len} answer tokens)")
    if t.objective != "sft":
        return 2 * tokens, 0, f"{t.micro_batch} pairs × 2 answers (chosen, rejected) × {t.max_len} tokens"
    if t.replay_mode == "kl" and t.replay > 0:
        n = max(1, round(t.replay * t.micro_batch))
        return (tokens + n * REPLAY_TOKENS, n * REPLAY_TOKENS,
                f"{t.micro_batch} × {t.max_len} tokens + {n} replay sequences × {REPLAY_TOKENS}")
    return tokens, 0, f"{t.micro_batch} × {t.max_len} tokens"


RL = ("grpo", "rloo")


def generation_bytes(s: Shape, st: RunSpec, b: int) -> tuple[float, str]:
    """Sampling a grpo/rloo step's answers with plain transformers: the KV cache of every
    sequence at full length (K and V, each layer, each KV head) and one position's logits."""
    t = st.train
    n, length = t.micro_batch * t.generations, t.max_len + t.completion_len
    kv = 2 * s.layers * s.kv_heads * s.head_dim * b * n * length
    return kv + n * s.vocab * 4, (f"KV cache for {n} sequences × {length} tokens × {s.layers} layers "
                                  f"× {s.kv_heads} KV heads × {s.head_dim} × 2 (K, V) × {b} bytes "
                                  "+ one position's fp32 logits")


def estimate(shape: Shape, st: RunSpec) -> dict[str, Any]:
    """The breakdown of peak training memory in GB (GiB); terms sum to total_gb."""
    st = normalise(st)
    b = DTYPE_BYTES[st.train.dtype]
    c = param_counts(shape, st)
    tokens, anchored, per_step = step_tokens(st)
    why: dict[str, str] = {}
    gb: dict[str, float] = {}
    _weight_terms(shape, st, b, c, gb, why)
    act = activations_per_token(shape, st, b)
    kept, host = _activation_terms(shape, st, act, tokens, gb, why)
    logits, why["logits_loss"] = loss_bytes(shape, st, b, tokens)
    gb["logits_loss"] = logits / GIB
    _backward_terms(shape, st, b, c, act, tokens, (kept, logits), gb, why)
    _objective_terms(shape, st, b, act, tokens, anchored, (kept, logits), gb, why)
    peak_alloc = sum(gb.values())
    if st.estimate.device == "cuda":
        gb["allocator_slack"] = peak_alloc * ALLOCATOR_SLACK
        why["allocator_slack"] = "PyTorch caching allocator: reserved runs 0–15% above allocated (5% added)"
        gb["cuda_context"] = CUDA_CONTEXT_GB
        why["cuda_context"] = "CUDA context and cuBLAS workspaces outside PyTorch's allocator"
    total = sum(gb.values())
    return {"total_gb": round(total, 3), "peak_allocated_gb": round(peak_alloc, 3),
            "range_gb": [round(peak_alloc * (1 + lo) + gb.get("cuda_context", 0), 2)
                         for lo in SLACK_RANGE],
            "breakdown_gb": {k: round(v, 4) for k, v in gb.items()}, "why": why,
            "total_params": c["total"], "trainable_params": c["trainable"],
            "host_ram_gb": round(host / GIB, 3), "tokens_per_step": per_step,
            "setting": flat_view(st), "warnings": warnings(shape, st)}


def _trained_bytes(st: RunSpec, b: int) -> int:
    """Bytes per trainable value: PEFT keeps adapters in fp32; full training trains in the load dtype."""
    return b if st.method == "full" else 4


def _weight_terms(shape: Shape, st: RunSpec, b: int, c: dict[str, int], gb: dict[str, float],
                  why: dict[str, str]) -> None:
    """The frozen weights (quantized or not), the LoRA weights and the optimizer's states."""
    if st.method == "qlora":
        per = (0.5 + (1 / 64 + 4 / (64 * 256) if st.quant.double_quant else 4 / 64)) if st.weight_bits == 4 else 1.0
        quant_bytes = c["quantizable"] * per
        if st.weight_bits == 8:  # LLM.int8 keeps one fp32 scale per output row
            quant_bytes += shape.layers * sum(o for _, _, o, _ in layer_linears(shape)) * 4
        gb["weights_quantized"] = quant_bytes / GIB
        why["weights_quantized"] = (f"{c['quantizable']:,} linear-layer params at "
                                    f"{per * 8:.3g} bits ({st.weight_bits}-bit codes + block scales)")
        rest = c["total"] - c["quantizable"]
        emb = min(rest, shape.vocab * shape.hidden * (1 if shape.tied else 2))
        eb = b if st.estimate.loop == "trainer" else 4
        gb["weights_unquantized"] = (emb * eb + (rest - emb) * 4) / GIB
        why["weights_unquantized"] = (f"{rest:,} params bitsandbytes leaves alone: embeddings and "
                                      f"lm_head at {eb} bytes, norms and biases in fp32 "
                                      "(prepare_model_for_kbit_training" +
                                      ("; the Trainer path casts the frozen embeddings back)" if eb != 4 else ")"))
    else:
        gb["weights"] = c["total"] * b / GIB
        why["weights"] = f"{c['total']:,} params × {b} bytes ({st.train.dtype})"
    tb = _trained_bytes(st, b)
    if st.method != "full":
        gb["trainable_weights"] = c["trainable"] * 4 / GIB
        why["trainable_weights"] = f"{c['trainable']:,} LoRA params in fp32"
    o = OPTIMIZERS[st.train.optimizer]
    gb["optimizer"] = c["trainable"] * o.states * (tb if o.state_bytes is None else o.state_bytes) / GIB
    why["optimizer"] = o.help + (f" ({tb} bytes) per trainable param" if o.state_bytes is None else "")


def _activation_terms(shape: Shape, st: RunSpec, act: dict[str, float], tokens: int,
                      gb: dict[str, float], why: dict[str, str]) -> tuple[float, float]:
    """The saved activations: (bytes kept on the GPU, bytes waiting in CPU memory)."""
    if st.train.grad_ckpt:
        kept = shape.layers * act["checkpoint"] * tokens
        why["activations"] = (f"checkpointing keeps each of {shape.layers} block inputs "
                              f"({act['residual']}·H bytes per token × {tokens:,} tokens)")
    else:
        kept = shape.layers * act["block"] * tokens
        why["activations"] = (f"{shape.layers} blocks × {act['block'] / 1024:.1f} KB per token × "
                              f"{tokens:,} tokens")
    host = 0.0
    if offloaded(st):  # saved activations wait in CPU memory; the GPU holds the one in use + the next
        per = act["checkpoint"] if st.train.grad_ckpt else act["block"]
        host, kept = kept, min(kept, 2 * per * tokens)
        why["activations"] += (f"; offloaded: {host / GIB:.2f} GB wait in CPU memory, the GPU holds "
                               "the block in use and the next one")
    gb["activations"] = kept / GIB
    return kept, host


def _backward_terms(shape: Shape, st: RunSpec, b: int, c: dict[str, int], act: dict[str, float],
                    tokens: int, freed: tuple[float, float], gb: dict[str, float],
                    why: dict[str, str]) -> None:
    """Gradients and what flows through one block in backward; `freed` is (activations kept,
    loss buffers): what backward releases before these appear."""
    kept, logits = freed
    tb = _trained_bytes(st, b)
    grads = c["trainable"] * tb
    if st.method == "full":  # zero_grad(set_to_none) → gradients appear in backward as activations are freed
        gb["gradients"] = max(0.0, grads - kept - logits) / GIB
        why["gradients"] = (f"{c['trainable']:,} gradients × {tb} bytes, made during backward as "
                            "activations are freed: only the excess over them adds to the peak")
    else:
        gb["gradients"] = grads / GIB
        why["gradients"] = f"one gradient per trainable param, {tb} bytes"
    largest = max(i * o for _, i, o, _ in layer_linears(shape))
    transient = 2 * b * (shape.hidden + shape.inter) * tokens
    if st.method == "qlora":
        transient += largest * b  # one layer's weights dequantized at a time
    if st.train.grad_ckpt:  # the recompute comes after the loss's buffers are freed: only the excess counts
        recompute = act["block"] * tokens + transient
        if st.train.mlp_chunk and st.train.mlp_chunk < tokens:  # lean.chunk_mlps: one chunk's MLP
            recompute -= (act["mlp"] + 2 * b * shape.inter) * (tokens - st.train.mlp_chunk)
        gb["backward_transient"] = max(0.0, recompute - logits) / GIB
        why["backward_transient"] = (f"one block recomputed in backward ({act['block'] / 1024:.1f} KB/token) "
                                     "and the gradients through it, beyond the loss's freed buffers")
    else:
        gb["backward_transient"] = transient / GIB
        why["backward_transient"] = "gradients flowing through one block (+ a dequantized weight for QLoRA)"


def _objective_terms(shape: Shape, st: RunSpec, b: int, act: dict[str, float], tokens: int,
                     anchored: int, freed: tuple[float, float], gb: dict[str, float],
                     why: dict[str, str]) -> None:
    """What the objective adds: the replay anchor's KL, RL's sampling, the reference pass."""
    kept, logits = freed
    if anchored:  # chunked KL (train/anchor.py): 3 chunk × vocabulary fp32 buffers, the base's top-64
        chunk = min(anchored, st.train.loss_chunk)
        gb["replay_anchor"] = (3 * chunk * shape.vocab * 4 + anchored * 64 * 8) / GIB
        why["replay_anchor"] = (f"KL to the base on {anchored:,} replay positions: {chunk:,} × "
                                f"{shape.vocab:,} × 3 fp32 buffers + the base's top-64 per position")
    if st.train.objective in RL:
        gen, why_gen = generation_bytes(shape, st, b)
        # sampling happens before the training forward: only its excess over that step's
        # activations and loss buffers raises the peak
        gb["generation"] = max(0.0, gen - kept - logits) / GIB
        why["generation"] = why_gen + ", beyond the training step's own activations and loss buffers"
    if st.train.objective == "dpo" or (st.train.objective in RL and st.train.beta > 0):
        # the reference pass: no gradient, one block's working set
        gb["reference_pass"] = act["block"] * tokens / shape.layers / GIB
        why["reference_pass"] = "the reference log-probabilities (adapter off, no gradient): one block at a time"


def comparable(e: dict[str, Any], metric: str) -> float:
    """The figure of estimate `e` that a measurement of `metric` reads: PyTorch's peak reserved
    (no CUDA context), its peak allocated, nvidia-smi (everything), or CPU RSS growth (the CPU
    mode's allocated peak)."""
    return {"max_memory_reserved": e["total_gb"] - e["breakdown_gb"].get("cuda_context", 0),
            "max_memory_allocated": e["peak_allocated_gb"], "nvidia_smi": e["total_gb"],
            "rss_growth": e["peak_allocated_gb"]}[metric]


def warnings(shape: Shape, st: RunSpec) -> list[str]:
    out = []
    if st.train.max_len > shape.context:
        out.append(f"Sequence length {st.train.max_len} is beyond the model's context of {shape.context} "
                   "tokens; quality degrades past it (estimated anyway).")
    if st.method == "qlora" and st.estimate.device == "cpu":
        out.append("QLoRA on CPU runs through bitsandbytes' slow CPU path; LoRA is faster there.")
    return out
