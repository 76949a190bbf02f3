"""An exported GGUF as an lm-evaluation-harness model: log-likelihoods and answers from llama.cpp.

Owns `LlamaCppLM`: the harness's three requests computed by llama-cpp-python directly on the
file a user takes to llama.cpp or Ollama — loglikelihood (the continuation's tokens scored after
the context, and whether each was the greedy choice), loglikelihood_rolling (a text's whole
log-likelihood, window by window) and generate_until (greedy, to the task's stop strings) — so a
benchmark shows what quantization costs, not only the parity check. Cancel is heard between
requests.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from lm_eval.api.model import LM

from ..errors import Cancelled


class LlamaCppLM(LM):
    def __init__(self, gguf: Path, lora: Path | None = None, cancel: Callable[[], bool] | None = None,
                 n_ctx: int = 2048):
        super().__init__()
        from llama_cpp import Llama

        from ..models.registry import llama_threads

        self.llm = Llama(model_path=str(gguf), lora_path=str(lora) if lora else None, n_ctx=n_ctx,
                         logits_all=True, verbose=False, seed=0, n_threads=llama_threads())
        self.cancel, self.n_ctx = cancel, n_ctx

    def _check(self) -> None:
        if self.cancel is not None and self.cancel():
            raise Cancelled("Cancelled; nothing was saved.")

    def _ids(self, text: str, bos: bool = True) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=bos, special=False)

    def _score(self, ids: list[int], start: int) -> tuple[float, bool]:
        """Sum of log p(ids[i] | ids[:i]) for i ≥ start, and whether each was the argmax."""
        import numpy as np

        self.llm.reset()
        self.llm.eval(ids)
        z = np.asarray(self.llm.scores[: len(ids)], dtype=np.float64)
        total, greedy = 0.0, True
        for i in range(max(1, start), len(ids)):
            row = z[i - 1]
            top = row.max()
            total += float(row[ids[i]] - top - np.log(np.exp(row - top).sum()))
            greedy = greedy and int(row.argmax()) == ids[i]
        return total, greedy

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        out = []
        for context, continuation in [r.args for r in requests]:
            self._check()
            ctx = self._ids(context)
            whole = self._ids(context + continuation)
            keep = self.n_ctx
            cut = max(0, len(whole) - keep)
            out.append(self._score(whole[cut:], max(1, len(ctx) - cut)))
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        out = []
        for (text,) in [r.args for r in requests]:
            self._check()
            ids, total = self._ids(text), 0.0
            step = self.n_ctx - 1
            for s in range(0, max(1, len(ids) - 1), step):
                window = ids[max(0, s - 1): s + step]
                total += self._score(window, 1)[0]
            out.append(total)
        return out

    def generate_until(self, requests, disable_tqdm: bool = False):
        out = []
        for context, kw in [r.args for r in requests]:
            self._check()
            until = kw.get("until") or []
            got = self.llm.create_completion(context, max_tokens=int(kw.get("max_gen_toks", 256)),
                                             temperature=0.0, top_k=1, stop=list(until))
            out.append(got["choices"][0]["text"])
        return out
