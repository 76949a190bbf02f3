"""History: everything made in this home — datasets, runs, exports — with its bytes on disk.

Owns the one listing the History page and `inventory` show; reading only the store and folder
sizes. Deleting is each step's own service.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .models import folder_size


def inventory(store) -> list[dict[str, Any]]:
    """Every dataset (all versions together), run and export, with its bytes on disk."""
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
    return [*seen.values(), *runs, *exports]
