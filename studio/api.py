"""The Studio facade: the one API that the UI, the CLI and the tests call.

Owns wiring (home folder, store, registries) and returns plain dicts/lists ready to print as
JSON. Each method is thin: the work is done by the core modules it calls. Never imports gradio.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from . import models, presets
from .errors import StudioError
from .paths import Home, resolve_home
from .store import Store


class Studio:
    def __init__(self, home: str | Path | None = None):
        self.home: Home = resolve_home(home)
        self.store = Store(self.home.db)

    # ---- models ---------------------------------------------------------------------------
    def models_list(self) -> list[dict[str, Any]]:
        return models.list_models(self.home.models)

    def resolve_model(self, ref: str) -> models.ModelSpec:
        return models.resolve(ref, self.home.models)

    def model_info(self, ref: str) -> dict[str, Any]:
        return models.info(self.resolve_model(ref))

    def model_path(self, ref: str, progress: Any = None, token: str | None = None) -> Path:
        """Local files for `ref` (converting the embedded model / downloading a hub id once)."""
        return models.ensure_local(self.resolve_model(ref), self.home.models, token, progress)

    # ---- presets --------------------------------------------------------------------------
    def presets_list(self) -> list[dict[str, Any]]:
        return [{"name": p.name, "description": p.description, "method": p.method,
                 "model": p.model, "gpu_gb": p.gpu_gb} for p in presets.list_presets()]

    def preset_show(self, name: str) -> dict[str, Any]:
        return presets.get_preset(name).to_dict()

    def preset_help(self) -> dict[str, str]:
        return presets.field_help()


__all__ = ["Studio", "StudioError"]
