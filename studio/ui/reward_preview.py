"""The Train step's reward preview: before an RL run starts, what its rewards make of the model.

Owns the section shown under the method while grpo or rloo is picked: a Preview button that
samples a few training prompts × the preset's generations from the model the run would start
from, scores them with the rewards chosen from the dataset (studio.rewards_preview, the same as
`python -m studio rewards preview`), and shows each prompt's rewards, the share of prompts whose
answers all score the same (no learning signal) and the verdict in plain words — so a user sees
"never right: run SFT first" before spending the run's minutes, not after. The sampling and the
rewards are the core's (train/rl.py, train/rewards.py); this module only asks and shows.
"""
from __future__ import annotations

import logging
import re
from typing import Any

from ..errors import StudioError
from .common import error_text

log = logging.getLogger(__name__)

RL_METHODS = ("grpo", "rloo")
INTRO = ("Samples a few of your training questions several times from the model the run starts "
         "from and scores the answers with the rewards above. RL learns only from prompts whose "
         "answers score differently; this says whether there is something to learn before you start.")


def clip(text: str, n: int = 90) -> str:
    """One line of at most `n` characters, shown as written (markdown and HTML escaped)."""
    text = " ".join((text or "").split())
    text = text if len(text) <= n else text[: n - 1] + "…"
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([*_`\\[\]])", r"\\\1", text)


FROM_RUN = ("The Train step starts RL from the base model; to start it from a finished SFT run "
            "instead, train that run here first, then: `python -m studio train --preset "
            "cpu-quickstart-grpo --dataset NAME --from-run RUN_ID`.")


def result_md(r: dict[str, Any]) -> str:
    """The preview in words: verdict, figures, then each prompt with its answers' rewards (a
    list, not a table: it sits in the form's narrow column)."""
    lines = [f"**Verdict: {r['verdict']}**", "",
             f"{r['groups']} prompts, rewards: {', '.join(r['rewards'])} — mean reward "
             f"{r['mean']:.2f}; {r['zero_spread']:.0%} of prompts got the same reward on every answer "
             "(nothing to learn from those).", ""]
    if "--from-run" in r["verdict"]:
        lines[1:1] = ["", FROM_RUN]
    for e in r.get("examples", []):
        got = e["rewards"]
        spread = max(got) - min(got) if got else 0.0
        said = f"best answer: “{clip(e['best'], 70)}”" if spread > 1e-6 else f"an answer: “{clip(e['best'], 70)}”"
        lines.append(f"- *{clip(e['prompt'], 70)}* — rewards {', '.join(f'{v:.2f}' for v in got)} "
                     f"({f'spread {spread:.2f}' if spread > 1e-6 else 'no spread'}); {said}")
    return "\n".join(lines)


def preview(studio, preset: str | None, dataset: str | None, model: str | None, progress=None) -> str:
    """→ the preview's markdown, or what to do first; never a traceback."""
    if not dataset:
        return "⚠️ Pick a dataset first (prepare one in 1 · Data)."
    step = (lambda done, total: progress(done / total, desc=f"Sampled answers to {done} of {total} prompts")
            ) if progress is not None else None
    try:
        if progress is not None:
            progress(0.0, desc="Loading the model and sampling answers…")
        r = studio.rewards_preview(dataset, preset or "cpu-quickstart-grpo", model or None, on_prompt=step)
    except Exception as e:
        if not isinstance(e, StudioError):
            log.exception("reward preview failed")
        return error_text(e)
    return result_md(r)


def build(studio, preset, dataset, model, method):
    """The section (hidden unless an RL method is picked); wires itself to the form's fields."""
    import gradio as gr

    with gr.Accordion("Preview the rewards before you start", open=True,
                      visible=method.value in RL_METHODS) as box:
        gr.Markdown(INTRO)
        go = gr.Button("Preview rewards")
        out = gr.Markdown()

    def on_go(p, d, m, progress=gr.Progress()):
        return preview(studio, p, d, m, progress)
    go.click(on_go, [preset, dataset, model], out, concurrency_limit=1)
    method.change(lambda how: gr.update(visible=how in RL_METHODS), method, box)
    for field in (dataset, preset, model):  # a preview belongs to what it was made from
        field.change(lambda _: "", field, out)
    return box
