"""Models this process has resolved or loaded: the one cache every step service shares.

Owns resolving a model reference to local files (converting the embedded model or downloading
a hub id once), the device this process trains and generates on, tokenizers (one per model
folder), and the single heavy slot: at most one base model sits in memory at a time, whether it
serves a recipe's generator or the Compare step's base/tuned pair. Loading itself is registry.py.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Callable

from . import registry as models


class ModelCache:
    def __init__(self, models_dir: Path):
        self.models_dir = Path(models_dir)
        self._tokenizers: dict[str, Any] = {}
        self._heavy: tuple[Any, Any] | None = None  # (key, value): one base model in memory
        # loads one at a time: two browser tabs preparing at once on a fresh server imported
        # transformers from two threads, and one got "cannot import name 'AutoTokenizer'"
        self._lock = threading.RLock()

    def resolve(self, ref: str) -> models.ModelSpec:
        return models.resolve(ref, self.models_dir)

    def path(self, ref: str, progress: Any = None, token: str | None = None) -> Path:
        """Local files for `ref` (converting the embedded model / downloading a hub id once)."""
        return models.ensure_local(self.resolve(ref), self.models_dir, token, progress)

    def info(self, ref: str) -> dict[str, Any]:
        return models.info(self.resolve(ref))

    def list(self) -> list[dict[str, Any]]:
        return models.list_models(self.models_dir)

    def reconcile(self) -> None:
        """Remove what a killed conversion or download left (folders of a dead process)."""
        from ..faults import sweep

        sweep(self.models_dir, models.TMP_RE)

    @staticmethod
    def device() -> str:
        """cuda, mps or cpu; STUDIO_DEVICE overrides the detection."""
        return models.detect_device(os.environ.get("STUDIO_DEVICE"))

    def tokenizer(self, ref: str):
        """The model's tokenizer, loaded once per process."""
        path = str(self.path(ref))
        with self._lock:
            if path not in self._tokenizers:
                self._tokenizers[path] = models.load_tokenizer(Path(path))
            return self._tokenizers[path]

    def heavy(self, key: Any, make: Callable[[], Any]) -> Any:
        """The object held under `key`, made (after dropping whatever was held) when absent."""
        with self._lock:
            if self._heavy is None or self._heavy[0] != key:
                self._heavy = None  # free the old model before loading the next
                self._heavy = (key, make())
            return self._heavy[1]

    def loaded(self, ref: str):
        """(model, tokenizer) for generation, loaded once (CPU/GPU as detected)."""
        path = self.path(ref)
        return self.heavy(("generate", str(path)),
                          lambda: (models.load_model(path, self.device()), self.tokenizer(ref)))
