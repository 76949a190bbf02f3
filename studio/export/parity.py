"""Parity: does the exported GGUF answer like the tuned model? Measured, not assumed.

Owns the fixed prompt set, teacher-forcing the transformers greedy continuation through
llama.cpp (token ids fed directly, so only the weights and the runtime are compared), top-1
agreement and mean |Δ log-prob| of the chosen tokens, the tokenizer check (llama.cpp's own
tokenization of the rendered prompt must equal ours), and the end-of-turn check (llama.cpp's
greedy answer stops by itself and never runs into a new turn).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import families

PROMPTS = [  # chosen to draw answers of 32+ tokens, so each compares a real continuation
    "Give me three tips for sleeping better.",
    "Explain what a computer program is, in simple words.",
    "Write a short paragraph about the ocean.",
    "Describe the water cycle in a few sentences.",
    "Tell me about the Nimbus Orbit bird feeder.",
    "What should I pack for a weekend hiking trip?",
    "Explain why the sky is blue.",
    "How do I take care of a houseplant?",
]
ANSWER_TOKENS = 96  # llama.cpp's own answer, for the end-of-turn check
# Minimum top-1 agreement: f16/bf16 ≥98% and q8_0 ≥95% are the contract; the k-quant lines are
# our own guardrails (4-5 bit weights do change some greedy choices on a 135M model).
THRESHOLDS = {"f32": 0.98, "f16": 0.98, "bf16": 0.98, "q8_0": 0.95, "q6_k": 0.90,
              "q5_k_m": 0.85, "q4_k_m": 0.80}


def check(gguf_path: Path, model, tok, quant: str, lora_path: Path | None = None,
          n_tokens: int = 48, prompts: list[str] = PROMPTS) -> dict[str, Any]:
    import numpy as np
    import torch
    from llama_cpp import Llama

    from ..chat import greedy_batch, stop_ids
    from ..models import llama_threads

    llm = Llama(model_path=str(gguf_path), lora_path=str(lora_path) if lora_path else None,
                n_ctx=512, logits_all=True, verbose=False, seed=0, n_threads=llama_threads())
    agree = total = 0
    dlog: list[float] = []
    tok_match = stops = runon = 0
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                     add_generation_prompt=True) for p in prompts]
    prompt_ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    # The natural greedy answer (up to its end-of-turn token), all prompts in one batch: positions
    # forced past the end would compare near-uniform guesses, which measures noise, not the export.
    answers = greedy_batch(model, tok, prompt_ids, n_tokens)
    stop_set = set(stop_ids(tok, model))
    for text, ids, new in zip(texts, prompt_ids, answers):
        tok_match += llm.tokenize(text.encode(), add_bos=False, special=True) == ids
        seq = ids + new
        with torch.no_grad():
            hf_logits = model(torch.tensor([seq], device=model.device)).logits[0].float()
        hf_lp = torch.log_softmax(hf_logits, -1).cpu().numpy()
        llm.reset()
        llm.eval(seq)
        lc = np.asarray(llm.scores[: len(seq)], dtype=np.float64)
        lc_lp = lc - np.log(np.exp(lc - lc.max(-1, keepdims=True)).sum(-1, keepdims=True)) - lc.max(-1, keepdims=True)
        for pos in range(len(ids) - 1, len(seq) - 1):
            nxt = seq[pos + 1]
            agree += int(lc[pos].argmax() == hf_lp[pos].argmax())
            total += 1
            dlog.append(abs(float(lc_lp[pos, nxt]) - float(hf_lp[pos, nxt])))
        finish, said = own_answer(llm, lc, ids, new, stop_set)
        stops += finish == "stop"
        runon += any(m in said for m in families.run_on_markers(tok))
    del llm
    agreement = agree / max(1, total)
    threshold = THRESHOLDS.get(quant, 0.8)
    passed = agreement >= threshold and tok_match == len(prompts) and stops > 0 and runon == 0
    return {"agreement": round(agreement, 4), "mean_abs_dlogprob": round(float(np.mean(dlog)), 4),
            "passed": bool(passed), "threshold": threshold, "prompts": len(prompts),
            "tokens_compared": total, "tokenizer_match": tok_match / len(prompts),
            "stopped_at_end_of_turn": stops, "ran_past_end_of_turn": runon}


def own_answer(llm, scores, ids: list[int], new: list[int], stops: set[int]) -> tuple[str, str]:
    """llama.cpp's own greedy answer to `ids` (at most ANSWER_TOKENS): (finish reason, text).
    As far as its teacher-forced top-1 (`scores`) followed the transformers answer `new`, its own
    greedy path is that answer, already in its KV cache: it goes on from the first token where
    they part (or from before the answer's end-of-turn token, so that llama.cpp decides itself
    whether it stops) instead of answering again from the prompt."""
    k = 0
    while k < len(new) and int(scores[len(ids) - 1 + k].argmax()) == new[k]:
        k += 1
    fed = new[:min(k, len(new) - 1)] if new and new[-1] in stops else new[:k]
    out = llm.create_completion(ids + fed, max_tokens=max(1, ANSWER_TOKENS - len(fed)),
                                temperature=0.0, top_k=1)
    head = llm.detokenize(fed).decode("utf-8", errors="ignore") if fed else ""
    return out["choices"][0]["finish_reason"], head + out["choices"][0]["text"]
