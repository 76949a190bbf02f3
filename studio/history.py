"""History: everything made in this home — datasets, runs, exports, benchmark evaluations — with
its bytes on disk.

Owns the one listing the History page and `inventory` show; reading only the store and folder
sizes. Deleting is each step's own service.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .models import folder_size


def inventory(store) -> list[dict[str, Any]]:
    """Every dataset (all versions together), run, export and evaluation, with its bytes on disk
(an evaluation lives in the store: none)."""
    seen: dict[str, dict[str, Any]] = {}
    for d in store.list_datasets():  # newest version first per name
        seen.setdefault(d["name"], {"kind": "dataset", "id": d["name"],
                                    "detail": f"v{d['version']}, {d['records']} examples",
                                    "bytes": folder_size(Path(d["path"]).parent)})
    runs = [{"kind": "run", "id": r["id"], "bytes": folder_size(r.get("path")),
             "detail": f"{r['status']}, {r['preset']}, {r['dataset']}"}
            for r in store.list_runs()]
    exports = [{"kind": "export", "id": str(e["id"]), "bytes": e["bytes"] or 0,
                "detail": f"{e['format']} {e['quant']} of {e['run_id'] or e['model']}"}
               for e in store.list_exports()]
    evals = [{"kind": "evaluation", "id": str(e["id"]), "bytes": 0,
              "detail": f"{', '.join(sorted((e['data'] or {}).get('tasks', {})))} on {e['run_id'] or e['model']}"
                        + "".join(f"; {line}" for line in (e["data"] or {}).get("summary", [])[:1])}
             for e in store.list_evaluations()]
    return [*seen.values(), *runs, *exports, *evals]
