"""The measured check: a few real training steps on this machine, peak memory recorded.

Owns running the step (in a child process, so the peak belongs to this check alone): the model
loaded as the setting says (LoRA / QLoRA through the training loop's own loader), random token
batches of the requested shape (CPU: at most 4,096 tokens per step), three optimizer steps, and
the peak — CUDA: max allocated and reserved; CPU: peak RSS while the steps run (sampled every 5 ms)
minus the RSS before the model was loaded. Run as `python -m studio.memory_measure '<json>'`; prints one JSON line.
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


def measure(model_path: str, setting: dict[str, Any], steps: int = 3) -> dict[str, Any]:
    import psutil
    import torch

    from .presets import Preset, build
    from .train.loop import load_for_training

    device = setting.get("device", "cpu")
    batch, seq = setting["batch"], setting["seq_len"]
    notes = []
    if device == "cpu" and batch * seq > CPU_TOKEN_CAP:
        seq = max(16, CPU_TOKEN_CAP // batch)
        notes.append(f"On CPU a step is capped at {CPU_TOKEN_CAP} tokens: measured batch {batch} × "
                     f"{seq} tokens instead of {setting['seq_len']}.")
    method = "qlora" if setting["method"] == "qlora" else "lora"
    p = build(Preset, {"method": method, "lora": {"rank": setting["rank"], "targets": setting["targets"],
                                                  "dora": setting.get("dora", False)},
                       "quant": {"bits": setting["bits"] if setting["bits"] in (4, 8) else 4,
                                 "type": setting["quant_type"], "double_quant": setting["double_quant"]},
                       "train": {"dtype": setting["dtype"] if device != "cpu" else "fp32",
                                 "grad_ckpt": setting["grad_ckpt"]}}, "measure")
    base_rss = psutil.Process().memory_info().rss
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model = load_for_training(Path(model_path), device, p)
    model.train()  # from_pretrained returns eval mode, where checkpointing is skipped
    if setting["grad_ckpt"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4)
    vocab = model.config.vocab_size
    t0 = time.time()
    with PeakRSS() as peak:
        for _ in range(steps):
            ids = torch.randint(0, vocab, (batch, seq), device=model.device)
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    out: dict[str, Any] = {"device": device, "batch": batch, "seq_len": seq, "notes": notes,
                           "seconds_per_step": round((time.time() - t0) / steps, 2)}
    if device == "cuda":
        out["peak_allocated_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        out["peak_reserved_gb"] = round(torch.cuda.max_memory_reserved() / 2**30, 3)
        out["measured_gb"] = out["peak_reserved_gb"]
    else:
        out["measured_gb"] = round((peak.peak - base_rss) / 2**30, 3)
    return out


if __name__ == "__main__":
    args = json.loads(sys.argv[1])
    print(json.dumps(measure(args["model_path"], args["setting"])))
