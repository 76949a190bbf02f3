"""Export step without a trained run: llama.cpp's converter as the GGUF engine on tiny models of
eight architectures, the embedded model's export, the parity check's machinery, and safe failure.
(The shared run's exports are tests/test_export.py: that module waits for the shared run, these do
not, so pytest-xdist runs them on the other worker meanwhile.)"""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, make_tiny_llama, run_cli
from studio.errors import ExportError, FeatureUnavailable
from studio.export import converter

pytestmark = pytest.mark.slow
BASE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256)
# model type → (config extras, tokenizer): "bpe" = the embedded model's (the converter knows its
# pre-tokenizer), "sp" = a SentencePiece model trained in the test (what Gemma, Phi-3 and this
# converter's Qwen2 path read); Gemma's query scale follows its head size, as in the real models.
ARCHS = {
    "llama": (dict(tie_word_embeddings=False, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 128}), "bpe"),
    "mistral": ({}, "bpe"),
    "qwen2": (dict(tie_word_embeddings=True), "sp"),
    "qwen3": (dict(head_dim=16), "bpe"),
    "gemma2": (dict(head_dim=16, query_pre_attn_scalar=16), "sp"),
    "gemma3_text": (dict(head_dim=16, query_pre_attn_scalar=16, sliding_window=64), "sp"),
    "phi3": ({}, "sp"),
    "smollm3": ({}, "sp"),
}
SPECIAL = ["<|end|>", "<|user|>", "<|assistant|>", "<|system|>", "<|endoftext|>"]  # Phi-3's chat tokens


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
    import sentencepiece as spm

    d = tmp_path_factory.mktemp("sp")
    corpus = d / "corpus.txt"
    corpus.write_text((ROOT / "assets/sample/nimbus_orbit_manual.md").read_text())
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(d / "sp"), vocab_size=400,
                                   model_type="bpe", byte_fallback=True, bos_id=1, eos_id=2, unk_id=0,
                                   pad_id=3, character_coverage=1.0, minloglevel=2,
                                   user_defined_symbols=SPECIAL)
    return d / "sp.model"


def tiny_model(tmp_path, model_type, embedded_model_dir, sp_model=None):
    """A two-layer model of this architecture with random weights, saved with a tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaTokenizerFast

    extra, tok = ARCHS[model_type]
    d = tmp_path / f"tiny-{model_type}"
    d.mkdir()
    if tok == "sp":
        LlamaTokenizerFast(vocab_file=str(sp_model)).save_pretrained(d)
        shutil.copy(sp_model, d / "tokenizer.model")
        ids = dict(vocab_size=400, bos_token_id=1, eos_token_id=2, pad_token_id=3)
    else:
        for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            shutil.copy(embedded_model_dir / f, d / f)
        ids = dict(vocab_size=49152, bos_token_id=1, eos_token_id=2, pad_token_id=None)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **BASE, **ids, **extra)).eval()
    model.save_pretrained(d)
    return d, model


def logits_cpp(gguf: Path, ids: list[int], lora: Path | None = None) -> np.ndarray:
    import llama_cpp

    kw = {"lora_path": str(lora)} if lora else {}
    llm = llama_cpp.Llama(str(gguf), n_ctx=64, logits_all=True, verbose=False, **kw)
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)])


@pytest.mark.parametrize("model_type", list(ARCHS))
def test_architectures_end_to_end(tmp_path, model_type, embedded_model_dir, sp_model):
    """Train a few LoRA steps; the f32 GGUF of the merged model gives transformers' logits in
    llama.cpp; the base GGUF + the LoRA GGUF give the merged model's; q8_0 stays close. (The
    studio's own q8_0 parity check on a real model: test_gguf_q8_0_with_parity.)"""
    import torch
    from peft import LoraConfig, get_peft_model

    pytest.importorskip("llama_cpp")
    d, model = tiny_model(tmp_path, model_type, embedded_model_dir, sp_model)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=5e-2)
    batch = torch.randint(4, 390, (2, 24))
    for _ in range(3):
        peft_model(input_ids=batch, labels=batch).loss.backward()
        opt.step()
        opt.zero_grad()
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    merged = peft_model.merge_and_unload().eval()
    merged_dir = tmp_path / "merged"
    merged.save_pretrained(merged_dir)
    for f in d.iterdir():
        if f.is_file() and f.suffix != ".safetensors" and f.name != "config.json":
            shutil.copy(f, merged_dir / f.name)
    ids = [1, 200, 300, 250, 100, 2]
    with torch.no_grad():
        ref = merged(torch.tensor([ids])).logits[0].numpy()
    # the four conversions are independent child processes: two at a time (one per core)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        jobs = [pool.submit(converter.convert_model, merged_dir, tmp_path / "tuned-f32.gguf", "f32"),
                pool.submit(converter.convert_model, d, tmp_path / "base-f32.gguf", "f32"),
                pool.submit(converter.convert_lora, adapter, d, tmp_path / "lora-f32.gguf", "f32"),
                pool.submit(converter.convert_model, merged_dir, tmp_path / "tuned-q8_0.gguf", "q8_0")]
        tuned, base, lora, q8 = [j.result() for j in jobs]
    assert np.abs(logits_cpp(tuned, ids) - ref).max() < 5e-3
    assert np.abs(logits_cpp(base, ids, lora) - ref).max() < 5e-3
    got = logits_cpp(q8, ids)  # 8-bit codes: close, not equal (relative RMS error of the logits)
    assert np.sqrt(((got - ref) ** 2).mean() / (ref ** 2).mean()) < 0.15
    assert not list(tmp_path.glob("*.partial-*"))                   # nothing half-written left


def test_what_the_converter_cannot_take_is_refused_before_any_work(tmp_path):
    def folder(name, cfg, files=("model.safetensors",)):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(json.dumps(cfg))
        for f in files:
            (d / f).write_bytes(b"")
        return d

    with pytest.raises(ExportError, match="does not know the architecture FooForCausalLM.*adapter or the merged"):
        converter.check_model(folder("foo", {"architectures": ["FooForCausalLM"]}))
    with pytest.raises(ExportError, match="vision/multimodal"):
        converter.check_model(folder("vl", {"architectures": ["Gemma3ForConditionalGeneration"],
                                            "vision_config": {}}))
    with pytest.raises(ExportError, match="only pickle files: pytorch_model.bin"):
        converter.check_model(folder("pkl", {"architectures": ["LlamaForCausalLM"]}, ("pytorch_model.bin",)))
    with pytest.raises(ExportError, match="no readable config.json"):
        converter.check_model(tmp_path)


def test_missing_converter_says_how_to_fix(studio, monkeypatch, tmp_path):
    monkeypatch.setattr(converter, "HOME", tmp_path / "nowhere")
    with pytest.raises(FeatureUnavailable, match="converter, which is not set up.*make setup"):
        studio.export("gguf", model="smollm2-135m-instruct", quant="f16", out=str(tmp_path / "m.gguf"))
    assert not (tmp_path / "m.gguf").exists()


def test_embedded_export_keeps_our_template_and_stops(tmp_path, embedded_model_dir, base_model):
    """The converter's GGUF of the embedded model: the shipped GGUF's tensors, our chat template
    and end-of-turn token, and llama.cpp computes with it what transformers computes with the
    model (f32: the same numbers up to rounding; f16 and q8_0 of a trained run are below)."""
    import gguf

    from studio.export import parity
    from studio.models import registry as models

    f32 = converter.convert_model(embedded_model_dir, tmp_path / "f32.gguf", "f32")
    ref, ours = gguf.GGUFReader(str(models.embedded_gguf())), gguf.GGUFReader(str(f32))
    assert {t.name: t.shape.tolist() for t in ref.tensors} == {t.name: t.shape.tolist() for t in ours.tensors}
    template = ours.fields["tokenizer.chat_template"].contents()
    assert "<|im_start|>" in template
    eos = ours.fields["tokenizer.ggml.eos_token_id"].contents()
    assert ours.fields["tokenizer.ggml.tokens"].contents()[eos] == "<|im_end|>"
    pytest.importorskip("llama_cpp")
    model, tok = base_model
    same = parity.check(f32, model, tok, "f32", n_tokens=12, prompts=parity.PROMPTS[:3])
    assert same["passed"] and same["tokenizer_match"] == 1.0 and same["tokens_compared"] >= 3
    assert same["agreement"] == 1.0 and same["mean_abs_dlogprob"] < 1e-3


def test_failed_export_leaves_nothing(studio, tmp_path, monkeypatch):
    """The converter dies half-way: a clear error, no file, nothing registered."""
    import subprocess

    def half_then_fail(args, **kw):
        Path(args[args.index("--outfile") + 1]).write_bytes(b"GGUF half")
        return subprocess.CompletedProcess(args, 1, "", "Traceback …\nRuntimeError: disk unplugged")

    monkeypatch.setattr(converter.subprocess, "run", half_then_fail)
    before = len(studio.exports_list())
    with pytest.raises(ExportError, match="converter could not write the model GGUF.*disk unplugged"):
        studio.export("gguf", model="smollm2-135m-instruct", quant="f16", out=str(tmp_path / "m.gguf"))
    assert list(tmp_path.iterdir()) == [] and len(studio.exports_list()) == before


def test_k_quant_without_llama_cpp_says_how(monkeypatch, studio):
    from studio.models import registry as models

    monkeypatch.setattr(models, "llama_cpp_available", lambda: (False, "llama-cpp-python is not installed"))
    with pytest.raises(FeatureUnavailable, match="llama-cpp-python"):
        studio.export("gguf", model="smollm2-135m-instruct", quant="q4_k_m")


def test_parity_own_answer_goes_on_from_where_llama_cpp_and_transformers_part():
    """The end-of-turn check's own greedy answer: what llama.cpp's top-1 already agreed with
    is not generated again, and it still decides itself whether it stops."""
    from studio.export import parity

    class Llm:
        def create_completion(self, prompt, max_tokens, **kw):
            self.asked = (list(prompt), max_tokens)
            return {"choices": [{"finish_reason": "stop", "text": " more"}]}

        def detokenize(self, ids):
            return " ".join(map(str, ids)).encode()

    def scores(top):  # one row per position; its top-1 is the token given
        s = np.zeros((len(top), 50))
        s[np.arange(len(top)), top] = 1.0
        return s
    ids, new, stop = [1, 2, 3], [7, 8, 9, 40], {40}
    llm = Llm()
    assert parity.own_answer(llm, scores([0, 0, 7, 8, 9, 40, 0]), ids, new, stop) == ("stop", "7 8 9 more")
    assert llm.asked == ([1, 2, 3, 7, 8, 9], parity.ANSWER_TOKENS - 3)   # not past the end-of-turn
    parity.own_answer(llm, scores([0, 0, 7, 5, 9, 40, 0]), ids, new, stop)
    assert llm.asked == ([1, 2, 3, 7], parity.ANSWER_TOKENS - 1)         # parted at the 2nd token
    assert parity.own_answer(llm, scores([0, 0, 6, 8, 9, 40, 0]), ids, new, stop) == ("stop", " more")
    assert llm.asked == (ids, parity.ANSWER_TOKENS)                      # parted at once: from the prompt
    parity.own_answer(llm, scores([0, 0, 7, 8, 9, 11, 0]), ids, [7, 8, 9, 11], stop)
    assert llm.asked == ([1, 2, 3, 7, 8, 9, 11], parity.ANSWER_TOKENS - 4)  # no end-of-turn: all of it


# ---- #38: the parity check says what it is doing, is faster, and can be skipped ---------------
@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, embedded_model_dir):
    """The two-layer model of conftest (the embedded tokenizer and chat template) with its own
    output layer at std 1 — next-token scores that differ by position, as a trained model's do
    (the shared one's are near-uniform: any misaligned comparison would look right) — its f32
    GGUF, and the model and tokenizer loaded: the parity check's machinery in seconds."""
    import torch
    from transformers import AutoModelForCausalLM

    from studio.models import registry as models

    d = make_tiny_llama(tmp_path_factory.mktemp("tiny-parity") / "tiny-llama", embedded_model_dir)
    m = AutoModelForCausalLM.from_pretrained(d)
    m.config.tie_word_embeddings = False
    torch.manual_seed(1)
    m.lm_head.weight = torch.nn.Parameter(torch.randn_like(m.lm_head.weight))
    m.save_pretrained(d)
    gguf = converter.convert_model(d, d.parent / "tiny-f32.gguf", "f32")
    return d, gguf, models.load_model(d), models.load_tokenizer(d)


def test_parity_reports_each_answer_compared(tiny_gguf):
    """The check sat at "90%" for minutes: now its progress names each stage and moves once per
    answer compared, up to 1.0."""
    pytest.importorskip("llama_cpp")
    from studio.export import parity

    _, gguf, model, tok = tiny_gguf
    heard = []
    r = parity.check(gguf, model, tok, "f32", n_tokens=8, prompts=parity.PROMPTS[:3],
                     progress=lambda frac, msg: heard.append((frac, msg)))
    said = [m for _, m in heard]
    assert [m for m in said if "compared" in m] == [f"parity: answer {k} of 3 compared" for k in range(4)]
    first = said.index("parity: answer 0 of 3 compared")
    assert any("writing its 3 reference answers (" in m for m in said[:first])  # while generating
    fracs = [f for f, _ in heard]
    assert fracs == sorted(fracs) and fracs[0] == 0.0 and fracs[-1] == 1.0
    # the same weights in both runtimes: the compared log-probs line up position for position
    assert r["prompts"] == 3 and 3 <= r["tokens_compared"] <= 24
    assert r["agreement"] >= 0.95 and r["mean_abs_dlogprob"] < 0.01


def test_parity_feed_reuses_the_shared_prefix_with_the_same_scores(tiny_gguf):
    """Each test question starts with the same system prompt: llama.cpp keeps it instead of
    evaluating it again, and the scores are those of a fresh start."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from studio.export import parity

    _, gguf, _, tok = tiny_gguf
    a, b = (tok(tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                        add_generation_prompt=True), add_special_tokens=False)["input_ids"]
            + [300, 301] for q in ("Explain why the sky is blue.", "How do I take care of a houseplant?"))
    common = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
    assert common > 10                                        # the system prompt and more
    llm = llama_cpp.Llama(str(gguf), n_ctx=128, logits_all=True, verbose=False)
    fresh = llama_cpp.Llama(str(gguf), n_ctx=128, logits_all=True, verbose=False)
    fresh.eval(b)
    llm.eval(a)
    evaluated = []
    real_eval = llm.eval
    llm.eval = lambda tokens: (evaluated.append(len(tokens)), real_eval(tokens))
    parity.feed(llm, b, keep_max=len(b) - 1)
    assert evaluated == [len(b) - common] and llm.n_tokens == len(b)
    assert np.abs(np.asarray(llm.scores[common:len(b)]) - np.asarray(fresh.scores[common:len(b)])).max() < 1e-4
    parity.feed(llm, b, keep_max=5)                           # never past keep_max
    assert evaluated[-1] == len(b) - 5


def test_greedy_scores_equal_a_forward_pass(base_model):
    """The check now takes the tuned model's scores from its own generation instead of a second
    forward pass per prompt: they are the same numbers (left-padded batch vs one sequence)."""
    import torch

    from studio.models.greedy import greedy_scored

    model, tok = base_model
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                       add_generation_prompt=True)
               for q in ("Hi!", "Explain why the sky is blue, in two sentences please.")]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in prompts]
    steps = []
    answers = greedy_scored(model, tok, ids, 6, on_step=steps.append)
    assert steps[-1] == 1.0 and steps == sorted(steps)
    for p, a in zip(ids, answers):
        assert len(a.tokens) == len(a.top1) == len(a.logprobs) > 0
        with torch.no_grad():
            logits = model(torch.tensor([p + a.tokens])).logits[0, len(p) - 1: len(p) - 1 + len(a.tokens)]
        lp = torch.log_softmax(logits.float(), -1)
        assert a.top1 == logits.argmax(-1).tolist()
        want = lp.gather(-1, torch.tensor(a.tokens).unsqueeze(-1)).squeeze(-1)
        assert torch.allclose(torch.tensor(a.logprobs), want, atol=1e-3), (a.logprobs, want)


def test_cli_export_checks_parity_by_default_and_shows_each_answer(studio, tiny_gguf, tmp_path):
    pytest.importorskip("llama_cpp")
    r = run_cli("export", "--model", str(tiny_gguf[0]), "--format", "gguf", "--quant", "f32",
                "--out", str(tmp_path / "checked.gguf"), home=studio.home.root)
    assert r.returncode == 0, r.stderr[-2000:]
    compared = [line.split("%  ", 1)[1] for line in r.stderr.splitlines() if line.endswith("compared")]
    assert compared == [f"parity: answer {k} of 8 compared" for k in range(9)]
    assert "agreement" in r.stdout and "parity_skipped" not in r.stdout
    assert studio.exports_list()[0]["parity"]["prompts"] == 8


def test_no_parity_skips_the_check_and_says_how_to_run_it(studio, tiny_gguf, tmp_path):
    r = run_cli("export", "--model", str(tiny_gguf[0]), "--format", "gguf", "--quant", "f32",
                "--out", str(tmp_path / "unchecked.gguf"), "--no-parity", "--json", home=studio.home.root)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert "parity" not in out and "parity: " not in r.stderr
    note = out["parity_skipped"]
    assert note.startswith("Parity was not checked (it was turned off)")
    assert f"python -m studio export --model {tiny_gguf[0]} --format gguf --quant f32" in note
    row = studio.exports_list()[0]
    assert row["path"] == out["path"] and row["parity"] is None
    both = run_cli("export", "--model", "x", "--format", "gguf", "--verify", "--no-parity",
                   home=studio.home.root)
    assert both.returncode == 2 and "not allowed with" in both.stderr
