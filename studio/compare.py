"""Base vs tuned on one copy of the weights: the engine behind the Compare step and the report.

Owns loading a run's adapter onto the (cached) base model with PEFT and toggling it — base
answers come from `disable_adapter()`, so there is one copy of the base weights, never two —
plus the checks that a run can be compared (it has an adapter, its folder exists, the adapter
belongs to this base model). The llama.cpp engine (base GGUF + LoRA GGUF) lives here too.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator

from .errors import FeatureUnavailable, RunError


def adapter_dir(run: dict[str, Any]) -> Path:
    if not run.get("path") or not Path(run["path"]).is_dir():
        raise RunError(f"Run {run['id']}: its folder {run.get('path')} was deleted, so there is no "
                       "adapter to compare. Pick another run.")
    from .train.checkpoints import MARK

    a = Path(run["path"]) / "adapter"
    if not (a / MARK).exists():
        state = run["status"]
        why = {"running": "it is still training", "queued": "it has not started",
               "failed": "it failed before saving one"}.get(state, "none was saved")
        raise RunError(f"Run {run['id']} has no adapter yet ({why}). Wait for it to finish, or "
                       "resume it: python -m studio train --resume " + run["id"])
    return a


def check_base(run: dict[str, Any], model_ref: str) -> None:
    if model_ref != run["model"]:
        raise RunError(f"Run {run['id']}'s adapter was trained on '{run['model']}', not on "
                       f"'{model_ref}'. An adapter only fits the base model it was trained on; "
                       f"compare with --model {run['model']} (the default).")


class Pair:
    """A PEFT-wrapped base model with any number of run adapters loaded by name."""

    def __init__(self, base_model, tok):
        self.base, self.tok, self.model, self.loaded = base_model, tok, None, set()

    def use(self, run_id: str, adapter: Path) -> None:
        from peft import PeftModel

        if self.model is None:
            self.model = PeftModel.from_pretrained(self.base, str(adapter), adapter_name=run_id)
            self.model.eval()
        elif run_id not in self.loaded:
            self.model.load_adapter(str(adapter), adapter_name=run_id)
        self.loaded.add(run_id)
        self.model.set_adapter(run_id)

    @contextmanager
    def side(self, which: str) -> Iterator[Any]:
        """`with pair.side("base") as m:` — the adapter is off for base, on for tuned."""
        ctx = self.model.disable_adapter() if which == "base" else nullcontext()
        with ctx:
            yield self.model


def llama_engine(base_gguf: Path, lora_gguf: Path | None, n_ctx: int = 2048):
    """A llama.cpp model (optionally with a LoRA GGUF); raises when llama-cpp-python is missing."""
    from .models import llama_cpp_available

    ok, why = llama_cpp_available()
    if not ok:
        raise FeatureUnavailable(why)
    from llama_cpp import Llama

    kwargs: dict[str, Any] = {"model_path": str(base_gguf), "n_ctx": n_ctx, "verbose": False,
                              "seed": 0}
    if lora_gguf is not None:
        kwargs["lora_path"] = str(lora_gguf)
    return Llama(**kwargs)


def llama_chat(llm, messages: list[dict[str, str]], max_new_tokens: int, temperature: float,
               seed: int) -> str:
    out = llm.create_chat_completion(messages=messages, max_tokens=max_new_tokens,
                                     temperature=temperature, seed=seed,
                                     top_k=1 if temperature == 0 else 40)
    return (out["choices"][0]["message"]["content"] or "").strip()
