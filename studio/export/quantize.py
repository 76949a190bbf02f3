"""K-quants (q4_k_m, q5_k_m, q6_k) through llama.cpp's own quantizer in llama-cpp-python.

Owns the quant names and their llama.cpp file types, and calling `llama_model_quantize` on an
f16 GGUF that our writer produced. Raises FeatureUnavailable when llama-cpp-python is absent.
"""
from __future__ import annotations

import ctypes
import os
from pathlib import Path

from ..errors import ExportError
from ..models.registry import require_llama_cpp

# llama.cpp's llama_ftype values (LLAMA_FTYPE_MOSTLY_*)
K_QUANTS = {"q4_k_m": 15, "q5_k_m": 17, "q6_k": 18}


def quantize(src: Path, out: Path, quant: str, threads: int = 0) -> Path:
    require_llama_cpp()
    import llama_cpp

    if quant not in K_QUANTS:
        raise ExportError(f"Unknown k-quant '{quant}'; use one of {', '.join(K_QUANTS)}.")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = K_QUANTS[quant]
    params.nthread = threads or (os.cpu_count() or 2)
    tmp = out.with_name(out.name + f".partial-{os.getpid()}")
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
    if rc != 0 or not tmp.exists():
        tmp.unlink(missing_ok=True)
        raise ExportError(f"llama.cpp could not quantize {src.name} to {quant} (code {rc}).")
    os.replace(tmp, out)
    return out
