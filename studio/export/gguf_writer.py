"""Our GGUF writer, on the `gguf` package: HF weights + tokenizer → a llama.cpp model file.

Owns: the supported architectures (llama-family incl. Mistral and SmolLM2, Qwen2, Gemma 2) and
their hyperparameter keys, HF → GGUF tensor names (gguf's own name map), llama.cpp's rotary
layout for q/k on llama-family models (HF splits each head in halves, GGML interleaves pairs),
Gemma's `1 + weight` norms, dropping a tied lm_head, tokenizer metadata (tokens, types,
merges or scores, pre-tokenizer name, special ids, add_bos, chat template), and writing
f32/f16/bf16/q8_0 through a temp file that is renamed only when complete.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from ..errors import ExportError
from ..faults import crash_point, fail_point

# HF model_type → (gguf arch name, permute q/k for llama.cpp's rotary layout, Gemma norm +1)
ARCHS: dict[str, tuple[str, bool, bool]] = {
    "llama": ("llama", True, False),
    "mistral": ("llama", True, False),
    "qwen2": ("qwen2", False, False),
    "gemma2": ("gemma2", False, True),
}
QUANTS = ("f32", "f16", "bf16", "q8_0")
FILE_TYPE = {"f32": 0, "f16": 1, "q8_0": 7, "bf16": 32}


def check_arch(config: dict[str, Any]) -> tuple[str, bool, bool]:
    mt = config.get("model_type")
    if mt not in ARCHS:
        raise ExportError(f"GGUF export does not support architecture '{mt}'. Supported: "
                          f"{', '.join(sorted(ARCHS))}. You can still export the adapter or the "
                          "merged model (safetensors).")
    return ARCHS[mt]


def rotary_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF rotate-half layout → GGML's interleaved pairs, per head, along the output rows."""
    rows = w.shape[0]
    half = rows // n_head // 2
    return w.reshape(n_head, 2, half, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def head_dim(cfg: dict[str, Any]) -> int:
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def pre_tokenizer(tok_json: dict[str, Any], model_type: str) -> str:
    """llama.cpp's name for how the text is split before BPE, read off tokenizer.json."""
    pre = json.dumps(tok_json.get("pre_tokenizer") or {})
    if '"Digits"' in pre and '"individual_digits": true' in pre and "ByteLevel" in pre:
        return "smollm"
    if "\\\\p{N}{1,3}" in pre:
        return "llama-bpe"
    if model_type == "qwen2" or "\\\\p{N}|" in pre:
        return "qwen2"
    return "default"


def tokenizer_metadata(w, folder: Path, cfg: dict[str, Any]) -> None:
    import gguf

    tj = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    model = tj["model"]
    n_vocab = cfg["vocab_size"]
    added = {t["id"]: t for t in tj.get("added_tokens", [])}
    if model["type"] == "BPE" and not model.get("byte_fallback"):
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre_tokenizer(tj, cfg["model_type"]))
        by_id = {i: t for t, i in model["vocab"].items()}
        by_id.update({i: t["content"] for i, t in added.items()})
        tokens, types = [], []
        for i in range(n_vocab):
            if i in added:
                types.append(gguf.TokenType.CONTROL if added[i].get("special") else gguf.TokenType.USER_DEFINED)
                tokens.append(added[i]["content"])
            elif i in by_id:
                types.append(gguf.TokenType.NORMAL)
                tokens.append(by_id[i])
            else:
                types.append(gguf.TokenType.UNUSED)
                tokens.append(f"[PAD{i}]")
        w.add_token_list(tokens)
        w.add_token_types(types)
        special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=n_vocab)
    else:
        spm_tokens(w, folder, n_vocab, added)
        special = gguf.SpecialVocab(folder, load_merges=False, n_vocab=n_vocab)
    special.add_to_gguf(w, quiet=True)
    if "bos" not in special.add_special_token:  # say it explicitly: llama.cpp's default is to add
        w.add_add_bos_token(adds_bos(folder))
    if model["type"] == "BPE" and not model.get("byte_fallback"):
        w.add_add_space_prefix(False)


def adds_bos(folder: Path) -> bool:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    ids = tok.encode("a", add_special_tokens=True).ids
    return len(ids) > 1 and ids != tok.encode("a", add_special_tokens=False).ids


def spm_tokens(w, folder: Path, n_vocab: int, added: dict[int, dict]) -> None:
    """SentencePiece vocabularies (Llama 2, Mistral, Gemma): pieces, scores and types."""
    import gguf
    from sentencepiece import SentencePieceProcessor

    if not (folder / "tokenizer.model").exists():
        raise ExportError(f"{folder} has a SentencePiece-style tokenizer but no tokenizer.model; "
                          "copy it from the original model folder.")
    sp = SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    tokens, scores, types = [], [], []
    for i in range(n_vocab):
        if i < sp.vocab_size():
            piece, score = sp.id_to_piece(i), sp.get_score(i)
            t = (gguf.TokenType.UNKNOWN if sp.is_unknown(i) else gguf.TokenType.CONTROL if sp.is_control(i)
                 else gguf.TokenType.UNUSED if sp.is_unused(i) else gguf.TokenType.BYTE if sp.is_byte(i)
                 else gguf.TokenType.NORMAL)
        else:
            piece, score, t = f"[PAD{i}]", -1000.0, gguf.TokenType.UNUSED
        if i in added:
            piece = added[i]["content"]
            t = gguf.TokenType.CONTROL if added[i].get("special") else gguf.TokenType.USER_DEFINED
        tokens.append(piece)
        scores.append(score)
        types.append(t)
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString((folder / "tokenizer.model").read_bytes())
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_add_space_prefix(proto.normalizer_spec.add_dummy_prefix)  # Gemma: no, Llama 2: yes
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)


def hyperparameters(w, cfg: dict[str, Any], name: str, quant: str) -> None:
    import gguf

    arch = ARCHS[cfg["model_type"]][0]
    w.add_name(name)
    w.add_type(gguf.GGUFType.MODEL)
    w.add_context_length(cfg.get("max_position_embeddings", 4096))
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg.get("num_key_value_heads", cfg["num_attention_heads"]))
    w.add_layer_norm_rms_eps(cfg.get("rms_norm_eps", 1e-6))
    theta = cfg.get("rope_theta") or (cfg.get("rope_parameters") or {}).get("rope_theta")
    if theta:
        w.add_rope_freq_base(float(theta))
    w.add_file_type(FILE_TYPE[quant])
    if arch == "llama":
        w.add_vocab_size(cfg["vocab_size"])
        w.add_rope_dimension_count(head_dim(cfg))
    if arch == "gemma2":
        scalar = cfg.get("query_pre_attn_scalar", head_dim(cfg))
        if scalar not in (head_dim(cfg), cfg["hidden_size"] // cfg["num_attention_heads"]):
            raise ExportError(f"This Gemma 2 variant scales attention by 1/sqrt({scalar}), which "
                              "llama.cpp cannot express; export the merged model instead.")
        w.add_key_length(head_dim(cfg))
        w.add_value_length(head_dim(cfg))
        if cfg.get("attn_logit_softcapping"):
            w.add_attn_logit_softcapping(cfg["attn_logit_softcapping"])
        if cfg.get("final_logit_softcapping"):
            w.add_final_logit_softcapping(cfg["final_logit_softcapping"])
        if cfg.get("sliding_window"):
            w.add_sliding_window(cfg["sliding_window"])
    scaling = cfg.get("rope_scaling") or {}
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(scaling["factor"])
    elif kind not in (None, "default", "llama3"):
        raise ExportError(f"RoPE scaling '{kind}' is not supported by our GGUF writer yet.")
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)


def llama3_rope_freqs(cfg: dict[str, Any]) -> np.ndarray:
    """Per-frequency divisors for Llama 3.1+ long-context RoPE (llama.cpp's rope_freqs tensor)."""
    s = cfg["rope_scaling"]
    dim, base = head_dim(cfg), float(cfg.get("rope_theta", 500000.0))
    factor, lo, hi = s["factor"], s.get("low_freq_factor", 1.0), s.get("high_freq_factor", 4.0)
    old_ctx = s.get("original_max_position_embeddings", 8192)
    out = []
    for f in 1.0 / base ** (np.arange(0, dim, 2, dtype=np.float64) / dim):
        wavelen = 2 * np.pi / f
        if wavelen < old_ctx / hi:
            out.append(1.0)
        elif wavelen > old_ctx / lo:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - lo) / (hi - lo)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def convert_tensor(name: str, data: np.ndarray, quant: str):
    """(array, raw_dtype) for one tensor: 1-D tensors stay f32, as llama.cpp expects."""
    import gguf

    T = gguf.GGMLQuantizationType
    if data.ndim == 1 or quant == "f32":
        return data.astype(np.float32), None
    if quant == "f16":
        return data.astype(np.float16), None
    if quant == "bf16":
        return gguf.quants.quantize(data.astype(np.float32), T.BF16), T.BF16
    if data.shape[-1] % 32:  # q8_0 blocks are 32 wide; odd rows stay f16
        return data.astype(np.float16), None
    return gguf.quants.quantize(data.astype(np.float32), T.Q8_0), T.Q8_0


def gguf_tensors(cfg: dict[str, Any], state: Iterable[tuple[str, np.ndarray]]) -> Iterable[tuple[str, np.ndarray]]:
    """HF (name, fp32 array) → GGUF (name, array), with permutation, +1 norms and tied heads."""
    import gguf

    arch_name, permute, norm_plus_one = check_arch(cfg)
    arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch_name)
    tmap = gguf.get_tensor_name_map(arch, cfg["num_hidden_layers"])
    n_head = cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads", n_head)
    tied = cfg.get("tie_word_embeddings", False)
    for hf_name, data in state:
        if hf_name.endswith("rotary_emb.inv_freq") or (tied and hf_name == "lm_head.weight"):
            continue
        name = tmap.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ExportError(f"Tensor {hf_name} has no GGUF name for {arch_name}; this model "
                              "variant is not supported by the GGUF export.")
        if permute and hf_name.endswith("q_proj.weight"):
            data = rotary_permute(data, n_head)
        elif permute and hf_name.endswith("k_proj.weight"):
            data = rotary_permute(data, n_kv)
        if norm_plus_one and hf_name.endswith("norm.weight"):
            data = data + 1.0
        yield name, data
    scaling = cfg.get("rope_scaling") or {}
    if scaling.get("rope_type", scaling.get("type")) == "llama3":
        yield "rope_freqs.weight", llama3_rope_freqs(cfg)


@contextmanager
def atomic_writer(out: Path, arch_name: str) -> Iterator[Any]:
    """A GGUFWriter on a temp file: renamed to `out` only when everything was written; on any
    failure the partial file is removed, so nothing that looks complete is ever left behind."""
    import gguf

    tmp = out.with_name(out.name + f".partial-{os.getpid()}")
    w = gguf.GGUFWriter(str(tmp), arch_name)
    try:
        yield w
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file(progress=False)
        w.close()
        fail_point("export.gguf")
        crash_point("export.gguf_partial")
        os.replace(tmp, out)
    except BaseException:
        w.close()
        tmp.unlink(missing_ok=True)
        raise


def write(folder: Path, state: Iterable[tuple[str, np.ndarray]], out: Path, quant: str = "f16",
          name: str | None = None, progress: Callable[[float, str], None] | None = None) -> Path:
    """Write a GGUF for the HF folder's config/tokenizer with the given weights (atomic)."""
    if quant not in QUANTS:
        raise ExportError(f"Unknown quant '{quant}' for the GGUF writer; use one of {', '.join(QUANTS)}.")
    cfg = json.loads((folder / "config.json").read_text())
    cfg = {**cfg.get("text_config", {}), **cfg} if "text_config" in cfg else cfg
    arch_name = check_arch(cfg)[0]
    with atomic_writer(out, arch_name) as w:
        hyperparameters(w, cfg, name or folder.name, quant)
        tokenizer_metadata(w, folder, cfg)
        for i, (gname, data) in enumerate(gguf_tensors(cfg, state)):
            arr, raw = convert_tensor(gname, data, quant)
            if raw is None:
                w.add_tensor(gname, arr)
            else:
                w.add_tensor(gname, arr, raw_dtype=raw)  # shape derived from the byte rows
            if progress and i % 20 == 0:
                progress(0.5, f"converting {gname}")
    return out


def state_from_model(model) -> Iterable[tuple[str, np.ndarray]]:
    """(name, fp32 numpy) from an in-memory transformers model, one tensor at a time."""
    import torch

    for k, v in model.state_dict().items():
        yield k, v.detach().to(torch.float32).cpu().numpy()


def state_from_folder(folder: Path) -> Iterable[tuple[str, np.ndarray]]:
    """(name, fp32 numpy) straight from *.safetensors files, without building the model."""
    from safetensors import safe_open

    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for k in st.keys():
                yield k, st.get_tensor(k).float().numpy()
