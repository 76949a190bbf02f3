"""Memory step: will this run fit my GPU? A breakdown bar, a verdict and what to change."""
from __future__ import annotations

import dataclasses
import html

from .common import error_text
from .session import LONGEST_UI, MemoryNote, Session, Step

INTRO = ("**Step 2 — memory.** Before training we estimate the GPU memory the run needs, term by "
         "term, and say whether it fits your GPU and what to change if not. A good result: "
         "“fits” with some room to spare. On a CPU-only laptop, pick *CPU* and the embedded model.")
TERMS = {"weights": "model weights", "trainable_weights": "adapter weights",
         "optimizer": "optimizer state", "activations": "activations", "logits_loss": "logits and loss",
         "gradients": "gradients", "backward_transient": "backward pass peak",
         "allocator_slack": "allocator slack", "cuda_context": "CUDA context",
         "replay_anchor": "replay anchor (KL to the base)", "reference_pass": "reference pass (DPO)",
         "weights_quantized": "quantized weights", "weights_unquantized": "other weights"}  # plain names
COLORS = ["#4e79a7", "#59a14f", "#9c755f", "#f28e2b", "#edc948", "#e15759", "#76b7b2", "#b07aa1",
          "#ff9da7", "#bab0ac", "#8cd17d"]


def bar_html(est: dict) -> str:
    parts = est["breakdown_gb"]
    cap = (est.get("gpu") or {}).get("usable_gb")
    scale = max(est["total_gb"], cap or 0) or 1
    segs = "".join(
        f'<div title="{html.escape(TERMS.get(k, k))}: {v:.2f} GB — {html.escape(est["why"][k])}" '
        f'style="width:{100 * v / scale:.2f}%;background:{COLORS[i % len(COLORS)]};height:28px"></div>'
        for i, (k, v) in enumerate(parts.items()) if v > 0)
    marker = (f'<div style="position:absolute;left:{100 * cap / scale:.2f}%;top:-4px;height:36px;'
              f'border-left:3px dashed #d00" title="GPU capacity {cap:.1f} GB"></div>' if cap else "")
    legend = " ".join(f'<span style="white-space:nowrap"><span style="display:inline-block;width:10px;'
                      f'height:10px;background:{COLORS[i % len(COLORS)]}"></span> '
                      f'{html.escape(TERMS.get(k, k))} {v:.2f} GB</span>'
                      for i, (k, v) in enumerate(parts.items()) if v > 0)
    return (f'<div style="position:relative;display:flex;border:1px solid #999;margin:8px 0">{segs}'
            f'{marker}</div><div style="font-size:12px">{legend}'
            f'{" · red dashed line: your GPU" if cap else ""}</div>')


def verdict_md(est: dict) -> str:
    lines = [f"### {est['total_gb']:.2f} GB at peak — {est['total_params']:,} parameters, "
             f"{est['trainable_params']:,} trained"]
    if est.get("gpu"):
        ok = "✅ Fits" if est["fits"] else "❌ Does not fit"
        gpu = est["gpu"]
        lines.append(f"**{ok}** on {gpu.get('label') or gpu['name']} ({gpu['usable_gb']} GB usable).")
        steps = est.get("plan") or []
        if steps:
            lines.append("\nTo make it fit, change these together (the estimate after each):\n")
            lines += [f"{i}. {s['change']} → **{s['total_gb']:.1f} GB**" for i, s in enumerate(steps, 1)]
            lines.append("\nPress **Use these settings** to take them to the Train step.\n")
        else:
            lines.append(" ".join(est["advice"]))
        lines.append(limits_md(est))
    lines += [f"⚠️ {w}" for w in est["warnings"]]
    if est.get("measured"):
        m = est["measured"]
        lines.append(f"Measured here ({m['device']}): **{m['measured_gb']} GB** vs estimate "
                     f"{m['estimate_gb']} GB ({m['error_pct']:+}%). " + " ".join(m["notes"]))
    lines.append("\n| what | GB | why |\n|---|---|---|")
    lines += [f"| {TERMS.get(k, k)} | {v:.2f} | {est['why'][k]} |" for k, v in est["breakdown_gb"].items()]
    return "\n".join(lines)


def limits_md(est: dict) -> str:
    """How far each knob can go with the other as set (after the plan, when there is one)."""
    st, plan = est.get("setting") or {}, dict(est.get("plan_settings") or {})
    with_plan = bool(est.get("limits_with_plan"))
    seq = plan.get("max_len", st.get("seq_len")) if with_plan else st.get("seq_len")
    batch = plan.get("micro_batch", st.get("batch")) if with_plan else st.get("batch")
    head = "With these changes, the largest" if with_plan else "The largest"
    longest = f"{est['max_seq_len']:,}" if est.get("max_seq_len") else "none"
    return (f"{head} micro-batch that fits at {seq:,} tokens: {est['max_micro_batch'] or 'none'}; "
            f"the longest sequence at micro-batch {batch}: {longest} tokens. "
            f"Suggested preset: **{est['preset']}**.")


CPU = "CPU (no GPU)"
CUSTOM = "custom"


def estimate(studio, session: Session, model_ref: str, method: str, seq, batch, rank, ckpt,
             opt: str, gpu: str, vram, measure: bool = False):
    """→ (breakdown bar html, verdict markdown, session)."""
    cpu = gpu == CPU
    try:
        est = studio.estimate(model_ref, None if cpu or gpu == CUSTOM else gpu,
                              float(vram) if gpu == CUSTOM else None, measure,
                              method=method, bits=4 if method == "qlora" else 16,
                              seq_len=int(seq), batch=int(batch), rank=int(rank),
                              grad_ckpt=bool(ckpt), optimizer=opt, device="cpu" if cpu else "cuda")
    except Exception as e:
        return "", error_text(e), session
    chosen = {"method": method, "max_len": int(seq), "micro_batch": int(batch), "rank": int(rank),
              "grad_ckpt": bool(ckpt), "optimizer": opt, **(est.get("plan_settings") or {})}
    chosen.pop("bits", None)  # follows the method
    note = MemoryNote(est.get("planned_total_gb", est["total_gb"]), est.get("fits_with_plan", est["fits"]),
                      est.get("preset"), (est.get("gpu") or {}).get("label") or gpu, model_ref,
                      tuple(sorted(chosen.items())))
    return bar_html(est), verdict_md(est), dataclasses.replace(session, memory=note)


def use_settings(session: Session):
    """'Use these settings': the estimate's model, preset and (planned) settings go to Train.
    → (session, model picker, tabs, message)."""
    import gradio as gr

    mem = session.memory
    if mem is None:
        return session, gr.update(), gr.update(), "⚠️ Press **Estimate** first."
    planned = tuple((k, v) for k, v in mem.settings)
    return (dataclasses.replace(session, planned=planned), gr.update(value=mem.model),
            gr.Tabs(selected=Step.TRAIN), "Settings sent to the Train step.")


USE_LABEL = "Use these settings → Train"


def usable(session: Session):
    """'Use these settings' acts once there is an estimate to carry over."""
    import gradio as gr

    ready = session.memory is not None
    return gr.update(interactive=ready, value=USE_LABEL if ready else USE_LABEL + " (estimate first)")


def prefill(session: Session):
    import gradio as gr

    return gr.update(value=int(session.max_len or 512))


def model_names(studio) -> list[str]:
    """Local and embedded models, then every catalogue name (each once)."""
    return list(dict.fromkeys([*(m["name"] for m in studio.models_list()),
                               *studio.choices()["memory"]["models"]]))


def gpu_choices(studio) -> list[tuple[str, str]]:
    """The GPU list as (what the user reads, the value the estimate gets): each catalogue card
    with its memory ("RTX 4060 (8 GB)" → rtx-4060)."""
    labels = studio.choices()["memory"]["gpu_labels"]
    return [(CPU, CPU), ("This machine's GPU (local)", "local"),
            *((labels[k], k) for k in studio.choices()["memory"]["gpus"]),
            ("Custom: give its memory in GB", CUSTOM)]


def build(studio, state, model, tabs):
    import gradio as gr

    mem = studio.choices()["memory"]
    gr.Markdown(INTRO, elem_classes="step-intro")
    gpus = gpu_choices(studio)
    with gr.Row():
        with gr.Column(scale=1):
            mem_model = gr.Dropdown(model_names(studio), value=model.value, label="Model to estimate",
                                    allow_custom_value=True, filterable=True,
                                    info="A catalogue name (type to search, e.g. qwen3-8b or "
                                         "llama-3.1-8b), a local folder, or a hub id (org/name). "
                                         "No weights are downloaded to estimate.")
            method = gr.Radio(mem["choices"]["method"], value="lora", label="Method",
                              info="QLoRA stores the frozen model in 4 bits: about a quarter of the memory.")
            seq = gr.Slider(64, LONGEST_UI, 512, step=64, label="Max length (tokens)",
                            info="Prefilled from your dataset (95% of examples are shorter). Type a "
                                 "length to see what a long context needs.")
            batch = gr.Slider(1, 64, 4, step=1, label="Micro-batch", info=mem["help"]["batch"])
            rank = gr.Slider(1, 256, 16, step=1, label="LoRA rank", info=mem["help"]["rank"])
            ckpt = gr.Checkbox(True, label="Gradient checkpointing", info=mem["help"]["grad_ckpt"])
            opt = gr.Dropdown(mem["choices"]["optimizer"], value="adamw", label="Optimizer")
            gpu = gr.Dropdown(gpus, value=CPU, label="Your GPU")
            vram = gr.Number(12, label="Custom GPU memory (GB)", visible=False)
            with gr.Row():
                go = gr.Button("Estimate", variant="primary")
                measure = gr.Button("Measure a few real steps here")
        with gr.Column(scale=2):
            bar = gr.HTML()
            verdict = gr.Markdown("Press **Estimate**.")
            use = gr.Button(USE_LABEL + " (estimate first)", variant="primary", interactive=False)
            used = gr.Markdown()
    gpu.change(lambda g: gr.update(visible=g == CUSTOM), gpu, vram)
    model.change(lambda m: gr.update(value=m), model, mem_model)

    inputs = [state, mem_model, method, seq, batch, rank, ckpt, opt, gpu, vram]
    for button, measured in ((go, False), (measure, True)):
        button.click(lambda *a, m=measured: estimate(studio, *a, measure=m), inputs,
                     [bar, verdict, state], concurrency_limit=1).then(usable, state, use)
    use.click(use_settings, state, [state, model, tabs, used])
    return prefill, seq
