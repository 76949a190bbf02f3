"""Files → items: structured records (with file and line) and documents (text with a kind).

Owns reading every supported upload safely: encoding detection (BOM, UTF-8, then a detected
legacy encoding), binary-file refusal, streaming JSONL line by line (bounded memory), PDFs
(pypdf), .docx (python-docx, headings kept), source code, and zip archives with limits on
entry count and unpacked size and refusal of `../` or absolute entry paths. Problems are
reported as Issue rows (file, line, reason); good rows are always kept.
"""
from __future__ import annotations

import csv
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

STRUCTURED = {".jsonl", ".json", ".csv", ".tsv", ".parquet"}
DOCUMENTS = {".txt", ".md", ".markdown", ".pdf", ".docx"}
CODE = {".py"}
ARCHIVES = {".zip"}
SUPPORTED = STRUCTURED | DOCUMENTS | CODE | ARCHIVES

ZIP_MAX_FILES = 2000            # entries read from one archive
ZIP_MAX_BYTES = 512 * 2**20     # unpacked bytes read from one archive (a bomb stops here)
ZIP_MAX_RATIO = 200             # an entry compressed more than 200:1 is treated as a bomb


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


def decode(raw: bytes, name: str) -> tuple[str | None, str | None]:
    """Return (text, None) or (None, reason). Handles BOMs, UTF-8, then detected encodings."""
    for bom, enc in ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):
        if raw.startswith(bom):
            try:
                return raw.decode(enc), None
            except UnicodeDecodeError as e:
                return None, f"starts with a {enc} byte-order mark but does not decode ({e.reason})"
    if not raw.strip():
        return None, "the file is empty"
    if b"\x00" in raw[:8192]:
        return None, ("looks like a binary file (it contains NUL bytes), not text. Upload the "
                      "original document (.pdf, .docx, .txt) instead")
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    matches = from_bytes(raw[:1_000_000])
    best = matches.best()
    if best is None:
        return None, "is not text in any encoding we recognise; save it as UTF-8 and upload again"
    # Short Western texts fit several code pages equally well; Windows-1252 is the common one.
    encoding = "cp1252" if any(m.encoding == "cp1252" for m in matches) else best.encoding
    return raw.decode(encoding, errors="replace"), None


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
        else:
            yield from iter_bytes(path.read_bytes(), ext, issues, name)
    except OSError as e:
        issues.append(Issue(name, None, f"cannot be read ({e.strerror or e})"))


def iter_bytes(raw: bytes, ext: str, issues: list[Issue], name: str) -> Iterator[Record | Document]:
    if ext == ".pdf":
        yield from read_pdf(raw, issues, name)
        return
    if ext == ".docx":
        yield from read_docx(raw, issues, name)
        return
    if ext == ".parquet":
        import pyarrow.parquet as pq

        yield from _parquet_rows(pq.ParquetFile(io.BytesIO(raw)), name)
        return
    text, why = decode(raw, name)
    if text is None:
        issues.append(Issue(name, None, why))
        return
    if ext == ".jsonl":
        yield from _jsonl_lines(io.StringIO(text), issues, name)
    elif ext == ".json":
        yield from read_json(text, issues, name)
    elif ext in (".csv", ".tsv"):
        yield from read_csv(text, ext, issues, name)
    elif ext in CODE:
        yield Document(text, name, "code", {"language": "python"})
    else:
        yield Document(text, name, "text", {"markdown": ext in (".md", ".markdown")})


def iter_jsonl(path: Path, issues: list[Issue], name: str) -> Iterator[Record]:
    """Stream a JSONL file line by line: memory stays bounded whatever its size."""
    with open(path, "rb") as f:
        head = f.read(8192)
        if head[:2] in (b"\xff\xfe", b"\xfe\xff"):  # UTF-16 cannot be split on b"\n"
            yield from iter_bytes(head + f.read(), ".jsonl", issues, name)
            return
        if b"\x00" in head:
            issues.append(Issue(name, None, "looks like a binary file (it contains NUL bytes), "
                                            "not JSON lines"))
            return
        f.seek(0)

        def lines() -> Iterator[str]:
            for i, raw in enumerate(f):
                if i == 0:
                    raw = raw.removeprefix(b"\xef\xbb\xbf")
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError:  # a legacy-encoded line (latin-1/cp1252)
                    yield raw.decode("cp1252", errors="replace")

        yield from _jsonl_lines(lines(), issues, name)


def _jsonl_lines(lines, issues: list[Issue], name: str) -> Iterator[Record]:
    seen_any = False
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        seen_any = True
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            issues.append(Issue(name, i, f"not valid JSON ({e.msg} at column {e.colno})"))
            continue
        if not isinstance(obj, dict):
            issues.append(Issue(name, i, f"expected a JSON object per line, got {type(obj).__name__}"))
            continue
        yield Record(obj, name, i)
    if not seen_any:
        issues.append(Issue(name, None, "the file is empty"))


def read_json(text: str, issues: list[Issue], name: str) -> Iterator[Record]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        issues.append(Issue(name, e.lineno, f"not valid JSON ({e.msg}). If it has one object per "
                                            "line, rename it to .jsonl"))
        return
    if isinstance(obj, dict):  # {"data": [...]} style wrappers
        lists = [v for v in obj.values() if isinstance(v, list) and v and isinstance(v[0], dict)]
        if len(lists) == 1:
            obj = lists[0]
    if not isinstance(obj, list):
        issues.append(Issue(name, None, "the JSON file is not a list of records; expected "
                                        "[{...}, {...}] (or use .jsonl, one object per line)"))
        return
    for i, row in enumerate(obj, 1):
        if isinstance(row, dict):
            yield Record(row, name, i)
        else:
            issues.append(Issue(name, i, f"item {i} is {type(row).__name__}, not an object"))


def read_csv(text: str, ext: str, issues: list[Issue], name: str) -> Iterator[Record]:
    reader = csv.reader(io.StringIO(text), delimiter="\t" if ext == ".tsv" else ",")
    header = next(reader, None)
    if not header or not any(h.strip() for h in header):
        issues.append(Issue(name, 1, "no header row; the first row must name the columns"))
        return
    header = [h.strip() for h in header]
    for row in reader:
        line = reader.line_num
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            issues.append(Issue(name, line, f"has {len(row)} fields but the header has "
                                            f"{len(header)} ({', '.join(header)})"))
            continue
        yield Record(dict(zip(header, row)), name, line)


def iter_parquet(path: Path, issues: list[Issue], name: str) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:
        issues.append(Issue(name, None, f"not a readable Parquet file ({e})"))
        return
    yield from _parquet_rows(pf, name)


def _parquet_rows(pf, name: str) -> Iterator[Record]:
    n = 0
    for batch in pf.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            n += 1
            yield Record(row, name, n)


def read_pdf(raw: bytes, issues: list[Issue], name: str) -> Iterator[Document]:
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(raw))
        pages = [(p.extract_text() or "") for p in reader.pages]
    except Exception as e:
        issues.append(Issue(name, None, f"not a readable PDF ({type(e).__name__}: {e})"))
        return
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text.strip():
        issues.append(Issue(name, None, "the PDF has no text layer (scanned images?). Run OCR on "
                                        "it first (e.g. ocrmypdf) or upload the text"))
        return
    yield Document(text, name, "text", {"pages": len(pages)})


def read_docx(raw: bytes, issues: list[Issue], name: str) -> Iterator[Document]:
    import docx

    try:
        d = docx.Document(io.BytesIO(raw))
    except Exception as e:
        issues.append(Issue(name, None, f"not a readable .docx file ({type(e).__name__})"))
        return
    parts = []
    for p in d.paragraphs:
        style = (p.style.name if p.style is not None else "") or ""
        text = p.text.strip()
        if not text:
            continue
        if style.startswith("Heading") and style.split()[-1].isdigit():
            parts.append("#" * int(style.split()[-1]) + " " + text)
        elif style == "Title":
            parts.append("# " + text)
        else:
            parts.append(text)
    if not parts:
        issues.append(Issue(name, None, "the .docx has no text"))
        return
    yield Document("\n\n".join(parts), name, "text", {"markdown": True})


def safe_member(info: zipfile.ZipInfo) -> str | None:
    """The reason an archive entry is unsafe to read, or None."""
    p = PurePosixPath(info.filename.replace("\\", "/"))
    if p.is_absolute() or info.filename.startswith(("/", "\\")) or (len(p.parts) and ":" in p.parts[0]):
        return "absolute path in archive; skipped"
    if ".." in p.parts:
        return "path escapes the archive ('..'); skipped"
    return None


def iter_zip(path: Path, issues: list[Issue], name: str) -> Iterator[Record | Document]:
    """Read entries in memory (nothing is extracted to disk), bounded by count and size."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        issues.append(Issue(name, None, f"not a readable zip archive ({e})"))
        return
    total = 0
    with zf:
        entries = [i for i in zf.infolist() if not i.is_dir()]
        if len(entries) > ZIP_MAX_FILES:
            issues.append(Issue(name, None, f"has {len(entries)} files; only the first "
                                            f"{ZIP_MAX_FILES} are read"))
            entries = entries[:ZIP_MAX_FILES]
        for info in entries:
            inner = f"{name}/{info.filename}"
            why = safe_member(info)
            if why:
                issues.append(Issue(inner, None, why))
                continue
            if kind_of(info.filename) in ("unsupported", "archive"):
                if not PurePosixPath(info.filename).name.startswith((".", "__MACOSX")):
                    issues.append(Issue(inner, None, "unsupported file type inside the archive; skipped"))
                continue
            if info.compress_size and info.file_size / info.compress_size > ZIP_MAX_RATIO:
                issues.append(Issue(inner, None, f"compression ratio over {ZIP_MAX_RATIO}:1 "
                                                 "(a zip bomb?); skipped"))
                continue
            if total + info.file_size > ZIP_MAX_BYTES:
                issues.append(Issue(name, None, f"unpacked size would pass {ZIP_MAX_BYTES >> 20} MB; "
                                                "the remaining entries were skipped"))
                break
            with zf.open(info) as f:  # read at most the declared size (+1 to catch lies)
                raw = f.read(info.file_size + 1)
            if len(raw) > info.file_size:
                issues.append(Issue(inner, None, "entry is larger than its header says; skipped"))
                continue
            total += len(raw)
            yield from iter_bytes(raw, PurePosixPath(info.filename).suffix.lower(), issues, inner)
