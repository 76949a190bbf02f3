"""What fits: GPUs, model shapes from anywhere, the fit verdict and the change that makes it fit.

Owns resolving the estimator's inputs (a config.json path, a folder holding one, a registry
model, or a name in presets/catalog/models.yaml; a GPU name from presets/catalog/gpus.yaml, a
number of GB, or the local GPU), the verdict with headroom, the smallest change that makes a
run fit, the largest micro-batch and sequence length that fit, and the matching preset.

One rule decides "fits" (`fits`: the estimate, with offload=auto settled as training settles it,
plus HEADROOM_GB, within the GPU's usable memory); the verdict, the GB to spare, the plan and
its advised values, and the limits are all found with it, so they never disagree.
"""
from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

from ..models import registry as models
from ..models.registry import catalog
from ..errors import ConfigError
from .estimate import Shape, estimate, normalise, shape_from_config
from ..spec import RunSpec, update

HEADROOM_GB = 0.3  # keep this much free: other processes and the desktop use the GPU too
MLP_CHUNK = 4096   # tokens per MLP chunk the advice suggests: past it the MLP's working set stops growing


def close(name: str, names: list[str]) -> str:
    hits = difflib.get_close_matches(name, names, n=3, cutoff=0.4)
    return f" Did you mean: {', '.join(hits)}?" if hits else ""


def hub_shape(repo_id: str, cat: dict[str, Any]) -> tuple[Shape, str]:
    """A hub id: the catalogue's shape when it is a catalogue model's repository, else the
    shape of its config.json (from the cache, or that one small file from the hub)."""
    from ..models import hub

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


def spare(total_gb: float, cap: float) -> float:
    """GB left on a `cap` GB GPU once the run's `total_gb` and the HEADROOM_GB kept free are
    counted: it fits when this is not negative."""
    return cap - HEADROOM_GB - total_gb


def settle(shape: Shape, st: RunSpec, cap: float | None) -> RunSpec:
    """offload=auto → on exactly when the run fits this GPU only with offloading (as training
    decides it, train/config.py); off without a GPU to fit."""
    if st.train.offload != "auto":
        return st
    on, off = update(st, offload="on"), update(st, offload="off")
    if cap is not None and st.estimate.device == "cuda" and not fits(shape, off, cap) and fits(shape, on, cap):
        return on
    return off


def need(shape: Shape, st: RunSpec, cap: float) -> float:
    """The estimate in GB of the run as it would train on a `cap` GB GPU (offload=auto settled)."""
    return estimate(shape, settle(shape, st, cap))["total_gb"]


def fits(shape: Shape, st: RunSpec, cap: float) -> bool:
    """The one fit rule: the run's estimate, with HEADROOM_GB kept free, within `cap` GB."""
    return spare(need(shape, st, cap), cap) >= 0


def most(shape: Shape, st: RunSpec, cap: float, key: str, lo: int, hi: int) -> int | None:
    """The largest value of setting `key` in [lo, hi] with which the run fits (a binary search:
    memory only grows with the micro-batch and the length); None when even `lo` does not fit."""
    if hi < lo or not fits(shape, update(st, **{key: lo}), cap):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(shape, update(st, **{key: mid}), cap) else (lo, mid - 1)
    return lo


def candidates(shape: Shape, st: RunSpec, cap: float) -> list[tuple[str, dict[str, Any]]]:
    """Single changes (setting → value), cheapest in quality and speed first. A smaller
    micro-batch is the largest that fits with the rest as set (half when none does)."""
    out: list[tuple[str, dict[str, Any]]] = []
    if not st.train.grad_ckpt:
        out.append(("grad_ckpt", {"grad_ckpt": True}))
    if st.train.optimizer == "adamw" and st.method == "full":
        out.append(("optimizer", {"optimizer": "adamw-8bit"}))
    if st.train.micro_batch > 1:
        b = st.train.micro_batch
        out.append(("micro_batch", {"micro_batch": most(shape, st, cap, "micro_batch", 1, b - 1)
                                    or max(1, b // 2)}))
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
    for key, change in candidates(shape, st, cap):
        cand = update(st, **change)
        if fits(shape, cand, cap):
            return [{"change": says(key, change), "setting": change, "total_gb": need(shape, cand, cap)}]
    steps: list[dict[str, Any]] = []
    cur = st
    for _ in range(16):
        now = need(shape, cur, cap)
        helpful = [(k, c) for k, c in candidates(shape, cur, cap)
                   if need(shape, update(cur, **c), cap) < now - 0.005]
        if not helpful:
            break
        key, change = helpful[0]
        cur = update(cur, **change)
        if steps and steps[-1]["key"] == key:
            change = {**steps.pop()["setting"], **change}
        steps.append({"key": key, "setting": change})
        if fits(shape, cur, cap):
            break
    return widen(shape, st, cap, steps)


def widen(shape: Shape, st: RunSpec, cap: float, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A plan that fits asks no more than it must: its max length (what examples keep), then its
    micro-batch (only speed: accumulation keeps the effective batch), raised to the largest that
    still fits with the plan's other changes, at most as set (a step left with nothing to change
    goes); then each step's words and the estimate after it."""
    for key, now in (("max_len", st.train.max_len), ("micro_batch", st.train.micro_batch)):
        if not any(key in s["setting"] for s in steps) or not fits(shape, planned(st, steps), cap):
            continue
        cur = planned(st, steps)
        best = most(shape, cur, cap, key, getattr(cur.train, key), now)
        for s in steps:
            if key in s["setting"]:
                s["setting"] = {k: v for k, v in {**s["setting"], key: best}.items()
                                if not (k == key and best == now)}
        steps = [s for s in steps if s["setting"]]
    cur = st
    for s in steps:
        cur = update(cur, **s["setting"])
        key = s.pop("key", None) or next(iter(s["setting"]))
        s.update(change=says(key, s["setting"]), total_gb=need(shape, cur, cap))
    return [{"change": s["change"], "setting": s["setting"], "total_gb": s["total_gb"]} for s in steps]


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


MAX_BATCH = 128  # the largest micro-batch the limits look for


def largest(shape: Shape, st: RunSpec, cap: float) -> dict[str, int | None]:
    """The largest micro-batch and the longest length (each to the unit; the length up to the
    model's context) that fit `cap` GB, the other setting as it is."""
    return {"max_micro_batch": most(shape, st, cap, "micro_batch", 1, MAX_BATCH),
            "max_seq_len": longest(shape, st, cap, limit=max(shape.context, 128))}


def longest(shape: Shape, st: RunSpec, cap: float, limit: int = 4_194_304) -> int | None:
    """The longest sequence (tokens, batch as set) that fits `cap` GB."""
    return most(shape, st, cap, "max_len", 16, limit)


def pick_preset(cap: float | None, method: str, objective: str = "sft") -> str | None:
    """The largest GPU preset that fits `cap` GB, for the same training objective (and adapter
    method when there is one)."""
    from ..presets import list_presets

    if cap is None:
        return None
    ok = [p for p in list_presets() if 0 < p.gpu_gb <= cap + 0.5 and p.train.objective == objective]
    if not ok:
        return "cpu-quickstart" + ("" if objective == "sft" else f"-{objective}")
    same = [p for p in ok if p.method == method] or ok
    return max(same, key=lambda p: p.gpu_gb).name


def report(shape: Shape, st: RunSpec, gpu: str | None = None, vram_gb: float | None = None) -> dict[str, Any]:
    cap = gpu_capacity(gpu, vram_gb)
    # the plan and the limits may use every lever the run may (offloading when it is "auto");
    # the estimate shown is the run as it would train
    st = normalise(st)
    est = estimate(shape, settle(shape, st, cap[1] if cap else None))
    est["fits"] = None
    est["advice"] = []
    if cap:
        name, gb = cap
        est["gpu"] = {"name": name, "usable_gb": round(gb, 2),
                      "label": catalog("gpus").get(name, {}).get("label") or name}
        est["fits"] = fits(shape, st, gb)
        est["headroom_gb"] = round(gb - est["total_gb"], 2)
        est["spare_gb"] = round(spare(est["total_gb"], gb), 2)
        steps = plan(shape, st, gb)
        est["plan"] = steps
        est["plan_settings"] = {k: v for s in steps for k, v in s["setting"].items()}
        est["advice"] = advise(shape, st, gb, steps) or [
            f"Fits with {spare(est['total_gb'], gb):.1f} GB to spare ({HEADROOM_GB:g} GB more is "
            "kept free for the desktop and other programs)."]
        # the limits hold for the settings that fit: the plan's when there is one
        base = planned(st, steps)
        est.update(largest(shape, base, gb))
        est["limits_with_plan"] = bool(steps)
        # the run as the plan leaves it: what "Use these settings" takes to the Train step
        est["planned_total_gb"] = steps[-1]["total_gb"] if steps else est["total_gb"]
        est["fits_with_plan"] = fits(shape, base, gb)
        est["preset"] = pick_preset(gb, st.method, st.train.objective)
    return est


__all__ = ["report", "load_shape"]
