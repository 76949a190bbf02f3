"""Export formats as records, and the writers behind them.

Owns the format registry — each `ExportFormat` says whether it needs a run, writes a folder or
a file, which quantizations it takes, its name suffix, its size per parameter, its writer, the
commands that use it and whether llama.cpp can verify it — plus output-path and free-disk
checks and the atomic writers (every file or folder is written under a temp name and renamed
when complete, so a failed export leaves nothing registered). Choosing the source and recording
the export is service.py.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from ..errors import ExportError
from ..faults import crash_point, fail_point
from ..models.registry import folder_size
from . import modelfile, quantize
from ..paths import RUN

GGUF_QUANTS = ("f32", "f16", "bf16", "q8_0", "q4_k_m", "q5_k_m", "q6_k")
LORA_QUANTS = ("f32", "f16")
# Bytes per parameter of each GGUF type: 8-bit codes + an f16 scale per 32 (q8_0 ≈ 8.5 bits);
# the k-quant figures are llama.cpp's reported bits per weight for 7B models.
BYTES_PER_PARAM = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 1.07, "q6_k": 0.83,
                   "q5_k_m": 0.71, "q4_k_m": 0.61}
EXPORT_MARK = ".studio-export"


@dataclass(frozen=True)
class Job:
    """One export to write: the base model's folder, the run's adapter (or None), the target."""
    base_folder: Path
    adapter: Path | None
    out: Path
    quant: str
    name: str
    tok: Any
    progress: Callable | None = None
    reuse: tuple[Path, Any] | None = None  # (a GGUF already exported of the same model, its parity)


def replace_dir(tmp: Path, final: Path) -> None:
    (tmp / EXPORT_MARK).write_text("complete")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def partial(out: Path) -> Path:
    return out.with_name(out.name + f".partial-{os.getpid()}")


def tuned_model(base_folder: Path, adapter: Path | None, device: str = "cpu"):
    """The model to export: base + adapter merged (fp32 on CPU), or the base alone."""
    from ..models.registry import load_model

    model = load_model(base_folder, device, "fp32")
    if adapter is None:
        return model
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()


SAVE_DTYPE = {"f32": "float32", "bf16": "bfloat16"}  # else float16: what the converter reads


def gguf_source(job: Job, model, quant: str, work: Path) -> Path:
    """The HF folder the converter reads: the base model's own folder, or the merged model
    saved (in the dtype the GGUF gets) beside the output, with the base's tokenizer files."""
    if job.adapter is None:
        return job.base_folder
    import torch

    folder = work / "merged"
    dtype = getattr(torch, SAVE_DTYPE.get(quant, "float16"))
    state = {k: v.to(dtype) for k, v in model.state_dict().items()}  # a copy: parity needs the model as is
    if getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    model.save_pretrained(folder, state_dict=state, safe_serialization=True)
    del state
    job.tok.save_pretrained(folder)
    for f in job.base_folder.iterdir():  # tokenizer.model, generation config, template: as the base has them
        if f.is_file() and f.suffix != ".safetensors" and f.name != "config.json" and not (folder / f.name).exists():
            shutil.copy2(f, folder / f.name)
    return folder


def write_gguf(job: Job, model, out: Path, quant: str) -> Path:
    """llama.cpp's converter writes f32/f16/bf16/q8_0; k-quants are quantized from its f16."""
    import tempfile

    from . import converter

    with tempfile.TemporaryDirectory(prefix=".studio-gguf-", dir=out.parent) as d:
        if job.progress:
            job.progress(0.1, "saving the tuned model for the converter…")
        src = gguf_source(job, model, quant, Path(d))
        if job.progress:
            job.progress(0.3, "llama.cpp's converter is writing the GGUF…")
        if quant in converter.OUTTYPES:
            return converter.convert_model(src, out, quant)
        f16 = converter.convert_model(src, Path(d) / "f16.gguf", "f16")
        if job.progress:
            job.progress(0.6, f"Quantizing to {quant}…")
        return quantize.quantize(f16, out, quant)


# ---- writers: Job → (extra result keys, the model parity compares against, or None) ----------
def _write_adapter(job: Job):
    tmp = partial(job.out)
    shutil.copytree(job.adapter, tmp, ignore=shutil.ignore_patterns(RUN.complete, ".*.tmp"))  # not a half-written strength
    crash_point("export.partial_written")
    replace_dir(tmp, job.out)
    return {}, None


def _write_merged(job: Job):
    tmp = partial(job.out)
    model = tuned_model(job.base_folder, job.adapter)
    model.save_pretrained(tmp, safe_serialization=True)
    job.tok.save_pretrained(tmp)
    crash_point("export.partial_written")
    replace_dir(tmp, job.out)
    return {}, None


def _write_gguf(job: Job):
    if job.reuse:  # the same GGUF was exported already: link it (atomically), parity and all
        tmp = partial(job.out)
        how = link_or_copy(job.reuse[0], tmp)
        os.replace(tmp, job.out)
        return {"gguf_from": str(job.reuse[0]), "gguf_linked": how == "linked"}, None
    model = tuned_model(job.base_folder, job.adapter)
    write_gguf(job, model, job.out, job.quant)
    return {}, model


def _write_lora_gguf(job: Job):
    from . import converter

    converter.convert_lora(job.adapter, job.base_folder, job.out, job.quant)
    return {}, None


def check_lora(adapter: Path) -> dict:
    """What llama.cpp cannot apply as a LoRA GGUF, refused before any work (service.export)."""
    import json

    cfg = json.loads((adapter / "adapter_config.json").read_text())
    problems = []
    if cfg.get("use_dora"):
        problems.append("it is a DoRA adapter (llama.cpp applies plain LoRA only)")
    if cfg.get("modules_to_save"):
        problems.append(f"it trains whole modules ({', '.join(cfg['modules_to_save'])})")
    if cfg.get("trainable_token_indices"):
        problems.append("it trains new token embeddings")
    if problems:
        raise ExportError("This adapter cannot be exported as a LoRA GGUF because "
                          + " and ".join(problems) + ". Export a merged GGUF instead "
                          "(--format gguf), which bakes the adapter into the weights.")
    return cfg


def link_or_copy(src: Path, dst: Path) -> str:
    """A hard link (no second copy on disk; the file stays whole if either name is deleted),
    else a copy where the file system cannot link (another drive, FAT)."""
    try:
        os.link(src, dst)
        return "linked"
    except OSError:
        shutil.copy2(src, dst)
        return "copied"


def _write_ollama(job: Job):
    tmp = partial(job.out)
    tmp.mkdir(parents=True)
    gguf_name = f"{job.name}-{job.quant}.gguf"
    if job.reuse:  # the same GGUF was exported already: link it, and its parity still holds
        how = link_or_copy(job.reuse[0], tmp / gguf_name)
        model, extra = None, {"gguf_from": str(job.reuse[0]), "gguf_linked": how == "linked"}
    else:
        model, extra = tuned_model(job.base_folder, job.adapter), {}
        write_gguf(job, model, tmp / gguf_name, job.quant)
    modelfile.write(tmp, gguf_name, job.tok, model_dir=job.base_folder)
    crash_point("export.partial_written")
    replace_dir(tmp, job.out)
    return {"modelfile": str(job.out / "Modelfile"), "gguf": str(job.out / gguf_name), **extra}, model


def _gguf_size(quant: str) -> float:
    return BYTES_PER_PARAM.get(quant, 4.0)


@dataclass(frozen=True)
class ExportFormat:
    help: str
    needs_run: bool               # only a run has an adapter
    is_dir: bool                  # writes a folder (else one file)
    quants: tuple[str, ...]
    default_quant: str
    suffix: Callable[[str], str]  # quant → the end of the default file/folder name
    bytes_per_param: Callable[[str], float]
    write: Callable[[Job], tuple[dict[str, Any], Any]]
    usage: Callable[[str, str], dict[str, str]]  # (path, name) → commands that use it
    verifiable: bool              # llama.cpp can run it for the parity check
    converts: bool = False        # written by llama.cpp's converter (export/converter.py)
    title: str = ""               # what it is in a few words, for History ("GGUF file")


FORMATS: dict[str, ExportFormat] = {
    "adapter": ExportFormat(
        "the small adapter folder, for Python (transformers + peft)",
        True, True, LORA_QUANTS, "f32", lambda q: "-adapter", lambda q: 0.02, _write_adapter,
        lambda p, n: {"python": f'from peft import AutoPeftModelForCausalLM; '
                                f'AutoPeftModelForCausalLM.from_pretrained("{p}")'}, False,
        title="adapter folder"),
    "merged": ExportFormat(
        "the whole tuned model as a folder of safetensors, for Python (transformers)",
        True, True, LORA_QUANTS, "f32", lambda q: "-merged", lambda q: 4.0, _write_merged,
        lambda p, n: {"python": f'from transformers import AutoModelForCausalLM; '
                                f'AutoModelForCausalLM.from_pretrained("{p}")'}, False,
        title="merged model folder"),
    "gguf": ExportFormat(
        "one GGUF file for llama.cpp, Ollama and LM Studio, at the chosen quantization",
        False, False, GGUF_QUANTS, "q8_0", lambda q: f"-{q}.gguf", _gguf_size, _write_gguf,
        lambda p, n: {"llama.cpp": f'llama-cli -m "{p}" -cnv',
                      "python": f'from llama_cpp import Llama; Llama("{p}")'}, True, True,
        title="GGUF file"),
    "lora-gguf": ExportFormat(
        "the adapter alone as a GGUF, for llama.cpp over the base model's GGUF",
        True, False, LORA_QUANTS, "f32", lambda q: f"-lora-{q}.gguf", _gguf_size, _write_lora_gguf,
        lambda p, n: {"llama.cpp": f'llama-cli -m BASE.gguf --lora "{p}" -cnv'}, True, True,
        title="LoRA GGUF file"),
    "ollama": ExportFormat(
        "a folder with a GGUF and a Modelfile for `ollama create`",
        False, True, GGUF_QUANTS, "q8_0", lambda q: "-ollama", _gguf_size, _write_ollama,
        lambda p, n: {"ollama": f'cd "{p}" && ollama create {n} -f Modelfile && ollama run {n}'},
        True, True, title="Ollama folder"),
}


def check_request(fmt: str, quant: str | None, run_id: str | None) -> tuple[ExportFormat, str]:
    if fmt not in FORMATS:
        raise ExportError(f"Unknown format '{fmt}'. Choose one of: {', '.join(FORMATS)}.")
    f = FORMATS[fmt]
    if f.needs_run and not run_id:
        raise ExportError(f"Format {fmt} needs a training run (--run RUN_ID); a plain model has "
                          "no adapter. Use --format gguf or ollama with --model.")
    quant = (quant or f.default_quant).lower()
    if quant not in f.quants:
        raise ExportError(f"Unknown quant '{quant}' for {fmt}. Valid: {', '.join(f.quants)}.")
    if f.converts:
        from . import converter

        converter.location()  # missing: says so and how to fix it, before any work
    if quant in quantize.K_QUANTS:
        from ..models.registry import require_llama_cpp

        require_llama_cpp()
    return f, quant


def bytes_needed(f: ExportFormat, quant: str, params: int) -> int:
    """Disk an export needs: its output, a k-quant's f16 intermediate, and 50 MB to spare."""
    need = int(params * f.bytes_per_param(quant)) + 50_000_000
    if quant in quantize.K_QUANTS:
        need += params * 2
    return need


def check_out(out: Path, need_bytes: int, is_dir: bool, force: bool = False) -> None:
    parent = out.parent
    if out.exists() and not is_dir and out.is_dir():
        raise ExportError(f"{out} is a folder; this format writes one file. Give a file path, "
                          f"e.g. --out {out / 'model.gguf'}.")
    if out.exists() and is_dir and not out.is_dir():
        raise ExportError(f"{out} is a file; this format writes a folder. Give a folder path.")
    if out.exists() and not is_dir and not force:
        raise ExportError(f"{out} already exists. Add --force to replace it (or choose another "
                          "--out); nothing was written.")
    if not parent.exists():
        raise ExportError(f"The folder {parent} does not exist. Create it first or choose another "
                          "--out.")
    if not os.access(parent, os.W_OK):
        raise ExportError(f"The folder {parent} is not writable. Choose another --out.")
    if is_dir and out.exists() and any(out.iterdir()) and not (force and (out / EXPORT_MARK).exists()):
        raise ExportError(f"{out} already exists and is not empty; choose an empty or new folder "
                          "so nothing of yours is overwritten (an earlier export there: add --force).")
    free = shutil.disk_usage(parent).free
    if need_bytes > free:
        raise ExportError(f"Not enough disk space in {parent}: this export needs about "
                          f"{need_bytes / 1e9:.2f} GB and {free / 1e9:.2f} GB are free. Free some "
                          "space or choose another --out.")


# With the parity check, the progress bar's share for writing: the embedded model's q8_0 GGUF is
# written in ≈14 s and checked in ≈40 s to 4 min on 2 busy CPU cores, so writing gets the first
# quarter and the check moves the rest (it said "90%" for minutes when writing had 90%).
WRITE_SHARE = 0.25


def run(fmt: str, job: Job, verify: bool, base_gguf: Callable[[], Path]) -> dict[str, Any]:
    """Produce one export; returns path, bytes, seconds and (if verified) parity."""
    f = FORMATS[fmt]
    checks = verify and f.verifiable and not (job.reuse and job.reuse[1])
    bar = job.progress
    if checks and bar:  # one bar: writing, then the check
        job = replace(job, progress=lambda frac, msg: bar(WRITE_SHARE * frac, msg))
    t0 = time.time()
    try:
        fail_point("export.write")
        extra, parity_model = f.write(job)
    except BaseException:
        shutil.rmtree(partial(job.out), ignore_errors=True)  # a folder format's half-written copy
        raise
    result: dict[str, Any] = {"format": fmt, "quant": job.quant, **extra}
    result.update(path=str(job.out), bytes=folder_size(job.out), seconds=round(time.time() - t0, 2))
    if checks:
        stage = (lambda frac, msg: bar(WRITE_SHARE + (1 - WRITE_SHARE) * frac, msg)) if bar else None
        result["parity"] = check_parity(fmt, replace(job, progress=stage), result, parity_model,
                                        base_gguf)
    elif verify and f.verifiable:  # the same GGUF was checked already: its parity holds
        result["parity"] = job.reuse[1]
    return result


def check_parity(fmt: str, job: Job, result: dict[str, Any], parity_model,
                 base_gguf: Callable[[], Path]) -> dict[str, Any]:
    """The GGUF (or base GGUF + LoRA GGUF) in llama.cpp against the tuned model."""
    from ..models.registry import require_llama_cpp
    from . import parity

    require_llama_cpp()
    if parity_model is None:
        if job.progress:
            job.progress(0.0, "parity: loading the tuned model to check the file against…")
        if fmt != "lora-gguf":  # a GGUF linked from an unchecked export
            parity_model = tuned_model(job.base_folder, job.adapter)
    if parity_model is None:  # a LoRA GGUF: the tuned model is base + adapter, unmerged
        from peft import PeftModel

        from ..models.registry import load_model

        tuned = PeftModel.from_pretrained(load_model(job.base_folder, "cpu", "fp32"), str(job.adapter))
        return parity.check(base_gguf(), tuned, job.tok, "f32", lora_path=job.out,
                            progress=job.progress)
    return parity.check(Path(result.get("gguf", job.out)), parity_model, job.tok, job.quant,
                        progress=job.progress)
