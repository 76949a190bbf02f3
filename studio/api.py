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
        self._pair: Any = None

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

    # ---- loaded models (one per process) ----------------------------------------------------
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
        from .data.recipes import RecipeParams

        prep.check_name(name)
        params = presets.build(RecipeParams, {"max_tokens": max_tokens, "overlap": overlap,
                                              **recipe_params}, "recipe parameters")
        tok = self.tokenizer(model)
        loaded: list = []

        def generator(prompt: str) -> str:  # the model loads only if a recipe asks for text
            if not loaded:
                from .chat import make_generator

                loaded.append(make_generator(*self.loaded_model(generator_model or model)))
            return loaded[0](prompt)

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
        size = models.folder_size(folder)
        self.store.delete_dataset(name)
        shutil.rmtree(folder, ignore_errors=True)
        return {"deleted": name, "bytes_freed": size}

    # ---- training ---------------------------------------------------------------------------
    def device(self) -> str:
        import os

        return models.detect_device(os.environ.get("STUDIO_DEVICE"))

    def train_create(self, preset: str, dataset: str, model: str | None = None,
                     overrides: list[str] | None = None, max_steps: int | None = None) -> dict[str, Any]:
        """Validate everything, then create the run folder, config.yaml and its store row."""
        from .train import config as tcfg, runner

        d = self.dataset(dataset)
        cfg = tcfg.build_config(preset, d, model, overrides or [], max_steps)
        self.resolve_model(cfg["model"])
        notes = tcfg.preflight(cfg, d, self.tokenizer(cfg["model"]), self.device())
        return runner.summary(runner.create(self.store, self.home.runs, cfg, notes))

    def train_run(self, run_id: str, progress: bool = False) -> dict[str, Any]:
        """Run or resume in this process (the CLI's foreground mode, and the UI's child)."""
        from .train import runner

        return runner.summary(runner.execute(self, run_id, progress))

    def train_spawn(self, run_id: str) -> dict[str, Any]:
        from .train import runner

        return runner.spawn(self, run_id)

    def runs_list(self) -> list[dict[str, Any]]:
        from .train import runner

        runner.reconcile(self)
        return [runner.summary(r) for r in self.store.list_runs()]

    def run_show(self, run_id: str) -> dict[str, Any]:
        from .train import runner

        runner.reconcile(self)
        run = runner.get(self, run_id)
        out = runner.summary(run)
        out["metrics"] = self.store.get_metrics(run_id)
        out["artifacts"] = {**(run.get("artifacts") or {}),
                            **(runner.artifacts(Path(run["path"])) if run.get("path") else {})}
        out["config"] = run.get("config")
        out["path"] = run.get("path")
        out["exports"] = self.store.list_exports(run_id)
        return out

    def run_events(self, run_id: str) -> list[dict[str, Any]]:
        from .train import runner

        return runner.events(Path(runner.get(self, run_id)["path"]))

    def run_stop(self, run_id: str) -> dict[str, Any]:
        from .train import runner

        return runner.summary(runner.stop(self, run_id))

    def run_delete(self, run_id: str) -> dict[str, Any]:
        import shutil

        from .train import runner

        run = runner.get(self, run_id)
        if run["status"] == "running" and runner.alive(run.get("pid")):
            from .errors import RunError

            raise RunError(f"Run {run_id} is still training; stop it before deleting it.")
        folder = Path(run["path"]) if run.get("path") else None
        size = models.folder_size(folder)
        self.store.delete_run(run_id)
        if folder:
            shutil.rmtree(folder, ignore_errors=True)
        return {"deleted": run_id, "bytes_freed": size}

    # ---- compare and report ---------------------------------------------------------------
    def pair_for(self, run_id: str, model: str | None = None):
        """The cached base model with this run's adapter loaded and selected."""
        from . import compare
        from .train import runner

        run = runner.get(self, run_id)
        compare.check_base(run, model or run["model"])
        adapter = compare.adapter_dir(run)
        path = str(self.model_path(run["model"]))
        if self._pair is None or self._pair[0] != path:
            self._models.clear()
            base, tok = models.load_model(Path(path), self.device()), self.tokenizer(run["model"])
            self._pair = (path, compare.Pair(base, tok))
        pair = self._pair[1]
        pair.use(run_id, adapter)
        return run, pair

    def compare(self, run_id: str, prompt: str, system: str | None = None,
                history: list[dict[str, str]] | None = None, max_new_tokens: int = 128,
                temperature: float = 0.0, seed: int = 0, engine: str = "hf",
                model: str | None = None) -> dict[str, Any]:
        """The same prompt answered by base and tuned, same settings and seed."""
        from .chat import GenSettings, generate
        from .errors import ConfigError

        if not prompt or not prompt.strip():
            raise ConfigError("The prompt is empty; type a question to compare the answers.")
        messages = ([{"role": "system", "content": system}] if system else []) + list(history or []) + [
            {"role": "user", "content": prompt}]
        if engine == "llama.cpp":
            return self._compare_llama(run_id, messages, max_new_tokens, temperature, seed)
        if engine != "hf":
            raise ConfigError(f"Unknown engine '{engine}'; use hf or llama.cpp.")
        run, pair = self.pair_for(run_id, model)
        s = GenSettings(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
        out: dict[str, Any] = {"run_id": run_id, "engine": "hf", "model": run["model"]}
        for side in ("base", "tuned"):
            with pair.side(side) as m:
                r = generate(m, pair.tok, messages, s)
            out[side] = r["text"]
            out[f"{side}_tokens"] = r["tokens"]
            out["prompt_truncated"] = r["prompt_truncated"]
        if out["prompt_truncated"]:
            out["notice"] = "The conversation was longer than the context; its start was cut."
        out["identical"] = out["base"] == out["tuned"]
        return out

    def compare_stream(self, run_id: str, messages: list[dict[str, str]], settings: Any, side: str):
        """Yield growing answer text for one side (the UI streams base, then tuned)."""
        from .chat import stream

        _, pair = self.pair_for(run_id)
        with pair.side(side) as m:
            yield from stream(m, pair.tok, messages, settings)

    def _compare_llama(self, run_id, messages, max_new_tokens, temperature, seed):
        """Base GGUF vs the tuned side as llama.cpp runs it: base + LoRA GGUF, else the merged GGUF."""
        from . import compare
        from .errors import ExportError
        from .train import runner

        run = runner.get(self, run_id)
        done = {e["format"]: e for e in self.store.list_exports(run_id)
                if Path(e["path"]).exists() and e["format"] in ("lora-gguf", "gguf")}
        if not done:
            raise ExportError("The llama.cpp engine needs this run exported as GGUF first. Run: "
                              f"python -m studio export --run {run_id} --format gguf (or "
                              "--format lora-gguf), or use the Export step.")
        base = self.base_gguf(run["model"])  # made once (f16, ~2 s for the embedded model)
        if "lora-gguf" in done:
            tuned_model, lora = base, Path(done["lora-gguf"]["path"])
        else:
            tuned_model, lora = Path(done["gguf"]["path"]), None
        out = {"run_id": run_id, "engine": "llama.cpp", "model": run["model"],
               "tuned_file": str(lora or tuned_model)}
        for side, path, adapter in (("base", base, None), ("tuned", tuned_model, lora)):
            llm = compare.llama_engine(path, adapter)
            out[side] = compare.llama_chat(llm, messages, max_new_tokens, temperature, seed)
            del llm
        out["identical"] = out["base"] == out["tuned"]
        return out

    def report(self, run_id: str, refresh: bool = False) -> dict[str, Any]:
        """The did-it-learn report (computed once, then read from the store)."""
        from . import report as rep

        if not refresh:
            cached = self.store.get_report(run_id)
            if cached:
                return cached
        import json

        run, pair = self.pair_for(run_id)
        data = rep.build(pair, run, self.dataset(run["dataset"]), self.run_events(run_id))
        self.store.put_report(run_id, data)
        (Path(run["path"]) / "report.json").write_text(json.dumps(data, indent=1))
        return data

    def report_file(self, run_id: str) -> Path:
        """report.json in the run folder (computing the report first if needed)."""
        import json

        from .train import runner

        data = self.report(run_id)
        path = Path(runner.get(self, run_id)["path"]) / "report.json"
        if not path.exists():  # computed before reports were written to the run folder
            path.write_text(json.dumps(data, indent=1))
        return path

    # ---- export ---------------------------------------------------------------------------
    def export(self, fmt: str, run_id: str | None = None, model: str | None = None,
               quant: str | None = None, out: str | None = None, verify: bool = False,
               progress: Any = None) -> dict[str, Any]:
        """Write one export (atomically), optionally check parity, record it in the store."""
        from . import compare
        from .errors import ExportError
        from .export import exporter
        from .train import runner

        if bool(run_id) == bool(model):
            raise ExportError("Give either --run RUN_ID (the tuned model) or --model MODEL (a "
                              "model without a run), not both or neither.")
        quant = exporter.check_request(fmt, quant, run_id)
        adapter = None
        if run_id:
            run = runner.get(self, run_id)
            adapter, model_ref, label = compare.adapter_dir(run), run["model"], run_id
        else:
            model_ref, label = model, self.resolve_model(model).name
        base_folder = self.model_path(model_ref)
        if base_folder.is_file():
            raise ExportError(f"{model_ref} is already a GGUF file; export works from an HF folder "
                              "(config.json + safetensors).")
        info = models.info_from_folder(base_folder)
        is_dir = fmt in ("adapter", "merged", "ollama")
        ext = {"gguf": f"-{quant}.gguf", "lora-gguf": f"-lora-{quant}.gguf"}.get(fmt, f"-{fmt}")
        dest = Path(out).expanduser() if out else self.home.exports / label / f"{label}{ext}"
        if not out:
            dest.parent.mkdir(parents=True, exist_ok=True)
        per = exporter.BYTES_PER_PARAM.get(quant, 4.0) if fmt != "merged" else 4.0
        need = int((info["params"] or 0) * (per if fmt != "adapter" else 0.02)) + 50_000_000
        if quant in ("q4_k_m", "q5_k_m", "q6_k"):
            need += (info["params"] or 0) * 2  # the f16 intermediate
        exporter.check_out(dest, need, is_dir)
        result = exporter.run(fmt, quant, base_folder=base_folder, adapter=adapter, out=dest,
                              name=label, tok=self.tokenizer(model_ref), verify=verify,
                              base_gguf=lambda: self.base_gguf(model_ref), progress=progress)
        self.store.add_export(run_id=run_id, model=model_ref, format=fmt, quant=quant,
                              path=result["path"], bytes=result["bytes"],
                              seconds=result["seconds"], parity=result.get("parity"))
        result["use"] = exporter.usage(result, label.lower())
        return result

    def base_gguf(self, model_ref: str) -> Path:
        """An f16 GGUF of the base model (made once and recorded), for LoRA GGUFs and llama.cpp."""
        for e in self.store.list_exports():
            if (e["format"] == "gguf" and not e["run_id"] and e["model"] == model_ref
                    and e["quant"] in ("f16", "f32") and Path(e["path"]).exists()):
                return Path(e["path"])
        return Path(self.export("gguf", model=model_ref, quant="f16")["path"])

    def exports_list(self, run_id: str | None = None) -> list[dict[str, Any]]:
        return self.store.list_exports(run_id)

    def inventory(self) -> list[dict[str, Any]]:
        """Every dataset (all versions together), run and export, with its bytes on disk."""
        from .train import runner

        runner.reconcile(self)
        seen: dict[str, dict[str, Any]] = {}
        for d in self.store.list_datasets():  # newest version first per name
            seen.setdefault(d["name"], {"kind": "dataset", "id": d["name"],
                                        "detail": f"v{d['version']}, {d['records']} examples",
                                        "bytes": models.folder_size(Path(d["path"]).parent)})
        runs = [{"kind": "run", "id": r["id"], "bytes": models.folder_size(r.get("path")),
                 "detail": f"{r['status']}, {r['preset']}, {r['dataset']}"}
                for r in self.store.list_runs()]
        exports = [{"kind": "export", "id": str(e["id"]), "bytes": e["bytes"] or 0,
                    "detail": f"{e['format']} {e['quant']} of {e['run_id'] or e['model']}"}
                   for e in self.store.list_exports()]
        return [*seen.values(), *runs, *exports]

    def export_delete(self, export_id: int) -> dict[str, Any]:
        import shutil

        from .errors import ExportError

        e = self.store.get_export(export_id)
        if e is None:
            raise ExportError(f"No export with id {export_id}.")
        p = Path(e["path"])
        size = models.folder_size(p)
        self.store.delete_export(export_id)
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        return {"deleted": export_id, "bytes_freed": size}

    # ---- memory -----------------------------------------------------------------------------
    def estimate(self, model: str, gpu: str | None = None, vram_gb: float | None = None,
                 measure: bool = False, **setting: Any) -> dict[str, Any]:
        """Estimate (instant, no torch), fit verdict and advice; optionally measure for real."""
        from . import memory_advice as ma

        shape, name = ma.load_shape(model, self.home.models)
        st = ma.setting_from(**setting)
        out = ma.report(shape, st, gpu, vram_gb)
        out["model"] = name
        checks = self.store.list_memory_checks(name)
        ratios = [c["measured_gb"] / c["estimate_gb"] for c in checks
                  if c["device"] == st.device and c["estimate_gb"]]
        if ratios:
            ratios.sort()
            out["calibrated_total_gb"] = round(out["total_gb"] * ratios[len(ratios) // 2], 3)
            out["calibration"] = f"median measured/estimate over {len(ratios)} earlier checks"
        if measure:
            out["measured"] = self.memory_measure(model, name, out)
        return out

    def memory_measure(self, model: str, name: str, est: dict[str, Any]) -> dict[str, Any]:
        from . import memory, memory_advice as ma
        from .errors import ConfigError
        from .memory_measure import run_in_child

        st = dict(est["setting"])
        device = self.device()
        if device == "mps":
            raise ConfigError("The measured check supports CUDA and CPU, not Apple MPS.")
        st["device"] = "cuda" if device == "cuda" else "cpu"
        path = self.model_path(model)
        if not Path(path).is_dir():
            raise ConfigError(f"{model} is not a local model folder; the measured check needs the "
                              "weights (use the embedded model or a downloaded folder).")
        got = run_in_child(Path(path), st)
        shape, _ = ma.load_shape(str(path))
        compare_st = memory.Setting(**{**st, "batch": got["batch"], "seq_len": got["seq_len"],
                                       "method": "qlora" if st["method"] == "qlora" else "lora"})
        got["estimate_gb"] = memory.comparable(memory.estimate(shape, compare_st), got["metric"])
        got["error_pct"] = round(100 * (got["estimate_gb"] - got["measured_gb"]) / got["measured_gb"], 1)
        self.store.add_memory_check(model=name, device=st["device"], settings=compare_st.__dict__,
                                    estimate_gb=got["estimate_gb"], measured_gb=got["measured_gb"],
                                    extra=got)
        return got

    # ---- presets --------------------------------------------------------------------------
    def presets_list(self) -> list[dict[str, Any]]:
        return [{"name": p.name, "description": p.description, "method": p.method,
                 "model": p.model, "gpu_gb": p.gpu_gb} for p in presets.list_presets()]

    def preset_show(self, name: str) -> dict[str, Any]:
        return presets.get_preset(name).to_dict()

    def preset_help(self) -> dict[str, str]:
        return presets.field_help()


__all__ = ["Studio", "StudioError"]
