"""What reading an upload yields: Issue rows, structured Records and Documents, the file kinds
we accept, and the size limits every reader shares.

Owns the item types and the kind of a file name; not the reading itself (ingest.py dispatches,
tables.py, documents.py and archive.py read) nor text decoding (decoding.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STRUCTURED = {".jsonl", ".json", ".csv", ".tsv", ".parquet"}
DOCUMENTS = {".txt", ".md", ".markdown", ".pdf", ".docx", ".html", ".htm"}
CODE = {".py"}
ARCHIVES = {".zip"}
SUPPORTED = STRUCTURED | DOCUMENTS | CODE | ARCHIVES

MAX_LINE_BYTES = 4 * 2**20      # one JSONL line = one example; 4 MB of text is far past any max length
MAX_WHOLE_FILE = 64 * 2**20     # json/csv/pdf/docx (and zip entries) are parsed whole: cap them
TEXT_BLOCK = 2**20              # big .txt/.md files are read in ~1 MB blocks cut at blank lines


@dataclass
class Issue:
    file: str
    line: int | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "reason": self.reason}


@dataclass
class Record:
    """One structured row: a dict from a JSONL/JSON/CSV/Parquet file."""
    data: dict[str, Any]
    file: str
    line: int | None


@dataclass
class Document:
    """One document: plain text, with markdown-like '#' headings for docx; kind = text|code."""
    text: str
    file: str
    kind: str = "text"
    meta: dict[str, Any] = field(default_factory=dict)


def kind_of(path: str) -> str:
    ext = Path(path).suffix.lower()
    if ext in STRUCTURED:
        return "structured"
    if ext in CODE:
        return "code"
    if ext in DOCUMENTS:
        return "document"
    if ext in ARCHIVES:
        return "archive"
    return "unsupported"
