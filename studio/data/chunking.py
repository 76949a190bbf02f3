"""Splitting documents into chunks under a token budget.

Owns paragraph splitting, sentence splitting (pysbd, which copes with abbreviations; long runs
without punctuation fall back to token windows), markdown heading sections with their heading
path, and fixed token windows with overlap. Token counts use the chosen model's tokenizer, in
batches (the fast tokenizer is what keeps this at megabytes per second).
"""
from __future__ import annotations

import re
from typing import Iterator

PARA_SPLIT = re.compile(r"\n\s*\n")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


def count_tokens(tok, texts: list[str]) -> list[int]:
    if not texts:
        return []
    return [len(x) for x in tok(texts, add_special_tokens=False)["input_ids"]]


def token_windows(tok, text: str, size: int, overlap: int = 0) -> list[str]:
    """Fixed windows of `size` tokens, each starting `size - overlap` after the last."""
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if not ids:
        return []
    stride = max(1, size - overlap)
    out = []
    for start in range(0, len(ids), stride):
        out.append(tok.decode(ids[start:start + size]).strip())
        if start + size >= len(ids):
            break
    return [w for w in out if w]


_segmenter = None


def sentences(text: str) -> list[str]:
    global _segmenter
    if _segmenter is None:
        import pysbd

        _segmenter = pysbd.Segmenter(language="en", clean=False)
    return [s.strip() for s in _segmenter.segment(text) if s.strip()]


def pack(tok, pieces: list[str], budget: int, sep: str, sizes: list[int] | None = None) -> list[str]:
    """Greedily join pieces (each ≤ budget tokens) into chunks of at most `budget` tokens.

    The sum of the pieces' counts is only an estimate of the joined text's (a tokenizer may spend
    two tokens on a blank line, or merge across a join), so every chunk is counted as joined — all
    in one tokenizer call, which is what keeps this fast — and the rare one over budget is packed
    again piece by piece, counting as it goes."""
    sizes = sizes if sizes is not None else count_tokens(tok, pieces)
    groups = _greedy(list(zip(pieces, sizes)), budget, separator_cost(tok, sep))
    joined = [sep.join(p for p, _ in g) for g in groups]
    chunks: list[str] = []
    for g, text, n in zip(groups, joined, count_tokens(tok, joined)):
        chunks += [text] if n <= budget or len(g) == 1 else _exact(tok, g, budget, sep)
    return chunks


def _greedy(todo: list[tuple[str, int]], budget: int, sep_cost: int) -> list[list[tuple[str, int]]]:
    """Pieces grouped in order by their own counts (the estimate)."""
    groups: list[list[tuple[str, int]]] = []
    cur, cur_len = [], 0
    for piece, n in todo:
        if cur and cur_len + sep_cost + n > budget:
            groups.append(cur)
            cur, cur_len = [], 0
        cur_len += n + (sep_cost if cur else 0)
        cur.append((piece, n))
    return groups + [cur] if cur else groups


def _exact(tok, group: list[tuple[str, int]], budget: int, sep: str) -> list[str]:
    """A group whose joined text is over budget: chunks counted as joined, one at a time."""
    todo, chunks = group[::-1], []  # a stack: the next piece last
    while todo:
        cur = [todo.pop()]
        while todo and count_tokens(tok, [sep.join(p for p, _ in cur + [todo[-1]])])[0] <= budget:
            cur.append(todo.pop())
        chunks.append(sep.join(p for p, _ in cur))
    return chunks


def separator_cost(tok, sep: str) -> int:
    """Tokens a separator adds between two words (at least 1 for whitespace that merges)."""
    a, b, joined = count_tokens(tok, ["alpha", "beta", f"alpha{sep}beta"])
    return max(1, joined - a - b)


def split_long(tok, text: str, budget: int) -> list[str]:
    """A paragraph over budget → sentences packed to budget; a sentence over budget → windows."""
    pieces = []
    sents = sentences(re.sub(r"[ \t]*\n[ \t]*", " ", text))  # hard-wrapped lines are not sentences
    for s, n in zip(sents, count_tokens(tok, sents)):
        pieces.extend(token_windows(tok, s, budget) if n > budget else [s])
    return pack(tok, pieces, budget, " ")


FENCE = re.compile(r"^```.*?^```[ \t]*$", re.M | re.S)


def blocks(text: str) -> list[str]:
    """Paragraphs (split at blank lines), with each fenced code block kept whole as one."""
    out: list[str] = []
    pos = 0
    for m in FENCE.finditer(text):
        out += [p.strip() for p in PARA_SPLIT.split(text[pos:m.start()]) if p.strip()]
        out.append(m.group(0).strip())
        pos = m.end()
    return out + [p.strip() for p in PARA_SPLIT.split(text[pos:]) if p.strip()]


def split_code(tok, block: str, budget: int) -> list[str]:
    """A code block over budget → runs of whole lines, each fenced again."""
    lines = block.split("\n")
    head, body = lines[0], [ln for ln in lines[1:-1]]
    parts = pack(tok, [ln for ln in body if ln.strip()] or [""], max(8, budget - 4), "\n")
    return [f"{head}\n{p}\n```" for p in parts]


def paragraphs(tok, text: str, budget: int) -> list[str]:
    """Paragraph chunks up to `budget` tokens; never mid-sentence unless a sentence is too long,
    never inside a code block unless the block alone is too long (then at line ends)."""
    paras = blocks(text)
    pieces, sizes = [], []
    for p, n in zip(paras, count_tokens(tok, paras)):
        if n > budget:
            parts = split_code(tok, p, budget) if p.startswith("```") else split_long(tok, p, budget)
            pieces += parts
            sizes += count_tokens(tok, parts)
        else:
            pieces.append(p)
            sizes.append(n)
    return pack(tok, pieces, budget, "\n\n", sizes)  # sizes counted once, not again


def sections(text: str) -> Iterator[tuple[list[str], str]]:
    """(heading path, body) for each markdown section; text before the first heading has []."""
    path: list[tuple[int, str]] = []
    body: list[str] = []
    in_code = False

    def flush():
        content = "\n".join(body).strip()
        if content:
            yield [h for _, h in path], content

    for line in text.splitlines():
        if line.strip().startswith("```"):
            in_code = not in_code
        m = None if in_code else HEADING.match(line)
        if m:
            yield from flush()
            body = []
            level = len(m.group(1))
            path = [(lv, h) for lv, h in path if lv < level] + [(level, m.group(2).strip())]
        else:
            body.append(line)
    yield from flush()
