"""Shared, session-scoped fixtures: one converted embedded model, one studio home, one short
training run and its report, and a two-layer model for tests where the model is not the point.

The embedded model is converted once into .venv/.test-cache (kept between pytest runs) and
hard-linked into each session's temporary STUDIO_HOME, so no test pays for a conversion twice.
Expensive results (the run, its report) are made once per session and shared; a test that changes
one (the adapter strength) puts it back as it was.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if os.environ.get("PYTEST_XDIST_WORKER"):
    # two workers share the cores: a thread waiting for work sleeps instead of spinning
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
CACHE = ROOT / ".venv" / ".test-cache"
if "STUDIO_CPU_BF16" not in os.environ:
    # one precision for the whole suite: measured once here (in xdist's controller, before its
    # workers start), inherited by the workers and every CLI or training child they start
    from studio.models.loading import cpu_bf16_fast

    os.environ["STUDIO_CPU_BF16"] = "1" if cpu_bf16_fast() else "0"


class Zygote:
    """tests/zygote.py, started on first use: CLI calls fork from it instead of paying the
    imports of a fresh `python -m studio` (≈3.5 s each, a few minutes over the suite)."""
    # read when those libraries are imported: a call that changes one gets a fresh process
    IMPORT_TIME_ENV = ("HF_", "TRANSFORMERS", "TORCH", "PYTORCH", "OMP_", "MKL_", "CUDA", "TOKENIZERS",
                       "BNB_", "PYTHON")
    # …but not those the studio sets in a process that trained or evaluated (once one test has,
    # the suite's environment has them): a forked CLI sets them the same way where it needs them.
    # Left in, every later CLI call paid a fresh process.
    STUDIO_SETS = {"PYTORCH_CUDA_ALLOC_CONF", "TOKENIZERS_PARALLELISM", "HF_HUB_ETAG_TIMEOUT",
                   "HF_HUB_DOWNLOAD_TIMEOUT", "HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"}

    def __init__(self):
        self.proc, self.env, self.lock = None, None, threading.Lock()
        self.import_set: set[str] = set()  # variables the zygote's own imports set
        self.forked = 0  # CLI calls it answered
        self.fresh: dict[str, int] = {}  # why others got a fresh process, counted

    def start(self) -> bool:
        if self.proc is None:
            self.env = dict(os.environ)
            self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "zygote.py")], cwd=ROOT,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.DEVNULL, text=True, env=self.env)
            ready = self.proc.stdout.readline()
            if '"ready"' not in ready:
                self.proc.kill()
                self.proc = False
            else:
                self.import_set = set(json.loads(ready).get("import_set", []))
        return bool(self.proc) and self.proc.poll() is None

    def misfit(self, env: dict) -> str | None:
        """Why this call cannot fork from the zygote, or None."""
        if not self.start():
            return "no zygote"
        keys = set(env) | set(self.env or {})
        differ = sorted(k for k in keys if k.startswith(self.IMPORT_TIME_ENV)
                        and k not in self.STUDIO_SETS | self.import_set and env.get(k) != (self.env or {}).get(k))
        return f"environment differs: {', '.join(differ)}" if differ else None

    def run(self, argv: list[str], env: dict, timeout: float):
        with self.lock:
            why = self.misfit(env)
            if why:
                self.fresh[why] = self.fresh.get(why, 0) + 1
                return None
            req = {"argv": argv, "env": env, "cwd": str(ROOT), "timeout": timeout}
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
            out = json.loads(self.proc.stdout.readline())
            self.forked += 1
        if out["returncode"] == -9 and "STUDIO_CRASH_AT" not in env and out.get("timed_out"):
            raise subprocess.TimeoutExpired(argv, timeout)
        return subprocess.CompletedProcess(argv, out["returncode"], out["stdout"], out["stderr"])

    def stop(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()


ZYGOTE = Zygote()


def run_cli(*args: str, home: Path | None = None, timeout: int = 600, env: dict | None = None):
    """`python -m studio ARGS` in a process of its own (a fork of the zygote when it can be)."""
    e = {**os.environ, **(env or {})}
    if home:
        e["STUDIO_HOME"] = str(home)
    done = ZYGOTE.run(list(args), e, timeout)
    if done is not None:
        return done
    return subprocess.run([sys.executable, "-m", "studio", *args], capture_output=True, text=True,
                          cwd=ROOT, env=e, timeout=timeout)


# The long end-to-end tests (`-m e2e`; `make test-quick` leaves them out): whole modules that
# train, convert or drive a browser or a killed process, and every test that needs the shared run.
E2E_MODULES = {"test_browser", "test_compare", "test_export", "test_export_models", "test_faults", "test_train"}
E2E_FIXTURES = {"trained_run", "trained_report", "llama_server"}


def crash(home: Path, point: str, *args: str, timeout: int = 300):
    """Run a CLI command that kills itself (-9) at the named point (studio/faults.py)."""
    import signal

    r = run_cli(*args, home=home, env={"STUDIO_CRASH_AT": point}, timeout=timeout)
    assert r.returncode == -signal.SIGKILL, (point, r.returncode, r.stderr[-2000:])
    return r


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module.__name__ in E2E_MODULES or E2E_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.e2e)
    if os.environ.get("PYTEST_XDIST_WORKER"):  # the longest unit of work first (see below)
        items.sort(key=lambda item: Path(item.nodeid.split("::")[0]).stem not in SHARED_RUN_MODULES)


# `make test` runs two pytest-xdist workers, `--dist loadscope` scheduled by the unit below: a
# module's tests stay on one worker (its module fixtures are made once), and every module that
# uses the shared run goes to one worker, first (the run and its report are made once, and that
# unit is the longest). xdist's own `loadgroup` cannot do this under pytest 9 (it renames node
# ids through an attribute pytest 9 no longer reads).
SHARED_RUN_MODULES = {p.stem for p in (ROOT / "tests").glob("test_*.py")
                      if re.search(r"\btrained_(run|report)\b", p.read_text(encoding="utf-8"))}


@pytest.hookimpl(optionalhook=True)  # pytest without xdist does not know this hook
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "shared-run" if Path(module).stem in SHARED_RUN_MODULES else module
    return ByModule(config, log)


def pytest_sessionfinish(session, exitstatus):
    ZYGOTE.stop()


def pytest_terminal_summary(terminalreporter):
    if terminalreporter.config.getoption("numprocesses", None):
        return  # xdist's controller: the workers forked the CLI calls, and their counts stay there
    fresh = "; ".join(f"{n} × {why}" for why, n in ZYGOTE.fresh.items())
    terminalreporter.write_line(f"CLI calls: {ZYGOTE.forked} forked from the zygote"
                                + (f", fresh processes: {fresh}" if fresh else ""))


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    from studio.models import registry as models

    CACHE.mkdir(parents=True, exist_ok=True)
    return models.prepare_embedded(CACHE)


def make_tiny_llama(folder: Path, embedded_model_dir: Path, hidden: int = 32) -> Path:
    """A two-layer Llama with random weights and the embedded model's tokenizer and chat
    template: trains in a blink, where the model itself is not what a test checks."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(vocab_size=49152, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(folder)
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):
        if (embedded_model_dir / f).exists():
            shutil.copy(embedded_model_dir / f, folder / f)
    return folder


CHAT_SAMPLES = ("product_faq.jsonl", "arithmetic_qa.jsonl")


def chat_tiny_name(embedded_model_dir: Path) -> str:
    """The cached model's folder name: a hash of its recipe (make_chat_tiny's code, the samples,
    the tokenizer and chat template), so a change to any of them builds it again."""
    import hashlib
    import inspect

    h = hashlib.sha256(inspect.getsource(build_chat_tiny).encode() + inspect.getsource(make_tiny_llama).encode())
    for f in [*(ROOT / "assets" / "sample" / n for n in CHAT_SAMPLES),
              *(embedded_model_dir / n for n in ("tokenizer.json", "chat_template.jinja"))]:
        h.update(f.read_bytes() if f.exists() else b"-")
    return f"chat-tiny-{h.hexdigest()[:12]}"


def make_chat_tiny(embedded_model_dir: Path) -> Path:
    """The two-layer model taught the chat format: 120 steps on the samples' questions and
    answers (≈30 s on 2 cores, once; kept in .venv/.test-cache), so its greedy answers are a few
    words that end at the end-of-turn token, as a chat model's do. It stands in for the embedded
    model where a test drives the flow around the model (the browser walks): training, the
    report and an export with its parity check take seconds instead of minutes. What the
    embedded model itself learns is tested on it (the shared run, its report and exports)."""
    from filelock import FileLock

    name = chat_tiny_name(embedded_model_dir)
    done = CACHE / name
    CACHE.mkdir(parents=True, exist_ok=True)
    with FileLock(str(CACHE / ".chat-tiny.lock")):  # two xdist workers: one builds, the other waits
        if not (done / "config.json").exists():
            build_chat_tiny(embedded_model_dir, name)
    return done


def build_chat_tiny(embedded_model_dir: Path, name: str) -> None:
    import random

    import torch
    from transformers import AutoModelForCausalLM

    done = CACHE / name
    for old in CACHE.glob("chat-tiny-*"):  # an earlier recipe's
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    work = CACHE / f".{name}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    make_tiny_llama(work, embedded_model_dir)
    from studio.models import registry as models

    tok = models.load_tokenizer(work)
    tok.padding_side = "right"
    rows = [json.loads(line) for f in CHAT_SAMPLES
            for line in (ROOT / "assets" / "sample" / f).read_text().splitlines() if line.strip()]
    texts = [tok.apply_chat_template([{"role": "user", "content": r["question"]},
                                      {"role": "assistant", "content": r["answer"]}], tokenize=False)
             for r in rows]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(work)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    pick = random.Random(0)
    for _ in range(120):
        batch = tok(pick.sample(texts, 8), return_tensors="pt", padding=True)
        labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
        model(**batch, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(work)
    try:
        os.replace(work, done)  # whole or not at all: a killed build leaves only its temp folder
    except OSError:  # another process finished it first
        shutil.rmtree(work, ignore_errors=True)


def new_home(tmp_path_factory, name: str, embedded_model_dir: Path) -> Path:
    """A studio home with the embedded model (hard links). Its replay cache — the base model's
    own answers and next-token distributions, taken once per model (≈30 s for the soft anchor's)
    — is the session's one shared folder: the first run that needs them makes them (written
    atomically), every other home reads them."""
    home = tmp_path_factory.mktemp(name)
    dst = home / "models" / embedded_model_dir.name
    dst.parent.mkdir(parents=True)
    shutil.copytree(embedded_model_dir, dst, copy_function=os.link)
    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared-replay"
    shared.mkdir(exist_ok=True)
    (home / "replay").symlink_to(shared, target_is_directory=True)
    return home


@pytest.fixture(scope="session")
def studio_home(tmp_path_factory, embedded_model_dir) -> Path:
    return new_home(tmp_path_factory, "studio-home", embedded_model_dir)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, embedded_model_dir) -> str:
    """The two-layer model's folder (a model reference: a local folder)."""
    return str(make_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama", embedded_model_dir))


@pytest.fixture(scope="session")
def chat_tiny(embedded_model_dir) -> Path:
    """The two-layer model that speaks the chat format (make_chat_tiny), its folder."""
    return make_chat_tiny(embedded_model_dir)


@pytest.fixture(scope="session")
def studio(studio_home):
    from studio.api import Studio

    return Studio(studio_home)


@pytest.fixture(scope="session")
def base_model(embedded_model_dir):
    """(model, tokenizer) of the embedded model, loaded once for the whole session."""
    from studio.models import registry as models

    return models.load_model(embedded_model_dir), models.load_tokenizer(embedded_model_dir)


@pytest.fixture(scope="session")
def faq_dataset(studio):
    studio.data_prepare([str(ROOT / "assets" / "sample" / "product_faq.jsonl")], "faq",
                        val_fraction=0.1)
    return "faq"


@pytest.fixture(scope="session")
def trained_run(studio, faq_dataset):
    """One short cpu-quickstart run shared by the train, compare, report and export tests (two
    examples a step, the lighter anchor of before 2026-12-07: the tests need a run that learned
    a little in 12 steps — its answers differ from the base model's —, not the preset's recipe)."""
    run = studio.train_create("cpu-quickstart", faq_dataset, overrides=[
        "train.save_every=4", "train.eval_every=6", "train.lr=1e-3", "train.micro_batch=2",
        "train.replay_weight=5", "train.replay_short=1"], max_steps=12)
    return studio.train_run(run["id"])


@pytest.fixture(scope="session")
def trained_report(studio, trained_run):
    """The report of the shared run, computed once (about a minute on 2 cores)."""
    return studio.report(trained_run["id"], refresh=True)
