"""Faults: named crash points for tests, disk-full as a message, and sweeping what a crash left.

Owns what every writer shares. `crash_point(name)`: when STUDIO_CRASH_AT names it, the
process kills itself with SIGKILL right there — exactly what `kill -9` or a power cut does, at a
moment a test chooses (no sleeps); `hold_point(name, n, until)` likewise pauses it there until a
condition holds (STUDIO_HOLD_AT). `disk_guard(folder, need)`: an out-of-space error (ENOSPC,
EDQUOT, or a library's wrapped "No space left on device") becomes one message — what, where,
how much, what to do; STUDIO_FAULT_ENOSPC=name makes a named write fail that way in tests.
`sweep(folder, pattern)`: temp files and folders whose writing process is gone are removed.
`atomic_write_text(path, text)` / `atomic_write_bytes`: a small file written whole or not at all.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import StudioError

DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


class DiskFull(StudioError):
    """A write ran out of space; nothing half-written was kept."""


def atomic_write_text(path: Path, text: str) -> Path:
    """`text` into `path` through a temp file beside it (named for this process) and a rename:
    a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """`data` into `path` the same way: whole or not at all."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def crash_point(name: str, n: int | None = None) -> None:
    """SIGKILL this process here if STUDIO_CRASH_AT is `name` (or `name@n`, e.g. at a step)."""
    at = os.environ.get("STUDIO_CRASH_AT")
    if at and (at == name or (n is not None and at == f"{name}@{n}")):
        os.kill(os.getpid(), signal.SIGKILL)


def hold_point(name: str, n: int, until, ceiling_s: float = 900.0) -> None:
    """Wait here until `until()` is true if STUDIO_HOLD_AT is `name@n` (at most `ceiling_s`):
    a test pauses a process at a known step (a run held at step 3 until Stop), so what it checks
    next cannot race with a machine that is faster or slower than expected."""
    if os.environ.get("STUDIO_HOLD_AT") != f"{name}@{n}":
        return
    import time

    deadline = time.monotonic() + ceiling_s
    while not until() and time.monotonic() < deadline:
        time.sleep(0.2)


def fail_point(name: str) -> None:
    """Raise an out-of-space error here when a test asks for it (STUDIO_FAULT_ENOSPC=name)."""
    if os.environ.get("STUDIO_FAULT_ENOSPC") == name:
        raise OSError(errno.ENOSPC, "No space left on device (injected)")


def is_disk_full(e: BaseException | None) -> bool:
    """True for ENOSPC/EDQUOT anywhere in the exception's chain (libraries wrap it)."""
    seen = 0
    while e is not None and seen < 10:
        if isinstance(e, OSError) and e.errno in DISK_FULL:
            return True
        if "No space left on device" in str(e) or "Disk quota exceeded" in str(e):
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


LOW_SPACE = 64 * 2**20  # a write that fails with less than this left is taken for a full disk


def likely_disk_full(e: BaseException, folder: Path) -> bool:
    """is_disk_full, or any failure while the disk is (nearly) full: some writers lose the
    errno (torch.save reports "unexpected pos … vs …" from its zip writer)."""
    if is_disk_full(e):
        return True
    try:
        return shutil.disk_usage(folder).free < LOW_SPACE
    except OSError:
        return False


def disk_message(folder: Path, need: int | None = None) -> str:
    try:
        free = f"{shutil.disk_usage(folder).free / 1e9:.2f} GB free"
    except OSError:
        free = "free space unknown"
    needs = f"needs ~{need / 1e9:.2f} GB, " if need else ""
    return (f"Not enough space in {folder}: {needs}{free}. Nothing half-written was kept. Free "
            "some space, or set STUDIO_HOME (or --home / --out) to a disk with more room.")


@contextmanager
def disk_guard(folder: Path, need: int | None = None) -> Iterator[None]:
    try:
        yield
    except StudioError:
        raise
    except Exception as e:
        if likely_disk_full(e, Path(folder)):
            raise DiskFull(disk_message(Path(folder), need)) from None
        raise


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    status = Path(f"/proc/{pid}/stat")
    if status.exists():  # a zombie is gone for our purposes
        try:
            return status.read_text().split(")")[-1].split()[0] != "Z"
        except OSError:
            return True
    return True


def sweep(folder: Path, pattern: re.Pattern) -> list[Path]:
    """Remove entries of `folder` matching `pattern` (its group 'pid' names the writer) whose
    process is no longer alive; returns what was removed."""
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = pattern.search(p.name)
        if not m or pid_alive(int(m.group("pid"))):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed
