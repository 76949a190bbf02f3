"""Clean text from real documents, and the per-chunk quality filter.

Owns turning a PDF into markdown-like text with pdfminer.six's layout analysis (text boxes are
paragraphs; a box set larger than the body font is a heading, kept as `## title`; a box in a
monospaced font is code, kept in a fence), dropping what is not content: contents and index
lines with dot leaders, running headers and footers (text in the page margins that repeats on
several pages, digits ignored), page numbers; tables ruled in the PDF (pdfplumber's table
finder) kept row by row as markdown tables instead of column by column; characters and words
mended by chars.py (ligatures, typeset minus signs, NFKC on prose; words hyphenated across line
breaks); and, for every chunk a recipe makes, a quality check (share of letters, repetition, length, leftover
leaders) whose reasons are counted and shown with examples. Web pages become markdown through
markdownify, without their menus, headers and footers.
"""
from __future__ import annotations

import io
import re
from collections import Counter
from dataclasses import dataclass

from .chars import fix_chars, join_hyphens, vocabulary

LEADER = re.compile(r"(?:\.\s?){4,}\s*\S{0,6}\s*$|…{2,}|(?:\s\.){4,}")
PAGE_NO = re.compile(r"^\s*(?:page\s+)?(?:\d{1,4}|[ivxlcdm]{1,6})(?:\s*(?:/|of)\s*\d{1,4})?\s*$", re.I)
MONO = ("mono", "courier", "cmtt", "consol", "menlo", "sltt", "code")
FENCED = re.compile(r"(^```.*?^```[ \t]*$)", re.M | re.S)
WORD = re.compile(r"[^\W\d_][^\W\d_'-]*(?:['-][^\W\d_]+)*")  # a word, letters of any script
ENDS_IN_NUMBER = re.compile(r"\d+\s*$")
HEADING_LINE = re.compile(r"^#+ .*$", re.M)
CID = re.compile(r"\(cid:\d+\)")  # glyphs pdfminer could not map to text
CONTENTS = re.compile(r"^\s*(table of )?contents\s*$", re.I)
MARGIN = 0.08          # top/bottom share of the page where running headers and footers live
REPEATS = 2            # a margin text seen on this many pages is a running header/footer


def drop_leader_lines(text: str) -> tuple[str, int]:
    """Remove contents/index lines ('2.4 Library Notes . . . . 4'); (text, lines removed)."""
    if "...." not in text and ". . ." not in text and "……" not in text and " . . . ." not in text:
        return text, 0  # no leader anywhere: the common case, at memory speed
    kept, dropped = [], 0
    for line in text.split("\n"):
        if LEADER.search(line):
            dropped += 1
        else:
            kept.append(line)
    return "\n".join(kept), dropped


def clean_text(text: str) -> tuple[str, Counter]:
    """Line-level cleaning for any document text (txt, md, docx): characters (chars.py),
    leaders and hyphenation. Code fences get only the character fixes that keep code code."""
    notes: Counter = Counter()
    parts = FENCED.split(text) if "```" in text else [text]
    out = []
    vocab = vocabulary(text) if "-\n" in text else None
    for i, part in enumerate(parts):
        if i % 2 == 1:                      # a fenced code block
            out.append(fix_chars(part, code=True))
            continue
        part, n = drop_leader_lines(join_hyphens(fix_chars(part), vocab))
        notes["contents lines (dot leaders)"] += n
        out.append(part)
    return "".join(out), +notes


@dataclass
class Box:
    page: int
    text: str
    size: float
    mono: bool
    margin: bool
    table: bool = False


def _inside(el, area: tuple[float, float, float, float], height: float) -> bool:
    """Whether a pdfminer element (y from the bottom) has its centre in a pdfplumber bbox
    (top from the top of the page)."""
    x0, top, x1, bottom = area
    cx, cy = (el.x0 + el.x1) / 2, height - (el.y0 + el.y1) / 2
    return x0 <= cx <= x1 and top <= cy <= bottom


def table_markdown(rows: list[list[str | None]]) -> str:
    """A table's rows as a markdown table: one line per row, its first row the header."""
    cells = [[fix_chars(re.sub(r"\s+", " ", c or "")).strip().replace("|", "\\|") for c in r]
             for r in rows]
    lines = ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(lines[:1] + ["|" + "---|" * len(cells[0])] + lines[1:])


def _boxes(raw: bytes) -> tuple[list[Box], int]:
    """Text boxes in reading order (pdfminer's layout, read through pdfplumber), a ruled table
    as one box of markdown rows where its first cell's text would be."""
    import pdfplumber
    from pdfminer.layout import LTChar, LTCurve, LTTextContainer

    boxes, pages = [], 0
    with pdfplumber.open(io.BytesIO(raw), laparams={}) as pdf:
        for page_no, page in enumerate(pdf.pages):
            pages += 1
            height = float(page.height) or 1
            ruled = any(isinstance(el, LTCurve) for el in page.layout)  # lines and rects too
            tables = [t for t in page.find_tables() if len(t.rows) >= 2 and len(t.columns) >= 2] \
                if ruled else []  # the finder reads every object again: only where rules are
            pending = {i: t for i, t in enumerate(tables)}
            for el in page.layout:
                if not isinstance(el, LTTextContainer):
                    continue
                inside = [i for i, t in enumerate(tables) if _inside(el, t.bbox, height)]
                if inside:  # the table once, in place of its cells' text boxes
                    if inside[0] in pending:
                        rows = pending.pop(inside[0]).extract()
                        boxes.append(Box(page_no, table_markdown(rows), 0.0, False, False, True))
                    continue
                chars = [c for line in el for c in line if isinstance(c, LTChar)]
                text = el.get_text().strip()
                if not text or not chars:
                    continue
                size = sorted(c.size for c in chars)[len(chars) // 2]
                mono = sum(any(m in c.fontname.lower() for m in MONO) for c in chars) > len(chars) / 2
                margin = el.y0 > height * (1 - MARGIN) or el.y1 < height * MARGIN
                boxes.append(Box(page_no, fix_chars(text, code=mono), size, mono, margin))
            boxes.extend(Box(page_no, table_markdown(t.extract()), 0.0, False, False, True)
                         for t in pending.values())
    return boxes, pages


def _signature(text: str) -> str:
    return re.sub(r"\d+", "#", text.lower()).strip()


def pdf_markdown(raw: bytes) -> tuple[str, int, Counter]:
    """(markdown-like text, pages, what was dropped) — headings as '## ', code fenced."""
    boxes, pages = _boxes(raw)
    notes: Counter = Counter()
    if not boxes:
        return "", pages, notes
    body = Counter(round(b.size) for b in boxes if not b.table for _ in range(len(b.text)))
    vocab = vocabulary("\n".join(b.text for b in boxes))
    body_size = body.most_common(1)[0][0]
    pages_of: dict[str, set[int]] = {}  # margin text (digits ignored) → the pages it is on
    for b in boxes:
        if b.margin:
            pages_of.setdefault(_signature(b.text), set()).add(b.page)
    out: list[str] = []
    in_contents = False
    code: list[str] = []

    def flush_code():
        if code:
            out.append("```\n" + "\n".join(code) + "\n```")
            code.clear()

    for b in boxes:
        if b.table:
            flush_code()
            out.append(b.text)
            notes["tables kept as rows"] += 1
            continue
        if PAGE_NO.match(b.text) or (b.margin and len(pages_of[_signature(b.text)]) >= REPEATS):
            notes["running headers, footers and page numbers"] += 1
            continue
        if b.mono and not LEADER.search(b.text):
            code.append(b.text)
            continue
        flush_code()
        text, leaders = drop_leader_lines(b.text)
        notes["contents lines (dot leaders)"] += leaders
        text = CID.sub("", join_hyphens(text, vocab)).strip()
        if not text:
            continue
        heading = b.size >= body_size + 1.0 and len(text) < 120 and "\n" not in text.strip()
        if heading:
            in_contents = bool(CONTENTS.match(text))
            if in_contents:
                notes["contents lines (dot leaders)"] += 1
                continue
            out.append("## " + re.sub(r"\s+", " ", text))
            continue
        if in_contents and leaders:
            continue
        # a box is a paragraph: lines rejoin, except list items that start with a bullet
        lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
        para = lines[0] if lines else ""
        for ln in lines[1:]:
            para += ("\n" if re.match(r"^[•\-*–]\s|\d+[.)]\s", ln) else " ") + ln
        out.append(para)
    flush_code()
    return "\n\n".join(out), pages, +notes


def html_markdown(html: str) -> str:
    """A web page as markdown: headings, lists and code blocks kept (markdownify over
    BeautifulSoup), menus, headers, footers, scripts and styles left out."""
    from bs4 import BeautifulSoup
    from markdownify import markdownify

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "nav", "header", "footer", "aside", "noscript", "form",
                     "svg", "iframe"]):
        tag.decompose()
    text = markdownify(str(soup.body or soup), heading_style="ATX", code_language="",
                       strip=["a", "b", "strong", "em", "i", "img", "span"])
    return re.sub(r"\n{3,}", "\n\n", text).strip()


# ---- the per-chunk quality filter -------------------------------------------------------------
def chunk_problem(text: str, min_words: int = 5) -> str | None:
    """Why a prose chunk is not worth training on, or None. Code chunks are not judged here.
    Letters of any script count (a Chinese chunk has few spaces but many letters)."""
    if "```" in text:
        return None
    body = HEADING_LINE.sub("", text) if "#" in text else text  # headings alone are not content
    wordlist = WORD.findall(body)
    letters = sum(map(len, wordlist))
    if len(wordlist) < min_words and letters < 4 * min_words:
        return "too short"
    if ("...." in text or ". . ." in text or "……" in text) and LEADER.search(text):
        return "contents or index lines"
    visible = len(body) - body.count(" ") - body.count("\n") - body.count("\t")
    if visible and letters / visible < 0.55:
        return "mostly numbers or symbols"
    if len(wordlist) >= 20:
        counts = Counter(body.lower().split())
        if counts and counts.most_common(1)[0][1] / len(wordlist) > 0.25:
            return "repetitive"
    lines = [ln for ln in body.split("\n") if ln.strip()]
    if len(lines) >= 4 and sum(bool(ENDS_IN_NUMBER.search(ln)) for ln in lines) / len(lines) > 0.6:
        return "contents or index lines"
    return None
