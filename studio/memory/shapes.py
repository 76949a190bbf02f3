"""A model's shape for the memory estimate: read from a config.json (llama, mistral, qwen2,
qwen3, gemma/gemma2/gemma3, phi, phi3, smollm3, stablelm, gpt2), its linear layers as built, and
exact total and LoRA-trainable parameter counts (module by module, as transformers and PEFT build
them). Pure arithmetic, no torch.

Owns the shape and the parameter counts; not the memory terms (estimate.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..spec import RunSpec

ARCHS = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi", "phi3", "smollm3",
         "stablelm", "gpt2")


@dataclass(frozen=True)
class Shape:
    arch: str
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    inter: int
    tied: bool
    context: int
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    gated: bool = True
    layernorm: bool = False     # LayerNorm (weight + bias) instead of RMSNorm
    norms_per_layer: int = 2
    qk_norm: bool = False
    fused_qkv: bool = False     # phi3 qkv_proj, gpt2 c_attn
    fused_gate_up: bool = False  # phi3 gate_up_proj
    learned_pos: bool = False   # gpt2 wpe
    lm_head_bias: bool = False  # phi
    module_names: dict[str, str] = field(default_factory=dict)


def _get(cfg: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k]
    return default


def shape_from_config(cfg: dict[str, Any], source: str = "config.json") -> Shape:
    cfg = {**cfg.get("text_config", {}), **cfg} if "text_config" in cfg else cfg
    arch = cfg.get("model_type")
    if arch not in ARCHS:
        raise ConfigError(f"{source}: architecture '{arch}' is not supported by the estimator. "
                          f"Supported: {', '.join(ARCHS)}.")
    need = {"vocab_size": ("vocab_size",), "hidden_size": ("hidden_size", "n_embd"),
            "num_hidden_layers": ("num_hidden_layers", "n_layer"),
            "num_attention_heads": ("num_attention_heads", "n_head")}
    missing = [k for k, alts in need.items() if _get(cfg, *alts) is None]
    if arch != "gpt2" and cfg.get("intermediate_size") is None:
        missing.append("intermediate_size")
    if missing:
        raise ConfigError(f"{source} lacks {', '.join(missing)}, which the estimate needs. Use "
                          "the model's full config.json.")
    h = _get(cfg, "hidden_size", "n_embd")
    heads = _get(cfg, "num_attention_heads", "n_head")
    base = dict(arch=arch, vocab=cfg["vocab_size"], hidden=h, layers=_get(cfg, "num_hidden_layers", "n_layer"),
                heads=heads, kv_heads=_get(cfg, "num_key_value_heads", default=heads),
                head_dim=cfg.get("head_dim") or h // heads,
                inter=_get(cfg, "intermediate_size", "n_inner", default=4 * h),
                tied=bool(cfg.get("tie_word_embeddings", arch in ("gpt2", "gemma", "gemma2", "gemma3_text"))),
                context=_get(cfg, "max_position_embeddings", "n_positions", default=2048))
    llama_names = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj",
                   "gate": "gate_proj", "up": "up_proj", "down": "down_proj"}
    if arch in ("llama", "mistral", "smollm3"):
        b = bool(cfg.get("attention_bias", False))
        return Shape(**base, qkv_bias=b, o_bias=b, mlp_bias=bool(cfg.get("mlp_bias", False)),
                     module_names=llama_names)
    if arch == "qwen2":
        return Shape(**base, qkv_bias=True, module_names=llama_names)
    if arch == "qwen3":  # no q/k/v bias; an RMSNorm over each head's q and k
        return Shape(**base, qkv_bias=bool(cfg.get("attention_bias", False)), qk_norm=True,
                     module_names=llama_names)
    if arch in ("gemma", "gemma2", "gemma3_text"):
        return Shape(**base, norms_per_layer=2 if arch == "gemma" else 4,
                     qk_norm=arch == "gemma3_text", module_names=llama_names)
    if arch == "stablelm":
        return Shape(**base, qkv_bias=bool(cfg.get("use_qkv_bias", False)), layernorm=True,
                     module_names=llama_names)
    if arch == "phi":
        return Shape(**base, qkv_bias=True, o_bias=True, mlp_bias=True, gated=False, layernorm=True,
                     norms_per_layer=1, lm_head_bias=True,
                     module_names={"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "dense",
                                   "up": "fc1", "down": "fc2"})
    if arch == "phi3":
        return Shape(**base, fused_qkv=True, fused_gate_up=True,
                     module_names={"q": "qkv_proj", "k": "qkv_proj", "v": "qkv_proj", "o": "o_proj",
                                   "gate": "gate_up_proj", "up": "gate_up_proj", "down": "down_proj"})
    return Shape(**{**base, "inter": _get(cfg, "n_inner", default=4 * h)}, qkv_bias=True, o_bias=True,
                 mlp_bias=True, gated=False, layernorm=True, fused_qkv=True, learned_pos=True,
                 module_names={"q": "c_attn", "k": "c_attn", "v": "c_attn", "o": "attn.c_proj",
                               "up": "c_fc", "down": "mlp.c_proj"})


def layer_linears(s: Shape) -> list[tuple[str, int, int, bool]]:
    """(module name, in, out, has bias) for the linear layers of one block, as built."""
    q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    n = s.module_names
    if s.fused_qkv:
        attn = [(n["q"], s.hidden, q + 2 * kv, s.qkv_bias)]
    else:
        attn = [(n["q"], s.hidden, q, s.qkv_bias), (n["k"], s.hidden, kv, s.qkv_bias),
                (n["v"], s.hidden, kv, s.qkv_bias)]
    attn.append((n["o"], q, s.hidden, s.o_bias))
    if not s.gated:
        mlp = [(n["up"], s.hidden, s.inter, s.mlp_bias), (n["down"], s.inter, s.hidden, s.mlp_bias)]
    elif s.fused_gate_up:
        mlp = [(n["gate"], s.hidden, 2 * s.inter, False), (n["down"], s.inter, s.hidden, False)]
    else:
        mlp = [(n["gate"], s.hidden, s.inter, s.mlp_bias), (n["up"], s.hidden, s.inter, s.mlp_bias),
               (n["down"], s.inter, s.hidden, s.mlp_bias)]
    return attn + mlp


def targeted(s: Shape, targets: str) -> list[tuple[str, int, int, bool]]:
    lin = layer_linears(s)
    if targets.strip() == "all-linear":
        return lin
    wanted = set()
    for t in (x.strip() for x in targets.split(",") if x.strip()):
        name = s.module_names.get(t, t)
        if not any(m == name for m, *_ in lin):
            raise ConfigError(f"Target '{t}' is not a linear layer of {s.arch}; use all-linear or "
                              f"some of: {', '.join(sorted(s.module_names))}.")
        wanted.add(name)
    return [x for x in lin if x[0] in wanted]


def param_counts(s: Shape, st: RunSpec) -> dict[str, int]:
    """Exact parameter counts: total, the parts bitsandbytes quantizes, and LoRA trainable."""
    norm = s.hidden * (2 if s.layernorm else 1)
    linears = layer_linears(s)
    lin_w = sum(i * o for _, i, o, _ in linears)
    lin_b = sum(o for _, _, o, b in linears if b)
    per_layer = lin_w + lin_b + s.norms_per_layer * norm + (2 * s.head_dim if s.qk_norm else 0)
    embed = s.vocab * s.hidden + (s.context * s.hidden if s.learned_pos else 0)
    head = 0 if s.tied else s.vocab * s.hidden + (s.vocab if s.lm_head_bias else 0)
    total = embed + s.layers * per_layer + norm + head
    trainable = total
    if st.method != "full":
        trainable = s.layers * sum(st.lora.rank * (i + o) + (o if st.lora.dora else 0)
                                   for _, i, o, _ in targeted(s, st.lora.targets))
    return {"total": total, "quantizable": s.layers * lin_w, "trainable": trainable}

