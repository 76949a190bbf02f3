"""Bytes → text: byte-order marks, UTF-8, UTF-16 without a BOM, then a detected legacy encoding;
binary files refused; stray NUL bytes removed and reported.

Owns decoding and the NUL note; not what the text means (the readers in tables.py and
documents.py).
"""
from __future__ import annotations

from .items import Issue

TEXT_CONTROLS = frozenset(b"\t\n\x0b\x0c\r\x1b")  # control bytes real text contains


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
