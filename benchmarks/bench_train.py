"""Training throughput: our trainer (padding-free batches) against a plain transformers Trainer +
PEFT that pads each batch to its longest example (the baseline) — the same model, the same
mixed-length examples in the same order, the same steps and batch size, on this CPU.

Three sides, each a fresh model load and a fresh Trainer (loading untimed): the baseline, the
studio with the full-logits loss, the studio with the chunked loss (the default). --reps
repetitions, the order alternated (baseline, full, chunked; then chunked, full, baseline; …), so
no side always runs first. Prints real (non-padding) tokens/s per run, the median of each side,
the ratio of medians studio (chunked) / baseline (aim ≥ 1.5× on CPU), and chunked / full-logits
(aim ≥ 0.95: no slower).

Usage: .venv/bin/python benchmarks/bench_train.py [--steps 8] [--batch 8] [--reps 3]
  smoke check: .venv/bin/python benchmarks/bench_train.py --steps 1 --batch 2 --reps 1
"""
import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from homes import embedded_model, median, orders, spread  # noqa: E402


def dataset(tok, n: int, max_len: int):
    """FAQ pairs (short) mixed with manual chunks (long): lengths from ~50 to ~max_len tokens."""
    import json

    from studio.data import chunking, templates

    faq = [json.loads(x) for x in (ROOT / "assets/sample/product_faq.jsonl").read_text().splitlines()]
    long = chunking.paragraphs(tok, (ROOT / "assets/sample/nimbus_orbit_manual.md").read_text(), max_len - 40)
    rnd = random.Random(0)
    out = []
    for i in range(n):
        if i % 3 == 2:
            ex = {"messages": [{"role": "user", "content": "Quote the manual."},
                               {"role": "assistant", "content": rnd.choice(long)}]}
        else:
            r = rnd.choice(faq)
            ex = {"messages": [{"role": "user", "content": r["question"]},
                               {"role": "assistant", "content": r["answer"]}]}
        e = templates.encode(tok, ex, max_len)
        out.append({"input_ids": e.input_ids, "labels": e.labels})
    return out


def run(label: str, packing: bool, model_path: Path, data, steps: int, batch: int,
        loss: str, work: Path) -> float:
    import torch
    from transformers import Trainer, TrainingArguments

    from studio import presets
    from studio.models import registry as models
    from studio.train.batches import make_collator
    from studio.train.loop import load_for_training
    from studio.train.trainer import trainer_class

    torch.manual_seed(0)
    tok = models.load_tokenizer(model_path)
    p = presets.get_preset("cpu-quickstart")
    if packing:
        model = load_for_training(model_path, "cpu", p)
    else:  # the stock recipe: PEFT on the model, pad to the longest example of each batch
        from peft import get_peft_model

        model = get_peft_model(models.load_model(model_path, "cpu", "fp32"), models.lora_config(p.lora))
    collator = make_collator(tok, packing)
    args = TrainingArguments(output_dir=str(work / "out"), max_steps=steps,
                             per_device_train_batch_size=batch, learning_rate=1e-4, report_to=[],
                             use_cpu=True, save_strategy="no", logging_steps=1000, disable_tqdm=True,
                             remove_unused_columns=False, dataloader_num_workers=0, seed=0)
    trainer = trainer_class(Trainer, loss, 1024)(model=model, args=args, train_dataset=data,
                                                  data_collator=collator)
    t0 = time.time()
    trainer.train()
    secs = time.time() - t0
    tps = collator.tokens / secs
    print(f"{label:28s} {steps} steps × {batch}: {collator.tokens:6d} real tokens in {secs:6.1f} s "
          f"= {tps:6.1f} tokens/s")
    return tps


SIDES = {  # name → (padding-free, loss)
    "baseline (pad to longest)": (False, "full"),
    "studio, full-logits loss": (True, "full"),
    "studio, chunked loss": (True, "chunked"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3, help="runs of each side (≥ 3 for a figure to quote)")
    args = ap.parse_args()
    from studio.models import registry as models

    path = embedded_model()
    data = dataset(models.load_tokenizer(path), args.steps * args.batch, 256)
    lengths = sorted(len(d["input_ids"]) for d in data)
    print(f"data: {len(data)} examples, {lengths[0]}–{lengths[-1]} tokens (median {lengths[len(data) // 2]})")
    tps: dict[str, list[float]] = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as d:
        for i, order in enumerate(orders(args.reps, list(SIDES))):
            print(f"repetition {i + 1}:")
            for side in order:
                packing, loss = SIDES[side]
                tps[side].append(run(side, packing, path, data, args.steps, args.batch, loss, Path(d)))
    print()
    for side, xs in tps.items():
        print(f"{side:28s} tokens/s {spread(xs, '{:.1f}')}")
    base, full, ours = (median(tps[side]) for side in SIDES)
    print(f"\nratio of medians studio (chunked) / baseline: {ours / base:.2f}× (aim ≥ 1.5× on CPU)")
    print(f"ratio of medians chunked / full-logits loss: {ours / full:.3f} (aim ≥ 0.95: no slower)")
    if args.reps < 3:
        print(f"(--reps {args.reps}: a check of the script, not a figure to quote)")


if __name__ == "__main__":
    main()
