"""Training throughput: our trainer (padding-free batches) vs a plain transformers Trainer + PEFT
that pads each batch to its longest example — same model, same mixed-length data, same steps,
measured in this run. Prints real (non-padding) tokens/s of each and the ratio (aim ≥ 1.5× on CPU),
and the chunked loss (the default) against the full-logits loss (aim: within 5%).
Usage: .venv/bin/python benchmarks/bench_train.py [--steps 8] [--batch 8]
"""
import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


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
        loss: str = "full") -> float:
    import torch
    from transformers import Trainer, TrainingArguments

    from studio import models, presets
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
    args = TrainingArguments(output_dir=f"/tmp/bench-train-{label}", max_steps=steps,
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    from studio.api import Studio

    s = Studio()
    path = s.model_path("smollm2-135m-instruct")
    data = dataset(s.tokenizer("smollm2-135m-instruct"), args.steps * args.batch, 256)
    lengths = sorted(len(d["input_ids"]) for d in data)
    print(f"data: {len(data)} examples, {lengths[0]}–{lengths[-1]} tokens (median {lengths[len(data) // 2]})")
    base = run("baseline (pad to longest)", False, path, data, args.steps, args.batch)
    full = run("studio, full-logits loss", True, path, data, args.steps, args.batch, "full")
    ours = run("studio, chunked loss", True, path, data, args.steps, args.batch, "chunked")
    print(f"\nratio studio / baseline: {ours / base:.2f}× (aim ≥ 1.5× on CPU)")
    print(f"chunked / full-logits loss: {ours / full:.3f} (aim ≥ 0.95: no slower)")


if __name__ == "__main__":
    main()
