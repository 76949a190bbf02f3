"""Export speed of the studio's f16 GGUF against llama.cpp's converter run directly; then size
and parity of each format.

What it measures (part 1, the ratio): one f16 GGUF of the embedded 135M model written through
the studio (`Studio.export("gguf", model=…, quant="f16")`: checks, loading the model for parity,
llama.cpp's converter in a child process, the atomic rename) against the baseline, llama.cpp's
`convert_hf_to_gguf.py --outtype f16` run directly on the same model folder, as a user would
run it by hand. The same work on both sides: each converts that folder into a new file.
- Every studio repetition exports in a fresh STUDIO_HOME (benchmarks/homes.py: only the model,
  hard-linked), so no earlier export exists for the studio to hard-link instead of converting
  (service.same_gguf); the script asserts that each export converted (no `gguf_from` in the
  result, and the file has one link).
- One untimed export of each side first (imports, the page cache), then --reps repetitions with
  the order alternated (studio, converter, converter, studio, …); it prints the median of each
  side, their spread, and the ratio of the medians (aim ≤ 1.05×).

Part 2 (--formats): every format once, each in a fresh home (an Ollama q8_0 export would
otherwise link the GGUF q8_0 made before it), with the parity check. Its seconds are one run
each, for orientation; the figures to quote are the sizes and parity.

Usage: .venv/bin/python benchmarks/bench_export.py [--reps 5] [--formats]
  smoke check: .venv/bin/python benchmarks/bench_export.py --reps 1
"""
import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from homes import fresh_home, orders, median, spread  # noqa: E402

MODEL = "smollm2-135m-instruct"


def converter_directly(folder: Path, out: Path) -> float:
    """The baseline: llama.cpp's converter by hand, on the same folder (its own gguf-py)."""
    from studio.export import converter

    root = converter.location()
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(root / "convert_hf_to_gguf.py"), str(folder), "--outfile",
                    str(out), "--outtype", "f16"], check=True, capture_output=True,
                   env={"PYTHONPATH": str(root / "gguf-py"), "PATH": "/usr/bin:/bin"})
    secs = time.perf_counter() - t0
    assert out.is_file() and out.stat().st_size > 0, out
    return secs


def converted(r: dict) -> None:
    """The export wrote a new GGUF (never the link to an earlier one that service.same_gguf
    finds): else the benchmark would time a hard link."""
    gguf = Path(r.get("gguf", r["path"]))
    assert "gguf_from" not in r and not r.get("gguf_linked"), f"linked, not converted: {r}"
    assert gguf.stat().st_nlink == 1, f"{gguf} has {gguf.stat().st_nlink} links: not a new file"


def studio_export(work: Path, quant: str = "f16", fmt: str = "gguf", verify: bool = False) -> dict:
    """One export through the studio, in a home of its own; the facade is built before the
    clock starts (it opens the store and reconciles the home, not part of an export)."""
    from studio.api import Studio

    home = fresh_home(work, "studio")
    s = Studio(home)
    out = home / f"{fmt}-{quant}{'.gguf' if fmt == 'gguf' else ''}"
    t0 = time.perf_counter()
    r = s.export(fmt, model=MODEL, quant=quant, out=str(out), verify=verify)
    r["wall"] = time.perf_counter() - t0
    converted(r)
    shutil.rmtree(home)  # ≈270 MB a repetition; nothing of it is read again
    return r


def speed(work: Path, reps: int) -> None:
    folder = fresh_home(work, "converter") / "models" / MODEL  # the same files the studio reads
    studio_export(work)  # untimed: imports, and the model's files into the page cache
    converter_directly(folder, work / "direct.gguf")
    (work / "direct.gguf").unlink()
    times: dict[str, list[float]] = {"studio": [], "converter": []}
    for i, order in enumerate(orders(reps, ["studio", "converter"])):
        for side in order:
            if side == "studio":
                times[side].append(studio_export(work)["wall"])
            else:
                times[side].append(converter_directly(folder, work / "direct.gguf"))
                (work / "direct.gguf").unlink()
        print(f"  repetition {i + 1}: " + ", ".join(f"{side} {times[side][-1]:.2f} s" for side in order),
              flush=True)
    ours, theirs = median(times["studio"]), median(times["converter"])
    print(f"f16 GGUF of the embedded model, each studio export in a fresh home (converted, never "
          f"linked), order alternated:\n  studio    {spread(times['studio'])} s\n"
          f"  converter {spread(times['converter'])} s (llama.cpp's convert_hf_to_gguf.py directly, "
          f"same folder)\n  ratio of medians studio / converter: {ours / theirs:.2f}× (aim ≤ 1.05×)\n")


def formats(work: Path) -> None:
    print(f"{'format':10s} {'quant':7s} {'seconds':>8s} {'MB':>8s}  parity   (one run each, fresh home)")
    for fmt, quant in [("gguf", "f32"), ("gguf", "f16"), ("gguf", "bf16"), ("gguf", "q8_0"),
                       ("gguf", "q6_k"), ("gguf", "q5_k_m"), ("gguf", "q4_k_m"), ("ollama", "q8_0")]:
        r = studio_export(work, quant, fmt, verify=True)
        p = r["parity"]
        print(f"{fmt:10s} {quant:7s} {r['seconds']:8.2f} {r['bytes'] / 1e6:8.1f}  "
              f"agree {p['agreement']:.1%}, |Δlogp| {p['mean_abs_dlogprob']:.3f}, "
              f"{'pass' if p['passed'] else 'FAIL'}  (with check: {r['wall']:.1f} s)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions of each side (≥ 3 for a "
                    "figure to quote; 1 checks the script)")
    ap.add_argument("--formats", action="store_true", help="also every format once, with parity")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-export-") as d:
        speed(Path(d), args.reps)
        if args.formats:
            formats(Path(d))
    if args.reps < 3:
        print(f"(--reps {args.reps}: a check of the script, not a figure to quote)")


if __name__ == "__main__":
    main()
