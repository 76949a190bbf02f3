"""Parity: does the exported GGUF answer like the tuned model? Measured, not assumed.

Owns the fixed prompt set, teacher-forcing the transformers greedy continuation through
llama.cpp (token ids fed directly, so only the weights and the runtime are compared), top-1
agreement and mean |Δ log-prob| of the chosen tokens, the tokenizer check (llama.cpp's own
tokenization of the rendered prompt must equal ours), the end-of-turn check (llama.cpp's
greedy answer stops by itself and never runs into a new turn), and telling a progress callback
what it is doing ("parity: answer 3 of 8 compared"). How the result reads is the UI's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..models import families

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


GENERATING = 0.25  # share of the check's progress bar for the tuned model's answers (6 of ≈25 CPU
# seconds on the embedded model, one thread); the rest moves one step per answer compared


def check(gguf_path: Path, model, tok, quant: str, lora_path: Path | None = None,
          n_tokens: int = 48, prompts: list[str] = PROMPTS,
          progress: Callable[[float, str], None] | None = None) -> dict[str, Any]:
    """Compare the GGUF in llama.cpp with `model` on `prompts`. `progress(fraction, message)`
    hears what the check is doing: the reference answers being written, then "parity: answer k
    of n compared" after each answer."""
    import time

    import numpy as np
    from llama_cpp import Llama

    from ..models.families import stop_ids
    from ..models.registry import llama_threads

    t0 = time.time()
    say = progress or (lambda frac, msg: None)
    n = len(prompts)
    say(0.0, "parity: loading the GGUF in llama.cpp…")
    llm = Llama(model_path=str(gguf_path), lora_path=str(lora_path) if lora_path else None,
                n_ctx=512, logits_all=True, verbose=False, seed=0, n_threads=llama_threads())
    agree = total = 0
    dlog: list[float] = []
    tok_match = stops = runon = 0
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                     add_generation_prompt=True) for p in prompts]
    prompt_ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    answers = reference_answers(model, tok, prompt_ids, n_tokens, say)
    stop_set = set(stop_ids(tok, model))
    say(GENERATING, f"parity: answer 0 of {n} compared")
    for k, (text, ids, ans) in enumerate(zip(texts, prompt_ids, answers), 1):
        tok_match += llm.tokenize(text.encode(), add_bos=False, special=True) == ids
        agreed, gaps = teacher_forced(llm, ids, ans)
        agree, total, dlog = agree + agreed, total + len(gaps), dlog + gaps
        finish, said = own_answer(llm, llm.scores, ids, ans.tokens, stop_set)
        stops += finish == "stop"
        runon += any(m in said for m in families.run_on_markers(tok))
        say((GENERATING * (n - k) + k) / n, f"parity: answer {k} of {n} compared")  # k = n: 1.0
    del llm
    agreement = agree / max(1, total)
    threshold = THRESHOLDS.get(quant, 0.8)
    passed = agreement >= threshold and tok_match == n and stops > 0 and runon == 0
    return {"agreement": round(agreement, 4), "mean_abs_dlogprob": round(float(np.mean(dlog)), 4),
            "passed": bool(passed), "threshold": threshold, "prompts": n,
            "tokens_compared": total, "tokenizer_match": tok_match / n,
            "stopped_at_end_of_turn": stops, "ran_past_end_of_turn": runon,
            "compare_limit": n_tokens, "answer_limit": ANSWER_TOKENS,
            "seconds": round(time.time() - t0, 1)}


def reference_answers(model, tok, prompt_ids: list[list[int]], n_tokens: int,
                      say: Callable[[float, str], None]) -> list:
    """The tuned model's natural greedy answers (up to its end-of-turn token), all prompts in one
    batch: positions forced past the end would compare near-uniform guesses, which measures
    noise, not the export. Their scores come with them: no second forward pass over prompt +
    answer per prompt. `say` hears eight updates over the answers, not one per token."""
    from ..models.greedy import greedy_scored

    writing = f"parity: the tuned model is writing its {len(prompt_ids)} reference answers"
    say(0.0, writing + "…")
    shown = [0]

    def on_step(frac: float) -> None:
        if int(frac * 8) > shown[0]:
            shown[0] = int(frac * 8)
            say(GENERATING * frac, f"{writing} ({frac:.0%})…")
    return greedy_scored(model, tok, prompt_ids, n_tokens, on_step=on_step)


def teacher_forced(llm, ids: list[int], ans) -> tuple[int, list[float]]:
    """The reference answer `ans` fed to llama.cpp after its prompt `ids`: at each of its
    positions, whether llama.cpp's top-1 token is the model's (counted) and |Δ log-prob| of the
    answer's token (one per position)."""
    import numpy as np

    new = ans.tokens
    feed(llm, ids + new, len(ids) - 1)
    # llama.cpp's scores where the answer's tokens are predicted: positions len(ids)-1 …
    lc = np.asarray(llm.scores[len(ids) - 1: len(ids) - 1 + len(new)], dtype=np.float64)
    top = lc.max(-1, keepdims=True)
    lc_lp = lc - top - np.log(np.exp(lc - top).sum(-1, keepdims=True))
    agree, gaps = 0, []
    for j, nxt in enumerate(new):
        agree += int(lc[j].argmax() == ans.top1[j])
        gaps.append(abs(float(lc_lp[j, nxt]) - ans.logprobs[j]))
    return agree, gaps


def feed(llm, seq: list[int], keep_max: int) -> None:
    """`llm.eval(seq)` from a clean start, except that the prefix it shares with what llama.cpp
    holds already (up to `keep_max` tokens, so every compared position is computed afresh) is
    kept: the chat template's system prompt is the same for every test question (≈30 of ≈85
    tokens on the embedded model), and evaluating it 8 times was a third of llama.cpp's work. A
    recurrent or hybrid model's state cannot be cut back to a prefix: it starts over."""
    import llama_cpp

    keep = 0
    if not (llama_cpp.llama_model_is_recurrent(llm.model) or llama_cpp.llama_model_is_hybrid(llm.model)):
        held = llm.input_ids[:llm.n_tokens]
        while keep < min(keep_max, len(held)) and int(held[keep]) == seq[keep]:
            keep += 1
    if keep:
        llm.n_tokens = keep  # eval drops the cache past it and goes on from there
    else:
        llm.reset()
    llm.eval(seq[keep:])


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
