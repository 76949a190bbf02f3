"""The Memory step as a service: estimate a run spec, calibrate it, and measure it for real.

Owns resolving the model's shape for an estimate, the fit report, calibrating a new estimate by
earlier measured checks of the same model and device (median measured/estimate), and the
measured check (a child process; its result stored next to the estimate). Dependencies come in
explicitly: the store, the models folder, the model cache and the measured check itself
(train/measure.run_in_child: it trains a few real steps, so it lives with training, which sits
above this package). The arithmetic is estimate.py; fit advice is advice.py.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from . import estimate as memory
from . import advice as ma
from ..errors import ConfigError
from ..spec import RunSpec, flat_view, update


class MemoryService:
    def __init__(self, store, models_dir: Path, cache,
                 measure_in_child: Callable[[Path, RunSpec], dict[str, Any]]):
        self.store, self.models_dir, self.cache = store, Path(models_dir), cache
        self.measure_in_child = measure_in_child

    def estimate(self, model: str, spec: RunSpec, gpu: str | None = None,
                 vram_gb: float | None = None, measure: bool = False) -> dict[str, Any]:
        """Estimate (instant, no torch), fit verdict and advice; optionally measure for real."""
        shape, name = ma.load_shape(model, self.models_dir)
        out = ma.report(shape, spec, gpu, vram_gb)
        out["model"] = name
        device = spec.estimate.device
        checks = self.store.list_memory_checks(name)
        ratios = sorted(c["measured_gb"] / c["estimate_gb"] for c in checks
                        if c["device"] == device and c["estimate_gb"])
        if ratios:
            out["calibrated_total_gb"] = round(out["total_gb"] * ratios[len(ratios) // 2], 3)
            out["calibration"] = f"median measured/estimate over {len(ratios)} earlier checks"
        if measure:
            out["measured"] = self.measure(model, name, memory.normalise(spec))
        return out

    def measure(self, model: str, name: str, spec: RunSpec) -> dict[str, Any]:
        """A few real steps here; the estimate for what ran (the CPU caps a step's tokens)."""
        device = self.cache.device()
        if device == "mps":
            raise ConfigError("The measured check supports CUDA and CPU, not Apple MPS.")
        spec = update(spec, device="cuda" if device == "cuda" else "cpu")
        if spec.method == "full":  # the check trains adapters, as the studio does
            spec = update(spec, method="lora")
        path = self.cache.path(model)
        if not Path(path).is_dir():
            raise ConfigError(f"{model} is not a local model folder; the measured check needs the "
                              "weights (use the embedded model or a downloaded folder).")
        got = self.measure_in_child(Path(path), spec)
        shape, _ = ma.load_shape(str(path))
        ran = update(spec, micro_batch=got["batch"], max_len=got["seq_len"])
        got["estimate_gb"] = memory.comparable(memory.estimate(shape, ran), got["metric"])
        got["error_pct"] = round(100 * (got["estimate_gb"] - got["measured_gb"]) / got["measured_gb"], 1)
        self.store.add_memory_check(model=name, device=ran.estimate.device,
                                    settings=flat_view(ran), estimate_gb=got["estimate_gb"],
                                    measured_gb=got["measured_gb"], extra=got)
        return got

    @staticmethod
    def choices() -> dict[str, Any]:
        """What the Memory step offers: catalogue GPUs (names, and each with its label: the card
        and its memory) and models, and the flat settings' help."""
        from ..spec import flat_fields

        gpus = ma.catalog("gpus")
        return {"gpus": list(gpus), "gpu_labels": {k: g.get("label") or k for k, g in gpus.items()},
                "models": list(ma.catalog("models")),
                "help": {k: f.metadata["help"] for k, f in flat_fields().items()},
                "choices": {k: list(f.metadata["choices"]) for k, f in flat_fields().items()
                            if f.metadata.get("choices")}}
