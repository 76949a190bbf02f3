"""The browser studio: build_app(studio) → a Gradio Blocks app, one tab per step.

Owns layout and wiring only: a stepper of tabs (Data → Memory → Train → Compare → Export, plus
History), per-browser-session state (a typed Session: dataset, max length, memory verdict, run),
and refreshing each step from that state when it is opened. Each step's components live in its
own module; its handlers are module-level functions of (studio, session, inputs) that return
what the components show, so tests call them without a browser. Only this package imports
gradio, and it reaches the core only through the Studio facade (and errors).
"""
from __future__ import annotations

from typing import Any

CSS = """
.studio-header h1 {margin-bottom: 0}
.step-intro {font-size: 0.95em; opacity: 0.9}
.prose table td:not(:last-child), .prose table th:not(:last-child) {white-space: nowrap}
.prose table td, .prose table th {overflow-wrap: normal; word-break: normal}
.table-wrap td, .table-wrap th {white-space: nowrap}
.altair .vega-embed {width: 100%}
"""  # names and numbers never break mid-word in tables (the last, prose column may wrap);
# charts fill their box (gradio centres the chart, which leaves "container" width at zero)


def launch_kwargs() -> dict[str, Any]:
    import gradio as gr

    return {"theme": gr.themes.Soft(), "css": CSS, "show_error": False}


def remember(session, model: str) -> dict:
    return {"dataset": session.dataset, "run_id": session.run_id, "model": model}


def restore_model(saved: dict | None, current: str):
    import gradio as gr

    return gr.update(value=(saved or {}).get("model") or current)


def reopen(step: Any):
    """After a reload: the tab that was open (its select event refreshes it as a click would)."""
    import gradio as gr

    from .session import Step

    try:
        return gr.Tabs(selected=Step(int(step)))
    except (TypeError, ValueError):
        return gr.update()


def build_app(studio):
    import gradio as gr

    from . import compare_step, data_step, export_step, history, memory_step, model_picker, train_step
    from .session import TAB_NAMES, Session, Step

    with gr.Blocks(title="Finetune Studio") as app:
        gr.Markdown("# Finetune Studio\nFine-tune an open LLM on your own data, see whether it "
                    "learned, and take it to llama.cpp or Ollama. Work through the steps left "
                    "to right; each one explains what a good result looks like.",
                    elem_classes="studio-header")
        state = gr.State(Session())
        model = model_picker.build(studio)
        # The steps appear once this tab's choices are restored (below): an action taken before
        # that (Prepare, Start) would have its result overwritten by the restore, which read the
        # state before the action wrote it — seen as a dataset lost between two busy tabs.
        loading = gr.Markdown("⏳ Opening your studio…")
        steps = gr.Column(visible=False)
        with steps, gr.Tabs() as tabs:
            with gr.Tab(TAB_NAMES[Step.DATA], id=Step.DATA) as t_data:
                links, data_refresh, data_panel = data_step.build(studio, state, model)
            with gr.Tab(TAB_NAMES[Step.MEMORY], id=Step.MEMORY) as t_memory:
                mem_refresh, mem_seq = memory_step.build(studio, state, model, tabs)
            with gr.Tab(TAB_NAMES[Step.TRAIN], id=Step.TRAIN) as t_train:
                train_refresh, train_out, more = train_step.build(studio, state, model)
                links += more
            with gr.Tab(TAB_NAMES[Step.COMPARE], id=Step.COMPARE) as t_compare:
                cmp_refresh, cmp_out, more = compare_step.build(studio, state, model)
                links += more
            with gr.Tab(TAB_NAMES[Step.EXPORT], id=Step.EXPORT) as t_export:
                exp_refresh, exp_out = export_step.build(studio, state, model, tabs)
            with gr.Tab(TAB_NAMES[Step.HISTORY], id=Step.HISTORY) as t_history:
                hist_refresh, hist_out = history.build(studio, state)
        # A tab refreshes when it is selected, by a click or by code (a Next button, "Use these
        # settings", "Chat with this GGUF"): gradio sends the select event either way.
        t_data.select(*data_panel)  # the dataset may have changed elsewhere (Train, a reload)
        t_memory.select(mem_refresh, state, mem_seq)
        t_train.select(train_refresh, [state, model], train_out)
        t_compare.select(cmp_refresh, state, cmp_out)
        t_export.select(exp_refresh, state, exp_out)
        t_history.select(hist_refresh, state, hist_out)
        for button, target in links:  # "Next: … →"
            button.click(lambda s=target: gr.Tabs(selected=s), None, tabs)
        # What this browser chose survives a reload (its local storage); a run training now is
        # followed again after a reload or a server restart.
        saved = gr.BrowserState({}, storage_key="finetune-studio")
        step = gr.BrowserState(int(Step.DATA), storage_key="finetune-studio-step")  # the tab open last
        # Each tab's own select event (a click, or code that opens it) records it: the Tabs-wide
        # event is not sent for a tab opened by code, so a reload fell back to Data.
        for tab, opens in ((t_data, Step.DATA), (t_memory, Step.MEMORY), (t_train, Step.TRAIN),
                           (t_compare, Step.COMPARE), (t_export, Step.EXPORT), (t_history, Step.HISTORY)):
            tab.select(lambda s=opens: int(s), None, step)

        # The tab that was open is chosen before the steps appear: chosen later, it took the
        # page away from a tab the user had clicked meanwhile.
        def restore(st, sv, last):
            return (train_step.reattach(studio, st, sv), gr.update(visible=False),
                    gr.update(visible=True), reopen(last))
        app.load(restore, [state, saved, step], [state, loading, steps, tabs]).then(
            restore_model, [saved, model], model).then(train_refresh, [state, model], train_out).then(
            *data_refresh).then(*data_panel)
        state.change(remember, [state, model], saved)

        def closed(request):  # the tab was closed or reloaded
            data_step.cancel_session(request.session_hash if request else None)
        closed.__annotations__["request"] = gr.Request  # a real type: gradio fills it in
        app.unload(closed)
        model.change(remember, [state, model], saved)
    return app
