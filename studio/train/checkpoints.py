"""Checkpoints and the final adapter on disk, written so that a kill at any moment is safe.

Owns: publishing a checkpoint the Trainer finished writing (a marker file, then an atomic
rename from the staging folder into `runs/<id>/checkpoint-<step>`), finding the latest complete
checkpoint, verifying it before a resume (weights, optimizer, scheduler, state — a damaged one is
removed and the previous intact one used, with a note), rotating old ones, trimming events past
the checkpoint on resume, and saving the adapter through a temp folder (also straight from a
final checkpoint when a run was killed while saving it). A folder without the marker is never
trusted. Crash points (faults.crash_point) mark the moments a kill is tested at.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import struct
import zipfile
from pathlib import Path

from ..faults import atomic_write_text, crash_point, fail_point
from ..paths import RUN

CKPT = re.compile(r"^checkpoint-(\d+)$")


def step_of(path: Path) -> int:
    return int(CKPT.match(Path(path).name).group(1))


def complete(run_dir: Path) -> list[Path]:
    found = [d for d in run_dir.glob("checkpoint-*") if CKPT.match(d.name) and (d / RUN.complete).exists()]
    return sorted(found, key=step_of)


def latest(run_dir: Path) -> Path | None:
    done = complete(run_dir)
    return done[-1] if done else None


def publish(staging: Path, run_dir: Path, step: int, keep: int) -> Path:
    src = staging / f"checkpoint-{step}"
    dst = run_dir / f"checkpoint-{step}"
    crash_point("train.checkpoint_staged", step)
    fail_point("train.checkpoint")
    (src / RUN.complete).write_text(json.dumps({"step": step}))
    crash_point("train.checkpoint_marked", step)
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(src, dst)
    crash_point("train.checkpoint_published", step)
    for old in complete(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
        crash_point("train.checkpoint_rotating", step)
    return dst


def clean_staging(staging: Path) -> None:
    """Half-written checkpoints from a killed process are deleted, never resumed from."""
    shutil.rmtree(staging, ignore_errors=True)
    for d in staging.parent.glob("checkpoint-*"):
        if not (d / RUN.complete).exists():
            shutil.rmtree(d, ignore_errors=True)


def clean_leftovers(run_dir: Path) -> None:
    """What a killed trainer leaves: the Trainer's staging folder, unmarked checkpoints, a
    half-saved adapter, a half-written config."""
    clean_staging(run_dir / "trainer")
    shutil.rmtree(run_dir / ".adapter-tmp", ignore_errors=True)
    (run_dir / "config.yaml.tmp").unlink(missing_ok=True)


def trim_events(path: Path, step: int) -> None:
    """Drop events after the checkpoint we resume from, so the curve continues without repeats."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines()
            if ln.strip() and _step(ln) is not None and _step(ln) <= step]
    atomic_write_text(path, "".join(ln + "\n" for ln in keep))


def _step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None  # a line cut by a kill: dropped


ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
TORCH_FILES = ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin")


def save_adapter(model, tok, run_dir: Path, from_checkpoint: Path | None = None) -> Path:
    """The run's adapter, written whole or not at all: from the model, or copied from a
    checkpoint (a run killed while saving its adapter after the last step)."""
    final = run_dir / RUN.adapter
    tmp = run_dir / ".adapter-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    if from_checkpoint is not None:
        tmp.mkdir()
        for name in ADAPTER_FILES:
            shutil.copy2(from_checkpoint / name, tmp / name)
    else:
        fail_point("train.adapter")
        model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    crash_point("train.adapter_written")
    (tmp / RUN.complete).write_text("ok")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    crash_point("train.adapter_saved")
    return final


def max_steps_of(ckpt: Path) -> int | None:
    """The step count the run was started with, as its checkpoint's trainer state records it."""
    try:
        return int(json.loads((Path(ckpt) / "trainer_state.json").read_text())["max_steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def damage(ckpt: Path) -> str | None:
    """Why a published checkpoint cannot be resumed from (a truncated or corrupt file), or None."""
    weights = ckpt / "adapter_model.safetensors"
    try:
        with open(weights, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if weights.stat().st_size != 8 + n + end:
            return f"{weights.name} is truncated"
    except (OSError, ValueError, KeyError, struct.error) as e:
        return f"{weights.name} cannot be read ({type(e).__name__})"
    try:
        state = json.loads((ckpt / "trainer_state.json").read_text())
        int(state["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return "trainer_state.json is damaged"
    for name in TORCH_FILES:
        p = ckpt / name
        if not p.exists():
            continue
        try:
            with zipfile.ZipFile(p) as z:  # torch.save writes a zip: its CRCs catch damage
                if z.testzip() is not None:
                    return f"{name} is damaged"
        except (OSError, zipfile.BadZipFile, EOFError):
            return f"{name} is truncated or damaged"
    return None


def latest_intact(run_dir: Path) -> tuple[Path | None, list[str]]:
    """The newest checkpoint that verifies; damaged newer ones are removed, each with a note."""
    notes = []
    for c in reversed(complete(run_dir)):
        why = damage(c)
        if why is None:
            return c, notes
        notes.append(f"{c.name} was damaged ({why}) and was removed; resuming from an older point.")
        shutil.rmtree(c, ignore_errors=True)
    return None, notes
