"""Held-out questions: the user's own file of questions a run never trains on.

Owns reading such a file (any structured format the Data step reads: question/answer columns,
prompt/completion, chat messages; an optional `expect` column names the key fact a right answer
must state — without one, the answer's key fact is taken: its first number, else its first name,
scoring.key_facts), refusing rows that are not held out at all (the same question is in the
training data), and keeping them beside the dataset version as heldout.jsonl. The report and
Compare read them back with `load`; the shipped samples bring their own paraphrased questions
(SAMPLE_HELDOUT, found by `sample_file` when the sample itself is prepared).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import paths
from ..errors import DataError

FILE = "heldout.jsonl"
SAMPLE = paths.ASSETS / "sample"
SAMPLE_HELDOUT = {"product_faq.jsonl": SAMPLE / "product_faq_heldout.jsonl",  # shipped data → its paraphrases
                  "arithmetic_qa.jsonl": SAMPLE / "arithmetic_qa_heldout.jsonl",
                  "contacts_json.jsonl": SAMPLE / "contacts_json_heldout.jsonl"}
EXPECT_KEYS = ("expect", "expected", "key_fact", "fact")


def read(path: Path, issues: list, name: str | None = None) -> list[dict[str, Any]]:
    """Question/answer/expect rows of a held-out file; problems go to `issues` (file, line)."""
    from ..scoring import key_facts
    from . import formats
    from .ingest import Issue, Record, iter_path

    name = name or Path(path).name
    rows = []
    for item in iter_path(Path(path), issues, name):
        if not isinstance(item, Record):
            issues.append(Issue(name, None, "held-out questions come as a table (question and "
                                            "answer columns) or chat examples, not a document"))
            return rows
        try:
            ex, _ = formats.convert(item.data, None)
        except formats.Skip as e:
            issues.append(Issue(name, item.line, str(e)))
            continue
        msgs = ex.get("messages") or []
        if len(msgs) < 2 or msgs[-1]["role"] != "assistant":
            issues.append(Issue(name, item.line, "a held-out row needs a question and its answer"))
            continue
        answer = msgs[-1]["content"]
        question = msgs[-2]["content"]
        expect = next((str(item.data[k]).strip() for k in EXPECT_KEYS if item.data.get(k)), None)
        if expect is None:
            facts = key_facts(answer, question)
            expect = facts[0] if facts else None
        rows.append({"messages": msgs[:-1], "question": question, "answer": answer,
                     "expect": expect, "line": item.line})
    return rows


def not_in_training(rows: list[dict[str, Any]], training: list[dict[str, Any]], issues: list,
                    name: str) -> list[dict[str, Any]]:
    """The rows whose question is not asked in the training examples (compared normalised)."""
    from ..scoring import norm
    from .ingest import Issue

    asked = {norm(m["content"]) for ex in training for m in ex.get("messages", []) if m["role"] == "user"}
    kept = []
    for r in rows:
        if norm(r["question"]) in asked:
            issues.append(Issue(name, r["line"], "this question is also in the training data, so "
                                                 "it is not held out; left out of the held-out set"))
        else:
            kept.append(r)
    return kept


def write(folder: Path, rows: list[dict[str, Any]]) -> None:
    with open(Path(folder) / FILE, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({k: r.get(k) for k in ("messages", "answer", "expect", "line")},
                               ensure_ascii=False) + "\n")


def load(folder: Path, limit: int | None = None) -> list[dict[str, Any]] | None:
    """The dataset version's held-out rows ({messages, answer, expect, line: in the user's
    file}), or None without a file."""
    path = Path(folder) / FILE
    if not path.exists():
        return None
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    return rows[:limit] if limit else rows


def sample_file(files: list[str]) -> Path | None:
    """The shipped paraphrased questions when the shipped sample itself is prepared."""
    for f in files:
        for data, held in SAMPLE_HELDOUT.items():
            try:
                if (Path(f).stat().st_size == (SAMPLE / data).stat().st_size
                        and Path(f).read_bytes() == (SAMPLE / data).read_bytes()):
                    return held
            except OSError:
                continue
    return None


def as_file(folder: Path, tmp: Path) -> str | None:
    """The dataset version's held-out questions as a file `prepare` reads (None without any):
    pairs made from a Q/A set ask the same facts, so its held-out questions score them too."""
    rows = load(folder)
    if not rows:
        return None
    path = tmp / FILE
    path.write_text("".join(json.dumps({"question": r["messages"][-1]["content"], "answer": r["answer"],
                                        "expect": r["expect"]}, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
    return str(path)


def for_check(folder: Path, path: str | None) -> list[dict[str, Any]] | None:
    """Held-out rows to look for leaks with: a file the user names (read like any upload),
    else the version's own."""
    if not path:
        return load(folder)
    p = Path(path)
    if not p.is_file():
        raise DataError(f"The held-out file {path} does not exist. Give the path of a .jsonl or "
                        ".csv file of question/answer rows (the questions the model must not train on).")
    issues: list = []
    rows = read(p, issues)
    if not rows:
        why = "; ".join(f"line {i.line}: {i.reason}" if i.line else i.reason for i in issues[:3])
        raise DataError(f"The held-out file {p.name} gave no question/answer rows "
                        f"({why or 'it is empty'}). Give one JSON object per line with question "
                        "and answer (or a CSV with those columns).")
    return rows
