"""Did it learn your facts and keep what it knew? The old recipe against today's default.

Trains the cpu-quickstart preset on the sample FAQ (assets/sample/product_faq.jsonl) several
times in one run and reports each through the studio's own report:
  - "old recipe": lr 1e-3, no self-replay, no forgetting budget (the last step at full
    strength is the adapter) — how the studio trained before;
  - the preset as shipped (self-replay and the forgetting budget on), and the other replay
    ratios asked for.
For each: held-out paraphrase fact match (questions never trained on), general-text perplexity
rise (the probe, never trained on), retention (share of the general questions the base model
answered right that the tuned one still does), the step the budget chose, and the time of the
whole quickstart (training, replay and evaluations). Then the Pareto table: replay ratio ×
adapter strength → fact match and perplexity rise (strengths from the report's trade-off).
Targets (issue #14): fact match ≥ 70%, perplexity rise ≤ 10%, retention ≥ 95%, ≤ 5 minutes.

Usage: .venv/bin/python benchmarks/bench_outcome.py [--replays 0.5,1.0] [--set KEY=VALUE ...]
         [--variant LABEL:KEY=VALUE,KEY=VALUE ...] [--only-variants]
  --set       applies to every run; --variant adds a run with its own overrides, ;-separated (e.g.
              --variant "lr 3e-4:train.lr=3e-4;train.replay=1"); --only-variants skips the two
              standard rows (for exploring presets).
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


def arg(name: str, default: str) -> str:
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


def extra_sets() -> list[str]:
    return [sys.argv[i + 1] for i, a in enumerate(sys.argv) if a == "--set"]


def studio_home() -> Path:
    from studio import models

    home = Path(tempfile.mkdtemp(prefix="bench-outcome-"))
    cache = ROOT / ".venv" / ".test-cache"
    cache.mkdir(parents=True, exist_ok=True)
    src = models.prepare_embedded(cache)
    shutil.copytree(src, home / "models" / src.name, copy_function=os.link)
    return home


def one(s, label: str, overrides: list[str]) -> dict:
    t0 = time.time()
    run = s.train_create("cpu-quickstart", "faq", overrides=overrides + extra_sets())
    s.train_run(run["id"])
    trained = time.time() - t0
    r = s.report(run["id"])
    t = r["tuned"]
    return {"label": label, "overrides": overrides, "run": run["id"], "train_s": round(trained),
            "fact_match": t.get("paraphrased", {}).get("fact_match"),
            "base_fact_match": r["base"].get("paraphrased", {}).get("fact_match"),
            "ppl_rise": r["forgetting"]["rise"], "retention": r["retention"].get("share"),
            "kept": f"{r['retention'].get('kept')}/{r['retention'].get('known')}",
            "chosen_step": r["chosen_step"], "trade_off": r["trade_off"],
            "suggested_strength": r["suggested_strength"], "report_s": r["seconds"]}


def main() -> None:
    from studio.api import Studio

    s = Studio(studio_home())
    s.data_prepare([str(ROOT / "assets" / "sample" / "product_faq.jsonl")], "faq", val_fraction=0.1)
    rows = [] if "--only-variants" in sys.argv else [
        one(s, "old recipe", ["train.lr=1e-3", "train.max_steps=100", "lora.rank=16",
                              "train.replay=0", "train.eval_every=0", "train.forget_budget=0"]),
        one(s, "preset as shipped", [])]
    for ratio in [x for x in arg("--replays", "").split(",") if x]:
        rows.append(one(s, f"replay {ratio}", [f"train.replay={ratio}"]))
    for i, a in enumerate(sys.argv):
        if a == "--variant":
            label, _, sets = sys.argv[i + 1].partition(":")
            rows.append(one(s, label, [x for x in sets.split(";") if x]))
    print(f"\n{'recipe':20s} {'fact match':>10s} {'ppl rise':>9s} {'retention':>10s} {'kept':>7s} "
          f"{'step':>5s} {'train s':>8s} {'report s':>9s}")
    for r in rows:
        print(f"{r['label']:20s} {r['fact_match']:>10.0%} {r['ppl_rise']:>+9.1%} {r['retention'] or 0:>10.0%} "
              f"{r['kept']:>7s} {r['chosen_step'] or '-':>5} {r['train_s']:>8d} {r['report_s']:>9.0f}")
    print(f"(base model: fact match {rows[0]['base_fact_match']:.0%}; targets: fact match ≥ 70%, "
          "ppl rise ≤ +10%, retention ≥ 95%, quickstart ≤ 300 s)")
    print("\nPareto: recipe × adapter strength → paraphrase fact match / perplexity rise")
    for r in rows:
        cells = "  ".join(f"s={t['strength']:g}: {t['match']:.0%} / {t['rise']:+.0%}" for t in r["trade_off"])
        print(f"  {r['label']:20s} {cells}   suggested {r['suggested_strength']}")
    out = ROOT / "benchmarks" / "results" / "outcome-latest.json"
    out.write_text(json.dumps(rows, indent=1))
    print(f"\nraw: {out}")


if __name__ == "__main__":
    main()
