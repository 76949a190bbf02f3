"""Every figure the README quotes from a benchmark is a row of benchmarks/RESULTS.md (issue #39).

Pure text, no model. A figure is cited as `RESULTS.md: <script>[ <flags>], <date>`:
- in the README's "## What we measured" table, in each row's last column; the row's "number"
  cell holds its figures. A row whose benchmark has not been run since it was changed says
  "not yet re-measured" for those figures instead of a number;
- in prose, inside the sentence whose figures it backs (the sentence up to the citation); a
  sentence ending in ":" just before a table backs that table's body too.
The cited entry of RESULTS.md is the one summary-table row, or the one "## " section, whose
label (the row's first cell, the section's heading) names that script (with those flags) and
that date. Every number of the figures must appear among that entry's numbers (thousands
separators and signs aside; dates are not figures). A README sentence that names a
`bench_*.py` script must carry such a citation, so a new figure cannot skip the check.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
RESULTS = (ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")

CITE = re.compile(r"RESULTS\.md: (bench_\w+\.py)([^,;)|]*), (\d{4}-\d{2}-\d{2})")
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
CODE = re.compile(r"`[^`]*`")
# a number standing alone: not part of a name (H200, r32, f16, Llama-3.1-8B, FA2)
NUMBER = re.compile(r"(?<![\w.])(?<!\w-)(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z*`(\[])")
NOT_YET = "not yet re-measured"

# Figures cited from an entry that does not (yet) hold them, awaiting a run that writes one:
# id → why. strict: once RESULTS.md holds them, the xfail fails and this entry must go.
AWAITING: dict[str, str] = {}


def numbers(text: str) -> list[str]:
    """The numbers of `text` as written without separators: '16,934' → '16934', '−14' → '14'."""
    return [n.replace(",", "") for n in NUMBER.findall(DATE.sub(" ", text))]


# ---- RESULTS.md: the entries a citation can name ----------------------------------------------
def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def results_entries(text: str = RESULTS) -> list[tuple[str, str]]:
    """(label, text) of each row of the summary table at the top and of each '## ' section."""
    entries = []
    head, *sections = re.split(r"^(?=## )", text, flags=re.M)
    for line in head.splitlines():
        if line.startswith("|") and not re.match(r"^\|\s*-", line):
            entries.append((cells(line)[0], line))
    for sec in sections:
        entries.append((sec.splitlines()[0][3:], sec))
    return entries


def cited_entry(script: str, flags: str, date: str, text: str = RESULTS) -> str:
    """The text of the one RESULTS.md entry a citation names; fails when none or several do."""
    named = f"{script}{flags.rstrip()}"
    found = [body for label, body in results_entries(text) if named in label and date in label]
    assert found, f"RESULTS.md has no row or section labelled with {named!r} and {date}"
    assert len(found) == 1, f"{len(found)} RESULTS.md entries are labelled with {named!r} and {date}"
    return found[0]


def missing(figures: str, citation: re.Match, text: str = RESULTS) -> list[str]:
    """The numbers of `figures` that the cited entry does not hold."""
    held = set(numbers(cited_entry(*citation.groups(), text=text)))
    return [n for n in numbers(figures) if n not in held]


# ---- README: the figures and their citations -------------------------------------------------
def measured_table(readme: str = README) -> list[list[str]]:
    """The rows (what, number, script, RESULTS.md row) of '## What we measured'."""
    part = readme.split("## What we measured", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in part.splitlines() if ln.startswith("|")]
    assert cells(lines[0]) == ["what", "number", "script", "RESULTS.md row"], lines[0]
    return [cells(ln) for ln in lines[2:]]


def prose_blocks(readme: str = README) -> list[str]:
    """README blocks (blank-line separated) outside code fences and outside the measured table:
    prose as one line, a table as its lines."""
    text = re.sub(r"^```.*?^```", "", readme, flags=re.S | re.M)
    head, rest = text.split("## What we measured", 1)
    text = head + rest.split("\n## ", 1)[1]
    blocks = [b.strip() for b in re.split(r"\n\s*\n", text) if b.strip()]
    return [b if b.startswith("|") else " ".join(b.split()) for b in blocks]


def prose_citations(readme: str = README) -> list[tuple[str, re.Match, str]]:
    """(id, citation, the figures it backs) for each citation in README prose."""
    out = []
    blocks = prose_blocks(readme)
    for i, block in enumerate(blocks):
        if block.startswith("|"):
            continue
        sentences = SENTENCE_END.split(block)
        for j, sentence in enumerate(sentences):
            for c in CITE.finditer(sentence):
                figures = CODE.sub(" ", sentence[:c.start()])
                table = blocks[i + 1] if i + 1 < len(blocks) else ""
                if j == len(sentences) - 1 and block.endswith(":") and table.startswith("|"):
                    figures += "\n" + "\n".join(table.splitlines()[2:])  # its body, not its header
                out.append((f"prose: {c.group(0)}", c, figures))
    return out


def _row_id(row: list[str]) -> str:
    return "table: " + row[0][:60]


TABLE = measured_table()
PROSE = prose_citations()


def _params(items):
    return [pytest.param(*item, id=item[0], marks=[pytest.mark.xfail(reason=AWAITING[item[0]], strict=True)]
                         if item[0] in AWAITING else []) for item in items]


@pytest.mark.parametrize("row_id,row", _params([(_row_id(r), r) for r in TABLE]))
def test_measured_table_row_is_a_results_row(row_id, row):
    what, figures, script, cite = row
    if NOT_YET not in figures:
        assert numbers(figures), f"{what}: no figure and not marked '{NOT_YET}'"
    if not numbers(figures):
        return  # nothing to back
    c = CITE.fullmatch(cite)
    assert c, f"{what}: the last column must read 'RESULTS.md: <script>, <date>', not {cite!r}"
    assert c.group(1) in script, f"{what}: cites {c.group(1)}, but the row's script is {script}"
    lost = missing(figures, c)
    assert not lost, f"{what}: {', '.join(lost)} not in the RESULTS.md entry for {cite}"


@pytest.mark.parametrize("cite_id,citation,figures", _params(PROSE))
def test_prose_figures_are_in_their_results_entry(cite_id, citation, figures):
    lost = missing(figures, citation)
    assert not lost, f"{', '.join(lost)} not in the RESULTS.md entry for {citation.group(0)}"


def test_every_sentence_naming_a_benchmark_cites_its_row():
    bare = [s for b in prose_blocks() if not b.startswith("|") for s in SENTENCE_END.split(b)
            if re.search(r"bench_\w+\.py", s) and not CITE.search(s)]
    assert not bare, "README sentences name a benchmark script without a RESULTS.md citation:\n" + \
        "\n".join(s[:160] for s in bare)


def test_the_check_catches_a_wrong_figure():
    """The checker itself: the same README with one figure changed fails it, and an uncited
    figure or a citation of no row is refused (so the tests above can fail)."""
    row = next(r for r in TABLE if "bench_startup" in r[2])
    good = CITE.fullmatch(row[3])
    assert not missing(row[1], good)
    assert missing(row[1].replace("5.6", "5.4"), good) == ["5.4"]
    assert missing("16,934 tokens", CITE.search("RESULTS.md: bench_gpu.py, 2026-11-29")) == []
    assert missing("16,935 tokens", CITE.search("RESULTS.md: bench_gpu.py, 2026-11-29")) == ["16935"]
    with pytest.raises(AssertionError, match="no row or section"):
        cited_entry("bench_startup.py", "", "2031-01-01")
    broken = README.replace(f"| {row[1]} |", "| 4.2 s |")
    assert measured_table(broken) != TABLE and missing("4.2 s", good) == ["4.2"]
    assert numbers("Llama-3.1-8B on an H200, r32, f16, FA2: 1,024 and −14 (2026-11-29)") == ["1024", "14"]
