"""Training presets: presets/*.yaml → RunSpec, validated strictly.

Owns reading preset files (the YAML boundary for presets), listing them and finding one by name.
The schema itself — every knob with its help, type and range — lives on the run spec (spec.py).
An unknown key, a wrong type or an out-of-range value is a PresetError naming the file, the key
and what is allowed. Does not know about models or training code.
"""
from __future__ import annotations

from pathlib import Path

from .errors import PresetError
from .knobs import yaml_loader
from .spec import LAYERS, TRAINABLE_METHODS, RunSpec, apply_overrides, build
from . import paths

PRESETS_DIR = paths.PRESETS


def check_trainable(spec: RunSpec, where: str) -> RunSpec:
    """Presets and runs train adapters; full fine-tuning exists only as an estimate."""
    if spec.method not in TRAINABLE_METHODS:
        raise PresetError(f"{where}: 'method' is {spec.method!r}; allowed: "
                          f"{', '.join(TRAINABLE_METHODS)} (full fine-tuning is only estimated, "
                          "not trained, here).")
    if not LAYERS.match(spec.lora.layers.strip().lower()):
        raise PresetError(f"{where}: 'lora.layers' is {spec.lora.layers!r}; use all, middle, or a "
                          "range of layer numbers such as 8-20.")
    return spec


def load_file(path: Path, overrides: list[str] | None = None) -> RunSpec:
    import yaml

    path = Path(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml_loader())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise PresetError(f"{path}{line}: not valid YAML ({getattr(e, 'problem', e)}).") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PresetError(f"{path}: cannot be read ({getattr(e, 'strerror', None) or e}).") from None
    data = data if data is not None else {}
    if isinstance(data, dict):
        data.setdefault("name", path.stem)
        if overrides:
            data = apply_overrides(data, overrides)
    return check_trainable(build(RunSpec, data, str(path)), str(path))


def list_presets(folder: Path = PRESETS_DIR) -> list[RunSpec]:
    return [load_file(p) for p in sorted(folder.glob("*.yaml"))]


def get_preset(name: str, folder: Path = PRESETS_DIR) -> RunSpec:
    path = folder / f"{name}.yaml"
    if not name or "/" in name or "\\" in name or not path.exists():
        names = ", ".join(p.stem for p in sorted(folder.glob("*.yaml")))
        raise PresetError(f"No preset named '{name}'. Available: {names}.")
    return load_file(path)
