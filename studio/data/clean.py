"""Clean text from real documents, and the per-chunk quality filter.

Owns turning a PDF into markdown-like text with pdfminer.six's layout analysis (text boxes are
paragraphs; a box set larger than the body font is a heading, kept as `## title`; a box in a
monospaced font is code, kept in a fence), dropping what is not content: contents and index
lines with dot leaders, running headers and footers (text in the page margins that repeats on
several pages, digits ignored), page numbers; joining words hyphenated across line breaks; and,
for every chunk a recipe makes, a quality check (share of letters, repetition, length, leftover
leaders) whose reasons are counted and shown with examples. Web pages become markdown through
markdownify, without their menus, headers and footers.
"""
from __future__ import annotations

import io
import re
from collections import Counter
from dataclasses import dataclass

LEADER = re.compile(r"(?:\.\s?){4,}\s*\S{0,6}\s*$|…{2,}|(?:\s\.){4,}")
PAGE_NO = re.compile(r"^\s*(?:page\s+)?(?:\d{1,4}|[ivxlcdm]{1,6})(?:\s*(?:/|of)\s*\d{1,4})?\s*$", re.I)
HYPHEN = re.compile(r"([A-Za-z]{2,})-\n([a-z]{2,})")
MONO = ("mono", "courier", "cmtt", "consol", "menlo", "sltt", "code")
FENCED = re.compile(r"(^```.*?^```[ \t]*$)", re.M | re.S)
WORD = re.compile(r"[^\W\d_][^\W\d_'-]*(?:['-][^\W\d_]+)*")  # a word, letters of any script
ENDS_IN_NUMBER = re.compile(r"\d+\s*$")
HEADING_LINE = re.compile(r"^#+ .*$", re.M)
CID = re.compile(r"\(cid:\d+\)")  # glyphs pdfminer could not map to text
CONTENTS = re.compile(r"^\s*(table of )?contents\s*$", re.I)
MARGIN = 0.08          # top/bottom share of the page where running headers and footers live
REPEATS = 2            # a margin text seen on this many pages is a running header/footer


def join_hyphens(text: str) -> str:
    """'manip-\\nulation' → 'manipulation' (a lowercase word part continues on the next line)."""
    return HYPHEN.sub(r"\1\2", text) if "-\n" in text else text


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
    """Line-level cleaning for any document text (txt, md, docx): leaders and hyphenation.
    Code fences are left exactly as they are."""
    notes: Counter = Counter()
    parts = FENCED.split(text) if "```" in text else [text]
    out = []
    for i, part in enumerate(parts):
        if i % 2 == 1:                      # a fenced code block
            out.append(part)
            continue
        part, n = drop_leader_lines(join_hyphens(part))
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


def _boxes(raw: bytes) -> tuple[list[Box], int]:
    from pdfminer.high_level import extract_pages
    from pdfminer.layout import LTChar, LTTextContainer

    boxes, pages = [], 0
    for page_no, page in enumerate(extract_pages(io.BytesIO(raw))):
        pages += 1
        height = page.height or 1
        for el in page:
            if not isinstance(el, LTTextContainer):
                continue
            chars = [c for line in el for c in line if isinstance(c, LTChar)]
            text = el.get_text().strip()
            if not text or not chars:
                continue
            size = sorted(c.size for c in chars)[len(chars) // 2]
            mono = sum(any(m in c.fontname.lower() for m in MONO) for c in chars) > len(chars) / 2
            margin = el.y0 > height * (1 - MARGIN) or el.y1 < height * MARGIN
            boxes.append(Box(page_no, text, size, mono, margin))
    return boxes, pages


def _signature(text: str) -> str:
    return re.sub(r"\d+", "#", text.lower()).strip()


def pdf_markdown(raw: bytes) -> tuple[str, int, Counter]:
    """(markdown-like text, pages, what was dropped) — headings as '## ', code fenced."""
    boxes, pages = _boxes(raw)
    notes: Counter = Counter()
    if not boxes:
        return "", pages, notes
    body = Counter(round(b.size) for b in boxes for _ in range(len(b.text)))
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
        if PAGE_NO.match(b.text) or (b.margin and len(pages_of[_signature(b.text)]) >= REPEATS):
            notes["running headers, footers and page numbers"] += 1
            continue
        if b.mono and not LEADER.search(b.text):
            code.append(b.text)
            continue
        flush_code()
        text, leaders = drop_leader_lines(b.text)
        notes["contents lines (dot leaders)"] += leaders
        text = CID.sub("", join_hyphens(text)).strip()
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
