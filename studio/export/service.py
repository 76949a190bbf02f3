"""The Export step as a service: choose the source, name the target, write, verify, record.

Owns where an export goes by default (`exports/<run or model>/<name><suffix>`, never outside
that folder), the disk check before writing, recording the export in the store, the base
model's own f16 GGUF (made once, for LoRA GGUFs and the llama.cpp engine), listing and
deleting exports. Dependencies come in explicitly: the store, the exports folder, the model
cache and a run look-up. The formats and their writers are exporter.py.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from ..models import registry as models
from ..errors import ExportError, FeatureUnavailable
from ..faults import crash_point, disk_guard, pid_alive, sweep
from . import exporter


PENDING = ".pending"
# what a writer leaves while it works: "<name>.partial-<pid>", "<stem>.f16-tmp-<pid>.gguf"
PARTIAL_RE = re.compile(r"\.(?:partial|f16-tmp)-(?P<pid>\d+)(?:\.gguf)?$")


def unused(path: Path) -> Path:
    """`path`, or `name-2.ext`, `name-3.ext`… when it is taken."""
    if not path.exists():
        return path
    stem, ext = (path.name[:-len(".gguf")], ".gguf") if path.name.endswith(".gguf") else (path.name, "")
    n = 2
    while (path.with_name(f"{stem}-{n}{ext}")).exists():
        n += 1
    return path.with_name(f"{stem}-{n}{ext}")


def safe_label(text: str) -> str:
    """A file-name-safe label: a model path like 'a/b/..' must not lead outside exports/."""
    label = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")
    return label or "model"


def parity_plan(f: exporter.ExportFormat, verify: bool | None) -> tuple[bool, str]:
    """(check parity?, why it is not checked). `verify` None: check where llama.cpp is installed
    (the CLI's default); True without llama.cpp is refused before any work, not after writing."""
    if not f.verifiable:
        return False, ""
    ok, why = models.llama_cpp_available()
    if verify and not ok:
        raise FeatureUnavailable(f"{why} Or export without the parity check (untick \"Check parity "
                                 "with llama.cpp\" in the Export step; --no-parity on the command line).")
    if verify is None:
        return ok, why
    return bool(verify), "it was turned off"


def skipped_note(fmt: str, run_id: str | None, model_ref: str, quant: str, why: str) -> str:
    """What a user reads when the parity check was left out: that it was, why, and how to run it."""
    source = f"--run {run_id}" if run_id else f"--model {model_ref}"
    reuse = (" The GGUF written now is reused (linked, not converted again) and checked."
             if fmt in ("gguf", "ollama") else "")
    return (f"Parity was not checked ({why}): nothing has compared this file's answers with the "
            "tuned model yet. To check it later, export it again with the check on — in the "
            "Export step, tick \"Check parity with llama.cpp\"; on the command line, "
            f"`python -m studio export {source} --format {fmt} --quant {quant}` (the check is on "
            f"unless you add --no-parity).{reuse}")


class ExportService:
    def __init__(self, store, exports_dir: Path, cache, run: Callable[[str], dict[str, Any]]):
        self.store, self.exports_dir, self.cache, self.run = store, Path(exports_dir), cache, run

    def export(self, fmt: str, run_id: str | None = None, model: str | None = None,
               quant: str | None = None, out: str | None = None, verify: bool | None = False,
               progress: Any = None, force: bool = False) -> dict[str, Any]:
        """Write one export (atomically), check parity (`verify`: True, False, or None = where
        llama.cpp is installed), record it in the store. A file of the user's is replaced only
        with `force`; a default path never replaces an earlier export (a new name is taken).
        Without the check, `parity_skipped` says why and how to run it later."""
        from ..paths import adapter_dir

        if bool(run_id) == bool(model):
            raise ExportError("Give either --run RUN_ID (the tuned model) or --model MODEL (a "
                              "model without a run), not both or neither.")
        f, quant = exporter.check_request(fmt, quant, run_id)
        verify, why_not = parity_plan(f, verify)
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
        if f.converts:  # an architecture llama.cpp's converter knows, before any work
            from .converter import check_model

            check_model(base_folder)
        if fmt == "lora-gguf":
            exporter.check_lora(adapter)
        params = models.info_from_folder(base_folder)["params"] or 0
        if out:
            dest = Path(out).expanduser().absolute()
        else:
            dest = unused(self.exports_dir / label / f"{label}{f.suffix(quant)}")
            dest.parent.mkdir(parents=True, exist_ok=True)
        need = exporter.bytes_needed(f, quant, params)
        exporter.check_out(dest, need, f.is_dir, force)
        job = exporter.Job(base_folder, adapter, dest, quant, label, self.cache.tokenizer(model_ref),
                           progress, self.same_gguf(run_id, model_ref, quant, adapter, dest)
                           if fmt in ("gguf", "ollama") else None)
        row = {"run_id": run_id, "model": model_ref, "format": fmt, "quant": quant, "path": str(dest)}
        intent = self._intend(row)  # a kill from here on is reconciled at the next start
        crash_point("export.intent_written")
        try:
            with disk_guard(dest.parent, need):
                result = exporter.run(fmt, job, verify, lambda: self.base_gguf(model_ref))
            crash_point("export.renamed")
            self.store.add_export(**row, bytes=result["bytes"], seconds=result["seconds"],
                                  parity=result.get("parity"))
        finally:  # registered, or failed and cleaned by the writer: the record is done either way
            intent.unlink(missing_ok=True)
        result["use"] = f.usage(result["path"], label.lower())
        if f.verifiable and not verify:
            result["parity_skipped"] = skipped_note(fmt, run_id, model_ref, quant, why_not)
        return result

    def same_gguf(self, run_id: str | None, model_ref: str, quant: str, adapter: Path | None,
                  dest: Path) -> tuple[Path, Any] | None:
        """A GGUF exported already of this very model (same run or base, same quant, newer than
        the adapter's last change, e.g. a new strength) — a GGUF export's file or the one in an
        Ollama folder → (path, parity), so the new export links it instead of converting again."""
        changed = max((f.stat().st_mtime for f in adapter.iterdir()), default=0) if adapter else 0
        for e in self.store.list_exports(run_id):
            if e["format"] not in ("gguf", "ollama") or (e["run_id"], e["model"], e["quant"]) != (
                    run_id, model_ref, quant):
                continue
            p = Path(e["path"])
            p = p if e["format"] == "gguf" else next(iter(sorted(p.glob("*.gguf"))), p)
            if p.is_file() and p.stat().st_mtime > changed and p.resolve() != dest.resolve():
                return p, e.get("parity")
        return None

    def _intend(self, row: dict[str, Any]) -> Path:
        """Write-ahead record of an export being written (pid and start time with it)."""
        pending = self.exports_dir / PENDING
        pending.mkdir(parents=True, exist_ok=True)
        path = pending / f"{os.getpid()}-{time.time_ns()}.json"
        path.write_text(json.dumps({**row, "pid": os.getpid(), "started": time.time()}))
        return path

    def reconcile(self) -> None:
        """After a crash: an export whose writer died is registered when its file or folder is
        complete (renamed into place; a folder carries its marker), and its partial files are
        removed; orphaned partials anywhere under exports/ are swept."""
        for intent in sorted((self.exports_dir / PENDING).glob("*.json")):
            try:
                row = json.loads(intent.read_text())
            except (OSError, ValueError):
                intent.unlink(missing_ok=True)
                continue
            if pid_alive(row.get("pid", 0)):
                continue
            dest = Path(row["path"])
            sweep(dest.parent, PARTIAL_RE)
            f = exporter.FORMATS.get(row["format"])
            # written since the intent (a linked GGUF keeps its source's mtime; the link sets ctime)
            done = f is not None and dest.exists() and max(dest.stat().st_mtime, dest.stat().st_ctime) \
                >= row["started"] - 1 and (
                (dest / exporter.EXPORT_MARK).exists() if f.is_dir else dest.is_file())
            if done and not any(e["path"] == str(dest) for e in self.store.list_exports()):
                self.store.add_export(run_id=row["run_id"], model=row["model"], format=row["format"],
                                      quant=row["quant"], path=str(dest), bytes=models.folder_size(dest),
                                      seconds=None, parity=None)
            intent.unlink(missing_ok=True)
        for folder in [self.exports_dir, *(p for p in self.exports_dir.iterdir() if p.is_dir())] \
                if self.exports_dir.is_dir() else []:
            sweep(folder, PARTIAL_RE)
        if (self.cache.models_dir / ".gguf").is_dir():  # base GGUFs made for chatting
            sweep(self.cache.models_dir / ".gguf", PARTIAL_RE)

    def base_gguf(self, model_ref: str) -> Path:
        """An f16 GGUF of the base model, for LoRA GGUFs and chatting in llama.cpp: the user's own
        export of it when there is one, else made once beside the model (it belongs to the
        model, not to the user's exports)."""
        for e in self.store.list_exports():
            if (e["format"] == "gguf" and not e["run_id"] and e["model"] == model_ref
                    and e["quant"] in ("f16", "f32") and Path(e["path"]).exists()):
                return Path(e["path"])
        spec = self.cache.resolve(model_ref)
        dest = self.cache.models_dir / ".gguf" / f"{safe_label(spec.name)}-f16.gguf"
        if dest.is_file():
            return dest
        base_folder = self.cache.path(model_ref)
        from .converter import check_model

        check_model(base_folder)
        dest.parent.mkdir(parents=True, exist_ok=True)
        params = models.info_from_folder(base_folder)["params"] or 0
        with disk_guard(dest.parent, exporter.bytes_needed(exporter.FORMATS["gguf"], "f16", params)):
            exporter.run("gguf", exporter.Job(base_folder, None, dest, "f16", safe_label(spec.name),
                                              self.cache.tokenizer(model_ref)), False, lambda: dest)
        return dest

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
