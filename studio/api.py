"""The Studio facade: the one API that the UI, the CLI and the tests call.

Owns wiring only: the home folder, the store and the model cache, handed explicitly to the step
services (data, runs, compare/report, export, memory), and pass-throughs that return plain
dicts/lists ready to print as JSON. No work happens here; no service knows this class. Never
imports gradio or torch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from . import paths, presets
from .data.service import DataService
from .errors import ConfigError, StudioError
from .evaluate.compare import CompareService
from .evaluate.harness import EvalService
from .export.service import ExportService
from .memory.service import MemoryService
from .models.cache import ModelCache
from .paths import Home, resolve_home
from .spec import RunSpec, field_help, flat_fields, from_flat
from .store import Store
from .train.measure import run_in_child
from .train.runs import RunService

ASSETS = paths.ASSETS


class Studio:
    def __init__(self, home: str | Path | None = None):
        self.home: Home = resolve_home(home)
        self.store = Store(self.home.db)
        self.models = ModelCache(self.home.models)
        self.data = DataService(self.store, self.home.datasets, self.models)
        self.runs = RunService(self.store, self.home.runs, self.models, self.data.get)
        self.exports = ExportService(self.store, self.home.exports, self.models, self.runs.get)
        self.compares = CompareService(self.store, self.models, self.runs.get, self.data.get,
                                       self.exports.base_gguf, self.home.replay)
        self.memory = MemoryService(self.store, self.home.models, self.models, run_in_child)
        self.evals = EvalService(self.store, self.models, self.runs.get, self.compares.session)
        self.reconcile()

    def reconcile(self) -> None:
        """Put right what a crash left (temp files, unregistered complete work, dead runs)."""
        self.models.reconcile()
        self.data.reconcile()
        self.runs.recover()
        self.exports.reconcile()

    # ---- models ---------------------------------------------------------------------------
    def models_list(self) -> list[dict[str, Any]]:
        return self.models.list()

    def resolve_model(self, ref: str):
        return self.models.resolve(ref)

    def model_info(self, ref: str) -> dict[str, Any]:
        return self.models.info(ref)

    def model_path(self, ref: str, progress: Any = None, token: str | None = None) -> Path:
        return self.models.path(ref, progress, token)

    def tokenizer(self, ref: str):
        return self.models.tokenizer(ref)

    def loaded_model(self, ref: str):
        return self.models.loaded(ref)

    def device(self) -> str:
        return self.models.device()

    # ---- data -----------------------------------------------------------------------------
    def data_prepare(self, files: list[str], name: str, **options: Any) -> dict[str, Any]:
        return self.data.prepare(files, name, **options)

    def data_list(self) -> list[dict[str, Any]]:
        return self.data.list()

    def dataset(self, name: str, version: int | None = None) -> dict[str, Any]:
        return self.data.get(name, version)

    def data_show(self, name: str, examples: int = 3) -> dict[str, Any]:
        return self.data.show(name, examples)

    def data_triage(self, name: str, model: str | None = None) -> dict[str, Any]:
        return self.data.triage(name, model)

    def data_pairs(self, name: str, out: str | None = None, from_run: str | None = None,
                   **options: Any) -> dict[str, Any]:
        """Factuality pairs; `from_run`: the run's tuned model answers closed book (on-policy
        pairs for DPO after that SFT run, as the factuality paper makes them)."""
        if from_run:
            given = [f for f, k in (("--model", "model"), ("--generator-model", "generator_model"),
                                    ("--generator-url", "generator_url")) if options.get(k)]
            if given:
                raise ConfigError(f"--from-run answers with that run's own model, so {', '.join(given)} "
                                  "cannot be used with it; leave them out, or leave out --from-run.")
            run = self.runs.get(from_run)  # an unknown run: its message, before any work
            self.compares.tuned_answers(from_run, [])  # a run without an adapter yet: the same
            options["model"] = run["model"]  # the pairs are prepared for the model they train
            options["answerer"] = (f"run {from_run} (its tuned model, transformers)",
                                   lambda questions: self.compares.tuned_answers(from_run, questions))
        return self.data.pairs(name, out, **options)

    def data_check(self, name: str, heldout: str | None = None, model: str | None = None,
                   suspects: bool = True, progress: Any = None, cancel: Any = None) -> dict[str, Any]:
        """Duplicates, held-out leaks and suspect rows of a version, with examples (check.json)."""
        return self.data.check(name, heldout, model, suspects, progress, cancel)

    def data_drop(self, name: str, kinds: str | list[str], heldout: str | None = None,
                  model: str | None = None, progress: Any = None, cancel: Any = None) -> dict[str, Any]:
        """A new version NAME@vK without the rows flagged as `kinds`; the old one stays."""
        return self.data.drop(name, kinds, heldout, model, progress, cancel)

    def data_keep(self, name: str, rows: list[int]) -> dict[str, Any]:
        """Keep these flagged rows (indexes in the check) in every later version."""
        return self.data.keep(name, rows)

    @staticmethod
    def check_contract(result: dict[str, Any]) -> dict[str, Any]:
        """A check as `data check --json` prints it (the keys scripts rely on)."""
        from .data.checks import contract

        return contract(result)

    def data_preview(self, name: str, model: str | None = None, n: int = 5):
        return self.data.preview(name, model, n)

    def data_delete(self, name: str) -> dict[str, Any]:
        return self.data.delete(name)

    # ---- training ---------------------------------------------------------------------------
    def train_create(self, preset: str, dataset: str, model: str | None = None,
                     overrides: list[str] | None = None, max_steps: int | None = None,
                     **changes: Any) -> dict[str, Any]:
        """A validated run (folder, config.yaml, store row). `overrides` are `key=value` texts
        (the CLI's --set); `changes` are settings by name (the UI's fields: lr=…, rank=…)."""
        return self.runs.create(preset, dataset, model, overrides, max_steps, **changes)

    def rewards_preview(self, dataset: str, preset: str = "cpu-quickstart-grpo", model: str | None = None,
                        from_run: str | None = None, rewards: str | None = None, groups: int = 8,
                        on_prompt=None) -> dict[str, Any]:
        """`{"rewards", "groups", "zero_spread", "mean", "verdict", "examples"}` before an RL run;
        `on_prompt(done, total)` as the prompts' answers are sampled."""
        return self.runs.preview_rewards(dataset, preset, model, from_run, rewards, groups, on_prompt)

    def rewards_for(self, dataset: str, rewards: str = "") -> list[dict[str, str]]:
        """The rewards an RL run on `dataset` would use, each with its why (the Train step)."""
        return self.runs.rewards_for(dataset, rewards)

    @staticmethod
    def rewards_list() -> list[dict[str, str]]:
        """The reward registry: name, role and the one-line why (the UI and `rewards list`)."""
        from .train.rewards import REWARDS

        return [{"name": r.name, "role": r.role, "why": r.why} for r in REWARDS.values()]

    def train_run(self, run_id: str, progress: bool = False) -> dict[str, Any]:
        return self.runs.run(run_id, progress)

    def train_spawn(self, run_id: str) -> dict[str, Any]:
        return self.runs.spawn(run_id)

    def train_launch_config(self, run_id: str, gpus: int, machines: int = 1) -> tuple[Path, str]:
        return self.runs.accelerate_config(run_id, gpus, machines)

    def runs_list(self) -> list[dict[str, Any]]:
        return self.runs.list()

    def run_show(self, run_id: str) -> dict[str, Any]:
        return self.runs.show(run_id)

    def run_events(self, run_id: str) -> list[dict[str, Any]]:
        return self.runs.events(run_id)

    def run_stop(self, run_id: str) -> dict[str, Any]:
        return self.runs.stop(run_id)

    def run_request_stop(self, run_id: str) -> dict[str, Any]:
        return self.runs.request_stop(run_id)

    def run_delete(self, run_id: str) -> dict[str, Any]:
        from .models.registry import folder_size

        return self.runs.delete(run_id, folder_size)

    # ---- compare and report ---------------------------------------------------------------
    def pair_for(self, run_id: str, model: str | None = None):
        return self.compares.pair_for(run_id, model)

    def compare(self, run_id: str, prompt: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self.compares.compare(run_id, prompt, *args, **kwargs)

    def compare_stream(self, run_id: str, messages: list[dict[str, str]], side: str, **settings: Any):
        return self.compares.stream(run_id, messages, side, **settings)

    def report(self, run_id: str, refresh: bool = False) -> dict[str, Any]:
        return self.compares.report(run_id, refresh)

    def set_strength(self, run_id: str, value: float) -> dict[str, Any]:
        return self.compares.set_strength(run_id, value)

    def heldout_questions(self, run_id: str) -> list[str]:
        return self.compares.heldout_questions(run_id)

    def run_strength(self, run_id: str) -> float:
        return self.compares.strength(run_id)

    def report_file(self, run_id: str) -> Path:
        return self.compares.report_file(run_id)

    # ---- benchmarks -------------------------------------------------------------------------
    def evaluate(self, tasks: list[str], run_id: str | None = None, model: str | None = None,
                 limit: int | None = None, gguf: bool = False, progress: Any = None,
                 cancel: Any = None, refresh: bool = False) -> dict[str, Any]:
        """lm-evaluation-harness tasks on a run's base and tuned model (or a model alone)."""
        return self.evals.evaluate(tasks, run_id, model, limit, gguf, progress, cancel, refresh)

    def evaluations(self, run_id: str | None = None) -> list[dict[str, Any]]:
        return self.evals.list(run_id)

    def evaluation_delete(self, eval_id: int) -> dict[str, Any]:
        return self.evals.delete(eval_id)

    # ---- export ---------------------------------------------------------------------------
    def export(self, fmt: str, run_id: str | None = None, model: str | None = None,
               quant: str | None = None, out: str | None = None, verify: bool | None = False,
               progress: Any = None, force: bool = False) -> dict[str, Any]:
        """One export; `verify` checks parity (None: where llama.cpp is installed), and
        `progress(fraction, message)` hears each stage, the check's answers included."""
        return self.exports.export(fmt, run_id, model, quant, out, verify, progress, force)

    def base_gguf(self, model_ref: str) -> Path:
        return self.exports.base_gguf(model_ref)

    def exports_list(self, run_id: str | None = None) -> list[dict[str, Any]]:
        return self.exports.list(run_id)

    def export_delete(self, export_id: int) -> dict[str, Any]:
        return self.exports.delete(export_id)

    def inventory(self) -> list[dict[str, Any]]:
        from .history import inventory

        self.runs.reconcile()
        return inventory(self.store)

    # ---- memory -----------------------------------------------------------------------------
    def estimate(self, model: str, gpu: str | None = None, vram_gb: float | None = None,
                 measure: bool = False, spec: RunSpec | None = None, **setting: Any) -> dict[str, Any]:
        """Estimate `spec` (or the estimate defaults) changed by flat settings (seq_len=…)."""
        return self.memory.estimate(model, from_flat(spec, **setting), gpu, vram_gb, measure)

    # ---- presets, choices and help ------------------------------------------------------------
    def presets_list(self) -> list[dict[str, Any]]:
        return [{"name": p.name, "description": p.description, "method": p.method,
                 "model": p.model, "gpu_gb": p.gpu_gb} for p in presets.list_presets()]

    def preset(self, name: str) -> RunSpec:
        return presets.get_preset(name)

    def preset_show(self, name: str) -> dict[str, Any]:
        return self.preset(name).to_dict()

    @staticmethod
    def preset_help() -> dict[str, str]:
        return field_help()

    @staticmethod
    def estimate_fields() -> dict[str, Any]:
        """Flat setting name → its field (help, type, choices): the estimate's flags."""
        return flat_fields()

    @staticmethod
    def choices() -> dict[str, Any]:
        """What each step offers (recipes, file types, formats, GPUs, …) for the UI and CLI."""
        from .evaluate.report import sample_questions

        return {"data": DataService.choices(), "export": ExportService.choices(),
                "memory": MemoryService.choices(), "sample_questions": sample_questions(),
                "sample_data": str(ASSETS / "sample" / "product_faq.jsonl")}


__all__ = ["Studio", "StudioError"]
