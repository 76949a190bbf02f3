"""Data-step throughput and quality: `paragraphs` on a generated corpus, and the document
recipes on real PDF manuals.

Real documents (--docs, default: the two hand-labelled PDFs in tests/data/docs): the share of
`paragraphs` chunks that are still junk by the hand labels (running headers, dot-leader contents
lines; aim ≤ 2%), then qa-pairs through the default engine (llama.cpp on the embedded GGUF):
chunks per minute (aim ≥ 10), end to end (aim ≤ 10 min for ~100 chunks), the ETA shown after
three chunks against the real remaining time (aim ±30%), and transformers on the same first
chunks as the baseline, in the same run.

Prints MB/s and peak RSS growth for a small and a large corpus in the same run, written as one
file each (the hard case: a single big document) or as 1 MB files (--many). The difference of
the two peaks shows whether memory grows with corpus size (aim: ≤ 150 MB more for 50 MB than for
5 MB; throughput ≥ 2 MB/s). Usage: .venv/bin/python benchmarks/bench_data.py [--mb 50] [--many]
"""
import argparse
import json
import re
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WORDS = ("feeder seed bird camera battery charge garden alert species clip cloud night window "
         "sparrow finch robin tray clean update firmware reset button ring purple green red "
         "squirrel chirp owl hedgehog wifi router phone app account privacy video encrypted").split()


def make_corpus(folder: Path, mb: int, seed: int = 0, many: bool = False) -> int:
    rnd = random.Random(seed)
    total = 0
    one = None if many else open(folder / "corpus.md", "w")
    for i in range(mb):
        paras = []
        size = 0
        while size < 2**20:
            sents = [" ".join(rnd.choice(WORDS) for _ in range(rnd.randint(6, 18))).capitalize() + "."
                     for _ in range(rnd.randint(2, 7))]
            p = " ".join(sents)
            paras.append(p)
            size += len(p) + 2
        text = f"# Part {i}\n\n" + "\n\n".join(paras)
        if one is None:
            (folder / f"part{i:03d}.md").write_text(text)
        else:
            one.write(text + "\n\n")
        total += len(text.encode())
    if one is not None:
        one.close()
    return total


def run(mb: int, tok, work: Path, many: bool) -> tuple[float, float]:
    import psutil

    from studio.data.prepare import prepare
    from studio.data.recipes import RecipeParams
    from studio.memory_measure import PeakRSS

    corpus = work / f"c{mb}"
    corpus.mkdir()
    nbytes = make_corpus(corpus, mb, many=many)
    base = psutil.Process().memory_info().rss
    t0 = time.time()
    with PeakRSS() as peak:
        s = prepare(sorted(corpus.glob("*.md")), f"bench{mb}", work / "datasets", tok,
                    recipe="paragraphs", params=RecipeParams(max_tokens=256), max_len=256,
                    val_fraction=0.01)
    secs = time.time() - t0
    mbps = nbytes / 2**20 / secs
    grow = (peak.peak - base) / 2**20
    print(f"{mb:4d} MB corpus: {s['records']:7d} chunks in {secs:6.1f} s = {mbps:5.2f} MB/s, "
          f"peak RSS growth {grow:7.1f} MB")
    return mbps, grow


DOCS = Path(__file__).resolve().parent.parent / "tests" / "data" / "docs"


def junk_reason(labels: dict, text: str) -> str | None:
    """Junk by the hand labels: a running header left in the text, or a dot-leader line."""
    body = re.sub(r"^## .*$", "", text, flags=re.M)   # a heading kept as a section title is fine
    if any(re.search(rf"^\s*(\d+\s+)?{re.escape(h)}(\s+\d+)?\s*$", body, re.M)
           for h in labels["running_headers"]):      # a header line standing alone in the text
        return "running header"
    if re.search(r"(?:\. ?){4,}\s*\d+\s*$", text, re.M):
        return "dot leader"
    return None


def documents(studio, pdfs: list[Path], baseline_chunks: int) -> None:
    from studio.data import prepare as prep
    from studio.data.recipes import Context, RecipeParams, qa_pairs
    from studio.data.ingest import iter_path
    from studio.generators import transformers_model

    labels = json.loads((DOCS / "labels.json").read_text())
    studio.model_path("smollm2-135m-instruct")  # the one-time conversion is not timed
    for pdf in pdfs:
        t0 = time.time()
        r = studio.data_prepare([str(pdf)], "bench-paragraphs", recipe="paragraphs", val_fraction=0)
        rows = prep.read_split(r["path"], "train")
        lab = labels.get(pdf.name, {"running_headers": []})
        junk = [x["text"][:80] for x in rows if junk_reason(lab, x["text"])]
        print(f"{pdf.name}: paragraphs {len(rows)} chunks in {time.time() - t0:.1f} s, junk by the "
              f"hand labels {len(junk)} = {len(junk) / max(1, len(rows)):.1%} (aim ≤ 2%); removed: "
              + ", ".join(f"{k.split(': ', 1)[1]} {v}" for k, v in r["recipe_counters"].items()
                          if k.startswith("removed")))
        for j in junk[:3]:
            print("   junk:", j.replace("\n", " ⏎ "))
    pdf = pdfs[0]
    etas: list[tuple[float, float]] = []
    t0 = time.time()

    def progress(frac, msg):
        m = re.search(r"chunk (\d+) of (\d+), about (?:(\d+) min )?(\d+) s left", msg)
        if m and int(m.group(1)) == 4:
            etas.append((time.time(), int(m.group(3) or 0) * 60 + int(m.group(4))))
    r = studio.data_prepare([str(pdf)], "bench-qa", recipe="qa-pairs", progress=progress)
    secs = time.time() - t0
    doc = next(d for d in iter_path(pdf, [], pdf.name))
    tok = studio.tokenizer("smollm2-135m-instruct")
    ctx = Context(tok, RecipeParams())
    n = len(ctx.chunks(doc))
    print(f"\nqa-pairs on {pdf.name} ({n} chunks) with {r.get('generator')}: {secs:.0f} s end to end "
          f"= {n / secs * 60:.1f} chunks/min (aim ≥ 10; ≤ 10 min); kept {r['recipe_counters'].get('qa_generated', 0)} "
          f"generated pairs, {r['recipe_counters'].get('qa_fallback', 0)} fallbacks; left out: "
          + ", ".join(f"{d['count']} {d['reason']}" for d in r["dropped"]))
    if etas:
        when, said = etas[0]
        real = (t0 + secs) - when
        print(f"ETA shown at chunk 4: {said:.0f} s; the real remaining time: {real:.0f} s "
              f"→ off by {abs(said - real) / max(1, real):.0%} (aim ≤ 30%)")
    # baseline: transformers on the first chunks, in this same run
    short = Context(tok, RecipeParams(), transformers_model(*studio.loaded_model("smollm2-135m-instruct")))
    doc.text = "\n\n".join(ctx.chunks(doc)[:baseline_chunks])
    t1 = time.time()
    list(qa_pairs(doc, short))
    base = (time.time() - t1) / baseline_chunks
    ours = secs / n
    print(f"per chunk: {ours:.1f} s with {r.get('generator')} vs {base:.1f} s with transformers "
          f"→ {base / ours:.1f}× faster (baseline on {baseline_chunks} chunks)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--many", action="store_true", help="1 MB files instead of one big file")
    ap.add_argument("--docs", nargs="*", default=None, help="PDFs for the document part "
                    "(default: tests/data/docs/*.pdf)")
    ap.add_argument("--baseline-chunks", type=int, default=3)
    ap.add_argument("--skip-corpus", action="store_true")
    args = ap.parse_args()
    from studio.api import Studio

    studio = Studio()
    documents(studio, [Path(p) for p in args.docs] if args.docs else sorted(DOCS.glob("*.pdf")),
              args.baseline_chunks)
    if args.skip_corpus:
        return
    tok = studio.tokenizer("smollm2-135m-instruct")
    with tempfile.TemporaryDirectory() as d:
        small = run(max(2, args.mb // 10), tok, Path(d), args.many)
        large = run(args.mb, tok, Path(d), args.many)
    print(f"\nthroughput {large[0]:.2f} MB/s (aim ≥ 2); peak RSS growth {large[1] - small[1]:+.0f} MB "
          f"more for {args.mb} MB than for {max(2, args.mb // 10)} MB (aim ≤ 150: flat with the corpus)")


if __name__ == "__main__":
    main()
