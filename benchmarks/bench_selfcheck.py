"""Is the base model's own confidence a cheap Check signal (#43: "the base model's own
self-consistency where it is cheap")? Measured before building it into the Check.

Sampling self-consistency needs several generated answers per row, which the 60-s budget for
1,000 rows does not allow. One forward pass gives its single-token form exactly: where an answer
states its fact (a number, a number word, or a capitalised word that neither opens a sentence nor
comes from the question), the chance that two sampled answers agree there is Σp², at least
p(top)². So a row is "contradicted" when, at one of those positions, the base model puts
p(top) ≥ --top on another token and ≤ --row on the row's own — its answers would agree with each
other and not with the row.

Rows: the fact sets' clean rows (the sample FAQ, skellmere, tamsworth: invented facts, where
every flag is a false alarm) and the retention questions the base model answers right, once with
its own answer (right) and once with the fact replaced by a wrong one (a dog with five legs:
every flag there is a catch). Prints, per threshold, how many rows of each set are flagged.

Usage: .venv/bin/python benchmarks/bench_selfcheck.py [--top 0.5,0.7,0.9] [--row 0.02]
"""
import argparse
import csv
import json
import re
import sys

from homes import ROOT, embedded_model

sys.path.insert(0, str(ROOT))
NUMBER_WORDS = set("zero one two three four five six seven eight nine ten eleven twelve twenty "
                   "thirty forty fifty hundred thousand million".split())
WRONG = {"Rome": "Milan", "Madrid": "Barcelona", "Cairo": "Alexandria", "Ottawa": "Toronto",
         "Moscow": "Kiev", "24": "20", "12": "10", "4": "5", "green": "blue", "Earth": "Mars",
         "8": "6", "down": "left", "honey": "milk", "Portuguese": "Spanish", "Africa": "Asia",
         "3": "4"}


def fact_positions(answer: str, question: str, offsets) -> list[int]:
    """Answer tokens that open a word stating a fact the question does not give."""
    asked = set(re.findall(r"\w+", question.lower()))
    out = []
    for k, (a, b) in enumerate(offsets):
        piece = answer[a:b]
        if not piece.strip() or (a > 0 and answer[a - 1].isalnum() and not piece.startswith(" ")):
            continue  # a word's continuation
        word = re.match(r"\w+", answer[a:].lstrip())
        word = word.group(0) if word else ""
        opens = a == 0 or re.search(r"[.!?]\s*$", answer[:a])
        if word and word.lower() not in asked and (
                word[0].isdigit() or word.lower() in NUMBER_WORDS or (word[0].isupper() and not opens)):
            out.append(k)
    return out


def strongest(model, tok, question: str, answer: str):
    """(p(top), p(row's token), row token, top token) at the fact position where they differ most."""
    import torch

    from studio.data.suspects import MAX_ANSWER, _encode

    ids, start = _encode(tok, question, answer, {})
    offsets = tok(answer, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"][:MAX_ANSWER]
    with torch.inference_mode():
        logp = model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
    best = None
    for k in fact_positions(answer, question, offsets):
        p = logp[start - 1 + k].exp()
        top, own = int(p.argmax()), ids[start + k]
        got = (float(p[top]), float(p[own]), tok.decode([own]), tok.decode([top]))
        if top != own and (best is None or got[0] - got[1] > best[0] - best[1]):
            best = got
    return best


def rows_of(path):
    if path.suffix == ".csv":
        return [(r["question"], r["answer"]) for r in csv.DictReader(path.open(encoding="utf-8"))]
    return [(d["question"], d["answer"]) for d in map(json.loads, path.read_text().splitlines()) if d]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--top", default="0.5,0.7,0.9")
    ap.add_argument("--row", type=float, default=0.02)
    a = ap.parse_args()
    from studio.models.loading import load_model, load_tokenizer
    from studio.retention.base_answers import ASSETS
    from studio.retention.replay import retention_rows

    folder = embedded_model()
    model, tok = load_model(folder, "cpu", "fp32"), load_tokenizer(folder)
    model.eval()
    sets = {"sample FAQ (clean)": rows_of(ROOT / "assets" / "sample" / "product_faq.jsonl"),
            "skellmere (clean)": rows_of(ROOT / "benchmarks" / "facts" / "skellmere.csv"),
            "tamsworth (clean)": rows_of(ROOT / "benchmarks" / "facts" / "tamsworth.csv")}
    shipped = sorted(ASSETS.glob("smollm2-135m-instruct-*-cpu-float32-retention.json"))
    if not shipped:
        sys.exit(f"No shipped retention answers of the embedded model in {ASSETS}: reinstall the studio.")
    said = json.loads(shipped[0].read_text())["answers"]
    right = [(r["question"], b) for r, b in zip(retention_rows(), said) if r["expect"].lower() in b.lower()]
    sets["everyday, its own right answer"] = right
    sets["everyday, the fact made wrong"] = [
        (q, re.sub(rf"\b{re.escape(e)}\b", WRONG[e], b)) for (q, b), e in
        ((x, next(r["expect"] for r in retention_rows() if r["question"] == x[0])) for x in right)
        if e in WRONG and re.search(rf"\b{re.escape(e)}\b", b)]
    tops = [float(x) for x in a.top.split(",")]
    print(f"flagged: p(top) ≥ T on another token and p(row's token) ≤ {a.row} at a fact position")
    for name, rows in sets.items():
        found = [(q, ans, strongest(model, tok, q, ans)) for q, ans in rows]
        counts = "  ".join(f"T={t:g}: {sum(1 for *_, s in found if s and s[0] >= t and s[1] <= a.row)}"
                           for t in tops)
        print(f"  {name:32s} {len(rows):3d} rows  {counts}")
        for q, ans, s in sorted((f for f in found if f[2]), key=lambda f: f[2][1] - f[2][0])[:3]:
            print(f"      p(top) {s[0]:.2f} {s[3]!r} vs {s[1]:.3f} {s[2]!r}: {ans[:70]}")


if __name__ == "__main__":
    main()
