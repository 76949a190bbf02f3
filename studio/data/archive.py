"""Zip archives, read in memory (nothing is extracted to disk): which entries are safe to read
(no `../` or absolute paths, no symbolic links, no zip bombs), the count and size limits, and
reading one entry whole or, for .jsonl, as a stream.

Owns the archive's rules; which reader an entry goes to is ingest.py's dispatch.
"""
from __future__ import annotations

import zipfile
import zlib
from pathlib import PurePosixPath
from typing import Iterator

from .items import MAX_WHOLE_FILE, Issue, Record, kind_of
from .tables import jsonl_stream

ZIP_MAX_FILES = 2000            # entries read from one archive
ZIP_MAX_BYTES = 512 * 2**20     # unpacked bytes read from one archive (a bomb stops here)
ZIP_MAX_RATIO = 100             # an entry compressed more than 100:1 is treated as a bomb


def entries(zf: zipfile.ZipFile, issues: list[Issue], name: str) -> list[zipfile.ZipInfo]:
    """The archive's files (not folders), at most ZIP_MAX_FILES of them."""
    found = [i for i in zf.infolist() if not i.is_dir()]
    if not found:
        issues.append(Issue(name, None, "the zip archive is empty"))
    elif len(found) > ZIP_MAX_FILES:
        issues.append(Issue(name, None, f"has {len(found)} files; only the first "
                                        f"{ZIP_MAX_FILES} are read"))
        found = found[:ZIP_MAX_FILES]
    return found


def safe_member(info: zipfile.ZipInfo) -> str | None:
    """The reason an archive entry is unsafe to read, or None."""
    p = PurePosixPath(info.filename.replace("\\", "/"))
    if p.is_absolute() or info.filename.startswith(("/", "\\")) or (len(p.parts) and ":" in p.parts[0]):
        return "absolute path in archive; skipped"
    if ".." in p.parts:
        return "path escapes the archive ('..'); skipped"
    return None


def refusal(info: zipfile.ZipInfo) -> str | None:
    """Why an entry is skipped ("" to skip it silently: hidden files, macOS metadata), or None
    to read it."""
    why = safe_member(info)
    if (info.external_attr >> 16) & 0o170000 == 0o120000:
        why = "a symbolic link, not a file; skipped"
    if why:
        return why
    if kind_of(info.filename) in ("unsupported", "archive"):
        if not PurePosixPath(info.filename).name.startswith((".", "__MACOSX")):
            return "unsupported file type inside the archive; skipped"
        return ""
    if info.compress_size and info.file_size / info.compress_size > ZIP_MAX_RATIO:
        return f"compression ratio over {ZIP_MAX_RATIO}:1 (a zip bomb?); skipped"
    return None


def stream_jsonl(zf: zipfile.ZipFile, info: zipfile.ZipInfo, issues: list[Issue],
                 inner: str) -> Iterator[Record]:
    """A .jsonl entry streamed line by line, like a file on disk (no size limit)."""
    try:
        with zf.open(info) as f:
            yield from jsonl_stream(_Seekable(f, zf, info), issues, inner)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as e:
        issues.append(Issue(inner, None, f"the archive entry is damaged ({e}); rows "
                                         "before the damage were kept"))


def read_whole(zf: zipfile.ZipFile, info: zipfile.ZipInfo, issues: list[Issue],
               inner: str) -> bytes | None:
    """An entry's bytes, or None (with an Issue) when it is too big, damaged or lies about
    its size."""
    if info.file_size > MAX_WHOLE_FILE:
        issues.append(Issue(inner, None, f"is {info.file_size >> 20} MB unpacked; entries "
                                         f"are read whole up to {MAX_WHOLE_FILE >> 20} MB "
                                         "(.jsonl entries have no limit); skipped"))
        return None
    try:
        with zf.open(info) as f:  # read at most the declared size (+1 to catch lies)
            raw = f.read(info.file_size + 1)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError) as e:
        issues.append(Issue(inner, None, f"cannot be unpacked ({e}); skipped"))
        return None
    if len(raw) > info.file_size:
        issues.append(Issue(inner, None, "entry is larger than its header says; skipped"))
        return None
    return raw


class _Seekable:
    """A zip entry opened for streaming, rewound by opening it again (jsonl_stream peeks at
    its head, then starts over)."""

    def __init__(self, f, zf: zipfile.ZipFile, info: zipfile.ZipInfo):
        self.f, self.zf, self.info = f, zf, info

    def read(self, n: int = -1) -> bytes:
        return self.f.read(n)

    def readline(self, limit: int = -1) -> bytes:
        return self.f.readline(limit)

    def seek(self, pos: int) -> None:
        self.f.close()
        self.f = self.zf.open(self.info)
