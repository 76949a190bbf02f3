"""Train step: pick a preset, press Start, watch the loss fall; Stop and Resume any time.

Training runs in a child process; this page only reads the run folder and the store, so closing
the tab or a crash in training never takes the studio down.
"""

from ..presets import field_help, list_presets
from .common import error_text

INTRO = ("**Step 3 — train.** Choose a preset and press **Start**. Training runs in the "
         "background: you can close the tab and come back. A good result: the training loss "
         "falls steadily and the validation loss falls too; if validation rises while training "
         "loss keeps falling, the model is memorising.")
HELP = field_help()
ACTIVE = ("queued", "running")


def status_md(run: dict, events: list[dict]) -> str:
    last = next((e for e in reversed(events) if "tokens_per_s" in e), {})
    ev = next((e for e in reversed(events) if e.get("eval_loss") is not None), {})
    line = (f"**Run `{run['id']}`** — {run['status']}, step {run.get('step') or 0}/"
            f"{run.get('max_steps') or '?'}")
    if last:
        line += (f" · loss {last['loss']:.3f} · {last['tokens_per_s']:.0f} tokens/s · "
                 f"ETA {int(last.get('eta_s') or 0)} s")
    if ev:
        line += f" · validation loss {ev['eval_loss']:.3f}"
    notes = "".join(f"\n\nℹ️ {n}" for n in run.get("notes") or [])
    err = f"\n\n⚠️ {run['error']}" if run.get("error") else ""
    return line + notes + err


def curve(events: list[dict]):
    import pandas as pd

    rows = [{"step": e["step"], "loss": e["loss"], "curve": "train"} for e in events
            if e.get("loss") is not None and e.get("eval_loss") is None]
    rows += [{"step": e["step"], "loss": e["eval_loss"], "curve": "validation"} for e in events
             if e.get("eval_loss") is not None]
    if not rows:
        return None
    df = pd.DataFrame(rows, columns=["step", "loss", "curve"])
    return df.astype({"step": "int64", "loss": "float64", "curve": object})


def history(studio):
    import pandas as pd

    runs = studio.runs_list()
    return pd.DataFrame([{k: r[k] for k in ("id", "status", "preset", "dataset", "step", "max_steps")}
                         for r in runs] or [{"id": "", "status": "", "preset": "", "dataset": "",
                                             "step": "", "max_steps": ""}])


def build(studio, state, model):
    import gradio as gr

    presets = {p.name: p for p in list_presets()}
    gr.Markdown(INTRO, elem_classes="step-intro")
    with gr.Row():
        with gr.Column(scale=1):
            preset = gr.Dropdown(list(presets), value="cpu-quickstart", label="Preset")
            about = gr.Markdown(presets["cpu-quickstart"].description)
            dataset = gr.Dropdown([], label="Dataset", info="Prepared in step 1.",
                                  allow_custom_value=True)
            lr = gr.Number(presets["cpu-quickstart"].train.lr, label="Learning rate", info=HELP["train.lr"])
            steps = gr.Number(presets["cpu-quickstart"].train.max_steps, label="Steps",
                              info=HELP["train.max_steps"], precision=0)
            rank = gr.Number(presets["cpu-quickstart"].lora.rank, label="LoRA rank",
                             info=HELP["lora.rank"], precision=0)
            max_len = gr.Number(presets["cpu-quickstart"].train.max_len, label="Max length",
                                info=HELP["train.max_len"], precision=0)
            batch = gr.Number(presets["cpu-quickstart"].train.micro_batch, label="Micro-batch",
                              info=HELP["train.micro_batch"], precision=0)
            memory = gr.Markdown("")
            with gr.Row():
                start = gr.Button("Start training", variant="primary")
                stop = gr.Button("Stop", variant="stop")
                resume = gr.Button("Resume")
        with gr.Column(scale=2):
            status = gr.Markdown("No run yet.")
            plot = gr.LinePlot(x="step", y="loss", color="curve", label="Loss (train and validation)")
            runs = gr.Dataframe(label="Run history (click a row to open it)", interactive=False)
    timer = gr.Timer(2.0)

    def pick_preset(name):
        p = presets[name]
        return (p.description, p.train.lr, p.train.max_steps, p.lora.rank, p.train.max_len,
                p.train.micro_batch)

    preset.change(pick_preset, preset, [about, lr, steps, rank, max_len, batch])

    def do_start(preset_name, ds, lr, steps, rank, max_len, batch, model_ref, st):
        if st.get("run_id") and st.get("run_active"):
            return "⚠️ This tab already has a run training; stop it or wait for it to finish.", st
        if not ds:
            return "⚠️ Choose a dataset first (prepare one in step 1).", st
        try:
            run = studio.train_create(preset_name, ds, model_ref, [
                f"train.lr={lr}", f"lora.rank={int(rank)}", f"train.max_len={int(max_len)}",
                f"train.micro_batch={int(batch)}"], int(steps))
            studio.train_spawn(run["id"])
        except Exception as e:
            return error_text(e), st
        return f"Started run `{run['id']}`…", {**st, "run_id": run["id"], "run_active": True}

    start.click(do_start, [preset, dataset, lr, steps, rank, max_len, batch, model, state],
                [status, state], concurrency_limit=1)

    def do_stop(st):
        try:
            run = studio.run_stop(st.get("run_id") or "")
        except Exception as e:
            return error_text(e), st
        return f"Stopped at step {run['step']}; press Resume to continue.", {**st, "run_active": False}

    stop.click(do_stop, state, [status, state])

    def do_resume(st):
        try:
            studio.train_spawn(st.get("run_id") or "")
        except Exception as e:
            return error_text(e), st
        return "Resuming from the last checkpoint…", {**st, "run_active": True}

    resume.click(do_resume, state, [status, state])

    def tick(st):
        rid = st.get("run_id")
        if not rid:
            return gr.update(), gr.update(), st, gr.update(), gr.update()
        try:
            run = studio.run_show(rid)
            ev = studio.run_events(rid)
        except Exception as e:
            return error_text(e), gr.update(), st, gr.update(interactive=True), gr.update()
        active = run["status"] in ACTIVE
        table = history(studio) if active or st.get("run_active") else gr.update()
        key = f"{rid}:{len(ev)}"  # redraw the plot only when there is something new
        data = curve(ev) if key != st.get("plotted") else None
        plot_value = data if data is not None else gr.update()
        return (status_md(run, ev), plot_value, {**st, "run_active": active, "plotted": key},
                gr.update(interactive=not active), table)

    timer.tick(tick, state, [status, plot, state, start, runs])

    def open_run(evt: gr.SelectData, table, st):
        rid = table.iloc[evt.index[0]]["id"] if hasattr(table, "iloc") else table[evt.index[0]][0]
        return {**st, "run_id": rid, "run_active": False}

    runs.select(open_run, [runs, state], state)

    def refresh(st):
        names = [f"{d['name']}@v{d['version']}" for d in studio.data_list()]
        mem = st.get("memory")
        note = ""
        if mem:
            fit = {True: "✅ fits", False: "❌ does not fit", None: "estimated"}[mem["fits"]]
            note = f"Memory step: {mem['total_gb']:.1f} GB, {fit} ({mem['gpu']})."
            if mem.get("preset"):
                note += f" Suggested preset: **{mem['preset']}**."
        if not names:
            note = "⏳ No dataset yet: prepare one in step 1, then come back. " + note
        active = bool(st.get("run_active"))
        return (gr.update(choices=names, value=st.get("dataset") or (names[0] if names else None)),
                max(int(st["train_len"]), 256) if st.get("train_len") else gr.update(), note,
                history(studio), gr.update(interactive=bool(names) and not active))

    return refresh, [dataset, max_len, memory, runs, start]

