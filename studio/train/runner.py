"""Runs: create, execute, spawn, poll, stop, resume — and keep the store truthful.

Owns the run folder (`runs/<id>/`: config.yaml, events.jsonl, train.log, checkpoint-*/,
adapter/), the run's store row and its status transitions (queued → running → completed /
failed / stopped), spawning `python -m studio train --resume ID` as a child process for the UI,
stopping it (a STOP file, then SIGTERM, then kill), and reconciling runs whose process died so
that none shows "running" forever. Training itself is in loop.py.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from ..errors import RunError, StudioError

ACTIVE = ("queued", "running")


def new_run_id(preset: str) -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{preset.split('-')[0]}-{secrets.token_hex(2)}"


def create(store, runs_dir: Path, cfg: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    import yaml

    run_id = new_run_id(cfg["preset"])
    run_dir = runs_dir / run_id
    run_dir.mkdir(parents=True)
    cfg = {**cfg, "notes": notes}
    tmp = run_dir / "config.yaml.tmp"
    tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    os.replace(tmp, run_dir / "config.yaml")
    return store.add_run(id=run_id, status="queued", preset=cfg["preset"],
                         dataset=f"{cfg['dataset']['name']}@v{cfg['dataset']['version']}",
                         model=cfg["model"], path=str(run_dir), config=cfg, step=0)


def execute(studio, run_id: str, progress: bool = False) -> dict[str, Any]:
    """Run or resume `run_id` in this process; always leaves the store row truthful."""
    from . import loop

    run = get(studio, run_id)
    run_dir = Path(run["path"])
    if not (run_dir / "config.yaml").exists():
        raise RunError(f"Run {run_id}: its folder {run_dir} (or config.yaml) is gone; it cannot "
                       "be resumed. Start a new run.")
    if run["status"] == "completed":
        raise RunError(f"Run {run_id} already completed; start a new run to train more.")
    if (loop.rank() == 0 and run["status"] == "running" and run.get("pid") not in (None, os.getpid())
            and alive(run["pid"]) and run["pid"] != os.getppid()):
        raise RunError(f"Run {run_id} is already running (process {run['pid']}). Stop it first.")
    device = studio.device()
    model_path = studio.model_path(run["model"])
    store = studio.store
    if loop.rank() == 0:
        store.update_run(run_id, status="running", pid=os.getpid(), error=None)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        result = loop.train(run_dir, store, run_id, model_path, device, progress)
    except BaseException as e:
        if loop.rank() == 0:
            msg = str(e) if isinstance(e, StudioError) else f"{type(e).__name__}: {e}"
            if isinstance(e, KeyboardInterrupt):
                msg, status = "Interrupted; resume to continue from the last checkpoint.", "stopped"
            else:
                status = "failed"
                with open(run_dir / "train.log", "a") as f:
                    traceback.print_exc(file=f)
            store.update_run(run_id, status=status, error=msg, pid=None)
        raise
    if loop.rank() == 0:
        arts = {**artifacts(run_dir), "world_size": result.get("world_size", 1)}
        store.update_run(run_id, status=result["status"], step=result["steps"], pid=None,
                         artifacts=arts)
    return get(studio, run_id)


def accelerate_config(run_dir: Path, gpus: int, machines: int = 1, mixed_precision: str = "bf16") -> tuple[Path, str]:
    """An accelerate config for N GPUs (DDP) and the command that runs this run under it."""
    import yaml

    cfg = {"compute_environment": "LOCAL_MACHINE", "distributed_type": "MULTI_GPU",
           "num_machines": machines, "machine_rank": 0, "main_training_function": "main",
           "mixed_precision": mixed_precision, "num_processes": gpus * machines,
           "gpu_ids": "all", "rdzv_backend": "static", "same_network": True, "use_cpu": False}
    if machines > 1:
        cfg.update(main_process_ip="MAIN_MACHINE_IP", main_process_port=29500)
    path = run_dir / "accelerate.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    cmd = f'accelerate launch --config_file "{path}" -m studio train --resume {run_dir.name}'
    return path, cmd


def artifacts(run_dir: Path) -> dict[str, Any]:
    from .checkpoints import MARK, complete

    adapter = run_dir / "adapter"
    return {"adapter": str(adapter) if (adapter / MARK).exists() else None,
            "checkpoints": [str(c) for c in complete(run_dir)],
            "events": str(run_dir / "events.jsonl"), "log": str(run_dir / "train.log")}


def spawn(studio, run_id: str) -> dict[str, Any]:
    """Start the run in a child process (the UI never imports the model for training)."""
    run = get(studio, run_id)
    log = open(Path(run["path"]) / "train.log", "a")
    env = {**os.environ, "STUDIO_HOME": str(studio.home.root), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "studio", "train", "--resume", run_id],
                            stdout=log, stderr=subprocess.STDOUT, env=env,
                            cwd=str(Path(__file__).resolve().parents[2]), start_new_session=True)
    studio.store.update_run(run_id, status="running", pid=proc.pid)
    return {"id": run_id, "pid": proc.pid}


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        import psutil

        p = psutil.Process(pid)
        return p.status() != psutil.STATUS_ZOMBIE and "studio" in " ".join(p.cmdline())
    except Exception:
        return False


def reconcile(studio) -> None:
    """A run whose process is gone is not 'running': mark it failed (resumable)."""
    for run in studio.store.list_runs():
        if run["status"] == "running" and not alive(run.get("pid")):
            from .checkpoints import latest

            last = latest(Path(run["path"])) if run.get("path") else None
            where = f" from {last.name}" if last else " from the start"
            studio.store.update_run(run["id"], status="failed", pid=None,
                                    error="The training process ended unexpectedly (killed or "
                                          f"crashed). Resume to continue{where}.")


def stop(studio, run_id: str, wait: float = 60.0) -> dict[str, Any]:
    run = get(studio, run_id)
    if run["status"] not in ACTIVE:
        raise RunError(f"Run {run_id} is {run['status']}, not running; nothing to stop.")
    (Path(run["path"]) / "STOP").write_text("stop")  # the child saves a checkpoint and exits
    pid = run.get("pid")
    deadline = time.time() + wait
    while alive(pid) and time.time() < deadline:
        time.sleep(0.5)
    if alive(pid):
        os.kill(pid, signal.SIGTERM)
        time.sleep(5)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    run = get(studio, run_id)
    if run["status"] in ACTIVE:
        studio.store.update_run(run_id, status="stopped", pid=None)
    return get(studio, run_id)


def get(studio, run_id: str) -> dict[str, Any]:
    run = studio.store.get_run(run_id)
    if run is None:
        known = [r["id"] for r in studio.store.list_runs()[:5]]
        raise RunError(f"No run with id '{run_id}'. Recent runs: {', '.join(known) or 'none'} "
                       "(python -m studio runs list).")
    return run


def events(run_dir: Path) -> list[dict[str, Any]]:
    out = []
    path = Path(run_dir) / "events.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def summary(run: dict[str, Any]) -> dict[str, Any]:
    cfg = run.get("config") or {}
    return {"id": run["id"], "status": run["status"], "created_at": run["created_at"],
            "preset": run["preset"], "dataset": run["dataset"], "model": run["model"],
            "step": run.get("step"), "max_steps": run.get("max_steps"), "error": run.get("error"),
            "method": cfg.get("method"), "notes": cfg.get("notes", [])}
