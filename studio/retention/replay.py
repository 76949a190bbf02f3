"""Self-replay and the retention probe: what keeps a tuned model what it was.

Owns the general prompt set (assets/replay/prompts.txt; its arithmetic expanded the same way
every time), the base model's own greedy answers to it — shipped for the embedded model in
assets/replay/<model>.jsonl (made by `python -m studio.retention.replay MODEL_FOLDER OUT`), cached per model
and revision under STUDIO_HOME/replay/ for any other — and choosing the replay examples a run
mixes into its training data (`train.replay` of them per training example, learned with the same
assistant-only loss). Where prompts.txt says what a right answer states ("QUESTION || ANSWER /
OTHER ANSWER"; the sums know their result), `checked` keeps only the answers that state it
(train.replay_checked). Also the retention probe (assets/retention.jsonl): short general questions
with the fact a right answer contains; `knows` says which ones a model gets right, so the report
can say "kept N of M things it knew".
"""
from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path
from typing import Any, Callable

from ..errors import DataError
from .. import paths

ASSETS = paths.ASSETS
PROMPTS = ASSETS / "replay" / "prompts.txt"
RETENTION = ASSETS / "retention.jsonl"
MAX_NEW_TOKENS = 64
FORMAT = 3  # bump when the prompt set or the generation settings change: caches are redone

NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split())}


def arithmetic() -> list[tuple[str, str]]:
    """Forty small sums, differences and products with their results, the same every time (seeded)."""
    rng = random.Random(1234)
    out = []
    for i in range(40):
        a, b = rng.randint(11, 99), rng.randint(2, 49)
        op = ("plus", "minus", "times", "+")[i % 4]
        result = str(a - b if op == "minus" else a * b if op == "times" else a + b)
        out.append((f"Calculate {a} {op} {b}." if op != "+" else f"What do you get if you add {a} and {b}?", result))
    return out


SHORT = "short answers"   # the section of short factual questions (train.replay_short weighs it)
EXPECT = " || "           # "question || answer / other answer": what a right answer states


def sections() -> dict[str, list[str]]:
    """The prompt set by section ("## name" lines open one; prompts before any are under "")."""
    return {name: [q for q, _ in rows] for name, rows in _parsed().items()}


def _parsed() -> dict[str, list[tuple[str, str]]]:
    """Each section's prompts with what a right answer states ("" where the file says nothing)."""
    try:
        text = PROMPTS.read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(f"The self-replay prompt set {PROMPTS} cannot be read ({e.strerror or e}); "
                        "reinstall the studio to restore it, or train with train.replay=0.") from None
    out: dict[str, list[tuple[str, str]]] = {"": []}
    name = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("## "):
            name = line[3:].strip()
            out.setdefault(name, [])
        elif line == "@arithmetic":
            out[name] += arithmetic()
        elif line and not line.startswith("#"):
            q, _, expect = line.partition(EXPECT)
            out[name].append((q.strip(), expect.strip()))
    return out


def prompts() -> list[str]:
    return [q for qs in sections().values() for q in qs]


def short_prompts() -> frozenset[str]:
    """The short factual questions: the question/answer form that fine-tuning on facts changes
    most (a 135M model tuned on a product FAQ answered "A dog has five legs.")."""
    return frozenset(sections().get(SHORT, []))


def expected() -> dict[str, list[str]]:
    """The prompts whose right answer is known, each with the answers that count as right."""
    return {q: [e.strip() for e in expect.split("/") if e.strip()]
            for rows in _parsed().values() for q, expect in rows if expect}


def checked(rows: list[dict[str, str]]) -> tuple[list[dict[str, str]], int]:
    """The answers fit to rehearse — of the prompts with a known answer, only the ones the model
    got right (a 135M model answers "How many hearts does a human have?" with "The answer is 12.",
    and rehearsing that taught it to answer the spider's legs with 12 too) — and how many were
    left out."""
    want = expected()
    keep = [r for r in rows if r["prompt"] not in want or any(right(r["answer"], e) for e in want[r["prompt"]])]
    return keep, len(rows) - len(keep)


def weighted_order(rng: random.Random, weights: list[float], k: int) -> list[int]:
    """`k` distinct indices drawn without replacement, each with chance ∝ its weight at every
    draw (Efraimidis–Spirakis: the k largest u^(1/w), u uniform). All weights 1 gives a sample
    with the same odds as `rng.sample` but not the same draw: callers keep `rng.sample` for that
    case, so runs made before weights existed repeat exactly."""
    keys = sorted(((rng.random() ** (1.0 / w), i) for i, w in enumerate(weights) if w > 0), reverse=True)
    return [i for _, i in keys[:k]]


def complete(answer: str) -> str:
    """The answer up to its last finished sentence: generation stops at MAX_NEW_TOKENS, often
    mid-sentence, and training on a cut answer followed by the end-of-turn token would teach the
    model to stop mid-sentence. Empty when nothing finished (an unclosed code block included)."""
    text = answer.strip()
    if text.count("```") % 2:
        return ""
    if re.search(r"([.!?]|```)[\"')\]]*$", text):
        return text
    ends = [m.end() for m in re.finditer(r"[.!?][\"')\]]*(?=\s)", text)]
    return text[:ends[-1]].strip() if ends else ""


def model_key(model_path: Path) -> str:
    """The model and its revision: its config and the names and sizes of its weight files."""
    p = Path(model_path)
    h = hashlib.sha256(f"format {FORMAT}".encode())
    if p.is_dir():
        cfg = p / "config.json"
        h.update(cfg.read_bytes() if cfg.exists() else b"")
        for f in sorted(p.glob("*.safetensors")):
            h.update(f"{f.name}:{f.stat().st_size}".encode())
    else:
        h.update(f"{p.name}:{p.stat().st_size}".encode())
    return h.hexdigest()[:16]


def prompt_set() -> str:
    """The prompt set's digest: a cache made for an earlier set (prompts added since) is stale."""
    return hashlib.sha256("\n".join(prompts()).encode()).hexdigest()[:16]


def read_answers(path: Path, key: str) -> list[dict[str, str]] | None:
    """The answers in `path` when they belong to this model revision and prompt set; None when
    missing, for another model, or damaged (a half-written or edited file)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        head, rows = json.loads(lines[0]), [json.loads(x) for x in lines[1:] if x.strip()]
    except (OSError, ValueError, IndexError):
        return None
    known = set(prompts())
    if head.get("key") != key or head.get("format") != FORMAT or head.get("prompts") != prompt_set():
        return None  # another model, or answers to another prompt set (prompts added since)
    counted = head.get("answers")  # none at all is a real result only when the file says so
    if len(rows) != counted if counted is not None else not rows:
        return None
    if not all(r.get("prompt") in known and isinstance(r.get("answer"), str) for r in rows):
        return None
    return rows


def write_answers(path: Path, key: str, model: str, rows: list[dict[str, str]]) -> None:
    from ..faults import atomic_write_text

    # "answers": a model may finish none, which is kept, not asked again
    head = {"model": model, "key": key, "format": FORMAT, "prompts": prompt_set(),
            "max_new_tokens": MAX_NEW_TOKENS, "decoding": "greedy", "answers": len(rows)}
    atomic_write_text(path, "\n".join(json.dumps(r, ensure_ascii=False) for r in [head, *rows]) + "\n")


def cache_path(cache_dir: Path, model_ref: str, key: str) -> Path:
    """Where the answers of a model revision are cached (STUDIO_HOME/replay/)."""
    return Path(cache_dir) / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', model_ref)}-{key}.jsonl"


def answers(cache_dir: Path, model_ref: str, model_path: Path,
            generate: Callable[[list[str]], list[str]], note: Callable[[str], None]) -> list[dict[str, str]]:
    """The base model's own answers to the prompt set: shipped, cached, or generated now (and
    cached). A damaged or stale cache is generated again, with a note saying so."""
    key = model_key(model_path)
    shipped = ASSETS / "replay" / f"{model_ref}.jsonl"
    if shipped.exists():
        rows = read_answers(shipped, key)
        if rows is not None:
            return rows
    cached = cache_path(cache_dir, model_ref, key)
    if cached.exists():
        rows = read_answers(cached, key)
        if rows is not None:
            return rows
        note(f"The saved replay answers in {cached} were damaged or out of date; generating them again.")
    ps = prompts()
    rows = [{"prompt": q, "answer": complete(a)} for q, a in zip(ps, generate(ps))]
    rows = [r for r in rows if r["answer"]]
    cached.parent.mkdir(parents=True, exist_ok=True)
    write_answers(cached, key, model_ref, rows)
    return rows


def mix(rows: list[dict[str, str]], n_train: int, ratio: float, seed: int,
        short_weight: float = 1.0) -> list[dict[str, Any]]:
    """round(ratio × n_train) replay examples (at most the whole set), as chat examples, in a
    random order in which the short factual questions come `short_weight` times as readily."""
    n = min(len(rows), round(ratio * n_train))
    if short_weight == 1.0:
        picked = random.Random(seed).sample(rows, n) if n else []
    else:
        short = short_prompts()
        weights = [short_weight if r["prompt"] in short else 1.0 for r in rows]
        picked = [rows[i] for i in weighted_order(random.Random(seed), weights, n)]
    return [{"messages": [{"role": "user", "content": r["prompt"]},
                          {"role": "assistant", "content": r["answer"]}]} for r in picked]


# ---- the retention probe ----

RETENTION_TOKENS = 20  # the retention questions ask for a few words


def retention_rows() -> list[dict[str, str]]:
    return [json.loads(x) for x in RETENTION.read_text(encoding="utf-8").splitlines() if x.strip()]


def retention_answers(model, tok, rows: list[dict[str, str]]) -> list[str]:
    """The model's greedy answers to retention questions (as it stands: the caller picks the side)."""
    from ..models.chat import generate_batch

    return generate_batch(model, tok, [[{"role": "user", "content": r["question"]}] for r in rows],
                          RETENTION_TOKENS)


def words(text: str) -> list[str]:
    """Lower-case words, punctuation dropped but a number's minus sign kept ("-24" is not "24")."""
    ws = re.sub(r"(?!(?<![\w-])-\d)[^\w\s]", " ", text.lower()).split()
    return [NUMBER_WORDS.get(w, w) for w in ws]


def right(answer: str, expect: str) -> bool:
    """Whether `answer` states `expect`: its words in order, as whole words ("12", not "120";
    "eight" counts as "8")."""
    a, e = words(answer), words(expect)
    return bool(e) and any(a[i:i + len(e)] == e for i in range(len(a) - len(e) + 1))


def knows(answers_: list[str], rows: list[dict[str, str]]) -> list[bool]:
    return [right(a, r["expect"]) for a, r in zip(answers_, rows)]


def main(argv: list[str]) -> int:
    """python -m studio.retention.replay MODEL_FOLDER OUT [NAME] — the model's own greedy answers to the
    prompt set (fp32 on the CPU, so the file is the same every time)."""
    import sys

    from ..models import registry as models
    from ..models.chat import generate_batch

    if len(argv) not in (2, 3):
        print("usage: python -m studio.retention.replay MODEL_FOLDER OUT [NAME]", file=sys.stderr)
        return 2
    folder, out = Path(argv[0]), Path(argv[1])
    name = argv[2] if len(argv) == 3 else folder.name
    model = models.load_model(folder, "cpu", "fp32")
    tok = models.load_tokenizer(folder)
    ps = prompts()
    got = generate_batch(model, tok, [[{"role": "user", "content": q}] for q in ps], MAX_NEW_TOKENS)
    rows = [{"prompt": q, "answer": complete(a)} for q, a in zip(ps, got)]
    write_answers(out, model_key(folder), name, [r for r in rows if r["answer"]])
    print(f"{len(rows)} answers → {out}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
