"""The training child's entry point: `python -m studio.train.child RUN_DIR`.

A plain process with one run folder in: it opens the store and the model cache of the home the
folder belongs to (runs/<id>/ under STUDIO_HOME) and trains — it never builds the Studio facade
and never imports the UI. Its output goes to the run's train.log; its state to the store.
"""
from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    from ..errors import StudioError
    from ..models.cache import ModelCache
    from ..paths import Home, resolve_home
    from ..store import Store
    from .runs import execute

    if len(argv) != 1:
        print("usage: python -m studio.train.child RUN_DIR", file=sys.stderr)
        return 2
    run_dir = Path(argv[0]).resolve()
    home = resolve_home(Home.of_run(run_dir).root)
    try:
        execute(Store(home.db), ModelCache(home.models), run_dir.name)
    except StudioError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
