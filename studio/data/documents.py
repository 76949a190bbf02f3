"""Documents → text: plain text and markdown (big files in ~1 MB blocks cut at blank lines),
source code, HTML pages (as markdown), PDFs (pdfminer.six layout, cleaned in clean.py) and .docx
(python-docx, headings kept as '#').

Owns turning a document file into Document items; an unreadable one is an Issue (scanned PDF,
password, damaged file) with what to do about it. Not tables (tables.py) nor archives.
"""
from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Iterator

from .decoding import decode, nul_issue, strip_nul
from .items import CODE, MAX_WHOLE_FILE, TEXT_BLOCK, Document, Issue
from .tables import bounded_lines


def read_text(raw: bytes, ext: str, issues: list[Issue], name: str) -> Iterator[Document]:
    """A text, markdown, code or HTML file held in memory."""
    text, why = decode(raw, name)
    if text is None:
        issues.append(Issue(name, None, why))
        return
    text, nuls = strip_nul(text)
    if nuls:
        issues.append(nul_issue(name, None, nuls, "text"))
    if ext in CODE:
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
            yield from read_text(head + f.read(), ext, issues, name)
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
