"""Export speed and size for each format on the embedded model (CPU): seconds and bytes, parity,
and our GGUF path against running llama.cpp's converter directly on the same folder (aim: our
f16 export ≤ 1.05 × the converter alone; the difference is our checks and the atomic rename).
Usage: .venv/bin/python benchmarks/bench_export.py
"""
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def direct(folder: Path, out: Path) -> float:
    """llama.cpp's converter by hand, as a user would run it."""
    from studio.export import converter

    root = converter.location()
    t0 = time.time()
    subprocess.run([sys.executable, str(root / "convert_hf_to_gguf.py"), str(folder), "--outfile",
                    str(out), "--outtype", "f16"], check=True, capture_output=True,
                   env={"PYTHONPATH": str(root / "gguf-py"), "PATH": "/usr/bin:/bin"})
    return time.time() - t0


def main() -> None:
    from studio.api import Studio

    with tempfile.TemporaryDirectory() as d:
        s = Studio()
        folder = s.model_path("smollm2-135m-instruct")
        ours, theirs = [], []
        for i in range(3):  # alternate, so neither side gets the warm cache
            theirs.append(direct(folder, Path(d) / f"direct-{i}.gguf"))
            t0 = time.time()
            s.export("gguf", model="smollm2-135m-instruct", quant="f16", out=str(Path(d) / f"ours-{i}.gguf"))
            ours.append(time.time() - t0)
        print(f"f16 GGUF of the embedded model: studio {min(ours):.2f} s, llama.cpp converter directly "
              f"{min(theirs):.2f} s → {min(ours) / min(theirs):.2f}× (aim ≤ 1.05×; best of 3 each)\n")
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
