"""Normalise the CLI's JSON answers of one side (before/ or after/) for a diff: values that must
differ between two fresh homes are replaced by a placeholder; everything else is kept as is.

usage: python normalise.py SIDE_DIR OUT_DIR
- ids:       run ids (YYYYMMDD-HHMMSS-cpu-xxxx) → <run-id>; dataset version ids stay (both v1)
- times:     keys created_at, started_at, finished_at, updated_at, time, mtime → <time>
- durations: keys seconds, *_s (train_s, eta_s, …), wall/elapsed, tokens_per_s, phases → <seconds>
             (wall-clock on a machine shared with other jobs; not a result)
- paths:     the fresh home (/tmp/house-diff-home.XXXXXX) → <home>; the worktree → <tree>
- peak_mem_gb: the process's max RSS → <rss> (depends on what else the process loaded)
"""
import json
import re
import sys
from pathlib import Path

TIME_KEYS = {"created_at", "started_at", "finished_at", "updated_at", "time", "mtime", "ended_at"}
DUR_KEYS = {"seconds", "wall", "elapsed", "tokens_per_s", "phases", "pid"}
RUN_ID = re.compile(r"\d{8}-\d{6}-[a-z0-9]+-[0-9a-f]{4}")
HOME = re.compile(r"/tmp/house-diff-home\.[A-Za-z0-9]+")
TREE = re.compile(r"/work/wt-(before|house2|after)")


def norm(v, key=""):
    if isinstance(v, dict):
        return {k: norm(x, k) for k, x in v.items()}
    if isinstance(v, list):
        return [norm(x, key) for x in v]
    if key in TIME_KEYS and v is not None:
        return "<time>"
    if (key in DUR_KEYS or key.endswith("_s")) and v is not None:
        return "<seconds>"
    if key == "peak_mem_gb" and v is not None:
        return "<rss>"
    if isinstance(v, str):
        v = HOME.sub("<home>", v)
        v = TREE.sub("<tree>", v)
        return RUN_ID.sub("<run-id>", v)
    return v


src, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
for f in sorted(src.glob("*.json")):
    if not f.read_text().strip():  # still being written
        continue
    data = json.loads(f.read_text())
    (out / f.name).write_text(json.dumps(norm(data), indent=1, sort_keys=True) + "\n")
