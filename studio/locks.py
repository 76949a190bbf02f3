"""One process at a time: an advisory lock on a file that the operating system releases when
the holder dies, even by kill -9 (fcntl.flock on Linux/macOS, msvcrt.locking on Windows).

Owns `hold(path, what)`: a context manager that takes the lock without waiting or raises a
StudioError subclass naming what is busy and which process holds it.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import StudioError
from .faults import pid_alive


class Busy(StudioError):
    """Another process holds the lock."""


def _try_lock(fd: int) -> bool:
    try:
        import fcntl

        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False


def _holder(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode().strip()
    except (OSError, AttributeError, UnicodeDecodeError):
        return ""


def _lock_or_wait(fd: int, wait_s: float) -> bool:
    """Take the lock; if its recorded holder is already dead (a killed process whose threads
    are still exiting keeps its files for a moment), wait for the release a little while."""
    deadline = time.monotonic() + wait_s
    while not _try_lock(fd):
        holder = _holder(fd)
        if not holder.isdigit() or pid_alive(int(holder)) or time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@contextmanager
def hold(path: Path, what: str, dead_holder_wait_s: float = 10.0) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _lock_or_wait(fd, dead_holder_wait_s):
            holder = _holder(fd) or "another process"
            raise Busy(f"{what} is busy: process {holder} is working on it. Wait for it to "
                       "finish (or stop it), then try again.")
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())  # who holds it, for the Busy message
        yield
    finally:
        os.close(fd)  # closing releases the lock; the file itself stays (harmless, tiny)
