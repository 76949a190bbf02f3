"""Did it learn your facts and keep what it knew? The frontier of the forgetting levers.

Trains the cpu-quickstart preset on two fact sets written by us, in different domains and
formats, each with held-out questions that ask the same facts in other words:
  - sample: the Nimbus Orbit FAQ (assets/sample/product_faq.jsonl, a product; JSONL);
  - skellmere: people and places of an invented island (benchmarks/facts/skellmere.csv; CSV,
    held out in skellmere_heldout.csv),
  - tamsworth: an invented heritage railway (benchmarks/facts/tamsworth.csv, CSV; written
    2026-12-06 and kept out of tuning until 2026-12-07, when the short-answer anchor was chosen
    on all three sets),
  - lowenmere: an invented music festival (benchmarks/facts/lowenmere.csv, CSV; written
    2026-12-07 after that choice: the check of the defaults on a set nothing was chosen on),
once per recipe (the preset as shipped, then each variant's overrides), and scores every run
through the studio's own report — the way a user sees it:
  - fact match: held-out questions answered with their key fact (never trained on);
  - ppl rise: general-text probe perplexity against the base model (never trained on);
  - retention: of the shipped general questions the base model answers right, the share the
    tuned model still does;
  - train s: the whole quickstart, generation for replay/targets/paraphrases included.
Targets (issue #29): fact match ≥ 70%, ppl rise ≤ +10%, retention ≥ 90%, ≤ 300 s — all at
once, on both sets. The last table lists, per recipe, whether it meets them on both.

Usage: .venv/bin/python benchmarks/bench_outcome.py [--sets sample,skellmere] [--seeds 42,7]
         [--variant "LABEL:KEY=VALUE;KEY=VALUE" ...] [--only-variants] [--set KEY=VALUE ...]
         [--out FILE]
  --seeds runs every recipe on every set once per seed (train.seed) and prints the means over
  seeds: one run is an anecdote (two seeds of the same recipe differed by 13 points).
  --set applies to every run; each --variant adds a recipe with its own overrides
  (e.g. --variant "kl 1:train.replay_mode=kl;train.replay_weight=1"); --only-variants skips
  the preset as shipped.
"""
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FACTS = ROOT / "benchmarks" / "facts"
SETS = {
    "sample": ([ROOT / "assets" / "sample" / "product_faq.jsonl"], None),
    "skellmere": ([FACTS / "skellmere.csv"], FACTS / "skellmere_heldout.csv"),
    # written 2026-12-06 and never used to choose a default: the honest check of the defaults
    "tamsworth": ([FACTS / "tamsworth.csv"], FACTS / "tamsworth_heldout.csv"),
    # written 2026-12-07 after the defaults were chosen on the other three: their check
    "lowenmere": ([FACTS / "lowenmere.csv"], FACTS / "lowenmere_heldout.csv"),
}
TARGETS = {"fact_match": 0.70, "ppl_rise": 0.10, "retention": 0.90, "train_s": 300}


def arg(name: str, default: str) -> str:
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


def every(name: str) -> list[str]:
    return [sys.argv[i + 1] for i, a in enumerate(sys.argv) if a == name]


def studio_home() -> Path:
    from studio.models import registry as models

    home = Path(tempfile.mkdtemp(prefix="bench-outcome-"))
    cache = ROOT / ".venv" / ".test-cache"
    cache.mkdir(parents=True, exist_ok=True)
    src = models.prepare_embedded(cache)
    shutil.copytree(src, home / "models" / src.name, copy_function=os.link)
    return home


def one(s, data: str, label: str, overrides: list[str], seed: int) -> dict:
    t0 = time.time()
    run = s.train_create("cpu-quickstart", data, overrides=overrides + every("--set") + [f"train.seed={seed}"])
    s.train_run(run["id"])
    trained = time.time() - t0
    r = s.report(run["id"])
    t = r["tuned"]
    levers = {e["lever"]: e for e in r.get("levers") or []}
    return {"set": data, "label": label, "overrides": overrides, "seed": seed, "run": run["id"],
            "train_s": round(trained), "fact_match": t.get("paraphrased", {}).get("fact_match"),
            "base_fact_match": r["base"].get("paraphrased", {}).get("fact_match"),
            "ppl_rise": r["forgetting"]["rise"], "retention": r["retention"].get("share"),
            "kept": f"{r['retention'].get('kept')}/{r['retention'].get('known')}",
            "chosen_step": r["chosen_step"], "strength": r["strength"], "trade_off": r["trade_off"],
            "levers": levers, "report_s": r["seconds"],
            "lost": r["retention"].get("lost") or []}


def meets(r: dict) -> bool:
    return ((r["fact_match"] or 0) >= TARGETS["fact_match"] and r["ppl_rise"] is not None
            and r["ppl_rise"] <= TARGETS["ppl_rise"] and (r["retention"] or 0) >= TARGETS["retention"]
            and r["train_s"] <= TARGETS["train_s"])


def main() -> None:
    from studio.api import Studio

    s = Studio(studio_home())
    sets = [x for x in arg("--sets", "sample,skellmere").split(",") if x]
    for name in sets:
        files, held = SETS[name]
        s.data_prepare([str(f) for f in files], name, val_fraction=0.1,
                       heldout=str(held) if held else None)
    recipes = [] if "--only-variants" in sys.argv else [("preset as shipped", [])]
    for v in every("--variant"):
        label, _, sets_ = v.partition(":")
        recipes.append((label, [x for x in sets_.split(";") if x]))
    seeds = [int(x) for x in arg("--seeds", "42").split(",") if x]
    rows = []
    runs = [(label, overrides, name, seed) for label, overrides in recipes for name in sets for seed in seeds]
    for label, overrides, name, seed in runs:
        rows.append(one(s, name, label, overrides, seed))
        r = rows[-1]
        print(f"  {name:10s} {label:28s} seed {seed:<4d} fact {r['fact_match']:.0%} (base {r['base_fact_match']:.0%}) "
              f"ppl {r['ppl_rise']:+.1%} kept {r['kept']} step {r['chosen_step']} "
              f"s={r['strength']:g} {r['train_s']} s", flush=True)
    print(f"\n{'set':10s} {'recipe':28s} {'seed':>5s} {'fact match':>10s} {'ppl rise':>9s} {'retention':>10s} "
          f"{'kept':>7s} {'step':>5s} {'strength':>8s} {'train s':>8s}")
    for r in rows:
        print(f"{r['set']:10s} {r['label']:28s} {r['seed']:>5d} {r['fact_match']:>10.0%} {r['ppl_rise']:>+9.1%} "
              f"{r['retention'] or 0:>10.0%} {r['kept']:>7s} {r['chosen_step'] or '-':>5} "
              f"{r['strength']:>8g} {r['train_s']:>8d}")
    print(f"\nMeans over {len(seeds)} seed(s) ({', '.join(map(str, seeds))}):")
    for label, _ in recipes:
        for name in sets:
            mine = [r for r in rows if r["label"] == label and r["set"] == name]
            mean = {k: sum((r[k] or 0) for r in mine) / len(mine)
                    for k in ("fact_match", "ppl_rise", "retention", "train_s")}
            spread = max(r["fact_match"] or 0 for r in mine) - min(r["fact_match"] or 0 for r in mine)
            print(f"  {name:10s} {label:28s} fact {mean['fact_match']:.0%} (spread {spread:.0%}) "
                  f"ppl {mean['ppl_rise']:+.1%} retention {mean['retention']:.0%} {mean['train_s']:.0f} s")
    print(f"(targets: fact match ≥ {TARGETS['fact_match']:.0%}, ppl rise ≤ +{TARGETS['ppl_rise']:.0%}, "
          f"retention ≥ {TARGETS['retention']:.0%}, quickstart ≤ {TARGETS['train_s']} s — on every set)")
    print("\nMeets every target on every set:")
    for label, _ in recipes:
        mine = [r for r in rows if r["label"] == label]
        print(f"  {label:28s} {'yes' if mine and all(meets(r) for r in mine) else 'no'}")
    print("\nPareto: recipe × adapter strength → held-out fact match / perplexity rise")
    for r in rows:
        cells = "  ".join(f"s={t['strength']:g}: {t['match']:.0%} / {t['rise']:+.0%}" for t in r["trade_off"])
        print(f"  {r['set']:10s} {r['label']:28s} {cells}")
    out = Path(arg("--out", str(ROOT / "benchmarks" / "results" / "outcome-latest.json")))
    out.write_text(json.dumps(rows, indent=1))
    print(f"\nraw: {out}")


if __name__ == "__main__":
    main()
