"""train.fact_weight: the key facts' tokens marked in an encoded example, laid out with the batch
(padding-free and padded), and weighted in the loss — chunked and full logits alike."""
import pytest


def test_fact_tokens_are_marked(embedded_model_dir):
    from studio.data.templates import IGNORE, encode
    from studio.models.registry import load_tokenizer
    from studio.train.facts import weights

    tok = load_tokenizer(embedded_model_dir)
    ex = {"messages": [{"role": "user", "content": "How many species can the Nimbus Orbit tell apart?"},
                       {"role": "assistant", "content": "It recognises 612 bird species, says Fernwick Labs."}]}
    enc = encode(tok, ex, 512)
    w = weights(tok, ex, len(enc.input_ids), 3.0)
    assert w is not None and len(w) == len(enc.input_ids)
    marked = tok.decode([i for i, x in zip(enc.input_ids, w) if x == 3.0])
    assert marked.replace(" ", "") == "612FernwickLabs"
    assert all(enc.labels[j] != IGNORE for j, x in enumerate(w) if x == 3.0)  # only answer tokens
    assert set(w) == {1.0, 3.0}
    # what the question already says is no key fact; an answer with none has no weights
    none = {"messages": [{"role": "user", "content": "Is the Nimbus Orbit waterproof?"},
                         {"role": "assistant", "content": "Yes, the Nimbus Orbit is waterproof."}]}
    assert weights(tok, none, 100, 3.0) is None
    assert weights(tok, ex, len(enc.input_ids), 1.0) is None
    assert weights(tok, {"text": "It recognises 612 bird species."}, 20, 3.0) is None
    cut = encode(tok, ex, 20)  # truncated: the weights are as long as the tokens kept
    assert len(weights(tok, ex, len(cut.input_ids), 3.0)) == 20
    # each turn's facts against its own question; the fact stated twice is marked twice
    two = {"messages": [{"role": "user", "content": "What does it cost?"},
                        {"role": "assistant", "content": "It costs 189 euros."},
                        {"role": "user", "content": "And 189 euros buys what?"},
                        {"role": "assistant", "content": "189 euros buy the feeder and 2 perches."}]}
    enc2 = encode(tok, two, 512)
    w2 = weights(tok, two, len(enc2.input_ids), 2.0)
    assert tok.decode([i for i, x in zip(enc2.input_ids, w2) if x == 2.0]).replace(" ", "") == "1892"


def test_fact_spans_are_whole_numbers_and_names():
    from studio.train.facts import spans

    a = "Updates install on the 12th at 10am, about 500MB, for 1.12 euros; 120 is no 12."
    assert [a[x:y] for x, y in spans(a, "When do updates install?")] == ["12", "12", "10", "500", "1.12", "120"]
    b = "It is made by Fernwick  Labs in Tallinn."   # a name over two spaces
    assert [b[x:y] for x, y in spans(b, "Who makes it?")] == ["Fernwick  Labs", "Tallinn"]


def test_run_collator_carries_the_weights_beside_the_anchor(embedded_model_dir):
    """The run's own collator (packed, with the KL anchor's replay rows appended after the user's
    rows) hands the loss weights shaped like its labels: >1 only on the user rows' fact tokens."""
    import torch

    from studio.models.registry import load_tokenizer
    from studio.train.batches import encode_examples, make_collator
    from studio.train.facts import FACT_W

    tok = load_tokenizer(embedded_model_dir)
    ex = [{"messages": [{"role": "user", "content": "How much is the SunCap?"},
                        {"role": "assistant", "content": "The SunCap costs 29 euros."}]},
          {"messages": [{"role": "user", "content": "Is it waterproof?"},
                        {"role": "assistant", "content": "Yes, rain is fine."}]}]
    rows = encode_examples(tok, ex, 64, numbered=True, fact_weight=4.0)
    assert FACT_W in rows[0] and FACT_W not in rows[1]
    replay = encode_examples(tok, [{"messages": [{"role": "user", "content": "Name a colour."},
                                                 {"role": "assistant", "content": "Blue, 42 times."}]}], 64)
    pool = [{"input_ids": r["input_ids"], "targets": (torch.zeros(len(r["input_ids"]) - 1, 2, dtype=torch.long),
                                                      torch.zeros(len(r["input_ids"]) - 1, 2))} for r in replay]
    for packing in (True, False):
        batch = make_collator(tok, packing, (pool, 1, 0), fact_weights=True)([dict(r) for r in rows])
        w = batch[FACT_W]
        assert w.shape == batch["labels"].shape
        heavy = batch["input_ids"][w == 4.0].tolist()
        assert tok.decode(heavy).strip() == "29" and (batch["labels"][w == 4.0] != -100).all()


@pytest.mark.parametrize("packing", [True, False])
def test_collator_lays_weights_out_with_the_labels(packing):
    import torch
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening

    from studio.train.facts import FACT_W, FactCollator

    class Tok:  # what DataCollatorForSeq2Seq asks of a tokenizer
        pad_token_id, padding_side, model_input_names = 0, "right", ["input_ids", "attention_mask"]

        def pad(self, feats, **kw):
            width = max(len(f["input_ids"]) for f in feats)
            return {"input_ids": torch.tensor([f["input_ids"] + [0] * (width - len(f["input_ids"])) for f in feats]),
                    "attention_mask": torch.tensor([[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"]))
                                                    for f in feats])}
    inner = DataCollatorWithFlattening(return_position_ids=True, separator_id=-100) if packing else \
        DataCollatorForSeq2Seq(Tok(), padding=True, label_pad_token_id=-100)
    feats = [{"input_ids": [5, 6, 7, 8], "labels": [-100, 6, 7, 8], FACT_W: [1.0, 1.0, 3.0, 1.0]},
             {"input_ids": [9, 10], "labels": [-100, 10]},  # no key fact: all 1
             {"input_ids": [11, 12, 13], "labels": [-100, 12, 13], FACT_W: [1.0, 3.0, 3.0]}]
    batch = FactCollator(inner, packing, "right")([dict(f) for f in feats])
    w = batch[FACT_W]
    assert w.shape == batch["labels"].shape
    if packing:
        assert w.tolist() == [[1.0, 1.0, 3.0, 1.0, 1.0, 1.0, 1.0, 3.0, 3.0]]
    else:
        assert w.tolist() == [[1.0, 1.0, 3.0, 1.0], [1.0, 1.0, 1.0, 1.0], [1.0, 3.0, 3.0, 1.0]]
    plain = FactCollator(inner, packing)([{k: v for k, v in f.items() if k != FACT_W} for f in feats])
    assert FACT_W not in plain  # a batch with no weights is the inner collator's own


@pytest.mark.parametrize("num_items", [None, 37])
def test_weighted_loss_chunked_equals_full(num_items):
    """The chunked loss with weights = the full logits' per-token cross-entropy × weights, in
    value and LoRA gradients; all-1 weights = no weights."""
    import torch

    from studio.train.loss import FACT_W, causal_lm_loss, weighted_ce
    from test_loss import grads, packed_batch, tiny

    batch = packed_batch()
    g = torch.Generator().manual_seed(5)
    tw = 1.0 + 2.0 * (torch.rand(batch["labels"].shape, generator=g) > 0.6).float()
    items = torch.tensor(num_items) if num_items else None

    model = tiny("llama")
    chunked = causal_lm_loss(model, {**batch, FACT_W: tw}, 7, items)
    chunked.backward()
    got = grads(model)
    model.zero_grad()
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    full = weighted_ce(logits, batch["labels"], tw, items)
    # the reference written out: position t predicts token t+1 and carries that token's weight
    each = torch.nn.functional.cross_entropy(logits[0, :-1].float(), batch["labels"][0, 1:],
                                             ignore_index=-100, reduction="none")
    count = (batch["labels"][0, 1:] != -100).sum()
    assert torch.allclose(full, (each * tw[0, 1:]).sum() / (items if items is not None else count))
    full.backward()
    want = grads(model)
    assert torch.allclose(chunked, full, rtol=1e-5, atol=1e-6)
    for n in want:
        assert torch.allclose(got[n], want[n], rtol=1e-4, atol=1e-6), n
    model.zero_grad()
    ones = causal_lm_loss(model, {**batch, FACT_W: torch.ones_like(tw)}, 7, items)
    assert torch.allclose(ones, causal_lm_loss(model, dict(batch), 7, items))
    assert not torch.allclose(chunked, ones)


def test_report_row_and_note_say_what_the_weight_did():
    import dataclasses

    from studio.retention.levers import fact_weight_row
    from studio.spec import RunSpec
    from studio.train.facts import FACT_W, summary

    t = RunSpec().train
    assert fact_weight_row(t, {}) == {"lever": "key-fact weight", "on": False, "setting": "train.fact_weight=1",
                                      "did": "Off: every answer token counted the same."}
    t = dataclasses.replace(t, fact_weight=3.0)
    on = fact_weight_row(t, {"weight": 3.0, "examples": 72, "with_facts": 65})
    assert on["on"] and on["setting"] == "train.fact_weight=3" and on["did"].startswith("In 65 of 72 examples")
    assert not fact_weight_row(t, {"weight": 3.0, "examples": 5, "with_facts": 0})["on"]
    assert "not a supervised run" in fact_weight_row(t, {})["did"]
    rows = [{"input_ids": [1, 2, 3, 4], "labels": [-100, 2, 3, 4], FACT_W: [1.0, 1.0, 3.0, 1.0]},
            {"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}]
    assert summary(rows, 3.0).startswith("Key facts weighted ×3: 1 of your 2 examples")
    assert "their 1 token (of 5 answer tokens) counts" in summary(rows, 3.0)
    assert "changes nothing here" in summary(rows[1:], 3.0)
