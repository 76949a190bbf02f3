"""The strength of a second update: a run that started from another run's adapter (--from-run).

Such a run trains the same LoRA matrices further: it starts at the start run's (B0, A0) and ends
at (B, A), so its weights are W0 + c·B·A with c the LoRA scale (alpha/r, or alpha/√r for
rsLoRA). Scaling B by s, as strength.py does for a fresh run, would scale the start run's part
too (an SFT→DPO run at 0.5 halves what SFT learned). Here strength s scales only what this run
added:

    W0 + c·B0·A0 + s·c·(B·A − B0·A0)  =  W0 + c·[s·B, (1−s)·B0]·[A; A0]

— one LoRA adapter of rank 2r whose A stacks both A matrices and whose B places s·B beside
(1−s)·B0. It is exact (no SVD, nothing truncated), s = 0 gives the start run's adapter and s = 1
this run's. Owns three things built on that identity:
- the start adapter kept with the run (run_dir/adapter-start/, copied when the run begins, so a
  later change to the start run — its own strength — never moves this run's line);
- `blended(...)`: the rank-2r adapter written to disk by strength.apply. The scale c of rank 2r
  differs from rank r's (alpha/2r), so the factor c(r)/c(2r) is folded into B and the config
  says r = 2r with lora_alpha unchanged: PEFT, the merged exports and llama.cpp's LoRA GGUF
  (scale = alpha / the tensors' rank) all read it as an ordinary LoRA adapter — no code of their
  own. At s = 1 the adapter as trained is written back, at rank r;
- `swapped(...)`: the same blend in memory, for the forgetting budget's lower strengths and the
  Compare/report strengths: each active LoRA layer's A and B replaced by the stacked ones (and its
  scale set to the as-trained one) while the block runs, then restored.
Does not choose strengths (selection.py, verdict.py) nor decide what is "kept" (report).
"""
from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..errors import RunError
from ..paths import RUN

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"


def start_dir(run_dir: Path | str | None) -> Path | None:
    """The start adapter kept with a run that started from another; None for a fresh run."""
    if run_dir is None:
        return None
    d = Path(run_dir) / RUN.adapter_start
    return d if (d / WEIGHTS).exists() else None


def keep_start(run_dir: Path, start_adapter: Path) -> Path:
    """Copy the start run's adapter into this run's folder, once (a resume keeps the first copy)."""
    run_dir = Path(run_dir)
    dst = run_dir / RUN.adapter_start
    if (dst / WEIGHTS).exists():
        return dst
    tmp = run_dir / f".{RUN.adapter_start}-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name in (WEIGHTS, CONFIG):
        shutil.copy2(Path(start_adapter) / name, tmp / name)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    return dst


def scale_of(config: dict[str, Any], rank: int | None = None) -> float:
    """The LoRA scale c for `rank` (the config's r when not given): alpha/r, or alpha/√r (rsLoRA)."""
    r = rank or config["r"]
    return config["lora_alpha"] / (r ** 0.5 if config.get("use_rslora") else r)


def read(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors, config) of a PEFT adapter folder."""
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / WEIGHTS)), json.loads((Path(folder) / CONFIG).read_text())


def lora_pairs(tensors: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Module path (without PEFT's `base_model.model.` prefix) → (lora_A key, lora_B key)."""
    out = {}
    for k in tensors:
        if k.endswith(".lora_A.weight"):
            mod = k[: -len(".lora_A.weight")]
            out[mod.removeprefix("base_model.model.")] = (k, f"{mod}.lora_B.weight")
    return out


def _check(full: dict[str, Any], start: dict[str, Any], cfg: dict[str, Any]) -> None:
    if cfg.get("use_dora"):
        raise RunError("Strength of a second update works for LoRA and rsLoRA adapters, not DoRA "
                       "(its magnitude vector is no sum of the two updates).")
    if set(lora_pairs(full)) != set(lora_pairs(start)) or any(
            full[a].shape != start[a].shape for a, _ in lora_pairs(full).values()):
        raise RunError("This run's adapter and the one it started from adapt different layers or "
                       "ranks, so what this run added cannot be told apart; set its strength as "
                       "a whole by training again without --from-run.")


def blended(full: dict[str, Any], start: dict[str, Any], cfg: dict[str, Any], value: float
            ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors, config) of the rank-2r adapter at strength `value` of the second update."""
    import torch

    _check(full, start, cfg)
    if cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        raise RunError("Strength of a second update needs one rank for every layer "
                       "(the adapter has a rank or alpha pattern).")
    r = cfg["r"]
    fold = scale_of(cfg, r) / scale_of(cfg, 2 * r)  # rank 2r's scale is smaller: B carries it
    out = {k: v for k, v in full.items() if ".lora_A." not in k and ".lora_B." not in k}
    for ka, kb in lora_pairs(full).values():
        b, b0 = full[kb].float(), start[kb].float()
        out[ka] = torch.cat([full[ka], start[ka]], 0).contiguous()
        out[kb] = (torch.cat([value * b, (1 - value) * b0], 1) * fold).to(full[kb].dtype).contiguous()
    return out, {**cfg, "r": 2 * r}


@contextmanager
def swapped(model, full: dict[str, Any], start: dict[str, Any], cfg: dict[str, Any], value: float
            ) -> Iterator[None]:
    """Every active LoRA layer of `model` at strength `value` of the second update (in memory):
    A = [A; A0], B = [value·B, (1−value)·B0], at the as-trained scale, until the block ends."""
    import torch
    from peft.tuners.lora import LoraLayer

    _check(full, start, cfg)
    pairs, c = lora_pairs(full), scale_of(cfg)
    saved = []
    try:
        for name, m in model.named_modules():
            if not isinstance(m, LoraLayer):
                continue
            path = name.removeprefix("base_model.model.")
            if path not in pairs:
                continue
            ka, kb = pairs[path]
            for adapter in m.active_adapters:
                if adapter not in m.lora_A:
                    continue
                wa, wb = m.lora_A[adapter].weight, m.lora_B[adapter].weight
                saved.append((m, adapter, wa.data, wb.data, m.scaling[adapter]))
                dev, dt = wa.device, wa.dtype
                wa.data = torch.cat([full[ka], start[ka]], 0).to(dev, dt)
                wb.data = torch.cat([value * full[kb].float(), (1 - value) * start[kb].float()], 1).to(dev, dt)
                m.scaling[adapter] = c
        yield
    finally:
        for m, adapter, a, b, s in saved:
            m.lora_A[adapter].weight.data, m.lora_B[adapter].weight.data = a, b
            m.scaling[adapter] = s


def weights_of(model) -> dict[str, Any]:
    """The active adapter's LoRA tensors, keyed as PEFT saves them (for an adapter in training)."""
    from peft import get_peft_model_state_dict

    name = model.active_adapters[0] if hasattr(model, "active_adapters") else "default"
    return {k: v.detach().cpu() for k, v in get_peft_model_state_dict(model, adapter_name=name).items()}
