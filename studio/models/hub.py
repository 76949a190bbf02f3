"""Hub models: what to fetch from the Hugging Face hub, checks before any byte moves, and a
download that resumes and reports its progress.

Owns picking the files a model needs (top-level safetensors, config and tokenizer files; never
pickle weights, nor Mistral's duplicate consolidated.safetensors), refusing what we cannot use
before downloading (no such repository, gated, pickle-only, not enough disk, offline and not
cached), and the download itself into the standard Hugging Face cache (so other tools share it),
file by file with a byte count reported to the caller. An interrupted download resumes from its
partial file; a model already in the cache opens offline.
"""
from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import ModelError

KEEP = (".json", ".safetensors", ".model", ".txt", ".jinja", ".tiktoken")
PATTERNS = [f"*{ext}" for ext in KEEP]


def reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "TRUE", "yes"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def error_message(repo_id: str, e: Exception) -> str:
    """What went wrong opening a hub repository, in words, with what to do."""
    kind = type(e).__name__
    status = getattr(getattr(e, "response", None), "status_code", None)
    if kind == "GatedRepoError" or status in (401, 403) and "gated" in str(e).lower():
        return (f"'{repo_id}' is gated: accept its licence on https://huggingface.co/{repo_id} while "
                "logged in, then give your access token (set HF_TOKEN, or --hf-token).")
    if kind == "RepositoryNotFoundError" or status == 404:
        return (f"There is no model '{repo_id}' on the hub (or it is private: then set HF_TOKEN). "
                "Check the spelling, e.g. Qwen/Qwen3-0.6B.")
    return f"Cannot open '{repo_id}' on the hub ({kind}: {str(e)[:200]})."


def wanted(siblings: list[Any]) -> list[Any]:
    """The files a model needs, from the repository listing (objects with rfilename, size)."""
    top = [s for s in siblings if "/" not in s.rfilename and s.rfilename.endswith(KEEP)]
    shards = [s for s in top if s.rfilename.endswith(".safetensors")
              and not s.rfilename.startswith("consolidated")]
    if shards:  # Mistral ships the same weights twice: keep the transformers shards
        top = [s for s in top if not s.rfilename.startswith("consolidated")]
    return top


def cached(repo_id: str) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(repo_id, allow_patterns=PATTERNS, local_files_only=True))
    except Exception:
        return None
    return path if any(path.glob("*.safetensors")) and (path / "config.json").exists() else None


def config(repo_id: str, token: str | None = None) -> dict[str, Any]:
    """A hub model's config.json alone (a few KB): from the cache, else from the hub. Enough to
    estimate memory without downloading the weights."""
    import json

    from huggingface_hub import hf_hub_download

    try:
        return json.loads(Path(hf_hub_download(repo_id, "config.json", local_files_only=True)).read_text())
    except Exception:
        pass
    if not reachable():
        raise ModelError(f"'{repo_id}' is neither a local folder nor a hub model in the local cache, "
                         "and the hub cannot be reached (offline?). Use a catalogue name (e.g. "
                         "qwen3-8b), a model folder, or connect once to fetch its config.json.")
    try:
        return json.loads(Path(hf_hub_download(repo_id, "config.json", token=token)).read_text())
    except Exception as e:
        raise ModelError(error_message(repo_id, e)) from e


class Meter:
    """Adds up bytes over the files of one download and reports at most once a second."""

    def __init__(self, repo_id: str, total: int, report: Callable[[str], Any] | None):
        self.repo_id, self.total, self.report = repo_id, max(1, total), report
        self.finished = 0   # bytes of files already complete
        self.current = 0    # bytes of the file in progress (resumed bytes included)
        self.start, self.last = time.monotonic(), 0.0

    def bar(self):
        from tqdm.auto import tqdm

        meter = self

        class Bar(tqdm):  # what huggingface_hub updates while one file downloads
            def __init__(self, *a, **k):
                k["disable"] = True
                super().__init__(*a, **k)
                meter.current = int(k.get("initial") or 0)

            def update(self, n=1):
                meter.current += int(n or 0)
                meter.tick()
        return Bar

    def file_done(self, size: int) -> None:
        self.finished += size
        self.current = 0
        self.tick(force=True)

    def text(self) -> str:
        done = self.finished + self.current
        rate = done / max(1e-6, time.monotonic() - self.start)
        left = f", about {int((self.total - done) / rate)} s left" if rate > 0 and done < self.total else ""
        return (f"Downloading {self.repo_id}: {done / 1e9:.2f} of {self.total / 1e9:.2f} GB "
                f"({100 * done // self.total}%){left}")

    def tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.report and (force or now - self.last >= 1.0):
            self.last = now
            self.report(self.text())


def download(repo_id: str, token: str | None = None, progress: Callable[[str], Any] | None = None) -> Path:
    """The model's folder in the HF cache: from the cache when it is there (offline too), else
    downloaded after the checks, file by file, resuming partial files."""
    path = cached(repo_id)
    if path:
        return path
    if not reachable():
        raise ModelError(f"'{repo_id}' is not in the local Hugging Face cache and the hub cannot "
                         "be reached (offline). Connect to the internet, or download the model "
                         "elsewhere and give its folder instead.")
    from huggingface_hub import HfApi, hf_hub_download

    token = token or os.environ.get("HF_TOKEN") or None
    try:
        info = HfApi().model_info(repo_id, files_metadata=True, token=token)
    except Exception as e:
        raise ModelError(error_message(repo_id, e)) from None
    siblings = list(info.siblings or [])
    files = wanted(siblings)
    if not any(s.rfilename.endswith(".safetensors") for s in files):
        pickles = any(s.rfilename.endswith((".bin", ".pt", ".pth")) for s in siblings)
        raise ModelError(f"'{repo_id}' has no safetensors weights on the hub"
                         + (" (only pickle files)" if pickles else "")
                         + ". The studio does not load pickle files (they can run code); pick a "
                         "repository that ships safetensors.")
    need = sum(s.size or 0 for s in files)
    cache = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    cache.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(cache).free
    if need > free * 0.95:
        raise ModelError(f"'{repo_id}' needs {need / 1e9:.1f} GB but {cache} has only "
                         f"{free / 1e9:.1f} GB free. Free some space or set HF_HOME elsewhere.")
    report = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    report(f"Downloading {repo_id}: {need / 1e9:.2f} GB in {len(files)} files (an interrupted "
           "download resumes where it stopped).")
    meter = Meter(repo_id, need, report)
    folder = None
    for s in sorted(files, key=lambda s: s.size or 0):  # small files first: a typo fails fast
        try:
            got = hf_hub_download(repo_id, s.rfilename, revision=info.sha, token=token,
                                  tqdm_class=meter.bar())
        except Exception as e:
            raise ModelError(error_message(repo_id, e) + " What was downloaded is kept; run the "
                             "same command again to resume.") from None
        folder = Path(got).parent
        meter.file_done(s.size or 0)
    return folder
