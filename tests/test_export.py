"""Export step: the shared run's adapter as GGUF (q8_0, f16, LoRA), Ollama, adapter and merged
model, each checked against the tuned model, and what a bad request says. The converter on eight
architectures and the parity machinery are tests/test_export_models.py."""
import json
import shutil
from pathlib import Path

import pytest

from conftest import ROOT, run_cli
from studio.errors import ExportError

pytestmark = pytest.mark.slow


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


def test_the_exported_gguf_is_scored_on_the_same_task(studio, trained_run):
    """#27: the local benchmark on the run's exported GGUF through llama.cpp (the q8_0 of the
    test above) beside the tuned model in transformers: what quantization costs on a benchmark."""
    pytest.importorskip("llama_cpp")
    local = ROOT / "assets" / "eval" / "studio_general"
    out = run_cli("eval", "--run", trained_run["id"], "--tasks", f"studio_general,{local}", "--limit", "10",
                  "--gguf", "--json", home=studio.home.root)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout)["tasks"]["studio_general"]
    assert set(got) == {"base", "tuned", "gguf"} and {"acc", "acc_norm", "acc_stderr"} <= set(got["gguf"])
    # 8-bit codes move a close call now and then: at most 2 of the 10 questions
    assert abs(got["gguf"]["acc"] - got["tuned"]["acc"]) <= 0.2
    assert abs(got["gguf"]["acc_norm"] - got["tuned"]["acc_norm"]) <= 0.2


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

    from studio.models import registry as models

    o = studio.export("ollama", run_id=trained_run["id"], quant="f16", out=str(tmp_path / "ollama"))
    text = Path(o["modelfile"]).read_text()
    assert "\nFROM ./" in text and 'PARAMETER stop "<|im_end|>"' in text
    assert "<|im_start|>assistant" in text and "SYSTEM" in text and "ollama create" in o["use"]["ollama"]
    # the same model and quant exported again: linked, not converted again; checked all the same
    g = studio.export("gguf", run_id=trained_run["id"], quant="f16", out=str(tmp_path / "t.gguf"),
                      verify=True)
    assert g["gguf_from"] == o["gguf"] and g["gguf_linked"] and g["parity"]["passed"]
    assert Path(g["path"]).stat().st_ino == Path(o["gguf"]).stat().st_ino
    assert studio.exports_list(trained_run["id"])[0]["parity"] == g["parity"]
    # a GGUF exported already: the Ollama folder links it (no second copy) and keeps its parity
    stages = []
    o2 = studio.export("ollama", run_id=trained_run["id"], quant="f16", out=str(tmp_path / "o2"),
                       verify=True, progress=lambda f, msg: stages.append(msg))
    assert o2["gguf_linked"] and Path(o2["gguf"]).stat().st_ino == Path(g["path"]).stat().st_ino
    assert o2["parity"] == g["parity"] and not stages                  # nothing converted or checked again
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
    from studio.export import exporter

    a = tmp_path / "dora"
    shutil.copytree(studio.run_show(trained_run["id"])["artifacts"]["adapter"], a)
    cfg = json.loads((a / "adapter_config.json").read_text())
    cfg["use_dora"] = True
    (a / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ExportError, match="DoRA.*merged GGUF"):
        exporter.check_lora(a)
