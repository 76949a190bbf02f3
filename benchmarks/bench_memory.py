"""Estimator accuracy: every point in memory_points.csv → estimate, measurement, error, and the
mean absolute error. GPU points compare total_gb (reserved + context); CPU points compare the
estimator's CPU mode (peak allocated, fp32) with RSS growth measured by `estimate --measure`.

Usage: .venv/bin/python benchmarks/bench_memory.py [--remeasure]  (re-runs CPU points here)
"""
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from studio import memory as m  # noqa: E402
from studio import memory_advice as ma  # noqa: E402

POINTS = Path(__file__).with_name("memory_points.csv")


def main() -> None:
    rows = list(csv.DictReader(POINTS.open()))
    errs = []
    print(f"{'model':16s} {'method':6s} {'seq×b':>9s} {'ckpt':5s} {'dev':4s} {'estimate':>9s} "
          f"{'measured':>9s} {'error':>7s}  range")
    for r in rows:
        shape, _ = ma.load_shape(r["model"])
        st = m.Setting(method=r["method"], bits=int(r["bits"]), rank=int(r["rank"]), targets=r["targets"],
                       seq_len=int(r["seq_len"]), batch=int(r["batch"]),
                       grad_ckpt=r["grad_ckpt"] == "true", optimizer=r["optimizer"], dtype=r["dtype"],
                       device=r["device"])
        e = m.estimate(shape, st)
        est = e["total_gb"] if r["device"] == "cuda" else e["peak_allocated_gb"]
        if "--remeasure" in sys.argv and r["device"] == "cpu" and r["model"] == "smollm2-135m":
            from studio.api import Studio

            got = Studio().estimate("smollm2-135m-instruct", measure=True, **{
                k: v for k, v in st.__dict__.items()})["measured"]
            r["measured_gb"] = got["measured_gb"]
        meas = float(r["measured_gb"])
        err = (est - meas) / meas
        errs.append(abs(err))
        rng = f"{e['range_gb'][0]}–{e['range_gb'][1]}" if r["device"] == "cuda" else "-"
        print(f"{r['model']:16s} {r['method']:6s} {r['seq_len'] + '×' + r['batch']:>9s} "
              f"{r['grad_ckpt']:5s} {r['device']:4s} {est:9.3f} {meas:9.3f} {err:+7.1%}  {rng}")
    print(f"\npoints: {len(errs)}  mean absolute error: {sum(errs) / len(errs):.1%}  "
          f"worst: {max(errs):.1%}  (aim: MAE ≤ 10%, none over 25%)")


if __name__ == "__main__":
    main()
