"""Small helpers shared by the step modules: turning results and errors into readable text, and
the long jobs a tab runs (a prepare, an evaluation) with their Cancel."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from ..errors import StudioError
from .session import Step


# Room above a chart for the plot box's own label, which gradio draws over the chart's top-left
# corner: without it the label hid the top of the y axis, and with it a loss curve's peaks.
CHART_PADDING = {"top": 34, "left": 5, "right": 5, "bottom": 5}


def error_text(e: Exception) -> str:
    """A StudioError's own message; anything else becomes a short, honest sentence."""
    if isinstance(e, StudioError):
        return f"⚠️ {e}"
    return (f"⚠️ Something went wrong ({type(e).__name__}: {e}). Your data is unchanged; the "
            "details are in the terminal that runs the studio.")


def kv_table(d: dict[str, Any], keys: list[tuple[str, str]]) -> str:
    rows = [f"| {label} | {_fmt(d.get(k))} |" for k, label in keys if d.get(k) is not None]
    return "| fact | value |\n|---|---|\n" + "\n".join(rows)


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int) and v > 10_000:
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def human_bytes(n: int | float | None) -> str:
    if not n:
        return "0 B"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def local_time(ts: float | None) -> str:
    """Seconds since the epoch as this machine's local date and time, '2026-12-06 14:03'
    (year first: unambiguous in every country, and it sorts)."""
    if ts is None:
        return ""
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def next_button(step: Step, label: str):
    """(a "Next: … →" button, step): hidden until the step it sits in is done; build_app makes
    it open that tab."""
    import gradio as gr

    return gr.Button(label, visible=False, size="sm", variant="secondary"), step


def shown(on: bool, n: int = 1):
    """Visibility updates for n Next buttons."""
    import gradio as gr

    ups = tuple(gr.update(visible=bool(on)) for _ in range(n))
    return ups[0] if n == 1 else ups


@dataclass
class Job:
    cancel: Any  # set / clear / is_set: a threading.Event or the tab's CancelFlag
    done: threading.Event = field(default_factory=threading.Event)
    answer: Any = None  # what the job showed when it ended


class Jobs:
    """The long job each browser session runs, by session. Cancel sets the job's flag and waits
    (a bounded time) for it to end, then shows what the job itself showed: the Cancel button's
    reply and the job's own last reply travel separately and may arrive in either order (a busy
    machine swaps them), so both must say the same — never a "Cancelling…" left over the result."""
    WAIT_S = 60.0

    def __init__(self):
        self.running: dict[str, Job] = {}

    @contextmanager
    def run(self, key: str, cancel: Any = None) -> Iterator[Job]:
        job = Job(cancel or threading.Event())
        job.cancel.clear()
        self.running[key] = job
        try:
            yield job
        finally:
            job.done.set()
            if self.running.get(key) is job:
                del self.running[key]

    def stop(self, key: str | None) -> None:
        """The tab was closed or reloaded: its job stops, no one waits for its answer."""
        job = self.running.get(key or "")
        if job is not None:
            job.cancel.set()

    def cancel(self, key: str | None, showing: str = "Cancelling… nothing will be saved."):
        """→ what the output should show: the job's own last answer once it has ended, `showing`
        while it still winds down, and no change when nothing runs (it ended already)."""
        import gradio as gr

        job = self.running.get(key or "")
        if job is None:
            return gr.update()
        job.cancel.set()
        return job.answer if job.done.wait(self.WAIT_S) and job.answer is not None else showing
