"""Export step: GGUF for llama.cpp / Ollama / LM Studio, LoRA GGUF, adapter, merged — verified."""
from __future__ import annotations

from ..export.exporter import FORMATS, GGUF_QUANTS
from .common import error_text, human_bytes

INTRO = ("**Step 5 — export.** Write your tuned model as a GGUF file for llama.cpp, Ollama or LM "
         "Studio (q8_0 is a good default), and let us check that the file answers like the tuned "
         "model (the parity check). A good result: parity passed, and the commands below work "
         "as they are.")


def result_md(r: dict) -> str:
    lines = [f"**{r['format']}** ({r['quant']}) → `{r['path']}` — {human_bytes(r['bytes'])} in "
             f"{r['seconds']} s"]
    p = r.get("parity")
    if p:
        mark = "✅ passed" if p["passed"] else "❌ failed"
        lines.append(f"Parity {mark}: {p['agreement']:.1%} of next tokens agree with the tuned model "
                     f"(need ≥ {p['threshold']:.0%}), mean |Δ log-prob| {p['mean_abs_dlogprob']}, "
                     f"tokenizer match {p['tokenizer_match']:.0%}, stopped at end of turn in "
                     f"{p['stopped_at_end_of_turn']}/{p['prompts']} answers.")
    lines += [f"- {k}: `{v}`" for k, v in r.get("use", {}).items()]
    return "\n".join(lines)


def build(studio, state, model, tabs):
    import gradio as gr

    gr.Markdown(INTRO, elem_classes="step-intro")
    with gr.Row():
        with gr.Column(scale=1):
            run = gr.Dropdown([], label="Run")
            fmts = gr.CheckboxGroup(list(FORMATS), value=["gguf"], label="Formats",
                                    info=" · ".join(f"{k}: {v}" for k, v in FORMATS.items()))
            quant = gr.Dropdown(list(GGUF_QUANTS), value="q8_0", label="GGUF quantization",
                                info="q8_0: near-lossless, half of f16. q4_k_m: smallest, some loss.")
            verify = gr.Checkbox(True, label="Check parity with llama.cpp")
            go = gr.Button("Export", variant="primary")
            chat = gr.Button("Chat with the GGUF (step 4, llama.cpp engine)")
        with gr.Column(scale=2):
            out = gr.Markdown("Pick a run and press **Export**.")

    def do_export(run_id, fmts, quant, verify, progress=gr.Progress()):
        if not run_id:
            return "⚠️ Pick a run first (train one in step 3)."
        try:
            if studio.run_show(run_id)["status"] in ("queued", "running"):
                return f"⚠️ Run {run_id} is still training; export it when it has finished."
        except Exception as e:
            return error_text(e)
        parts = []
        for i, fmt in enumerate(fmts or []):
            progress(i / len(fmts), desc=f"Exporting {fmt}…")
            q = quant if fmt in ("gguf", "ollama") else None
            try:
                parts.append(result_md(studio.export(fmt, run_id=run_id, quant=q, verify=verify)))
            except Exception as e:
                parts.append(f"**{fmt}**: {error_text(e)}")
        return "\n\n".join(parts) or "⚠️ Choose at least one format."

    go.click(do_export, [run, fmts, quant, verify], out, concurrency_limit=1)
    chat.click(lambda st, r: {**st, "engine": "llama.cpp", "run_id": r}, [state, run], state).then(
        lambda: gr.Tabs(selected="compare"), None, tabs)

    def refresh(st):
        from .compare_step import completed_runs

        ids = completed_runs(studio)
        value = st.get("run_id") if st.get("run_id") in ids else (ids[0] if ids else None)
        ready = gr.update(interactive=bool(ids))
        why = "Pick a run and press **Export**." if ids else \
            "⏳ Nothing to export yet: train a run in step 3 first."
        return gr.update(choices=ids, value=value), ready, ready, why

    return refresh, [run, go, chat, out]
