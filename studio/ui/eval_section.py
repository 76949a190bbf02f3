"""The Compare step's benchmarks: standard tasks before and after, as lm-evaluation-harness scores.

Owns the section's components and handlers: tasks (harness names or task folders, the studio's
own studio_general by default), a limit, the exported GGUF too, Evaluate and Cancel; the result
as a before/after table with the harness's standard errors, a bar chart and a line in plain words
per task. Work happens in the core (studio.evaluate); Cancel sets this tab's flag, which the
scoring reads at every batch.
"""
from __future__ import annotations

from typing import Any

from .common import CHART_PADDING, Jobs, error_text

JOBS = Jobs()  # browser session → its running evaluation


def table_md(r: dict[str, Any]) -> str:
    sides = [s for s in ("base", "tuned", "gguf") if any(s in v for v in r["tasks"].values())]
    names = {"base": "base", "tuned": "tuned", "gguf": "exported GGUF"}
    lines = ["| task | metric | " + " | ".join(names[s] for s in sides) + " |",
             "|---|---|" + "---|" * len(sides)]
    for task, by in r["tasks"].items():
        for metric in sorted(m for m in by.get("base", {}) if not m.endswith("_stderr")):
            cells = []
            for s in sides:
                v, e = by.get(s, {}).get(metric), by.get(s, {}).get(f"{metric}_stderr")
                cells.append("–" if v is None else f"{v:.1%}" + (f" ± {e:.1%}" if e else ""))
            lines.append(f"| {task} | {metric} | " + " | ".join(cells) + " |")
    said = "".join(f"\n- {line}" for line in r.get("summary", []))
    reused = " (stored earlier; tick *compute again* to redo it)" if r.get("reused") else ""
    return f"**Benchmarks**{reused}:\n\n" + "\n".join(lines) + said


def chart(r: dict[str, Any]):
    import altair as alt
    import pandas as pd

    rows = []
    for task, by in r["tasks"].items():
        metric = next((m for m in ("acc_norm", "acc", "exact_match") if by.get("base", {}).get(m) is not None), None)
        for side, vals in by.items():
            if metric and vals.get(metric) is not None:
                rows.append({"task": f"{task} ({metric})", "model": side, "score": vals[metric] * 100})
    if not rows:
        return None
    return alt.Chart(pd.DataFrame(rows)).mark_bar().encode(
        x=alt.X("model:N", title=None), y=alt.Y("score:Q", title="%"), color="model:N",
        column=alt.Column("task:N", title=None)).properties(width=140, height=200, padding=CHART_PADDING)


def evaluate(studio, run_id: str, tasks: str, limit, gguf: bool, again: bool, session_hash: str = "",
             progress=None):
    """→ (result markdown, chart update)."""
    import gradio as gr

    hidden = gr.update(visible=False)
    if not run_id:
        return "⚠️ Pick a run first.", hidden
    report = (lambda f, msg: progress(f, desc=msg)) if progress is not None else None
    with JOBS.run(session_hash) as job:
        try:
            r = studio.evaluate([t for t in (tasks or "").split(",")], run_id,
                                limit=int(limit) if limit else None, gguf=bool(gguf), progress=report,
                                cancel=job.cancel.is_set, refresh=bool(again))
        except Exception as e:
            job.answer = error_text(e)
            return job.answer, hidden
        plot = chart(r)
        job.answer = table_md(r)
        return job.answer, (gr.update(value=plot, visible=True) if plot is not None else hidden)


def cancel(session_hash: str = ""):
    """The Cancel button: the evaluation's own last words once it has stopped (common.Jobs)."""
    return JOBS.cancel(session_hash)


def build(studio, run):
    import gradio as gr

    with gr.Accordion("Benchmarks before and after (lm-evaluation-harness)", open=False):
        gr.Markdown("Standard tasks scored on the base and the tuned model — the same weights, the "
                    "adapter off and on. `studio_general` (197 general-knowledge questions) ships "
                    "with the studio and runs offline; any task name the harness knows, or a folder "
                    "of its YAML tasks, works too (a task's data must be on this machine or "
                    "downloadable).")
        with gr.Row():
            tasks = gr.Textbox("studio_general", label="Tasks (comma separated)", scale=3)
            limit = gr.Number(None, label="Questions per task (empty: all)", precision=0, scale=1)
            gguf = gr.Checkbox(False, label="Also the exported GGUF (llama.cpp)")
            again = gr.Checkbox(False, label="Compute again")
        with gr.Row():
            go = gr.Button("Evaluate")
            stop = gr.Button("Cancel", variant="stop")
        out = gr.Markdown()
        plot = gr.Plot(visible=False, label="Before and after")

    def on_go(r, t, lim, g, a, request: gr.Request, progress=gr.Progress()):
        return evaluate(studio, r, t, lim, g, a, request.session_hash if request else "", progress)
    on_go.__annotations__["request"] = gr.Request
    go.click(on_go, [run, tasks, limit, gguf, again], [out, plot], concurrency_limit=2)

    def on_stop(request: gr.Request):
        return cancel(request.session_hash if request else "")
    on_stop.__annotations__["request"] = gr.Request
    stop.click(on_stop, None, out, queue=False)
