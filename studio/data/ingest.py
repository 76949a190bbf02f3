"""Files → items: structured records (with file and line) and documents (text with a kind).

Owns the entry point, one uploaded path → items, and the dispatch by file type: tables
(tables.py: JSONL streamed line by line, JSON, CSV/TSV, Parquet), documents (documents.py: text,
markdown, HTML, code, PDF, .docx) and zip archives (archive.py: limits on entry count and
unpacked size, refusal of `../` or absolute entry paths), with text decoding in decoding.py and
the item types in items.py (re-exported here). Problems are reported as Issue rows (file, line,
reason); good rows are always kept.
"""
from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath
from typing import Iterator

from .archive import ZIP_MAX_BYTES, entries, read_whole, refusal, stream_jsonl
from .documents import iter_text_blocks, read_docx, read_pdf, read_text
from .items import MAX_WHOLE_FILE, SUPPORTED, TEXT_BLOCK, Document, Issue, Record, kind_of
from .tables import iter_jsonl, iter_parquet, parquet_bytes, read_table_bytes

__all__ = ["SUPPORTED", "Document", "Issue", "Record", "kind_of", "iter_path", "iter_bytes"]


def iter_path(path: Path, issues: list[Issue], display: str | None = None) -> Iterator[Record | Document]:
    """Yield records/documents from one uploaded file (zip archives are opened recursively)."""
    name = display or path.name
    k = kind_of(path.name)
    if k == "unsupported":
        issues.append(Issue(name, None, f"unsupported file type '{path.suffix or '(none)'}'; "
                                        f"supported: {', '.join(sorted(SUPPORTED))}"))
        return
    if k == "archive":
        yield from iter_zip(path, issues, name)
        return
    ext = path.suffix.lower()
    try:
        if ext == ".jsonl":
            yield from iter_jsonl(path, issues, name)
        elif ext == ".parquet":
            yield from iter_parquet(path, issues, name)
        elif ext in (".txt", ".md", ".markdown") and path.stat().st_size > TEXT_BLOCK:
            yield from iter_text_blocks(path, ext, issues, name)
        elif path.stat().st_size > MAX_WHOLE_FILE:
            issues.append(Issue(name, None, f"is {path.stat().st_size / 2**20:.0f} MB; {ext} files "
                                            f"are read whole and the limit is {MAX_WHOLE_FILE >> 20} MB. "
                                            "Split it, or convert tables to .jsonl (read line by line)"))
        else:
            yield from iter_bytes(path.read_bytes(), ext, issues, name)
    except OSError as e:
        issues.append(Issue(name, None, f"cannot be read ({e.strerror or e})"))


def iter_bytes(raw: bytes, ext: str, issues: list[Issue], name: str) -> Iterator[Record | Document]:
    """One file held in memory (an archive entry, or a file read whole), by its extension."""
    if ext == ".pdf":
        yield from read_pdf(raw, issues, name)
    elif ext == ".docx":
        yield from read_docx(raw, issues, name)
    elif ext == ".parquet":
        yield from parquet_bytes(raw, issues, name)
    elif ext in (".jsonl", ".json", ".csv", ".tsv"):
        yield from read_table_bytes(raw, ext, issues, name)
    else:
        yield from read_text(raw, ext, issues, name)


def iter_zip(path: Path, issues: list[Issue], name: str) -> Iterator[Record | Document]:
    """Read entries in memory (nothing is extracted to disk), bounded by count and size."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        issues.append(Issue(name, None, f"not a readable zip archive ({e})"))
        return
    total = 0
    with zf:
        for info in entries(zf, issues, name):
            inner = f"{name}/{info.filename}"
            why = refusal(info)
            if why is not None:
                if why:
                    issues.append(Issue(inner, None, why))
                continue
            if total + info.file_size > ZIP_MAX_BYTES:
                issues.append(Issue(name, None, f"unpacked size would pass {ZIP_MAX_BYTES >> 20} MB; "
                                                "the remaining entries were skipped"))
                break
            ext = PurePosixPath(info.filename).suffix.lower()
            total += info.file_size
            if ext == ".jsonl":
                yield from stream_jsonl(zf, info, issues, inner)
            elif (raw := read_whole(zf, info, issues, inner)) is not None:
                yield from iter_bytes(raw, ext, issues, inner)
