"""Before/after benchmarks (issue #27): how long the studio's evaluation takes, and whether its
numbers equal lm-evaluation-harness run directly on the same model, adapter and task.

A short cpu-quickstart run on the sample FAQ (the adapter to evaluate), then:
1. `studio eval --run ID --tasks studio_general` on all 197 questions: the base and the tuned model
   (one weight copy, the adapter off and on), timed — target ≤ 2 minutes per model on 2 cores;
2. the harness itself: `simple_evaluate(model="hf", model_args="pretrained=…,peft=…")` on the same
   task, timed — the baseline of the same run;
3. the two side by side: acc and acc_norm, equal to the harness's own precision (the difference
   is printed), and the time ratio studio / harness.

Usage: .venv/bin/python benchmarks/bench_eval.py [--limit N] [--out FILE]   (≈ 6 minutes)
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
LOCAL = ROOT / "assets" / "eval" / "studio_general"


def arg(name: str, default: str | None) -> str | None:
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


def main() -> None:
    from studio.models import registry as models
    from studio.api import Studio

    limit = int(arg("--limit", "0")) or None
    home = Path(tempfile.mkdtemp(prefix="bench-eval-"))
    src = models.prepare_embedded(ROOT / ".venv" / ".test-cache")
    shutil.copytree(src, home / "models" / src.name, copy_function=os.link)
    s = Studio(home)
    s.data_prepare([str(ROOT / "assets" / "sample" / "product_faq.jsonl")], "faq", val_fraction=0.1)
    run = s.train_run(s.train_create("cpu-quickstart", "faq", max_steps=12)["id"])

    t = time.monotonic()
    ours = s.evaluate(["studio_general"], run["id"], limit=limit)
    ours_s = time.monotonic() - t
    got = ours["tasks"]["studio_general"]

    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    adapter = Path(s.run_show(run["id"])["artifacts"]["adapter"])
    t = time.monotonic()
    direct = {}
    for side, extra in (("base", ""), ("tuned", f",peft={adapter}")):
        r = simple_evaluate(model="hf", model_args=f"pretrained={src}{extra}", tasks=["studio_general"],
                            limit=limit, task_manager=TaskManager(include_path=str(LOCAL)),
                            bootstrap_iters=1000, log_samples=False, batch_size=16, device="cpu")
        direct[side] = r["results"]["studio_general"]
    harness_s = time.monotonic() - t

    n = limit or sum(1 for _ in open(LOCAL / "questions.jsonl"))
    rows = {side: {m: {"studio": got[side][m], "harness": direct[side][f"{m},none"],
                       "diff": abs(got[side][m] - direct[side][f"{m},none"])} for m in ("acc", "acc_norm")}
            for side in ("base", "tuned")}
    out = {"questions": n, "studio_s": round(ours_s, 1), "harness_s": round(harness_s, 1),
           "ratio_studio_to_harness": round(ours_s / harness_s, 2),
           "studio_s_per_model": round(ours_s / 2, 1), "target_s_per_model": 120,
           "equal": all(v["diff"] <= 1e-9 for r in rows.values() for v in r.values()),
           "scores": rows, "summary": ours["summary"]}
    text = json.dumps(out, indent=1)
    print(text)
    if arg("--out", None):
        Path(arg("--out", None)).write_text(text + "\n")


if __name__ == "__main__":
    main()
