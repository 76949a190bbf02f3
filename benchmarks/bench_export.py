"""Export speed and size for each format on the embedded model (CPU): seconds and bytes.
f16 GGUF writing should be I/O-bound: a few seconds for the 135M model.
Usage: .venv/bin/python benchmarks/bench_export.py
"""
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    from studio.api import Studio

    with tempfile.TemporaryDirectory() as d:
        s = Studio()
        s.model_path("smollm2-135m-instruct")
        print(f"{'format':10s} {'quant':7s} {'seconds':>8s} {'MB':>8s}  parity")
        for fmt, quant in [("gguf", "f32"), ("gguf", "f16"), ("gguf", "bf16"), ("gguf", "q8_0"),
                           ("gguf", "q6_k"), ("gguf", "q5_k_m"), ("gguf", "q4_k_m"), ("ollama", "q8_0")]:
            out = Path(d) / f"{fmt}-{quant}{'.gguf' if fmt == 'gguf' else ''}"
            t0 = time.time()
            r = s.export(fmt, model="smollm2-135m-instruct", quant=quant, out=str(out), verify=True)
            p = r["parity"]
            print(f"{fmt:10s} {quant:7s} {r['seconds']:8.2f} {r['bytes'] / 1e6:8.1f}  "
                  f"agree {p['agreement']:.1%}, |Δlogp| {p['mean_abs_dlogprob']:.3f}, "
                  f"{'pass' if p['passed'] else 'FAIL'}  (with check: {time.time() - t0:.1f} s)")


if __name__ == "__main__":
    main()
