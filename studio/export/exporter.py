"""Export formats (a registry) and the flow: source → files → optional parity → store.

Owns choosing the source (a run's tuned model, or any supported model without a run), default
output paths under $STUDIO_HOME/exports/, output-path and free-disk checks before writing,
producing each format (adapter folder, merged safetensors, GGUF f32…q6_k, LoRA GGUF, Ollama
folder), recording the export with size, time and parity numbers, and registering nothing when
a step fails (every file is written under a temp name and renamed when complete).
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import ExportError
from ..models import folder_size
from ..train.checkpoints import MARK
from . import gguf_writer, lora_gguf, modelfile, quantize

GGUF_QUANTS = ("f32", "f16", "bf16", "q8_0", "q4_k_m", "q5_k_m", "q6_k")
BYTES_PER_PARAM = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 1.07, "q6_k": 0.83,
                   "q5_k_m": 0.71, "q4_k_m": 0.61}
FORMATS: dict[str, str] = {
    "adapter": "PEFT adapter folder (safetensors); loads with peft.PeftModel.from_pretrained",
    "merged": "the tuned model with the adapter merged in, as an HF folder (safetensors)",
    "gguf": "one GGUF file for llama.cpp, Ollama and LM Studio (choose --quant)",
    "lora-gguf": "the adapter alone as a GGUF, applied over the base GGUF with --lora",
    "ollama": "a folder with a GGUF and a Modelfile for `ollama create`",
}


def check_request(fmt: str, quant: str | None, run_id: str | None) -> str:
    if fmt not in FORMATS:
        raise ExportError(f"Unknown format '{fmt}'. Choose one of: {', '.join(FORMATS)}.")
    if fmt in ("adapter", "merged", "lora-gguf") and not run_id:
        raise ExportError(f"Format {fmt} needs a training run (--run RUN_ID); a plain model has "
                          "no adapter. Use --format gguf or ollama with --model.")
    quant = (quant or ("q8_0" if fmt in ("gguf", "ollama") else "f32")).lower()
    allowed = GGUF_QUANTS if fmt in ("gguf", "ollama") else ("f32", "f16")
    if quant not in allowed:
        raise ExportError(f"Unknown quant '{quant}' for {fmt}. Valid: {', '.join(allowed)}.")
    if quant in quantize.K_QUANTS:
        from ..models import require_llama_cpp

        require_llama_cpp()
    return quant


def check_out(out: Path, need_bytes: int, is_dir: bool) -> None:
    parent = out.parent
    if not parent.exists():
        raise ExportError(f"The folder {parent} does not exist. Create it first or choose another "
                          "--out.")
    if not os.access(parent, os.W_OK):
        raise ExportError(f"The folder {parent} is not writable. Choose another --out.")
    if is_dir and out.exists() and any(out.iterdir()) and not (out / ".studio-export").exists():
        raise ExportError(f"{out} already exists and holds other files; choose an empty or new "
                          "folder so nothing of yours is overwritten.")
    free = shutil.disk_usage(parent).free
    if need_bytes > free:
        raise ExportError(f"Not enough disk space in {parent}: this export needs about "
                          f"{need_bytes / 1e9:.2f} GB and {free / 1e9:.2f} GB are free. Free some "
                          "space or choose another --out.")


def replace_dir(tmp: Path, final: Path) -> None:
    (tmp / ".studio-export").write_text("complete")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def tuned_model(base_folder: Path, adapter: Path | None, device: str = "cpu"):
    """The model to export: base + adapter merged (fp32 on CPU), or the base alone."""
    from ..models import load_model

    model = load_model(base_folder, device, "fp32")
    if adapter is None:
        return model
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()


def write_gguf(base_folder: Path, model, out: Path, quant: str, name: str,
               progress: Callable | None = None) -> Path:
    if quant in gguf_writer.QUANTS:
        return gguf_writer.write(base_folder, gguf_writer.state_from_model(model), out, quant,
                                 name, progress)
    f16 = out.with_name(out.stem + f".f16-tmp-{os.getpid()}.gguf")
    try:
        gguf_writer.write(base_folder, gguf_writer.state_from_model(model), f16, "f16", name, progress)
        return quantize.quantize(f16, out, quant)
    finally:
        f16.unlink(missing_ok=True)


def run(fmt: str, quant: str, *, base_folder: Path, adapter: Path | None, out: Path, name: str,
        tok, verify: bool, base_gguf: Callable[[], Path] | None = None,
        progress: Callable | None = None) -> dict[str, Any]:
    """Produce one export; returns path, bytes, seconds and (if verified) parity."""
    t0 = time.time()
    result: dict[str, Any] = {"format": fmt, "quant": quant}
    parity_model = None
    if fmt == "adapter":
        tmp = out.with_name(out.name + f".partial-{os.getpid()}")
        shutil.copytree(adapter, tmp, ignore=shutil.ignore_patterns(MARK))
        replace_dir(tmp, out)
    elif fmt == "merged":
        tmp = out.with_name(out.name + f".partial-{os.getpid()}")
        model = tuned_model(base_folder, adapter)
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        replace_dir(tmp, out)
    elif fmt == "gguf":
        parity_model = tuned_model(base_folder, adapter)
        write_gguf(base_folder, parity_model, out, quant, name, progress)
    elif fmt == "lora-gguf":
        lora_gguf.write(adapter, base_folder, out, quant)
    elif fmt == "ollama":
        tmp = out.with_name(out.name + f".partial-{os.getpid()}")
        tmp.mkdir(parents=True)
        parity_model = tuned_model(base_folder, adapter)
        gguf_name = f"{name}-{quant}.gguf"
        write_gguf(base_folder, parity_model, tmp / gguf_name, quant, name, progress)
        modelfile.write(tmp, gguf_name, tok)
        replace_dir(tmp, out)
        result["modelfile"] = str(out / "Modelfile")
        result["gguf"] = str(out / gguf_name)
    result.update(path=str(out), bytes=folder_size(out), seconds=round(time.time() - t0, 2))
    if verify and fmt in ("gguf", "ollama", "lora-gguf"):
        from ..models import require_llama_cpp
        from . import parity

        require_llama_cpp()
        if progress:
            progress(0.9, "checking parity with llama.cpp")
        if fmt == "lora-gguf":
            from peft import PeftModel

            from ..models import load_model

            tuned = PeftModel.from_pretrained(load_model(base_folder, "cpu", "fp32"), str(adapter))
            result["parity"] = parity.check(base_gguf(), tuned, tok, "f32", lora_path=out)
        else:
            path = Path(result.get("gguf", out))
            result["parity"] = parity.check(path, parity_model, tok, quant)
    return result


def usage(result: dict[str, Any], name: str) -> dict[str, str]:
    """The exact commands to use an export."""
    p = result["path"]
    if result["format"] == "gguf":
        return {"llama.cpp": f'llama-cli -m "{p}" -cnv',
                "python": f'from llama_cpp import Llama; Llama("{p}")'}
    if result["format"] == "ollama":
        return {"ollama": f'cd "{p}" && ollama create {name} -f Modelfile && ollama run {name}'}
    if result["format"] == "lora-gguf":
        return {"llama.cpp": f'llama-cli -m BASE.gguf --lora "{p}" -cnv'}
    if result["format"] == "adapter":
        return {"python": f'PeftModel.from_pretrained(base_model, "{p}")'}
    return {"python": f'AutoModelForCausalLM.from_pretrained("{p}")'}
