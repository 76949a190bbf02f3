"""llama.cpp's own converters as the one GGUF engine.

Owns getting them — at setup, `python -m studio.export.converter setup` extracts
`convert_hf_to_gguf.py`, `convert_lora_to_gguf.py`, `conversion/` and `gguf-py/` from the
llama-cpp-python source distribution of the installed version (the llama.cpp that runs our
chat and parity check), into <venv>/llama-converter/; nothing is copied into this repository —
knowing before any work what they can convert (the architectures they register; vision
checkpoints and pickle-only weights refused with what to do), and running them in a child
process, so their gguf-py never mixes with our `gguf` pin. Output goes to a temp name that is
renamed only when the converter succeeded.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import ExportError, FeatureUnavailable

HOME = Path(sys.prefix) / "llama-converter"
MEMBERS = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "conversion", "gguf-py")
OUTTYPES = ("f32", "f16", "bf16", "q8_0")
FIX = "Fix: run `make setup` (or `python -m studio.export.converter setup`) with network access."


def llama_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llama-cpp-python")
    except PackageNotFoundError:
        return None


def location() -> Path:
    """The extracted converters; raises with how to get them when they are missing."""
    if not all((HOME / m).exists() for m in MEMBERS):
        raise FeatureUnavailable(f"GGUF export needs llama.cpp's converter, which is not set up "
                                 f"(looked in {HOME}). {FIX}")
    return HOME


def setup(version: str | None = None) -> Path:
    """Download the llama-cpp-python sdist (pip's cache makes a second time cheap) and extract
    the converters; the folder appears whole or not at all."""
    import shutil
    import tarfile

    version = version or llama_version()
    if version is None:
        raise FeatureUnavailable("llama-cpp-python is not installed, so there is no llama.cpp "
                                 "converter to match. Run `make setup`.")
    stamp = HOME / "VERSION"
    if stamp.exists() and stamp.read_text().strip() == version and all((HOME / m).exists() for m in MEMBERS):
        return HOME
    with tempfile.TemporaryDirectory() as d:
        got = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                              "--no-binary", ":all:", f"llama-cpp-python=={version}", "-d", d],
                             capture_output=True, text=True)
        tars = list(Path(d).glob("llama_cpp_python-*.tar.gz"))
        if got.returncode != 0 or not tars:
            raise FeatureUnavailable(f"Could not download the llama-cpp-python {version} source to "
                                     f"extract its converter: {(got.stderr or '').strip()[-300:]}")
        tmp = HOME.with_name(HOME.name + f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        with tarfile.open(tars[0]) as tar:
            for member in tar.getmembers():
                parts = Path(member.name).parts
                if len(parts) > 3 and parts[1:3] == ("vendor", "llama.cpp") and parts[3] in MEMBERS:
                    member.name = str(Path(*parts[3:]))
                    tar.extract(member, tmp, filter="data")
        (tmp / "VERSION").write_text(version)
        shutil.rmtree(HOME, ignore_errors=True)
        tmp.rename(HOME)
    return HOME


def architectures() -> set[str]:
    """The HF architecture names the converter registers (read off its source, no import)."""
    root = location()
    names: set[str] = set()
    for f in [root / "convert_hf_to_gguf.py", *sorted((root / "conversion").glob("*.py"))]:
        for args in re.findall(r"@ModelBase\.register\(([^)]*)\)", f.read_text(encoding="utf-8")):
            names.update(re.findall(r"[\"']([A-Za-z0-9_]+)[\"']", args))
    return names


def check_model(folder: Path) -> None:
    """Before any work: a causal LM the converter knows, with safetensors weights."""
    folder = Path(folder)
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        raise ExportError(f"{folder} has no readable config.json; GGUF export needs a Hugging Face "
                          "model folder.") from None
    archs = cfg.get("architectures") or []
    if "vision_config" in cfg or any(re.search(r"ForConditionalGeneration|Vision|VL", a) for a in archs):
        raise ExportError(f"{folder.name} is a vision/multimodal checkpoint ({', '.join(archs) or '?'}); "
                          "the studio exports text models. Use the text-only variant of the model "
                          "(e.g. its *-it or *-Instruct causal-LM checkpoint).")
    if not list(folder.glob("*.safetensors")):
        pickles = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pt")]
        raise ExportError(f"{folder.name} has no safetensors weights"
                          + (f" (only pickle files: {', '.join(pickles[:3])})" if pickles else "")
                          + ". The studio does not run pickle files (they can execute code); use a "
                          "safetensors copy of the model.")
    known = architectures()
    unknown = [a for a in archs if a not in known]
    if not archs or unknown:
        raise ExportError(f"llama.cpp's converter (llama-cpp-python {llama_version()}) does not know "
                          f"the architecture {', '.join(unknown or ['(none in config.json)'])}, so "
                          "there is no GGUF for it yet. Export the adapter or the merged model "
                          "(safetensors) instead, or update llama-cpp-python when llama.cpp adds it.")


def _run(args: list[str], out: Path, what: str) -> Path:
    """A converter script in a child process, writing to a temp name renamed on success."""
    from ..faults import crash_point, fail_point

    root = location()
    tmp = out.with_name(f"{out.name}.partial-{os.getpid()}")  # the name exports' sweep knows
    env = {**os.environ, "PYTHONPATH": str(root / "gguf-py")}  # its own gguf-py, never our pin
    env.pop("NO_LOCAL_GGUF", None)
    try:
        fail_point("export.convert")
        proc = subprocess.run([sys.executable, str(root / args[0]), *args[1:], "--outfile", str(tmp)],
                              capture_output=True, text=True, env=env)
        if proc.returncode != 0 or not tmp.exists():
            lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
            if any(re.search(r"No space left|ENOSPC", ln) for ln in lines[-6:]):
                raise OSError(28, "No space left on device")
            why = lines[-1][-400:] if lines else f"it exited with status {proc.returncode}"
            raise ExportError(f"llama.cpp's converter could not write the {what}: {why}")
        crash_point("export.converted")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def convert_model(folder: Path, out: Path, outtype: str = "f16") -> Path:
    """An HF model folder → a GGUF model file (f32/f16/bf16/q8_0)."""
    if outtype not in OUTTYPES:
        raise ExportError(f"The converter writes {', '.join(OUTTYPES)}; '{outtype}' comes from the "
                          "quantizer after an f16 file.")
    check_model(folder)
    return _run(["convert_hf_to_gguf.py", str(folder), "--outtype", outtype], Path(out), "model GGUF")


def convert_lora(adapter: Path, base_folder: Path, out: Path, outtype: str = "f32") -> Path:
    """A PEFT LoRA adapter → a llama.cpp LoRA GGUF, for the base model in `base_folder`."""
    check_model(base_folder)
    return _run(["convert_lora_to_gguf.py", str(adapter), "--base", str(base_folder),
                 "--outtype", outtype], Path(out), "LoRA GGUF")


if __name__ == "__main__":
    if sys.argv[1:] != ["setup"]:
        print("usage: python -m studio.export.converter setup", file=sys.stderr)
        sys.exit(2)
    try:
        print(f"llama.cpp converter ready in {setup()}")
    except FeatureUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
