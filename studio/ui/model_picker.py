"""The model picker at the top of the studio: choose a model, see what it is."""
from __future__ import annotations

import logging

from .common import error_text, human_bytes, kv_table

log = logging.getLogger(__name__)

INFO_KEYS = [("architecture", "Architecture"), ("params", "Parameters"), ("layers", "Layers"),
             ("hidden_size", "Hidden size"), ("heads", "Attention heads"),
             ("kv_heads", "KV heads"), ("vocab_size", "Vocabulary"),
             ("context_length", "Context length"), ("chat_template", "Chat template"),
             ("size", "Size on disk"), ("path", "Files")]


def describe(studio, ref: str) -> str:
    try:
        info = studio.model_info(ref)
    except Exception as e:  # shown to the user, never a traceback
        log.exception("model info failed")
        return error_text(e)
    info["size"] = human_bytes(info.get("size_bytes"))
    head = f"**{info['name']}** — {info.get('about', info['kind'])}"
    return head + "\n\n" + kv_table(info, INFO_KEYS)


def build(studio):
    import gradio as gr

    names = [m["name"] for m in studio.models_list()]
    with gr.Accordion("Model (click to see what it is)", open=False):
        with gr.Row():
            model = gr.Dropdown(names, value=names[0], label="Model", allow_custom_value=True,
                                info="The embedded 135M model works everywhere. You can also type "
                                     "a local folder, a .gguf file or a hub id (org/name).",
                                scale=2)
            about = gr.Markdown(describe(studio, names[0]))
    model.change(lambda ref: describe(studio, ref), model, about)
    return model
