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
MLP_CHUNK = 4096   # tokens per MLP chunk the advice suggests: past it the MLP's working set stops growing


def close(name: str, names: list[str]) -> str:
    hits = difflib.get_close_matches(name, names, n=3, cutoff=0.4)
    return f" Did you mean: {', '.join(hits)}?" if hits else ""


def hub_shape(repo_id: str, cat: dict[str, Any]) -> tuple[Shape, str]:
    """A hub id: the catalogue's shape when it is a catalogue model's repository, else the
    shape of its config.json (from the cache, or that one small file from the hub)."""
    from . import hub

    name = models.catalogue_name(repo_id)
    if name in cat:
        return shape_from_config(cat[name], f"catalog/models.yaml:{name}"), name
    return shape_from_config(hub.config(repo_id), f"{repo_id}/config.json"), repo_id


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
    if models.HUB_ID.match(ref):
        return hub_shape(ref, cat)
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


def candidates(st: RunSpec) -> list[tuple[str, dict[str, Any]]]:
    """Single changes (setting → value), cheapest in quality and speed first."""
    out: list[tuple[str, dict[str, Any]]] = []
    if not st.train.grad_ckpt:
        out.append(("grad_ckpt", {"grad_ckpt": True}))
    if st.train.optimizer == "adamw" and st.method == "full":
        out.append(("optimizer", {"optimizer": "adamw-8bit"}))
    if st.train.micro_batch > 1:
        out.append(("micro_batch", {"micro_batch": max(1, st.train.micro_batch // 2)}))
    if st.train.offload != "on" and st.estimate.device == "cuda":
        out.append(("offload", {"offload": "on"}))
    if st.method == "qlora" and st.train.kbit_norms == "fp32" and st.estimate.device == "cuda":
        out.append(("kbit_norms", {"kbit_norms": "compute"}))
    if st.train.grad_ckpt and not st.train.mlp_chunk and st.train.max_len > MLP_CHUNK:
        out.append(("mlp_chunk", {"mlp_chunk": MLP_CHUNK}))
    if st.method == "lora":
        out.append(("method", {"method": "qlora", "bits": 4}))
    if st.method == "full":
        out.append(("method", {"method": "lora"}))
    if st.train.max_len > 256:
        out.append(("max_len", {"max_len": st.train.max_len // 2}))
    return out


def says(key: str, change: dict[str, Any]) -> str:
    """A change in words."""
    return {"grad_ckpt": "turn on gradient checkpointing (about 30% slower)",
            "optimizer": "use the 8-bit AdamW optimizer",
            "micro_batch": f"use micro-batch {change.get('micro_batch')} (more gradient accumulation "
                           "keeps the same effective batch)",
            "offload": "turn on activation offloading (saved activations wait in CPU memory)",
            "kbit_norms": "keep QLoRA's residual stream in the compute dtype (train.kbit_norms="
                          "compute: half its memory per token)",
            "mlp_chunk": f"run each recomputed block's MLP {change.get('mlp_chunk')} tokens at a time "
                         f"(train.mlp_chunk={change.get('mlp_chunk')})",
            "method": ("use QLoRA (4-bit frozen base weights)" if change.get("method") == "qlora"
                       else "train LoRA adapters instead of all weights"),
            "max_len": f"shorten max length to {change.get('max_len')} tokens"}[key]


def plan(shape: Shape, st: RunSpec, cap: float) -> list[dict[str, Any]]:
    """One consistent list of changes that together make the run fit, each with the estimate
    after it: one change when one is enough, else the cheapest levers in turn (a setting changed
    twice, like max length, is one step with its final value). Empty when it fits already."""
    if fits(shape, st, cap):
        return []
    for key, change in candidates(st):
        cand = update(st, **change)
        if fits(shape, cand, cap):
            return [{"change": says(key, change), "setting": change,
                     "total_gb": estimate(shape, cand)["total_gb"]}]
    steps: list[dict[str, Any]] = []
    cur = st
    for _ in range(16):
        now = estimate(shape, cur)["total_gb"]
        helpful = [(k, c) for k, c in candidates(cur)
                   if estimate(shape, update(cur, **c))["total_gb"] < now - 0.005]
        if not helpful:
            break
        key, change = helpful[0]
        cur = update(cur, **change)
        if steps and steps[-1]["key"] == key:
            change = {**steps.pop()["setting"], **change}
        steps.append({"key": key, "change": says(key, change), "setting": change,
                      "total_gb": estimate(shape, cur)["total_gb"]})
        if fits(shape, cur, cap):
            break
    for step in steps:
        step.pop("key")
    return steps


def planned(st: RunSpec, steps: list[dict[str, Any]]) -> RunSpec:
    for step in steps:
        st = update(st, **step["setting"])
    return st


def advise(shape: Shape, st: RunSpec, cap: float, steps: list[dict[str, Any]]) -> list[str]:
    if not steps:
        return []
    if not fits(shape, planned(st, steps), cap):
        return ["It does not fit this GPU even with " + ", ".join(s["change"] for s in steps)
                + f" ({steps[-1]['total_gb']:.1f} GB); choose a smaller model or a larger GPU."]
    return ["It fits if you " + "; and ".join(f"{s['change']} → {s['total_gb']:.1f} GB" for s in steps)
            + "."]


def largest(shape: Shape, st: RunSpec, cap: float) -> dict[str, int | None]:
    """The largest micro-batch (a power of two) and the longest length (to the token, up to the
    model's context) that fit `cap` GB, the other setting as it is."""
    batch = None
    for b in (1, 2, 4, 8, 16, 32, 64, 128):
        if fits(shape, update(st, micro_batch=b), cap):
            batch = b
    return {"max_micro_batch": batch, "max_seq_len": longest(shape, st, cap, limit=max(shape.context, 128))}


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


def pick_preset(cap: float | None, method: str, objective: str = "sft") -> str | None:
    """The largest GPU preset that fits `cap` GB, for the same training objective (and adapter
    method when there is one)."""
    from .presets import list_presets

    if cap is None:
        return None
    ok = [p for p in list_presets() if 0 < p.gpu_gb <= cap + 0.5 and p.train.objective == objective]
    if not ok:
        return "cpu-quickstart" + ("" if objective == "sft" else f"-{objective}")
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
        steps = plan(shape, normalise(st), gb)
        est["plan"] = steps
        est["plan_settings"] = {k: v for s in steps for k, v in s["setting"].items()}
        est["advice"] = advise(shape, normalise(st), gb, steps) or [
            f"Fits with {gb - est['total_gb']:.1f} GB to spare."]
        # the limits hold for the settings that fit: the plan's when there is one; the longest
        # length counts every lever the run may use (offloading when it is "auto")
        base = planned(normalise(st), steps)
        est.update(largest(shape, normalise(update(base, offload="on") if auto else base), gb))
        est["limits_with_plan"] = bool(steps)
        # the run as the plan leaves it: what "Use these settings" takes to the Train step
        est["planned_total_gb"] = steps[-1]["total_gb"] if steps else est["total_gb"]
        est["fits_with_plan"] = fits(shape, base, gb)
        est["preset"] = pick_preset(gb, st.method, st.train.objective)
    return est


__all__ = ["report", "load_shape"]
