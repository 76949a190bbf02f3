"""Checkpoints and the final adapter on disk, written so that a kill at any moment is safe.

Owns: publishing a checkpoint the Trainer finished writing (a marker file, then an atomic
rename from the staging folder into `runs/<id>/checkpoint-<step>`), finding the latest complete
checkpoint, rotating old ones, trimming events past the checkpoint on resume, and saving the
adapter through a temp folder. A folder without the marker is never trusted.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

MARK = ".complete"
CKPT = re.compile(r"^checkpoint-(\d+)$")


def step_of(path: Path) -> int:
    return int(CKPT.match(Path(path).name).group(1))


def complete(run_dir: Path) -> list[Path]:
    found = [d for d in run_dir.glob("checkpoint-*") if CKPT.match(d.name) and (d / MARK).exists()]
    return sorted(found, key=step_of)


def latest(run_dir: Path) -> Path | None:
    done = complete(run_dir)
    return done[-1] if done else None


def publish(staging: Path, run_dir: Path, step: int, keep: int) -> Path:
    src = staging / f"checkpoint-{step}"
    dst = run_dir / f"checkpoint-{step}"
    (src / MARK).write_text(json.dumps({"step": step}))
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(src, dst)
    for old in complete(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return dst


def clean_staging(staging: Path) -> None:
    """Half-written checkpoints from a killed process are deleted, never resumed from."""
    shutil.rmtree(staging, ignore_errors=True)
    for d in staging.parent.glob("checkpoint-*"):
        if not (d / MARK).exists():
            shutil.rmtree(d, ignore_errors=True)


def trim_events(path: Path, step: int) -> None:
    """Drop events after the checkpoint we resume from, so the curve continues without repeats."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines()
            if ln.strip() and _step(ln) is not None and _step(ln) <= step]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(ln + "\n" for ln in keep))
    os.replace(tmp, path)


def _step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None  # a line cut by a kill: dropped


def save_adapter(model, tok, run_dir: Path) -> Path:
    final = run_dir / "adapter"
    tmp = run_dir / ".adapter-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    (tmp / MARK).write_text("ok")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final
