"""Runs: create, execute, spawn, poll, stop, resume, delete — and keep the store truthful.

Owns the run folder (`runs/<id>/`: config.yaml, events.jsonl, train.log, checkpoint-*/,
adapter/), the run's store row and its status transitions (records.RunStatus), spawning the
training child (`python -m studio.train.child RUN_DIR`, a plain entry point that never builds
the facade), stopping it (a STOP file, then SIGTERM, then kill), and reconciling runs whose
process died so that none shows "running" forever. Training itself is in loop.py.
Dependencies come in explicitly: the store, the runs folder, the model cache, and a function
that looks a dataset up.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import traceback
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

from ..errors import RunError, StudioError
from ..faults import crash_point, disk_guard
from ..locks import hold
from ..records import ACTIVE, RunStatus
from . import config as tcfg
from .checkpoints import clean_leftovers, complete, latest
from .config import rank
from .. import paths
from ..paths import RUN, finished_adapter, read_events


ADOPT_AFTER_S = 30  # a folder younger than this may still be getting its row in another process


def new_run_id(preset: str) -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{preset.split('-')[0]}-{secrets.token_hex(2)}"


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        import psutil

        p = psutil.Process(pid)
        return p.status() != psutil.STATUS_ZOMBIE and "studio" in " ".join(p.cmdline())
    except Exception:
        return False


def artifacts(run_dir: Path) -> dict[str, Any]:
    adapter = finished_adapter(run_dir)
    return {"adapter": str(adapter) if adapter else None,
            "checkpoints": [str(c) for c in complete(run_dir)],
            "events": str(run_dir / RUN.events), "log": str(run_dir / RUN.log)}


def summary(run: dict[str, Any]) -> dict[str, Any]:
    cfg = run.get("config") or {}
    return {"id": run["id"], "status": run["status"], "created_at": run["created_at"],
            "preset": run["preset"], "dataset": run["dataset"], "model": run["model"],
            "step": run.get("step"), "error": run.get("error"),
            # known once it trains; before, what its settings ask for (0: epochs, counted at start)
            "max_steps": run.get("max_steps") or (cfg.get("train") or {}).get("max_steps") or None,
            "method": cfg.get("method"), "notes": cfg.get("notes", []),
            "active": RunStatus(run["status"]).active, "has_result": RunStatus(run["status"]).has_result,
            # Stop was asked for and the trainer has not finished its step yet
            "stopping": RunStatus(run["status"]).active and bool(run.get("path"))
            and (Path(run["path"]) / RUN.stop).exists()}


def get(store, run_id: str) -> dict[str, Any]:
    run = store.get_run(run_id)
    if run is None:
        known = [r["id"] for r in store.list_runs()[:5]]
        raise RunError(f"No run with id '{run_id}'. Recent runs: {', '.join(known) or 'none'} "
                       "(python -m studio runs list).")
    return run


def cuda_allocator_defaults() -> None:
    """Expandable segments for PyTorch's CUDA allocator unless the user set their own (read at the
    first CUDA allocation, so before the model loads). Measured on an H200 capped to a 24 GB
    card (benchmarks/RESULTS.md): Llama-3.1-8B QLoRA at the estimate's longest lengths ran out
    of memory with ~1.9 GB reserved but unusable (fragmentation) and fit with this on.
    Linux only: PyTorch does not support it on Windows."""
    if sys.platform.startswith("linux"):
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")


def execute(store, cache, run_id: str, progress: bool = False) -> dict[str, Any]:
    """Run or resume `run_id` in this process; always leaves the store row truthful."""
    cuda_allocator_defaults()
    run = get(store, run_id)
    run_dir = Path(run["path"])
    if not (run_dir / RUN.config).exists():
        raise RunError(f"Run {run_id}: its folder {run_dir} (or config.yaml) is gone; it cannot "
                       "be resumed. Start a new run.")
    if run["status"] == RunStatus.COMPLETED:
        raise RunError(f"Run {run_id} already completed; start a new run to train more.")
    if (rank() == 0 and run["status"] == RunStatus.RUNNING and run.get("pid") not in (None, os.getpid())
            and alive(run["pid"]) and run["pid"] != os.getppid()):
        raise RunError(f"Run {run_id} is already running (process {run['pid']}). Stop it first.")
    # One process per run: a second `train --resume` (or a second Resume click) is refused;
    # the lock dies with its holder, kill -9 included. Under accelerate only rank 0 holds it.
    lock = hold(run_dir / ".lock", f"Run {run_id}") if rank() == 0 else nullcontext()
    with lock:
        return _execute(store, cache, run, run_dir, progress)


def _execute(store, cache, run: dict[str, Any], run_dir: Path, progress: bool) -> dict[str, Any]:
    from . import loop

    run_id = run["id"]
    device = cache.device()
    model_path = cache.path(run["model"])
    if rank() == 0:
        store.update_run(run_id, status=RunStatus.RUNNING.value, pid=os.getpid(), error=None)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        result = loop.train(run_dir, store, run_id, model_path, device, progress)
    except BaseException as e:
        if rank() == 0:
            record_failure(store, run_id, run_dir, e)
        raise
    crash_point("train.before_final_record")
    if rank() == 0:
        arts = {**artifacts(run_dir), "world_size": result.get("world_size", 1),
                "resume_notes": result.get("notes", [])}
        store.update_run(run_id, status=result["status"], step=result["steps"], pid=None,
                         artifacts=arts)
    return get(store, run_id)


def record_failure(store, run_id: str, run_dir: Path, e: BaseException) -> None:
    """The run's status and error after an exception — best effort: on a full disk neither the
    log nor the store may take a write, and the original error must still reach the user."""
    msg = str(e) if isinstance(e, StudioError) else f"{type(e).__name__}: {e}"
    status = RunStatus.FAILED
    if isinstance(e, KeyboardInterrupt):
        msg, status = "Interrupted; resume to continue from the last checkpoint.", RunStatus.STOPPED
    elif not isinstance(e, StudioError):  # a bug: keep its traceback for the report
        try:
            with open(run_dir / RUN.log, "a") as f:
                traceback.print_exc(file=f)
        except OSError:
            pass
    try:
        store.update_run(run_id, status=status.value, error=msg, pid=None)
    except Exception:  # the store cannot be written (disk full): reconcile marks it later
        pass


class RunService:
    """Training runs for one STUDIO_HOME."""

    def __init__(self, store, runs_dir: Path, cache, dataset: Callable[[str], dict[str, Any]]):
        self.store, self.runs_dir, self.cache, self.dataset = store, Path(runs_dir), cache, dataset

    def get(self, run_id: str) -> dict[str, Any]:
        return get(self.store, run_id)

    def create(self, preset: str, dataset: str, model: str | None = None,
               overrides: list[str] | None = None, max_steps: int | None = None,
               **changes: Any) -> dict[str, Any]:
        """Validate everything, then create the run folder, config.yaml and its store row."""
        d = self.dataset(dataset)
        cfg = tcfg.build_config(preset, d, model, overrides or [], max_steps, **changes)
        self.cache.resolve(cfg.spec.model)
        device = self.cache.device()
        cfg = tcfg.preflight(cfg, d, self.cache.tokenizer(cfg.spec.model), device)
        cfg = tcfg.decide_offload(cfg, self.cache.path(cfg.spec.model), device)
        tcfg.check_layers(cfg.spec, self.cache.path(cfg.spec.model))
        if cfg.spec.from_run:
            cfg = self._start_from(cfg)
        run_id = new_run_id(cfg.preset)
        run_dir = self.runs_dir / run_id
        run_dir.mkdir(parents=True)
        with disk_guard(self.runs_dir):
            cfg.write(run_dir)
        crash_point("train.run_folder_made")
        row = self.store.add_run(id=run_id, status=RunStatus.QUEUED.value, preset=cfg.preset,
                                 dataset=str(cfg.dataset.ref), model=cfg.spec.model,
                                 path=str(run_dir), config=cfg.to_dict(), step=0)
        return summary(row)

    def _start_from(self, cfg: "tcfg.RunConfig") -> "tcfg.RunConfig":
        """A run that starts from an earlier run's adapter: it must exist, be finished (or
        stopped with an adapter) and belong to the same base model."""
        import dataclasses

        earlier = self.get(cfg.spec.from_run)
        if finished_adapter(earlier["path"]) is None:
            raise RunError(f"Run {earlier['id']} has no adapter to start from ({earlier['status']}); "
                           "finish or resume it first, or start from another run.")
        if earlier["model"] != cfg.spec.model:
            raise RunError(f"Run {earlier['id']} trained {earlier['model']}, not {cfg.spec.model}: an "
                           f"adapter only fits its own base model. Use --model {earlier['model']}.")
        note = (f"Starts from run {earlier['id']}'s adapter (its LoRA settings are kept"
                + ("; the DPO reference is the model with that adapter, as it was)."
                   if cfg.spec.train.objective == "dpo" else
                   "; the KL is measured to the base model, the adapter switched off)."
                   if cfg.spec.train.objective in tcfg.RL and cfg.spec.train.beta else ")."))
        return dataclasses.replace(cfg, notes=(*cfg.notes, note))

    def rewards_for(self, dataset: str, rewards: str = "") -> list[dict[str, str]]:
        """The rewards an RL run on `dataset` uses (chosen from its rows, or `rewards`), with
        their why; a DataError says what to add when it gives none."""
        from ..data.prepare import read_split
        from .rewards import choose, reward_rows

        d = self.dataset(dataset)
        chosen = choose(reward_rows(read_split(Path(d["path"]), "train")), rewards or "",
                        f"Dataset {d['name']} v{d['version']}")
        return [{"name": r.name, "role": r.role, "why": r.why} for r in chosen]

    def preview_rewards(self, dataset: str, preset: str = "cpu-quickstart-grpo", model: str | None = None,
                        from_run: str | None = None, rewards: str | None = None, groups: int = 8,
                        on_prompt: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """Before an RL run: the rewards chosen for `dataset`, and how `groups` prompts × the
        preset's generations sampled from the starting model (the base, or `from_run`'s adapter)
        score — the share of groups with no spread (nothing to learn from), a verdict, and each
        group's prompt with its rewards (`examples`); `on_prompt(done, total)` as prompts are
        sampled."""
        from ..data.prepare import read_split
        from ..models import registry as models
        from ..spec import update
        from . import rl

        d = self.dataset(dataset)
        spec = tcfg.build_config(preset, d, model, [], None, rewards=rewards).spec
        if spec.train.objective not in tcfg.RL:
            spec = update(spec, objective="grpo")
        where = f"Dataset {d['name']} v{d['version']}"
        rows = read_split(Path(d["path"]), "train")
        rl.chosen_rewards(spec, rows, where)  # refuse before loading a model
        adapter = None
        if from_run:
            earlier = self.get(from_run)
            adapter = finished_adapter(earlier["path"])
            if adapter is None:
                raise RunError(f"Run {from_run} has no adapter to start from ({earlier['status']}); "
                               "finish or resume it first.")
            spec = update(spec, model=earlier["model"]) if not model else spec
        path = self.cache.path(spec.model)
        busy = [r["id"] for r in self.list() if r["status"] == "running"]
        if busy and self.cache.device() == "cuda":  # a second copy of a model beside a training one
            raise RunError(f"Run {busy[0]} is training on this GPU, and the preview would load another "
                           "copy of the model beside it; preview once it has finished, or stop it first.")
        m = models.load_model(path, self.cache.device(), "auto")
        if adapter is not None:
            from peft import PeftModel

            m = PeftModel.from_pretrained(m, str(adapter))
        m.eval()
        return rl.preview(m, self.cache.tokenizer(spec.model), spec, rows, where, groups, on_prompt)

    def run(self, run_id: str, progress: bool = False) -> dict[str, Any]:
        """Run or resume in this process (the CLI's foreground mode)."""
        return summary(execute(self.store, self.cache, run_id, progress))

    def spawn(self, run_id: str) -> dict[str, Any]:
        """Start the run in a child process (the UI never imports the model for training)."""
        run = self.get(run_id)
        run_dir = Path(run["path"])
        log = open(run_dir / RUN.log, "a")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "studio.train.child", str(run_dir)],
                                stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=str(paths.REPO), start_new_session=True)
        self.store.update_run(run_id, status=RunStatus.RUNNING.value, pid=proc.pid)
        return {"id": run_id, "pid": proc.pid}

    def recover(self) -> None:
        """At start-up: a run folder that never got its store row (killed while being created)
        is registered as failed when its config.yaml is whole, else removed; what dead trainers
        left in their folders is cleaned; then the statuses are reconciled."""
        known = {r["id"] for r in self.store.list_runs()}
        for folder in (self.runs_dir.iterdir() if self.runs_dir.is_dir() else ()):
            if (folder.is_dir() and folder.name not in known and not folder.name.startswith(".")
                    and time.time() - folder.stat().st_mtime > ADOPT_AFTER_S):
                self._adopt(folder)
        for run in self.store.list_runs():
            if run.get("path") and not (run["status"] == RunStatus.RUNNING and alive(run.get("pid"))):
                clean_leftovers(Path(run["path"]))
        self.reconcile()

    def reconcile(self) -> None:
        """A run whose process is gone is not 'running': mark it failed (resumable). Cheap: the
        run listings (and the Train page's timer) call it."""
        for run in self.store.list_runs():
            if run["status"] == RunStatus.RUNNING and not alive(run.get("pid")):
                last = latest(Path(run["path"])) if run.get("path") else None
                where = f" from {last.name}" if last else " from the start"
                self.store.update_run(run["id"], status=RunStatus.FAILED.value, pid=None,
                                      error="The training process ended unexpectedly (killed or "
                                            f"crashed). Resume to continue{where}.")

    def _adopt(self, folder: Path) -> None:
        try:
            cfg = tcfg.RunConfig.read(folder)
        except StudioError:
            shutil.rmtree(folder, ignore_errors=True)
            return
        self.store.add_run(id=folder.name, status=RunStatus.FAILED.value, preset=cfg.preset,
                           dataset=str(cfg.dataset.ref), model=cfg.spec.model, path=str(folder),
                           config=cfg.to_dict(), step=0,
                           error="This run was interrupted while it was being created. Resume "
                                 "it to train, or delete it.")

    def list(self) -> list[dict[str, Any]]:
        self.reconcile()
        return [summary(r) for r in self.store.list_runs()]

    def show(self, run_id: str) -> dict[str, Any]:
        self.reconcile()
        run = self.get(run_id)
        out = summary(run)
        out["metrics"] = self.store.get_metrics(run_id)
        out["artifacts"] = {**(run.get("artifacts") or {}),
                            **(artifacts(Path(run["path"])) if run.get("path") else {})}
        out["config"] = run.get("config")
        out["path"] = run.get("path")
        out["exports"] = self.store.list_exports(run_id)
        return out

    def events(self, run_id: str) -> list[dict[str, Any]]:
        return read_events(self.get(run_id)["path"])

    def request_stop(self, run_id: str) -> dict[str, Any]:
        """Ask the trainer to stop (the STOP file) and return at once: it finishes its step, saves
        a checkpoint and exits — on a busy machine, or while it is still starting, that takes a
        while, and the page must not wait for it (`stop` waits, and forces it if need be)."""
        run = self.get(run_id)
        if run["status"] not in ACTIVE:
            raise RunError(f"Run {run_id} is {run['status']}, not running; nothing to stop.")
        (Path(run["path"]) / RUN.stop).write_text("stop")
        return summary(self.get(run_id))

    def stop(self, run_id: str, wait: float = 60.0) -> dict[str, Any]:
        """Ask (request_stop), wait for the child to save a checkpoint and exit, else force it."""
        self.request_stop(run_id)
        pid = self.get(run_id).get("pid")
        deadline = time.time() + wait
        while alive(pid) and time.time() < deadline:
            time.sleep(0.5)
        if alive(pid):  # SIGTERM asks for the same clean stop; a busy machine gets the same time again
            os.kill(pid, signal.SIGTERM)
            deadline = time.time() + wait
            while alive(pid) and time.time() < deadline:
                time.sleep(0.5)
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if self.get(run_id)["status"] in ACTIVE:
            self.store.update_run(run_id, status=RunStatus.STOPPED.value, pid=None)
        return summary(self.get(run_id))

    def delete(self, run_id: str, folder_size: Callable[[Any], int]) -> dict[str, Any]:
        run = self.get(run_id)
        if run["status"] == RunStatus.RUNNING and alive(run.get("pid")):
            raise RunError(f"Run {run_id} is still training; stop it before deleting it.")
        folder = Path(run["path"]) if run.get("path") else None
        size = folder_size(folder)
        self.store.delete_run(run_id)
        if folder:
            shutil.rmtree(folder, ignore_errors=True)
        return {"deleted": run_id, "bytes_freed": size}

    def accelerate_config(self, run_id: str, gpus: int, machines: int = 1,
                          mixed_precision: str = "bf16") -> tuple[Path, str]:
        """An accelerate config for N GPUs (DDP) and the command that runs this run under it."""
        import yaml

        run_dir = Path(self.get(run_id)["path"])
        cfg = {"compute_environment": "LOCAL_MACHINE", "distributed_type": "MULTI_GPU",
               "num_machines": machines, "machine_rank": 0, "main_training_function": "main",
               "mixed_precision": mixed_precision, "num_processes": gpus * machines,
               "gpu_ids": "all", "rdzv_backend": "static", "same_network": True, "use_cpu": False}
        if machines > 1:
            cfg.update(main_process_ip="MAIN_MACHINE_IP", main_process_port=29500)
        path = run_dir / RUN.accelerate
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        cmd = f'accelerate launch --config_file "{path}" -m studio train --resume {run_dir.name}'
        return path, cmd
