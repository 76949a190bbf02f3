"""The dataset Check against issue #43's targets: swapped answers found, clean rows left alone,
and the whole check on 1,000 rows in time.

1. Recall: the sample FAQ (assets/sample/product_faq.jsonl, 80 rows) with 20% of its rows'
   answers swapped among themselves (as CLEAR corrupts data: a seeded derangement, only between
   rows whose answers differ, so every swapped row really is wrong), prepared in a fresh home and
   checked with the base model. Aims: ≥ 70% of the swapped rows among the flagged (any suspect
   reason), ≤ 15% of the clean rows flagged. Repeated over --seeds corruptions.
2. Time: 1,000 FAQ-like rows (the sample's rows with its product name replaced by others; a
   question that names no product says which it is about, so every row is distinct) checked end to end through the CLI's path (`Studio.data_check`, model load
   included; the prepare before it is not timed). Aim ≤ 60 s on 2 cores.

Usage: .venv/bin/python benchmarks/bench_checks.py [--seeds 3] [--rows 1000] [--skip-time]   (--seeds 0: the timing alone)
"""
import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from homes import ROOT, embedded_model, fresh_home

SAMPLE = ROOT / "assets" / "sample" / "product_faq.jsonl"
PRODUCTS = ["Nimbus Orbit", "Cirrus Nest", "Stratus Perch", "Aurora Feeder", "Zephyr Roost",
            "Halcyon Dish", "Boreal Tray", "Lumen Hopper", "Tern Station", "Kestrel Post",
            "Solstice Cup", "Marlin Bowl", "Quill Tower"]


def swapped(rows: list[dict], share: float, seed: int) -> tuple[list[dict], set[int]]:
    """Rows with `share` of their answers moved to other rows (a derangement among them)."""
    rng = random.Random(seed)
    pick = rng.sample(range(len(rows)), int(round(share * len(rows))))
    for _ in range(1000):
        moved = pick[:]
        rng.shuffle(moved)
        if all(rows[a]["answer"] != rows[b]["answer"] for a, b in zip(pick, moved)):
            break
    out = [dict(r) for r in rows]
    for a, b in zip(pick, moved):
        out[a]["answer"] = rows[b]["answer"]
    return out, set(pick)


def recall(studio, rows: list[dict], seed: int, tmp: Path) -> dict:
    noisy, bad = swapped(rows, 0.2, seed)
    f = tmp / f"faq-swapped-{seed}.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in noisy))
    studio.data_prepare([str(f)], f"swap{seed}", val_fraction=0)
    t0 = time.time()
    out = studio.data_check(f"swap{seed}")
    flagged = {e["line"] - 1 for e in out["suspects"]}
    clean = set(range(len(rows))) - bad
    return {"seed": seed, "swapped": len(bad), "swapped_flagged": len(bad & flagged),
            "recall": round(len(bad & flagged) / len(bad), 3),
            "clean_flagged": len(clean & flagged), "clean_share": round(len(clean & flagged) / len(clean), 3),
            "seconds": round(time.time() - t0, 1)}


def variant(row: dict, product: str) -> dict:
    """A sample row about another product; a question that names no product says which it asks
    about, so no two rows are the same (prepare would drop the copies and fewer rows be timed)."""
    q, a = (row[k].replace("Nimbus Orbit", product) for k in ("question", "answer"))
    return {"question": q if product in q else f"{q} (I have the {product}.)", "answer": a}


def timing(studio, rows: list[dict], n: int, tmp: Path) -> dict:
    many = [variant(r, p) for p in PRODUCTS for r in rows][:n]
    assert len({json.dumps(r) for r in many}) == len(many), "the timed rows must all differ"
    f = tmp / "faq-1000.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in many))
    studio.data_prepare([str(f)], "big", val_fraction=0.1)
    t0 = time.time()
    out = studio.data_check("big", progress=lambda frac, msg: None)
    return {"rows": out["rows"], "seconds": round(time.time() - t0, 1),
            "suspects": len(out["suspects"]), "duplicates": len(out["duplicates"])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--skip-time", action="store_true")
    a = ap.parse_args()
    embedded_model()
    from studio.api import Studio

    rows = [json.loads(x) for x in SAMPLE.read_text().splitlines() if x.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        studio = Studio(fresh_home(Path(tmp)))
        results = [recall(studio, rows, seed, Path(tmp)) for seed in range(a.seeds)]
        for r in results:
            print(json.dumps(r), flush=True)
        n_bad = sum(r["swapped"] for r in results)
        n_clean = sum(len(rows) - r["swapped"] for r in results)
        if results:  # --seeds 0: the timing alone
            print(f"recall {sum(r['swapped_flagged'] for r in results) / n_bad:.1%} of swapped rows "
                  f"(aim ≥ 70%); clean rows flagged {sum(r['clean_flagged'] for r in results) / n_clean:.1%} "
                  "(aim ≤ 15%)", flush=True)
        if not a.skip_time:
            t = timing(studio, rows, a.rows, Path(tmp))
            print(json.dumps(t))
            print(f"{t['rows']} rows checked in {t['seconds']} s (aim ≤ 60 s on 2 cores)")


if __name__ == "__main__":
    sys.exit(main())
