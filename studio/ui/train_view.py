"""What the Train step shows of a run: its status line (step, loss, speed, ETA, notes and the
error), the loss chart (train, validation, DPO's reward margin, RL's rewards and drift), the
table of runs, and the words for the model a run trains and for a planned setting.

Owns formatting a run's row and events for the page; not the buttons, the form or the layout
(train_step.py).
"""

from .common import CHART_PADDING


def status_md(run: dict, events: list[dict]) -> str:
    last = next((e for e in reversed(events) if "tokens_per_s" in e), {})
    ev = next((e for e in reversed(events) if e.get("eval_loss") is not None), {})
    total = run.get("max_steps") or ((run.get("config") or {}).get("train") or {}).get("max_steps")
    state = "stopping (saving a checkpoint)" if run.get("stopping") else run["status"]
    line = f"**Run `{run['id']}`** — {state}, step {run.get('step') or 0}/{total or '?'}"
    if last:
        line += f" · loss {last['loss']:.3f}"
        if run.get("active"):  # speed and ETA only mean something while it trains
            line += f" · {last['tokens_per_s']:.0f} tokens/s · ETA {int(last.get('eta_s') or 0)} s"
    if ev:
        line += f" · validation loss {ev['eval_loss']:.3f}"
    fg = next((e for e in reversed(events) if e.get("forgetting") is not None), {})
    if fg:
        line += (f"\n\nForgetting check at step {fg['step']}: general-text perplexity "
                 f"{fg['forgetting']:+.0%}" + (f", held-out answers state "
                                              f"{fg['answer_match']:.0%} of the expected facts"
                                              if fg.get("answer_match") is not None else "") +
                 ". The best checkpoint within the forgetting budget becomes the adapter.")
    said = [e["note"] for e in events if e.get("note")][-3:]
    notes = "".join(f"\n\nℹ️ {n}" for n in [*(run.get("notes") or []), *said])
    err = f"\n\n⚠️ {run['error']}" if run.get("error") else ""
    return line + notes + err


def curve(events: list[dict]):
    import pandas as pd

    rows = [{"step": e["step"], "loss": e["loss"], "curve": "train"} for e in events
            if e.get("loss") is not None and e.get("eval_loss") is None]
    rows += [{"step": e["step"], "loss": e["eval_loss"], "curve": "validation"} for e in events
             if e.get("eval_loss") is not None]
    rows += [{"step": e["step"], "loss": e["reward_margin"], "curve": "reward margin"} for e in events
             if e.get("reward_margin") is not None]  # dpo: how far chosen is ahead of rejected
    for key, name in RL_CURVES.items():  # grpo/rloo: the rewards, their spread and the drift
        rows += [{"step": e["step"], "loss": e[key], "curve": name} for e in events
                 if e.get(key) is not None]
    if not rows:
        return None
    df = pd.DataFrame(rows, columns=["step", "loss", "curve"])
    return df.astype({"step": "int64", "loss": "float64", "curve": object})


RL_CURVES = {"reward_mean": "reward (mean)", "zero_spread": "groups with no spread", "kl": "KL to the base"}


def chart(df):
    """Train and validation loss over whole steps; validation points are marked, so a run with
    one evaluation so far still shows it."""
    import altair as alt

    base = alt.Chart(df).encode(
        x=alt.X("step:Q", title="step", axis=alt.Axis(format="d", tickMinStep=1)),
        y=alt.Y("loss:Q", title="loss", scale=alt.Scale(zero=False)),
        color=alt.Color("curve:N", title=None, scale=alt.Scale(domain=["train", "validation"] + [
            c for c in ("reward margin", *RL_CURVES.values()) if (df["curve"] == c).any()]),
                        legend=alt.Legend(orient="bottom")),
        tooltip=["curve", "step", alt.Tooltip("loss:Q", format=".3f")])
    points = base.mark_point(filled=True, size=50).transform_filter(alt.datum.curve == "validation")
    return alt.layer(base.mark_line(clip=True), points).properties(width="container", height=240,
                                                             padding=CHART_PADDING)


def history(studio):
    import pandas as pd

    rows = [{"id": r["id"], "status": r["status"], "preset": r["preset"], "dataset": r["dataset"],
             "steps done": f"{r.get('step') or 0} of {r.get('max_steps') or '?'}"}
            for r in studio.runs_list()]
    return pd.DataFrame(rows, columns=["id", "status", "preset", "dataset", "steps done"])


def model_line(studio, preset: str | None, model_ref: str | None) -> str:
    """What the run will train, in a line: the Model box's model, and the preset's own model
    when the two differ."""
    if not model_ref:
        return ""
    line = f"Trains **{model_ref}** (the Model box at the top)."
    try:
        own = studio.preset(preset).model if preset else None
    except Exception:
        own = None
    if own and own != model_ref:
        line += f" This preset was made for {own}; its settings apply to the model you chose."
    return line


SETTING_NAMES = {"grad_ckpt": "gradient checkpointing", "kbit_norms": "QLoRA residual",
                 "mlp_chunk": "MLP chunks", "offload": "activation offloading"}


def setting_words(key: str, value) -> str:
    """A planned setting as the note says it: "gradient checkpointing on", "method qlora"."""
    words = {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value
    return f"{SETTING_NAMES.get(key, key.replace('_', ' '))} {words}"
