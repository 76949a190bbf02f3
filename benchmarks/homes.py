"""Fresh studio homes and the order of repetitions, for the benchmark scripts.

Owns what DESIGN.md's last rule asks of a benchmark: a fresh home (no cached or linked result
of an earlier run), repetitions, and the order of the two sides alternated. A fresh home is an
empty STUDIO_HOME with the converted embedded model hard-linked in, as tests/conftest.py's
new_home does: the conversion (≈15 s, done once into .venv/.test-cache, the folder the tests
use) is not the work any benchmark names, while an export, dataset, run or replay cache of an
earlier repetition is never in it. Does not time anything; the scripts do.
"""
from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".venv" / ".test-cache"  # shared with the tests: one conversion for both


def embedded_model() -> Path:
    """The embedded model as an HF folder, converted once (kept between runs)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from studio.models import registry as models

    CACHE.mkdir(parents=True, exist_ok=True)
    return models.prepare_embedded(CACHE)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system: a copy is the same input, only slower to make
        shutil.copy2(src, dst)


def fresh_home(parent: Path, name: str = "home") -> Path:
    """A new, empty STUDIO_HOME under `parent` holding only the embedded model (hard links):
    no exports, datasets, runs or replay caches of anything run before."""
    src = embedded_model()
    home = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=parent))
    dst = home / "models" / src.name
    dst.parent.mkdir(parents=True)
    shutil.copytree(src, dst, copy_function=_link_or_copy)
    return home


def orders(reps: int, sides: list[str]) -> list[list[str]]:
    """The order of the sides in each repetition: as given, reversed, as given… so that no
    side always runs first (on a warm or a cold cache): A B, B A, A B, …"""
    return [list(sides) if i % 2 == 0 else list(reversed(sides)) for i in range(reps)]


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def spread(xs: list[float], fmt: str = "{:.2f}") -> str:
    """'median (min–max of N)': what a reader needs to judge a ratio of medians."""
    return f"{fmt.format(median(xs))} (min {fmt.format(min(xs))}, max {fmt.format(max(xs))}, n={len(xs)})"
