"""The Check of a dataset version: duplicates, held-out leaks and suspect rows, and what the user
decided about them.

Owns reading a version's rows with where each was uploaded (lines.json: file and line, as the
ingest errors give them), finding exact and near duplicates among them and held-out questions
that copy a training question (MinHash LSH from datasketch over character 5-grams, every
candidate verified on its real Jaccard similarity; or the same content words, moved), rows
that contradict an earlier row (the same question, different facts), putting those together
with the suspects
(suspects.py, which needs the base model) into one result kept beside the version as
check.json, the "keep" choices (datasets/NAME/decisions.json, by row content, so they hold for
every later version), and which rows a "drop these" removes. Writing the new version is
service.py's; the model is never loaded here.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import DataError
from .stats import content_of, exact_key
from .suspects import fold, show

FILE = "check.json"
DECISIONS = "decisions.json"       # in the dataset's folder, beside its versions
NEAR = 0.8          # Jaccard of character 5-grams at or above which two rows are near duplicates
LEAK = 0.7          # … and a held-out question copies a training question
SHINGLE = 5         # characters per shingle: short questions still get dozens of them
NUM_PERM = 128      # MinHash permutations: Jaccard estimated to about ±0.09 before verifying
KINDS = ("duplicates", "leaks", "suspects")
# words a question may gain, lose or move without asking anything else: articles, the present
# copula, place prepositions, "it"/"its", a possessive's "s". Question words, direction (to,
# from, by), tense, modals, "and"/"or" and persons stay: "Celsius to Fahrenheit" is not
# "Fahrenheit to Celsius", "was released" is not "will be released", "his" is not "her"
FUNCTION_WORDS = frozenset("a an the is are of on in at for with about it its s please".split())
MIN_REORDERED = 3   # content words a question needs before its reordering is called a copy


@dataclass
class Row:
    """One row of the version: train rows first, then validation, as `data show` lists them."""
    index: int
    split: str
    example: dict[str, Any]
    file: str | None = None
    line: int | None = None
    question: str = ""
    answer: str = ""
    text: str = field(default="", repr=False)

    @property
    def key(self) -> str:
        return exact_key(self.example).hex()

    def where(self) -> str:
        return f"{self.file} line {self.line}" if self.line else f"row {self.index + 1}"


def qa_of(ex: dict[str, Any]) -> tuple[str, str]:
    """(question, answer) of a chat row or a preference pair ("" for plain text)."""
    msgs = ex.get("messages")
    if "chosen" in ex and "prompt" in ex:
        msgs = [*ex["prompt"], *ex["chosen"]]
    if msgs and len(msgs) >= 2 and msgs[-1]["role"] == "assistant":
        users = [m["content"] for m in msgs[:-1] if m["role"] == "user"]
        return (users[-1] if users else ""), msgs[-1]["content"]
    return "", ""


def rows_of(folder: Path) -> list[Row]:
    from .prepare import LINES, read_split

    try:
        where = json.loads((folder / LINES).read_text())
    except (OSError, ValueError):
        where = {}  # a version prepared before lines were kept: rows are numbered instead
    rows = []
    for split in ("train", "validation"):
        origins = where.get(split) or []
        for i, ex in enumerate(read_split(folder, split)):
            file, line = origins[i] if i < len(origins) else (None, None)
            q, a = qa_of(ex)
            rows.append(Row(len(rows), split, ex, file, line, q, a, content_of(ex)))
    return rows


# ---- duplicates and leaks (no model) -----------------------------------------------------------
def shingles(text: str) -> set[bytes]:
    t = fold(text)
    if len(t) <= SHINGLE:
        return {t.encode()}
    return {t[i:i + SHINGLE].encode() for i in range(len(t) - SHINGLE + 1)}


def similar(queries: list[str], corpus: list[str], threshold: float,
            same: bool = False) -> list[tuple[int, int, float]]:
    """(query index, corpus index, Jaccard) for every pair at or above `threshold`: MinHash LSH
    finds the candidates, the shingle sets confirm them. `same`: queries are the corpus, and a
    row is matched only with an earlier one."""
    from datasketch import MinHash, MinHashLSH

    if not queries or not corpus:
        return []
    c_sets = [shingles(t) for t in corpus]
    q_sets = c_sets if same else [shingles(t) for t in queries]
    c_hash = MinHash.bulk(c_sets, num_perm=NUM_PERM)
    q_hash = c_hash if same else MinHash.bulk(q_sets, num_perm=NUM_PERM)
    lsh = MinHashLSH(threshold=threshold * 0.8, num_perm=NUM_PERM)  # generous; verified below
    for j, m in enumerate(c_hash):
        lsh.insert(j, m)
    out = []
    for i, m in enumerate(q_hash):
        for j in lsh.query(m):
            if same and j >= i:
                continue
            a, b = q_sets[i], c_sets[j]
            jac = len(a & b) / len(a | b)
            if jac >= threshold:
                out.append((i, j, round(jac, 3)))
    return out


_SMALL = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve "
                                     "thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split())}
_TENS = set("twenty thirty forty fifty sixty seventy eighty ninety".split())
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10 ** 6, "billion": 10 ** 9}
# digits ("1,000", "3.5"), a word, or a mark that ends a number (spaces and hyphens join its words)
_TOKEN = re.compile(r"(?<!\w)\d+(?:[.,:]\d+)*(?!\w)|[A-Za-z]+|[^\sA-Za-z\d-]")


def _follows(prev: str, word: str) -> bool:
    """Whether `word` goes on the number whose last word is `prev` ("twenty" "five", "two"
    "hundred", "hundred" "five"); "five" "six" or "nineteen" "eighty" are two numbers."""
    if word in _SCALES:
        return prev in _SMALL or prev in _TENS or (prev in _SCALES and _SCALES[prev] < _SCALES[word])
    if prev in _TENS:
        return word in _SMALL and 0 < _SMALL[word] < 10
    return prev in _SCALES and (word in _SMALL or word in _TENS)


def _digits(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else format(value, "f").rstrip("0").rstrip(".")


def numbers(text: str) -> list[str]:
    """The numbers of a text, in order, as digits: thousands commas aside ("1,000" is "1000";
    "3.5" stays one number; "2 million" is "2000000"), and written in words ("twenty-five" is
    "25", "one hundred and five" "105", "three point five" "3.5"; read by word2number). Two texts
    alike but for a number say different things ("5 plus 16" is not "5 plus 6", "five plus six"
    not "five plus sixteen"); "two years" and "2 years" say the same. A lone "one" is left out
    ("which one", "one of them": a pronoun as often as a number); digits inside a word ("X200")
    are a name's."""
    from word2number import w2n

    tokens = _TOKEN.findall(text)
    low = [t.lower() for t in tokens]
    out, i = [], 0
    while i < len(tokens):
        t = low[i]
        if t[0].isdigit():
            n = re.sub(r",(?=\d{3}\b)", "", t)
            scale = _SCALES.get(low[i + 1]) if i + 1 < len(low) and re.fullmatch(r"\d+(\.\d+)?", n) else None
            out.append(_digits(float(n) * scale) if scale else n)
            i += 2 if scale else 1
            continue
        if t not in _SMALL and t not in _TENS and t not in _SCALES:
            i += 1
            continue
        run, j = [t], i + 1
        while j < len(low):
            nxt = low[j]
            if nxt == "and" and run[-1] in _SCALES and j + 1 < len(low) and _follows(run[-1], low[j + 1]):
                run += [nxt, low[j + 1]]
                j += 2
            elif nxt == "point" and j + 1 < len(low) and low[j + 1] in _SMALL:
                run.append(nxt)
                j += 1
                while j < len(low) and low[j] in _SMALL and _SMALL[low[j]] < 10:
                    run.append(low[j])
                    j += 1
                break
            elif _follows(run[-1], nxt):
                run.append(nxt)
                j += 1
            else:
                break
        i = j
        if run == ["one"]:
            continue
        try:
            out.append(_digits(w2n.word_to_num(" ".join(run))))
        except (ValueError, IndexError):
            continue
    return out


@lru_cache(maxsize=65536)
def facts_of(text: str) -> tuple[tuple[str, ...], tuple[str, ...], frozenset[str]]:
    """A text's numbers (numbers()), its words with digits in them ("X200", "h100", "b12") and
    the words of its names (scoring.key_facts), once per text: the pairs a check compares share
    their texts (cleared after each check)."""
    from ..scoring import NUMBER, key_facts, norm

    coded = tuple(w for w in re.findall(r"\w+", text.lower()) if re.search(r"\d", w) and not w.isdigit())
    return tuple(numbers(text)), coded, frozenset(w for f in key_facts(text) if not NUMBER.fullmatch(f)
                                                  for w in norm(f).split())


def same_facts(a: str, b: str) -> bool:
    """Whether two alike texts are about the same thing: the same numbers and coded words
    ("X200" is not "X300"), and names of which one text's words hold the other's ("the capital
    of Chile" is not "the capital of Peru"; "the Orbit's price" may be "the Nimbus Orbit's price")."""
    (na, ca, xa), (nb, cb, xb) = facts_of(a), facts_of(b)
    return na == nb and ca == cb and (xa <= xb or xb <= xa)


def duplicates(rows: list[Row], removed: list) -> list[dict[str, Any]]:
    """Each row that repeats an earlier one: "exact" (the same question again, or the same text,
    case and punctuation aside; those prepare already removed are listed too) or "near" (alike,
    and about the same thing: same_facts)."""
    out = [{"line": r[0][1], "file": r[0][0], "of": (r[1] or [None, None])[1], "kind": "exact",
            "removed": True, "row": None, "of_row": None, "similarity": 1.0}
           for r in removed if r and r[0]]
    first: dict[str, Row] = {}
    flagged: set[int] = set()
    for r in rows:
        key = fold(r.question) if r.question else fold(r.text)
        if key in first:
            out.append(entry(r, first[key], "exact", 1.0))
            flagged.add(r.index)
        else:
            first[key] = r
    for i, j, jac in sorted(similar([r.text for r in rows], [r.text for r in rows], NEAR, same=True)):
        if i not in flagged and same_facts(rows[i].text, rows[j].text):
            out.append(entry(rows[i], rows[j], "near", jac))
            flagged.add(i)
    return out


def entry(r: Row, of: Row, kind: str, jac: float) -> dict[str, Any]:
    return {"line": r.line, "file": r.file, "of": of.line, "kind": kind, "removed": False,
            "row": r.index, "of_row": of.index, "similarity": jac,
            "example": show(r), "neighbour": show(of)}


def conflicts(rows: list[Row]) -> list[dict[str, Any]]:
    """Rows that ask what an earlier row asks and state a different fact: the same prompt (every
    turn before the answer, its chunk too), or nearly (Jaccard ≥ LEAK, as a leak is asked: "the
    kettle's warranty" is "the kettle warranty") with the same numbers and names in the question — "5 plus 16" is not "5 plus 6", "X200" is not "X300" — and answers
    whose numbers (or, failing those, names: scoring.key_facts) have none in common — "lasts 2
    years" against "lasts 3 years", not a shorter answer against a fuller one. The data
    contradicts itself, so at most one of them is right: a suspect (the later row), score 1.
    Numbers written in words count as numbers ("two years" against "3 years"); not caught: the
    same fact in other units ("24 months" against "3 years")."""
    from .suspects import flag

    qa = [r for r in rows if r.question and r.answer]
    pairs: dict[int, Row] = {}
    first: dict[str, Row] = {}
    for r in qa:
        earlier = first.setdefault(prompt_key(r), r)
        if earlier is not r:
            pairs[r.index] = earlier
    for i, j, _ in similar([r.question for r in qa], [r.question for r in qa], LEAK, same=True):
        if named(qa[i].question) == named(qa[j].question) and len(turns(qa[i])) == len(turns(qa[j])) == 1:
            pairs.setdefault(qa[i].index, qa[j])
    by_index = {r.index: r for r in qa}
    out = []
    for i, other in sorted(pairs.items()):
        r = by_index[i]
        clash = differing(r, other)
        if clash:
            mine, theirs = clash
            out.append(flag(r, "conflict", 1.0, f"asks what {other.where()} asks, but states "
                            f"'{mine}' where it states '{theirs}': at most one of them is right", other))
    return out


def turns(r: Row) -> list[str]:
    """Everything a row's answer answers: its system prompt, earlier turns, question (and chunk)."""
    msgs = r.example.get("messages") or [*(r.example.get("prompt") or [])]
    said = [str(m.get("content", "")) for m in msgs[:-1]] if msgs and msgs[-1].get("role") == "assistant" \
        else [str(m.get("content", "")) for m in msgs]
    chunk = (r.example.get("meta") or {}).get("chunk")
    return (said or [r.question]) + ([chunk] if chunk else [])


def prompt_key(r: Row) -> str:
    return "\n".join(fold(t) for t in turns(r))


def named(text: str) -> tuple[list[str], list[str]]:
    """The numbers (numbers(): "1,000" is "1000") and capitalised words of a text, in order."""
    return numbers(text), re.findall(r"\b[A-Z][\w-]*\d[\w-]*|\b[A-Z][a-z]+\b", text)


def differing(r: Row, other: Row) -> tuple[str, str] | None:
    """(a fact of r's, one of the other's) when the two answers state facts of the same kind and
    share none of them; else None."""
    from ..scoring import NUMBER, key_facts, states

    def facts(row: Row) -> tuple[list[str], list[str]]:
        found = key_facts(row.answer, row.question)
        nums = [f for f in found if NUMBER.fullmatch(f)]
        said = {digits(f) for f in nums} | set(numbers(row.question))
        words = [n for n in numbers(row.answer) if n not in said]  # "lasts two years": a fact in words
        return nums + words, [f for f in found if f not in nums]

    def digits(f: str) -> str:
        return re.sub(r"[,\s]", "", f)

    (n1, m1), (n2, m2) = facts(r), facts(other)
    if n1 and n2:
        if {digits(f) for f in n1} & {digits(f) for f in n2}:
            return None
        mine, theirs = n1, n2
    elif m1 and m2:
        if any(states(other.answer, f) for f in m1) or any(states(r.answer, f) for f in m2):
            return None
        mine, theirs = m1, m2
    else:
        return None
    return mine[0], theirs[0]


def leaks(heldout: list[dict[str, Any]], rows: list[Row]) -> list[dict[str, Any]]:
    """Held-out questions that copy a question the run trains on (asked the same, or nearly, about
    the same thing: same_facts): a score on them measures memory, not learning."""
    train = [r for r in rows if r.split == "train" and r.question]
    asked = [h["messages"][-1]["content"] if h.get("messages") else h.get("question", "") for h in heldout]
    out, seen = [], set()
    exact = {fold(r.question): r for r in train}
    for k, q in enumerate(asked):
        if fold(q) in exact:
            out.append(leak(k, heldout[k], q, exact[fold(q)], 1.0))
            seen.add(k)
    for k, j, jac in sorted(similar(asked, [r.question for r in train], LEAK)):
        if k not in seen and same_facts(asked[k], train[j].question):
            out.append(leak(k, heldout[k], asked[k], train[j], jac))
            seen.add(k)
    # the same words in another order ("the X300 kettle's warranty" / "the warranty on the X300
    # kettle"): character shingles change with the order, the set of content words does not —
    # but the names must keep their order ("Does Acme own Beta Corp?" is another question)
    by_words: dict[frozenset[str], list[Row]] = {}
    for r in train:
        if len(words := content_words(r.question)) >= MIN_REORDERED:
            by_words.setdefault(words, []).append(r)
    for k, q in enumerate(asked):
        if k in seen:
            continue
        same = [r for r in by_words.get(content_words(q), [])
                if same_facts(q, r.question) and names_in_order(q) == names_in_order(r.question)]
        if same:
            a, b = shingles(q), shingles(same[0].question)
            out.append(leak(k, heldout[k], q, same[0], round(len(a & b) / len(a | b), 3), "same words"))
    return sorted(out, key=lambda e: e["heldout_index"])


def content_words(text: str) -> frozenset[str]:
    """A question's words without its FUNCTION_WORDS: two questions with the same set ask the
    same thing with their words moved."""
    return frozenset(w for w in fold(text).split() if w not in FUNCTION_WORDS)


def names_in_order(text: str) -> list[str]:
    """The words of a text's names, numbers and coded words (facts_of), in the order they come."""
    nums, coded, names = facts_of(text)
    facts = names | set(coded)
    seen = [w for w in fold(text).split() if w in facts or w in nums]
    return [w for i, w in enumerate(seen) if w not in seen[:i]]


def leak(k: int, h: dict[str, Any], q: str, r: Row, jac: float, how: str = "") -> dict[str, Any]:
    how = how or ("exact" if jac == 1.0 else "near")
    return {"heldout_line": h.get("line"), "heldout_index": k, "line": r.line, "file": r.file,
            "row": r.index, "similarity": jac, "how": how, "heldout_question": q, "example": show(r)}


# ---- results, decisions, what to drop ---------------------------------------------------------
def save(folder: Path, result: dict[str, Any]) -> None:
    from ..faults import atomic_write_text

    atomic_write_text(folder / FILE, json.dumps(result, indent=1, ensure_ascii=False))


def load(folder: Path) -> dict[str, Any] | None:
    """The saved check of a version, held to today's rule (current): None when there is none."""
    try:
        found = json.loads((folder / FILE).read_text())
    except (OSError, ValueError):
        return None
    return current(found) if isinstance(found, dict) else None


def current(result: dict[str, Any]) -> dict[str, Any]:
    """A saved check's leaks under today's rule: one saved before leaks needed the same numbers
    and names ("5 plus 16" was a copy of "5 plus 6") keeps only the leaks that still are — the
    Data step, a drop and the report all read it this way, without checking again."""
    def holds(e) -> bool:
        if not isinstance(e, dict):
            return False  # a damaged entry: left out, not the whole check
        asked, train = e.get("heldout_question"), (e.get("example") or {}).get("question")
        return e.get("similarity") == 1.0 or (isinstance(asked, str) and isinstance(train, str)
                                              and bool(asked) and same_facts(asked, train))
    result["leaks"] = [e for e in result.get("leaks") or [] if holds(e)]
    return result


def kept(dataset_dir: Path) -> set[str]:
    """Row keys (content hashes) the user chose to keep whatever the Check says."""
    try:
        return set(json.loads((dataset_dir / DECISIONS).read_text()).get("keep", []))
    except (OSError, ValueError):
        return set()


def remember_keep(dataset_dir: Path, keys: list[str]) -> int:
    from ..faults import atomic_write_text

    keep = kept(dataset_dir) | set(keys)
    atomic_write_text(dataset_dir / DECISIONS, json.dumps({"keep": sorted(keep)}))
    return len(keep)


def parse_kinds(text: str | list[str]) -> list[str]:
    """"suspects,duplicates" → ["suspects", "duplicates"], or a message naming the choices."""
    words = [w.strip().lower() for w in (text.split(",") if isinstance(text, str) else text) if w.strip()]
    bad = [w for w in words if w not in KINDS]
    if bad or not words:
        raise DataError(f"--drop takes a comma-separated list of {', '.join(KINDS)} "
                        f"(e.g. --drop suspects,duplicates); got '{','.join(bad) or text}'.")
    return list(dict.fromkeys(words))


def to_drop(result: dict[str, Any], kinds: list[str]) -> set[int]:
    """Rows (indexes in the version) that dropping these kinds removes; kept rows never."""
    rows = set()
    for kind in kinds:
        for e in result.get(kind, []):
            if e.get("row") is not None and not e.get("kept"):
                rows.add(e["row"])
    return rows


def mark_kept(result: dict[str, Any], rows: list[Row], keep: set[str]) -> None:
    """Flag entries of rows the user kept (they stay listed, but no drop removes them)."""
    for kind in KINDS:
        for e in result.get(kind, []):
            e["kept"] = e.get("row") is not None and rows[e["row"]].key in keep


def contract(result: dict[str, Any]) -> dict[str, Any]:
    """The `data check --json` shape scripts rely on: rows, then duplicates / leaks / suspects
    with exactly their documented keys; rows the user kept are left out."""
    live = {k: [e for e in result.get(k, []) if not e.get("kept")] for k in KINDS}
    return {"rows": result["rows"],
            "duplicates": [{"line": e["line"], "of": e["of"], "kind": e["kind"]} for e in live["duplicates"]],
            "leaks": [{"heldout_line": e["heldout_line"], "line": e["line"]} for e in live["leaks"]],
            "suspects": [{"line": e["line"], "why": e["why"], "score": e["score"]} for e in live["suspects"]]}


def run(folder: Path, heldout: list[dict[str, Any]] | None, model=None, tok=None,
        progress: Any = None, cancel: Any = None) -> dict[str, Any]:
    """The whole Check of one version folder: duplicates and leaks always, suspects with the
    base model when `model` is given (else only the signals that need none). Kept choices are
    marked; the result is saved as check.json and returned."""
    import time

    from . import suspects

    t0 = time.time()
    rows = rows_of(folder)
    try:
        removed = json.loads((folder / "lines.json").read_text()).get("removed") or []
    except (OSError, ValueError):
        removed = []
    if progress:
        progress(0.02, f"duplicates and leaks among {len(rows)} rows")
    result: dict[str, Any] = {"rows": len(rows), "duplicates": duplicates(rows, removed),
                              "leaks": leaks(heldout or [], rows), "suspects": [],
                              "heldout_rows": len(heldout or []), "model_checked": model is not None}
    if progress:
        progress(0.1, f"{len(result['duplicates'])} duplicates, {len(result['leaks'])} leaks; "
                      "looking for suspect rows")
    tick = (lambda f, msg: progress(0.1 + 0.88 * f, msg)) if progress else None
    try:
        result["suspects"] = conflicts(rows) + suspects.find(model, tok, rows, tick, cancel)
    finally:
        facts_of.cache_clear()  # the texts of this check only
    mark_kept(result, rows, kept(folder.parent))
    result["seconds"] = round(time.time() - t0, 2)
    save(folder, result)
    return result
