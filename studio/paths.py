"""STUDIO_HOME layout: where models, datasets, runs, exports and studio.db live.

Owns resolving and validating the home folder (env var STUDIO_HOME or --home, default
~/.finetune-studio). Does not create content inside the subfolders; the modules that own each
kind of artifact do.
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import HomeError

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

    def run_dir(self, run_id: str) -> Path:
        return self.runs / run_id


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
