"""Export step: our GGUF writer against references, parity, formats, and safe failure."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from studio.errors import ExportError, FeatureUnavailable
from studio.export import gguf_writer as gw

pytestmark = pytest.mark.slow
TINY = {
    "llama": {"tie_word_embeddings": False},
    "mistral": {},
    "qwen2": {"tie_word_embeddings": True},
    "gemma2": {"head_dim": 256, "tie_word_embeddings": True},
}


def tiny_model(tmp_path, model_type, embedded_model_dir, **extra):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    d = tmp_path / f"tiny-{model_type}"
    d.mkdir()
    cfg = AutoConfig.for_model(model_type, vocab_size=49152, hidden_size=64, intermediate_size=128,
                               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                               max_position_embeddings=256, **extra)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    model.save_pretrained(d)
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(embedded_model_dir / f, d / f)
    return d, model


@pytest.mark.parametrize("model_type", list(TINY))
def test_round_trip_tiny_models(tmp_path, model_type, embedded_model_dir):
    """transformers reads our file back to the same logits; llama.cpp computes the same too."""
    import torch
    from transformers import AutoModelForCausalLM

    d, model = tiny_model(tmp_path, model_type, embedded_model_dir, **TINY[model_type])
    out = gw.write(d, gw.state_from_folder(d), d / "m.gguf", "f32")
    back = AutoModelForCausalLM.from_pretrained(d, gguf_file=out.name, dtype=torch.float32).eval()
    ids = [1, 200, 300, 400, 500, 2]
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].numpy()
        again = back(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(ref - again).max() < 1e-4
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(str(out), n_ctx=64, logits_all=True, verbose=False)
    llm.eval(ids)
    assert np.abs(ref - np.array(llm.scores[: len(ids)])).max() < 5e-3


def test_unsupported_architecture_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ExportError, match="Supported: gemma2, llama, mistral, qwen2"):
        gw.write(tmp_path, iter(()), tmp_path / "x.gguf")
    assert not list(tmp_path.glob("*.gguf*"))


def test_embedded_f16_matches_llama_cpp_converter_metadata(tmp_path, embedded_model_dir):
    """The shipped GGUF was written by llama.cpp's converter: our tokenizer, template and
    hyperparameter metadata, tensor names and shapes must be the same."""
    import gguf

    from studio import models

    out = gw.write(embedded_model_dir, gw.state_from_folder(embedded_model_dir), tmp_path / "e.gguf", "f16")
    ref, ours = gguf.GGUFReader(str(models.embedded_gguf())), gguf.GGUFReader(str(out))
    skip = {"general.name", "general.file_type"}
    for key, field in ref.fields.items():
        if key.startswith(("GGUF.", "general.")) or key in skip:
            continue
        assert key in ours.fields, key
        assert ours.fields[key].contents() == field.contents(), key
    assert {t.name: t.shape.tolist() for t in ref.tensors} == {t.name: t.shape.tolist() for t in ours.tensors}
    types = {t.name: t.tensor_type.name for t in ours.tensors}
    assert types["blk.0.attn_q.weight"] == "F16" and types["blk.0.attn_norm.weight"] == "F32"


def test_embedded_round_trip_logits(tmp_path, embedded_model_dir, base_model):
    import torch
    from transformers import AutoModelForCausalLM

    out = gw.write(embedded_model_dir, gw.state_from_folder(embedded_model_dir), tmp_path / "e.gguf", "f32")
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name, dtype=torch.float32)
    model, tok = base_model
    ids = torch.tensor([tok("The capital of France is")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, back(ids).logits, atol=1e-4)


def test_gguf_q8_0_with_parity(studio, trained_run):
    pytest.importorskip("llama_cpp")
    r = run_cli("export", "--run", trained_run["id"], "--format", "gguf", "--quant", "q8_0",
                "--verify", "--json", home=studio.home.root)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert Path(out["path"]).exists() and out["bytes"] > 100e6 and out["seconds"] > 0
    p = out["parity"]
    assert p["passed"] and p["agreement"] >= 0.95 and p["prompts"] == 8 and p["tokens_compared"] >= 8 * 8
    assert p["tokenizer_match"] == 1.0 and p["ran_past_end_of_turn"] == 0
    assert "mean_abs_dlogprob" in p
    rows = studio.exports_list(trained_run["id"])
    assert rows[0]["format"] == "gguf" and rows[0]["parity"]["passed"]
    # the merged GGUF alone is enough for the llama.cpp engine (the base GGUF is made on demand)
    both = studio.compare(trained_run["id"], "Who makes the Nimbus Orbit?", max_new_tokens=16,
                          engine="llama.cpp")
    assert both["tuned_file"] == out["path"] and both["base"] != both["tuned"]


def test_lora_gguf_and_llama_cpp_compare(studio, trained_run):
    pytest.importorskip("llama_cpp")
    out = studio.export("lora-gguf", run_id=trained_run["id"], verify=True)
    assert out["parity"]["passed"] and out["parity"]["agreement"] >= 0.98
    both = studio.compare(trained_run["id"], "How much does the Nimbus Orbit cost?",
                          max_new_tokens=24, engine="llama.cpp")
    hf = studio.compare(trained_run["id"], "How much does the Nimbus Orbit cost?", max_new_tokens=24)
    assert both["tuned"] == hf["tuned"] and both["base"] == hf["base"]


def test_ollama_adapter_and_merged(studio, trained_run, tmp_path, embedded_model_dir):
    from peft import PeftModel

    from studio import models

    o = studio.export("ollama", run_id=trained_run["id"], quant="f16", out=str(tmp_path / "ollama"))
    text = Path(o["modelfile"]).read_text()
    assert text.startswith("FROM ./") and 'PARAMETER stop "<|im_end|>"' in text
    assert "<|im_start|>assistant" in text and "SYSTEM" in text and "ollama create" in o["use"]["ollama"]
    a = studio.export("adapter", run_id=trained_run["id"], out=str(tmp_path / "adapter"))
    PeftModel.from_pretrained(models.load_model(embedded_model_dir), a["path"])
    m = studio.export("merged", run_id=trained_run["id"], out=str(tmp_path / "merged"))
    assert (Path(m["path"]) / "model.safetensors").exists() and (Path(m["path"]) / "tokenizer.json").exists()


def test_bad_requests(studio, trained_run, faq_dataset, tmp_path, monkeypatch):
    with pytest.raises(ExportError, match="Valid: f32, f16, bf16, q8_0, q4_k_m, q5_k_m, q6_k"):
        studio.export("gguf", run_id=trained_run["id"], quant="q3_weird")
    with pytest.raises(ExportError, match="does not exist"):
        studio.export("gguf", run_id=trained_run["id"], out=str(tmp_path / "missing" / "x.gguf"))
    with pytest.raises(ExportError, match="needs a training run"):
        studio.export("lora-gguf", model="smollm2-135m-instruct")
    queued = studio.train_create("cpu-quickstart", faq_dataset, max_steps=1)
    with pytest.raises(Exception, match="no adapter yet"):
        studio.export("gguf", run_id=queued["id"])
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**12, 10**12 - 1000, 1000))
    with pytest.raises(ExportError, match="Not enough disk space"):
        studio.export("gguf", run_id=trained_run["id"], out=str(tmp_path / "x.gguf"))


def test_dora_adapter_cannot_be_lora_gguf(tmp_path, trained_run, studio):
    from studio.export import lora_gguf

    a = tmp_path / "dora"
    shutil.copytree(studio.run_show(trained_run["id"])["artifacts"]["adapter"], a)
    cfg = json.loads((a / "adapter_config.json").read_text())
    cfg["use_dora"] = True
    (a / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ExportError, match="DoRA.*merged GGUF"):
        lora_gguf.check_adapter(a)


def test_failed_export_leaves_nothing(studio, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("disk unplugged")

    monkeypatch.setattr(gw, "convert_tensor", boom)
    before = len(studio.exports_list())
    with pytest.raises(RuntimeError):
        studio.export("gguf", model="smollm2-135m-instruct", quant="f16", out=str(tmp_path / "m.gguf"))
    assert list(tmp_path.iterdir()) == [] and len(studio.exports_list()) == before


def test_k_quant_without_llama_cpp_says_how(monkeypatch, studio):
    from studio import models

    monkeypatch.setattr(models, "llama_cpp_available", lambda: (False, "llama-cpp-python is not installed"))
    with pytest.raises(FeatureUnavailable, match="llama-cpp-python"):
        studio.export("gguf", model="smollm2-135m-instruct", quant="q4_k_m")


def test_sentencepiece_vocabulary(tmp_path):
    """Llama 2 / Mistral / Gemma use SentencePiece: train a tiny one here, write a GGUF with it,
    and llama.cpp must tokenize exactly like sentencepiece (byte fallback included)."""
    import json

    import sentencepiece as spm
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaTokenizerFast

    llama_cpp = pytest.importorskip("llama_cpp")
    from conftest import ROOT

    corpus = tmp_path / "corpus.txt"
    corpus.write_text((ROOT / "assets/sample/nimbus_orbit_manual.md").read_text())
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "sp"), vocab_size=400,
                                   model_type="bpe", byte_fallback=True, bos_id=1, eos_id=2, unk_id=0,
                                   pad_id=-1, character_coverage=1.0, minloglevel=2)
    d = tmp_path / "model"
    LlamaTokenizerFast(vocab_file=str(tmp_path / "sp.model")).save_pretrained(d)
    shutil.copy(tmp_path / "sp.model", d / "tokenizer.model")
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    (d / "tokenizer_config.json").write_text(json.dumps({**cfg, "add_bos_token": True}))
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.for_model(
        "llama", vocab_size=400, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)).save_pretrained(d)
    out = gw.write(d, gw.state_from_folder(d), d / "m.gguf", "f32")
    llm = llama_cpp.Llama(str(out), n_ctx=128, verbose=False)
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "sp.model"))
    for text in ("The feeder holds 1.8 litres of seed.", "naïve café — 18 kHz!"):
        assert llm.tokenize(text.encode(), add_bos=True) == [1] + sp.encode(text)
