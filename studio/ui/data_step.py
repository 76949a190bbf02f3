"""Data step: upload files, pick a recipe, prepare a dataset version, see what will train."""
from __future__ import annotations

import html
import threading
from pathlib import Path

from ..data.ingest import SUPPORTED
from ..data.recipes import RECIPES, RecipeParams
from ..presets import field_help
from .common import error_text

INTRO = ("**Step 1 — your data.** Upload question/answer files (jsonl, json, csv, parquet) or "
         "documents (txt, md, pdf, docx, Python, or a zip). We detect the format, turn documents "
         "into training examples with a recipe, remove duplicates and empty rows, and show how "
         "long the examples are. A good result: a few hundred clean examples, nearly none longer "
         "than the max length.")
HELP = field_help(RecipeParams)
SAMPLE = Path(__file__).resolve().parents[2] / "assets" / "sample" / "product_faq.jsonl"


def preview_html(segments_list) -> str:
    """Rendered examples; the tokens the model learns from are highlighted."""
    parts = ['<div style="font-family:monospace;font-size:12px">'
             '<p><span style="background:#c8f7c5">highlighted</span> = learned (the answer); '
             'the rest is context the model reads but is not trained to write.</p>']
    for segs in segments_list:
        body = "".join(
            f'<span style="background:{"#c8f7c5" if on else "transparent"}">{html.escape(t)}</span>'
            for t, on in segs)
        parts.append(f'<pre style="white-space:pre-wrap;border:1px solid #ccc;padding:6px">{body}</pre>')
    return "".join(parts) + "</div>"


def summary_md(s: dict) -> str:
    t = s["tokens"]
    lines = [f"### ✅ {s['name']} v{s['version']}: {s['records']} examples "
             f"(train {s['splits']['train']}, validation {s['splits']['validation']})",
             f"- Formats / recipes: {', '.join(f'{k} ({v})' for k, v in s['formats'].items())}",
             f"- Tokens per example: median {t['p50']}, 95% under {t['p95']}, longest {t['max']}.",
             f"- Longer than {s['max_len']} tokens (will be cut): **{s['truncated']}**; dropped "
             f"(nothing left to learn after cutting): {s['dropped_too_long']}.",
             f"- Removed: {s['duplicates_removed']['exact']} exact and "
             f"{s['duplicates_removed']['near']} near duplicates, {s['empty_removed']} empty rows."]
    c = s.get("recipe_counters") or {}
    if c.get("qa_fallback"):
        lines.append(f"⚠️ {c['qa_fallback']} chunks got a templated question (labelled 'fallback').")
    if s["errors"]:
        lines.append(f"\n**{len(s['errors'])} problems** (good rows were kept):\n")
        lines += [f"- `{e['file']}`{' line ' + str(e['line']) if e['line'] else ''}: {e['reason']}"
                  for e in s["errors"][:15]]
    return "\n".join(lines)


def hist_df(s: dict):
    import pandas as pd

    h = s["histogram"]
    return pd.DataFrame({"tokens": h["edges"][:-1], "examples": h["counts"]})


def build(studio, state, model):
    import gradio as gr

    gr.Markdown(INTRO, elem_classes="step-intro")
    with gr.Row():
        with gr.Column(scale=1):
            files = gr.File(label="Training files", file_count="multiple",
                            file_types=sorted(SUPPORTED))
            sample = gr.Button("No data yet? Use the sample FAQ (a fictional bird feeder)", size="sm")
            name = gr.Textbox("my-data", label="Dataset name", info="Letters, digits, - and _. "
                              "Preparing the same name again makes a new version.")
            recipe = gr.Dropdown(["auto", *RECIPES], value="auto", label="Recipe",
                                 info="auto: tables use their format, documents become paragraph "
                                      "chunks, code becomes summary → function pairs.")
            recipe_help = gr.Markdown("")
            max_tokens = gr.Slider(32, 4096, 256, step=32, label="Max tokens", info=HELP["max_tokens"])
            overlap = gr.Slider(0, 512, 32, step=8, label="Overlap (token-windows)", info=HELP["overlap"])
            val = gr.Slider(0, 0.5, 0.1, step=0.05, label="Validation share",
                            info="Held back to check learning; 0.1 is typical.")
            with gr.Accordion("Column mapping (only if detection fails)", open=False):
                prompt_col = gr.Textbox(label="Question / prompt column")
                answer_col = gr.Textbox(label="Answer / completion column")
            with gr.Row():
                go = gr.Button("Prepare dataset", variant="primary")
                cancel = gr.Button("Cancel", variant="stop")
        with gr.Column(scale=2):
            out = gr.Markdown("Upload files, then press **Prepare dataset**.")
            hist = gr.BarPlot(x="tokens", y="examples", label="Token lengths (bin start)",
                              x_title="tokens per example", visible=False)
            preview = gr.HTML()
    cancel_flag = gr.State(None)

    sample.click(lambda: ([str(SAMPLE)], "nimbus-faq"), None, [files, name])
    recipe.change(lambda r: "" if r == "auto" else f"*{RECIPES[r].help}*", recipe, recipe_help)

    def prepare(files, name, recipe, max_tokens, overlap, val, pcol, acol, model_ref, st,
                progress=gr.Progress()):
        if not files:
            return "⚠️ Upload at least one file first.", gr.update(visible=False), "", st, None
        flag = threading.Event()
        st = {**st, "cancel": flag}
        mapping = {"prompt": pcol, "completion": acol} if pcol and acol else None
        try:
            s = studio.data_prepare([f if isinstance(f, str) else f.name for f in files], name.strip(),
                                    recipe=recipe, model=model_ref, max_tokens=int(max_tokens),
                                    overlap=int(overlap), val_fraction=float(val), mapping=mapping,
                                    progress=lambda f, msg: progress(f, desc=msg), cancel=flag)
            segs = studio.data_preview(f"{s['name']}@v{s['version']}", model_ref, 4)
        except Exception as e:
            return error_text(e), gr.update(visible=False), "", st, None
        up = lambda n: min(8192, max(64, -(-n // 64) * 64))  # noqa: E731 - round up to 64
        st = {**st, "dataset": f"{s['name']}@v{s['version']}", "max_len": up(s["tokens"]["p95"]),
              "train_len": up(s["tokens"]["max"])}
        return summary_md(s), gr.update(value=hist_df(s), visible=True), preview_html(segs), st, None

    go.click(prepare, [files, name, recipe, max_tokens, overlap, val, prompt_col, answer_col, model,
                       state], [out, hist, preview, state, cancel_flag], concurrency_limit=1)

    def do_cancel(st):
        flag = st.get("cancel")
        if flag is not None:
            flag.set()
        return "Cancelling… nothing will be saved."

    cancel.click(do_cancel, state, out)
