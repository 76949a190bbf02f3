"""Batched greedy decoding (studio/models/greedy.py), which every evaluation answers with: the
same tokens and log-probabilities as transformers' generate on the same batch, with less work."""
import pytest

from test_export_models import ARCHS, BASE


def test_batched_decoding_answers_as_generate_does_with_less_work(base_model, monkeypatch):
    """The evaluation's decoding loop (models/greedy.py) runs the chat template's shared opening
    once and lets rows that finished leave the batch: its answers, top-1s and log-probabilities
    are transformers' generate's on the same batch, and the batches it runs shrink."""
    from studio.models import greedy

    model, tok = base_model
    questions = ["Hi!", "What is the capital of France?", "Name three colours.",
                 "Explain why the sky is blue, in two sentences please.", "What is 2 + 2? Just the number."]
    ids = [tok(tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                       add_generation_prompt=True), add_special_tokens=False)["input_ids"]
           for q in questions]
    rows_run = []
    real = model.forward

    def counting(*a, **kw):
        rows_run.append(tuple((kw.get("input_ids") if "input_ids" in kw else a[0]).shape))
        return real(*a, **kw)
    monkeypatch.setattr(model, "forward", counting)
    got = greedy.greedy_scored(model, tok, ids, 24)
    monkeypatch.setattr(model, "forward", real)
    monkeypatch.setattr(greedy, "can_cut_rows", lambda m: False)
    want = greedy.greedy_scored(model, tok, ids, 24)
    assert [a.tokens for a in got] == [a.tokens for a in want]
    assert [a.top1 for a in got] == [a.top1 for a in want]
    assert max(abs(x - y) for a, b in zip(got, want) for x, y in zip(a.logprobs, b.logprobs)) < 1e-3
    lengths = sorted({len(a.tokens) for a in got})
    assert len(lengths) > 1 and lengths[0] < 24  # some answers end early…
    assert rows_run[0][0] == 1 and rows_run[0][1] >= greedy.MIN_SHARED  # …the opening once, batch 1…
    batches = [n for n, width in rows_run[1:] if width == 1]
    assert batches[0] == len(questions) and min(batches) < len(questions)  # …and rows left the batch


@pytest.mark.parametrize("model_type", list(ARCHS))
def test_batched_decoding_matches_generate_on_every_architecture(model_type, base_model, monkeypatch):
    """The same on two-layer models of each architecture the converter takes (random weights,
    the embedded model's tokenizer): rotary positions after the padding, sliding windows
    (gemma3's is shorter than the longer prompts here), tied and untied heads."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from studio.models import greedy

    _, tok = base_model
    extra, _ = ARCHS[model_type]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(
        model_type, **BASE, **extra, vocab_size=len(tok), bos_token_id=1, eos_token_id=2,
        pad_token_id=tok.pad_token_id)).eval()
    questions = ["Hi!", "What is the capital of France?",
                 "Tell me, in as many words as it takes, " * 4 + "why the sky is blue."]
    ids = [tok(tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                       add_generation_prompt=True), add_special_tokens=False)["input_ids"]
           for q in questions]
    assert max(map(len, ids)) > 64 + greedy.MIN_SHARED
    # random weights never write an end-of-turn token: one the model writes early is made a stop,
    # so rows leave the batch at different steps here too
    said = greedy.greedy_batch(model, tok, ids, 8)

    def ends(t):  # each row's answer length with `t` a stop token
        return [a.index(t) + 1 if t in a else len(a) for a in said]
    stop = max({t for a in said for t in a[1:]}, key=lambda t: (len(set(ends(t))), t))
    model.generation_config.eos_token_id = [2, stop]
    got = greedy.greedy_scored(model, tok, ids, 8)
    monkeypatch.setattr(greedy, "can_cut_rows", lambda m: False)
    want = greedy.greedy_scored(model, tok, ids, 8)
    assert [a.tokens for a in got] == [a.tokens for a in want]
    assert [len(a.tokens) for a in got] == ends(stop)
    if len({tuple(a[:3]) for a in said}) == len(said):  # answers that part early: rows leave apart
        assert len(set(ends(stop))) > 1
    assert max(abs(x - y) for a, b in zip(got, want) for x, y in zip(a.logprobs, b.logprobs)) < 1e-3


def test_no_tokens_asked_gives_empty_answers_on_either_path(base_model, monkeypatch):
    from studio.models import greedy

    model, tok = base_model
    ids = [tok("Hi", add_special_tokens=False)["input_ids"]] * 2
    assert [a.tokens for a in greedy.greedy_scored(model, tok, ids, 0)] == [[], []]
    monkeypatch.setattr(greedy, "can_cut_rows", lambda m: False)
    assert [a.tokens for a in greedy.greedy_scored(model, tok, ids, 0)] == [[], []]


def test_a_repetition_penalty_in_the_generation_config_applies_on_neither_path(base_model, monkeypatch):
    """A model that ships one (Qwen2.5's 1.05) answers the same greedy tokens either way."""
    from studio.models import greedy

    model, tok = base_model
    ids = [tok(tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                       add_generation_prompt=True), add_special_tokens=False)["input_ids"]
           for q in ("Repeat the word cat ten times.", "Count from one to twenty.")]
    monkeypatch.setattr(model.generation_config, "repetition_penalty", 1.3)
    got = greedy.greedy_batch(model, tok, ids, 24)
    monkeypatch.setattr(greedy, "can_cut_rows", lambda m: False)
    assert greedy.greedy_batch(model, tok, ids, 24) == got
