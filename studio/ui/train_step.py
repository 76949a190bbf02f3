"""Train step: pick a preset, press Start, watch the loss fall; Stop and Resume any time.

Training runs in a child process; this page only reads the run folder and the store, so closing
the tab or a crash in training never takes the studio down. Owns the form, the buttons and their
handlers and the layout; how a run is shown (status line, loss chart, runs table, the
model line) is train_view.py, whose names are reachable here too.
"""

import dataclasses
import re

from ..errors import StudioError
from . import reward_preview
from .common import error_text, next_button, shown
from .session import Session, Step
from .train_view import chart, curve, history, model_line, setting_words, status_md

INTRO = ("**Step 3 — train.** Choose a preset and press **Start**. Training runs in the "
         "background: you can close the tab and come back. A good result: the training loss "
         "falls steadily and the validation loss falls too; if validation rises while training "
         "loss keeps falling, the model is memorising.")


def preset_fields(studio, name: str) -> tuple:
    """What the form shows for a preset: description, lr, steps, rank, max length, micro-batch."""
    p = studio.preset(name)
    return (p.description, p.train.lr, p.train.max_steps, p.lora.rank, p.train.max_len,
            p.train.micro_batch)


def planned_fields(studio, name: str, session: Session, model_ref: str | None) -> tuple:
    """`preset_fields`, with the Memory step's rank, length and micro-batch over them when its
    plan chose this preset for this model ("Use these settings": the preset arrives after them)."""
    about, lr, steps, rank, max_len, batch = preset_fields(studio, name)
    plan = dict(planned_for(session, model_ref, name))
    if plan:
        rank, max_len, batch = (plan.get("rank", rank), plan.get("max_len", max_len),
                                plan.get("micro_batch", batch))
    return about, lr, steps, rank, max_len, batch


METHODS = [("sft — learn your answers", "sft"),
           ("dpo — prefer the chosen answer over the rejected one", "dpo"),
           ("orpo — learn the chosen answer and prefer it, no reference", "orpo"),
           ("grpo — try several answers per question, learn from their rewards", "grpo"),
           ("rloo — like grpo, each answer compared with the others' mean", "rloo")]


def rewards_text(studio, method: str, dataset: str | None) -> str:
    """What an RL method would be rewarded by on this dataset, each reward with its why — or
    why this dataset gives no reward; empty for other methods."""
    if method not in ("grpo", "rloo") or not dataset:
        return ""
    try:
        chosen = studio.rewards_for(dataset)
    except StudioError as e:
        return f"⚠️ {e}"
    return "**Rewards** (from your data; `--reward A,B` picks others):\n" + "\n".join(
        f"- **{r['name']}** — {r['why']}" for r in chosen)


def method_for(studio, preset: str, dataset: str | None) -> str:
    """The method the form suggests: dpo for a dataset of preference pairs (unless the preset
    names orpo), else the preset's own."""
    try:
        own = studio.preset(preset).train.objective
    except Exception:
        own = "sft"
    try:
        formats = studio.dataset(dataset)["stats"].get("formats", {}) if dataset else {}
    except Exception:
        formats = {}
    pairs = bool(formats) and all(f.startswith("preference") or f == "factuality-pairs" for f in formats)
    if pairs:
        return own if own in ("dpo", "orpo") else "dpo"
    return own if own in ("grpo", "rloo") or not formats else "sft"


def start(studio, session: Session, preset: str, dataset: str, lr, steps, rank, max_len, batch,
          model_ref: str, progress=None, method: str | None = None):
    """→ (status markdown, session). A hub model downloads first, its bytes shown on `progress`
    (a gr.Progress: fraction and words)."""
    if session.run_id and session.run_active:
        return "⚠️ This tab already has a run training; stop it or wait for it to finish.", session
    if not dataset:
        return "⚠️ Choose a dataset first (prepare one in step 1).", session
    values = {"train.lr": lr, "train.max_steps": steps, "lora.rank": rank, "train.max_len": max_len,
              "train.micro_batch": batch}
    empty = [LABELS[k] for k, v in values.items() if v is None or v == ""]
    if empty:
        return f"⚠️ {', '.join(empty)}: empty. Enter a number (the preset's value is a good start).", session
    try:
        if progress is not None:
            studio.model_path(model_ref, progress=lambda msg: progress(percent(msg), desc=msg))
        extra = {k: v for k, v in planned_for(session, model_ref, preset) if k not in FORM}
        run = studio.train_create(preset, dataset, model_ref, max_steps=int(steps), lr=float(lr),
                                  rank=int(rank), max_len=int(max_len), micro_batch=int(batch),
                                  objective=method, **extra)
        studio.train_spawn(run["id"])
    except Exception as e:
        where = ("\n\nChange the model in the **Model** box at the top of the page."
                 if type(e).__name__ == "ModelError" else "")
        return plain_keys(error_text(e)) + where, session
    return (f"Started run `{run['id']}`…",
            dataclasses.replace(session, run_id=run["id"], run_active=True, dataset=dataset))


LABELS = {"train.lr": "Learning rate", "train.max_steps": "Steps", "lora.rank": "LoRA rank",
          "train.max_len": "Max length", "train.micro_batch": "Micro-batch"}  # the form's boxes


def plain_keys(msg: str) -> str:
    """A settings error in the form's words: the box's label, not the settings key."""
    msg = msg.replace("settings: ", "")
    for key, label in LABELS.items():
        msg = msg.replace(f"'{key}'", f"**{label}**")
    return msg


def percent(msg: str) -> float | None:
    """The fraction in a progress line that says '(42%)', else None (an indefinite bar)."""
    m = re.search(r"\((\d+)%\)", msg)
    return int(m.group(1)) / 100 if m else None


def stop(studio, session: Session):
    """The first press asks the trainer to stop and returns at once (the status line says
    "stopping" until it has saved its checkpoint); a second press while it is still stopping
    forces it (SIGTERM, then kill), waiting for that."""
    try:
        run = studio.run_show(session.run_id or "")
        if run.get("stopping"):
            run = studio.run_stop(session.run_id or "")
            return f"Stopped at step {run['step']}; press Resume to continue.", session
        studio.run_request_stop(session.run_id or "")
    except Exception as e:
        return error_text(e), session
    # run_active stays as it was: the next tick sees the run end and refreshes the run table
    return ("Stopping: the trainer finishes its step and saves a checkpoint (a minute on a busy "
            "machine). Press Stop again to force it."), session


def resume(studio, session: Session):
    try:
        studio.train_spawn(session.run_id or "")
    except Exception as e:
        return error_text(e), session
    return "Resuming from the last checkpoint…", dataclasses.replace(session, run_active=True)


NO_RUN = ("No run in view. Press **Start** to train; earlier runs, if any, are in the run "
          "history below (click one to open it).")
RESUMABLE = ("stopped", "failed")
FORM = ("rank", "max_len", "micro_batch")  # planned settings the form shows; the rest pass along


def planned_for(session: Session, model_ref: str | None, preset: str | None = None) -> tuple:
    """The Memory step's chosen settings, if they were worked out for this model (and, when a
    preset is named, for this preset: another preset makes them stale)."""
    mem = session.memory
    if not mem or (model_ref is not None and mem.model != model_ref):
        return ()
    if preset is not None and mem.preset and mem.preset != preset:
        return ()
    return session.planned


def memory_note(studio, session: Session, model_ref: str | None, preset: str | None) -> str:
    """The note under the form: the model the run trains, the Memory step's verdict for this
    model, and its settings when they are in use (this model and this preset)."""
    mem, parts = session.memory, [model_line(studio, preset, model_ref)]
    if mem and model_ref and mem.model and mem.model != model_ref:
        mem = None  # estimated for another model: stale
    if mem:
        fit = {True: "✅ fits", False: "❌ does not fit", None: "estimated"}[mem.fits]
        line = f"Memory step: {mem.total_gb:.1f} GB, {fit} ({mem.gpu})."
        if mem.preset:
            line += f" Suggested preset: **{mem.preset}**."
        plan = dict(planned_for(session, model_ref, preset))
        extra = {k: v for k, v in plan.items() if k not in FORM}
        if plan:
            line = ("Using the Memory step's settings" + (": " + ", ".join(
                setting_words(k, v) for k, v in extra.items()) if extra else "") + ". " + line)
        parts.append(line)
    return " ".join(p for p in parts if p)


def preset_picked(studio, session: Session, name: str, model_ref: str | None):
    """→ (Model box, note): a preset the user picked. A CPU preset is made for its own model (the
    embedded one: another model would not train on a laptop, or would need a download), so it
    switches the Model box to that model and says so; a GPU preset trains the model chosen."""
    import gradio as gr

    try:
        p = studio.preset(name)
    except Exception as e:
        return gr.update(), error_text(e)
    if p.gpu_gb == 0 and p.model and model_ref and p.model != model_ref:
        note = memory_note(studio, session, p.model, name)
        return (gr.update(value=p.model), f"🔄 Switched the model to **{p.model}**, the model the "
                f"{name} preset is made for (it was {model_ref}). " + note)
    return gr.update(), memory_note(studio, session, model_ref, name)


def buttons(run: dict | None):
    """Start, Stop, Resume: each enabled only when it can act, its label saying why not."""
    import gradio as gr

    active = bool(run and run["active"])
    can_resume = bool(run and run["status"] in RESUMABLE)
    return (gr.update(interactive=not active,
                      value="Start training" if not active else "Start (a run is training)"),
            gr.update(interactive=active, value="Stop" if active else "Stop (nothing running)"),
            gr.update(interactive=can_resume,
                      value="Resume" if can_resume else "Resume (nothing stopped)"))


def finished(run: dict | None) -> bool:
    """A run with an adapter that no longer trains: Compare and Export can use it."""
    return bool(run and run.get("has_result") and not run.get("active"))


def tick(studio, session: Session):
    """→ (status, plot, session, Start, Stop, Resume, run table, Next): what changed since the
    last tick."""
    import gradio as gr

    rid = session.run_id
    if not rid:
        return (gr.update(), gr.update(), session, *buttons(None), gr.update(), shown(False))
    try:
        run = studio.run_show(rid)
        ev = studio.run_events(rid)
    except Exception as e:
        return (error_text(e), gr.update(), dataclasses.replace(session, run_id=None, run_active=False),
                *buttons(None), gr.update(), shown(False))
    active = run["active"]
    table = history(studio) if active or session.run_active else gr.update()
    key = f"{rid}:{len(ev)}"  # redraw the plot only when there is something new
    data = curve(ev) if key != session.plotted else None
    return (status_md(run, ev), chart(data) if data is not None else gr.update(),
            dataclasses.replace(session, run_active=active, plotted=key), *buttons(run), table,
            shown(finished(run)))


def reattach(studio, session: Session, saved: dict | None) -> Session:
    """After a reload or a server restart: the run this browser followed (kept in its local
    storage), else the run training now; the dataset chosen before, if it still exists."""
    saved = saved or {}
    runs = studio.runs_list()
    ids = {r["id"]: r for r in runs}
    run = ids.get(saved.get("run_id") or "") or next((r for r in runs if r["active"]), None)
    refs = {d["ref"] for d in studio.data_list()}
    dataset = saved.get("dataset") if saved.get("dataset") in refs else session.dataset
    if run is None:
        return dataclasses.replace(session, dataset=dataset)
    return dataclasses.replace(session, run_id=run["id"], run_active=run["active"], plotted=None,
                               dataset=dataset or (run["dataset"] if run["dataset"] in refs else None))


def form_of(studio, session: Session) -> tuple:
    """The Train form as the followed run was started (preset, dataset, lr, steps, rank, max
    length, micro-batch), so a reload shows what is training; unchanged without a run."""
    import gradio as gr

    if not session.run_id:
        return (gr.update(),) * 7
    try:
        run = studio.run_show(session.run_id)
    except Exception:
        return (gr.update(),) * 7
    cfg = run.get("config") or {}
    train, lora = cfg.get("train") or {}, cfg.get("lora") or {}
    return (run["preset"], run["dataset"], train.get("lr", gr.update()), run.get("max_steps") or
            train.get("max_steps", gr.update()), lora.get("rank", gr.update()),
            train.get("max_len", gr.update()), train.get("micro_batch", gr.update()))


def open_run(session: Session, table, row: int) -> Session:
    rid = table.iloc[row]["id"] if hasattr(table, "iloc") else table[row][0]
    return dataclasses.replace(session, run_id=rid, run_active=False)


def refresh(studio, session: Session, model_ref: str | None = None):
    """→ (dataset choices, max length, memory note, run table, Start, Stop, Resume, then the
    form as the followed run was started)."""
    import gradio as gr

    names = [d["ref"] for d in studio.data_list()]
    run = None
    if session.run_id:
        try:
            run = studio.run_show(session.run_id)
        except Exception:
            run = None
    start, halt, again = buttons(run)
    if not names:
        start = gr.update(interactive=False, value="Start (prepare a dataset first)")
    preset, dataset, lr, steps, rank, max_len, batch = form_of(studio, session)
    if session.dataset in names:  # this tab's own latest choice, prepared or trained on, even while
        dataset = session.dataset  # it follows a run of another tab (a fresh tab follows the one training)
    shown_preset = preset if isinstance(preset, str) else None
    if run is None:
        dataset = session.dataset or (names[0] if names else None)
        max_len = max(session.train_len, 256) if session.train_len else gr.update()
        plan = dict(planned_for(session, model_ref))
        if plan:  # the Memory step's "Use these settings"
            preset = (session.memory.preset if session.memory and session.memory.preset else preset)
            shown_preset = preset if isinstance(preset, str) else None
            rank, max_len, batch = plan.get("rank", rank), plan.get("max_len", max_len), \
                plan.get("micro_batch", batch)
    note = memory_note(studio, session, model_ref, shown_preset)
    if not names:
        note = "⏳ No dataset yet: prepare one in step 1, then come back. " + note
    return (gr.update(choices=names, value=dataset), max_len, note, history(studio),
            start, halt, again, preset, lr, steps, rank, batch)


def build(studio, state, model):
    import gradio as gr

    names = [p["name"] for p in studio.presets_list()]
    first = "cpu-quickstart" if "cpu-quickstart" in names else names[0]
    about0, lr0, steps0, rank0, len0, batch0 = preset_fields(studio, first)
    helps = studio.preset_help()

    def box(key: str, value, **kw):  # a form number: its label and help written once
        return gr.Number(value, label=LABELS[key], info=helps[key], **kw)

    gr.Markdown(INTRO, elem_classes="step-intro")
    with gr.Row():
        with gr.Column(scale=1):
            preset = gr.Dropdown(names, value=first, label="Preset")
            about = gr.Markdown(about0)
            dataset = gr.Dropdown([], label="Dataset", info="Prepared in step 1.",
                                  allow_custom_value=True)
            lr = box("train.lr", lr0)
            steps = box("train.max_steps", steps0, precision=0)
            rank = box("lora.rank", rank0, precision=0)
            max_len = box("train.max_len", len0, precision=0)
            batch = box("train.micro_batch", batch0, precision=0)
            method = gr.Radio(METHODS, value=method_for(studio, first, None), label="Method",
                              info=helps["train.objective"])
            why = gr.Markdown("")
            reward_preview.build(studio, preset, dataset, model, method)
            memory = gr.Markdown("")
            with gr.Row():
                go = gr.Button("Start training", variant="primary")
                halt = gr.Button("Stop", variant="stop")
                again = gr.Button("Resume")
        with gr.Column(scale=2):
            status = gr.Markdown(NO_RUN)
            plot = gr.Plot(label="Loss (train and validation)")
            link = next_button(Step.COMPARE, "Next: did it learn? (4 · Compare) →")
            runs = gr.Dataframe(label="Run history (click a row to open it)", interactive=False)
    timer = gr.Timer(2.0)

    preset.change(lambda n, st, m: planned_fields(studio, n, st, m), [preset, state, model],
                  [about, lr, steps, rank, max_len, batch])
    preset.input(lambda st, n, m: preset_picked(studio, st, n, m), [state, preset, model], [model, memory])
    for box_ in (preset, dataset):  # pairs suggest dpo; other data the preset's method
        box_.change(lambda pr, ds: method_for(studio, pr, ds), [preset, dataset], method)
    for box_ in (method, dataset):  # grpo/rloo: the rewards this dataset gives, and why
        box_.change(lambda how, ds: rewards_text(studio, how, ds), [method, dataset], why)

    def on_start(st, pr, ds, lr_, steps_, rank_, len_, batch_, model_, how, progress=gr.Progress()):
        return start(studio, st, pr, ds, lr_, steps_, rank_, len_, batch_, model_, progress, how)

    go.click(on_start, [state, preset, dataset, lr, steps, rank, max_len, batch, model, method],
             [status, state], concurrency_limit=1)
    halt.click(lambda st: stop(studio, st), state, [status, state])
    again.click(lambda st: resume(studio, st), state, [status, state])
    timer.tick(lambda st: tick(studio, st), state, [status, plot, state, go, halt, again, runs,
                                                          link[0]])

    def on_select(evt: gr.SelectData, table, st):
        return open_run(st, table, evt.index[0])

    runs.select(on_select, [runs, state], state)
    return ((lambda st, m: refresh(studio, st, m)),
            [dataset, max_len, memory, runs, go, halt, again, preset, lr, steps, rank, batch], [link])
