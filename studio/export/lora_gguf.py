"""A PEFT LoRA adapter → a llama.cpp LoRA GGUF (`llama-cli --lora`, `Llama(lora_path=…)`).

Owns the adapter's tensor names (`<base gguf tensor>.lora_a` r×in, `.lora_b` out×r), the
rotary permutation of lora_B rows for llama-family q/k (the base weights were permuted the
same way), the alpha that makes llama.cpp's alpha/r scale equal PEFT's (rsLoRA: alpha/sqrt(r)),
and refusing what llama.cpp cannot apply (DoRA, modules_to_save, new tokens).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import ExportError
from .gguf_writer import atomic_writer, check_arch, rotary_permute


def check_adapter(adapter: Path) -> dict:
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    problems = []
    if cfg.get("use_dora"):
        problems.append("it is a DoRA adapter (llama.cpp applies plain LoRA only)")
    if cfg.get("modules_to_save"):
        problems.append(f"it trains whole modules ({', '.join(cfg['modules_to_save'])})")
    if cfg.get("trainable_token_indices"):
        problems.append("it trains new token embeddings")
    if problems:
        raise ExportError("This adapter cannot be exported as a LoRA GGUF because "
                          + " and ".join(problems) + ". Export a merged GGUF instead "
                          "(--format gguf), which bakes the adapter into the weights.")
    return cfg


def write(adapter: Path, base_folder: Path, out: Path, dtype: str = "f32") -> Path:
    import gguf
    import numpy as np
    from safetensors import safe_open

    acfg = check_adapter(adapter)
    mcfg = json.loads((base_folder / "config.json").read_text())
    arch_name, permute, _ = check_arch(mcfg)
    arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch_name)
    tmap = gguf.get_tensor_name_map(arch, mcfg["num_hidden_layers"])
    n_head = mcfg["num_attention_heads"]
    n_kv = mcfg.get("num_key_value_heads", n_head)
    r = acfg["r"]
    alpha = acfg["lora_alpha"] * (math.sqrt(r) if acfg.get("use_rslora") else 1.0)
    with atomic_writer(out, arch_name) as w:
        w.add_type(gguf.GGUFType.ADAPTER)
        w.add_string(gguf.Keys.Adapter.TYPE, "lora")
        w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
        with safe_open(str(adapter / "adapter_model.safetensors"), framework="pt") as st:
            for key in sorted(st.keys()):
                if ".lora_A." not in key:
                    continue
                module = key.split(".lora_A.")[0].removeprefix("base_model.model.")
                name = tmap.get_name(module + ".weight", try_suffixes=(".weight",))
                if name is None:
                    raise ExportError(f"Adapter module {module} has no GGUF tensor name.")
                a = st.get_tensor(key).float().numpy()
                b = st.get_tensor(key.replace(".lora_A.", ".lora_B.")).float().numpy()
                if permute and module.endswith("q_proj"):
                    b = rotary_permute(b, n_head)
                elif permute and module.endswith("k_proj"):
                    b = rotary_permute(b, n_kv)
                cast = np.float16 if dtype == "f16" else np.float32
                w.add_tensor(f"{name}.lora_a", a.astype(cast))
                w.add_tensor(f"{name}.lora_b", b.astype(cast))
    return out
