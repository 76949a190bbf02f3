"""Chat speed on the embedded model, CPU, and the memory Compare's side-by-side adds.

1. Engines, the same work on both sides: the same prompt answered greedily with up to N new
   tokens by transformers (studio.chat.generate, the fp32 model) and by llama.cpp (an f16 GGUF of
   the same model, written by llama.cpp's converter): time to first token and tokens/s.
   Each engine is loaded once and answers once untimed, before the clock; --reps repetitions, order alternated
   (transformers, llama.cpp, llama.cpp, transformers, …); medians printed.
2. Memory: Compare keeps one copy of the weights and toggles an adapter on it (compare.Pair),
   instead of loading a second model. Printed: the process's RSS growth, measured, from before
   the Pair took the adapter to after it answered once on the base side — and, separately, the
   adapter's size on disk (a file size, not a measurement of memory). It runs in a process of
   its own, and the adapter is made in another, so the measuring process never held a second
   model (or llama.cpp) whose freed memory could hide the growth. The plain model answers once before the first reading, so generation's own one-time
   buffers are not counted as the side-by-side's.

Usage: .venv/bin/python benchmarks/bench_chat.py [--reps 3]
  smoke check: .venv/bin/python benchmarks/bench_chat.py --reps 1 --tokens 8
"""
import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from homes import embedded_model, median, orders, spread  # noqa: E402

PROMPT = [{"role": "user", "content": "Give me three tips for sleeping better."}]


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def hf(model, tok, n: int) -> tuple[float, float]:
    from transformers import TextIteratorStreamer

    from studio.models.chat import GenSettings, generate

    streamer = TextIteratorStreamer(tok, skip_prompt=True)
    out = {}
    t0 = time.perf_counter()
    th = threading.Thread(target=lambda: out.update(generate(model, tok, PROMPT, GenSettings(n), streamer)))
    th.start()
    first = None
    for _ in streamer:
        first = first or time.perf_counter() - t0
    th.join()
    return first, out["tokens"] / (time.perf_counter() - t0)


def llama(llm, n: int) -> tuple[float, float]:
    llm.reset()  # no prompt cache from the repetition before
    t0 = time.perf_counter()
    first, count = None, 0
    for chunk in llm.create_chat_completion(PROMPT, max_tokens=n, temperature=0, stream=True):
        if chunk["choices"][0]["delta"].get("content"):
            first = first or time.perf_counter() - t0
            count += 1
    return first, count / (time.perf_counter() - t0)


def make_adapter(folder: str, out: str) -> None:
    """The cpu-quickstart preset's LoRA adapter, untrained (its size is what matters)."""
    from peft import get_peft_model

    from studio import presets
    from studio.models import registry as models

    lora = models.lora_config(presets.get_preset("cpu-quickstart").lora)
    get_peft_model(models.load_model(Path(folder)), lora).save_pretrained(out)
    (Path(out) / ".complete").write_text("ok")


def speed(model, tok, gguf: Path, reps: int, n: int) -> None:
    from llama_cpp import Llama

    from studio.models.registry import llama_threads

    llm = Llama(str(gguf), n_ctx=1024, verbose=False, n_threads=llama_threads())
    hf(model, tok, 4), llama(llm, 4)  # untimed: each engine's one-time start-up
    got: dict[str, dict[str, list[float]]] = {e: {"first": [], "tps": []} for e in ("transformers", "llama.cpp")}
    for i, order in enumerate(orders(reps, list(got))):
        for engine in order:
            first, tps = hf(model, tok, n) if engine == "transformers" else llama(llm, n)
            got[engine]["first"].append(first)
            got[engine]["tps"].append(tps)
        print(f"  repetition {i + 1}: " + ", ".join(
            f"{e} {got[e]['first'][-1] * 1000:.0f} ms, {got[e]['tps'][-1]:.1f} tok/s" for e in order), flush=True)
    for e, g in got.items():
        print(f"{e:12s} first token {spread([x * 1000 for x in g['first']], '{:.0f}')} ms; "
              f"{spread(g['tps'], '{:.1f}')} tokens/s")
    print(f"llama.cpp (f16 GGUF) / transformers (fp32), medians: tokens/s "
          f"{median(got['llama.cpp']['tps']) / median(got['transformers']['tps']):.1f}×, first token "
          f"{median(got['transformers']['first']) / median(got['llama.cpp']['first']):.1f}× sooner\n")


def memory(folder: Path, work: Path) -> None:
    """Run in a process of its own (main starts it): nothing else has grown it."""
    from studio.models import registry as models
    from studio.evaluate.compare import Pair

    adapter = work / "adapter"
    subprocess.run([sys.executable, __file__, "--make-adapter", str(folder), str(adapter)], check=True)
    model, tok = models.load_model(folder), models.load_tokenizer(folder)
    one = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    model.generate(**tok(["hi"], return_tensors="pt"), max_new_tokens=4)  # generation's own buffers first
    before = rss_mb()
    pair = Pair(model, tok)
    pair.use("bench", adapter)
    with pair.side("base") as m:
        m.generate(**tok(["hi"], return_tensors="pt"), max_new_tokens=4)
    grew = rss_mb() - before
    files = sum(f.stat().st_size for f in adapter.rglob("*") if f.is_file()) / 2**20
    print(f"memory: one model's weights {one:.0f} MB (parameter bytes); the side-by-side grew this "
          f"process's RSS by {grew:.0f} MB, measured ({grew / one:.0%} of those weights)")
    print(f"        the adapter's files on disk: {files:.1f} MB (a file size, not a memory measurement)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=96, help="new tokens per answer")
    args = ap.parse_args()
    from studio.models import registry as models
    from studio.export import converter

    folder = embedded_model()
    model, tok = models.load_model(folder), models.load_tokenizer(folder)
    with tempfile.TemporaryDirectory(prefix="bench-chat-") as d:
        try:
            gguf = converter.convert_model(folder, Path(d) / "m-f16.gguf", "f16")
            speed(model, tok, gguf, args.reps, args.tokens)
        except ImportError:
            print("llama.cpp: llama-cpp-python not installed")
        # a process of its own; the Pair would also put the adapter into `model` used above
        subprocess.run([sys.executable, __file__, "--memory", str(folder), d], check=True)
    if args.reps < 3:
        print(f"(--reps {args.reps}: a check of the script, not a figure to quote)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--make-adapter"]:
        make_adapter(sys.argv[2], sys.argv[3])
    elif sys.argv[1:2] == ["--memory"]:
        memory(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        main()
