"""Document text clean at the character level: what a PDF's typesetting put in the characters.

Owns two fixes that every document recipe's text goes through before chunking:
- `fix_chars`: typographic ligatures (ﬁ ﬂ ﬀ ﬃ ﬄ ﬅ ﬆ) become their letters, the minus sign
  U+2212 and the other dash-like hyphens become '-', groff's spacing tilde and circumflex
  (U+02DC, U+02C6) become '~' and '^', soft hyphens go; prose is then NFKC-normalised (full-width
  letters, compatibility forms), code is not (NFKC would turn 'x²' into 'x2' in a program).
- `join_hyphens`: a word broken across a line with a hyphen is joined ("pre-\\nfix" → "prefix"),
  unless the document itself spells it with the hyphen elsewhere ("currently-executing") or the
  part after the break is a word of its own ("meta- and control-keys").
Does not decide what is a code block: callers say (clean.py knows fences and monospaced fonts).
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter

# A ligature is one glyph for several letters; pdfminer hands it over as one character, and a
# model would learn "speciﬁed" as a word it never sees typed (bash.pdf: 978 'ﬁ' in 87 pages).
LIGATURES = {"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl",
             "\ufb05": "st", "\ufb06": "st", "\ua732": "AA", "\u0132": "IJ", "\u0133": "ij"}
# Characters a typesetter draws for ASCII ones (groff prints `-` as U+2212 in option names).
TYPESET = {"\u2212": "-", "\u2010": "-", "\u2011": "-", "\u2043": "-", "\u02dc": "~",
           "\u02c6": "^", "\u00ad": "", "\ufeff": ""}
TABLE = str.maketrans({**LIGATURES, **TYPESET})
SUSPECT = re.compile("[" + "".join(LIGATURES) + "".join(TYPESET) + "]")
# a letter-run, a hyphen, a line break, the next letters: the break a typesetter hyphenated
BROKEN = re.compile(r"([^\W\d_]{2,})-\n[ \t]*([^\W\d_]{2,})")
WORDS = re.compile(r"[^\W\d_][\w-]*")
# words that stand alone after a suspended hyphen ("meta- and control-keys")
FREE_WORDS = frozenset("and or nor to the a an of in on for with as than but".split())


def fix_chars(text: str, code: bool = False) -> str:
    """`text` with ligatures, typeset minus signs and friends made plain; NFKC unless `code`."""
    if SUSPECT.search(text):
        text = text.translate(TABLE)
    if not code and not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return text


def vocabulary(text: str) -> Counter:
    """How often each word (lower case, hyphenated compounds whole) is written in `text`."""
    return Counter(w.lower() for w in WORDS.findall(text))


def join_hyphens(text: str, vocab: Counter | None = None) -> str:
    """Words hyphenated at a line break joined. `vocab` (the whole document's words) settles the
    doubtful ones: a compound the document writes with its hyphen elsewhere keeps it."""
    if "-\n" not in text:
        return text
    vocab = vocab if vocab is not None else vocabulary(text)

    def mend(m: re.Match) -> str:
        a, b = m.group(1), m.group(2)
        if b.lower() in FREE_WORDS:
            return f"{a}- {b}"
        joined, hyphened = (a + b).lower(), f"{a}-{b}".lower()
        if vocab[hyphened] > vocab[joined]:
            return f"{a}-{b}"
        if a.isupper() != b.isupper() and not b.islower():
            return f"{a}-{b}"  # "ASN-\nStructure": two words, not one broken
        return a + b
    return BROKEN.sub(mend, text)
