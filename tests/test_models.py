"""Model registry: resolving references, facts without torch, and the bad inputs users make."""
import pytest

from studio.models import registry as models
from studio.errors import ModelError


def test_embedded_info_from_gguf_without_conversion(tmp_path):
    spec = models.resolve("smollm2-135m-instruct", tmp_path)
    info = models.info(spec)
    assert info["prepared"] is False and info["architecture"] == "llama"
    assert info["params"] == 134_515_008 and info["layers"] == 30 and info["kv_heads"] == 3
    assert info["chat_template"] is True and info["vocab_size"] == 49152


def test_embedded_info_after_conversion(studio):
    info = studio.model_info("smollm2-135m-instruct")
    assert info["prepared"] is True and info["architecture"] == "LlamaForCausalLM"
    assert info["params"] == 134_515_008 and info["hidden_size"] == 576
    assert info["heads"] == 9 and info["context_length"] == 8192 and info["chat_template"]
    assert info["size_bytes"] > 500e6


def test_conversion_is_atomic(tmp_path, embedded_model_dir):
    # A folder without the completion mark is a killed conversion: never trusted.
    half = tmp_path / "smollm2-135m-instruct"
    half.mkdir()
    (half / "config.json").write_text("{}")
    assert models.info(models.resolve("smollm2-135m-instruct", tmp_path))["prepared"] is False
    assert (embedded_model_dir / models.COMPLETE_MARK).exists()


def test_unknown_name_suggests(tmp_path):
    with pytest.raises(ModelError) as e:
        models.resolve("smollm2-135m-instruc", tmp_path)
    assert "Did you mean: smollm2-135m-instruct" in str(e.value)


def test_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hi")
    with pytest.raises(ModelError, match="no config.json"):
        models.resolve(str(tmp_path / "notes"), tmp_path)
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "config.json").write_text("{}")
    (tmp_path / "pickled" / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match="pickle"):
        models.resolve(str(tmp_path / "pickled"), tmp_path)


def test_missing_and_corrupt_gguf(tmp_path):
    with pytest.raises(ModelError, match="Unknown model"):
        models.resolve(str(tmp_path / "missing.gguf"), tmp_path)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all")
    with pytest.raises(ModelError, match="not a GGUF file"):
        models.resolve(str(bad), tmp_path)
    truncated = tmp_path / "trunc.gguf"
    truncated.write_bytes(models.embedded_gguf().read_bytes()[:5000])
    spec = models.resolve(str(truncated), tmp_path)
    with pytest.raises(ModelError, match="damaged GGUF"):
        models.info(spec)
    other = tmp_path / "weights.bin"
    other.write_bytes(b"x")
    with pytest.raises(ModelError, match="not a .gguf"):
        models.resolve(str(other), tmp_path)


def test_hub_offline_fails_fast(tmp_path, monkeypatch):
    """Offline (HF_HUB_OFFLINE=1) and not cached: refused without trying the network — no
    connection is opened, so nothing waits for a timeout."""
    import socket

    tried = []
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: tried.append(a) or socket.socket())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    spec = models.resolve("someorg/some-model", tmp_path)
    assert spec.kind == "hub"
    with pytest.raises(ModelError, match="offline"):
        models.ensure_local(spec, tmp_path)
    assert tried == []
    assert "not downloaded yet" in models.info(spec)["about"]   # described, not an error
    assert tried == []


def test_local_gguf_file_info():
    spec = models.resolve(str(models.embedded_gguf()), models.embedded_gguf().parent)
    assert spec.kind == "gguf" and models.info(spec)["params"] == 134_515_008


def test_device_and_qlora_support(monkeypatch):
    """The device follows what torch finds (CUDA, then Apple's MPS, then the CPU) unless one is
    named; llama.cpp is offered exactly when llama-cpp-python is installed."""
    import importlib.util

    import torch

    assert models.detect_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert models.detect_device() == models.detect_device("auto") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert models.detect_device() == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert models.detect_device() == "cpu"
    assert models.qlora_supported("mps")[0] is False
    find = importlib.util.find_spec
    assert models.llama_cpp_available()[0] is (find("llama_cpp") is not None)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else find(name, *a))
    ok, why = models.llama_cpp_available()
    assert not ok and "llama-cpp-python is not installed" in why


@pytest.mark.slow
def test_embedded_model_answers_paris(base_model):
    import torch

    model, tok = base_model
    enc = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=24, do_sample=False)
    answer = tok.decode(out[0][enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer


# ---- hub models (#16): each failure a message before any download -------------------------
class _Sibling:
    def __init__(self, name, size=1000):
        self.rfilename, self.size = name, size


@pytest.mark.parametrize("error,files,match", [
    ("GatedRepoError", None, "is gated: accept its licence.*HF_TOKEN"),
    ("RepositoryNotFoundError", None, "no model 'org/name' on the hub.*spelling"),
    (None, ["config.json", "pytorch_model.bin"], "no safetensors weights on the hub \\(only pickle files\\)"),
])
def test_hub_model_problems_are_said_before_download(monkeypatch, tmp_path, error, files, match):
    import huggingface_hub

    from studio.models import hub
    from studio.errors import ModelError

    class Info:
        siblings = [_Sibling(f) for f in files or []]
        sha = "0" * 40

    def model_info(self, *a, **k):
        if error:
            raise type(error, (Exception,), {})("boom")
        return Info()

    monkeypatch.setattr(hub, "cached", lambda repo: None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("must not download")))
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    monkeypatch.setattr(hub, "reachable", lambda: True)
    with pytest.raises(ModelError, match=match):
        hub.download("org/name")


def test_hub_model_offline_and_not_cached(monkeypatch):
    from studio.models import hub
    from studio.errors import ModelError

    monkeypatch.setattr(hub, "cached", lambda repo: None)
    monkeypatch.setattr(hub, "reachable", lambda: False)
    with pytest.raises(ModelError, match="offline"):
        hub.download("org/name")


def test_hub_download_picks_files_reports_bytes_and_resumes(monkeypatch, tmp_path):
    """Only the files a model needs (no pickle, no subfolders, no duplicate consolidated
    weights); progress in bytes over all files, counting what a partial file already had."""
    import huggingface_hub

    from studio.models import hub

    files = [_Sibling("config.json", 1000), _Sibling("model-00001-of-00002.safetensors", 6_000_000),
             _Sibling("model-00002-of-00002.safetensors", 3_000_000), _Sibling("tokenizer.json", 2000),
             _Sibling("consolidated.safetensors", 9_000_000), _Sibling("pytorch_model.bin", 9_000_000),
             _Sibling("original/params.json", 100), _Sibling("README.md", 100)]

    class Info:
        siblings, sha = files, "a" * 40

    fetched = []

    def fake_download(repo, name, revision=None, token=None, tqdm_class=None):
        size = next(s.size for s in files if s.rfilename == name)
        resumed = size // 2 if name.startswith("model-00001") else 0   # a partial file from before
        bar = tqdm_class(total=size, initial=resumed, unit="B")
        for _ in range(4):
            bar.update((size - resumed) // 4)
        fetched.append(name)
        (tmp_path / name).write_text("x")
        return str(tmp_path / name)

    monkeypatch.setattr(hub, "cached", lambda repo: None)
    monkeypatch.setattr(hub, "reachable", lambda: True)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, *a, **k: Info())
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    said = []
    assert hub.download("org/name", progress=said.append) == tmp_path
    assert sorted(fetched) == ["config.json", "model-00001-of-00002.safetensors",
                               "model-00002-of-00002.safetensors", "tokenizer.json"]
    assert fetched[0] == "config.json"                        # small files first: fails fast
    assert "0.01 GB in 4 files" in said[0]
    assert said[-1].startswith("Downloading org/name: 0.01 of 0.01 GB (100%)")


def test_catalogue_names_download_from_the_hub_and_describe_before(tmp_path, monkeypatch):
    from studio.models import hub
    from studio.models import registry as models

    spec = models.resolve("Qwen3-0.6B".lower(), tmp_path)
    assert (spec.kind, spec.ref, spec.name) == ("hub", "Qwen/Qwen3-0.6B", "qwen3-0.6b")
    monkeypatch.setattr(hub, "cached", lambda repo: None)
    info = models.info(spec)
    assert info["architecture"] == "qwen3" and info["layers"] == 28 and "not downloaded yet" in info["about"]
    names = [m["name"] for m in models.list_models(tmp_path)]
    assert len(names) == len(set(names)) and "gemma-3-1b" in names
