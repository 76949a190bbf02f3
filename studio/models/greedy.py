"""Batched greedy answers: many prompts at once, each answered by the model's own most likely
tokens — what every evaluation, report, retention check and export parity check asks.

Owns how the prompts are batched (sorted by length, left-padded, up to BATCH_TOKENS prompt +
answer tokens a batch) and the decoding loop itself. Two things make it cheaper than
`model.generate` on the same batch, with the same tokens (tests/test_greedy.py):
- the opening every prompt of a batch shares (a chat template's system prompt and turn header,
  about half of a short question's tokens on the embedded model) is run once and its keys and
  values repeated for the batch; the rows' own tokens follow it after their padding (not where
  a sliding attention window, which counts cache slots, could then lose the opening);
- a row that has written its end-of-turn token leaves the batch, so a batch costs what its
  answers' own lengths cost, not its longest answer times its rows.
A model whose cache cannot be repeated or cut per row (recurrent or linear-attention layers) is
answered by `model.generate` instead. No sampling settings apply on either path: the token is
the argmax of the raw logits, as in llama.cpp's greedy sampler (what the export's parity check
compares with) — a model's generation_config repetition penalty is not applied here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BATCH_TOKENS = 8192  # prompt + answer tokens per generation batch: 60 short questions in one
# batch answer 2× faster than in batches of 8 on 2 CPU cores (5.0 s vs 10.0 s), and on a GPU
# a batch this size keeps its KV cache small (≈1 GB for an 8B model)
MAX_BATCH = 64
MIN_SHARED = 4  # a shorter shared opening is not worth a pass of its own
CACHE_LAYERS = {"DynamicLayer", "DynamicSlidingWindowLayer"}  # can be repeated and cut per row


@dataclass(frozen=True)
class ScoredAnswer:
    """A greedy answer with what the model said at each of its positions."""
    tokens: list[int]     # the answer, up to and including its end-of-turn token
    top1: list[int]       # the model's own most likely token at each position (raw logits)
    logprobs: list[float]  # the log-probability it gave the answer's token there


def greedy_batch(model, tok, prompts: list[list[int]], max_new_tokens: int,
                 batch_tokens: int = BATCH_TOKENS) -> list[list[int]]:
    """The greedy continuation of each prompt (token ids, up to and including its end-of-turn
    token), in the order given."""
    return [a.tokens for a in answer(model, tok, prompts, max_new_tokens, batch_tokens)]


def greedy_scored(model, tok, prompts: list[list[int]], max_new_tokens: int,
                  on_step: Any = None, batch_tokens: int = BATCH_TOKENS) -> list[ScoredAnswer]:
    """`greedy_batch`, each answer with its per-position top-1 and log-probabilities — the
    logits the decoding computed anyway, so a caller that compares them (the export's parity
    check) needs no second forward pass over prompt + answer. `on_step(fraction)` is called
    after every generated token, with the share of the answers' token budget written so far."""
    return answer(model, tok, prompts, max_new_tokens, batch_tokens, scored=True, on_step=on_step)


def answer(model, tok, prompts: list[list[int]], max_new_tokens: int, batch_tokens: int = BATCH_TOKENS,
           scored: bool = False, on_step: Any = None) -> list[ScoredAnswer]:
    """Every prompt's greedy answer, in batches of similar length (little padding)."""
    import torch

    from .families import stop_ids

    if max_new_tokens <= 0:
        return [ScoredAnswer([], [], []) for _ in prompts]
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
        tick = Progress(on_step, max_new_tokens, start, len(batch), len(prompts))
        with torch.no_grad():
            got = decode(model, batch, max_new_tokens, stops, pad, tick) if can_cut_rows(model) else None
            if got is None:  # a model whose cache cannot be repeated or cut: transformers' generate
                got = generate(model, batch, max_new_tokens, stops, pad, tick, scored)
        tick.done()
        for i, a in zip(order[start:end], got):
            out[i] = a if scored else ScoredAnswer(a.tokens, [], [])
        start = end
    return [out[i] for i in range(len(prompts))]


def can_cut_rows(model) -> bool:
    """Whether the model's forward takes a cache (transformers' name for past keys and values)
    and position ids: what the loop below needs."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(type(base).forward).parameters
    return "cache" in params and "position_ids" in params


def shared_opening(batch: list[list[int]]) -> int:
    from .batching import shared_prefix

    n = shared_prefix(batch) if len(batch) > 1 else 0
    return n if n >= MIN_SHARED else 0


def decode(model, batch: list[list[int]], max_new: int, stops: set[int], pad: int, tick: "Progress"
           ) -> list[ScoredAnswer] | None:
    """The batch's greedy answers: the prompts (`prefill`), then one token a step for the rows
    still writing. None, before any token, when the model's cache is of a kind this cannot cut."""
    import torch

    first = prefill(model, batch, max_new, pad)
    if first is None:
        return None
    out, mask, last = first
    cache, dev, n = out.cache, model.device, len(batch)
    rows = list(range(n))  # batch row of each row still writing
    tokens, logprobs = [[] for _ in range(n)], [[] for _ in range(n)]
    for step in range(max_new):
        logits = out.logits[:, -1].float()
        best = logits.argmax(-1)
        lp = torch.log_softmax(logits, -1).gather(-1, best.unsqueeze(-1)).squeeze(-1)
        keep = []
        for k, (r, t, v) in enumerate(zip(rows, best.tolist(), lp.tolist())):
            tokens[r].append(t)
            logprobs[r].append(v)
            if t not in stops:
                keep.append(k)
        tick(step + 1)
        if not keep or step + 1 == max_new:
            break
        if len(keep) < len(rows):
            index = torch.tensor(keep, device=dev)
            cache.batch_select_indices(index)
            best, mask, last = best[index], mask[index], last[index]
            rows = [rows[k] for k in keep]
        mask = torch.cat([mask, mask.new_ones(len(rows), 1)], -1)
        last = last + 1
        out = model(input_ids=best.unsqueeze(-1), attention_mask=mask, position_ids=last, cache=cache,
                    use_cache=True)
    return [ScoredAnswer(t, list(t), v) for t, v in zip(tokens, logprobs)]  # the argmax is the token


def prefill(model, batch: list[list[int]], max_new: int, pad: int):
    """The batch's prompts through the model: the shared opening once (batch 1, its keys and
    values repeated), then each row's own tokens after its padding ([opening][padding][row]:
    positions count only real tokens). (output, attention mask, last positions), or None where
    the cache cannot be repeated or cut per row."""
    import torch

    dev, n, shared = model.device, len(batch), shared_opening(batch)
    cache = None
    try:
        if shared:
            cache = model(input_ids=torch.tensor([batch[0][:shared]], device=dev), use_cache=True,
                          logits_to_keep=1).cache
            if not cuttable(cache):
                return None
            if max(map(len, batch)) + max_new > window(cache):
                shared, cache = 0, None  # a window counts cache slots: padding would push the opening out
            else:
                cache.batch_repeat_interleave(n)
        width = max(len(p) for p in batch) - shared
        ids = torch.full((n, width), pad, dtype=torch.long)
        mask = torch.zeros(n, shared + width, dtype=torch.long)
        mask[:, :shared] = 1
        for r, p in enumerate(batch):
            own = p[shared:]
            ids[r, width - len(own):] = torch.tensor(own)
            mask[r, shared + width - len(own):] = 1
        mask = mask.to(dev)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=ids.to(dev), attention_mask=mask, position_ids=pos[:, shared:], cache=cache,
                    use_cache=True, logits_to_keep=1)
    except (TypeError, AttributeError, NotImplementedError):  # a cache this cannot handle
        return None
    return (out, mask, pos[:, -1:]) if cuttable(out.cache) else None


def window(cache) -> float:
    """The shortest sliding attention window among the cache's layers (inf when none slides)."""
    sizes = [getattr(layer, "sliding_window", None) for layer in cache.layers if getattr(layer, "is_sliding", False)]
    return min([w for w in sizes if isinstance(w, int) and w > 0] or [float("inf")])


def cuttable(cache) -> bool:
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer).__name__ in CACHE_LAYERS for layer in layers)


def generate(model, batch: list[list[int]], max_new: int, stops: set[int], pad: int, tick: "Progress",
             scored: bool) -> list[ScoredAnswer]:
    """The same answers through `model.generate` (left-padded): for caches `decode` cannot cut
    (the logits are kept only when `scored`: steps × rows × vocabulary is large on a GPU)."""
    import torch
    from transformers import StoppingCriteriaList

    width = max(map(len, batch))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch], device=model.device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=model.device)
    # the raw argmax, as `decode` takes it: none of the model's generation_config processors
    # (a repetition penalty, banned n-grams) — answers do not depend on which path ran
    gen = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new,
                         eos_token_id=sorted(stops), pad_token_id=pad, temperature=None, top_p=None,
                         top_k=None, repetition_penalty=1.0, no_repeat_ngram_size=0,
                         stopping_criteria=StoppingCriteriaList([_Watch(tick, width)]),
                         output_logits=scored, return_dict_in_generate=True)
    if scored:  # steps × batch × vocab → per row: top-1 and the chosen token's log-prob
        logits = torch.stack(gen.logits, 1).float()
        chosen = gen.sequences[:, width:width + logits.shape[1]]
        lp = torch.log_softmax(logits, -1).gather(-1, chosen.unsqueeze(-1)).squeeze(-1)
        top1 = logits.argmax(-1)
        del logits
    out = []
    for r, row in enumerate(gen.sequences[:, width:].tolist()):
        cut = next((k + 1 for k, t in enumerate(row) if t in stops), len(row))
        out.append(ScoredAnswer(row[:cut], top1[r, :cut].tolist() if scored else [],
                                lp[r, :cut].tolist() if scored else []))
    return out


class _Watch:
    """A stopping criterion for `generate` that never stops: it tells `tick` how far it is."""

    def __init__(self, tick: "Progress", width: int):
        self.tick, self.width = tick, width

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        self.tick(input_ids.shape[1] - self.width)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


class Progress:
    """Tells `on_step` (when there is one) the share of all prompts' token budget written, after
    each generated token of a batch and when the batch is done."""

    def __init__(self, on_step, budget: int, done: int, rows: int, total: int):
        self.on_step, self.budget = on_step, max(1, budget)
        self.before, self.rows, self.total = done, rows, total  # prompts: before this batch, in it, all

    def __call__(self, step: int) -> None:
        if self.on_step:
            self.on_step((self.before + self.rows * min(1.0, step / self.budget)) / self.total)

    def done(self) -> None:
        if self.on_step:
            self.on_step((self.before + self.rows) / self.total)
