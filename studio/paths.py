"""STUDIO_HOME layout: where models, datasets, runs, exports and studio.db live — and what a run
folder holds.

Owns resolving and validating the home folder (env var STUDIO_HOME or --home, default
~/.finetune-studio), the home of a run folder, the names of the files a run folder holds (RUN:
declared once; old run folders keep them), its finished adapter, and the one reader and writer of
its events log. Does not create content inside the subfolders; the modules that own each kind of
artifact do.
"""
from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import HomeError, RunError
from .records import RunStatus

DEFAULT_HOME = "~/.finetune-studio"
REPO = Path(__file__).resolve().parent.parent  # the checkout: assets/ and presets/ ship with it
ASSETS = REPO / "assets"
PRESETS = REPO / "presets"


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def exports(self) -> Path:
        return self.root / "exports"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def db(self) -> Path:
        return self.root / "studio.db"

    @property
    def augment(self) -> Path:
        return self.root / "augment"  # self-distilled answers and paraphrases, kept per dataset

    @property
    def replay(self) -> Path:
        return self.root / "replay"  # the base model's own answers, kept per model (replay.memo_for)

    def run_dir(self, run_id: str) -> Path:
        return self.runs / run_id

    @classmethod
    def of_run(cls, run_dir: Path | str) -> "Home":
        """The home a run folder (`<home>/runs/<id>`) lives in."""
        return cls(Path(run_dir).resolve().parent.parent)


@dataclass(frozen=True)
class RunFiles:
    """The names a run folder (`runs/<id>/`) holds."""
    config: str = "config.yaml"          # the run spec and its dataset, written when it is made
    events: str = "events.jsonl"         # one JSON object per log, evaluation, note and the end
    log: str = "train.log"               # the training child's output
    stop: str = "STOP"                   # written by Stop (or SIGTERM): the loop ends at its next step
    adapter: str = "adapter"             # the final adapter (finished once it holds `complete`)
    adapter_full: str = "adapter-full"   # the adapter as trained, when its strength was changed
    adapter_targeted: str = "adapter-targeted"  # the adapter with its intruder directions scaled
    adapter_start: str = "adapter-start"  # --from-run: the start run's adapter, as this run began
    best_adapter: str = "best-adapter"   # the forgetting budget's best evaluation so far
    selection: str = "selection.json"    # the forgetting budget's evaluations and choice
    levers: str = "levers.json"          # what augmentation and replay did
    curriculum: str = "curriculum.json"  # train.order=curriculum: the order, kept for a resume
    report: str = "report.json"          # the did-it-learn report, kept once conclusive
    accelerate: str = "accelerate.yaml"  # multi-GPU launch settings
    complete: str = ".complete"          # written last into a checkpoint or the adapter
    separated_at: str = ".separated-at"  # dpo: the step train.stop_separated ended the run at


RUN = RunFiles()


def finished_adapter(run_dir: Path | str) -> Path | None:
    """The run's final adapter folder, or None while it is not finished."""
    adapter = Path(run_dir) / RUN.adapter
    return adapter if (adapter / RUN.complete).exists() else None


def adapter_dir(run: dict[str, Any]) -> Path:
    """The finished adapter of a run (its store row), or a RunError that says why there is none
    and what to do."""
    if not run.get("path") or not Path(run["path"]).is_dir():
        raise RunError(f"Run {run['id']}: its folder {run.get('path')} was deleted, so there is no "
                       "adapter to compare. Pick another run.")
    a = finished_adapter(run["path"])
    if a is None:
        state = run["status"]
        why = {RunStatus.RUNNING: "it is still training", RunStatus.QUEUED: "it has not started",
               RunStatus.FAILED: "it failed before saving one"}.get(RunStatus(state), "none was saved")
        raise RunError(f"Run {run['id']} has no adapter yet ({why}). Wait for it to finish, or "
                       "resume it: python -m studio train --resume " + run["id"])
    return a


def read_events(run_dir: Path | str) -> list[dict[str, Any]]:
    """The run's events in order (a torn last line, from a kill, is skipped)."""
    out = []
    path = Path(run_dir) / RUN.events
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def append_event(run_dir: Path | str, event: dict[str, Any]) -> None:
    """One event at the end of the run's events log (one JSON object a line)."""
    with open(Path(run_dir) / RUN.events, "a") as f:
        f.write(json.dumps(event) + "\n")


def resolve_home(home: str | os.PathLike | None = None) -> Home:
    """Return a usable Home, creating it if needed; raise HomeError with advice otherwise."""
    raw = home or os.environ.get("STUDIO_HOME") or DEFAULT_HOME
    root = Path(raw).expanduser()
    if root.exists() and not root.is_dir():
        raise HomeError(
            f"STUDIO_HOME {root} is a file, not a folder. Point STUDIO_HOME (or --home) at a "
            "folder, or move that file away."
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
        h = Home(root.resolve())
        for sub in (h.models, h.datasets, h.runs, h.exports, h.tmp):
            sub.mkdir(exist_ok=True)
        probe = h.tmp / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            raise HomeError(f"STUDIO_HOME {root} is on a full disk (No space left on device). "
                            "Free some space there, or point STUDIO_HOME (or --home) at a disk "
                            "with room.") from None
        raise HomeError(
            f"STUDIO_HOME {root} cannot be written ({e.strerror or e}). Choose a folder you can "
            "write to with --home or the STUDIO_HOME environment variable, or fix its permissions."
        ) from None
    return h
