"""Export step: GGUF for llama.cpp / Ollama / LM Studio, LoRA GGUF, adapter, merged — verified."""
from __future__ import annotations

import dataclasses

from .common import error_text, human_bytes
from .compare_step import completed_runs
from .session import Session, Step

INTRO = ("**Step 5 — export.** Write your tuned model as a GGUF file for llama.cpp, Ollama or LM "
         "Studio (q8_0 is a good default), and let us check that the file answers like the tuned "
         "model (the parity check). A good result: parity passed, and the commands below work "
         "as they are.")


USE_LABELS = {"llama.cpp": "Chat in a terminal (llama.cpp)", "ollama": "Run in Ollama",
              "python": "Load in Python"}


def result_md(r: dict) -> str:
    """What was written, how its GGUF was made or shared, the parity verdict, how to use it."""
    paras = [f"**{r['format']}** ({r['quant']}) → `{r['path']}` — {human_bytes(r['bytes'])} in "
             f"{r['seconds']} s"]
    if r.get("gguf_from"):
        how = "linked to" if r.get("gguf_linked") else "copied from"
        paras.append(f"Its GGUF is {how} `{r['gguf_from']}` (no second conversion"
                     + (", no second copy on disk" if r.get("gguf_linked") else "")
                     + "); the parity below is that file's.")
    p = r.get("parity")
    if p:
        paras.append(parity_md(p))
    elif r.get("parity_skipped"):
        paras.append(f"⏭️ {r['parity_skipped']}")
    uses = "\n".join(f"- {USE_LABELS.get(k, k)}: `{v}`" for k, v in r.get("use", {}).items())
    return "\n\n".join(paras + ([uses] if uses else []))


def parity_md(p: dict) -> str:
    """The parity verdict in plain words: what was compared and what each number means."""
    mark = "✅ passed" if p["passed"] else "❌ failed"
    n, stopped = p["prompts"], p["stopped_at_end_of_turn"]
    limit = f" the {p['answer_limit']}-token limit" if p.get("answer_limit") else " the length limit"
    cut = (f", which is normal for long answers (the token comparison covers each answer's first "
           f"{p['compare_limit']} tokens anyway)" if p.get("compare_limit") else ", which is normal")
    ends = (f"{stopped} of {n} test answers finished on their own before{limit}; the other "
            f"{n - stopped} {'was' if n - stopped == 1 else 'were'} cut at the limit{cut}" if stopped < n else
            f"all {n} test answers finished on their own before{limit}")
    ran_on = p.get("ran_past_end_of_turn", 0)
    after = (" None ran on past its end into a made-up next turn." if not ran_on else
             f" ❌ {ran_on} ran on past its end into a made-up next turn: the file does not know "
             "where an answer ends.")
    need = " At least one must finish on its own, to show the file knows where an answer ends." \
        if not stopped else ""
    took = f" (checked in {p['seconds']:.0f} s)" if p.get("seconds") is not None else ""
    return (f"Parity {mark}{took}: on {n} test questions, the file picks the same next token as "
            f"the tuned model {p['agreement']:.1%} of the time (needs {p['threshold']:.0%}); its "
            f"tokenizer matches on {p['tokenizer_match']:.0%} of the test texts; {ends}."
            f"{after}{need}")


def export(studio, run_id: str, fmts: list[str], quant: str, verify: bool, progress=None) -> str:
    if not run_id:
        return "⚠️ Pick a run first (train one in step 3)."
    try:
        if studio.run_show(run_id)["active"]:
            return f"⚠️ Run {run_id} is still training; export it when it has finished."
    except Exception as e:
        return error_text(e)
    gguf_like = studio.choices()["export"]["gguf_formats"]
    parts = []
    for i, fmt in enumerate(fmts or []):
        if progress is not None:
            progress(i / len(fmts), desc=f"{fmt}: starting…")
        q = quant if fmt in gguf_like else None
        stage = ((lambda frac, msg, i=i, fmt=fmt: progress((i + frac) / len(fmts), desc=f"{fmt}: {msg}"))
                 if progress is not None else None)  # one bar over all formats, naming the stage
        try:
            parts.append(result_md(studio.export(fmt, run_id=run_id, quant=q, verify=verify,
                                                 progress=stage)))
        except Exception as e:
            parts.append(f"**{fmt}**: {error_text(e)}")
    return "\n\n".join(parts) or "⚠️ Choose at least one format."


def chat_with_gguf(session: Session, run_id: str) -> Session:
    return dataclasses.replace(session, engine="llama.cpp", run_id=run_id)


def refresh(studio, session: Session):
    """→ (run choices, Export button, Chat button, message)."""
    import gradio as gr

    ids = completed_runs(studio)
    value = session.run_id if session.run_id in ids else (ids[0] if ids else None)
    ready = gr.update(interactive=bool(ids))
    why = "Pick a run and press **Export**." if ids else \
        "⏳ Nothing to export yet: train a run in step 3 first."
    return gr.update(choices=ids, value=value), ready, ready, why


def build(studio, state, model, tabs):
    import gradio as gr

    ex = studio.choices()["export"]
    gr.Markdown(INTRO, elem_classes="step-intro")
    with gr.Row():
        with gr.Column(scale=1):
            run = gr.Dropdown([], label="Run")
            fmts = gr.CheckboxGroup(list(ex["formats"]), value=["gguf"], label="Formats",
                                    info=" · ".join(f"{k}: {v}" for k, v in ex["formats"].items()))
            quant = gr.Dropdown(ex["gguf_quants"], value="q8_0", label="GGUF quantization",
                                info="q8_0: near-lossless, half of f16. q4_k_m: smallest, some loss.")
            verify = gr.Checkbox(True, label="Check parity with llama.cpp",
                                 info="Runs the file in llama.cpp on 8 test questions and compares "
                                      "it with the tuned model (a minute or more on a CPU). Untick "
                                      "to skip; you can check it later by exporting again.")
            go = gr.Button("Export", variant="primary")
            chat = gr.Button("Chat with this GGUF in 4 · Compare →")
        with gr.Column(scale=2):
            out = gr.Markdown("Pick a run and press **Export**.")

    def on_export(run_id, fmts, quant, verify, progress=gr.Progress()):
        return export(studio, run_id, fmts, quant, verify, progress)

    go.click(on_export, [run, fmts, quant, verify], out, concurrency_limit=1)
    chat.click(chat_with_gguf, [state, run], state).then(
        lambda: gr.Tabs(selected=Step.COMPARE), None, tabs)
    return (lambda st: refresh(studio, st)), [run, go, chat, out]
