"""The Export step as a service: choose the source, name the target, write, verify, record.

Owns where an export goes by default (`exports/<run or model>/<name><suffix>`, never outside
that folder), the disk check before writing, recording the export in the store, the base
model's own f16 GGUF (made once, for LoRA GGUFs and the llama.cpp engine), listing and
deleting exports. Dependencies come in explicitly: the store, the exports folder, the model
cache and a run look-up. The formats and their writers are exporter.py.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any, Callable

from .. import models
from ..errors import ExportError
from . import exporter


def safe_label(text: str) -> str:
    """A file-name-safe label: a model path like 'a/b/..' must not lead outside exports/."""
    label = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")
    return label or "model"


class ExportService:
    def __init__(self, store, exports_dir: Path, cache, run: Callable[[str], dict[str, Any]]):
        self.store, self.exports_dir, self.cache, self.run = store, Path(exports_dir), cache, run

    def export(self, fmt: str, run_id: str | None = None, model: str | None = None,
               quant: str | None = None, out: str | None = None, verify: bool = False,
               progress: Any = None) -> dict[str, Any]:
        """Write one export (atomically), optionally check parity, record it in the store."""
        from ..compare import adapter_dir

        if bool(run_id) == bool(model):
            raise ExportError("Give either --run RUN_ID (the tuned model) or --model MODEL (a "
                              "model without a run), not both or neither.")
        f, quant = exporter.check_request(fmt, quant, run_id)
        adapter = None
        if run_id:
            run = self.run(run_id)
            adapter, model_ref, label = adapter_dir(run), run["model"], run_id
        else:
            model_ref, label = model, safe_label(self.cache.resolve(model).name)
        base_folder = self.cache.path(model_ref)
        if base_folder.is_file():
            raise ExportError(f"{model_ref} is already a GGUF file; export works from an HF folder "
                              "(config.json + safetensors).")
        params = models.info_from_folder(base_folder)["params"] or 0
        dest = Path(out).expanduser() if out else self.exports_dir / label / f"{label}{f.suffix(quant)}"
        if not out:
            dest.parent.mkdir(parents=True, exist_ok=True)
        exporter.check_out(dest, exporter.bytes_needed(f, quant, params), f.is_dir)
        job = exporter.Job(base_folder, adapter, dest, quant, label, self.cache.tokenizer(model_ref),
                           progress)
        result = exporter.run(fmt, job, verify, lambda: self.base_gguf(model_ref))
        self.store.add_export(run_id=run_id, model=model_ref, format=fmt, quant=quant,
                              path=result["path"], bytes=result["bytes"],
                              seconds=result["seconds"], parity=result.get("parity"))
        result["use"] = f.usage(result["path"], label.lower())
        return result

    def base_gguf(self, model_ref: str) -> Path:
        """An f16 GGUF of the base model (made once and recorded), for LoRA GGUFs and llama.cpp."""
        for e in self.store.list_exports():
            if (e["format"] == "gguf" and not e["run_id"] and e["model"] == model_ref
                    and e["quant"] in ("f16", "f32") and Path(e["path"]).exists()):
                return Path(e["path"])
        return Path(self.export("gguf", model=model_ref, quant="f16")["path"])

    def list(self, run_id: str | None = None) -> list[dict[str, Any]]:
        return self.store.list_exports(run_id)

    def delete(self, export_id: int) -> dict[str, Any]:
        e = self.store.get_export(export_id)
        if e is None:
            raise ExportError(f"No export with id {export_id}.")
        p = Path(e["path"])
        size = models.folder_size(p)
        self.store.delete_export(export_id)
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        return {"deleted": export_id, "bytes_freed": size}

    @staticmethod
    def choices() -> dict[str, Any]:
        """What the Export step offers: formats with their help, and the GGUF types."""
        return {"formats": {name: f.help for name, f in exporter.FORMATS.items()},
                "gguf_quants": list(exporter.GGUF_QUANTS),
                "gguf_formats": [n for n, f in exporter.FORMATS.items()
                                 if f.quants == exporter.GGUF_QUANTS],
                "lora_quants": list(exporter.LORA_QUANTS)}
