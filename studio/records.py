"""Small records every step shares: run statuses and dataset references ("name@vN").

Owns the spelling of a run's status and what each status allows, and the one parse/format of a
dataset reference. Pure data; imports nothing of the project but errors.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from .errors import DataError


class RunStatus(str, enum.Enum):
    """A run's life: queued → running → completed / stopped / failed (stopped and failed resume)."""
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"

    def __str__(self) -> str:
        return self.value

    @property
    def active(self) -> bool:
        """A process is (or is about to be) training it."""
        return self in (RunStatus.QUEUED, RunStatus.RUNNING)

    @property
    def has_result(self) -> bool:
        """It may hold an adapter worth comparing or exporting."""
        return self in (RunStatus.COMPLETED, RunStatus.STOPPED)


ACTIVE = tuple(s.value for s in RunStatus if s.active)
WITH_RESULT = tuple(s.value for s in RunStatus if s.has_result)

_REF = re.compile(r"^(?P<name>.+?)(?:@v(?P<version>\d+))?$")


@dataclass(frozen=True)
class DatasetRef:
    """`name` or `name@vN` (None = the newest version)."""
    name: str
    version: int | None = None

    @classmethod
    def parse(cls, text: str, version: int | None = None) -> "DatasetRef":
        m = _REF.match((text or "").strip())
        if not m:
            raise DataError("A dataset reference is empty; give NAME or NAME@vN (e.g. faq@v2).")
        v = int(m["version"]) if m["version"] else None
        return cls(m["name"], version if version is not None else v)

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}@v{self.version}"
