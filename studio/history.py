"""History: everything made in this home — datasets, runs, exports, benchmark evaluations — with
when it was made and its bytes on disk.

Owns the one listing the History page and `inventory` show; reading only the store, folder
sizes and the export formats' titles. Every row keeps the id the CLI and API use (a dataset's
name, a run id, an export or evaluation number) and carries `created_at` (seconds since the
epoch; the front ends show it as local time). Deleting is each step's own service.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .export.exporter import FORMATS
from .models.registry import folder_size


def export_detail(e: dict[str, Any]) -> str:
    """An export as a newcomer reads it: 'GGUF file, q8_0: name.gguf — of run X, parity passed'
    (the opaque number stays in the id column, for deleting)."""
    f = FORMATS.get(e["format"])
    title = (f.title if f and f.title else e["format"])
    quant = f", {e['quant']}" if e.get("quant") else ""
    parity = e.get("parity")
    checked = ("" if not f or not f.verifiable else
               ", parity not checked" if not parity else
               ", parity passed" if parity.get("passed") else ", parity failed")
    return (f"{title}{quant}: {Path(e['path']).name} — of "
            + (f"run {e['run_id']}" if e["run_id"] else f"model {e['model']}") + checked)


def inventory(store) -> list[dict[str, Any]]:
    """Every dataset (all versions together), run, export and evaluation, with when it was made
    and its bytes on disk (an evaluation lives in the store: none)."""
    seen: dict[str, dict[str, Any]] = {}
    for d in store.list_datasets():  # newest version first per name
        seen.setdefault(d["name"], {"kind": "dataset", "id": d["name"], "created_at": d["created_at"],
                                    "detail": f"v{d['version']}, {d['records']} examples",
                                    "bytes": folder_size(Path(d["path"]).parent)})
    runs = [{"kind": "run", "id": r["id"], "created_at": r["created_at"],
             "bytes": folder_size(r.get("path")),
             "detail": f"{r['status']}, {r['preset']}, {r['dataset']}"}
            for r in store.list_runs()]
    exports = [{"kind": "export", "id": str(e["id"]), "created_at": e["created_at"],
                "bytes": e["bytes"] or 0, "detail": export_detail(e)}
               for e in store.list_exports()]
    evals = [{"kind": "evaluation", "id": str(e["id"]), "created_at": e["created_at"], "bytes": 0,
              "detail": f"{', '.join(sorted((e['data'] or {}).get('tasks', {})))} on {e['run_id'] or e['model']}"
                        + "".join(f"; {line}" for line in (e["data"] or {}).get("summary", [])[:1])}
             for e in store.list_evaluations()]
    return [*seen.values(), *runs, *exports, *evals]
