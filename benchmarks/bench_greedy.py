"""The evaluations' greedy decoding (studio/models/greedy.py) against transformers' generate on the
same batches: the embedded model answers the retention questions (short answers, 20 tokens) and
the sample FAQ's questions (long answers, 48 tokens), with its adapter-free weights and with a
LoRA adapter on (as a report's tuned side does). Each case runs both ways, alternating which goes
first, `--repeats` times; it prints the medians, their ratio and whether every token agreed.

    .venv/bin/python benchmarks/bench_greedy.py [--repeats 3] [--json OUT]
"""
from __future__ import annotations

import argparse
from contextlib import nullcontext
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model

    from studio.models import greedy, registry
    from studio.models.chat import context_of, encode_prompt
    from studio.retention.replay import RETENTION_TOKENS, retention_rows

    folder = registry.prepare_embedded(ROOT / ".venv" / ".test-cache")
    model, tok = registry.load_model(folder), registry.load_tokenizer(folder)
    faq = [json.loads(x) for x in (ROOT / "assets/sample/product_faq.jsonl").read_text().splitlines() if x.strip()]
    cases = {"retention": ([r["question"] for r in retention_rows()], RETENTION_TOKENS),
             "faq": ([r["question"] for r in faq], 48)}
    torch.manual_seed(0)
    tuned = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                             init_lora_weights=False)).eval()
    real = greedy.can_cut_rows
    rows = []
    for side in ("base", "tuned"):
        for name, (questions, n) in cases.items():
            prompts = [encode_prompt(tok, [{"role": "user", "content": q}], context_of(tuned), n)[0]
                       for q in questions]
            times = {"decode": [], "generate": []}
            said = {}
            for k in range(args.repeats):
                for way in (("decode", "generate") if k % 2 == 0 else ("generate", "decode")):
                    greedy.can_cut_rows = real if way == "decode" else (lambda m: False)
                    with (tuned.disable_adapter() if side == "base" else nullcontext()):
                        t = time.perf_counter()
                        said[way] = greedy.greedy_batch(tuned, tok, prompts, n)
                        times[way].append(time.perf_counter() - t)
            greedy.can_cut_rows = real
            d, g = statistics.median(times["decode"]), statistics.median(times["generate"])
            same = sum(a == b for a, b in zip(said["decode"], said["generate"]))
            row = {"side": side, "set": name, "prompts": len(prompts), "max_new_tokens": n,
                   "decode_s": round(d, 2), "generate_s": round(g, 2), "speedup": round(g / d, 2),
                   "same_answers": same, "answer_tokens_mean": round(statistics.mean(len(a) for a in said["decode"]), 1)}
            rows.append(row)
            print(f"{side:5} {name:9} {len(prompts):3} prompts × ≤{n} tokens: decode {d:5.2f} s, "
                  f"generate {g:5.2f} s, {g / d:.2f}× — {same}/{len(prompts)} answers the same", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"repeats": args.repeats, "torch_threads": torch.get_num_threads(),
                                         "rows": rows}, indent=1))
    return 0 if all(r["same_answers"] == r["prompts"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
