"""Fault injection: kill -9 at named points of train / prepare / export, then start again.

Each case runs the real command in a child process with STUDIO_CRASH_AT=<point> (the process
SIGKILLs itself exactly there: no sleeps, no races), then opens the studio again (start-up
reconciliation) and finishes the work. Invariants after every case: nothing lost or logged
twice, no run past its max steps, no temp/partial file left, every complete artifact registered
exactly once, the name or run usable again. Disk-full is injected the same way
(STUDIO_FAULT_ENOSPC=<point>) and must end in one clear message with nothing half-written.
"""
import os
from pathlib import Path

import pytest

from conftest import ROOT, crash, make_tiny_llama, new_home, run_cli

SAMPLE = ROOT / "assets" / "sample" / "product_faq.jsonl"
STEPS = 6
TRAIN_SET = ["train.replay=0", "train.forget_budget=0",  # kill points, not the forgetting levers
             "train.save_every=2", "train.eval_every=3", "train.micro_batch=2",
             "train.max_len=96", "train.log_every=1", "train.keep_checkpoints=2"]


@pytest.fixture(scope="module")
def home(tmp_path_factory, embedded_model_dir):
    """A studio home with the embedded model, a 2-layer model of the same tokenizer (trains in
    a blink) and a prepared dataset."""
    h = new_home(tmp_path_factory, "fault-home", embedded_model_dir)
    make_tiny_llama(h / "models" / "tiny-llama", embedded_model_dir)
    s = studio_at(h)
    s.data_prepare([str(SAMPLE)], "faq", val_fraction=0.1)
    return h


def studio_at(home: Path):
    from studio.api import Studio

    return Studio(home)  # every start reconciles what a crash left


def leftovers(home: Path) -> list[str]:
    bad = []
    for p in home.rglob("*"):
        n = p.name
        if (".partial-" in n or ".f16-tmp-" in n or n.startswith((".tmp-", ".adapter-tmp"))
                or n.endswith(".yaml.tmp") or (p.is_dir() and n == "trainer")):
            bad.append(str(p.relative_to(home)))
    return bad


def new_run(s) -> str:
    tiny = str(s.home.models / "tiny-llama")
    return s.train_create("cpu-quickstart", "faq", tiny, TRAIN_SET, STEPS)["id"]


def check_run(s, run_id: str) -> dict:
    """The run finished exactly: every step logged once, nothing past max steps."""
    run = s.run_show(run_id)
    assert run["status"] == "completed" and run["step"] == STEPS == run["max_steps"], run
    steps = [e["step"] for e in s.run_events(run_id) if "loss" in e and "eval_loss" not in e]
    assert steps == list(range(1, STEPS + 1)), steps
    evals = [e["step"] for e in s.run_events(run_id) if "eval_loss" in e]
    assert len(evals) == len(set(evals)) and max(evals) <= STEPS, evals
    assert [m["step"] for m in run["metrics"]] == sorted({m["step"] for m in run["metrics"]})
    notes = [(e["step"], e["note"]) for e in s.run_events(run_id) if "note" in e]
    assert len(notes) == len(set(notes)), notes                    # no note written twice
    assert max(m["step"] for m in run["metrics"]) == STEPS
    run_dir = Path(run["path"])
    assert (run_dir / "adapter" / ".complete").exists()
    assert all(int(c.name.split("-")[1]) <= STEPS for c in run_dir.glob("checkpoint-*"))
    return run


# ---- training: kill, start again, resume -----------------------------------------------------
TRAIN_POINTS = ["train.event_logged@3", "train.checkpoint_staged@2", "train.checkpoint_marked@4",
                "train.checkpoint_published@4", "train.checkpoint_staged@6",
                "train.after_last_step", "train.adapter_written", "train.adapter_saved",
                "train.before_final_record", "train.checkpoint_rotating@6"]


@pytest.mark.parametrize("point", TRAIN_POINTS)
def test_train_killed_then_resumed(home, point):
    s = studio_at(home)
    rid = new_run(s)
    crash(home, point, "train", "--resume", rid, "--json")
    s = studio_at(home)
    assert s.run_show(rid)["status"] == "failed"  # the dead process was noticed: resumable
    assert leftovers(home) == []  # start-up cleaned what the dead trainer left
    s.train_run(rid)
    check_run(s, rid)
    assert leftovers(home) == []


def test_killed_while_creating_a_run_is_adopted(home):
    crash(home, "train.run_folder_made", "train", "--preset", "cpu-quickstart", "--dataset", "faq",
          "--model", str(home / "models" / "tiny-llama"), "--max-steps", str(STEPS),
          *sum((["--set", x] for x in TRAIN_SET), []))
    s = studio_at(home)
    known = {r["id"] for r in s.runs_list()}
    orphan = next(p for p in (home / "runs").iterdir() if p.name not in known)
    old = orphan.stat().st_mtime - 120
    os.utime(orphan, (old, old))  # past the grace another process gets to register it
    s = studio_at(home)
    run = s.run_show(orphan.name)
    assert run["status"] == "failed" and "interrupted" in run["error"]
    s.train_run(orphan.name)
    check_run(s, orphan.name)


@pytest.mark.parametrize("damage", ["truncate-weights", "corrupt-state", "truncate-optimizer"])
def test_damaged_newest_checkpoint_falls_back(home, damage):
    s = studio_at(home)
    rid = new_run(s)
    crash(home, "train.checkpoint_published@4", "train", "--resume", rid, "--json")
    newest = Path(s.run_show(rid)["path"]) / "checkpoint-4"
    target = {"truncate-weights": "adapter_model.safetensors", "corrupt-state": "trainer_state.json",
              "truncate-optimizer": "optimizer.pt"}[damage]
    data = (newest / target).read_bytes()
    (newest / target).write_bytes(data[: len(data) // 2] if damage != "corrupt-state" else b"{nope")
    s = studio_at(home)
    s.train_run(rid)
    check_run(s, rid)
    notes = [e["note"] for e in s.run_events(rid) if "note" in e]
    assert any("checkpoint-4 was damaged" in n for n in notes), notes


def test_one_process_per_run(home):
    from studio.locks import hold

    s = studio_at(home)
    rid = new_run(s)
    with hold(Path(s.run_show(rid)["path"]) / ".lock", "test"):
        r = run_cli("train", "--resume", rid, home=home)
    assert r.returncode == 1 and "busy" in r.stderr and "Traceback" not in r.stderr
    assert s.run_show(rid)["status"] == "queued"  # the refused process changed nothing


# ---- data: kill during prepare ---------------------------------------------------------------
PREPARE_POINTS = ["prepare.writing", "prepare.examples_written", "prepare.split",
                  "prepare.meta_written", "prepare.renamed"]


@pytest.mark.parametrize("point", PREPARE_POINTS)
def test_prepare_killed_never_blocks_the_name(home, point):
    name = "killed-" + point.split(".")[1].replace("_", "-")
    crash(home, point, "data", "prepare", str(SAMPLE), "--name", name)
    s = studio_at(home)
    assert not [p for p in (home / "datasets").iterdir() if p.name.startswith(".tmp-")]
    versions = [d["version"] for d in s.data_list() if d["name"] == name]
    assert versions == ([1] if point == "prepare.renamed" else [])  # complete → registered
    again = s.data_prepare([str(SAMPLE)], name)
    assert again["version"] == (2 if point == "prepare.renamed" else 1)
    assert sorted(d["version"] for d in s.data_list() if d["name"] == name) == sorted(versions + [again["version"]])


def test_one_prepare_per_name(home):
    from studio.errors import StudioError
    from studio.locks import hold

    s = studio_at(home)
    with hold(home / "datasets" / ".locks" / "busy-name.lock", "test"):
        with pytest.raises(StudioError, match="busy"):
            s.data_prepare([str(SAMPLE)], "busy-name")
    assert s.data_prepare([str(SAMPLE)], "busy-name")["version"] == 1


# ---- export: kill mid-write and after the rename ---------------------------------------------
@pytest.fixture(scope="module")
def done_run(home):
    s = studio_at(home)
    rid = new_run(s)
    s.train_run(rid)
    return rid


EXPORT_CASES = [
    ("adapter", None, "export.partial_written", False),
    ("ollama", "f16", "export.partial_written", False),
    ("gguf", "q8_0", "export.converted", False),  # a quant not exported yet: converted, not linked
    ("gguf", "f16", "export.intent_written", False),
    ("gguf", "f16", "export.renamed", True),
    ("merged", None, "export.renamed", True),
]


@pytest.mark.parametrize("fmt, quant, point, registered", EXPORT_CASES)
def test_export_killed(home, done_run, fmt, quant, point, registered):
    s = studio_at(home)
    before = len(s.exports_list(done_run))
    crash(home, point, "export", "--run", done_run, "--format", fmt, *(["--quant", quant] if quant else []),
          "--no-parity")  # the write is what these kills are about
    s = studio_at(home)
    assert leftovers(home) == []
    assert not list((home / "exports" / ".pending").glob("*.json"))
    rows = s.exports_list(done_run)
    assert len(rows) == before + registered
    if registered:
        assert Path(rows[0]["path"]).exists() and rows[0]["format"] == fmt
    again = s.export(fmt, run_id=done_run, quant=quant)  # the next export works and takes a new name
    assert Path(again["path"]).exists()
    assert len({r["path"] for r in s.exports_list(done_run)}) == len(s.exports_list(done_run))


# ---- disk full: one message, nothing half-written -------------------------------------------
def _enospc(home: Path, point: str, *args: str):
    r = run_cli(*args, home=home, env={"STUDIO_FAULT_ENOSPC": point}, timeout=300)
    assert r.returncode == 1, (point, r.returncode, r.stderr[-1500:])
    assert "Not enough space in" in r.stderr and "Traceback" not in r.stderr, r.stderr[-1500:]
    return r


def test_disk_full_prepare_and_export(home, done_run):
    _enospc(home, "prepare.write", "data", "prepare", str(SAMPLE), "--name", "full-disk")
    s = studio_at(home)
    assert not [d for d in s.data_list() if d["name"] == "full-disk"] and leftovers(home) == []
    n = len(s.exports_list(done_run))
    for fmt, point in (("adapter", "export.write"), ("gguf", "export.convert")):
        _enospc(home, point, "export", "--run", done_run, "--format", fmt, "--quant", "bf16"
                if fmt == "gguf" else "f32")  # bf16: not exported before, so converted (not linked)
    s = studio_at(home)
    assert len(s.exports_list(done_run)) == n and leftovers(home) == []


@pytest.mark.parametrize("point", ["train.checkpoint", "train.adapter"])
def test_disk_full_in_training_keeps_the_last_checkpoint(home, point):
    s = studio_at(home)
    rid = new_run(s)
    r = run_cli("train", "--resume", rid, home=home, env={"STUDIO_FAULT_ENOSPC": point}, timeout=300)
    assert r.returncode == 1 and "Not enough space in" in r.stderr and "Traceback" not in r.stderr
    s = studio_at(home)
    run = s.run_show(rid)
    assert run["status"] == "failed" and "Not enough space" in run["error"]
    assert leftovers(home) == []
    s.train_run(rid)  # with room again it resumes and finishes
    check_run(s, rid)


def test_disk_full_converting_the_embedded_model(tmp_path, monkeypatch):
    """The disk fills while the converted weights are written: one message, no half-converted
    folder. In process, with the conversion's load left out (it is the session's own first
    step, embedded_model_dir): the write, the guard and the clean-up are what is checked."""
    from studio import faults
    from studio.models import registry

    def half_written(src, tmp):  # as _convert: the model loaded, then its weights written
        tmp.mkdir()
        (tmp / "model.safetensors").write_bytes(b"\0" * 4096)
        faults.fail_point("models.convert")
        raise AssertionError("the injected disk-full did not happen")

    monkeypatch.setattr(registry, "_convert", half_written)
    monkeypatch.setenv("STUDIO_FAULT_ENOSPC", "models.convert")
    models = tmp_path / "models"
    models.mkdir()
    with pytest.raises(faults.DiskFull, match="Not enough space in"):
        registry.prepare_embedded(models)
    assert not list(models.iterdir())  # no half-converted folder


def test_summary_of_kill_points():
    """The suite's own count, from the cases it actually runs: ≥ 20 distinct kill points."""
    points = {*TRAIN_POINTS, "train.run_folder_made", *PREPARE_POINTS, *(c[2] for c in EXPORT_CASES)}
    print(f"\nfault suite: {len(points)} distinct kill points")
    assert len(points) >= 20
