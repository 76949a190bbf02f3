"""Reinforcement learning on the user's own questions (#42): what GRPO learns on 2 cores, and
what it costs in forgetting next to SFT.

Every run is a studio run in a fresh home, scored by the studio's own report — the way a user
sees it: held-out reward (the run's own rewards, base vs tuned, on questions it never trained
on), held-out fact match, retention (of the shipped general questions the base answers right,
the share still answered right), general-text perplexity rise, the drift from the base on the
held-out questions (KL per answer token, the report's `drift`), the valid-JSON share where the
references are JSON, and the run's own seconds (preparing included; the report is apart).

Per seed, in a fresh home, on the sample assets/sample/contacts_json.jsonl (a sentence about a
person in, a JSON object with name, age and city out; held out: contacts_json_heldout.jsonl —
other people, where the base model writes valid JSON a third of the time):
  quickstart  `cpu-quickstart-grpo` as shipped (GRPO alone). Targets: held-out reward +0.15
              (absolute), ≤ 300 s, probe perplexity ≤ +5%; and the valid-JSON share before/after.
  razor       "RL's Razor" side by side: SFT alone (`cpu-quickstart`) and SFT then GRPO
              (`--from-run`) beside GRPO alone — held-out reward (the same rewards for all
              three), retention, perplexity and the drift from the base (KL per answer token).
              Skipped with --quickstart-only.
Report means over seeds, never one run. The three recipes run in the same order each seed
(GRPO alone first, in a fresh home): their seconds are each against the 300-s aim, not a race
between them.

Usage: .venv/bin/python benchmarks/bench_rl.py [--quickstart-only] [--seeds 42,7]
         [--set KEY=VALUE ...] [--homes DIR] [--out FILE]
  --set applies to every GRPO run (e.g. --set train.lr=5e-4), to try a recipe before shipping it.
"""
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
SAMPLE = ROOT / "assets" / "sample"
TARGETS = {"reward_gain": 0.15, "train_s": 300, "ppl_rise": 0.05}


def arg(name: str, default: str) -> str:
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


def every(name: str) -> list[str]:
    return [sys.argv[i + 1] for i, a in enumerate(sys.argv[:-1]) if a == name]


def studio():
    from homes import fresh_home

    from studio.api import Studio

    parent = Path(arg("--homes", "/tmp"))
    return Studio(fresh_home(parent, "bench-rl"))


def prepare(s, name: str, data: Path, heldout: Path) -> str:
    s.data_prepare([str(data)], name, heldout=str(heldout))
    return name


def run(s, preset: str, data: str, seed: int, rl: bool, **changes) -> dict:
    """Train `preset` on `data` and score it with the report."""
    t0 = time.time()
    overrides = [f"train.seed={seed}"] + (every("--set") if rl else [])
    r = s.train_create(preset, data, overrides=overrides, **changes)
    s.train_run(r["id"])
    train_s = time.time() - t0
    rep = s.report(r["id"])
    t, b = rep["tuned"], rep["base"]
    name = "paraphrased" if "paraphrased" in t else "validation"
    reward = rep.get("reward") or {}
    return {"preset": preset, "run": r["id"], "seed": seed, "from_run": changes.get("from_run"),
            "train_s": round(train_s), "report_s": rep["seconds"],
            "reward_before": reward.get("before"), "reward_after": reward.get("after"),
            "valid_json": reward.get("valid_json"),
            "fact_match": t.get(name, {}).get("fact_match"), "base_fact_match": b.get(name, {}).get("fact_match"),
            "rouge_l": t.get(name, {}).get("rouge_l"), "base_rouge_l": b.get(name, {}).get("rouge_l"),
            "ppl_rise": rep["forgetting"]["rise"], "retention": rep["retention"].get("share"),
            "kept": f"{rep['retention'].get('kept')}/{rep['retention'].get('known')}",
            "drift": (rep.get("drift") or {}).get("kl"), "strength": rep["strength"],
            "chosen_step": rep["chosen_step"],
            "examples": [{k: x[k] for k in ("question", "expected", "base", "tuned")}
                         for x in (rep["examples"].get(name) or [])[:4]]}


def fmt(x, how: str = "num") -> str:
    """A figure as the tables print it: "num" 0.123, "pct" 12%, "signed" +1.2%, "s" 285 s."""
    if x is None:
        return "–"
    return {"num": f"{x:.3f}", "pct": f"{x:.0%}", "signed": f"{x:+.1%}", "s": f"{x:.0f} s"}[how]


def gain(before, after) -> str:
    return "–" if before is None or after is None else f"{after - before:+.3f}"


def parts(seeds: list[int], razor: bool) -> list[dict]:
    """Per seed, in a fresh home: the quickstart as shipped on its sample (GRPO alone); with
    `razor`, SFT alone and SFT then GRPO on the same data beside it."""
    out = []
    for seed in seeds:
        s = studio()
        data = prepare(s, "contacts", SAMPLE / "contacts_json.jsonl", SAMPLE / "contacts_json_heldout.jsonl")
        out.append({"part": "quickstart", "label": "GRPO alone (quickstart)",
                    **run(s, "cpu-quickstart-grpo", data, seed, True)})
        show(out[-1])
        if razor:
            sft = run(s, "cpu-quickstart", data, seed, False)
            out.append({"part": "razor", "label": "SFT alone", **sft})
            show(out[-1])
            out.append({"part": "razor", "label": "SFT then GRPO",
                        **run(s, "cpu-quickstart-grpo", data, seed, True, from_run=sft["run"])})
            show(out[-1])
    return out


def show(r: dict) -> None:
    valid = r.get("valid_json") or {}
    print(f"{r['part']:10s} {r['label']:22s} seed {r['seed']}: reward {fmt(r['reward_before'])} → "
          f"{fmt(r['reward_after'])} ({gain(r['reward_before'], r['reward_after'])}) · fact "
          f"{fmt(r['base_fact_match'], 'pct')} → {fmt(r['fact_match'], 'pct')} · ppl {fmt(r['ppl_rise'], 'signed')} · "
          f"kept {r['kept']} · drift {fmt(r['drift'])} · strength {r['strength']} · "
          + (f"valid JSON {fmt(valid.get('before'), 'pct')} → {fmt(valid.get('after'), 'pct')} · " if valid else "")
          + f"{r['train_s']} s (+{r['report_s']} s report)", flush=True)


def means(rows: list[dict]) -> None:
    print("\nmeans over seeds:")
    for label in dict.fromkeys(r["label"] for r in rows):
        got = [r for r in rows if r["label"] == label]

        def mean(k):
            vals = [r[k] for r in got if r.get(k) is not None]
            return sum(vals) / len(vals) if vals else None
        meets = ""
        if got[0]["part"] == "quickstart":
            up = mean("reward_after") - mean("reward_before") if None not in (mean("reward_after"), mean("reward_before")) else 0
            ok = up >= TARGETS["reward_gain"] and mean("train_s") <= TARGETS["train_s"] and \
                (mean("ppl_rise") or 0) <= TARGETS["ppl_rise"]
            meets = f" · targets (gain ≥ +0.15, ≤ 300 s, ppl ≤ +5%): {'met' if ok else 'NOT met'}"
        print(f"  {label:22s} n={len(got)}: reward {fmt(mean('reward_before'))} → {fmt(mean('reward_after'))}"
              f" ({gain(mean('reward_before'), mean('reward_after'))}) · fact {fmt(mean('fact_match'), 'pct')} · ppl "
              f"{fmt(mean('ppl_rise'), 'signed')} · retention {fmt(mean('retention'), 'pct')} · drift "
              f"{fmt(mean('drift'))} · {fmt(mean('train_s'), 's')}{meets}")


def main() -> None:
    seeds = [int(x) for x in arg("--seeds", "42,7").split(",")]
    rows = parts(seeds, "--quickstart-only" not in sys.argv)
    means(rows)
    if "--out" in sys.argv:
        Path(arg("--out", "")).write_text(json.dumps(rows, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
