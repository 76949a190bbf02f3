"""Data-step throughput and quality: `paragraphs` on a generated corpus, the document recipes on
real PDF manuals, and the qa-pairs generator engines against each other.

1. Real documents (--docs, default: the two hand-labelled PDFs in tests/data/docs): the share
   of `paragraphs` chunks that are still junk by the hand labels (running headers, dot-leader
   contents lines; aim ≤ 2%).
2. qa-pairs end to end through the default engine (llama.cpp on the embedded GGUF), in a fresh
   STUDIO_HOME: chunks per minute (aim ≥ 10), end to end (aim ≤ 10 min for ~100 chunks), and the
   ETA shown after three chunks against the real remaining time (aim ±30%). No baseline: these
   are aims, not a ratio (--skip-qa leaves it out).
3. Engines, the same work on both sides: llama.cpp on the embedded GGUF (the default engine)
   against transformers on the same model (the fallback), each writing the plain whole-chunk
   prompt (RecipeParams.qa_prompt, greedy, at most generators.MAX_NEW_TOKENS new tokens) for the
   same first --compare-chunks chunks of the first PDF. The recipe itself holds llama.cpp to a
   JSON schema (a grammar) that transformers has no equivalent for, and what it asks next
   depends on what came back, so the recipe's own path would give the two engines different
   work; the plain prompt is what both can do. Each repetition loads each engine afresh
   (untimed; llama.cpp keeps no prompt cache from an earlier repetition), --reps repetitions,
   order alternated; medians of seconds per chunk and of generated tokens/s, and their ratios.
4. Corpus: MB/s and peak RSS growth for a small and a large corpus in the same run, written as
   one file each (the hard case: a single big document) or as 1 MB files (--many). The
   difference of the two peaks shows whether memory grows with corpus size (aim: ≤ 150 MB more
   for 50 MB than for 5 MB; throughput ≥ 2 MB/s).

Usage: .venv/bin/python benchmarks/bench_data.py [--mb 50] [--many] [--compare-chunks 12] [--reps 3]
  smoke check: .venv/bin/python benchmarks/bench_data.py --skip-qa --skip-corpus --compare-chunks 1 --reps 1
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
from homes import embedded_model, fresh_home, median, orders, spread  # noqa: E402

MODEL = "smollm2-135m-instruct"

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
    from studio.train.measure import PeakRSS

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


def junk_share(studio, pdfs: list[Path]) -> None:
    from studio.data import prepare as prep

    labels = json.loads((DOCS / "labels.json").read_text())
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


def qa_end_to_end(studio, pdf: Path) -> None:
    """qa-pairs through the default engine, as a user runs it (no baseline: aims only)."""
    from studio.data.ingest import iter_path
    from studio.data.recipes import Context, RecipeParams

    etas: list[tuple[float, float]] = []
    t0 = time.time()

    def progress(frac, msg):
        m = re.search(r"chunk (\d+) of (\d+), about (?:(\d+) min )?(\d+) s left", msg)
        if m and int(m.group(1)) == 4:
            etas.append((time.time(), int(m.group(3) or 0) * 60 + int(m.group(4))))
    r = studio.data_prepare([str(pdf)], "bench-qa", recipe="qa-pairs", progress=progress)
    secs = time.time() - t0
    doc = next(d for d in iter_path(pdf, [], pdf.name))
    n = len(Context(studio.tokenizer(MODEL), RecipeParams()).chunks(doc))
    print(f"\nqa-pairs on {pdf.name} ({n} chunks) with {r.get('generator')}: {secs:.0f} s end to end "
          f"= {n / secs * 60:.1f} chunks/min (aim ≥ 10; ≤ 10 min); kept {r['recipe_counters'].get('qa_generated', 0)} "
          f"generated pairs, {r['recipe_counters'].get('qa_fallback', 0)} fallbacks; left out: "
          + ", ".join(f"{d['count']} {d['reason']}" for d in r["dropped"]))
    if etas:
        when, said = etas[0]
        real = (t0 + secs) - when
        print(f"ETA shown at chunk 4: {said:.0f} s; the real remaining time: {real:.0f} s "
              f"→ off by {abs(said - real) / max(1, real):.0%} (aim ≤ 30%)")


def engines(pdf: Path, n_chunks: int, reps: int) -> None:
    """llama.cpp against transformers on the same prompts: the plain whole-chunk prompt for the
    same chunks, greedy, the same token limit (see the module docstring for why not the recipe's
    JSON-schema path)."""
    import gc

    from studio.data import generators
    from studio.models import registry as models
    from studio.data.ingest import iter_path
    from studio.data.questions import parse_pairs
    from studio.data.recipes import Context, RecipeParams

    folder = embedded_model()
    tok = models.load_tokenizer(folder)
    p = RecipeParams()
    doc = next(d for d in iter_path(pdf, [], pdf.name))
    chunks = Context(tok, p).chunks(doc)[:n_chunks]
    prompts = [p.qa_prompt.format(n=p.pairs_per_chunk, chunk=c) for c in chunks]
    make = {"llama.cpp": lambda: generators.llama_cpp(models.embedded_gguf()),
            "transformers": lambda: generators.transformers_model(models.load_model(folder), tok)}
    secs: dict[str, list[float]] = {e: [] for e in make}
    tps: dict[str, list[float]] = {e: [] for e in make}
    made: dict[str, list[float]] = {e: [] for e in make}  # tokens written per chunk: is it the same work?
    last: dict[str, list[str]] = {}
    print(f"\nengines on the same {len(prompts)} chunks of {pdf.name}, the plain qa prompt (the path "
          f"both engines have; llama.cpp's JSON-schema path has no transformers equivalent), "
          f"greedy, ≤ {generators.MAX_NEW_TOKENS} new tokens, {reps} repetitions, order alternated:")
    for i, order in enumerate(orders(reps, list(make))):
        for engine in order:
            gen = make[engine]()  # a fresh engine each repetition, loaded before the clock
            t0 = time.perf_counter()
            outs = [gen(prompt) for prompt in prompts]
            dt = time.perf_counter() - t0
            tokens = sum(len(tok(o, add_special_tokens=False)["input_ids"]) for o in outs)
            secs[engine].append(dt / len(prompts))
            tps[engine].append(tokens / dt)
            made[engine].append(tokens / len(prompts))
            last[engine] = outs
            del gen
            gc.collect()
        print(f"  repetition {i + 1}: " + ", ".join(f"{e} {secs[e][-1]:.1f} s/chunk, {tps[e][-1]:.1f} tok/s"
                                                   for e in order), flush=True)
    for e in make:
        pairs = sum(len(parse_pairs(o)) for o in last[e])
        print(f"  {e:12s} s/chunk {spread(secs[e])}; generated tok/s {spread(tps[e], '{:.1f}')}; "
              f"{median(made[e]):.0f} tokens written per chunk; {pairs} Q/A pairs parsed")
    same = sum(a == b for a, b in zip(last["llama.cpp"], last["transformers"]))
    ls, ts = median(secs["llama.cpp"]), median(secs["transformers"])
    print(f"  per chunk (median): llama.cpp {ls:.1f} s vs transformers {ts:.1f} s → {ts / ls:.1f}× faster; "
          f"generated tokens/s: {median(tps['llama.cpp']) / median(tps['transformers']):.1f}×; "
          f"identical answers {same} of {len(prompts)} (GGUF Q4_1 vs its fp32 dequantization)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--many", action="store_true", help="1 MB files instead of one big file")
    ap.add_argument("--docs", nargs="*", default=None, help="PDFs for the document part "
                    "(default: tests/data/docs/*.pdf)")
    ap.add_argument("--compare-chunks", type=int, default=12, help="chunks both engines write for")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of the engine comparison")
    ap.add_argument("--skip-qa", action="store_true", help="leave out qa-pairs end to end")
    ap.add_argument("--skip-corpus", action="store_true")
    args = ap.parse_args()
    from studio.api import Studio

    pdfs = [Path(p) for p in args.docs] if args.docs else sorted(DOCS.glob("*.pdf"))
    with tempfile.TemporaryDirectory(prefix="bench-data-") as d:
        junk_share(Studio(fresh_home(Path(d), "paragraphs")), pdfs)
        if not args.skip_qa:
            qa_end_to_end(Studio(fresh_home(Path(d), "qa")), pdfs[0])
        if args.compare_chunks > 0:
            engines(pdfs[0], args.compare_chunks, args.reps)
        if args.reps < 3 and args.compare_chunks > 0:
            print(f"  (--reps {args.reps}: a check of the script, not a figure to quote)")
        if args.skip_corpus:
            return
        from studio.models import registry as models

        tok = models.load_tokenizer(embedded_model())
        work = Path(d) / "corpus"
        work.mkdir()
        small = run(max(2, args.mb // 10), tok, work, args.many)
        large = run(args.mb, tok, work, args.many)
    print(f"\nthroughput {large[0]:.2f} MB/s (aim ≥ 2); peak RSS growth {large[1] - small[1]:+.0f} MB "
          f"more for {args.mb} MB than for {max(2, args.mb // 10)} MB (aim ≤ 150: flat with the corpus)")


if __name__ == "__main__":
    main()
