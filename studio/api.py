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
        self._tokenizers: dict[str, Any] = {}
        self._models: dict[str, Any] = {}

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
    def tokenizer(self, ref: str):
        """The model's tokenizer, loaded once per process."""
        path = str(self.model_path(ref))
        if path not in self._tokenizers:
            self._tokenizers[path] = models.load_tokenizer(Path(path))
        return self._tokenizers[path]

    def loaded_model(self, ref: str):
        """(model, tokenizer) for generation, loaded once per process (CPU/GPU as detected)."""
        path = str(self.model_path(ref))
        if path not in self._models:
            self._models.clear()  # one base model in memory at a time
            device = models.detect_device()
            self._models[path] = (models.load_model(Path(path), device), self.tokenizer(ref))
        return self._models[path]

    # ---- data -----------------------------------------------------------------------------
    def data_prepare(self, files: list[str], name: str, *, recipe: str = "auto",
                     model: str = models.DEFAULT_MODEL, max_tokens: int = 256,
                     max_len: int | None = None, overlap: int = 32, val_fraction: float = 0.1,
                     seed: int = 42, mapping: dict[str, str] | None = None,
                     generator_model: str | None = None, progress: Any = None, cancel: Any = None,
                     **recipe_params: Any) -> dict[str, Any]:

        from .data import prepare as prep
        from .data.recipes import RECIPES, RecipeParams

        prep.check_name(name)
        params = presets.build(RecipeParams, {"max_tokens": max_tokens, "overlap": overlap,
                                              **recipe_params}, "recipe parameters")
        tok = self.tokenizer(model)
        generator = None
        needs = recipe in RECIPES and (RECIPES[recipe].needs_generator or (
            params.keyword_source == "generator" and recipe == "keyword-pairs") or (
            params.code_summaries == "generator" and recipe in ("code-functions", "auto")))
        if needs:
            from .chat import make_generator

            generator = make_generator(*self.loaded_model(generator_model or model))
        version = self.store.next_dataset_version(name)
        summary = prep.prepare(files, name, self.home.datasets, tok, recipe=recipe, params=params,
                               max_len=max_len or max_tokens, val_fraction=val_fraction, seed=seed,
                               mapping=mapping, generator=generator, progress=progress,
                               cancel=cancel, version=version)
        self.store.add_dataset(name=name, version=version, path=summary["path"],
                               sources=summary["sources"], recipe=recipe,
                               params={**summary["params"], "model": model,
                                       "val_fraction": val_fraction, "seed": seed,
                                       "mapping": mapping or {}},
                               stats={k: summary[k] for k in ("splits", "tokens", "truncated",
                                                              "dropped_too_long",
                                                              "duplicates_removed",
                                                              "empty_removed", "formats",
                                                              "histogram", "recipe_counters",
                                                              "max_len")},
                               records=summary["records"])
        return summary

    def data_list(self) -> list[dict[str, Any]]:
        return [{"name": d["name"], "version": d["version"], "records": d["records"],
                 "recipe": d["recipe"], "sources": d["sources"], "created_at": d["created_at"],
                 "path": d["path"]} for d in self.store.list_datasets()]

    def dataset(self, name: str, version: int | None = None) -> dict[str, Any]:
        from .errors import DataError

        if "@v" in name and version is None:
            name, v = name.split("@v", 1)
            version = int(v) if v.isdigit() else None
        d = self.store.get_dataset(name, version)
        if d is None:
            known = sorted({x["name"] for x in self.store.list_datasets()})
            raise DataError(f"No dataset named '{name}'{f' version {version}' if version else ''}. "
                            f"Known datasets: {', '.join(known) or 'none yet'} — prepare one with "
                            "`python -m studio data prepare FILE --name NAME`.")
        if not Path(d["path"]).is_dir():
            raise DataError(f"Dataset {name} v{d['version']} is recorded but its folder "
                            f"{d['path']} is gone. Prepare it again.")
        return d

    def data_show(self, name: str, examples: int = 3) -> dict[str, Any]:
        from .data import prepare as prep

        d = self.dataset(name)
        d["examples"] = prep.read_split(Path(d["path"]), "train", examples)
        return d

    def data_preview(self, name: str, model: str | None = None, n: int = 5) -> list[list[tuple[str, bool]]]:
        """Rendered examples as (text, learned?) segments: the loss mask made visible."""
        from .data import prepare as prep, templates

        d = self.dataset(name)
        tok = self.tokenizer(model or d["params"].get("model", models.DEFAULT_MODEL))
        max_len = d["stats"].get("max_len", 512)
        return [templates.preview_segments(tok, templates.encode(tok, ex, max_len))
                for ex in prep.read_split(Path(d["path"]), "train", n)]

    def data_delete(self, name: str) -> dict[str, Any]:
        import shutil

        d = self.dataset(name)
        folder = Path(d["path"]).parent
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        self.store.delete_dataset(name)
        shutil.rmtree(folder, ignore_errors=True)
        return {"deleted": name, "bytes_freed": size}

    # ---- presets --------------------------------------------------------------------------
    def presets_list(self) -> list[dict[str, Any]]:
        return [{"name": p.name, "description": p.description, "method": p.method,
                 "model": p.model, "gpu_gb": p.gpu_gb} for p in presets.list_presets()]

    def preset_show(self, name: str) -> dict[str, Any]:
        return presets.get_preset(name).to_dict()

    def preset_help(self) -> dict[str, str]:
        return presets.field_help()


__all__ = ["Studio", "StudioError"]
