"""Knobs: dataclass fields that carry their help text, type, range and choices, and strict
building of such dataclasses from plain data (a preset file, config.yaml, `--set key=value`).

Owns the machinery — `knob()`, checking one value against its field, building a dataclass tree,
reading override values as YAML scalars — not the schema itself (the run spec's knobs live in
spec.py, a recipe's in data/recipes.py). Knows nothing of runs, models or the store.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import field, fields
from typing import Any

from .errors import PresetError


def knob(default: Any, help: str, *, min: float | None = None, max: float | None = None,
         choices: tuple | None = None, flat: str | None = None, flag_choices: tuple | None = None) -> Any:
    """A dataclass field carrying its help text and allowed values (the one place they live).
    `flat` names the field in the estimator's flat view (CLI flag `--seq-len`, JSON `seq_len`)."""
    meta = {"help": help, "min": min, "max": max, "choices": choices, "flat": flat,
            "flag_choices": flag_choices}
    return field(default=default, metadata=meta)



# ---- validation -----------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    return {int: "a whole number", float: "a number", bool: "true or false", str: "text"}.get(
        tp, str(tp))


def check_value(where: str, key: str, f: dataclasses.Field, value: Any) -> Any:
    """`value` for field `f`, checked for type, choices and range; a PresetError names `key`."""
    tp = {"int": int, "float": float, "bool": bool, "str": str}[f.type] if isinstance(f.type, str) else f.type
    meta = f.metadata
    if tp is str and isinstance(value, bool) and {"on", "off"} <= set(meta.get("choices") or ()):
        value = "on" if value else "off"  # YAML 1.1 reads a bare on/off as true/false
    ok = (isinstance(value, bool) if tp is bool else
          isinstance(value, int) and not isinstance(value, bool) if tp is int else
          isinstance(value, (int, float)) and not isinstance(value, bool) if tp is float else
          isinstance(value, str))
    if not ok:
        raise PresetError(f"{where}: '{key}' must be {_type_name(tp)}, got {value!r}. {meta['help']}")
    if tp is float:
        value = float(value)
        if not math.isfinite(value):
            raise PresetError(f"{where}: '{key}' is {value!r}; it must be a finite number. "
                              f"{meta['help']}")
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
        sub = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(sub):
            kwargs[name] = build(sub, value, where, f"{prefix}{name}.")
        else:
            kwargs[name] = check_value(where, prefix + name, f, value)
    return cls(**kwargs)



# ---- overrides ------------------------------------------------------------------------------
def yaml_loader():
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
        return yaml.load(text, Loader=yaml_loader())
    except yaml.YAMLError as e:
        raise PresetError(f"Cannot read the value {text!r} ({getattr(e, 'problem', e)}); write "
                          "numbers like 2e-4, true/false, or plain text.") from None


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

