"""Data-step throughput: the `paragraphs` recipe (tokenized) on a generated corpus.

Prints MB/s and peak RSS growth for a small and a large corpus in the same run, written as one
file each (the hard case: a single big document) or as 1 MB files (--many). The difference of
the two peaks shows whether memory grows with corpus size (aim: ≤ 150 MB more for 50 MB than for
5 MB; throughput ≥ 2 MB/s). Usage: .venv/bin/python benchmarks/bench_data.py [--mb 50] [--many]
"""
import argparse
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--many", action="store_true", help="1 MB files instead of one big file")
    args = ap.parse_args()
    from studio.api import Studio

    tok = Studio().tokenizer("smollm2-135m-instruct")
    with tempfile.TemporaryDirectory() as d:
        small = run(max(2, args.mb // 10), tok, Path(d), args.many)
        large = run(args.mb, tok, Path(d), args.many)
    print(f"\nthroughput {large[0]:.2f} MB/s (aim ≥ 2); peak RSS growth {large[1] - small[1]:+.0f} MB "
          f"more for {args.mb} MB than for {max(2, args.mb // 10)} MB (aim ≤ 150: flat with the corpus)")


if __name__ == "__main__":
    main()
