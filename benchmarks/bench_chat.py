"""Chat speed on the embedded model, CPU: time to first token and tokens/s for the transformers
engine and the llama.cpp engine (f16 GGUF written by our exporter), plus the memory the
side-by-side adds on top of one model (one weight copy + an adapter, not two models).
Usage: .venv/bin/python benchmarks/bench_chat.py
"""
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
PROMPT = [{"role": "user", "content": "Give me three tips for sleeping better."}]
N = 96


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def hf(model, tok) -> tuple[float, float]:
    from transformers import TextIteratorStreamer

    from studio.chat import GenSettings, generate

    streamer = TextIteratorStreamer(tok, skip_prompt=True)
    out = {}
    t0 = time.time()
    th = threading.Thread(target=lambda: out.update(generate(model, tok, PROMPT, GenSettings(N), streamer)))
    th.start()
    first = None
    for _ in streamer:
        first = first or time.time() - t0
    th.join()
    total = time.time() - t0
    return first, out["tokens"] / total


def llama(path: Path) -> tuple[float, float]:
    from llama_cpp import Llama

    llm = Llama(str(path), n_ctx=1024, verbose=False)
    t0 = time.time()
    first, n = None, 0
    for chunk in llm.create_chat_completion(PROMPT, max_tokens=N, temperature=0, stream=True):
        if chunk["choices"][0]["delta"].get("content"):
            first = first or time.time() - t0
            n += 1
    return first, n / (time.time() - t0)


def main() -> None:
    from peft import get_peft_model

    from studio import models, presets
    from studio.api import Studio
    from studio.compare import Pair
    from studio.export import converter

    s = Studio()
    path = s.model_path("smollm2-135m-instruct")
    model, tok = models.load_model(path), models.load_tokenizer(path)
    one = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    ttft, tps = hf(model, tok)
    print(f"transformers: first token {ttft * 1000:6.0f} ms, {tps:5.1f} tokens/s")
    with tempfile.TemporaryDirectory() as d:
        adapter = Path(d) / "adapter"
        get_peft_model(models.load_model(path), models.lora_config(presets.get_preset("cpu-quickstart").lora)).save_pretrained(adapter)
        mid = rss_mb()
        pair = Pair(model, tok)
        (adapter / ".complete").write_text("ok")
        pair.use("bench", adapter)
        with pair.side("base") as m:
            m.generate(**tok(["hi"], return_tensors="pt"), max_new_tokens=4)
        lora = sum(p.numel() * p.element_size() for n, p in pair.model.named_parameters()
                   if "lora_" in n) / 2**20
        added = max(rss_mb() - mid, lora)
        print(f"memory: one model's weights {one:6.0f} MB; the side-by-side adds {added:5.0f} MB "
              f"(adapter {lora:.0f} MB; {added / one:.0%} of a model, not a second copy)")
        gg = converter.convert_model(path, Path(d) / "m-f16.gguf", "f16")
        try:
            ttft, tps = llama(gg)
            print(f"llama.cpp:    first token {ttft * 1000:6.0f} ms, {tps:5.1f} tokens/s (f16 GGUF)")
        except ImportError:
            print("llama.cpp: llama-cpp-python not installed")


if __name__ == "__main__":
    main()
