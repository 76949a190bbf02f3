"""Intruder dimensions: the new directions a LoRA update adds, counted and scaled down.

"LoRA vs Full Fine-tuning: An Illusion of Equivalence" (Shuttleworth et al.) finds that a LoRA
update adds new high-ranking singular vectors to a weight matrix — directions the pretrained
matrix did not have, "intruder dimensions" — and that forgetting follows them; scaling down their
singular values gives back pre-trained knowledge while keeping most of the new task. Owns, per
adapted layer: the update ΔW = s·B·A in its singular directions (from the rank-r core, never the
full matrix), the tuned matrix's top singular vectors compared with the base matrix's (an
intruder when its largest |cosine| with them stays under EPS), the update directions that make
the intruders, and a rewritten adapter — still rank r, still plain LoRA, so every export takes it
— in which those directions are scaled by `train.intruder_scale`. `count` is what the report
shows; `apply` keeps the adapter as trained in adapter-full/ and the scaled one in
adapter-targeted/, from which the adapter strength (strength.py) is then applied.

PEFT 0.21's `reduce_intruder_dimension` is not used: it works on a loaded PeftModel, takes full
SVDs of every dense W and W + ΔW (against all the base's singular vectors, not its top 64), scales
the merged matrix's intruder components by `mitigation_lambda` and refits ΔW to rank r by another
dense SVD, and only prints its counts. We need the counts for the report, read the adapter files,
never form ΔW (rank-r core, top vectors only: cheap on a CPU) and scale the update's own
directions, so the result is exactly the rank-r adapter with no refit.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any
from ..paths import RUN

TOP = 10      # the tuned matrix's top singular vectors examined (as the paper does)
BASE_TOP = 64  # compared with the base matrix's top singular vectors
EPS = 0.5     # largest |cosine| with any of them under this: an intruder
SHARE = 0.5   # an update direction is scaled when it carries an intruder this much


def _top_left(w, k: int):
    """The top-k left singular vectors of `w` (exact for small matrices, randomized for big).
    The randomized ones oversample 3× with 6 power iterations: with the embedded model's
    matrices put through this path, k + 10 columns and 2 iterations found 566 intruders
    where the exact vectors find none, 2× and 4 found 36, 3× and 6 the same as exact."""
    import torch

    k = min(k, *w.shape)
    if min(w.shape) > 1024:
        with torch.random.fork_rng(devices=[]):  # the same counts every time, whatever ran before
            torch.manual_seed(0)
            return torch.svd_lowrank(w.float(), q=min(3 * k + 10, *w.shape), niter=6)[0][:, :k]
    # exact, from the eigenvectors of the smaller Gram matrix (several times faster than a full
    # SVD of the matrix on a CPU, and only the top k are needed); in float32, half the time of
    # float64 with the same counts on a trained adapter (all 210 layers of the embedded model)
    w = w.float()
    if w.shape[0] <= w.shape[1]:
        return torch.linalg.eigh(w @ w.t())[1][:, -k:].flip(1)
    v = torch.linalg.eigh(w.t() @ w)[1][:, -k:].flip(1)
    u = w @ v  # each column's own length, not √eigenvalue: no blow-up where the rank runs out
    return u / u.norm(dim=0).clamp_min(1e-30)


def directions(a, b, s: float):
    """ΔW = s·B·A as (u [out, r], σ [r], v [in, r]), from QR factors and an r×r SVD."""
    import torch

    qb, rb = torch.linalg.qr(b.float())
    qa, ra = torch.linalg.qr(a.float().t())
    u, sig, vh = torch.linalg.svd(rb @ ra.t())
    return qb @ u, sig * s, qa @ vh.t()


def module(w0, a, b, s: float) -> dict[str, Any]:
    """One adapted layer: its update's directions, which tuned top singular vectors intrude, and
    how much of each update direction goes into them."""
    import torch

    u, sig, v = directions(a, b, s)
    w = w0.float()
    tuned = _top_left(w + (u * sig) @ v.t(), TOP)
    base = _top_left(w, BASE_TOP)
    cos = (tuned.t() @ base).abs().max(dim=1).values
    intruders = tuned[:, cos < EPS]
    share = (u.t() @ intruders).abs().max(dim=1).values if intruders.shape[1] else torch.zeros_like(sig)
    return {"u": u, "sig": sig, "v": v, "intruders": int(intruders.shape[1]), "share": share}


def lora_modules(tensors: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Adapted layer prefix → (its lora_A key, its lora_B key) in an adapter's tensors."""
    out = {}
    for k in tensors:
        if ".lora_A." in k:
            prefix = k.split(".lora_A.")[0]
            b = k.replace(".lora_A.", ".lora_B.")
            if b in tensors:
                out[prefix] = (k, b)
    return out


def base_weights(model) -> dict[str, Any]:
    """The frozen base weight of every LoRA-adapted layer of a PEFT model, by the adapter's layer
    prefix, as fp32 (4-bit QLoRA weights dequantized)."""
    from peft.tuners.lora import LoraLayer

    out = {}
    for name, m in model.named_modules():
        if isinstance(m, LoraLayer):
            w = m.get_base_layer().weight
            if hasattr(w, "quant_state"):  # bitsandbytes 4-bit
                import bitsandbytes.functional as bnbf

                w = bnbf.dequantize_4bit(w.data, w.quant_state)
            out[name.removeprefix("base_model.model.")] = w.detach().float()
    return out


def base_weight(base_state, prefix: str):
    """The base weight for an adapter's layer prefix (the adapter's names carry PEFT's
    base_model.model. prefix)."""
    return base_state.get(prefix.removeprefix("base_model.model."))


def scaling(config: dict[str, Any]) -> float:
    r, alpha = config["r"], config["lora_alpha"]
    return alpha / (r ** 0.5) if config.get("use_rslora") else alpha / r


def analyse(adapter: Path, base_state) -> tuple[dict[str, dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Every adapted layer of `adapter` (a PEFT folder) against the base weights."""
    from safetensors.torch import load_file

    cfg = json.loads((Path(adapter) / "adapter_config.json").read_text())
    tensors = load_file(str(Path(adapter) / "adapter_model.safetensors"))
    s = scaling(cfg)
    found = {}
    for prefix, (ka, kb) in lora_modules(tensors).items():
        w0 = base_weight(base_state, prefix)
        if w0 is not None:
            found[prefix] = module(w0, tensors[ka], tensors[kb], s)
    return found, tensors, cfg


def count(adapter: Path, base_state) -> dict[str, Any]:
    """The report's figures: intruder dimensions in all, and in how many adapted layers."""
    found, _, _ = analyse(adapter, base_state)
    per = {p: m["intruders"] for p, m in found.items()}
    return {"intruders": sum(per.values()), "layers_with": sum(1 for n in per.values() if n),
            "layers": len(per), "top": TOP, "eps": EPS}


def rescaled(found, tensors, cfg, value: float) -> tuple[dict[str, Any], int]:
    """The adapter's tensors with the update directions that carry intruders scaled by `value`."""
    import torch

    s = scaling(cfg)
    out = dict(tensors)
    n = 0
    for prefix, m in found.items():
        scale = torch.where(m["share"] > SHARE, torch.full_like(m["sig"], value), torch.ones_like(m["sig"]))
        n += int((scale != 1).sum())
        root = (m["sig"] * scale / s).clamp(min=0).sqrt()
        ka, kb = lora_modules(tensors)[prefix]
        out[kb] = (m["u"] * root).to(tensors[kb].dtype).contiguous()          # [out, r]
        out[ka] = (root.unsqueeze(1) * m["v"].t()).to(tensors[ka].dtype).contiguous()  # [r, in]
    return out, n


def apply(run_dir: Path, base_state, value: float) -> dict[str, Any]:
    """Keep the run's adapter with its intruding update directions scaled by `value`
    (adapter-targeted/, from the adapter as trained in adapter-full/), then put its strength on
    it again. Returns the counts before and after."""
    from safetensors.torch import save_file

    from .strength import WEIGHTS, current, finished_lora

    run_dir = Path(run_dir)
    adapter, full, cfg = finished_lora(run_dir, "to scale", (
        "Targeted strength works for LoRA and rsLoRA adapters, not DoRA (its magnitude vector is "
        "no sum of singular directions)."))
    strength = current(run_dir)
    if not full.exists():
        tmp = run_dir / f".{RUN.adapter_full}-tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(adapter, tmp)
        tmp.rename(full)
    found, tensors, cfg = analyse(full, base_state)
    before = sum(m["intruders"] for m in found.values())
    new, scaled = rescaled(found, tensors, cfg, value)
    tmp = run_dir / f".{RUN.adapter_targeted}-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(full, tmp)
    save_file(new, str(tmp / WEIGHTS), metadata={"format": "pt", "studio_intruder_scale": repr(value)})
    shutil.rmtree(run_dir / RUN.adapter_targeted, ignore_errors=True)
    tmp.rename(run_dir / RUN.adapter_targeted)
    from .strength import apply as set_strength

    set_strength(run_dir, strength)
    return {"intruders": before, "directions_scaled": scaled, "scale": value}
