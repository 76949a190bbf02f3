"""The browser studio: build_app(studio) → a Gradio Blocks app, one tab per step.

Owns layout and wiring only; each step's components and handlers live in their own module and
call the Studio facade. Only this package imports gradio.
"""
from __future__ import annotations

from typing import Any

CSS = """
.studio-header h1 {margin-bottom: 0}
.step-intro {font-size: 0.95em; opacity: 0.85}
"""


def launch_kwargs() -> dict[str, Any]:
    import gradio as gr

    return {"theme": gr.themes.Soft(), "css": CSS, "show_error": False}


def build_app(studio):
    import gradio as gr

    from . import model_picker

    with gr.Blocks(title="Finetune Studio") as app:
        gr.Markdown("# Finetune Studio\nFine-tune an open LLM on your own data, see whether it "
                    "learned, and take it to llama.cpp or Ollama.", elem_classes="studio-header")
        model = model_picker.build(studio)
        del model
    return app
