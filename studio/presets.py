"""Training presets: presets/*.yaml → frozen dataclasses, validated strictly.

Owns the run-setting schema (every knob with its help text, type and allowed range, written once
here), loading and validating preset files, and applying dotted overrides (`train.lr=2e-4`).
An unknown key, a wrong type or an out-of-range value is a PresetError naming the file, the key
and what is allowed. Does not know about models or training code.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import PresetError

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"


def knob(default: Any, help: str, *, min: float | None = None, max: float | None = None,
         choices: tuple | None = None) -> Any:
    """A dataclass field carrying its help text and allowed values (the one place they live)."""
    meta = {"help": help, "min": min, "max": max, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class LoraSettings:
    rank: int = knob(16, "LoRA rank r: size of the low-rank update. 8–32 is typical; higher "
                         "learns more and uses more memory.", min=1, max=1024)
    alpha: float = knob(32.0, "LoRA alpha: the update is scaled by alpha/r (or alpha/sqrt(r) with "
                              "rsLoRA). Twice the rank is a common choice.", min=0.0)
    dropout: float = knob(0.0, "Dropout on the LoRA input during training (0 disables).",
                          min=0.0, max=0.9)
    targets: str = knob("all-linear", "Which layers get adapters: 'all-linear' or a comma list "
                                      "such as 'q,k,v,o,gate,up,down'.")
    rslora: bool = knob(False, "rsLoRA: scale by alpha/sqrt(r), which keeps high ranks stable.")
    dora: bool = knob(False, "DoRA: learn a magnitude per output as well as the direction "
                             "(slower, sometimes better at low rank).")


@dataclass(frozen=True)
class QuantSettings:
    bits: int = knob(4, "Bits for the frozen base weights with QLoRA (4 or 8).", choices=(4, 8))
    type: str = knob("nf4", "4-bit code book: nf4 (normal float, usually better) or fp4.",
                     choices=("nf4", "fp4"))
    double_quant: bool = knob(True, "Quantize the per-block scales too (saves ~0.4 bit/param).")


@dataclass(frozen=True)
class TrainSettings:
    lr: float = knob(2e-4, "Peak learning rate. LoRA likes 1e-4–1e-3; too high forgets what "
                           "the model knew, too low changes nothing.", min=1e-8, max=1.0)
    max_steps: int = knob(0, "Optimizer steps to run; 0 means run `epochs` passes over the data.",
                          min=0, max=10_000_000)
    epochs: float = knob(1.0, "Passes over the training split (used when max_steps is 0).",
                         min=0.01, max=1000)
    micro_batch: int = knob(4, "Examples per forward pass. Lower it first when memory is short.",
                            min=1, max=4096)
    grad_accum: int = knob(1, "Micro-batches accumulated per optimizer step "
                              "(effective batch = micro_batch × grad_accum).", min=1, max=4096)
    max_len: int = knob(512, "Longest example in tokens; longer ones are truncated.",
                        min=16, max=1_048_576)
    warmup_ratio: float = knob(0.05, "Fraction of steps spent warming the learning rate up.",
                               min=0.0, max=0.5)
    schedule: str = knob("cosine", "Learning-rate schedule after warmup.",
                         choices=("cosine", "linear", "constant"))
    weight_decay: float = knob(0.0, "AdamW weight decay.", min=0.0, max=1.0)
    optimizer: str = knob("adamw", "Optimizer: adamw, adamw-8bit or paged-adamw-8bit "
                                   "(bitsandbytes, GPU), or sgd.",
                          choices=("adamw", "adamw-8bit", "paged-adamw-8bit", "sgd"))
    seed: int = knob(42, "Random seed for data order, split and adapter init.", min=0)
    grad_ckpt: bool = knob(False, "Gradient checkpointing: recompute activations in the backward "
                                  "pass; ~30% slower, much less activation memory.")
    packing: bool = knob(True, "Padding-free batching: examples are laid end to end with their "
                               "own position ids, so no compute is spent on padding and no "
                               "example attends to another.")
    dtype: str = knob("auto", "Compute dtype: auto (bf16 on GPUs that have it, else fp16 on "
                              "CUDA, fp32 on CPU), bf16, fp16 or fp32.",
                      choices=("auto", "bf16", "fp16", "fp32"))
    log_every: int = knob(1, "Write a progress event every N steps.", min=1)
    eval_every: int = knob(0, "Evaluate on the validation split every N steps (0: only at the end).",
                           min=0)
    save_every: int = knob(25, "Save a checkpoint every N steps.", min=1)
    keep_checkpoints: int = knob(3, "How many recent checkpoints to keep (the final one is always "
                                    "kept).", min=1, max=100)


@dataclass(frozen=True)
class Preset:
    name: str = knob("", "Short name, the file's stem.")
    description: str = knob("", "Who this preset is for, in a sentence or two.")
    model: str = knob("smollm2-135m-instruct", "Default model: registry name, local folder, "
                                               ".gguf file or hub id.")
    method: str = knob("lora", "lora: 16/32-bit frozen base; qlora: 4/8-bit frozen base "
                               "(needs bitsandbytes on the device).", choices=("lora", "qlora"))
    method_fallback: bool = knob(True, "If QLoRA cannot run on this device (no bitsandbytes "
                                       "support), train with LoRA instead and say so; false "
                                       "refuses to start.")
    gpu_gb: float = knob(0.0, "Smallest GPU memory (GB) this preset is meant for; 0 = CPU.",
                         min=0.0, max=2048)
    lora: LoraSettings = field(default_factory=LoraSettings)
    quant: QuantSettings = field(default_factory=QuantSettings)
    train: TrainSettings = field(default_factory=TrainSettings)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _yaml_loader():
    """PyYAML's SafeLoader, taught that 1e-3 is a float (YAML 1.1 wants '1.0e-3')."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:\d[\d_]*)?(?:\.\d*)?[eE][-+]?\d+$|^[-+]?\d[\d_]*\.\d*$|^[-+]?\.\d+$"),
        list("-+0123456789."))
    return Loader


def parse_scalar(text: str) -> Any:
    """Parse one override value the way a preset file would ('2e-4' → 0.0002, 'true' → True)."""
    import yaml

    try:
        return yaml.load(text, Loader=_yaml_loader())
    except yaml.YAMLError as e:
        raise PresetError(f"Cannot read the value {text!r} ({getattr(e, 'problem', e)}); write "
                          "numbers like 2e-4, true/false, or plain text.") from None


def _type_name(tp: Any) -> str:
    return {int: "a whole number", float: "a number", bool: "true or false", str: "text"}.get(
        tp, str(tp))


def _check_value(where: str, key: str, f: dataclasses.Field, value: Any) -> Any:
    tp = {"int": int, "float": float, "bool": bool, "str": str}[f.type] if isinstance(f.type, str) else f.type
    meta = f.metadata
    ok = (isinstance(value, bool) if tp is bool else
          isinstance(value, int) and not isinstance(value, bool) if tp is int else
          isinstance(value, (int, float)) and not isinstance(value, bool) if tp is float else
          isinstance(value, str))
    if not ok:
        raise PresetError(f"{where}: '{key}' must be {_type_name(tp)}, got {value!r}. {meta['help']}")
    if tp is float:
        value = float(value)
    if meta.get("choices") and value not in meta["choices"]:
        allowed = ", ".join(str(c) for c in meta["choices"])
        raise PresetError(f"{where}: '{key}' is {value!r}; allowed: {allowed}.")
    lo, hi = meta.get("min"), meta.get("max")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise PresetError(f"{where}: '{key}' is {value!r}; it must be {rng}. {meta['help']}")
    return value


def build(cls: type, data: Any, where: str, prefix: str = "") -> Any:
    """Build dataclass `cls` from a dict, strictly. `where` names the source for messages."""
    if not isinstance(data, dict):
        raise PresetError(f"{where}: '{prefix.rstrip('.') or 'top level'}' must be a mapping of "
                          f"keys to values, got {type(data).__name__}.")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise PresetError(f"{where}: unknown key '{prefix}{unknown[0]}'. Allowed keys here: "
                          f"{', '.join(known)}.")
    kwargs = {}
    for name, value in data.items():
        f = known[name]
        if dataclasses.is_dataclass(f.default_factory if f.default_factory is not dataclasses.MISSING else None):
            kwargs[name] = build(f.default_factory, value, where, f"{prefix}{name}.")
        else:
            kwargs[name] = _check_value(where, prefix + name, f, value)
    return cls(**kwargs)


def apply_overrides(data: dict[str, Any], overrides: list[str], where: str = "--set") -> dict:
    """Return a copy of `data` with `section.key=value` overrides applied (values parsed as YAML)."""
    import copy

    out = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise PresetError(f"{where}: '{item}' should look like key=value, e.g. train.lr=2e-4.")
        key, text = item.split("=", 1)
        node, parts = out, key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise PresetError(f"{where}: '{key}' goes through a value that is not a section.")
        node[parts[-1]] = parse_scalar(text)
    return out


def load_file(path: Path, overrides: list[str] | None = None) -> Preset:
    import yaml

    path = Path(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_yaml_loader())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise PresetError(f"{path}{line}: not valid YAML ({getattr(e, 'problem', e)}).") from None
    except OSError as e:
        raise PresetError(f"{path}: cannot be read ({e.strerror}).") from None
    data = data if data is not None else {}
    if isinstance(data, dict):
        data.setdefault("name", path.stem)
        if overrides:
            data = apply_overrides(data, overrides)
    return build(Preset, data, str(path))


def preset_dict(preset: Preset, overrides: list[str]) -> Preset:
    """Apply overrides to an already loaded preset (validated again)."""
    return build(Preset, apply_overrides(preset.to_dict(), overrides), "--set")


def list_presets(folder: Path = PRESETS_DIR) -> list[Preset]:
    return [load_file(p) for p in sorted(folder.glob("*.yaml"))]


def get_preset(name: str, folder: Path = PRESETS_DIR) -> Preset:
    path = folder / f"{name}.yaml"
    if not path.exists():
        names = ", ".join(p.stem for p in sorted(folder.glob("*.yaml")))
        raise PresetError(f"No preset named '{name}'. Available: {names}.")
    return load_file(path)


def field_help(cls: type = Preset, prefix: str = "") -> dict[str, str]:
    """Dotted key → help text, for the CLI, the UI `info=` and docs."""
    out = {}
    for f in fields(cls):
        if f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory):
            out.update(field_help(f.default_factory, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = f.metadata.get("help", "")
    return out
