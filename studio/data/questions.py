"""Writing question/answer pairs from a chunk with a generator that may be a very small model.

Owns the qa-pairs recipe's way of asking: the output held to a fixed shape where the engine can
(a JSON schema: llama.cpp turns it into a grammar, a server takes it as response_format; a list
of {question, answer} whose questions must look like questions), a worked example in the prompt,
a long chunk cut to its fact-bearing sentences (numbers, names, definitions) — and, when the
whole-chunk prompt gives no usable pair, one question per fact-bearing sentence, answered by that
sentence (grounded by construction). Each pair is then checked here: by pair_problem (a real
question, an answer grounded in the chunk, not a copy) and, for sentence questions, by
question_problem (a question about the sentence's own content, never about "the text" or "the
sentence"). Engines that cannot constrain their output (transformers, an older server) get the
plain prompt and the Q:/A: parser. The qa-pairs and factuality-pairs recipes themselves
(qa_recipe, factuality_recipe) are here too; recipes.py registers them.
"""
from __future__ import annotations

import json
import re
import time
from typing import Any, Iterator

from ..scoring import norm
from .passages import URLISH, chat_example, keyphrases, norm_text, words

# a question's shape, as llama.cpp's schema-to-grammar understands it (no \b, no long {m,n}:
# each repetition is spelled out in the grammar)
QUESTION = r"^(What|Which|Who|Whom|Whose|When|Where|Why|How|Is|Are|Does|Do|Can|Should|Will) [^?\n]+[?]$"
EXAMPLE_PASSAGE = ("Water boils at 100 degrees Celsius at sea level. On a high mountain the air "
                   "pressure is lower, so water boils at a lower temperature and food takes longer "
                   "to cook.")
EXAMPLE_PAIRS = [{"question": "At what temperature does water boil at sea level?",
                  "answer": "Water boils at 100 degrees Celsius at sea level."},
                 {"question": "Why does food take longer to cook on a high mountain?",
                  "answer": "The air pressure is lower, so water boils at a lower temperature."}]
EXAMPLE_SENTENCE = "The ls command lists the files in a directory."
EXAMPLE_QUESTION = "What does the ls command do?"
PAIRS_PROMPT = ("Write {n} questions that this passage answers, each with its answer taken from "
                "the passage. Reply in JSON.\n\nPassage:\n{chunk}")
SENTENCE_PROMPT = "Write the question that this sentence answers. Reply in JSON.\n\nSentence: {sentence}"
CUT_WORDS = 120          # a longer chunk is cut to its fact-bearing sentences for the prompt
PAIRS_TOKENS, QUESTION_TOKENS = 160, 48
META = re.compile(r"\b(sentence|passage|paragraph|text|document|section|chapter|question|answer|"
                  r"above|below|given|example|mentioned)\b", re.I)
VAGUE = set("""what which who whom whose when where why how is are does do can should will the a an
of in on at to for from by with and or it its this that these those there their they them be been
was were has have had do does did main purpose use used role meaning mean called name named type
kind thing things way ways part one some any about into than then also more most other""".split())


def pairs_schema(n: int) -> dict[str, Any]:
    return {"type": "object", "required": ["pairs"], "properties": {"pairs": {
        "type": "array", "minItems": 1, "maxItems": n, "items": {
            "type": "object", "required": ["question", "answer"], "properties": {
                "question": {"type": "string", "pattern": QUESTION},
                "answer": {"type": "string"}}}}}}


QUESTION_SCHEMA = {"type": "object", "required": ["question"],
                   "properties": {"question": {"type": "string", "pattern": QUESTION}}}


def fact_sentences(chunk: str) -> list[str]:
    """The chunk's sentences that carry a fact — prose only (no code, headings, tables or list
    markers), 6–45 words — those with numbers, names or a definition first."""
    import pysbd

    prose = re.sub(r"```.*?```", "\n\n", chunk, flags=re.S)
    lines = [ln for ln in prose.splitlines()
             if ln.strip() and not re.match(r"^\s*(#|\||[-*•]\s|\d+[.)]\s*$)", ln)]
    text = re.sub(r"\s+", " ", " ".join(lines))
    out = []
    for s in pysbd.Segmenter(language="en", clean=False).segment(text):
        s = s.strip()
        words = s.split()
        if not 6 <= len(words) <= 45 or not s[0].isupper() or s[-1] not in ".!":
            continue
        if re.search(r"[\[\]{}<>|`=;]|\bpage \d+|\.{3,}", s) or sum(c.isalpha() for c in s) < 0.7 * len(s):
            continue
        score = (2 * bool(re.search(r"\d", s)) + bool(re.search(r"(?<!^)\b[A-Z][a-z]+", s)) +
                 bool(re.search(r"\b(is|are|means|returns|contains|allows|provides|lets|makes)\b", s)))
        out.append((-score, len(out), s))
    return [s for _, _, s in sorted(out)]


def cut(chunk: str, words: int = CUT_WORDS) -> str:
    """The chunk, or — when it is long — its fact-bearing sentences in their order, up to `words`."""
    if len(chunk.split()) <= words:
        return chunk
    keep, n = set(), 0
    for s in fact_sentences(chunk):
        if n + len(s.split()) > words:
            break
        keep.add(s)
        n += len(s.split())
    ordered = [s for s in re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", chunk)) if s.strip() in keep]
    return " ".join(ordered) if ordered else " ".join(chunk.split()[:words])


EXAMPLE_WORDS = set(norm(" ".join([EXAMPLE_SENTENCE, EXAMPLE_PASSAGE, *(
    x for p in EXAMPLE_PAIRS for x in p.values())])).split()) - VAGUE


def copies_example(q: str, source: str) -> bool:
    """A question that takes words from the prompt's worked example the source does not have
    (a small model echoes "the ls command" into a question about something else)."""
    return bool({w for w in norm(q).split() if w in EXAMPLE_WORDS} - set(norm(source).split()))


def question_problem(q: str, sentence: str) -> str | None:
    """Why a question written for a sentence is not a question about its content, or None."""
    if META.search(q):
        return "asks about the text, not its facts"
    if copies_example(q, sentence):
        return "copies the prompt's worked example"
    topic = [w for w in norm(q).split() if w not in VAGUE and len(w) > 2]
    said = set(norm(sentence).split())
    if not topic or sum(w in said or w.rstrip("s") in said for w in topic) < max(1, 0.6 * len(topic)):
        return "asks about something the sentence does not say"
    if len(set(norm(sentence).split()) - set(norm(q).split())) < 3:
        return "the answer repeats the question"
    return None


def _parse(text: str | None, key: str) -> Any:
    try:
        return json.loads(text)[key] if text else None
    except (ValueError, KeyError, TypeError):
        return None


def chunk_pairs(gen, chunk: str, n: int) -> list[tuple[str, str]] | None:
    """Pairs from the whole-chunk prompt held to the schema; None when the engine cannot hold
    its output to one (the caller then uses the plain prompt)."""
    ask = getattr(gen, "json", None)
    if ask is None:
        return None
    messages = [{"role": "user", "content": PAIRS_PROMPT.format(n=len(EXAMPLE_PAIRS), chunk=EXAMPLE_PASSAGE)},
                {"role": "assistant", "content": json.dumps({"pairs": EXAMPLE_PAIRS})},
                {"role": "user", "content": PAIRS_PROMPT.format(n=n, chunk=cut(chunk))}]
    text = ask(messages, pairs_schema(n), PAIRS_TOKENS)
    if text is None:
        return None
    pairs = _parse(text, "pairs") or []
    return [(p.get("question", "").strip(), p.get("answer", "").strip()) for p in pairs if isinstance(p, dict)]


def sentence_questions(gen, chunk: str, n: int, drop) -> Iterator[tuple[str, str]]:
    """Up to `n` (question, sentence) pairs: one question per fact-bearing sentence, held to
    the question schema where the engine can, else asked plainly; `drop(reason, example)`
    counts the ones left out."""
    ask = getattr(gen, "json", None)
    found = 0
    for sentence in fact_sentences(chunk):
        if found >= n:
            return
        messages = [{"role": "user", "content": SENTENCE_PROMPT.format(sentence=EXAMPLE_SENTENCE)},
                    {"role": "assistant", "content": json.dumps({"question": EXAMPLE_QUESTION})},
                    {"role": "user", "content": SENTENCE_PROMPT.format(sentence=sentence)}]
        text = ask(messages, QUESTION_SCHEMA, QUESTION_TOKENS) if ask else None
        q = _parse(text, "question") if text is not None else None
        if q is None and text is None:  # no constrained output here: the plain prompt
            said = gen(f"Write one question that this sentence answers. Write only the question."
                       f"\n\nSentence: {sentence}").strip()
            q = said.splitlines()[0] if said else ""
        q = (q or "").strip()
        why = question_problem(q, sentence) if q else "empty question"
        if why:
            drop(why, f"Q: {q}\nSentence: {sentence}")
            continue
        found += 1
        yield q, sentence


# ---- checking a pair, the plain-text path, the fallback -------------------------------------
def grounded(answer: str, chunk: str, threshold: float) -> bool:
    a, c = words(answer), set(words(chunk))
    return bool(a) and sum(w in c for w in a) / len(a) >= threshold


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """Q:/A: pairs from a generator's text; a tag's text may continue on the next lines
    ('Answer:' alone, then the answer below it)."""
    pairs: list[tuple[str, str]] = []
    tag, body, q = None, [], None

    def close():
        nonlocal q
        text = " ".join(body).strip()
        if tag == "Q":
            q = text
        elif tag == "A" and q is not None:
            pairs.append((q, text))
            q = None

    for line in text.splitlines():
        m = re.match(r"^\s*(?:\d+[.)]\s*)?\**(Q|A|Question|Answer)\s*\d*\**\s*[:.)-]\**\s*(.*)$", line, re.I)
        if m:
            close()
            tag, body = m.group(1)[0].upper(), [m.group(2).strip()]
        elif tag and line.strip():
            body.append(line.strip())
        elif tag and not line.strip() and any(body):
            close()
            tag, body = None, []
    close()
    return pairs


WH = re.compile(r"^(what|which|who|whom|whose|when|where|why|how|is|are|does|do|can|should|"
                r"will|would|could|did|was|were|has|have|in what|at what)\b", re.I)


def pair_problem(q: str, a: str, chunk: str, threshold: float) -> str | None:
    """Why a generated pair is not worth training on, or None."""
    if not q or not a:
        return "empty question or answer"
    if not (q.rstrip().endswith("?") or WH.match(q.strip())) or HEADING_LIKE.match(q.strip()):
        return "not a question (a heading or a statement)"
    if norm_text(a) == norm_text(q) or norm_text(a) in norm_text(q):
        return "the answer repeats the question"
    if copies_example(q, chunk):
        return "copies the prompt's worked example"
    if not grounded(a, chunk, threshold):
        return "ungrounded (the answer is not in the chunk)"
    return None


HEADING_LIKE = re.compile(r"^(#+\s|\d+(\.\d+)*\s+[A-Z])")


def fallback_topic(chunk: str) -> str | None:
    """A keyphrase of the chunk that is neither a URL/address nor its heading."""
    heads = {norm_text(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", chunk, re.M)}
    body = re.sub(r"^#+\s+.*$", "", URLISH.sub(" ", chunk), flags=re.M)
    for phrase in keyphrases(body, 5):
        if norm_text(phrase) not in heads and not URLISH.search(phrase):
            return phrase
    return None


# ---- the recipes that use them (registered in recipes.py) ------------------------------------
def qa_recipe(doc, ctx) -> Iterator[dict[str, Any]]:
    """Per chunk: pairs from the whole-chunk prompt (held to a JSON schema where the engine can,
    else the plain prompt and the Q:/A: parser); when none is usable, one question per
    fact-bearing sentence, answered by that sentence (questions.py); when none of those either,
    the templated fallback (if template_fallback). Every pair is checked against its chunk."""
    gen, p = ctx.need_generator("qa-pairs"), ctx.params
    chunks = ctx.chunks(doc)
    started = time.monotonic()
    seen: set[str] = set()

    def usable(q: str, a: str, chunk: str) -> bool:
        why = pair_problem(q, a, chunk, p.min_overlap)
        if why is None and norm_text(q) in seen:
            why = "duplicate question"
        if why:
            ctx.drop(why, f"Q: {q}\nA: {a}")
            return False
        seen.add(norm_text(q))
        return True

    for i, chunk in enumerate(chunks):
        ctx.check()
        ctx.timed(doc, i, len(chunks), started)
        ctx.counters["qa_chunks"] += 1
        kept = 0
        pairs = chunk_pairs(gen, chunk, p.pairs_per_chunk)
        if pairs is None:
            pairs = parse_pairs(gen(p.qa_prompt.format(n=p.pairs_per_chunk, chunk=chunk)))
        for q, a in pairs:
            if usable(q, a, chunk):
                kept += 1
                ctx.counters["qa_generated"] += 1
                ctx.counters["qa_from_chunk"] += 1
                yield chat_example(q, a, source=doc.file, recipe="qa-pairs", fallback=False, written="chunk",
                                   chunk=chunk)  # the Check's support test reads it
        if kept == 0:
            for q, sentence in sentence_questions(gen, chunk, p.pairs_per_chunk, ctx.drop):
                ctx.check()
                if usable(q, sentence, chunk):
                    kept += 1
                    ctx.counters["qa_generated"] += 1
                    ctx.counters["qa_from_sentences"] += 1
                    yield chat_example(q, sentence, source=doc.file, recipe="qa-pairs", fallback=False,
                                       written="sentence", chunk=chunk)
        if kept == 0 and p.template_fallback:
            topic = fallback_topic(chunk)
            if topic is None:
                ctx.drop("no usable pair and no topic for a fallback", chunk)
                continue
            ctx.counters["qa_fallback"] += 1
            yield chat_example(f"What does the document say about {topic}?", chunk, source=doc.file,
                        recipe="qa-pairs", fallback=True)
        elif kept == 0:
            ctx.drop("no usable pair (template fallbacks are off)", chunk)


def factuality_recipe(doc, ctx) -> Iterator[dict[str, Any]]:
    """qa-pairs' grounded pairs (never its templated fallbacks), each answered closed book by the
    model; where it misses the fact, a preference pair (factuality.py)."""
    from . import factuality, preference

    gen = ctx.need_generator("factuality-pairs")
    grounded = [ex for ex in qa_recipe(doc, ctx) if not ex["meta"].get("fallback")]
    rows = factuality.qa_rows(grounded)
    for row in factuality.pairs(rows, lambda prompt: gen(prompt[-1]["content"]), ctx.counters,
                                ctx.drop, ctx.check):
        yield {**preference.convert(row, "preference"), "meta": {"source": doc.file, "recipe": "factuality-pairs"}}
