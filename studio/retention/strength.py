"""Adapter strength: how much of the LoRA update a run's adapter applies, after training.

A LoRA adapter adds ΔW = scale·B·A to each adapted weight; strength s gives W + s·ΔW, the
straight line between the base (s = 0) and the tuned model (s = 1). Owns two ways to use it:
`scaled(model, s)` — in memory, for the Compare step's slider and the report's trade-off — and
`apply(run_dir, s)` — the run's adapter itself rewritten with B scaled by s (the original kept in
adapter-full/, or the targeted one of intruders.py when the run has it; the new weights replace the
old in one rename), so every consumer of the adapter (Compare, merge, GGUF, LoRA-GGUF, the adapter
export) uses the chosen strength with no code of its own. DoRA adapters are refused by `apply`:
their magnitude vector makes B·s no longer a straight line to the base.

A run that started from another (--from-run) has its strength on what it added only — the line
runs from the start run's adapter (s = 0) to this one's (s = 1): `apply` and `at` hand those runs
to delta.py, which owns that blend; `scaled` stays the whole-update scaling of a fresh run.
"""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import RunError
from ..paths import RUN

META = "studio_strength"
WEIGHTS = "adapter_model.safetensors"


def current(run_dir: Path) -> float:
    """The strength the run's adapter applies (1.0 unless `apply` changed it): recorded in the
    adapter's own safetensors header, so the weights and their strength change in one rename."""
    from safetensors import safe_open

    try:
        with safe_open(str(Path(run_dir) / RUN.adapter / WEIGHTS), "pt") as f:
            return float((f.metadata() or {}).get(META, 1.0))
    except (OSError, ValueError, TypeError):  # no adapter yet, or an unreadable one
        return 1.0


def check(value: float) -> float:
    import math

    if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0.0 <= value <= 2.0:
        raise RunError(f"Adapter strength {value!r} is out of range: give a number from 0 (the base "
                       "model) to 1 (the tuned model as trained); up to 2 exaggerates the change.")
    return float(value)


@contextmanager
def at(model, run_dir: Path, value: float) -> Iterator[None]:
    """`model`, holding the run's adapter at the strength it keeps now, at strength `value`
    instead while the block runs (in memory). A fresh run's whole update is scaled (callers
    refuse a run kept at 0 first); a --from-run run's second update only (delta.py)."""
    from . import delta

    start = delta.start_dir(run_dir)
    if start is None:
        with scaled(model, value / current(run_dir)):
            yield
        return
    full, cfg = delta.read(as_trained(run_dir))
    with delta.swapped(model, full, delta.read(start)[0], cfg, value):
        yield


def as_trained(run_dir: Path) -> Path:
    """The adapter that strength is applied to: the targeted one (intruders.py), else the one
    as trained (adapter-full/ once a strength was set, else adapter/ itself)."""
    run_dir = Path(run_dir)
    for d in (run_dir / RUN.adapter_targeted, run_dir / RUN.adapter_full):
        if d.is_dir():
            return d
    return run_dir / RUN.adapter


@contextmanager
def scaled(model, factor: float) -> Iterator[None]:
    """Every active LoRA layer's update multiplied by `factor` while the block runs."""
    from peft.tuners.lora import LoraLayer

    saved = []
    for m in model.modules():
        if isinstance(m, LoraLayer):
            for name in m.active_adapters:
                if name in m.scaling:
                    saved.append((m, name, m.scaling[name]))
                    m.scaling[name] = m.scaling[name] * factor
    try:
        yield
    finally:
        for m, name, value in saved:
            m.scaling[name] = value


def finished_lora(run_dir: Path, doing: str, dora: str) -> tuple[Path, Path, dict]:
    """A run's finished adapter (its folder, the as-trained copy's folder, its config), refused
    with `dora` when it is DoRA and with a message when it is not finished."""

    adapter, full = Path(run_dir) / RUN.adapter, Path(run_dir) / RUN.adapter_full
    if not (adapter / RUN.complete).exists():
        raise RunError(f"Run {Path(run_dir).name} has no finished adapter {doing}.")
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    if cfg.get("use_dora"):
        raise RunError(dora)
    return adapter, full, cfg


def apply(run_dir: Path, value: float) -> Path:
    """Rewrite the run's adapter at strength `value` (from the original, kept in adapter-full/);
    written whole or not at all."""
    from safetensors.torch import load_file, save_file

    value = check(value)
    run_dir = Path(run_dir)
    old = run_dir / f".{RUN.adapter}-old"  # _apply_second stopped between its two renames
    if old.is_dir() and not (run_dir / RUN.adapter).exists():
        old.rename(run_dir / RUN.adapter)
    adapter, full, cfg = finished_lora(run_dir, "to set a strength on", (
        "Adapter strength works for LoRA and rsLoRA adapters, not DoRA (its magnitude vector makes "
        "a scaled update something other than a blend with the base model). Use Compare's slider "
        "to look, or train again with fewer steps."))
    if not full.exists():  # the first change: keep the adapter as trained
        tmp = run_dir / f".{RUN.adapter_full}-tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(adapter, tmp)
        tmp.rename(full)
    from . import delta

    if delta.start_dir(run_dir) is not None:
        return _apply_second(run_dir, value)
    tensors = load_file(str(as_trained(run_dir) / WEIGHTS))
    tmp = adapter / f".{WEIGHTS}.tmp"
    save_file({k: (v * value).to(v.dtype) if "lora_B" in k else v for k, v in tensors.items()},
              str(tmp), metadata={"format": "pt", META: repr(value)})
    os.replace(tmp, adapter / WEIGHTS)
    return adapter


def _apply_second(run_dir: Path, value: float) -> Path:
    """A --from-run run's adapter at strength `value` of what it added (delta.py): the rank
    changes with it, so weights and config are written as a new folder that replaces adapter/
    (adapter-old/ for a moment; a crash in between is undone by the next call)."""
    from safetensors.torch import save_file

    from . import delta

    adapter, old = run_dir / RUN.adapter, run_dir / f".{RUN.adapter}-old"
    full, cfg = delta.read(as_trained(run_dir))
    if value == 1.0:  # as trained, at its own rank
        tensors = full
    else:
        tensors, cfg = delta.blended(full, delta.read(delta.start_dir(run_dir))[0], cfg, value)
    tmp = run_dir / f".{RUN.adapter}-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(adapter, tmp)
    save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pt", META: repr(value)})
    (tmp / delta.CONFIG).write_text(json.dumps(cfg, indent=2))
    shutil.rmtree(old, ignore_errors=True)
    adapter.rename(old)
    tmp.rename(adapter)
    shutil.rmtree(old, ignore_errors=True)
    return adapter
