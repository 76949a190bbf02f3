"""Recipes: documents and code → training examples. A registry of named recipes (RECIPES).

Owns the registry of seven recipes by what they output: text for continued pretraining
(token-windows, paragraphs, sections), chat pairs (qa-pairs, keyword-pairs, code-functions) and
preference pairs for DPO (factuality-pairs); the text, keyword and code recipes themselves, their
parameters with help text (written once, on RecipeParams), which recipe "auto" runs for a kind
of document, and the counters that the stats report (dropped pairs and why). qa-pairs and
factuality-pairs, with the checks on generated pairs, are questions.py. The generator is any
callable prompt → text (the embedded model by default; tests pass a scripted one).
"""
from __future__ import annotations

import ast
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from ..errors import Cancelled, ConfigError
from ..spec import knob
from . import chunking, clean
from .passages import URLISH, chat_example, keyphrases
from .questions import factuality_recipe, qa_recipe
from .formats import Skip
from .ingest import Document

Generator = Callable[[str], str]

QA_PROMPT = ("Read the passage and write {n} question and answer pairs about facts stated in it. "
             "Answer only from the passage.\nWrite each pair as two lines:\nQ: <question>\n"
             "A: <answer>\n\nPassage:\n{chunk}")
SUMMARY_PROMPT = ("Describe in one sentence what this Python {kind} does.\n\n```python\n{code}\n```")
KEYWORD_PROMPT = "List {n} key terms from this passage, comma separated, nothing else.\n\n{chunk}"



@dataclass(frozen=True)
class RecipeParams:
    max_tokens: int = knob(256, "Token budget per chunk (and the window size for token-windows).",
                           min=16, max=131072)
    overlap: int = knob(32, "Tokens shared by consecutive windows (token-windows only).", min=0)
    pairs_per_chunk: int = knob(2, "Question/answer pairs to ask the generator for per chunk.",
                                min=1, max=20)
    keywords_per_chunk: int = knob(3, "Keywords per chunk for keyword-pairs.", min=1, max=20)
    keyword_source: str = knob("statistical", "How keywords are found: statistical (TextRank key "
                               "phrases, no model) or generator.", choices=("statistical", "generator"))
    code_summaries: str = knob("docstring", "Summaries for code-functions: docstring (no model; "
                               "functions without a docstring are skipped) or generator (the "
                               "model writes the missing ones).", choices=("docstring", "generator"))
    qa_prompt: str = knob(QA_PROMPT, "Prompt for qa-pairs when the generator cannot hold its output "
                                     "to a JSON schema (transformers, an older server); {n} and "
                                     "{chunk} are filled in.")
    template_fallback: bool = knob(True, "qa-pairs: when the generator gives no usable pair for a "
                                   "chunk, keep the chunk with a templated question (labelled "
                                   "'fallback' in the data and counted in the stats).")
    min_overlap: float = knob(0.5, "qa-pairs: share of an answer's content words that must appear "
                              "in its chunk (grounding check).", min=0.0, max=1.0)


@dataclass
class Context:
    tok: Any
    params: RecipeParams
    generator: Generator | None = None
    cancel: threading.Event | None = None
    progress: Callable[[float, str], None] | None = None
    counters: Counter = field(default_factory=Counter)
    dropped: dict[str, list[str]] = field(default_factory=dict)  # reason → a few examples

    def check(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("Cancelled; nothing was saved.")

    def drop(self, reason: str, example: str) -> None:
        """Count a chunk or pair left out, keeping up to three examples of each reason."""
        self.counters[f"dropped: {reason}"] += 1
        shown = self.dropped.setdefault(reason, [])
        if len(shown) < 3:
            shown.append(example if len(example) <= 300 else example[:300] + "…")

    def chunks(self, doc: Document) -> list[str]:
        """The document's paragraph chunks that pass the quality filter (prose only)."""
        out = []
        for c in chunking.paragraphs(self.tok, doc.text, self.params.max_tokens):
            why = clean.chunk_problem(c) if doc.kind == "text" else None
            if why:
                self.drop(f"chunk {why}", c)
            else:
                out.append(c)
        return out

    def timed(self, doc: Document, i: int, n: int, started: float) -> None:
        """Progress with an ETA from the mean time per chunk so far."""
        if not self.progress:
            return
        eta = ""
        if i >= 2:
            left = (time.monotonic() - started) / i * (n - i)
            eta = f", about {int(left // 60)} min {int(left % 60)} s left" if left >= 60 else f", about {int(left)} s left"
        self.progress(i / max(1, n), f"{doc.file}: writing pairs for chunk {i + 1} of {n}{eta}")

    def need_generator(self, recipe: str) -> Generator:
        if self.generator is None:
            raise ConfigError(f"Recipe {recipe} needs a generator model; choose one (the embedded "
                              "model works) or pick another mode.")
        return self.generator


qa_pairs = qa_recipe  # the name tests and callers know


# ---- the recipes ----------------------------------------------------------------------------
def token_windows(doc: Document, ctx: Context) -> Iterator[dict[str, Any]]:
    p = ctx.params
    if p.overlap >= p.max_tokens:
        raise ConfigError(f"overlap ({p.overlap}) must be smaller than max_tokens ({p.max_tokens}).")
    for w in chunking.token_windows(ctx.tok, doc.text, p.max_tokens, p.overlap):
        yield {"text": w, "meta": {"source": doc.file}}


def paragraphs(doc: Document, ctx: Context) -> Iterator[dict[str, Any]]:
    for c in ctx.chunks(doc):
        yield {"text": c, "meta": {"source": doc.file}}


def sections(doc: Document, ctx: Context) -> Iterator[dict[str, Any]]:
    for path, body in chunking.sections(doc.text):
        head = " > ".join(path)
        budget = ctx.params.max_tokens - (chunking.count_tokens(ctx.tok, [head])[0] + 2 if head else 0)
        for c in chunking.paragraphs(ctx.tok, body, max(16, budget)):
            yield {"text": f"{head}\n\n{c}" if head else c, "meta": {"source": doc.file, "section": head}}


def keyword_pairs(doc: Document, ctx: Context) -> Iterator[dict[str, Any]]:
    p = ctx.params
    chunks = ctx.chunks(doc)
    if p.keyword_source == "generator":
        gen = ctx.need_generator("keyword-pairs (generator keywords)")
        kws = []
        for chunk in chunks:
            ctx.check()
            raw = gen(KEYWORD_PROMPT.format(n=p.keywords_per_chunk, chunk=chunk))
            kws.append([w.strip(" .\"'") for w in raw.split(",") if w.strip(" .\"'")][:p.keywords_per_chunk])
    else:
        kws = [[w for w in keyphrases(URLISH.sub(" ", c), p.keywords_per_chunk)] for c in chunks]
    seen: set[str] = set()
    for chunk, keys in zip(chunks, kws):
        for kw in keys:
            if kw.lower() in seen:  # one question with two different answers teaches neither
                ctx.drop("duplicate keyword (already asked about another chunk)", kw)
                continue
            seen.add(kw.lower())
            yield chat_example(f"Tell me about {kw}.", chunk, source=doc.file, recipe="keyword-pairs",
                        keyword=kw)


def code_units(source: str) -> Iterator[tuple[str, str, str | None, str]]:
    """(kind, qualified name, docstring, source) for functions, classes and methods."""
    tree = ast.parse(source)

    def walk(node, prefix=""):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                kind = "class" if isinstance(child, ast.ClassDef) else (
                    "method" if prefix else "function")
                yield kind, prefix + child.name, ast.get_docstring(child), ast.get_source_segment(source, child)
                if isinstance(child, ast.ClassDef):
                    yield from walk(child, prefix + child.name + ".")

    yield from walk(tree)


def code_functions(doc: Document, ctx: Context) -> Iterator[dict[str, Any]]:
    try:
        units = list(code_units(doc.text))
    except SyntaxError as e:
        ctx.counters["code_unparsable_files"] += 1
        raise Skip(f"not valid Python ({e.msg}); no functions taken", e.lineno) from None
    for kind, name, docstring, src in units:
        ctx.check()
        summary = docstring.strip().split("\n\n")[0].replace("\n", " ") if docstring else None
        generated = False
        if not summary and ctx.params.code_summaries == "generator" and ctx.generator:
            summary, generated = ctx.generator(SUMMARY_PROMPT.format(kind=kind, code=src)).strip(), True
        if not summary:
            ctx.counters["code_skipped_no_docstring"] += 1
            ctx.drop("function without a docstring (choose generator summaries to include these)",
                     f"{kind} {name} in {doc.file}")
            continue
        ctx.counters["code_pairs"] += 1
        yield chat_example(f"Write a Python {kind} `{name.split('.')[-1]}`: {summary}",
                    f"```python\n{src}\n```", source=doc.file, recipe="code-functions",
                    name=name, generated_summary=generated)


@dataclass(frozen=True)
class Recipe:
    run: Callable[[Document, Context], Iterator[dict[str, Any]]]
    help: str
    output: str             # "text" (continued pretraining), "chat" (prompt → answer pairs) or
                            # "preference" (prompt, chosen, rejected: DPO)
    prose_only: bool = False  # meaningless for source code: code documents use code-functions


RECIPES: dict[str, Recipe] = {
    "token-windows": Recipe(token_windows, "Fixed token windows with overlap, for continued "
                            "pretraining on raw text.", "text"),
    "paragraphs": Recipe(paragraphs, "Paragraph chunks up to the token budget, split only at "
                         "sentence ends (continued pretraining).", "text"),
    "sections": Recipe(sections, "One chunk per markdown/docx heading section, with the heading "
                       "path kept as context.", "text", prose_only=True),
    "qa-pairs": Recipe(qa_recipe, "Question and answer pairs per chunk, written by a local "
                       "generator model and checked against the chunk.", "chat", prose_only=True),
    "factuality-pairs": Recipe(factuality_recipe, "Preference pairs for DPO: the qa-pairs recipe's "
                               "grounded answers, chosen over the model's own closed-book answers "
                               "where those miss the fact.", "preference", prose_only=True),
    "keyword-pairs": Recipe(keyword_pairs, "'Tell me about <keyword>.' → chunk; key phrases found "
                            "by TextRank (no model) or by the generator.", "chat", prose_only=True),
    "code-functions": Recipe(code_functions, "Summary → function pairs from Python source, using "
                             "docstrings (or the generator for the rest).", "chat"),
}
# What recipe "auto" runs for a document of each kind (ingest.Document.kind).
AUTO: dict[str, str] = {"code": "code-functions"}
AUTO_DEFAULT = "paragraphs"


def recipe_for(requested: str, doc_kind: str) -> str:
    """The recipe that runs on a document: "auto" picks by kind; prose recipes skip code."""
    if requested == "auto" or (doc_kind == "code" and RECIPES[requested].prose_only):
        return AUTO.get(doc_kind, AUTO_DEFAULT)
    return requested


def has_chat(counts: dict[str, int]) -> bool:
    """Whether a dataset's formats and recipes (its stats' `formats`) include chat examples:
    every structured format but plain text is chat; recipes say what they output."""
    return any(RECIPES[n].output in ("chat", "preference") if n in RECIPES else n != "text" for n in counts)
