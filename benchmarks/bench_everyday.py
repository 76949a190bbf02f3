"""Do the everyday answers a run keeps hold beyond the kinds of question its anchor rehearses?

The report's retention figure asks assets/retention.jsonl (capitals, small sums, units of time,
animals, science). The short-answer anchor (train.replay_short) rehearses questions of some of the
same kinds — none of the same questions — so its gain there could be a gain on those kinds only.
This script asks runs already trained (by bench_outcome.py, whose results JSON names them) a
second set written for the check: benchmarks/facts/everyday_check.jsonl, 44 everyday questions
of other kinds (food, sport, music, art, tools, jobs, places, currencies, history), in none of
the replay prompts nor the retention set. Scored like retention: of the questions the base model
answers right, the share the run's kept adapter (its chosen step and strength) still does.

--by-kind reads the runs' own reports instead (no generation): the retention set's questions split
into the kinds the short-answer prompts rehearse (capitals, "How many…" counts, legs, opposites,
languages, continents, "largest"/"closest", seasons, plurals, letters: a same-kind question is
among the replay prompts, by hand) and the others, with each part's share kept.

Usage: .venv/bin/python benchmarks/bench_everyday.py RESULTS.json [RESULTS.json ...] [--out FILE]
       .venv/bin/python benchmarks/bench_everyday.py --by-kind RESULTS.json [...] [--label LABEL]
  Each results file's runs are looked up in the bench homes under the system temp folder
  (bench_outcome.py leaves them there: /tmp/bench-outcome-*/runs/RUN_ID).
"""
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CHECK = ROOT / "benchmarks" / "facts" / "everyday_check.jsonl"


def home_of(run_id: str) -> Path | None:
    for runs in Path(tempfile.gettempdir()).glob("bench-outcome-*/runs"):
        if (runs / run_id).is_dir():
            return runs.parent
    return None


REHEARSED = ("legs", "How many", "opposite", "closest", "largest", "language", "continent", "season",
             "plural", "letter")


def by_kind(files: list[str], label: str | None) -> None:
    """Retention per kind from the runs' report.json and selection.json (no model)."""
    rows = [json.loads(x) for x in (ROOT / "assets" / "retention.jsonl").read_text().splitlines() if x.strip()]
    tally = {True: [0, 0], False: [0, 0]}
    n = 0
    for f in files:
        for r in json.loads(Path(f).read_text()):
            home = home_of(r["run"])
            if home is None or (label and r["label"] != label):
                continue
            run = home / "runs" / r["run"]
            known = json.loads((run / "selection.json").read_text())["base"]["known"]
            rep = json.loads((run / "report.json").read_text())["retention"]
            if len(known) != rep["known"]:
                continue
            n += 1
            for j, i in enumerate(known):
                k = rows[i]["kind"] == "capital" or any(w in rows[i]["question"] for w in REHEARSED)
                tally[k][0] += j in set(rep["still"])
                tally[k][1] += 1
    for k, name in ((True, "kinds the short prompts rehearse"), (False, "other kinds")):
        kept, known = tally[k]
        print(f"  {name}: {kept}/{known} kept = {kept / max(1, known):.1%}")
    print(f"  ({n} runs)")


def main() -> None:
    from studio.api import Studio
    from studio.retention import replay

    rows = [json.loads(x) for x in CHECK.read_text().splitlines() if x.strip()]
    base_said: list[str] | None = None
    out = []
    args = sys.argv[1:]
    flags = ("--out", "--label", "--by-kind")
    files = [a for i, a in enumerate(args) if a not in flags and (i == 0 or args[i - 1] not in ("--out", "--label"))]
    if "--by-kind" in args:
        return by_kind(files, args[args.index("--label") + 1] if "--label" in args else None)
    for f in files:
        for r in json.loads(Path(f).read_text()):
            home = home_of(r["run"])
            if home is None:
                print(f"  {r['run']}: not found (its bench home was removed)")
                continue
            _, pair = Studio(home).pair_for(r["run"])
            if base_said is None:
                with pair.side("base") as m:
                    base_said = replay.retention_answers(m, pair.tok, rows)
            known = [i for i, ok in enumerate(replay.knows(base_said, rows)) if ok]
            with pair.side("tuned") as m:
                said = replay.retention_answers(m, pair.tok, [rows[i] for i in known])
            kept = sum(replay.knows(said, [rows[i] for i in known]))
            lost = [(rows[i]["question"], s) for i, s, ok in
                    zip(known, said, replay.knows(said, [rows[i] for i in known])) if not ok]
            out.append({**{k: r[k] for k in ("set", "label", "seed", "run", "kept", "retention")},
                        "check_kept": kept, "check_known": len(known), "check_lost": lost})
            print(f"  {r['set']:10s} {r['label']:20s} seed {r['seed']:<3d} retention {r['kept']:>6s} "
                  f"check {kept}/{len(known)} ({kept / max(1, len(known)):.0%})", flush=True)
    labels = sorted({o["label"] for o in out})
    print("\nMeans per recipe (retention set / check set):")
    for label in labels:
        mine = [o for o in out if o["label"] == label]
        ret = sum(o["retention"] or 0 for o in mine) / len(mine)
        chk = sum(o["check_kept"] / max(1, o["check_known"]) for o in mine) / len(mine)
        print(f"  {label:20s} {len(mine)} runs: {ret:.1%} / {chk:.1%}")
    dest = Path(sys.argv[sys.argv.index("--out") + 1]) if "--out" in sys.argv else None
    if dest:
        dest.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
