"""Generation with the model's chat template: single answers, streaming, and generators.

Owns turning messages into a prompt (the tokenizer's own chat template), greedy or seeded
sampling with the model's end-of-turn tokens as stop tokens, left-truncation of prompts that
exceed the context (with a notice), and toggling a LoRA adapter on one copy of the base weights
so base and tuned answers come from the same memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator

from . import families


@dataclass(frozen=True)
class GenSettings:
    max_new_tokens: int = 128
    temperature: float = 0.0   # 0 = greedy: differences between base and tuned are real
    top_p: float = 0.95
    seed: int = 0


def stop_ids(tok, model=None) -> list[int]:
    """Every end-of-turn id: the chat family's (studio/families.py), the eos, the generation config's."""
    ids = {tok.eos_token_id}
    gc = getattr(model, "generation_config", None)
    extra = getattr(gc, "eos_token_id", None) if gc is not None else None
    ids.update(extra if isinstance(extra, list) else [extra])
    ids.update(tok.convert_tokens_to_ids(t) for t in families.stop_tokens(tok))
    return sorted(i for i in ids if isinstance(i, int) and i >= 0)


def text_of(content: Any) -> str:
    """A message's content as plain text. Chat UIs hand back a turn's content as a list of parts
    (Gradio's Chatbot: `[{"type": "text", "text": "…"}]`), which no family's chat template
    concatenates: the text parts are joined, anything else (files, images) is left out."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return text_of(content.get("text", content.get("content")))
    if isinstance(content, (list, tuple)):
        return "\n".join(t for t in (text_of(p) for p in content) if t)
    return str(content)


def plain_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Messages reduced to role and text content, the shape every chat template expects (a
    chat UI's extra keys such as `metadata` or `options` are dropped)."""
    return [{"role": m["role"], "content": text_of(m.get("content"))} for m in messages]


def encode_prompt(tok, messages: list[dict[str, Any]], context: int, reserve: int) -> tuple[list[int], bool]:
    """Prompt ids for `messages`; cut from the left when longer than context - reserve."""
    text = tok.apply_chat_template(plain_messages(messages), tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    limit = max(8, context - reserve)
    if len(ids) > limit:
        return ids[-limit:], True
    return ids, False


def context_of(model) -> int:
    return int(getattr(model.config, "max_position_embeddings", 2048) or 2048)


def generate(model, tok, messages: list[dict[str, str]], s: GenSettings = GenSettings(),
             streamer: Any = None, stopping: Any = None) -> dict[str, Any]:
    import torch

    ids, truncated = encode_prompt(tok, messages, context_of(model), s.max_new_tokens)
    inp = torch.tensor([ids], device=model.device)
    kwargs: dict[str, Any] = {"max_new_tokens": s.max_new_tokens, "eos_token_id": stop_ids(tok, model),
                              "pad_token_id": tok.pad_token_id or tok.eos_token_id,
                              "attention_mask": torch.ones_like(inp)}
    if s.temperature > 0:
        torch.manual_seed(s.seed)
        kwargs.update(do_sample=True, temperature=s.temperature, top_p=s.top_p)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    with torch.no_grad():
        out = model.generate(inp, streamer=streamer, stopping_criteria=stopping, **kwargs)
    new = out[0][len(ids):].tolist()
    return {"text": tok.decode(new, skip_special_tokens=True).strip(), "tokens": len(new),
            "prompt_truncated": truncated, "token_ids": new}


POLL_S = 0.25  # how often the reader looks whether the generating thread is still alive


def stream(hold: Callable[[], ContextManager[Any]], tok, messages: list[dict[str, Any]],
           s: GenSettings = GenSettings()) -> Iterator[str]:
    """Yield the answer text so far, growing, as tokens arrive. Generation runs in a thread,
    inside `hold()` (which yields the model: the caller's lock and adapter switch are held by
    the thread that generates, for as long as it generates, never by a paused reader). An error
    in the thread is raised here, at once — never a reader waiting forever on a dead thread —
    and a reader that stops early (the page went away) stops the generation at the next token."""
    import queue
    import threading

    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True, timeout=POLL_S)
    quit_, failed = threading.Event(), []

    class Quit(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return quit_.is_set()

    def work() -> None:
        try:
            with hold() as model:
                generate(model, tok, messages, s, streamer, StoppingCriteriaList([Quit()]))
        except BaseException as e:  # handed to the reader, which raises it
            failed.append(e)
            streamer.end()  # the reader's loop ends even when generate() never started

    t = threading.Thread(target=work, daemon=True, name="studio-generate")
    t.start()
    text = ""
    try:
        while True:
            try:
                piece = next(streamer)
            except StopIteration:
                break
            except queue.Empty:
                if t.is_alive():
                    continue
                break  # the thread is gone and left nothing more
            text += piece
            yield text
    finally:
        quit_.set()
    t.join()
    if failed:
        raise failed[0]


BATCH_TOKENS = 8192  # prompt + answer tokens per generation batch: 60 short questions in one
# batch answer 2× faster than in batches of 8 on 2 CPU cores (5.0 s vs 10.0 s), and on a GPU
# a batch this size keeps its KV cache small (≈1 GB for an 8B model)
MAX_BATCH = 64


def generate_batch(model, tok, conversations: list[list[dict[str, str]]], max_new_tokens: int = 48,
                   batch_tokens: int = BATCH_TOKENS) -> list[str]:
    """Greedy answers for many conversations, in the order given (see `greedy_batch`)."""
    context = context_of(model)
    prompts = [encode_prompt(tok, c, context, max_new_tokens)[0] for c in conversations]
    return [tok.decode(new, skip_special_tokens=True).strip()
            for new in greedy_batch(model, tok, prompts, max_new_tokens, batch_tokens)]


def generate_groups(model, tok, groups: list[list[list[dict[str, str]]]], max_new_tokens: int = 48
                    ) -> list[list[str]]:
    """`generate_batch` over several lists of conversations at once, answers split back per
    list: one set of batches for all (64 prompts in one batch answer ≈20% faster than two
    batches of 32 on 2 CPU cores — a step's fixed cost is shared)."""
    flat = generate_batch(model, tok, [c for g in groups for c in g], max_new_tokens)
    out, i = [], 0
    for g in groups:
        out.append(flat[i:i + len(g)])
        i += len(g)
    return out


def greedy_batch(model, tok, prompts: list[list[int]], max_new_tokens: int,
                 batch_tokens: int = BATCH_TOKENS) -> list[list[int]]:
    """The greedy continuation of each prompt (token ids, up to and including its end-of-turn
    token), in the order given: prompts of similar length are left-padded into batches of up to
    `batch_tokens` prompt + answer tokens (much faster than one by one, and sorting by length
    keeps the padding small)."""
    return [a.tokens for a in _greedy(model, tok, prompts, max_new_tokens, batch_tokens)]


@dataclass(frozen=True)
class ScoredAnswer:
    """A greedy answer with what the model said at each of its positions."""
    tokens: list[int]     # the answer, up to and including its end-of-turn token
    top1: list[int]       # the model's own most likely token at each position (raw logits)
    logprobs: list[float]  # the log-probability it gave the answer's token there


def greedy_scored(model, tok, prompts: list[list[int]], max_new_tokens: int,
                  on_step: Any = None, batch_tokens: int = BATCH_TOKENS) -> list[ScoredAnswer]:
    """`greedy_batch`, each answer with its per-position top-1 and log-probabilities — the
    logits `generate` computed anyway, so a caller that compares them (the export's parity
    check) needs no second forward pass over prompt + answer. `on_step(fraction)` is called
    after every generated token, with the share of the answers' token budget written so far."""
    return _greedy(model, tok, prompts, max_new_tokens, batch_tokens, scored=True, on_step=on_step)


def _greedy(model, tok, prompts: list[list[int]], max_new_tokens: int, batch_tokens: int,
            scored: bool = False, on_step: Any = None) -> list[ScoredAnswer]:
    import torch
    from transformers import StoppingCriteriaList

    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    stops = set(stop_ids(tok, model))
    out: dict[int, ScoredAnswer] = {}
    start = 0
    while start < len(order):
        end = start + 1  # the longest prompt of a batch is its last (sorted)
        while (end < len(order) and end - start < MAX_BATCH
               and (end + 1 - start) * (len(prompts[order[end]]) + max_new_tokens) <= batch_tokens):
            end += 1
        batch = [prompts[i] for i in order[start:end]]
        width = max(map(len, batch))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch], device=model.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=model.device)
        watch = StoppingCriteriaList([_Steps(on_step, width, max_new_tokens, start, len(batch),
                                             len(prompts))] if on_step else [])
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                 max_new_tokens=max_new_tokens, eos_token_id=sorted(stops),
                                 pad_token_id=pad, temperature=None, top_p=None, top_k=None,
                                 stopping_criteria=watch, output_logits=scored,
                                 return_dict_in_generate=True)
        if scored:  # steps × batch × vocab → per row: top-1 and the chosen token's log-prob
            logits = torch.stack(gen.logits, 1).float()
            chosen = gen.sequences[:, width:width + logits.shape[1]]
            lp = torch.log_softmax(logits, -1).gather(-1, chosen.unsqueeze(-1)).squeeze(-1)
            top1 = logits.argmax(-1)
            del logits
        for r, (i, row) in enumerate(zip(order[start:end], gen.sequences[:, width:].tolist())):
            cut = next((k + 1 for k, t in enumerate(row) if t in stops), len(row))
            out[i] = ScoredAnswer(row[:cut], top1[r, :cut].tolist() if scored else [],
                                  lp[r, :cut].tolist() if scored else [])
        start = end
    return [out[i] for i in range(len(prompts))]


class _Steps:
    """A stopping criterion that never stops: it tells `on_step` how far the answers are."""

    def __init__(self, on_step, width: int, budget: int, done: int, rows: int, total: int):
        self.on_step, self.width, self.budget = on_step, width, max(1, budget)
        self.done, self.rows, self.total = done, rows, total  # prompts: before this batch, in it, all

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        step = input_ids.shape[1] - self.width
        self.on_step((self.done + self.rows * min(1.0, step / self.budget)) / self.total)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


class evaluating:
    """`with evaluating(model):` eval mode (no dropout), put back as it was."""

    def __init__(self, model):
        self.model, self.was = model, model.training

    def __enter__(self):
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was)
