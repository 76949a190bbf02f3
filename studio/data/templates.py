"""Rendering examples with the model's own chat template, and the loss mask.

Owns the single function that turns a canonical example into token ids and labels — used by the
data preview, the token statistics and the trainer alike, so what the user sees is what trains.
Labels are the token ids on assistant turns (their end-of-turn token included) and -100
everywhere else; plain-text examples are learned in full. Also what a model makes of those
labels: the mean loss of examples' learned tokens and each answer's summed log-probability (the
report and the forgetting budget score through them).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import DataError

IGNORE = -100


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    full_length: int  # tokens before truncation

    @property
    def truncated(self) -> bool:
        return self.full_length > len(self.input_ids)

    @property
    def trainable(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


def has_chat_template(tok) -> bool:
    return bool(getattr(tok, "chat_template", None))


def render_text(tok, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    if not has_chat_template(tok):
        raise DataError("This model has no chat template, so chat data cannot be rendered for it. "
                        "Pick an instruct/chat model, or prepare the data as plain text "
                        "(recipe paragraphs or token-windows).")
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_spans(tok, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of each assistant answer: from where
    the generation prompt ends to the end of its turn marker. Templates that render a turn
    differently once later turns follow (Qwen3 keeps an empty <think></think> block on the last
    answer only) are handled by finding the answer in the full text after the previous span."""
    full = render_text(tok, messages)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = render_text(tok, messages[:i], add_generation_prompt=True)
        alone = render_text(tok, messages[: i + 1])
        if full.startswith(alone) and alone.startswith(prompt) and len(prompt) >= cursor:
            spans.append((len(prompt), len(alone)))
        else:
            spans.append(_find_turn(full, alone, m["content"], cursor))
        cursor = spans[-1][1]
    return full, spans


def _find_turn(full: str, alone: str, content: str, cursor: int) -> tuple[int, int]:
    """The span of `content` in `full` at or after `cursor`, extended over the turn's closing
    marker (the text that follows the answer when this turn is rendered last)."""
    start = full.find(content, cursor) if content else -1
    if start < 0:
        raise DataError("The chat template renders an assistant answer differently from its text, so "
                        "the learned part cannot be found. Use the model's own chat template.")
    end = start + len(content)
    after = alone[alone.rfind(content) + len(content):] if content in alone else ""
    k = 0
    while k < len(after) and end + k < len(full) and full[end + k] == after[k]:
        k += 1
    return start, end + k


def encode(tok, example: dict[str, Any], max_len: int) -> Encoded:
    """Token ids + labels for one example, truncated on the right to max_len. A preference pair
    is encoded as its longer side (prompt + the longer answer): what its length costs in training
    and the statistics count."""
    eos = tok.eos_token_id
    if "chosen" in example and "prompt" in example:
        from .preference import sides

        both = [encode(tok, side, max_len) for side in sides(example)]
        return max(both, key=lambda e: e.full_length)
    if "text" in example:
        ids = tok(example["text"], add_special_tokens=False)["input_ids"] + [eos]
        labels = list(ids)
    else:
        text, spans = assistant_spans(tok, example["messages"])
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = enc["input_ids"]
        labels = [IGNORE] * len(ids)
        for start, end in spans:
            last = None
            for j, (a, b) in enumerate(enc["offset_mapping"]):
                if a >= start and b <= end and b > a:
                    labels[j] = ids[j]
                    if ids[j] == eos:
                        last = j
            if last is not None:  # nothing after the end-of-turn token (e.g. "\n") is learned
                for j in range(last + 1, len(ids)):
                    if enc["offset_mapping"][j][0] < end:
                        labels[j] = IGNORE
    n = len(ids)
    return Encoded(ids[:max_len], labels[:max_len], n)


def overhead(tok) -> int:
    """Tokens an example adds around its text: the chat template's turns (its default system
    prompt included) for a one-question example, or the end-of-text token for plain text."""
    plain = encode(tok, {"text": "alpha"}, 1 << 20).full_length
    if not has_chat_template(tok):
        return plain - 1
    turns = [{"role": "user", "content": ""}, {"role": "assistant", "content": "alpha"}]
    return max(plain, encode(tok, {"messages": turns}, 1 << 20).full_length) - 1


def encode_many(tok, examples: list[dict[str, Any]], max_len: int) -> list[Encoded]:
    """encode() for a batch: plain-text examples go through the tokenizer in one call."""
    texts = [i for i, ex in enumerate(examples) if "text" in ex]
    out: list[Encoded | None] = [None] * len(examples)
    if texts:
        ids = tok([examples[i]["text"] for i in texts], add_special_tokens=False)["input_ids"]
        for i, row in zip(texts, ids):
            row = row + [tok.eos_token_id]
            out[i] = Encoded(row[:max_len], row[:max_len], len(row))
    for i, ex in enumerate(examples):
        if out[i] is None:
            out[i] = encode(tok, ex, max_len)
    return out  # type: ignore[return-value]


def preview_segments(tok, enc: Encoded) -> list[tuple[str, bool]]:
    """Consecutive (text, learned?) pieces, for showing the loss mask to the user."""
    out: list[tuple[str, bool]] = []
    cur: list[int] = []
    state = None
    for tid, lab in zip(enc.input_ids, enc.labels):
        learned = lab != IGNORE
        if state is not None and learned != state:
            out.append((tok.decode(cur), state))
            cur = []
        cur.append(tid)
        state = learned
    if cur:
        out.append((tok.decode(cur), bool(state)))
    return out


def mean_loss(model, tok, examples: list[dict[str, Any]], max_len: int) -> float | None:
    """Mean token loss on the learned tokens of `examples` (the data step's loss mask)."""
    import torch

    total, count = 0.0, 0
    for ex in examples:
        enc = encode(tok, ex, max_len)
        if enc.trainable < 2:
            continue
        ids = torch.tensor([enc.input_ids], device=model.device)
        labels = torch.tensor([enc.labels], device=model.device)
        with torch.no_grad():
            out = model(input_ids=ids, labels=labels)
        n = int((labels[:, 1:] != -100).sum())
        total += float(out.loss) * n
        count += n
    return total / count if count else None


def answer_logps(model, tok, examples: list[dict[str, Any]], max_len: int) -> list[float]:
    """The summed log-probability of each example's learned tokens (its answer)."""
    import torch

    out = []
    for ex in examples:
        enc = encode(tok, ex, max_len)
        ids = torch.tensor([enc.input_ids], device=model.device)
        labels = torch.tensor(enc.labels[1:], device=model.device)
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        keep = labels != -100
        out.append(float(lp[keep].gather(1, labels[keep].unsqueeze(1)).sum()))
    return out
