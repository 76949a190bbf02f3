"""Does dropping the rows the data check flags pay off? Issue #43's payoff, measured three ways.

Per seed: the sample FAQ (assets/sample/product_faq.jsonl, 80 rows) with 20% of its answers
swapped between rows (bench_checks.swapped: the check's recall set-up, as CLEAR corrupts data).
The held-out set is the sample's 24 paraphrased questions (assets/sample/product_faq_heldout.jsonl),
a separate file written before any check, never trained on. Three arms, each trained from the
same preset, seed and steps, in one fresh home per seed (the base model's cached answers are the
same for every arm):
  noisy    — every row, swapped ones included;
  flagged  — the rows the check flags as suspects dropped (`data_drop(..., "suspects")`, the
             Data step's "drop these");
  random   — the same number of rows dropped at random (seeded), so a gain of `flagged` over
             `random` is the check's, not fewer rows'.
Each arm's kept adapter (the run's own choice) answers, greedy, 48 tokens, in transformers:
  fact     — the held-out paraphrases' fact match (scoring.score: the expected fact stated);
  parrots  — of the swapped rows' questions (training questions, asked as trained), the share
             whose answer states every key fact of the wrong answer the noisy set gives them (it
             learned the corruption); true_on_swapped — the share stating the right answer's.
  swapped_trained — how many swapped rows each arm still trains on (flagged: the check's misses).
The arms' order rotates with the seed, so none always runs first.

Usage: .venv/bin/python benchmarks/bench_payoff.py [--seeds 42,7,1] [--steps N] [--preset P] [--out F.json]
"""
import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from bench_checks import SAMPLE, swapped
from homes import ROOT, embedded_model, fresh_home

HELDOUT = ROOT / "assets" / "sample" / "product_faq_heldout.jsonl"
ARMS = ["noisy", "flagged", "random"]


def read(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_ref(studio, ref: str) -> list[dict]:
    """A dataset version's training rows as question/answer (its messages' user and assistant)."""
    from studio.data.prepare import read_split

    out = []
    for ex in read_split(Path(studio.dataset(ref)["path"]), "train"):
        m = {t["role"]: t["content"] for t in ex.get("messages", [])}
        out.append({"question": m.get("user"), "answer": m.get("assistant")})
    return out


def datasets(studio, tmp: Path, rows: list[dict], seed: int):
    """The three arms' dataset refs, the swapped rows (indexes), how many rows were dropped and
    how many swapped rows each arm still trains on."""
    noisy, bad = swapped(rows, 0.2, seed)
    studio.data_prepare([str(write(tmp / f"noisy-{seed}.jsonl", noisy))], "noisy", val_fraction=0)
    if not studio.data_check("noisy")["suspects"]:
        raise SystemExit(f"seed {seed}: the check flagged no row, so there is no flagged arm to train")
    dropped = studio.data_drop("noisy", "suspects")
    kept_ref = dropped.get("ref") or dropped.get("name")
    n_drop = len(rows) - studio.dataset(kept_ref)["records"]
    # a generator of its own: Random(seed) would draw the very rows swapped() swapped first
    keep = sorted(random.Random(f"drop-{seed}").sample(range(len(rows)), len(rows) - n_drop))
    studio.data_prepare([str(write(tmp / f"random-{seed}.jsonl", [noisy[i] for i in keep]))], "random",
                        val_fraction=0)
    kept_bad = {"noisy": len(bad), "random": len(bad & set(keep)),
                "flagged": len({noisy[i]["question"] for i in bad} & {r["question"] for r in read_ref(studio, kept_ref)})}
    return {"noisy": "noisy@v1", "flagged": kept_ref, "random": "random@v1"}, sorted(bad), n_drop, kept_bad


def judge(studio, run: dict, heldout: list[dict], trained_wrong: list[dict]) -> dict:
    from peft import PeftModel

    from studio.models import registry as models
    from studio.models.chat import generate_batch
    from studio.paths import adapter_dir
    from studio.scoring import key_facts, score, states

    path = studio.model_path(run["model"])
    model = PeftModel.from_pretrained(models.load_model(path, "cpu", "fp32"), str(adapter_dir(run))).eval()
    tok = models.load_tokenizer(path)
    ask = lambda qs: generate_batch(model, tok, [[{"role": "user", "content": q}] for q in qs], 48)
    fact = score(ask([r["question"] for r in heldout]), heldout)["fact_match"]
    said = ask([r["question"] for r in trained_wrong])
    wrong = [key_facts(r["answer"], r["question"]) for r in trained_wrong]
    right = [key_facts(r["true"], r["question"]) for r in trained_wrong]
    judged = [(a, w, t) for a, w, t in zip(said, wrong, right) if w and t]
    parrots = sum(all(states(a, x) for x in w) for a, w, _ in judged) / max(1, len(judged))
    true = sum(all(states(a, x) for x in t) for a, _, t in judged) / max(1, len(judged))
    return {"fact": round(fact, 4), "parrots": round(parrots, 4), "true_on_swapped": round(true, 4),
            "wrong_judged": len(judged)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="42,7,1")
    ap.add_argument("--steps", type=int, default=None, help="default: the preset's own")
    ap.add_argument("--preset", default="cpu-quickstart")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    embedded_model()
    from studio.api import Studio

    rows, heldout = read(SAMPLE), read(HELDOUT)
    seeds = [int(s) for s in a.seeds.split(",")]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, seed in enumerate(seeds):
            studio = Studio(fresh_home(Path(tmp), f"payoff-{seed}"))
            refs, bad, n_drop, kept_bad = datasets(studio, Path(tmp), rows, seed)
            noisy = swapped(rows, 0.2, seed)[0]
            order = ARMS[k % 3:] + ARMS[:k % 3]
            for arm in order:
                t0 = time.time()
                run = studio.train_create(a.preset, refs[arm], overrides=[f"train.seed={seed}"], max_steps=a.steps)
                studio.train_run(run["id"])
                run = studio.run_show(run["id"])
                got = judge(studio, run, heldout, [{**noisy[i], "true": rows[i]["answer"]} for i in bad])
                r = {"seed": seed, "arm": arm, "rows": studio.dataset(refs[arm])["records"],
                     "dropped": 0 if arm == "noisy" else n_drop, "swapped": len(bad),
                     "swapped_trained": kept_bad[arm], **got,
                     "seconds": round(time.time() - t0, 1)}
                out.append(r)
                print(json.dumps(r), flush=True)
    for arm in ARMS:
        mine = [r for r in out if r["arm"] == arm]
        print(f"{arm:8s} fact match {sum(r['fact'] for r in mine) / len(mine):.1%} "
              f"({', '.join(format(r['fact'], '.0%') for r in mine)}); repeats the swapped answer "
              f"{sum(r['parrots'] for r in mine) / len(mine):.1%} ({', '.join(format(r['parrots'], '.0%') for r in mine)})")
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    sys.exit(main())
