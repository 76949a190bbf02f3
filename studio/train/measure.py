"""The measured check: a few real training steps on this machine, peak memory recorded.

Owns running the step (in a child process, so the peak belongs to this check alone): the model
loaded as the setting says (LoRA / QLoRA through the training loop's own loader), random token
batches of the requested shape (CPU: at most 4,096 tokens per step), three optimizer steps, and
the peak — CUDA: max allocated and reserved; CPU: peak RSS while the steps run (sampled every 5 ms)
minus the RSS before the model was loaded. Run as `python -m studio.train.measure '<json>'`; prints one JSON line.

Also owns LivePeak, an exact count of the bytes autograd and the optimizer keep alive during a
step on any device (every storage an op creates, until it is freed). On CPU it checks the
estimator's GPU accounting — bf16, autocast, QLoRA — without a GPU (bench_memory, test_memory).
"""
from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

CPU_TOKEN_CAP = 4096


class PeakRSS:
    """`with PeakRSS() as p:` … `p.peak` — the CPU has no peak counter that can be reset, so RSS
    is sampled every 5 ms on a thread while the block runs."""

    def __enter__(self):
        import psutil

        self.peak, self._proc, self._stop = 0, psutil.Process(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


class LivePeak:
    """`with LivePeak(keep=tensors) as p:` … `p.peak` — the most bytes of storages created inside
    the block that were alive at once. Tensors in `keep` (weights, optimizer states) count as
    existing already, so views of them are not new memory."""

    def __init__(self, keep=()):
        self.keep = list(keep)

    def __enter__(self):
        import weakref

        import torch
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten
        from torch.utils.weak import WeakIdKeyDictionary

        seen, state = WeakIdKeyDictionary(), {"now": 0, "peak": 0}
        for t in self.keep:
            seen[t.untyped_storage()] = True

        def freed(n: int) -> None:
            state["now"] -= n

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in tree_flatten(out)[0]:
                    if isinstance(t, torch.Tensor):
                        st = t.untyped_storage()
                        if st not in seen and st.nbytes():
                            seen[st] = True
                            state["now"] += st.nbytes()
                            weakref.finalize(st, freed, st.nbytes())
                state["peak"] = max(state["peak"], state["now"])
                return out

        self._state, self._mode = state, Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)
        self.peak = self._state["peak"]


def training_loss(model, inputs: dict[str, Any], spec: Any):
    """The loss as the trainer computes it for this spec: chunked, or the model's own."""
    if spec.train.loss == "chunked":
        from .loss import causal_lm_loss

        loss = causal_lm_loss(model, inputs, spec.train.loss_chunk)
        if loss is not None:
            return loss
    return model(**inputs).loss


def live_peak_gb(config: dict[str, Any], spec: Any) -> float:
    """Peak live GiB of one training step (after a first one made the optimizer states) of a
    llama-family model built from `config` with random weights, as the run `spec` says: dtype, LoRA
    / QLoRA (through prepare_model_for_kbit_training) / full, checkpointing, and the loop — the
    Trainer's (autocast in a half dtype, output dropped before backward) or a plain one."""
    import torch
    from transformers import AutoConfig

    from ..models.registry import resolve_dtype

    torch.manual_seed(0)
    cfg = AutoConfig.for_model(**config)
    t = spec.train
    dtype = resolve_dtype(t.dtype, "cpu")
    model = random_model(cfg, spec, dtype)
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-5)
    ids = torch.randint(0, cfg.vocab_size, (t.micro_batch, t.max_len))
    mask = torch.ones_like(ids)
    mask[1:, -3:] = 0  # padded rows, as real batches have: attention takes the masked path

    inputs = {"input_ids": ids, "attention_mask": mask, "labels": ids}

    def step() -> None:
        if spec.estimate.loop == "plain" and spec.train.loss == "full":
            out = model(**inputs)
            out.loss.backward()
            del out
        else:
            with torch.autocast(ids.device.type, dtype=dtype, enabled=dtype != torch.float32):
                loss = training_loss(model, inputs, spec)
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    keep = list(model.parameters()) + list(model.buffers())
    keep += [v for s in opt.state.values() for v in s.values() if torch.is_tensor(v)]
    static = sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in keep}.values())
    with LivePeak(keep) as p:
        step()
    return (static + p.peak) / 2**30


def random_model(cfg, spec: Any, dtype):
    """The model of `cfg` with random weights, loaded as `spec` trains it — quantized and prepared
    for QLoRA, checkpointed, with LoRA adapters unless full — in training mode."""
    import tempfile

    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    from ..models.registry import bnb_config, lora_config
    from .loop import embeddings_to_half

    t = spec.train
    if spec.method == "qlora":
        with tempfile.TemporaryDirectory() as d:
            AutoModelForCausalLM.from_config(cfg).save_pretrained(d)
            model = AutoModelForCausalLM.from_pretrained(
                d, dtype=dtype, quantization_config=bnb_config(spec.quant, dtype))
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=t.grad_ckpt)
        if spec.estimate.loop == "trainer":
            embeddings_to_half(model, dtype)
    else:
        model = AutoModelForCausalLM.from_config(cfg).to(dtype)
    model.config.use_cache = False
    if t.grad_ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if spec.method != "full":
        model = get_peft_model(model, lora_config(spec.lora, model.config.get_text_config().num_hidden_layers))
        if t.grad_ckpt:
            model.enable_input_require_grads()
    model.train()
    return model


def measure(model_path: str, spec: Any, steps: int = 3) -> dict[str, Any]:
    """A few real steps of `spec` (a RunSpec; device from its estimate section) on this machine."""
    import psutil
    import torch

    from ..models.registry import resolve_dtype
    from ..spec import update
    from .loop import load_for_training

    device = spec.estimate.device
    batch, seq = spec.train.micro_batch, spec.train.max_len
    notes = []
    if device == "cpu" and batch * seq > CPU_TOKEN_CAP:
        seq = max(16, CPU_TOKEN_CAP // batch)
        notes.append(f"On CPU a step is capped at {CPU_TOKEN_CAP} tokens: measured batch {batch} × "
                     f"{seq} tokens instead of {spec.train.max_len}.")
    if device == "cpu":
        spec = update(spec, dtype="fp32")
    base_rss = psutil.Process().memory_info().rss
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model = load_for_training(Path(model_path), device, spec)
    model.train()  # from_pretrained returns eval mode, where checkpointing is skipped
    if spec.train.grad_ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4)
    vocab = model.config.vocab_size
    half = resolve_dtype(spec.train.dtype, device) if device == "cuda" else None
    half = half if half in (torch.bfloat16, torch.float16) else None
    t0 = time.time()
    with PeakRSS() as peak:
        for _ in range(steps):
            ids = torch.randint(0, vocab, (batch, seq), device=model.device)
            with torch.autocast("cuda", dtype=half, enabled=half is not None):  # as the Trainer does
                loss = training_loss(model, {"input_ids": ids, "labels": ids}, spec)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    out: dict[str, Any] = {"device": device, "batch": batch, "seq_len": seq, "notes": notes,
                           "seconds_per_step": round((time.time() - t0) / steps, 2)}
    if device == "cuda":
        out["peak_allocated_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        out["peak_reserved_gb"] = round(torch.cuda.max_memory_reserved() / 2**30, 3)
        out["measured_gb"], out["metric"] = out["peak_reserved_gb"], "max_memory_reserved"
    else:
        out["measured_gb"], out["metric"] = round((peak.peak - base_rss) / 2**30, 3), "rss_growth"
    return out


def run_in_child(model_path: Path, spec: Any) -> dict[str, Any]:
    """measure() in a fresh Python process, so the peak is this check's alone."""
    import os
    import subprocess

    from ..errors import ConfigError

    # glibc keeps freed blocks, so RSS would track the high-water mark of every temporary;
    # returning large blocks at once makes RSS follow live tensors (like CUDA "allocated").
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0",
           "MALLOC_ARENA_MAX": "2"}
    if sys.platform.startswith("linux"):  # as training runs (train/runs.py)
        env.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    proc = subprocess.run([sys.executable, "-m", "studio.train.measure",
                           json.dumps({"model_path": str(model_path), "spec": spec.to_dict()})],
                          capture_output=True, text=True, timeout=900, env=env)
    if proc.returncode != 0:
        raise ConfigError("The measured check failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    from ..spec import RunSpec, build

    args = json.loads(sys.argv[1])
    print(json.dumps(measure(args["model_path"], build(RunSpec, args["spec"], "measure"))))
