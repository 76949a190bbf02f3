"""The chunked cross-entropy gives the same loss and LoRA gradients as the full logits, for tiny
llama / qwen2 / gemma2 (soft-capped) models, with an assistant-only mask and padding-free
(packed) batches, with and without the Trainer's num_items_in_batch; and a CPU run's bf16 mixed
precision (decided once, said, in the training steps only)."""
from pathlib import Path

import pytest

CONFIGS = {
    "llama": dict(model_type="llama"),
    "qwen2": dict(model_type="qwen2"),
    "gemma2": dict(model_type="gemma2", final_logit_softcapping=30.0, head_dim=8,
                   query_pre_attn_scalar=8, sliding_window=16),
}


def tiny(kind: str):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    kw = dict(CONFIGS[kind])
    cfg = AutoConfig.for_model(kw.pop("model_type"), vocab_size=301, hidden_size=32,
                               intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                               num_key_value_heads=2, max_position_embeddings=128,
                               tie_word_embeddings=False, **kw)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    for n, p in model.named_parameters():  # non-zero B so every LoRA gradient is non-trivial
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.02)
    return model


def packed_batch():
    import torch
    from transformers import DataCollatorWithFlattening

    g = torch.Generator().manual_seed(1)
    feats = []
    for n, prompt in ((17, 6), (23, 9), (11, 4)):
        ids = torch.randint(3, 301, (n,), generator=g).tolist()
        labels = [-100] * prompt + ids[prompt:]  # the assistant-only mask: the prompt is not learned
        feats.append({"input_ids": ids, "labels": labels})
    return DataCollatorWithFlattening(return_position_ids=True, separator_id=-100)(feats)


def grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", list(CONFIGS))
@pytest.mark.parametrize("num_items", [None, 41])
def test_chunked_equals_full(kind, num_items):
    import torch

    from studio.train.loss import causal_lm_loss

    model = tiny(kind)
    batch = packed_batch()
    kwargs = {"num_items_in_batch": torch.tensor(num_items)} if num_items else {}
    full = model(**batch, **kwargs).loss
    full.backward()
    g_full = grads(model)
    model.zero_grad(set_to_none=True)
    chunked = causal_lm_loss(model, batch, chunk=7, num_items_in_batch=kwargs.get("num_items_in_batch"))
    chunked.backward()
    g_chunk = grads(model)
    assert abs(float(chunked) - float(full)) <= 1e-5 * abs(float(full))
    assert g_full.keys() == g_chunk.keys() and any("lora_A" in k for k in g_full)
    for name, g in g_full.items():
        err = float((g_chunk[name] - g).norm() / g.norm().clamp(min=1e-12))
        assert err < 1e-5, (name, err)


def test_chunk_sizes_agree_and_bias_is_used():
    import torch

    from studio.train.loss import chunked_ce

    torch.manual_seed(0)
    h = torch.randn(29, 16, requires_grad=True)
    w, b = torch.randn(50, 16, requires_grad=True), torch.randn(50, requires_grad=True)
    labels = torch.randint(0, 50, (29,))
    labels[::5] = -100
    ref = torch.nn.functional.cross_entropy(h @ w.t() + b, labels, reduction="sum")
    ref.backward()
    want = [t.grad.clone() for t in (h, w, b)]
    for chunk in (1, 4, 29, 100):
        for t in (h, w, b):
            t.grad = None
        got = chunked_ce(h, w, b, labels, chunk)
        got.backward()
        assert torch.allclose(got, ref, rtol=1e-5)
        for t, g in zip((h, w, b), want):
            assert torch.allclose(t.grad, g, rtol=1e-4, atol=1e-6)


def test_a_chunk_larger_than_the_step_is_said_with_its_cost():
    from studio.spec import RunSpec, update
    from studio.train.config import chunk_notes

    spec = update(RunSpec(), max_len=512, micro_batch=2)
    assert chunk_notes(spec, 49152) == []                       # the default chunk: silent
    assert chunk_notes(update(spec, loss_chunk=512), 49152) == []
    note, = chunk_notes(update(spec, loss_chunk=4096), 49152)
    assert "4,096 is more than a step's 1,024 tokens" in note and "0.38 GB" in note
    assert chunk_notes(update(spec, loss_chunk=4096, loss="full"), 49152) == []


def _offload_cfg(tmp_path, **changes):
    import json

    from studio.spec import RunSpec, update
    from studio.train.config import DatasetInfo, RunConfig

    cfg = {"model_type": "llama", "vocab_size": 1000, "hidden_size": 256, "intermediate_size": 512,
           "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return RunConfig(spec=update(RunSpec(), offload="on", **changes), preset="custom",
                     dataset=DatasetInfo("d", 1, str(tmp_path)))


def test_offloading_refused_before_the_run_with_the_estimates_numbers(tmp_path, monkeypatch):
    import psutil
    import torch

    from studio.errors import ConfigError
    from studio.train import config as tc

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (8 * 2**30, 8 * 2**30))
    cfg = _offload_cfg(tmp_path, max_len=4096)
    monkeypatch.setattr(tc, "pinning_works", lambda: "cudaHostAlloc failed: not permitted")
    with pytest.raises(ConfigError, match=r"pinned CPU memory.*not permitted.*needs ~[\d.]+ GB.*8\.0 GB"):
        tc.decide_offload(cfg, tmp_path, "cuda")
    monkeypatch.setattr(tc, "pinning_works", lambda: None)
    assert tc.decide_offload(cfg, tmp_path, "cuda").spec.train.offload == "on"

    class Tiny:
        available = 2**20
    monkeypatch.setattr(psutil, "virtual_memory", lambda: Tiny())
    with pytest.raises(ConfigError, match=r"keep ~[\d.]+ GB of activations in CPU memory, but only 0\.0 GB"):
        tc.decide_offload(cfg, tmp_path, "cuda")


# ---- the soft anchor: KL(base ‖ tuned) on replay text (train.replay_mode=kl) ----------------
def _coarse_kl(log_pb_full, log_pt, k):
    """KL over (the base's top-k tokens, the rest), computed the plain way."""
    import torch

    top = log_pb_full.topk(k, dim=-1)
    pb, lt = top.values.exp(), log_pt.gather(1, top.indices)
    rest_b = (1 - pb.sum(-1)).clamp(min=0)
    rest_t = (1 - lt.exp().sum(-1)).clamp(min=1e-12)
    return ((pb * (top.values - lt)).sum(-1) + torch.special.xlogy(rest_b, rest_b)
            - rest_b * rest_t.log()).sum(), top


@pytest.mark.parametrize("softcap", [None, 3.0])
@pytest.mark.parametrize("k", [40, 7])
def test_chunked_kl_equals_the_plain_computation(softcap, k):
    """k = the whole vocabulary: the exact KL(base ‖ tuned); fewer: the KL over (top-k, rest).
    Same value and gradients in every chunk size."""
    import torch

    from studio.train.anchor import chunked_kl

    torch.manual_seed(0)
    ht, hb = torch.randn(23, 16, requires_grad=True), torch.randn(23, 16)
    w, b = torch.randn(40, 16, requires_grad=True), torch.randn(40, requires_grad=True)

    def logits(h):
        z = h @ w.t() + b
        return softcap * torch.tanh(z / softcap) if softcap else z
    log_pb = torch.log_softmax(logits(hb).detach(), -1)
    ref, top = _coarse_kl(log_pb, torch.log_softmax(logits(ht), -1), k)
    if k == 40:
        full = (log_pb.exp() * (log_pb - torch.log_softmax(logits(ht), -1))).sum()
        assert torch.allclose(ref, full, rtol=1e-5, atol=1e-6)
    ref.backward()
    want = [t.grad.clone() for t in (ht, w, b)]
    for chunk in (1, 5, 23, 64):
        for t in (ht, w, b):
            t.grad = None
        got = chunked_kl(ht, top.indices.int(), top.values, w, b, chunk, softcap)
        got.backward()
        assert torch.allclose(got, ref, rtol=1e-5, atol=1e-6)
        for t, g in zip((ht, w, b), want):
            assert torch.allclose(t.grad, g, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("packing", [True, False])
def test_anchor_is_zero_at_the_base_and_pulls_back_after_a_change(packing, embedded_model_dir):
    """The anchor on a real batch: the base model's targets taken with the adapter off; the term
    is zero while the adapter does nothing, positive once it changes the model, with gradients
    on the adapter only; the replay part never reaches the cross-entropy; the chunked and the
    full-logits paths agree; evaluation batches carry no replay."""
    import torch
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening

    from studio.models.registry import load_tokenizer
    from studio.train import anchor as kl
    from studio.train.batches import INDEX, AnchorCollator
    from studio.train.loss import causal_lm_loss

    model = tiny("llama")
    for n, p in model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.zeros_(p)                             # the adapter does nothing yet
    g = torch.Generator().manual_seed(2)
    feats = [{"input_ids": (ids := torch.randint(3, 301, (n,), generator=g).tolist()),
              "labels": [-100] * 3 + ids[3:], INDEX: i} for i, n in enumerate((9, 12))]
    pool = [{"input_ids": torch.randint(3, 301, (n,), generator=g).tolist()} for n in (7, 10, 8)]
    for row, target in zip(pool, kl.targets(model, pool, k=16)):
        row["targets"] = target
    tok = load_tokenizer(embedded_model_dir)
    tok.padding_side = "right"
    inner = (DataCollatorWithFlattening(return_position_ids=True, separator_id=-100) if packing
             else DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100))
    batch = AnchorCollator(inner, pool, 2, seed=1, packing=packing)(feats)
    assert int(batch["kl_mask"].sum()) == len(batch["kl_ids"]) in {7 + 10 - 2, 7 + 8 - 2, 10 + 8 - 2}
    assert all(INDEX in f for f in feats)                       # the training set is not edited
    where = kl.take(batch)
    value, hidden, (_, head, cap) = causal_lm_loss(model, batch, 5, with_hidden=True)
    assert torch.isfinite(value)
    assert float(kl.anchor_kl(head, cap, hidden, where, 5)) < 1e-5
    for n, p in model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.5)
    model.zero_grad(set_to_none=True)
    _, hidden, _ = causal_lm_loss(model, batch, 5, with_hidden=True)
    term = kl.anchor_kl(head, cap, hidden, where, 5)
    assert float(term) > 1e-4
    term.backward()
    assert {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0} \
        and all("lora_" in n for n, p in model.named_parameters() if p.grad is not None)
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    assert torch.allclose(kl.anchor_kl_logits(logits, where), term.detach(), rtol=1e-4)
    evaluation = AnchorCollator(inner, pool, 2, seed=1, packing=packing)(
        [{k: v for k, v in f.items() if k != INDEX} for f in feats])
    assert "kl_mask" not in evaluation                          # evaluation batches carry no replay


# ---- long contexts: chunked MLPs in the recomputed block, norms in the compute dtype ---------
@pytest.mark.parametrize("kind", ["llama", "qwen2", "gemma2"])
def test_chunked_mlps_give_the_same_loss_and_gradients(kind):
    from studio.train.lean import chunk_mlps
    from studio.train.loss import causal_lm_loss

    batch = packed_batch()
    out = {}
    for chunked in (False, True):
        model = tiny(kind)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
        model.train()
        if chunked:
            assert chunk_mlps(model, 7) == 2
        loss = causal_lm_loss(model, batch, chunk=16)
        loss.backward()
        out[chunked] = (float(loss), grads(model))
    assert abs(out[True][0] - out[False][0]) <= 1e-6 * abs(out[False][0])
    for name, g in out[False][1].items():
        err = float((out[True][1][name] - g).norm() / g.norm().clamp(min=1e-12))
        assert err < 1e-5, (name, err)


def test_compute_dtype_norms_keep_the_qlora_residual_half(tmp_path, embedded_model_dir):
    """QLoRA under bf16 autocast, as the Trainer runs it on a GPU: with prepare_model_for_kbit_
    training's fp32 norm weights every block's output (the residual stream checkpointing keeps)
    is fp32 — bitsandbytes returns its input's dtype; with train.kbit_norms=compute it is bf16."""
    import torch

    pytest.importorskip("bitsandbytes")
    from conftest import make_tiny_llama
    from studio import presets
    from studio.spec import update
    from studio.train.lean import decoder_layers
    from studio.train.loop import load_for_training

    folder = make_tiny_llama(tmp_path / "tiny", embedded_model_dir, hidden=128)
    seen = {}
    for norms in ("fp32", "compute"):
        spec = update(presets.get_preset("cpu-quickstart"), method="qlora", dtype="bf16",
                      kbit_norms=norms, grad_ckpt=True)
        model = load_for_training(folder, "cpu", spec)
        out = []
        decoder_layers(model)[0].register_forward_hook(
            lambda mod, args, o: out.append((o[0] if isinstance(o, tuple) else o).dtype))
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            model(input_ids=torch.randint(3, 1000, (1, 12)))
        seen[norms] = out[0]
    assert seen == {"fp32": torch.float32, "compute": torch.bfloat16}


def test_one_sequence_batches_have_no_position_ids_so_no_mask():
    """Micro-batch 1, padding-free: no position ids, so sdpa runs causal with no [T × T] mask
    (the estimate counts none); two sequences keep theirs (a block-diagonal mask keeps them apart)."""
    import torch

    from studio.train.batches import make_collator

    collate = make_collator(None, packing=True)
    one = collate([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}])
    two = collate([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8, 9], "labels": [8, 9]}])
    assert "position_ids" not in one and two["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    seen = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(*a, **k):
        seen.append(k.get("attn_mask"))
        return real(*a, **k)
    model = tiny("llama")
    torch.nn.functional.scaled_dot_product_attention = spy
    try:
        with torch.no_grad():
            model(input_ids=one["input_ids"], use_cache=False)
            model(input_ids=two["input_ids"], position_ids=two["position_ids"], use_cache=False)
    finally:
        torch.nn.functional.scaled_dot_product_attention = real
    assert seen[0] is None and seen[-1] is not None


@pytest.mark.parametrize("kind", ["llama", "gemma2"])
def test_anchor_targets_run_the_shared_prefix_once_for_the_same_distributions(kind, monkeypatch):
    """Replay sequences share their chat template's first tokens: those run once and their keys
    and values serve every sequence — the same top tokens and log-probabilities as running each
    sequence whole, in groups of any size, with the adapter switched off."""
    import torch

    from studio.models.batching import shared_prefix
    from studio.train import anchor as kl

    assert shared_prefix([[1, 2, 3, 4], [1, 2, 3, 9, 9], [1, 2, 3, 4, 5]]) == 3
    assert shared_prefix([[1, 2], [1, 2, 3]]) == 1          # each keeps a token of its own
    assert shared_prefix([[5, 2], [1, 2, 3]]) == 0
    model = tiny(kind)                                          # an adapter that changes the model
    g = torch.Generator().manual_seed(3)
    head = torch.randint(3, 301, (kl.MIN_SHARED + 3,), generator=g).tolist()
    pool = [{"input_ids": head + torch.randint(3, 301, (n,), generator=g).tolist()}
            for n in (5, 1, 9, 14, 6)]
    runs = []
    monkeypatch.setattr(kl, "_targets", lambda *a, _run=kl._targets: runs.append(a[-1]) or _run(*a))
    seqs = [p["input_ids"] for p in pool]
    with torch.no_grad(), model.disable_adapter():
        whole = [model(input_ids=torch.tensor([s])).logits[0, :-1].log_softmax(-1) for s in seqs]
    for batch_tokens in (4096, 12):                             # one group; several
        got = kl.targets(model, pool, k=16, batch_tokens=batch_tokens)
        assert runs[-1] == len(head)
        for (ids, logp), ref in zip(got, whole):
            top = ref.topk(16, dim=-1)
            assert ids.shape == (len(ref), 16) and torch.equal(ids, top.indices.to(torch.int32))
            assert torch.allclose(logp, top.values, atol=1e-5)
    plain = kl.targets(model, pool[:1], k=16)                   # one sequence: no prefix pass
    assert runs[-1] == 0 and torch.equal(plain[0][0], got[0][0])


def test_a_short_run_takes_the_anchor_on_as_many_sequences_as_it_draws(monkeypatch):
    """The base distributions are taken for the replay sequences a run can draw in all (steps ×
    micro-batches × per batch × processes), never more: an 8-step walk does not pay for 229."""
    from types import SimpleNamespace

    from studio.train.batches import anchor_draws

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    t = SimpleNamespace(max_steps=8, epochs=1.0, micro_batch=4, grad_accum=2)
    assert anchor_draws(t, 4, 72) == 8 * 2 * 4
    by_epochs = SimpleNamespace(max_steps=0, epochs=2.0, micro_batch=4, grad_accum=1)
    assert anchor_draws(by_epochs, 4, 72) == 36 * 4                   # ⌈2 × 72 / 4⌉ steps
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert anchor_draws(t, 4, 72) == 8 * 2 * 2 * 4                      # every process draws its own
    assert anchor_draws(by_epochs, 4, 72) == 18 * 2 * 4                 # each sees half the data


def test_anchor_targets_are_kept_per_sequence(tmp_path, monkeypatch):
    """Each replay sequence's base distributions are taken once per model: a longer run's pool
    takes only the sequences a shorter run did not; another model, or a damaged file, takes all."""
    import torch

    from studio.train import anchor as kl

    calls, notes = [], []

    def fake(model, pool):
        calls.append([p["input_ids"][-1] for p in pool])
        return [(torch.full((len(p["input_ids"]) - 1, 2), p["input_ids"][-1], dtype=torch.int32),
                 torch.zeros(len(p["input_ids"]) - 1, 2)) for p in pool]
    monkeypatch.setattr(kl, "targets", fake)
    pool = [{"input_ids": [1, 2, 10 + i]} for i in range(5)]
    short = kl.cached_targets(tmp_path, "model-a", None, pool[:2], notes.append)
    whole = kl.cached_targets(tmp_path, "model-a", None, pool, notes.append)
    again = kl.cached_targets(tmp_path, "model-a", None, pool[1:4], notes.append)
    assert calls == [[10, 11], [12, 13, 14]] and len(notes) == 2 and "3 replay sequences" in notes[1]
    assert [int(ids[0, 0]) for ids, _ in whole] == [10, 11, 12, 13, 14]  # each sequence its own
    assert [int(ids[0, 0]) for ids, _ in again] == [11, 12, 13] and len(short) == 2
    kl.cached_targets(tmp_path, "model-b", None, pool[:1], notes.append)  # another model: its own
    assert calls[-1] == [10]
    for f in tmp_path.glob("anchor-*.pt"):
        f.write_bytes(b"not a torch file")
    kl.cached_targets(tmp_path, "model-a", None, pool[:2], notes.append)  # damaged: taken again
    assert calls[-1] == [10, 11]


def test_a_cpu_runs_precision_is_decided_once_said_and_kept_in_its_config(studio, faq_dataset, tiny_model,
                                                                           monkeypatch):
    """auto is bf16 mixed precision for a supervised LoRA run on a CPU that multiplies bf16 fast
    (forced both ways here), else fp32; preflight writes the choice into the run's spec, so the
    training child, its ranks and a resume read it and never measure again; the note says which,
    and its weights load in fp32."""
    import torch

    from studio.models import loading
    from studio.spec import update
    from studio.train import config as tcfg
    from studio.train.loop import load_for_training

    class Tok:  # what preflight reads of a tokenizer
        chat_template = "{{ messages }}"

        def __len__(self):
            return 49152

    d = studio.dataset(faq_dataset)

    def checked(*overrides):
        return tcfg.preflight(tcfg.build_config("cpu-quickstart", d, None, list(overrides), 1), d, Tok(), "cpu")

    try:
        for forced, fast in (("1", True), ("0", False)):
            monkeypatch.setenv("STUDIO_CPU_BF16", forced)
            loading.cpu_bf16_speedup.cache_clear()
            for dtype, mixed in (("auto", fast), ("bf16", True), ("fp32", False)):
                cfg = checked(f"train.dtype={dtype}")
                said = [n for n in cfg.notes if "bf16 mixed precision" in n]
                assert cfg.spec.train.dtype == ("bf16" if mixed else "fp32"), (forced, dtype)
                assert bool(said) == mixed and tcfg.cpu_mixed(cfg.spec, "cpu") == mixed, (forced, dtype, cfg.notes)
                assert not said or f"STUDIO_CPU_BF16={forced}" in said[0]
            # not for RL or preference runs, nor QLoRA, nor off the CPU
            spec = checked("train.dtype=bf16").spec
            assert not tcfg.cpu_mixed(update(spec, method="qlora"), "cpu")
            assert not tcfg.cpu_mixed(update(spec, objective="dpo"), "cpu")
            assert not tcfg.cpu_mixed(spec, "cuda")
        # decided: the child reads the spec, whatever the CPU measures now
        monkeypatch.setenv("STUDIO_CPU_BF16", "0")
        loading.cpu_bf16_speedup.cache_clear()
        spec = update(checked("train.dtype=bf16").spec, model=tiny_model)
        assert tcfg.cpu_mixed(spec, "cpu")
        model = load_for_training(Path(tiny_model), "cpu", spec)
        assert {p.dtype for p in model.parameters()} == {torch.float32}
        # a run folder from before the decision (auto kept in its config) resumes in fp32, as then
        assert not tcfg.cpu_mixed(update(spec, dtype="auto"), "cpu")
    finally:
        loading.cpu_bf16_speedup.cache_clear()


def test_the_bf16_measurement_says_slow_where_bf16_is_emulated_and_pays_one_product(monkeypatch):
    """Where bf16 multiplies slower than fp32, the measurement stops after one bf16 product."""
    import time

    import torch

    from studio.models import loading

    real = torch.nn.functional.linear
    calls = []

    def emulated(x, w, b=None):
        if x.dtype == torch.bfloat16:
            calls.append(1)
            time.sleep(0.05)
        return real(x, w, b)

    monkeypatch.delenv("STUDIO_CPU_BF16", raising=False)
    monkeypatch.setattr(torch.nn.functional, "linear", emulated)
    loading.cpu_bf16_speedup.cache_clear()
    try:
        ratio, forced = loading.cpu_bf16_speedup()
        assert not forced and ratio < 1 and not loading.cpu_bf16_fast() and calls == [1]
    finally:
        loading.cpu_bf16_speedup.cache_clear()


@pytest.mark.parametrize("bf16", [True, False])
def test_bf16_mixed_precision_on_a_cpu_reaches_the_decoder_the_chunked_loss_calls(bf16, tmp_path):
    """The chunked loss calls the decoder itself, past accelerate's autocast of model.forward: the
    studio's Trainer puts the autocast around it (a run whose notes said bf16 once trained fp32),
    in training steps only: the evaluation loss stays fp32. Its loss stays close to the fp32 one."""
    import torch
    from transformers import Trainer, TrainingArguments

    from studio.train.trainer import trainer_class

    model = tiny("llama")
    seen = []
    layer = model.get_base_model().model.layers[0].mlp.down_proj.base_layer
    layer.register_forward_hook(lambda mod, i, o: seen.append(o.dtype))
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[],
                             per_device_train_batch_size=3, remove_unused_columns=False)
    trainer = trainer_class(Trainer, "chunked", 16, cpu_bf16=bf16)(model=model, args=args)
    trainer.current_gradient_accumulation_steps = 1
    batch = packed_batch()
    loss = trainer.training_step(model, dict(batch), num_items_in_batch=(batch["labels"] != -100).sum())
    assert set(seen) == {torch.bfloat16 if bf16 else torch.float32}
    seen.clear()
    model.zero_grad()
    with torch.no_grad():  # the same batch in fp32, outside any autocast
        from studio.train.loss import causal_lm_loss
        plain = causal_lm_loss(model, dict(batch), 16, (batch["labels"] != -100).sum())
    assert seen == [torch.float32]
    model.eval()  # the Trainer's evaluation loss: fp32, as the forgetting checks are
    seen.clear()
    with trainer.compute_loss_context_manager():
        model(input_ids=batch["input_ids"])
    assert seen == [torch.float32]
    assert abs(float(loss) - float(plain)) < (0.05 if bf16 else 1e-5)
