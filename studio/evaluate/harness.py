"""Before/after benchmarks through EleutherAI's lm-evaluation-harness (`python -m studio eval`).

Owns naming the tasks (any task the harness knows, with close names suggested for a typo, or a
folder of the harness's own YAML tasks over local files — handed over as an include path, its
task names used), running them on the base model and the tuned one — the same weights, the
adapter switched off for the base and on at the strength the run keeps for the tuned (one copy in
memory) — and on an exported GGUF through llama.cpp (llama_lm.py), reading the harness's results
into {task: {side: {metric, metric_stderr}}} with its own task and metric names, a line in plain
words per task ("studio_general 46% → 44%: no real change" when the change is within twice the
combined standard error), and keeping them with the run (studio.db), so the same request again is
read back. A task whose data is not on this machine and cannot be downloaded says so at once;
Cancel is heard between the model's batches.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

from ..errors import Cancelled, ConfigError, StudioError
from .. import paths
from ..paths import RUN

ASSETS = paths.ASSETS
LOCAL = ASSETS / "eval"            # the studio's own tasks, always on the include path
FORMAT = 1                         # bump when results are computed differently: stored ones are redone


class EvalError(StudioError):
    """A task that cannot be evaluated here (unknown, broken, or its data out of reach)."""


def task_names_in(folder: Path) -> list[str]:
    """The task names a folder of harness YAML files defines (`task:` keys)."""
    import yaml

    from ..knobs import yaml_loader

    names = []
    for f in sorted(Path(folder).rglob("*.yaml")):
        try:
            data = yaml.load(f.read_text(encoding="utf-8"), Loader=_lenient(yaml_loader()))
        except (OSError, yaml.YAMLError) as e:
            raise EvalError(f"{f}: not a readable task file ({getattr(e, 'problem', e)}). Fix the YAML "
                            "(lm-evaluation-harness's task format) or leave the file out.") from None
        if isinstance(data, dict) and isinstance(data.get("task"), str):
            names.append(data["task"])
    return names


def _lenient(loader):
    """A loader that reads the harness's `!function` tags as plain text (names only matter here)."""
    class Lenient(loader):
        pass

    Lenient.add_constructor("!function", lambda ld, node: ld.construct_scalar(node))
    return Lenient


def resolve(tokens: list[str]) -> tuple[list[str], list[str]]:
    """(task names, include paths) for `--tasks`: folders become include paths (their tasks),
    names must be tasks the harness knows (with the studio's own)."""
    offline_unless_reachable()
    names, paths = [], [str(LOCAL)]
    for tok in [t.strip() for t in tokens if t.strip()]:
        folder = Path(tok).expanduser()
        if folder.is_dir():
            found = task_names_in(folder)
            if not found:
                raise EvalError(f"{folder} holds no task: a task folder has YAML files in "
                                "lm-evaluation-harness's format, each with a `task:` name.")
            paths.append(str(folder.resolve()))
            names += found
        elif os.sep in tok or tok.endswith((".yaml", ".yml")):
            raise EvalError(f"Task folder {tok} does not exist. Give a folder of task YAML files, "
                            "or a task name (python -m lm_eval ls tasks lists them).")
        else:
            names.append(tok)
    if not names:
        raise ConfigError("Name at least one task (--tasks studio_general, or a task folder).")
    local = task_index(paths, defaults=False)  # the harness's own 14k tasks take 6 s more
    known = set(local.all_tasks) if set(names) <= set(local.all_tasks) else set(
        task_index(paths, defaults=True).all_tasks)
    for n in names:
        if n not in known:
            close = difflib.get_close_matches(n, sorted(known), n=3, cutoff=0.6)
            raise EvalError(f"Unknown task '{n}'." + (f" Did you mean: {', '.join(close)}?" if close else "")
                            + " Tasks are the harness's names (python -m lm_eval ls tasks) or a folder "
                              "of task YAML files.")
    return list(dict.fromkeys(names)), paths


def request_key(tasks: list[str], paths: list[str], limit: int | None, adapter_stamp: str) -> str:
    """What makes two evaluations the same: tasks, their folders' contents, limit, the adapter."""
    h = hashlib.sha256(json.dumps([FORMAT, sorted(tasks), limit, adapter_stamp]).encode())
    for p in paths:
        for f in sorted(Path(p).rglob("*")):
            if f.is_file() and f.suffix in (".yaml", ".yml", ".jsonl", ".json", ".csv", ".py"):
                h.update(f.name.encode() + str(f.stat().st_size).encode() + str(f.stat().st_mtime_ns).encode())
    return h.hexdigest()[:20]


def metrics_of(result: dict[str, Any]) -> dict[str, float | None]:
    """The harness's "acc,none" / "acc_stderr,none" keys as acc / acc_stderr (N/A → None)."""
    out = {}
    for k, v in result.items():
        if "," not in k:
            continue
        name = k.split(",")[0]
        out[name] = float(v) if isinstance(v, (int, float)) else None
    return out


def plain(task: str, base: dict[str, Any], tuned: dict[str, Any]) -> str:
    """One line: the main metric before and after, and whether the change is more than noise."""
    metric = next((m for m in ("acc_norm", "acc", "exact_match", "f1") if base.get(m) is not None), None)
    if metric is None:
        metric = next((m for m in base if not m.endswith("_stderr") and base[m] is not None), None)
    if metric is None or tuned.get(metric) is None:
        return f"{task}: no comparable metric."
    b, t = base[metric], tuned[metric]
    se = ((base.get(f"{metric}_stderr") or 0) ** 2 + (tuned.get(f"{metric}_stderr") or 0) ** 2) ** 0.5
    if se and abs(t - b) <= 2 * se:
        verdict = "no real change (within the measurement's noise)"
    else:
        verdict = ("better" if t > b else "worse") + (f" by {abs(t - b):.1%}" if se else "")
        verdict += "" if se else " (no standard error to judge it by)"
    return f"{task} {metric} {b:.1%} → {t:.1%}: {verdict}."


def offline_message(task: str, e: BaseException) -> str:
    return (f"Task {task} needs its data from the Hugging Face hub, which is not in this machine's "
            f"cache and cannot be downloaded now ({type(e).__name__}). Run it once with a network "
            "connection to cache it, or evaluate a local task folder (--tasks path/to/tasks).")


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether the hub answers at all (a name lookup and a TCP connection, a few seconds at most)."""
    import socket

    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def offline_unless_reachable() -> None:
    """Without a way to the hub, the hub and datasets libraries work from their caches (set
    before they read their settings, and in them when they already have)."""
    import sys

    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "20")
    if os.environ.get("HF_DATASETS_OFFLINE") or hub_reachable():
        return
    os.environ["HF_DATASETS_OFFLINE"] = os.environ["HF_HUB_OFFLINE"] = "1"
    if "datasets" in sys.modules:
        import datasets.config

        datasets.config.HF_DATASETS_OFFLINE = True
        datasets.config.HF_HUB_OFFLINE = True
    if "huggingface_hub" in sys.modules:
        import huggingface_hub.constants

        huggingface_hub.constants.HF_HUB_OFFLINE = True


_INDEXES: dict[tuple, Any] = {}


def task_index(paths: list[str], defaults: bool):
    """The harness's TaskManager over the include folders (and its own tasks with `defaults`),
    built once per process while the folders' YAML files are unchanged: indexing the harness's
    tasks takes seconds, and one evaluation asks twice (resolve, then run)."""
    from lm_eval.tasks import TaskManager

    stamp = tuple((str(f), f.stat().st_mtime_ns) for p in paths for f in sorted(Path(p).rglob("*.y*ml")))
    key = (tuple(paths), defaults, stamp)
    if key not in _INDEXES:
        _INDEXES[key] = TaskManager(include_path=paths, include_defaults=defaults)
    return _INDEXES[key]


def manager(paths: list[str], task: str):
    """A task manager that knows `task`: the local folders alone when they hold it (fast)."""
    local = task_index(paths, defaults=False)
    return local if task in local.all_tasks else task_index(paths, defaults=True)


def run_harness(lm, tasks: list[str], paths: list[str], limit: int | None) -> dict[str, dict[str, Any]]:
    """The harness on one model: {task: metrics}. Without a way to the hub the datasets library
    reads its cache only, so a task whose data is not there fails at once instead of retrying."""
    offline_unless_reachable()
    from lm_eval import simple_evaluate

    out = {}
    for task in tasks:  # one task at a time: a missing dataset names its task
        try:
            r = simple_evaluate(model=lm, tasks=[task], limit=limit, task_manager=manager(paths, task),
                                bootstrap_iters=1000, log_samples=False, verbosity="ERROR")
        except (Cancelled, StudioError):
            raise
        except Exception as e:
            text = f"{type(e).__name__}: {e}"
            if any(w in text for w in ("ConnectionError", "offline", "Offline", "resolve", "MaxRetry",
                                       "couldn't reach", "Couldn't reach", "LocalEntryNotFound")):
                raise EvalError(offline_message(task, e)) from None
            raise EvalError(f"Task {task} could not run: {text[:400]}. If it is a task folder of yours, "
                            "check its YAML and data files.") from None
        for name, res in (r or {}).get("results", {}).items():
            out[name] = metrics_of(res)
    return out


def hf_lm(model, tok, cancel: Callable[[], bool] | None, progress: Callable[[int], None] | None):
    """The harness's HFLM over a model already in memory, checking Cancel at every batch."""
    from lm_eval.models.huggingface import HFLM

    class StudioLM(HFLM):
        def _model_call(self, inps, *a, **kw):
            if cancel is not None and cancel():
                raise Cancelled("Cancelled; nothing was saved.")
            if progress is not None:
                progress(int(inps.shape[0]))
            return super()._model_call(inps, *a, **kw)

    return StudioLM(pretrained=model, tokenizer=tok, batch_size=16)


class EvalService:
    """Benchmarks of a run (base vs tuned, and its GGUF) or of a model alone. Dependencies: the
    store, the model cache, a run look-up, the Compare engine's session (one weight copy, held
    while it is scored so no other request switches its adapter)."""

    def __init__(self, store, cache, run: Callable[[str], dict[str, Any]], session: Callable):
        self.store, self.cache, self.run, self.session = store, cache, run, session

    def evaluate(self, tasks: list[str], run_id: str | None = None, model: str | None = None,
                 limit: int | None = None, gguf: bool = False, progress: Any = None,
                 cancel: Callable[[], bool] | None = None, refresh: bool = False) -> dict[str, Any]:
        if limit is not None and limit <= 0:
            raise ConfigError(f"--limit {limit}: give a positive number of questions per task (or "
                              "leave it out for all of them).")
        if bool(run_id) == bool(model):
            raise ConfigError("Evaluate a run (--run ID: base and tuned) or a model alone (--model REF).")
        if gguf and not run_id:
            raise ConfigError("--gguf evaluates a run's exported GGUF; give --run ID.")
        names, paths = resolve(tasks)
        exported = self._gguf_file(run_id) if gguf else None  # said before any work
        t0 = time.time()
        with self.session(run_id) if run_id else nullcontext((None, None)) as (run, pair):
            if run_id:
                ref, tok = run["model"], pair.tok
                stamp = str((Path(run["path"]) / RUN.adapter / "adapter_model.safetensors").stat().st_mtime_ns)
                sides = ("base", "tuned")
            else:
                ref, stamp, sides = model, "", ("base",)
            key = request_key(names, paths, limit, stamp + ("+gguf" if gguf else ""))
            if not refresh:
                kept = self.store.get_evaluation(run_id, ref, key)
                if kept:
                    return {**kept, "reused": True}
            if not run_id:
                m, tok = self.cache.loaded(model)
            done = [0]

            def counted(n: int) -> None:
                done[0] += n
                if progress:
                    elapsed = time.time() - t0
                    progress(None, f"{side}: {done[0]:,} items scored, {elapsed:.0f} s")
            results: dict[str, dict[str, Any]] = {}
            for i, side in enumerate(sides):
                if progress:
                    left = (f", about {(time.time() - t0) * (len(sides) - i) / i:.0f} s left" if i else "")
                    progress(i / len(sides), f"Scoring the {side} model on {', '.join(names)}{left}…")
                if run_id:
                    with pair.side(side) as m_side:
                        results[side] = run_harness(hf_lm(m_side, tok, cancel, counted), names, paths, limit)
                else:
                    results[side] = run_harness(hf_lm(m, tok, cancel, counted), names, paths, limit)
            if exported is not None:
                from .llama_lm import LlamaCppLM

                if progress:
                    progress(0.95, f"Scoring the exported GGUF ({exported.name}) with llama.cpp…")
                results["gguf"] = run_harness(LlamaCppLM(exported, cancel=cancel), names, paths, limit)
            out_tasks = {t: {side: results[side].get(t, {}) for side in results} for t in results["base"]}
            summary = [plain(t, v["base"], v["tuned"]) for t, v in out_tasks.items() if "tuned" in v]
            data = {"tasks": out_tasks, "limit": limit, "summary": summary, "run_id": run_id, "model": ref,
                    "include_paths": paths[1:], "seconds": round(time.time() - t0, 1), "created_at": time.time()}
            self.store.put_evaluation(run_id, ref, key, data)
            return data

    def _gguf_file(self, run_id: str) -> Path:
        from ..errors import ExportError

        done = [e for e in self.store.list_exports(run_id) if e["format"] == "gguf" and Path(e["path"]).exists()]
        if not done:
            raise ExportError(f"Run {run_id} has no GGUF export yet: export it in step 5 (or python -m "
                              f"studio export --run {run_id} --format gguf), then evaluate with --gguf.")
        return Path(done[0]["path"])

    def delete(self, eval_id: int) -> dict[str, Any]:
        """One stored evaluation removed (it lives in the store only: no files to free)."""
        if not self.store.delete_evaluation(eval_id):
            raise EvalError(f"No evaluation with id {eval_id} (History lists them).")
        return {"deleted": eval_id, "bytes_freed": 0}

    def list(self, run_id: str | None = None) -> list[dict[str, Any]]:
        return [{"id": e["id"], "run_id": e["run_id"], "model": e["model"], "created_at": e["created_at"],
                 "tasks": sorted((e["data"] or {}).get("tasks", {})), "summary": (e["data"] or {}).get("summary", [])}
                for e in self.store.list_evaluations(run_id)]
