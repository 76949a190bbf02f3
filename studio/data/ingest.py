"""Files → items: structured records (with file and line) and documents (text with a kind).

Owns reading every supported upload safely: encoding detection (BOM, UTF-8, then a detected
legacy encoding), binary-file refusal, streaming JSONL line by line (bounded memory), PDFs
(pdfminer.six layout, cleaned in clean.py), HTML pages (as markdown), .docx (python-docx, headings kept), source code, and zip archives with limits on
entry count and unpacked size and refusal of `../` or absolute entry paths. Problems are
reported as Issue rows (file, line, reason); good rows are always kept.
"""
from __future__ import annotations

import csv
import io
import json
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

STRUCTURED = {".jsonl", ".json", ".csv", ".tsv", ".parquet"}
DOCUMENTS = {".txt", ".md", ".markdown", ".pdf", ".docx", ".html", ".htm"}
CODE = {".py"}
ARCHIVES = {".zip"}
SUPPORTED = STRUCTURED | DOCUMENTS | CODE | ARCHIVES

ZIP_MAX_FILES = 2000            # entries read from one archive
ZIP_MAX_BYTES = 512 * 2**20     # unpacked bytes read from one archive (a bomb stops here)
ZIP_MAX_RATIO = 100             # an entry compressed more than 100:1 is treated as a bomb
MAX_LINE_BYTES = 4 * 2**20      # one JSONL line = one example; 4 MB of text is far past any max length
MAX_WHOLE_FILE = 64 * 2**20     # json/csv/pdf/docx (and zip entries) are parsed whole: cap them
TEXT_CONTROLS = frozenset(b"\t\n\x0b\x0c\r\x1b")  # control bytes real text contains
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
    head = raw[:8192]
    if head.count(b"\x00") * 4 > len(head):  # a quarter or more NULs: UTF-16 without a BOM?
        for enc, zeros in (("utf-16-le", head[1::2]), ("utf-16-be", head[0::2])):
            if zeros.count(0) * 10 >= len(zeros) * 9:
                try:
                    return raw.decode(enc), None
                except UnicodeDecodeError:
                    break
    if sum(b < 32 and b not in TEXT_CONTROLS for b in head) * 20 > len(head):
        return None, ("looks like a binary file (a program or an image), not text. Upload the "
                      "original document (.pdf, .docx, .txt) or save it as UTF-8 text")
    # a few stray NULs (a bad export) are kept here: each reader removes them and says where
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


NUL_NOTE = "NUL byte{s} (\\x00, left by a broken export) removed; the {what} was kept"


def strip_nul(text: str) -> tuple[str, int]:
    """`text` without NUL characters, and how many there were."""
    n = text.count("\x00")
    return (text.replace("\x00", ""), n) if n else (text, 0)


def nul_issue(name: str, line: int | None, n: int, what: str) -> Issue:
    return Issue(name, line, f"{n} " + NUL_NOTE.format(s="" if n == 1 else "s", what=what))


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
    if ext == ".pdf":
        yield from read_pdf(raw, issues, name)
        return
    if ext == ".docx":
        yield from read_docx(raw, issues, name)
        return
    if ext == ".parquet":
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(io.BytesIO(raw))
        except Exception as e:
            issues.append(Issue(name, None, f"not a readable Parquet file ({e})"))
            return
        yield from _parquet_rows(pf, name, issues)
        return
    text, why = decode(raw, name)
    if text is None:
        issues.append(Issue(name, None, why))
        return
    if ext not in (".jsonl", ".csv", ".tsv"):  # those say it per line or row
        text, nuls = strip_nul(text)
        if nuls:
            issues.append(nul_issue(name, None, nuls, "text"))
    if ext == ".jsonl":
        yield from _jsonl_lines(io.StringIO(text), issues, name)
    elif ext == ".json":
        yield from read_json(text, issues, name)
    elif ext in (".csv", ".tsv"):
        yield from read_csv(text, ext, issues, name)
    elif ext in CODE:
        yield Document(text, name, "code", {"language": "python"})
    elif ext in (".html", ".htm") or (ext == ".txt" and looks_like_html(text)):
        from .clean import html_markdown

        text = html_markdown(text)
        if text.strip():
            yield Document(text, name, "text", {"markdown": True})
        else:
            issues.append(Issue(name, None, "the page has no text once menus, scripts and styles "
                                            "are left out"))
    else:
        yield Document(text, name, "text", {"markdown": ext in (".md", ".markdown")})


def looks_like_html(text: str) -> bool:
    """A .txt that is really a saved web page (tags everywhere)."""
    head = text[:20000]
    return bool(re.search(r"<(html|body|div|p|h[1-6]|table)\b", head, re.I)) and \
        len(re.findall(r"</?[a-zA-Z][^>]*>", head)) > 10


def bounded_lines(f, limit: int = MAX_LINE_BYTES) -> Iterator[bytes | None]:
    """Lines of a binary file; a line longer than `limit` is skipped without being held in
    memory and yields None in its place (so line numbers stay right)."""
    while True:
        line = f.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith(b"\n"):
            while (rest := f.readline(limit)) and not rest.endswith(b"\n"):
                pass
            yield None
        else:
            yield line


def iter_text_blocks(path: Path, ext: str, issues: list[Issue], name: str) -> Iterator[Document]:
    """A big text file as ~1 MB documents cut at blank lines, so memory stays flat whatever
    its size (a paragraph is never split; a block without any blank line is cut at a line)."""
    with open(path, "rb") as f:
        head = f.read(8192)
        if head[:2] in (b"\xff\xfe", b"\xfe\xff") or head.count(b"\x00") * 4 > len(head):
            if path.stat().st_size > MAX_WHOLE_FILE:
                issues.append(Issue(name, None, "is a large UTF-16 or binary file; save it as UTF-8 "
                                                "text and upload it again"))
                return
            yield from iter_bytes(head + f.read(), ext, issues, name)
            return
        f.seek(0)
        block: list[bytes] = []
        size, part = 0, 0
        for line in bounded_lines(f, TEXT_BLOCK):
            if line is None:
                issues.append(Issue(name, None, f"a line over {TEXT_BLOCK >> 20} MB was skipped"))
                continue
            block.append(line)
            size += len(line)
            if size >= TEXT_BLOCK and (not line.strip() or size >= 2 * TEXT_BLOCK):
                part += 1
                yield from _text_block(b"".join(block), ext, issues, name, part)
                block, size = [], 0
        if block:
            yield from _text_block(b"".join(block), ext, issues, name, part + 1)


def _text_block(raw: bytes, ext: str, issues: list[Issue], name: str, part: int) -> Iterator[Document]:
    text, why = decode(raw, name)
    if text is None:
        if part == 1 or "empty" not in why:
            issues.append(Issue(name, None, why))
        return
    text, nuls = strip_nul(text)
    if nuls:
        issues.append(nul_issue(name, None, nuls, f"text (part {part})"))
    yield Document(text, name, "text", {"markdown": ext in (".md", ".markdown"), "part": part})


def iter_jsonl(path: Path, issues: list[Issue], name: str) -> Iterator[Record]:
    """Stream a JSONL file line by line: memory stays bounded whatever its size."""
    with open(path, "rb") as f:
        yield from jsonl_stream(f, issues, name)


def jsonl_stream(f, issues: list[Issue], name: str) -> Iterator[Record]:
    head = f.read(8192)
    if head[:2] in (b"\xff\xfe", b"\xfe\xff") or head.count(b"\x00") * 4 > len(head):
        rest = f.read(MAX_WHOLE_FILE)  # UTF-16 (or binary) cannot be split on b"\n"
        yield from iter_bytes(head + rest, ".jsonl", issues, name)
        return
    f.seek(0)
    legacy: list[int] = []

    def lines() -> Iterator[str | None]:
        for i, raw in enumerate(bounded_lines(f), 1):
            if raw is None:
                issues.append(Issue(name, i, f"the line is over {MAX_LINE_BYTES >> 20} MB, too "
                                             "long for one example; skipped"))
                yield None
                continue
            if i == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:  # a legacy-encoded line (latin-1/cp1252)
                legacy.append(i)
                yield raw.decode("cp1252", errors="replace")

    yield from _jsonl_lines(lines(), issues, name)
    if legacy:
        shown = ", ".join(map(str, legacy[:5])) + (" …" if len(legacy) > 5 else "")
        lines_are = "1 line is" if len(legacy) == 1 else f"{len(legacy)} lines are"
        issues.append(Issue(name, None, f"{lines_are} not UTF-8 (line {shown}); "
                                        "they were read as Windows-1252. Check their accents, or "
                                        "save the file as UTF-8"))


def parse_json(text: str) -> tuple[Any, str | None, int | None]:
    """(object, None, None) or (None, reason, line): JSON that is too deep, has absurd numbers
    or is malformed is a reason, never an exception."""
    try:
        return json.loads(text), None, None
    except json.JSONDecodeError as e:
        what = e.msg.removesuffix(" at")  # "Unterminated string starting at" + a position
        return None, f"not valid JSON ({what}; line {e.lineno}, column {e.colno})", e.lineno
    except RecursionError:
        return None, "the JSON is nested too deeply (thousands of levels); flatten it", None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        return None, f"the JSON holds a value we cannot read ({str(e).split(';')[0]})", None


def _jsonl_lines(lines, issues: list[Issue], name: str) -> Iterator[Record]:
    seen_any = False
    for i, line in enumerate(lines, 1):
        if line is None:
            seen_any = True
            continue
        if not line.strip():
            continue
        seen_any = True
        line, nuls = strip_nul(line)
        if nuls:
            issues.append(nul_issue(name, i, nuls, "line"))
        obj, why, _ = parse_json(line)
        if why:
            issues.append(Issue(name, i, why.replace("; line 1, column", "; column")))
            continue
        if not isinstance(obj, dict):
            issues.append(Issue(name, i, f"expected a JSON object per line, got {type(obj).__name__}"))
            continue
        yield Record(obj, name, i)
    if not seen_any:
        issues.append(Issue(name, None, "the file is empty"))


def read_json(text: str, issues: list[Issue], name: str) -> Iterator[Record]:
    obj, why, line = parse_json(text)
    if why:
        hint = " If it has one object per line, rename it to .jsonl." if line else ""
        issues.append(Issue(name, line, why + hint))
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


def _csv_rows(reader, issues: list[Issue], name: str) -> Iterator[list[str]]:
    """Rows of a csv.reader; a malformed row (or a cell over the size limit) is an Issue."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            issues.append(Issue(name, reader.line_num, f"not a valid CSV row ({e})"))
            continue
        yield row


def read_csv(text: str, ext: str, issues: list[Issue], name: str) -> Iterator[Record]:
    csv.field_size_limit(MAX_LINE_BYTES)  # the default 128 KB refuses long answers outright
    reader = csv.reader(io.StringIO(text), delimiter="\t" if ext == ".tsv" else ",")
    rows = _csv_rows(reader, issues, name)
    header = next(rows, None)
    if not header or not any(h.strip() for h in header):
        issues.append(Issue(name, 1, "no header row; the first row must name the columns"))
        return
    header = [h.strip() for h in header]
    for row in rows:
        line = reader.line_num
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            issues.append(Issue(name, line, f"has {len(row)} fields but the header has "
                                            f"{len(header)} ({', '.join(header)})"))
            continue
        cleaned = [strip_nul(c) for c in row]
        nuls = sum(n for _, n in cleaned)
        if nuls:
            issues.append(nul_issue(name, line, nuls, "row"))
        yield Record(dict(zip(header, (c for c, _ in cleaned))), name, line)


def iter_parquet(path: Path, issues: list[Issue], name: str) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:
        issues.append(Issue(name, None, f"not a readable Parquet file ({e})"))
        return
    yield from _parquet_rows(pf, name)


def _parquet_rows(pf, name: str, issues: list[Issue] | None = None) -> Iterator[Record]:
    n = 0
    try:
        for batch in pf.iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                n += 1
                yield Record(row, name, n)
    except Exception as e:  # a damaged row group: keep what was read, say where it stopped
        if issues is None:
            raise
        issues.append(Issue(name, n + 1, f"the Parquet file is damaged from here on ({e})"))


def read_pdf(raw: bytes, issues: list[Issue], name: str) -> Iterator[Document]:
    """A PDF as clean markdown-like text (clean.pdf_markdown: layout boxes, headings, code,
    no contents pages, running headers or page numbers)."""
    from pypdf import PdfReader

    from .clean import pdf_markdown

    try:
        reader = PdfReader(io.BytesIO(raw))
        if reader.is_encrypted and not reader.decrypt(""):  # many PDFs lock editing, not reading
            issues.append(Issue(name, None, "the PDF is password-protected. Remove the password "
                                            "(open it and save an unprotected copy, or `qpdf "
                                            "--decrypt`) and upload it again"))
            return
        text, pages, notes = pdf_markdown(raw)
    except Exception as e:
        issues.append(Issue(name, None, f"not a readable PDF (the file is damaged or not a PDF: "
                                        f"{type(e).__name__}: {e})"))
        return
    if not text.strip():
        issues.append(Issue(name, None, f"the PDF has no text layer ({pages} pages of scanned "
                                        "images?). Run OCR on it first (e.g. `ocrmypdf in.pdf "
                                        "out.pdf`) or upload the text"))
        return
    yield Document(text, name, "text", {"pages": pages, "markdown": True, "cleaned": dict(notes)})


def read_docx(raw: bytes, issues: list[Issue], name: str) -> Iterator[Document]:
    import docx

    try:
        d = docx.Document(io.BytesIO(raw))
    except Exception as e:
        issues.append(Issue(name, None, "not a readable .docx file: it is damaged, or not a Word "
                                        f"document saved as .docx ({type(e).__name__}: {e}). Open "
                                        "it in Word or LibreOffice and save it again"))
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
        if not entries:
            issues.append(Issue(name, None, "the zip archive is empty"))
            return
        if len(entries) > ZIP_MAX_FILES:
            issues.append(Issue(name, None, f"has {len(entries)} files; only the first "
                                            f"{ZIP_MAX_FILES} are read"))
            entries = entries[:ZIP_MAX_FILES]
        for info in entries:
            inner = f"{name}/{info.filename}"
            why = safe_member(info)
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                why = "a symbolic link, not a file; skipped"
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
            ext = PurePosixPath(info.filename).suffix.lower()
            total += info.file_size
            if ext == ".jsonl":  # streamed line by line, like a file on disk
                try:
                    with zf.open(info) as f:
                        yield from jsonl_stream(_Seekable(f, zf, info), issues, inner)
                except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as e:
                    issues.append(Issue(inner, None, f"the archive entry is damaged ({e}); rows "
                                                     "before the damage were kept"))
                continue
            if info.file_size > MAX_WHOLE_FILE:
                issues.append(Issue(inner, None, f"is {info.file_size >> 20} MB unpacked; entries "
                                                 f"are read whole up to {MAX_WHOLE_FILE >> 20} MB "
                                                 "(.jsonl entries have no limit); skipped"))
                continue
            try:
                with zf.open(info) as f:  # read at most the declared size (+1 to catch lies)
                    raw = f.read(info.file_size + 1)
            except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError) as e:
                issues.append(Issue(inner, None, f"cannot be unpacked ({e}); skipped"))
                continue
            if len(raw) > info.file_size:
                issues.append(Issue(inner, None, "entry is larger than its header says; skipped"))
                continue
            yield from iter_bytes(raw, ext, issues, inner)


class _Seekable:
    """A zip entry opened for streaming, rewound by opening it again (jsonl_stream peeks at
    its head, then starts over)."""

    def __init__(self, f, zf: zipfile.ZipFile, info: zipfile.ZipInfo):
        self.f, self.zf, self.info = f, zf, info

    def read(self, n: int = -1) -> bytes:
        return self.f.read(n)

    def readline(self, limit: int = -1) -> bytes:
        return self.f.readline(limit)

    def seek(self, pos: int) -> None:
        self.f.close()
        self.f = self.zf.open(self.info)
