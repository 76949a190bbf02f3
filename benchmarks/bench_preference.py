"""Preference tuning on 2 cores: does DPO learn the preferences, and does SFT-then-DPO on
factuality pairs beat SFT alone (issue #26)?

A. The DPO quickstart as a user runs it: the sample preference file
   (assets/sample/product_preferences.jsonl) prepared with a fifth of its pairs held out, then
   `cpu-quickstart-dpo` on the embedded model. Scored by the studio's own report: on the held-out
   pairs, how often the model gives the chosen answer the higher likelihood (implicit reward margin
   > 0), before and after; the probe perplexity rise and retention; the wall time of the run; and
   its q8_0 GGUF's parity check in llama.cpp.
   Targets: held-out preference accuracy ≥ 80%, ≤ 300 s, forgetting within the run's budget.
B. Factuality pairs ("Fine-tuning Language Models for Factuality", Tian et al. 2023): the sample
   FAQ (its shipped paraphrased questions held out), SFT with `cpu-quickstart`; then `data pairs`
   (the base model answers each question closed book through llama.cpp; where it misses the fact,
   chosen = the grounded answer, rejected = its own) and DPO from the SFT run's adapter
   (`--from-run`). Both runs scored on the same held-out paraphrases: fact match (the key fact
   stated) and the probe perplexity rise against the base model.

Time on 2 cores: A ≈ 5 minutes; B ≈ 25 (SFT ≈ 8, the pairs, DPO, three reports).
Usage: .venv/bin/python benchmarks/bench_preference.py [--parts A,B] [--out FILE]
         [--own-pairs] [--dpo-set train.pref_sft=1 ...]
  --own-pairs: B's pairs are the SFT run's own closed-book answers (`data pairs --from-run`), not
  the base model's; --dpo-set: a setting of B's DPO run. B also counts, of the held-out answers,
  the right ones, the wrong ones (a made-up name or number) and those with no claim.
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
SAMPLE = ROOT / "assets" / "sample"
TARGETS = {"preference": 0.80, "train_s": 300}


def arg(name: str, default: str) -> str:
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


def studio():
    from studio.models import registry as models
    from studio.api import Studio

    home = Path(tempfile.mkdtemp(prefix="bench-preference-"))
    src = models.prepare_embedded(ROOT / ".venv" / ".test-cache")
    shutil.copytree(src, home / "models" / src.name, copy_function=os.link)
    return Studio(home)


def scored(s, run_id: str, train_s: float) -> dict:
    r = s.report(run_id)
    t, b = r["tuned"], r["base"]
    return {"run": run_id, "train_s": round(train_s), "report_s": r["seconds"],
            "preference": r.get("preference"),
            "fact_match": t.get("paraphrased", {}).get("fact_match"),
            "base_fact_match": b.get("paraphrased", {}).get("fact_match"),
            "ppl_rise": r["forgetting"]["rise"], "budget": r["forgetting"].get("budget"),
            "retention": r["retention"].get("share"),
            "kept": f"{r['retention'].get('kept')}/{r['retention'].get('known')}",
            "chosen_step": r["chosen_step"], "strength": r["strength"], "verdict": r.get("verdict")}


def dpo_sets() -> list[str]:
    """--dpo-set k=v (repeatable): settings of part B's DPO run, e.g. train.pref_sft=1."""
    return [sys.argv[i + 1] for i, a in enumerate(sys.argv[:-1]) if a == "--dpo-set"]


def train(s, preset: str, data: str, overrides: list[str] | None = None, **changes) -> tuple[str, float]:
    t0 = time.time()
    run = s.train_create(preset, data, overrides=overrides, **changes)
    s.train_run(run["id"])
    return run["id"], time.time() - t0


def part_a(s) -> dict:
    s.data_prepare([str(SAMPLE / "product_preferences.jsonl")], "prefs", val_fraction=0.2)
    run, secs = train(s, "cpu-quickstart-dpo", "prefs")
    out = scored(s, run, secs)
    g = s.export("gguf", run_id=run, quant="q8_0", verify=True)   # the DPO adapter in llama.cpp
    out["gguf"] = {k: g["parity"].get(k) for k in ("passed", "agreement", "tokens_compared",
                                                    "stopped_at_end_of_turn", "ran_past_end_of_turn")}
    print(f"   its q8_0 GGUF: parity {'passed' if g['parity']['passed'] else 'FAILED'}, agreement "
          f"{g['parity']['agreement']:.1%}", flush=True)
    p = out["preference"]
    print(f"A. DPO quickstart: held-out preference {p['before']:.0%} → {p['after']:.0%} "
          f"(n={p['n']}), ppl {out['ppl_rise']:+.1%}, kept {out['kept']}, {out['train_s']} s "
          f"(targets: ≥ {TARGETS['preference']:.0%}, ≤ {TARGETS['train_s']} s)", flush=True)
    return out


def closed_book(s, run_id: str) -> dict:
    """The held-out paraphrases answered by the run's model and by the base (greedy, 48 tokens, as
    the report asks): right (states the expected fact), wrong (misses it and states a name or
    number that is neither in the reference nor in the question: a made-up fact, the paper's
    "incorrect"), or neither (no claim of its own)."""
    from studio.evaluate.report import heldout_sets
    from studio.models.chat import generate_batch
    from studio.scoring import states
    from studio.train.rewards import made_up

    rows = heldout_sets(s.dataset(s.run_show(run_id)["dataset"]), 24)["paraphrased"]
    out = {}
    with s.compares.session(run_id) as (_, pair):
        for side in ("base", "tuned"):
            with pair.side(side) as m:
                said = generate_batch(m, pair.tok, [r["messages"] for r in rows], 48)
            right = [bool(r.get("expect")) and states(a, r["expect"]) for r, a in zip(rows, said)]
            wrong = [not ok and made_up(a, {"answer": r["answer"], "question": r["messages"][-1]["content"]},
                                        {}) < 1.0 for r, a, ok in zip(rows, said, right)]
            out[side] = {"n": len(rows), "right": sum(right), "wrong": sum(wrong),
                         "no_claim": len(rows) - sum(right) - sum(wrong)}
    return out


def part_b(s) -> dict:
    s.data_prepare([str(SAMPLE / "product_faq.jsonl")], "faq", val_fraction=0.1)
    sft, secs = train(s, "cpu-quickstart", "faq")
    sft_row = scored(s, sft, secs)
    sft_row["closed_book"] = closed_book(s, sft)
    t0 = time.time()
    own = "--own-pairs" in sys.argv  # the SFT run's own answers rejected (data pairs --from-run)
    pairs = s.data_pairs("faq", "faq-pairs", from_run=sft if own else None)
    pairs_s = time.time() - t0
    p = pairs["pairs"]
    print(f"B. factuality pairs: {p['made']} made of {p['asked']} questions ({p['known']} already "
          f"known) in {pairs_s:.0f} s; held-out questions carried: {pairs.get('heldout')}", flush=True)
    dpo, secs = train(s, "cpu-quickstart-dpo", "faq-pairs", from_run=sft, overrides=dpo_sets())
    dpo_row = scored(s, dpo, secs)
    dpo_row["closed_book"] = closed_book(s, dpo)
    for label, r in (("SFT", sft_row), ("SFT then DPO", dpo_row)):
        cb = r["closed_book"]["tuned"]
        print(f"   {label:13s} held-out fact match {r['fact_match']:.0%} (base {r['base_fact_match']:.0%}), "
              f"ppl {r['ppl_rise']:+.1%}, kept {r['kept']}, train {r['train_s']} s, strength {r['strength']}; "
              f"of {cb['n']} held-out answers {cb['right']} right, {cb['wrong']} wrong (a made-up fact), "
              f"{cb['no_claim']} no claim", flush=True)
    return {"sft": sft_row, "sft_then_dpo": dpo_row, "pairs": p, "pairs_s": round(pairs_s),
            "dpo_vs_start": s.report(dpo).get("vs_start")}


def main() -> None:
    parts = arg("--parts", "A,B").split(",")
    s = studio()
    out = {}
    if "A" in parts:
        out["A"] = part_a(s)
    if "B" in parts:
        out["B"] = part_b(s)
    path = Path(arg("--out", str(ROOT / "benchmarks" / "results" / "preference-latest.json")))
    path.write_text(json.dumps(out, indent=1, default=str))
    print(f"raw: {path}")


if __name__ == "__main__":
    main()
