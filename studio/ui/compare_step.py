"""Compare step: the same question to the base and the tuned model, and the did-it-learn report."""
from __future__ import annotations

from .common import CHART_PADDING, error_text, next_button, shown
from .session import Session, Step

INTRO = ("**Step 4 — compare.** Ask the base model and your tuned model the same question, side "
         "by side, with the same settings (greedy by default, so differences are real). The "
         "report checks held-out questions the model never trained on. A good result: the tuned "
         "model answers them with your facts, and no warning flags.")


def completed_runs(studio) -> list[str]:
    return [r["id"] for r in studio.runs_list() if r["has_result"]]


SETS = {"paraphrased": "reworded questions", "validation": "held-out questions",
        "training_recall": "training questions"}
METRICS = {"fact_match": "answers with the expected fact", "exact_match": "exact answers",
           "rouge_l": "words shared with the expected answer"}


def report_md(r: dict) -> str:
    head = r.get("headline") or r["verdict"]
    rest = r["verdict"][len(head):].strip() if r["verdict"].startswith(head) else ""
    lines = [f"### {head}"]
    if not r.get("cached", True):
        lines.append("_This report was not kept: it measured no difference between the base and "
                     "the tuned model. **Recompute report** measures again._")
    lines += [f"- ⚠️ **{f['flag']}**: {f['text']}" for f in r["flags"]] or ["- No warning flags."]
    if rest:
        lines.append("\n" + rest)
    b, t = r["base"], r["tuned"]
    lines.append("\n| | base | tuned |\n|---|---|---|")
    lines.append(f"| validation loss (lower is better) | {num(b['val_loss'])} | {num(t['val_loss'])} |")
    lines.append(f"| general-text perplexity (surprise at ordinary text; lower is better) | "
                 f"{num(b['probe_ppl'], 2)} | {num(t['probe_ppl'], 2)} |")
    for name in ("paraphrased", "validation", "training_recall"):
        for k in ("fact_match", "rouge_l", "exact_match"):
            if name in t and t[name].get(k) is not None:
                lines.append(f"| {SETS[name]}: {METRICS[k]} | {b[name][k]:.0%} | {t[name][k]:.0%} |")
    for name, parts in (r.get("known_new") or {}).items():
        k, n = parts["known"], parts["new"]
        if k["n"] and n["n"]:
            lines.append(f"| {SETS.get(name, name)}: tuned, words shared with the expected answer, "
                         f"questions the base already answered ({k['n']}) / new to it ({n['n']}) | | "
                         f"{k['tuned_rouge_l']:.0%} / {n['tuned_rouge_l']:.0%} |")
    pref = r.get("preference")
    if pref:
        lines.append(f"\n**Preferences** on {pref['n']} held-out pairs: the chosen answer gets the higher "
                     f"probability {pref['before']:.0%} of the time before, **{pref['after']:.0%} after**; "
                     f"the tuned model moved toward chosen and away from rejected on "
                     f"{pref['reward_accuracy']:.0%} of them (mean margin {pref['mean_margin']:+.2f}).")
    lines += rl_md(r)
    if r.get("safety"):
        from_words = r["safety"]
        h, bn = from_words["harmful"], from_words["benign"]
        lines.append(f"\n**Safety:** refused {h['refused_base']} of {h['n']} harmful requests before, "
                     f"**{h['refused_tuned']} after**; declined {bn['refused_tuned']} of {bn['n']} harmless "
                     f"requests that only sound risky (before: {bn['refused_base']}).")
        lines += [f"- {x['category']}: “{x['prompt']}” — before: {one_line(x['base'], 90)} — after: "
                  f"{one_line(x['tuned'], 90)}" for x in h["changed"][:3]]
    lines += kept_md(r)
    for name, rows in r["examples"].items():
        lines.append(f"\n**Examples: {SETS.get(name, name)}**\n")
        for x in rows[:4]:
            lines.append(f"- **{x['question']}** expected: “{x['expected']}”\n"
                         f"  - base: {one_line(x['base'])}\n  - tuned: {one_line(x['tuned'])}")
    lines.append("\nA strength you keep (**Keep this strength**, above) is the one your export uses.")
    return "\n".join(lines)


def rl_md(r: dict) -> list[str]:
    """The held-out rewards (those the run optimised, or those an RL run on the data would use),
    the valid-JSON share, and the drift from the base on the held-out questions."""
    out = []
    rew = r.get("reward") or {}
    if rew.get("before") is not None and rew.get("after") is not None:
        whose = "the run's own rewards" if rew.get("rl", True) else \
            "those an RL run on this data would use, less any that run code"
        out.append(f"\n**Rewards** ({whose}, 0 to 1) on {rew['n']} "
                   f"{SETS.get(rew.get('on'), 'held-out questions')}: mean {rew['before']:.2f} before, "
                   f"**{rew['after']:.2f} after** ({rew['after'] - rew['before']:+.2f})."
                   + (f" Answers that are valid JSON: {rew['valid_json']['before']:.0%} before, "
                      f"**{rew['valid_json']['after']:.0%} after**." if rew.get("valid_json") else ""))
    d = r.get("drift")
    if d:
        out.append(f"\n**Drift from the base model on your task:** {d['kl']:.3f} nats per token — how far "
                   "the tuned model's next-word predictions moved from the base model's along its answers "
                   f"to the {SETS.get(d['on'], 'held-out questions')} (0 = unchanged; on the JSON sample, "
                   "SFT drifted about 0.29 and GRPO about 0.08). Studies of larger models found that "
                   "forgetting grows with it (\"RL's Razor\"); in our small runs the two forgot as much.")
    return out


def num(x, places: int = 3) -> str:
    """A measured value at a sensible precision; a missing one as a dash."""
    return "–" if x is None else f"{x:.{places}f}"


def one_line(text: str, limit: int = 160) -> str:
    """An answer on one list line: newlines and table pipes out, cut with an ellipsis."""
    flat = " ".join((text or "").split()).replace("|", "/")
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def kept_md(r: dict) -> list[str]:
    """Retention, the forgetting budget's choice and the strength trade-off, in plain words."""
    out = []
    kept = r.get("retention") or {}
    if kept.get("known"):
        out.append(f"\n**What it knew:** kept {kept['kept']} of the {kept['known']} general questions "
                   f"the base model answered right ({kept['asked']} asked).")
        out += [f"- lost: {x['question']} — expected “{x['expected']}”, now: "
                f"{' '.join(x['tuned'].split())[:80]}" for x in kept.get("lost", [])[:3]]  # one line each
        # reports before 2026-12-07 listed 6 at most: the count comes from the figures
        more = kept["known"] - kept["kept"] - min(3, len(kept.get("lost", [])))
        if more > 0:
            out.append(f"- … and {more} more")
    sel = r.get("selection")
    if sel:
        c, last = sel["chosen"], sel["last"]
        at = f" at strength {c['strength']:g}" if c.get("strength", 1.0) != 1.0 else ""
        line = f"\n**Chosen checkpoint: step {c['step']}{at}.** " + (sel.get("reason") or "")
        if c["step"] != last["step"] or at:
            line += (f" The last evaluation (step {last['step']}) gave held-out answers stating "
                     f"{(last['answer_match'] or 0):.0%} of the expected facts, general-text "
                     f"perplexity {(last['forgetting'] or 0):+.0%}; the kept one: "
                     f"{(c['answer_match'] or 0):.0%} and {(c['forgetting'] or 0):+.0%}.")
        out.append(line)
    lever_rows = r.get("levers") or []
    if lever_rows:
        out.append("\n**What kept it from forgetting** (each lever this run had, and what it did):\n\n"
                   "| lever | on | setting | what it did |\n|---|---|---|---|")
        out += [f"| {x['lever']} | {'✅' if x['on'] else '–'} | {x['setting']} | {one_line(x['did'], 400)} |"
                for x in lever_rows]
    trade = r.get("trade_off") or []
    if trade:
        why = r.get("suggested_why") or ""
        out.append(f"\n**Adapter strength** (now {r.get('strength', 1):g}; suggested "
                   f"{r.get('suggested_strength')}{'. ' + why if why else ''}):\n\n| strength | "
                   f"held-out questions: {METRICS.get(trade[0]['metric'], trade[0]['metric'])} | "
                   "general questions kept | general-text perplexity |\n|---|---|---|---|")
        out += [f"| {x['strength']:g} | {x['match']:.0%} | "
                f"{'–' if x.get('kept') is None else format(x['kept'], '.0%')} | "
                f"{num(x['probe_ppl'], 2)} ({(x['rise'] or 0):+.0%}) |"
                for x in trade]
        if r.get("from_run"):
            out.append(f"\n_Strength scales what this run added to run {r['from_run']['id']}: 0 is "
                       "that run's adapter, not the base model._")
    return out


def ask(studio, run_id: str, engine: str, max_new, temp, seed, system: str, base_h: list,
        tuned_h: list, q: str, strength: float | None = None):
    """Yields (base chat, tuned chat, notice, question box) as the answers stream in."""
    if not run_id:
        yield base_h, tuned_h, "⚠️ Pick a run first (train one in step 3).", q
        return
    if not q or not q.strip():
        yield base_h, tuned_h, "⚠️ Type a question.", q
        return
    base_h = base_h + [{"role": "user", "content": q}]
    tuned_h = tuned_h + [{"role": "user", "content": q}]
    try:
        if engine == "llama.cpp":
            out = studio.compare(run_id, q, system or None, base_h[:-1], int(max_new), float(temp),
                                 int(seed), engine="llama.cpp", tuned_history=tuned_h[:-1])
            yield (base_h + [{"role": "assistant", "content": out["base"]}],
                   tuned_h + [{"role": "assistant", "content": out["tuned"]}],
                   "Both answered (llama.cpp) — the answers " +
                   ("are identical." if out["identical"] else "differ."), "")
            return
        msgs = [{"role": "system", "content": system}] if system else []
        settings = {"max_new_tokens": int(max_new), "temperature": float(temp), "seed": int(seed),
                    "strength": None if strength is None else float(strength)}
        answers: dict[str, str] = {}
        for side, hist in (("base", base_h), ("tuned", tuned_h)):
            answers[side] = ""
            yield (base_h + [{"role": "assistant", "content": answers["base"]}] if side == "tuned" else base_h,
                   tuned_h, "Answering… (waits its turn while the report or another tab uses the model)", "")
            for text in studio.compare_stream(run_id, msgs + hist, side, **settings):
                answers[side] = text
                yield (base_h + [{"role": "assistant", "content": answers["base"]}],
                       tuned_h + ([{"role": "assistant", "content": answers["tuned"]}]
                                  if "tuned" in answers else []), "Answering…", "")
        same = answers["base"].strip() == answers["tuned"].strip()
        yield (base_h + [{"role": "assistant", "content": answers["base"]}],
               tuned_h + [{"role": "assistant", "content": answers["tuned"]}],
               "Both answered — " + ("the answers are identical (see the report for why)."
                                     if same else "the answers differ."), "")
    except Exception as e:
        yield base_h[:-1], tuned_h[:-1], error_text(e), q


def trade_df(r: dict):
    """The strength trade-off as plot rows: held-out facts and general-text perplexity rise, in %."""
    import pandas as pd

    rows = []
    for t in r.get("trade_off") or []:
        rows.append({"strength": t["strength"], "percent": round(100 * (t["match"] or 0), 1),
                     "measure": f"held-out: {METRICS.get(t['metric'], t['metric'])}"})
        if t.get("rise") is not None:
            rows.append({"strength": t["strength"], "percent": round(100 * t["rise"], 1),
                         "measure": "general-text perplexity rise"})
    return pd.DataFrame(rows, columns=["strength", "percent", "measure"]) if rows else None


def trade_chart(df):
    """The strengths tried, each marked, against both measures in %."""
    import altair as alt

    return alt.Chart(df).mark_line(point=True).encode(
        x=alt.X("strength:Q", title="adapter strength (1 = as trained)",
                axis=alt.Axis(values=sorted(set(df["strength"])), format=".2~f")),
        y=alt.Y("percent:Q", title="%"),
        color=alt.Color("measure:N", title=None, legend=alt.Legend(orient="bottom", labelLimit=400)),
        tooltip=["measure", "strength", "percent"]).properties(width="container", height=220, padding=CHART_PADDING)


def report(studio, run_id: str, progress=None, refresh: bool = False):
    """→ (report markdown, JSON file update, strength trade-off plot update). `refresh`: the
    "Recompute report" button — measured again, whatever was stored."""
    import gradio as gr

    hidden = gr.update(visible=False)
    if not run_id:
        return "⚠️ Pick a run first.", hidden, hidden
    if progress is not None:
        progress(0.1, desc="Scoring base and tuned: held-out questions, general questions, "
                           "strengths (about two minutes on CPU)…")
    try:
        r = studio.report(run_id, refresh=refresh)
        path = studio.report_file(run_id)
    except Exception as e:
        return error_text(e), hidden, hidden
    df = trade_df(r)
    plot = gr.update(value=trade_chart(df), visible=True) if df is not None else hidden
    return report_md(r), gr.update(value=str(path), visible=True), plot


def keep_strength(studio, run_id: str, value) -> str:
    """The 'Keep this strength' button: the run's adapter is rewritten at this strength."""
    if not run_id:
        return "⚠️ Pick a run first."
    try:
        out = studio.set_strength(run_id, float(value))
    except Exception as e:
        return error_text(e)
    return (f"✅ Run {run_id} now applies its adapter at strength {out['strength']:g}. "
            + out["note"] + " Ask again or recompute the report to see it.")


def run_changed(studio, run_id: str):
    """→ (strength slider, held-out question picker): the picked run's kept strength and the
    questions its own dataset held out (none for data without questions)."""
    import gradio as gr

    if not run_id:
        return gr.update(value=1.0), gr.update(choices=[], value=None)
    try:
        qs = studio.heldout_questions(run_id)
        value = studio.run_strength(run_id)
    except Exception:
        return gr.update(value=1.0), gr.update(choices=[], value=None)
    label = "Use a held-out question" if qs else "Held-out questions (this dataset has none)"
    return gr.update(value=value), gr.update(choices=qs, value=None, label=label)


def picked(question: str | None):
    """A held-out question goes into the question box; clearing the picker (another run was
    chosen) leaves what the user typed there."""
    import gradio as gr

    return question if question else gr.update()


def refresh(studio, session: Session):
    """→ (run choices, engine, Ask button, Report button, notice)."""
    import gradio as gr

    ids = completed_runs(studio)
    want = session.run_id if session.run_id in ids else (ids[0] if ids else None)
    ready = gr.update(interactive=bool(ids))
    why = "" if ids else "⏳ Nothing to compare yet: train a run in step 3 first."
    return gr.update(choices=ids, value=want), gr.update(value=session.engine), ready, ready, why


def build(studio, state, model):
    import gradio as gr

    gr.Markdown(INTRO, elem_classes="step-intro")
    with gr.Row():
        run = gr.Dropdown([], label="Run", info="Completed or stopped runs with an adapter.", scale=2)
        engine = gr.Radio([("the trained model (exact)", "hf"),
                           ("llama.cpp (like your exported file)", "llama.cpp")], value="hf",
                          label="Answer with", info="llama.cpp runs GGUF files made in step 5.")
        max_new = gr.Slider(8, 512, 128, step=8, label="Max new tokens")
        temp = gr.Slider(0, 1.5, 0, step=0.1, label="Temperature (0 = greedy)")
        seed = gr.Number(0, label="Seed", precision=0)
    with gr.Row():
        system = gr.Textbox(label="System prompt (optional)", scale=3)
        strength = gr.Slider(0, 1, 1.0, step=0.05, label="Adapter strength (tuned side)", scale=2,
                             info="1 = as trained, 0 = the base model. Lower keeps more of what the "
                                  "model knew; the report suggests one.")
        keep = gr.Button("Keep this strength", scale=1)
    with gr.Row():
        base_pane = gr.Chatbot(label="Base model", height=320)
        tuned_pane = gr.Chatbot(label="Tuned model", height=320)
    with gr.Row():
        heldout = gr.Dropdown([], label="Use a held-out question",
                              scale=1)
        prompt = gr.Textbox(label="Your question", scale=2)
    with gr.Row():
        send = gr.Button("Ask both", variant="primary")
        clear = gr.Button("New conversation")
        report_btn = gr.Button("Did it learn? (report)")
        recompute_btn = gr.Button("Recompute report", size="sm")
    notice = gr.Markdown()
    link = next_button(Step.EXPORT, "Next: take it to llama.cpp / Ollama (5 · Export) →")
    report_out = gr.Markdown()
    trade_plot = gr.Plot(visible=False, label="Adapter strength: what it learned vs what it forgot (%)")
    report_file = gr.File(label="Report as JSON", visible=False)
    from . import eval_section

    eval_section.build(studio, run)
    heldout.change(picked, heldout, prompt)

    def on_ask(*inputs):
        yield from ask(studio, *inputs)

    send.click(on_ask, [run, engine, max_new, temp, seed, system, base_pane, tuned_pane, prompt,
                        strength], [base_pane, tuned_pane, notice, prompt], concurrency_limit=1
               ).then(lambda r: shown(bool(r)), run, link[0])
    keep.click(lambda r, v: keep_strength(studio, r, v), [run, strength], notice, concurrency_limit=1)
    run.change(lambda r: run_changed(studio, r), run, [strength, heldout])
    clear.click(lambda: ([], [], ""), None, [base_pane, tuned_pane, notice])

    def on_report(run_id, progress=gr.Progress()):
        return report(studio, run_id, progress)

    def on_recompute(run_id, progress=gr.Progress()):
        return report(studio, run_id, progress, refresh=True)

    for btn, fn in ((report_btn, on_report), (recompute_btn, on_recompute)):
        btn.click(fn, run, [report_out, report_file, trade_plot], concurrency_limit=1,
                  concurrency_id="report").then(lambda r: shown(bool(r)), run, link[0])
    return (lambda st: refresh(studio, st)), [run, engine, send, report_btn, notice], [link]
