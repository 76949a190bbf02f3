"""What fits: GPUs, model shapes from anywhere, the fit verdict and the change that makes it fit.

Owns resolving the estimator's inputs (a config.json path, a folder holding one, a registry
model, or a name in presets/catalog/models.yaml; a GPU name from presets/catalog/gpus.yaml, a
number of GB, or the local GPU), the verdict with headroom, the smallest change that makes a
run fit, the largest micro-batch and sequence length that fit, and the matching preset.
"""
from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

from . import models
from .models import catalog
from .errors import ConfigError
from .memory import Shape, estimate, normalise, shape_from_config
from .spec import RunSpec, update

HEADROOM_GB = 0.3  # keep this much free: other processes and the desktop use the GPU too


def close(name: str, names: list[str]) -> str:
    hits = difflib.get_close_matches(name, names, n=3, cutoff=0.4)
    return f" Did you mean: {', '.join(hits)}?" if hits else ""


def load_shape(ref: str, models_dir: Path | None = None) -> tuple[Shape, str]:
    """A Shape from a config.json path, a folder, a registry/local model or a catalogue name."""
    p = Path(ref).expanduser()
    if p.is_file() and p.suffix == ".json":
        return shape_from_config(json.loads(p.read_text()), str(p)), p.parent.name
    if p.is_dir() and (p / "config.json").exists():
        return shape_from_config(json.loads((p / "config.json").read_text()), str(p / "config.json")), p.name
    cat = catalog("models")
    if ref in cat:
        return shape_from_config(cat[ref], f"catalog/models.yaml:{ref}"), ref
    if models_dir is not None and ref in models.EMBEDDED:
        folder = models_dir / ref  # converted: its own config; not yet: the catalogue's shape
        if models.conversion_ok(folder):
            return load_shape(str(folder))
        return load_shape(models.EMBEDDED[ref]["catalog"])[0], ref
    raise ConfigError(f"Unknown model '{ref}' for the estimate: give a config.json, a model folder, "
                      f"a registry model or a catalogue name.{close(ref, list(cat))} "
                      f"Catalogue: {', '.join(cat)}.")


def gpu_capacity(gpu: str | None, vram_gb: float | None) -> tuple[str, float] | None:
    if vram_gb is not None:
        if vram_gb <= 0:
            raise ConfigError(f"--vram-gb {vram_gb} must be positive (e.g. 12).")
        return f"{vram_gb:g} GB GPU", float(vram_gb)
    if not gpu:
        return None
    if gpu == "local":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("No CUDA GPU was found on this machine; name one with --gpu or "
                              "give --vram-gb.")
        free, total = torch.cuda.mem_get_info()
        return torch.cuda.get_device_name(0), total / 2**30
    gpus = catalog("gpus")
    key = gpu.lower().replace(" ", "-")
    if key not in gpus:
        raise ConfigError(f"Unknown GPU '{gpu}'.{close(key, list(gpus))} Known: {', '.join(gpus)}; "
                          "or give --vram-gb N.")
    return key, gpus[key]["usable_gb"]


def fits(shape: Shape, st: RunSpec, cap: float) -> bool:
    return estimate(shape, st)["total_gb"] + HEADROOM_GB <= cap


def candidates(st: RunSpec) -> list[tuple[str, RunSpec]]:
    """Single changes, cheapest in quality/speed first."""
    out = []
    if not st.train.grad_ckpt:
        out.append(("turn on gradient checkpointing (about 30% slower)", update(st, grad_ckpt=True)))
    if st.train.optimizer == "adamw" and st.method == "full":
        out.append(("use the 8-bit AdamW optimizer", update(st, optimizer="adamw-8bit")))
    if st.train.micro_batch > 1:
        out.append((f"micro-batch {max(1, st.train.micro_batch // 2)} with twice the gradient accumulation",
                    update(st, micro_batch=max(1, st.train.micro_batch // 2))))
    if st.train.offload != "on" and st.estimate.device == "cuda":
        out.append(("turn on activation offloading (saved activations wait in CPU memory)",
                    update(st, offload="on")))
    if st.method == "lora":
        out.append(("use QLoRA (4-bit frozen base weights)", update(st, method="qlora", bits=4)))
    if st.method == "full":
        out.append(("train LoRA adapters instead of all weights", update(st, method="lora")))
    if st.train.max_len > 256:
        half = st.train.max_len // 2
        out.append((f"shorten max length to {half} tokens", update(st, max_len=half)))
    return out


def advise(shape: Shape, st: RunSpec, cap: float) -> list[str]:
    if fits(shape, st, cap):
        return []
    for text, cand in candidates(st):
        if fits(shape, cand, cap):
            return [f"It fits if you {text}."]
    cur, steps = st, []
    for _ in range(12):  # combine changes greedily until it fits
        opts = candidates(cur)
        if not opts:
            break
        text, cur = min(opts, key=lambda o: estimate(shape, o[1])["total_gb"])
        steps.append(text)
        if fits(shape, cur, cap):
            return ["It fits if you " + "; then ".join(steps) + "."]
    return ["It does not fit this GPU even with QLoRA, batch 1 and checkpointing at "
            f"{cur.train.max_len} tokens; choose a smaller model or a larger GPU."]


def largest(shape: Shape, st: RunSpec, cap: float) -> dict[str, int | None]:
    batch = None
    for b in (1, 2, 4, 8, 16, 32, 64, 128):
        if fits(shape, update(st, micro_batch=b), cap):
            batch = b
    seq = None
    s = 128
    while s <= max(shape.context, 128):
        if fits(shape, update(st, max_len=s), cap):
            seq = s
        s *= 2
    return {"max_micro_batch": batch, "max_seq_len": seq}


def longest(shape: Shape, st: RunSpec, cap: float, limit: int = 4_194_304) -> int | None:
    """The longest sequence (tokens, batch as set) that fits `cap` GB: a binary search, since
    memory only grows with length."""
    if not fits(shape, update(st, max_len=16), cap):
        return None
    lo, hi = 16, limit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(shape, update(st, max_len=mid), cap) else (lo, mid - 1)
    return lo


def pick_preset(cap: float | None, method: str) -> str | None:
    from .presets import list_presets

    if cap is None:
        return None
    ok = [p for p in list_presets() if 0 < p.gpu_gb <= cap + 0.5]
    if not ok:
        return "cpu-quickstart"
    same = [p for p in ok if p.method == method] or ok
    return max(same, key=lambda p: p.gpu_gb).name


def resolve_offload(shape: Shape, st: RunSpec, cap: float | None) -> RunSpec:
    """offload=auto → on exactly when the run fits this GPU only with offloading."""
    if st.train.offload != "auto":
        return st
    on = update(st, offload="on")
    if cap is not None and st.estimate.device == "cuda" and not fits(shape, update(st, offload="off"), cap) \
            and fits(shape, on, cap):
        return on
    return update(st, offload="off")


def report(shape: Shape, st: RunSpec, gpu: str | None = None, vram_gb: float | None = None) -> dict[str, Any]:
    cap = gpu_capacity(gpu, vram_gb)
    auto = st.train.offload == "auto"
    st = resolve_offload(shape, st, cap[1] if cap else None)
    est = estimate(shape, st)
    est["fits"] = None
    est["advice"] = []
    if cap:
        name, gb = cap
        est["gpu"] = {"name": name, "usable_gb": round(gb, 2)}
        est["fits"] = est["total_gb"] + HEADROOM_GB <= gb
        est["headroom_gb"] = round(gb - est["total_gb"], 2)
        est["advice"] = advise(shape, normalise(st), gb) or [
            f"Fits with {gb - est['total_gb']:.1f} GB to spare."]
        # the longest length counts every lever the run may use: offloading when it is "auto"
        est.update(largest(shape, normalise(update(st, offload="on") if auto else st), gb))
        est["preset"] = pick_preset(gb, st.method)
    return est


__all__ = ["report", "load_shape"]
