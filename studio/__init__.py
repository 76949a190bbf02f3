"""Finetune Studio: fine-tune open LLMs on your own data, locally, and take them to llama.cpp.

`import studio` stays light (no torch, no gradio): the Studio facade is loaded on first use.
"""
__version__ = "0.1.0"
__all__ = ["Studio", "__version__"]


def __getattr__(name):
    if name == "Studio":
        from .api import Studio

        return Studio
    raise AttributeError(name)
