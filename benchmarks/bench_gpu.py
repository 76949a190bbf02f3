"""Real training steps on a CUDA GPU against the estimate: peak memory, tokens/s, longest context.

Run where a GPU is lent (see benchmarks/RESULTS.md for the numbers it gave). Models are built from
catalogue configs with random weights, saved once and loaded through the training loop's own
loader (`load_for_training`: bitsandbytes 4-bit for QLoRA, PEFT LoRA). They are then stepped by a
bare loop written here, as the Trainer steps them — autocast in bf16, the run's loss (chunked or
the model's own), the saved activations offloaded to pinned CPU memory when `offload` is on,
AdamW — not by transformers' Trainer itself (no scheduler, clipping, accumulation or callbacks);
rows say so (`"stepped_by"`). A case whose spec says `loop=plain` skips the autocast (a plain bf16
loop, as PEFT's published benchmark runs). For each case it prints the estimate's
peak_allocated_gb next to torch.cuda.max_memory_allocated / reserved, and tokens/s of the timed
steps. The longest-length cases are for a card of `--cap` GB: the estimate's longest length for
that card, and 0.9× / 1.1× of it, each run with PyTorch's allocator capped to the card's usable
memory less the CUDA context (torch.cuda.set_per_process_memory_fraction(cap / total), where CUDA
is present), so the "longest length that fits" claims are tried, not just printed. Also a
loss-only comparison: the full logits, our chunked loss, Liger-Kernel's fused linear
cross-entropy (when installed).

Usage: python benchmarks/bench_gpu.py [--smoke] [--longest] [--cap GB] [--out results.jsonl]
  --smoke    tiny configs on whatever device is here (checks the script itself, on CPU too)
  --longest  only the offloader's gradient check and the Llama-3.1-8B QLoRA longest-length cases
  --cap GB   the card the longest-length cases stand for (default 24: an RTX 3090/4090); its
             usable memory is the catalogue's for a card of that size, else GB itself
Raw output of the runs quoted in RESULTS.md: benchmarks/results/.
"""
import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
if sys.platform.startswith("linux"):  # as the training child sets it (studio/train/runs.py)
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

from studio.memory import estimate as m  # noqa: E402
from studio.memory import advice as ma  # noqa: E402
from studio.spec import from_flat  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny configs: checks the script, on CPU too")
    ap.add_argument("--longest", action="store_true", help="only the 8B QLoRA longest-length cases")
    ap.add_argument("--cap", type=float, default=24.0, metavar="GB",
                    help="the card (GB) the longest-length cases stand for; their allocator is capped to it")
    ap.add_argument("--out", type=Path, default=None, help="also append each row to this JSONL file")
    return ap.parse_args(argv)


ARGS = parse_args() if __name__ == "__main__" else parse_args([])
SMOKE, ONLY_LONGEST, OUT = ARGS.smoke, ARGS.longest, ARGS.out
START, DEADLINE_S = time.perf_counter(), 420  # a lent GPU's time is short: stop starting cases
CARD_GB = ARGS.cap  # the card the "longest length" rows are for
STEPPED_BY = "bare loop as the Trainer steps it (not transformers.Trainer)"
TINY = {"num_hidden_layers": 2, "hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 64, "vocab_size": 4096}


def record(row: dict) -> None:
    print(json.dumps(row), flush=True)
    if OUT:
        with OUT.open("a") as f:
            f.write(json.dumps(row) + "\n")


def config(name: str) -> dict:
    cfg = dict(ma.catalog("models")[name])
    return {**cfg, **TINY} if SMOKE else cfg


def save_random(name: str, folder: Path) -> None:
    """A model of catalogue shape `name` with random weights, saved in bf16 (built on the GPU)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(**config(name))
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    del model
    gc.collect()


def spec(**kw):
    base = dict(method="lora", bits=16, rank=16, targets="all-linear", batch=1, grad_ckpt=True,
                dtype="bf16", device="cuda", loss="chunked", offload="off", loop="trainer")
    return from_flat(**{**base, **kw})


def run_cases(folder: Path, name: str, cases: list, steps: int = 2) -> None:
    """Load once (all `cases` share method and LoRA settings), then for each (label, spec, cap):
    a fresh optimizer, `steps` steps (the first makes the optimizer states), the peak over all of
    them and tokens/s of the last. A failing case is recorded and the next one runs."""
    import torch

    from studio.train.loop import load_for_training

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    t0 = time.perf_counter()
    model = load_for_training(folder, device, cases[0][1])
    model.train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    static = round(torch.cuda.memory_allocated() / 2**30, 3) if cuda else None
    record({"case": "load", "model": name, "method": cases[0][1].method, "static_gb": static,
            "seconds": round(time.perf_counter() - t0, 1)})
    for label, st, cap in cases:
        if time.perf_counter() - START > DEADLINE_S:
            record({"case": label, "error": f"skipped: past the {DEADLINE_S} s budget"})
            continue
        try:
            one_case(model, name, label, st, cap, steps, static)
        except Exception as e:  # noqa: BLE001 — one case failing must not hide the others
            record({"case": label, "error": f"{type(e).__name__}: {e}"[:300]})
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    del model
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()


def one_case(model, name: str, label: str, st, cap_gb: float | None, steps: int, static) -> None:
    import torch

    from studio.train.measure import training_loss
    from studio.train.offload import offload_context

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    est = m.estimate(m.shape_from_config(config(name)), st)
    row = {"case": label, "model": name, "method": st.method, "targets": st.lora.targets,
           "rank": st.lora.rank, "tokens": st.train.max_len, "batch": st.train.micro_batch,
           "ckpt": st.train.grad_ckpt, "loss": st.train.loss, "offload": st.train.offload,
           "kbit_norms": st.train.kbit_norms, "mlp_chunk": st.train.mlp_chunk,
           "loop": st.estimate.loop, "stepped_by": STEPPED_BY, "static_gb": static, "cap_gb": cap_gb,
           "estimate_alloc_gb": est["peak_allocated_gb"], "estimate_total_gb": est["total_gb"],
           "estimate_breakdown": est["breakdown_gb"]}
    row["cap_applied"] = bool(cuda and cap_gb)  # without CUDA there is no allocator to cap
    if cuda:
        total = torch.cuda.get_device_properties(0).total_memory / 2**30
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gb / total) if cap_gb else 1.0)
        torch.cuda.reset_peak_memory_stats()
    if st.train.grad_ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-5)
    plain = st.estimate.loop == "plain"
    try:
        for _ in range(steps):
            ids = torch.randint(0, model.config.vocab_size, (st.train.micro_batch, st.train.max_len),
                                device=device)
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            with offload_context(st.train.offload == "on", pin=cuda) as moved:
                with torch.autocast(device, dtype=torch.bfloat16, enabled=not plain):
                    loss = training_loss(model, {"input_ids": ids, "labels": ids}, st)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if cuda:
                torch.cuda.synchronize()
            row["seconds_per_step"] = round(time.perf_counter() - t0, 3)
            if moved is not None:  # what the offloader moved, fetched ahead and kept
                row["offload_stats"] = dict(moved.stats)
            del loss
        row["tokens_per_s"] = round(st.train.max_len * st.train.micro_batch / row["seconds_per_step"], 1)
        row["ok"] = True
    except torch.OutOfMemoryError as e:
        row["ok"], row["error"] = False, "out of memory: " + str(e).splitlines()[0][:160]
    finally:
        opt.zero_grad(set_to_none=True)
        del opt
    if cuda:
        row["peak_alloc_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        row["peak_reserved_gb"] = round(torch.cuda.max_memory_reserved() / 2**30, 3)
        row["error_vs_alloc"] = round((est["peak_allocated_gb"] - row["peak_alloc_gb"]) / row["peak_alloc_gb"], 3)
        torch.cuda.set_per_process_memory_fraction(1.0)
    record(row)


def usable_gb(card_gb: float) -> float:
    """What a PyTorch process can allocate on a card of `card_gb`: the catalogue's figure for a
    card of that size (24 → an RTX 3090/4090's 23.5), else `card_gb` itself."""
    same = [g["usable_gb"] for g in ma.catalog("gpus").values() if g["vram_gb"] == card_gb]
    return same[0] if same else card_gb


def longest(name: str, st, card_gb: float) -> int:
    return ma.longest(m.shape_from_config(config(name)), st, usable_gb(card_gb)) or 0


def cap_for(st) -> float:
    """The allocator cap that stands for a --cap card: its usable memory less the CUDA context
    (the context is outside PyTorch's allocator, so the cap leaves it out)."""
    e = m.estimate(m.shape_from_config(config("llama-3.1-8b")), st)
    return usable_gb(CARD_GB) - e["breakdown_gb"].get("cuda_context", 0)


def loss_only() -> None:
    """Peak extra memory and time of loss forward+backward over [tokens, hidden] → vocab."""
    import torch

    from studio.train.loss import chunked_ce

    cuda = torch.cuda.is_available()
    dev = "cuda" if cuda else "cpu"
    tokens, hidden, vocab = (512, 256, 4096) if SMOKE else (16_384, 4096, 128_256)
    torch.manual_seed(0)
    w = (torch.randn(vocab, hidden, device=dev) * 0.02).to(torch.bfloat16)
    labels = torch.randint(0, vocab, (tokens,), device=dev)
    ways = {"full logits (fp32)": lambda h: torch.nn.functional.cross_entropy(
                torch.nn.functional.linear(h, w).float(), labels, reduction="sum"),
            "studio chunked (1024)": lambda h: chunked_ce(h, w, None, labels, 1024, None)}
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        liger = LigerFusedLinearCrossEntropyLoss(reduction="sum")
        ways["liger fused linear CE"] = lambda h: liger(w, h, labels)
    except ImportError:
        record({"case": "loss-only", "note": "liger-kernel not installed"})
    ref = None
    for way, fn in ways.items():
        h = (torch.randn(tokens, hidden, device=dev) * 0.5).to(torch.bfloat16).requires_grad_()
        try:
            for _ in range(2):  # the second is timed (Triton compiles on the first)
                h.grad = None
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                    base = torch.cuda.memory_allocated()
                t0 = time.perf_counter()
                loss = fn(h)
                loss.backward()
                if cuda:
                    torch.cuda.synchronize()
                dt = time.perf_counter() - t0
            g = h.grad.float()
            ref = (loss.item(), g) if ref is None else ref
            row = {"case": "loss-only", "way": way, "tokens": tokens, "vocab": vocab,
                   "ms": round(dt * 1000, 1), "loss_rel_diff": abs(loss.item() - ref[0]) / abs(ref[0]),
                   "grad_rel_diff": float((g - ref[1]).norm() / ref[1].norm())}
            if cuda:
                row["peak_extra_gb"] = round((torch.cuda.max_memory_allocated() - base) / 2**30, 3)
            record(row)
        except Exception as e:  # noqa: BLE001 — one way failing must not hide the others
            record({"case": "loss-only", "way": way, "error": f"{type(e).__name__}: {e}"[:300]})
        del h
        gc.collect()


def offload_check() -> None:
    """The offloader on this device gives the gradients it gives without it, bit for bit: a
    small llama in bf16 with LoRA and checkpointing, every saved tensor offloaded (on CUDA through
    the side stream and the fetch ahead), three steps' gradients compared."""
    import contextlib

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    from studio.train.loss import causal_lm_loss
    from studio.train.offload import Offloader

    cuda = torch.cuda.is_available()
    dev = "cuda" if cuda else "cpu"
    torch.manual_seed(0)
    cfg = AutoConfig.for_model(**{**ma.catalog("models")["llama-3.2-1b"], **TINY, "num_hidden_layers": 6})
    with torch.device(dev):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    for n, q in model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(q, std=0.02)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model.train()
    row = {"case": "offload-same-gradients", "device": dev, "identical": True}
    for step in range(3):
        ids = torch.randint(0, cfg.vocab_size, (1, 2048), device=dev)
        grads = []
        for off in (None, Offloader(pin=cuda, min_bytes=0, devices=(dev,))):
            model.zero_grad(set_to_none=True)
            with off or contextlib.nullcontext():
                loss = causal_lm_loss(model, {"input_ids": ids, "labels": ids}, 1024)
            loss.backward()
            grads.append({n: q.grad.clone() for n, q in model.named_parameters() if q.grad is not None})
        row["identical"] &= all(torch.equal(grads[0][n], g) for n, g in grads[1].items())
        row["offload_stats"] = dict(off.stats)
    record(row)


def main() -> None:
    import torch

    if torch.cuda.is_available():
        record({"case": "device", "name": torch.cuda.get_device_name(0), "torch": torch.__version__,
                "total_gb": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)})
    offload_check()
    if not ONLY_LONGEST:
        loss_only()
    import shutil

    shm = Path("/dev/shm")  # RAM-backed: the 16 GB of random 8B weights load back at memory speed
    roomy = shm.is_dir() and shutil.disk_usage(shm).free > (2 if SMOKE else 40) * 2**30
    tmp = Path(tempfile.mkdtemp(prefix="bench_gpu_", dir=shm if roomy else None))
    short = 256 if SMOKE else 2048
    # 1. a 1B model, LoRA: the loss and offload levers at 2k, then the published-point shape
    one_b = tmp / "llama-3.2-1b"
    if ONLY_LONGEST:
        return longest_cases(tmp, short)
    save_random("llama-3.2-1b", one_b)
    run_cases(one_b, "llama-3.2-1b", [
        ("1b-2k", spec(max_len=short, loss=loss, offload=off), None)
        for loss, off in (("full", "off"), ("chunked", "off"), ("chunked", "on"))], steps=3)
    qv = dict(targets="q,v", rank=16, max_len=64 if SMOKE else 512, batch=8, grad_ckpt=False, loss="full")
    run_cases(one_b, "llama-3.2-1b", [("1b-qv-b8-plain", spec(**qv, loop="plain"), None),
                                      ("1b-qv-b8-bare-loop-with-trainer-autocast", spec(**qv), None)])
    longest_cases(tmp, short)


def longest_cases(tmp: Path, short: int) -> None:
    # 2. Llama 3.1 8B QLoRA r32 all-linear batch 1, as the max-context table assumes
    eight_b = tmp / "llama-3.1-8b"
    t0 = time.perf_counter()
    save_random("llama-3.1-8b", eight_b)
    record({"case": "save", "model": "llama-3.1-8b", "seconds": round(time.perf_counter() - t0, 1)})
    q = dict(method="qlora", bits=4, rank=32)
    lean = dict(q, offload="on", kbit_norms="compute", mlp_chunk=64 if SMOKE else 4096)
    plain = [] if ONLY_LONGEST else [("8b-qlora-2k-full", spec(**q, max_len=short, loss="full"), None),
             ("8b-qlora-2k", spec(**q, max_len=short), None),
             ("8b-qlora-b2-512-full", spec(**q, max_len=64 if SMOKE else 512, batch=2, loss="full"), None)]
    cases = []
    # every lever on (offloading, bf16 residual, MLP chunks): the estimate's longest for a 24 GB
    # card and 10% either side — the measured longest is within 10% of the estimate when the
    # estimate and 0.9× fit and 1.1× does not — then its speed at 2k and 16k tokens
    st = spec(**lean)
    n = 512 if SMOKE else longest("llama-3.1-8b", st, CARD_GB)
    record({"case": "longest-estimate", "card_gb": CARD_GB, "levers": "all", "tokens": n})
    cap = None if SMOKE else cap_for(st)
    for f in (1.0, 1.1, 0.9):
        cases.append((f"8b-qlora-{f:g}x-longest-{CARD_GB:g}g-all-levers", spec(**lean, max_len=int(n * f)), cap))
    for length in (short, 2048 if SMOKE else 16_384):
        cases.append((f"8b-qlora-{length}-all-levers", spec(**lean, max_len=length), None))
    for off in ("off", "on"):  # each lever alone, as measured on 2026-11-29
        st = spec(**q, offload=off)
        n = 512 if SMOKE else longest("llama-3.1-8b", st, CARD_GB)
        record({"case": "longest-estimate", "card_gb": CARD_GB, "offload": off, "tokens": n})
        plain.append((f"8b-qlora-longest-{CARD_GB:g}g-offload-{off}", spec(**q, offload=off, max_len=n),
                      None if SMOKE else cap_for(st)))
    run_cases(eight_b, "llama-3.1-8b", cases)  # the levers change the loaded model: a load each
    run_cases(eight_b, "llama-3.1-8b", plain)


if __name__ == "__main__":
    main()
