"""Small helpers shared by the step modules: turning results and errors into readable text."""
from __future__ import annotations

from typing import Any

from ..errors import StudioError
from .session import Step


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
