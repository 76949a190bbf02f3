"""Structured files → Records: JSONL streamed line by line (bounded memory, legacy-encoded lines
read as Windows-1252 and reported), JSON lists (and {"data": [...]} wrappers), CSV/TSV with a
header row, and Parquet batch by batch.

Owns turning tables into rows with file and line; a malformed row is an Issue, never an
exception, and good rows are always kept. Not documents (documents.py) nor archives (archive.py).
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Iterator

from .decoding import decode, nul_issue, strip_nul
from .items import MAX_LINE_BYTES, MAX_WHOLE_FILE, Issue, Record


def read_table_bytes(raw: bytes, ext: str, issues: list[Issue], name: str) -> Iterator[Record]:
    """A .jsonl/.json/.csv/.tsv file held in memory (an archive entry, or UTF-16 text)."""
    text, why = decode(raw, name)
    if text is None:
        issues.append(Issue(name, None, why))
        return
    if ext == ".json":  # .jsonl, .csv and .tsv say it per line or row
        text, nuls = strip_nul(text)
        if nuls:
            issues.append(nul_issue(name, None, nuls, "text"))
    if ext == ".jsonl":
        yield from _jsonl_lines(io.StringIO(text), issues, name)
    elif ext == ".json":
        yield from read_json(text, issues, name)
    else:
        yield from read_csv(text, ext, issues, name)


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


def iter_jsonl(path: Path, issues: list[Issue], name: str) -> Iterator[Record]:
    """Stream a JSONL file line by line: memory stays bounded whatever its size."""
    with open(path, "rb") as f:
        yield from jsonl_stream(f, issues, name)


def jsonl_stream(f, issues: list[Issue], name: str) -> Iterator[Record]:
    head = f.read(8192)
    if head[:2] in (b"\xff\xfe", b"\xfe\xff") or head.count(b"\x00") * 4 > len(head):
        rest = f.read(MAX_WHOLE_FILE)  # UTF-16 (or binary) cannot be split on b"\n"
        yield from read_table_bytes(head + rest, ".jsonl", issues, name)
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
def parquet_bytes(raw: bytes, issues: list[Issue], name: str) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(io.BytesIO(raw))
    except Exception as e:
        issues.append(Issue(name, None, f"not a readable Parquet file ({e})"))
        return
    yield from _parquet_rows(pf, name, issues)


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
