"""Run configuration: preset + dataset version + model + overrides, validated before anything runs.

Owns building the config that is saved as `config.yaml` in the run folder, the pre-flight
checks that fail with a clear message before a child process starts (empty dataset, every
example longer than max length, chat data for a model without a chat template, QLoRA on a
device that cannot do it), and the arithmetic of step counts.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from ..presets import Preset, build, get_preset, preset_dict


def build_config(preset_name: str, dataset: dict[str, Any], model: str | None,
                 overrides: list[str], max_steps: int | None) -> dict[str, Any]:
    preset = get_preset(preset_name)
    if model:
        overrides = [f"model={model}", *overrides]
    if max_steps is not None:
        overrides = [*overrides, f"train.max_steps={max_steps}"]
    p: Preset = preset_dict(preset, overrides) if overrides else preset
    cfg = p.to_dict()
    cfg["preset"] = preset_name
    cfg["overrides"] = list(overrides)
    cfg["dataset"] = {"name": dataset["name"], "version": dataset["version"], "path": dataset["path"],
                      "splits": dataset["stats"].get("splits", {}),
                      "formats": dataset["stats"].get("formats", {})}
    return cfg


def preset_of(cfg: dict[str, Any]) -> Preset:
    body = {k: v for k, v in cfg.items() if k not in ("preset", "overrides", "dataset", "notes")}
    return build(Preset, body, "config.yaml")


def total_steps(cfg: dict[str, Any], n_train: int, world: int = 1) -> int:
    t = cfg["train"]
    if t["max_steps"]:
        return int(t["max_steps"])
    per_step = t["micro_batch"] * t["grad_accum"] * world
    return max(1, math.ceil(t["epochs"] * n_train / per_step))


def preflight(cfg: dict[str, Any], dataset: dict[str, Any], tok, device: str) -> list[str]:
    """Raise on problems that would make the run fail; return notices (e.g. a fallback)."""
    from ..models import qlora_supported

    notes = []
    stats = dataset["stats"]
    n_train = stats.get("splits", {}).get("train", 0)
    if n_train == 0:
        raise DataError(f"Dataset {dataset['name']} v{dataset['version']} has no training examples. "
                        "Prepare it again with more data or a smaller validation fraction.")
    max_len = cfg["train"]["max_len"]
    shortest = stats.get("tokens", {}).get("min", 0)
    if shortest > max_len:
        raise DataError(f"Every example in {dataset['name']} is longer than max length {max_len} "
                        f"tokens (the shortest has {shortest}); nothing would train. Raise "
                        f"train.max_len to at least {stats['tokens'].get('p50', shortest)} or prepare "
                        "the data with a smaller --max-tokens.")
    chat = any(f not in ("text", "paragraphs", "token-windows", "sections") for f in stats.get("formats", {}))
    if chat and not getattr(tok, "chat_template", None):
        raise DataError(f"Dataset {dataset['name']} holds chat examples, but model {cfg['model']} "
                        "has no chat template. Pick an instruct/chat model, or prepare plain-text "
                        "data (recipe paragraphs or token-windows).")
    if cfg["method"] == "qlora":
        ok, why = qlora_supported(device)
        if not ok:
            if not cfg.get("method_fallback", True):
                raise ConfigError(f"QLoRA was requested but cannot run here: {why}. Use method "
                                  "lora, or set method_fallback=true to fall back automatically.")
            cfg["method"] = "lora"
            notes.append(f"QLoRA is not available on {device} ({why}); training with LoRA instead.")
    if device == "cpu" and cfg["train"]["optimizer"] in ("paged-adamw-8bit",):
        cfg["train"]["optimizer"] = "adamw"
        notes.append("Paged 8-bit AdamW needs a CUDA GPU; using AdamW on CPU.")
    if device == "cpu" and cfg["train"]["dtype"] in ("fp16",):
        cfg["train"]["dtype"] = "fp32"
        notes.append("fp16 training needs a GPU; using fp32 on CPU.")
    return notes


def dataset_path(cfg: dict[str, Any]) -> Path:
    return Path(cfg["dataset"]["path"])
