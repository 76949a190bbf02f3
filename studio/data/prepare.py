"""Prepare a dataset version: uploaded files → checked, de-duplicated, split JSONL + stats.

Owns the flow of the Data step: read files (ingest), detect formats or run a recipe, convert,
drop empties and duplicates, encode with the model's chat template (for lengths and the loss
mask), split train/validation (seeded), and write `<home>/datasets/<name>/v<N>/` atomically
(temp folder, then rename), and the dataset's name (checked; when none is given, its first
file's). Streams: memory does not grow with the corpus beyond counters.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
import unicodedata
from dataclasses import asdict
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import ConfigError, DataError
from ..faults import crash_point, fail_point
from . import clean, formats, templates
from .ingest import Document, Issue, iter_path
from .recipes import RECIPES, Context, RecipeParams, recipe_for
from .stats import Stats, dumps

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
TMP_NAME = ".tmp-{name}-{pid}-{ms}"  # a version being written; swept when its process is gone
TMP_RE = re.compile(r"^\.tmp-.+-(?P<pid>\d+)-\d+$")
ORIGIN = "_origin"      # an example's (file, line) while it streams; kept in LINES, not in the rows
LINES = "lines.json"    # split → [[file, line], …] in row order: where each row was uploaded


def slug(text: str) -> str:
    """`text` as a dataset name could spell it ("Café menu (2)" → "Cafe-menu-2"); "" if nothing is left."""
    ascii_name = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    out = re.sub(r"[^A-Za-z0-9_.-]+", "-", ascii_name).strip("-_.")[:64].rstrip("-_.")
    return out if NAME_RE.match(out) else ""


def name_for(files: list[str | Path]) -> str:
    """The name a dataset gets when none is given: its first file's, without the extension
    ("product_faq.jsonl" → "product_faq"), made valid; "data" when nothing of it is left."""
    return slug(Path(files[0]).stem) if files and slug(Path(files[0]).stem) else "data"


def check_name(name: str) -> str:
    if not name or not NAME_RE.match(name):
        example = slug(name) or "product-faq"
        raise ConfigError(f"Dataset name '{name}' is not allowed: use 1–64 letters, digits, '-', "
                          f"'_' or '.', starting with a letter or digit (e.g. {example}).")
    return name


def examples_from(files: Iterable[Path], recipe: str, ctx: Context, issues: list[Issue],
                  stats: Stats, mapping: dict[str, str] | None) -> Iterable[dict[str, Any]]:
    """Every example from every file, in order; problems go to `issues`, never raise."""
    unrecognised: set[str] = set()  # files already reported as "no known format"
    for path in files:
        for item in iter_path(Path(path), issues, Path(path).name):
            ctx.check()
            if isinstance(item, Document):
                yield from run_recipe(item, recipe, ctx, issues, stats)
                continue
            try:
                ex, fmt = formats.convert(item.data, mapping)
            except formats.Unrecognised as e:
                if item.file not in unrecognised:
                    unrecognised.add(item.file)
                    issues.append(Issue(item.file, None, str(e)))
                continue
            except formats.Skip as e:
                issues.append(Issue(item.file, item.line, str(e)))
                stats.empty_removed += "empty" in str(e)
                continue
            stats.formats[fmt] = stats.formats.get(fmt, 0) + 1
            ex[ORIGIN] = (item.file, item.line)
            yield ex


def run_recipe(doc: Document, recipe: str, ctx: Context, issues: list[Issue], stats: Stats):
    name = recipe_for(recipe, doc.kind)
    notes = doc.meta.get("cleaned")
    if notes is None and doc.kind == "text":
        doc.text, notes = clean.clean_text(doc.text)
    for what, n in (notes or {}).items():
        ctx.counters[f"removed: {what}"] += n
    try:
        for ex in RECIPES[name].run(doc, ctx):
            stats.formats[name] = stats.formats.get(name, 0) + 1
            ex[ORIGIN] = (doc.file, None)
            yield ex
    except formats.Skip as e:
        issues.append(Issue(doc.file, e.line, str(e)))


def prepare(files: list[str | Path], name: str, datasets_dir: Path, tok, *, recipe: str = "auto",
            params: RecipeParams | None = None, max_len: int = 512, val_fraction: float = 0.1,
            seed: int = 42, mapping: dict[str, str] | None = None, generator=None,
            progress: Callable[[float, str], None] | None = None, cancel=None,
            version: int = 1, model: str | None = None,
            heldout: str | Path | None = None) -> dict[str, Any]:
    """Write one dataset version; return its summary (records, splits, stats, errors, path).
    `heldout`: a file of questions the run never trains on, kept beside it (heldout.py)."""
    check_arguments(files, name, recipe, val_fraction)
    params = params or RecipeParams()
    ctx = Context(tok, params, generator, cancel, progress)
    issues: list[Issue] = []
    stats = Stats(max_len)
    t0 = time.time()
    tmp = datasets_dir / TMP_NAME.format(name=name, pid=os.getpid(), ms=int(t0 * 1000))
    tmp.mkdir(parents=True)
    try:
        stream = examples_from([Path(f) for f in files], recipe, ctx, issues, stats, mapping)
        unique = (ex for ex in stream if not stats.is_duplicate(ex, ex.get(ORIGIN)))
        n, origins = write_examples(unique, tmp / "all.jsonl", tok, max_len, stats, progress)
        if n == 0:
            raise DataError(no_records_message(issues, dropped_summary(ctx)))
        crash_point("prepare.examples_written")
        splits = split(tmp, n, val_fraction, seed)
        write_lines(tmp, origins, validation_rows(n, val_fraction, seed), stats.removed)
        crash_point("prepare.split")
        held = attach_heldout(tmp, Path(heldout), issues) if heldout else None
        summary = {"name": name, "version": version, "records": n, "splits": splits,
                   **stats.summary(), "recipe": recipe, "recipe_counters": dict(ctx.counters),
                   "dropped": dropped_summary(ctx),
                   "errors": [i.as_dict() for i in issues], "seconds": round(time.time() - t0, 2),
                   "sources": [Path(f).name for f in files], "params": asdict(params),
                   "val_fraction": val_fraction, "seed": seed, "mapping": mapping or {},
                   "model": model, "heldout": held, "qa": qa_summary(ctx)}
        (tmp / "meta.json").write_text(json.dumps(summary, indent=1))
        crash_point("prepare.meta_written")
        summary["path"] = str(publish(tmp, datasets_dir / name / f"v{version}"))
        return summary
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_arguments(files: list[str | Path], name: str, recipe: str, val_fraction: float) -> None:
    """The arguments a user can get wrong, checked before any file is read."""
    check_name(name)
    if recipe != "auto" and recipe not in RECIPES:
        raise ConfigError(f"Unknown recipe '{recipe}'. Choose one of: auto, {', '.join(RECIPES)}.")
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"val_fraction {val_fraction} must be at least 0 and below 1 (e.g. 0.1).")
    if not files:
        raise DataError("No files given. Upload or name at least one data file.")


def write_examples(examples: Iterable[dict[str, Any]], path: Path, tok, max_len: int, stats: Stats,
                   progress: Callable[[float, str], None] | None) -> tuple[int, list]:
    """The examples with a learnable token, encoded a batch at a time and written to `path` (one
    JSON a line); their count and their origins ([file, line] each, in row order)."""
    n, origins = 0, []
    with open(path, "w", encoding="utf-8") as out:
        while batch := list(islice(examples, 256)):  # tokenized a batch at a time
            where = [list(ex.pop(ORIGIN, None) or (None, None)) for ex in batch]
            for ex, enc, at in zip(batch, templates.encode_many(tok, batch, max_len), where):
                if enc.trainable == 0:
                    stats.dropped_too_long += 1
                    continue
                stats.add(enc.full_length, enc.trainable)
                origins.append(at)
                out.write(dumps(ex) + "\n")
                n += 1
            fail_point("prepare.write")
            crash_point("prepare.writing")
            if progress:
                progress(0.0, f"{n} examples so far")
    return n, origins


def publish(tmp: Path, final: Path) -> Path:
    """The finished version moved into place in one rename: a reader sees all of it or none."""
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, final)
    crash_point("prepare.renamed")
    return final


def qa_summary(ctx: Context) -> dict[str, Any] | None:
    """For qa-pairs: pairs the generator wrote (from the whole chunk, or one per fact-bearing
    sentence) against templated fallbacks, and the pairs left out by reason; None otherwise."""
    c = ctx.counters
    generated, fallback = c.get("qa_generated", 0), c.get("qa_fallback", 0)
    if not generated and not fallback and not any(k.startswith("dropped: ") for k in c):
        return None
    return {"generated": generated, "fallback": fallback,
            "generated_share": round(generated / (generated + fallback), 4) if generated + fallback else None,
            "from_chunk": c.get("qa_from_chunk", 0), "from_sentences": c.get("qa_from_sentences", 0),
            "chunks": c.get("qa_chunks", 0),
            "dropped": {k.split(": ", 1)[1]: n for k, n in c.items() if k.startswith("dropped: ")}}


def attach_heldout(folder: Path, path: Path, issues: list[Issue]) -> int:
    """The held-out file's rows that are really held out, written beside the splits."""
    from . import heldout

    rows = heldout.read(path, issues)
    rows = heldout.not_in_training(rows, read_split(folder, "train"), issues, path.name)
    if not rows:
        raise DataError(f"The held-out file {path.name} gave no usable question/answer rows "
                        f"({'; '.join(i.reason for i in issues[-2:]) or 'it is empty'}). Give a "
                        "table with question and answer columns (and optionally expect: the key "
                        "fact a right answer states), or leave the held-out file out.")
    heldout.write(folder, rows)
    return len(rows)


def dropped_summary(ctx: Context) -> list[dict[str, Any]]:
    """What the recipes left out, by reason, with up to three examples each."""
    return [{"reason": reason, "count": ctx.counters[f"dropped: {reason}"], "examples": shown}
            for reason, shown in sorted(ctx.dropped.items(), key=lambda kv: -ctx.counters[f"dropped: {kv[0]}"])]


def validation_rows(n: int, val_fraction: float, seed: int) -> set[int]:
    """Which of n rows the seeded split puts in validation."""
    k = int(round(n * val_fraction))
    if val_fraction > 0 and n >= 2:
        k = min(max(k, 1), n - 1)
    return set(random.Random(seed).sample(range(n), k)) if k else set()


def write_lines(folder: Path, origins: list, val: set[int], removed: list) -> None:
    """lines.json: where each row of each split was uploaded ([file, line]; line None for a
    document's chunks), and the duplicates removed while preparing ([where, where first])."""
    (folder / LINES).write_text(json.dumps(
        {"train": [o for i, o in enumerate(origins) if i not in val],
         "validation": [o for i, o in enumerate(origins) if i in val], "removed": removed}))


def split(folder: Path, n: int, val_fraction: float, seed: int) -> dict[str, int]:
    """Seeded split of all.jsonl into train.jsonl / validation.jsonl (second streaming pass)."""
    val = validation_rows(n, val_fraction, seed)
    k = len(val)
    with open(folder / "all.jsonl", encoding="utf-8") as src, \
            open(folder / "train.jsonl", "w", encoding="utf-8") as tr, \
            open(folder / "validation.jsonl", "w", encoding="utf-8") as va:
        for i, line in enumerate(src):
            (va if i in val else tr).write(line)
    (folder / "all.jsonl").unlink()
    return {"train": n - k, "validation": k}


def no_records_message(issues: list[Issue], dropped: list[dict[str, Any]] | None = None) -> str:
    first = "; ".join(f"{i.file}{f' line {i.line}' if i.line else ''}: {i.reason}" for i in issues[:3])
    more = f" (and {len(issues) - 3} more problems)" if len(issues) > 3 else ""
    left_out = "; ".join(f"{d['count']} {d['reason']}" for d in dropped or [])
    if left_out:
        first = (first + ". " if first else "") + (
            f"Every chunk was left out by the quality checks ({left_out}). Try the paragraphs "
            "recipe, a larger --max-tokens, or a document with more running text")
    return f"No usable examples were found. {first}{more}" if first else \
        "No usable examples were found in the given files."


def read_split(folder: Path, split_name: str, limit: int | None = None) -> list[dict[str, Any]]:
    out = []
    path = Path(folder) / f"{split_name}.jsonl"
    if not path.exists():
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line))
            if limit and len(out) >= limit:
                break
    return out


def derive(src: Path, datasets_dir: Path, version: int, drop: set[int], tok, note: str) -> dict[str, Any]:
    """A new version of `src`'s dataset without rows `drop` (indexes over train, then
    validation), written like a prepared one (temp folder, then rename): the same splits less
    those rows, their lines, the held-out questions, statistics counted again."""
    meta = json.loads((src / "meta.json").read_text())
    name, max_len = meta["name"], meta.get("max_len") or 512
    try:
        where = json.loads((src / LINES).read_text())
    except (OSError, ValueError):
        where = {}
    tmp = datasets_dir / TMP_NAME.format(name=name, pid=os.getpid(), ms=int(time.time() * 1000))
    tmp.mkdir(parents=True)
    try:
        stats, start, splits, lines = Stats(max_len), 0, {}, {"removed": where.get("removed") or []}
        for part in ("train", "validation"):
            rows = read_split(src, part)
            origins = where.get(part) or [[None, None]] * len(rows)
            keep = [i for i in range(len(rows)) if start + i not in drop]
            start += len(rows)
            with open(tmp / f"{part}.jsonl", "w", encoding="utf-8") as out:
                for i in keep:
                    out.write(dumps(rows[i]) + "\n")
            for enc in templates.encode_many(tok, [rows[i] for i in keep], max_len):
                stats.add(enc.full_length, enc.trainable)
            splits[part], lines[part] = len(keep), [origins[i] for i in keep if i < len(origins)]
        (tmp / LINES).write_text(json.dumps(lines))
        if (src / "heldout.jsonl").exists():
            shutil.copy(src / "heldout.jsonl", tmp / "heldout.jsonl")
        summary = {**meta, "version": version, "records": splits["train"] + splits["validation"],
                   "splits": splits, **{k: v for k, v in stats.summary().items()
                                        if k in ("tokens", "truncated", "histogram")},
                   "derived_from": f"{name}@v{meta['version']}", "derived_how": note}
        summary.pop("path", None)
        (tmp / "meta.json").write_text(json.dumps(summary, indent=1))
        final = datasets_dir / name / f"v{version}"
        os.replace(tmp, final)
        summary["path"] = str(final)
        return summary
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
