"""Train step: runs, events, atomic checkpoints, stop/resume/kill, packing, and clear failures."""
import json
import math
import os
import signal
import time
from pathlib import Path

import pytest

from conftest import make_tiny_llama, run_cli
from studio.errors import ConfigError, DataError, PresetError, RunError

EMBEDDED = "smollm2-135m-instruct"  # GPU presets name hub models; tests train the embedded one

pytestmark = pytest.mark.slow


def wait_for(cond, timeout=240, every=0.5):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(every)
    return False


def test_short_run_learns_and_writes_everything(studio, trained_run):
    assert trained_run["status"] == "completed" and trained_run["step"] == 12
    show = studio.run_show(trained_run["id"])
    run_dir = Path(show["path"])
    assert (run_dir / "config.yaml").exists()
    events = [json.loads(x) for x in (run_dir / "events.jsonl").read_text().splitlines()]
    train_ev = [e for e in events if "tokens_per_s" in e]  # not evaluations, forgetting checks, notes
    assert [e["step"] for e in train_ev] == list(range(1, 13))  # every step logged
    for key in ("loss", "lr", "grad_norm", "tokens_per_s", "eta_s", "peak_mem_gb"):
        assert key in train_ev[0]
    assert sum(e["loss"] for e in train_ev[-3:]) < sum(e["loss"] for e in train_ev[:3])
    assert any("eval_loss" in e for e in events)
    ckpts = sorted(run_dir.glob("checkpoint-*"))
    assert [c.name for c in ckpts] == ["checkpoint-12", "checkpoint-4", "checkpoint-8"]
    assert all((c / ".complete").exists() and (c / "optimizer.pt").exists() for c in ckpts)
    assert len(show["metrics"]) >= 12 and show["artifacts"]["adapter"]
    # where the time went, from the start of the run: loading and preparing count too (#28)
    spent = [e["phases"] for e in events if "phases" in e][-1]
    assert spent["seconds"]["preparing"] > 0 and "preparing (model, replay" in spent["line"]
    assert sum(spent["seconds"].values()) <= spent["wall_s"] + 0.01


def test_adapter_loads_in_stock_peft(trained_run, studio, embedded_model_dir):
    from peft import PeftModel

    from studio.models import registry as models

    base = models.load_model(embedded_model_dir)
    m = PeftModel.from_pretrained(base, studio.run_show(trained_run["id"])["artifacts"]["adapter"])
    assert any("lora_A" in n for n, _ in m.named_parameters())


def test_runs_list_json_contract(studio, trained_run, faq_dataset):
    queued = studio.train_create("cpu-quickstart", faq_dataset, max_steps=1)   # made, never started
    r = run_cli("runs", "list", "--json", home=studio.home.root)
    runs = json.loads(r.stdout)
    assert runs[0]["id"] and {"id", "status", "created_at", "preset", "dataset", "model"} <= set(runs[0])
    status = {x["id"]: x["status"] for x in runs}
    assert status[trained_run["id"]] == "completed" and status[queued["id"]] == "queued"
    assert status == {x["id"]: x["status"] for x in studio.runs_list()}        # every run as the studio has it
    assert [x["created_at"] for x in runs] == sorted((x["created_at"] for x in runs), reverse=True)
    r = run_cli("runs", "show", trained_run["id"], "--json", home=studio.home.root)
    assert json.loads(r.stdout)["metrics"]
    r = run_cli("runs", "show", "nope", "--json", home=studio.home.root)
    assert r.returncode == 1 and "No run" in r.stderr


def test_kill_9_then_resume_continues_to_the_same_step(studio, faq_dataset, tiny_model, monkeypatch):
    """On the two-layer model, held at step 5 (after checkpoint 4) so kill -9 lands there."""
    run = studio.train_create("cpu-quickstart", faq_dataset, tiny_model,
                              overrides=["train.save_every=2", "train.forget_budget=0"], max_steps=8)
    monkeypatch.setenv("STUDIO_HOLD_AT", "train.step@5")
    studio.train_spawn(run["id"])
    run_dir = studio.home.runs / run["id"]
    assert wait_for(lambda: (run_dir / "checkpoint-4" / ".complete").exists())
    pid = studio.store.get_run(run["id"])["pid"]
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: not _alive(pid), 30)
    listed = {r["id"]: r for r in studio.runs_list()}
    assert listed[run["id"]]["status"] == "failed" and "Resume" in listed[run["id"]]["error"]
    done = studio.train_run(run["id"])
    assert done["status"] == "completed" and done["step"] == 8
    steps = [json.loads(x)["step"] for x in (run_dir / "events.jsonl").read_text().splitlines()
             if "tokens_per_s" in x]
    assert steps == list(range(1, 9))  # the curve continues: no reset, no repeats
    spent = [n["note"] for n in studio.run_events(run["id"]) if "Where the time went" in n.get("note", "")]
    assert spent == [spent[-1]] and spent[-1].startswith("Where the time went in steps 5–8 (")  # its own segment


def _alive(pid):
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False


def test_stop_saves_a_checkpoint_and_resume_finishes(studio, faq_dataset, tiny_model, monkeypatch):
    """On the two-layer model (what is checked is Stop, not the model), held at step 3 until
    Stop so a fast machine cannot finish the run first."""
    monkeypatch.setenv("STUDIO_HOLD_AT", "train.step@3")
    run = studio.train_create("cpu-quickstart", faq_dataset, tiny_model,
                              overrides=["train.save_every=50", "train.forget_budget=0", "train.replay=0"],
                              max_steps=30)
    studio.train_spawn(run["id"])
    run_dir = studio.home.runs / run["id"]
    assert wait_for(lambda: (run_dir / "events.jsonl").exists()
                    and len((run_dir / "events.jsonl").read_text().splitlines()) >= 2)
    stopped = studio.run_stop(run["id"])
    assert stopped["status"] == "stopped"
    ckpts = list(run_dir.glob("checkpoint-*"))
    assert ckpts and (ckpts[0] / ".complete").exists()
    assert (run_dir / "adapter" / ".complete").exists()  # a stopped run can still be compared
    with pytest.raises(RunError, match="not running"):
        studio.run_stop(run["id"])


def test_a_stop_pressed_while_the_trainer_starts_is_honoured(studio, faq_dataset, tiny_model):
    """Stop pressed while the trainer process is still starting (its imports take a minute on a
    busy machine) must stop it at the first step; a STOP left by an earlier stop is cleared.
    Here the trainer is this process: a STOP written now is newer than its start."""
    import psutil

    over = ["train.replay=0", "train.forget_budget=0", "train.eval_every=0"]
    run = studio.train_create("cpu-quickstart", faq_dataset, tiny_model, overrides=over, max_steps=4)
    stop = studio.home.runs / run["id"] / "STOP"
    stop.write_text("stop")                                   # pressed during start-up
    done = studio.train_run(run["id"])
    assert done["status"] == "stopped" and done["step"] == 1
    stop.write_text("stop")
    old = psutil.Process().create_time() - 60
    os.utime(stop, (old, old))                                # left from before this process
    done = studio.train_run(run["id"])
    assert done["status"] == "completed" and done["step"] == 4 and not stop.exists()


def test_packing_keeps_examples_apart(embedded_model_dir):
    """Padding-free batches: an example's logits are the same alone or packed after another,
    on the model exactly as the training loop prepares it."""
    import torch
    from transformers import DataCollatorWithFlattening

    from studio import presets
    from studio.models import registry as models
    from studio.train.loop import load_for_training

    model = load_for_training(embedded_model_dir, "cpu", presets.get_preset("cpu-quickstart"))
    tok = models.load_tokenizer(embedded_model_dir)
    a = tok("The feeder holds seed.", add_special_tokens=False)["input_ids"]
    b = tok("Birds visit every morning in spring.", add_special_tokens=False)["input_ids"]
    batch = DataCollatorWithFlattening(return_position_ids=True)(
        [{"input_ids": b, "labels": b}, {"input_ids": a, "labels": a}])
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        alone = model(input_ids=torch.tensor([a])).logits
        leaky = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                      use_cache=True).logits
    assert torch.allclose(packed[0, len(b):], alone[0], atol=1e-4)
    assert not torch.allclose(leaky[0, len(b):], alone[0], atol=1e-2)  # the trap we avoid


def test_preflight_errors(studio, faq_dataset):
    with pytest.raises(DataError, match="longer than max length"):
        studio.train_create("cpu-quickstart", faq_dataset, overrides=["train.max_len=16"])
    with pytest.raises(DataError, match="No dataset named"):
        studio.train_create("cpu-quickstart", "no-such-data")
    with pytest.raises(PresetError, match="train.lr"):
        studio.train_create("cpu-quickstart", faq_dataset, overrides=["train.lr=-1"])
    with pytest.raises(PresetError, match="No preset"):
        studio.train_create("nope", faq_dataset)


def test_qlora_fallback_and_pin(studio, faq_dataset, monkeypatch):
    monkeypatch.setenv("STUDIO_DEVICE", "mps")  # bitsandbytes has no MPS kernels
    run = studio.train_create("gpu-8gb-qlora", faq_dataset, EMBEDDED, max_steps=1)
    assert run["method"] == "lora" and "QLoRA is not available" in run["notes"][0]
    with pytest.raises(ConfigError, match="QLoRA was requested"):
        studio.train_create("gpu-8gb-qlora", faq_dataset, EMBEDDED, overrides=["method_fallback=false"])


def test_chat_data_needs_a_chat_template(studio, faq_dataset):
    from studio.train import config as tcfg

    class NoTemplate:
        chat_template = None

    d = studio.dataset(faq_dataset)
    cfg = tcfg.build_config("cpu-quickstart", d, None, [], 1)
    with pytest.raises(DataError, match="no chat template"):
        tcfg.preflight(cfg, d, NoTemplate(), "cpu")


def test_nan_loss_stops_with_advice(tmp_path):
    from studio.train.batches import CountingCollator
    from studio.train.callback import StudioCallback

    class Store:
        def add_metrics(self, *a): pass
        def update_run(self, *a, **k): pass

    class Ctl:
        should_training_stop = False

    class State:
        global_step = 3

    cb = StudioCallback(tmp_path, Store(), "r", 10, CountingCollator(lambda f: f), "cpu")
    ctl = Ctl()
    cb.on_log(None, State(), ctl, logs={"loss": math.nan, "grad_norm": 1.0, "learning_rate": 1e-3})
    assert ctl.should_training_stop and cb.nan_step == 3


def test_qlora_trains_on_cpu(studio, faq_dataset, embedded_model_dir, tmp_path):
    """4-bit base weights (bitsandbytes' CPU kernels) on a two-layer model (64 wide: 4-bit
    blocks need it): the path is the point, not the model."""
    pytest.importorskip("bitsandbytes")
    tiny = make_tiny_llama(tmp_path / "tiny64", embedded_model_dir, hidden=64)
    run = studio.train_create("gpu-8gb-qlora", faq_dataset, str(tiny), max_steps=2, overrides=[
        "train.micro_batch=2", "train.grad_accum=1", "train.max_len=128", "train.eval_every=0",
        "train.optimizer=adamw", "train.grad_ckpt=false", "train.log_every=1"])
    assert run["method"] == "qlora"
    done = studio.train_run(run["id"])
    assert done["status"] == "completed" and done["step"] == 2


def test_cli_train_foreground_json(studio, faq_dataset, tiny_model):
    r = run_cli("train", "--preset", "cpu-quickstart", "--dataset", faq_dataset, "--max-steps", "2",
                "--model", tiny_model, "--set", "train.eval_every=0", "--json", home=studio.home.root)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["status"] == "completed" and out["step"] == 2
    r = run_cli("train", "--resume", out["id"], home=studio.home.root)
    assert r.returncode == 1 and "already completed" in r.stderr
    r = run_cli("train", "--preset", "cpu-quickstart", home=studio.home.root)
    assert r.returncode == 1 and "--dataset" in r.stderr


def test_two_ranks_on_cpu_with_gloo(studio, faq_dataset, tiny_model):
    """The same entry point under torchrun (what `accelerate launch` does): both ranks train,
    only rank 0 writes the store and the files, and the adapter loads like a normal run's. On the
    two-layer model: what is checked is the launch, not the model."""
    import subprocess
    import sys

    r = run_cli("train", "--preset", "cpu-quickstart", "--dataset", faq_dataset, "--max-steps", "4",
                "--model", tiny_model,
                "--set", "train.eval_every=2", "--set", "train.save_every=2", "--gpus", "2", "--json",
                home=studio.home.root)
    out = json.loads(r.stdout)
    assert "accelerate launch" in out["command"] and Path(out["accelerate_config"]).exists()
    env = {**os.environ, "STUDIO_HOME": str(studio.home.root), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "-m", "studio", "train", "--resume", out["id"], "--json"],
                          capture_output=True, text=True, env=env, timeout=600,
                          cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('"status": "completed"') == 1  # one report, from rank 0
    show = studio.run_show(out["id"])
    assert show["status"] == "completed" and show["artifacts"]["world_size"] == 2
    run_dir = Path(show["path"])
    steps = [json.loads(x)["step"] for x in (run_dir / "events.jsonl").read_text().splitlines()
             if "tokens_per_s" in x]
    assert steps == [1, 2, 3, 4]  # written once, by rank 0
    from peft import PeftModel

    from studio.models import registry as models

    PeftModel.from_pretrained(models.load_model(Path(tiny_model)), show["artifacts"]["adapter"])


def test_dora_rslora_and_checkpointing_train(studio, faq_dataset, tiny_model):
    run = studio.train_create("cpu-quickstart", faq_dataset, tiny_model, max_steps=2, overrides=[
        "lora.dora=true", "lora.rslora=true", "train.grad_ckpt=true", "train.grad_accum=2",
        "train.schedule=linear", "train.eval_every=0", "lora.targets=q,v"])
    done = studio.train_run(run["id"])
    assert done["status"] == "completed"
    cfg = json.loads((Path(studio.run_show(run["id"])["artifacts"]["adapter"]) / "adapter_config.json").read_text())
    assert cfg["use_dora"] and cfg["use_rslora"] and set(cfg["target_modules"]) == {"q_proj", "v_proj"}


@pytest.mark.parametrize("forced", ["1", "0"])
def test_a_run_hands_its_decided_precision_to_the_trainer(studio, faq_dataset, tiny_model, monkeypatch, forced):
    """The precision the run was created with (config.cpu_precision) reaches the studio's Trainer,
    whatever the CPU would measure when it trains."""
    from studio.models import loading
    from studio.train import loop

    handed = []
    real = loop.trainer_class

    def spy(*args):
        handed.append(args[5] if len(args) > 5 else False)
        return real(*args)

    monkeypatch.setattr(loop, "trainer_class", spy)
    monkeypatch.setenv("STUDIO_CPU_BF16", forced)
    loading.cpu_bf16_speedup.cache_clear()
    over = ["train.replay=0", "train.forget_budget=0", "train.eval_every=0", "train.dtype=auto"]
    run = studio.train_create("cpu-quickstart", faq_dataset, tiny_model, overrides=over, max_steps=1)
    monkeypatch.setenv("STUDIO_CPU_BF16", "0" if forced == "1" else "1")  # the CPU says otherwise now
    loading.cpu_bf16_speedup.cache_clear()
    try:
        assert studio.train_run(run["id"])["status"] == "completed"
    finally:
        loading.cpu_bf16_speedup.cache_clear()
    assert handed == [forced == "1"]
