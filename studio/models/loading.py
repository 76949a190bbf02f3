"""Loading: building the model objects — dtype, tokenizer (a GGUF's pre-tokenizer restored),
causal LM — and the only place that builds BitsAndBytesConfig / LoraConfig from our settings;
also whether this CPU multiplies bf16 fast enough to train in it (cpu_bf16_speedup).

Owns what imports transformers and peft (inside the functions); not finding, describing or
choosing a device for a model (registry.py, which re-exports these names so callers write
`models.load_model`). trust_remote_code is never enabled, and weights load from safetensors or
GGUF only, never pickle.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ModelError


def restore_pre_tokenizer(tok, gguf_path: Path) -> None:
    """transformers rebuilds a GGUF's BPE tokenizer with plain byte-level splitting; restore the
    split that the file's `tokenizer.ggml.pre` names, so numbers tokenize as in llama.cpp."""
    import gguf
    from tokenizers import pre_tokenizers

    field = gguf.GGUFReader(str(gguf_path)).fields.get("tokenizer.ggml.pre")
    if field is not None and field.contents() == "smollm":  # digits one by one, then GPT-2 split
        tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])


FAST_BF16 = 1.4    # bf16 products at least this many times faster than fp32: the CPU has native bf16


@functools.lru_cache(maxsize=None)
def cpu_bf16_speedup() -> tuple[float, bool]:
    """(how many times faster this CPU multiplies bf16 matrices than fp32 ones, whether that was
    forced rather than measured). Measured on a layer-sized product, once per process: ≈1.8–2.5
    where the CPU has native bf16 (AVX512-BF16, AMX), below 1 where bf16 is emulated — there the
    measurement stops after the first bf16 product when it is three times fp32's. STUDIO_CPU_BF16=1/0
    forces it (2.0 / 0.5): for a machine whose measurement is disturbed, or a choice of one's own."""
    import os
    import time

    import torch

    forced = os.environ.get("STUDIO_CPU_BF16", "").strip()
    if forced in ("0", "1"):
        return (2.0 if forced == "1" else 0.5), True
    x, w = torch.randn(512, 576), torch.randn(1536, 576)

    def once(a, b) -> float:
        t = time.perf_counter()
        torch.nn.functional.linear(a, b)
        return time.perf_counter() - t

    once(x, w)  # the first call picks its kernel
    fp32 = min(once(x, w) for _ in range(6))
    xb, wb = x.bfloat16(), w.bfloat16()
    cold = once(xb, wb)  # the first call sets its kernel up; where bf16 is emulated, it is the
    if cold > 3 * fp32:  # only slow product paid: emulated bf16 runs several times slower
        return round(fp32 / cold, 2), False
    bf16 = min(once(xb, wb) for _ in range(6))
    return round(fp32 / max(bf16, 1e-9), 2), False


def cpu_bf16_fast() -> bool:
    """Whether `train.dtype=auto` trains in bf16 mixed precision on this CPU (cpu_bf16_speedup)."""
    return cpu_bf16_speedup()[0] >= FAST_BF16


def resolve_dtype(name: str, device: str):
    import torch

    if name == "auto":
        if device == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    path = Path(path)
    if path.is_file():
        return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: Path, device: str = "cpu", dtype: str = "auto", quant: Any = None):
    """Load a causal LM from safetensors (or GGUF); `quant` is a QuantSettings for QLoRA."""
    from transformers import AutoModelForCausalLM

    path = Path(path)
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(dtype, device), "trust_remote_code": False}
    if path.is_file():
        kwargs["gguf_file"] = path.name
        path = path.parent
    else:
        kwargs["use_safetensors"] = True
    if quant is not None:
        kwargs["quantization_config"] = bnb_config(quant, kwargs["dtype"])
    if device == "cuda":
        kwargs["device_map"] = {"": 0}
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as e:
        raise ModelError(f"Cannot load the model in {path}: {e}") from None
    if device != "cuda" and quant is None:
        model.to(device)
    return model


def bnb_config(quant: Any, compute_dtype: Any):
    from transformers import BitsAndBytesConfig

    if quant.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant.type,
                              bnb_4bit_use_double_quant=quant.double_quant,
                              bnb_4bit_compute_dtype=compute_dtype)


TARGET_ALIASES = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj",
                  "gate": "gate_proj", "up": "up_proj", "down": "down_proj"}


def lora_config(lora: Any, n_layers: int | None = None):
    """PEFT's LoraConfig for the spec's lora section; `n_layers` (the model's decoder layers)
    is needed when lora.layers is not all."""
    from peft import LoraConfig

    from ..spec import MLP_TARGETS, layer_indices

    targets: Any = "all-linear"
    if lora.targets.strip() != "all-linear":
        names = [t.strip() for t in lora.targets.split(",") if t.strip()]
        names = [x for t in names for x in (MLP_TARGETS if t == "mlp" else (t,))]
        targets = [TARGET_ALIASES.get(t, t) for t in names]
    layers = None
    if lora.layers.strip().lower() != "all":
        if not n_layers:
            raise ConfigError("lora.layers needs the model's number of layers; use all.")
        layers = layer_indices(lora.layers, n_layers)
    return LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=targets, use_rslora=lora.rslora, use_dora=lora.dora,
                      layers_to_transform=layers, bias="none", task_type="CAUSAL_LM")
