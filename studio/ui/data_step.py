"""Data step: upload files, pick a recipe, prepare a dataset version, see what will train."""
from __future__ import annotations

import dataclasses
import html

from .common import CHART_PADDING, Jobs, error_text, next_button, shown
from .session import Session, Step, round_up

INTRO = ("**Step 1 — your data.** Upload question/answer files (jsonl, json, csv, parquet) or "
         "documents (txt, md, pdf, docx, html, Python, or a zip). We detect the format, turn documents "
         "into training examples with a recipe, remove duplicates and empty rows, and show how "
         "long the examples are. A good result: a few hundred clean examples, nearly none longer "
         "than the max length.")


def preview_html(segments_list) -> str:
    """Rendered examples; the tokens the model learns from are highlighted."""
    parts = ['<div style="font-family:monospace;font-size:12px">'
             '<p><span style="background:#c8f7c5">highlighted</span> = learned (the answer); '
             'the rest is context the model reads but is not trained to write.</p>']
    cell = '<td style="vertical-align:top;width:50%;border:1px solid #ccc;padding:6px">'
    for segs in segments_list:
        if isinstance(segs, dict):  # a preference pair: the prompt once, the two answers side by side
            parts.append(f'<pre style="white-space:pre-wrap;border:1px solid #ccc;padding:6px;margin-bottom:0">'
                         f'{html.escape(segs["prompt"])}</pre><table style="width:100%"><tr>'
                         f'{cell}<b>✅ chosen</b><br>{html.escape(segs["chosen"])}</td>'
                         f'{cell}<b>❌ rejected</b><br>{html.escape(segs["rejected"])}</td></tr></table>')
            continue
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
             f"- Longer than {length_set(s)} tokens{template_note(s)}, so cut to fit: "
             f"**{s['truncated']}**; dropped (nothing left to learn after cutting): "
             f"{s['dropped_too_long']}.",
             f"- Removed: {s['duplicates_removed']['exact']} exact and "
             f"{s['duplicates_removed']['near']} near duplicates, {s['empty_removed']} empty rows."]
    if s.get("heldout"):
        lines.append(f"- Held-out questions kept with it: **{s['heldout']}** (never trained on; the "
                     "report checks learning on them).")
    c = s.get("recipe_counters") or {}
    if s.get("generator"):
        lines.append(f"- Pairs written by {s['generator']}.")
    qa = s.get("qa") or {}
    if qa.get("generated") or qa.get("fallback"):
        share = f" ({qa['generated_share']:.0%} of the pairs)" if qa.get("generated_share") is not None else ""
        lines.append(f"- Question/answer pairs kept: **{qa['generated']}** written by the generator"
                     f"{share} — {qa['from_chunk']} from whole chunks, {qa['from_sentences']} one per "
                     f"fact-bearing sentence — and {qa['fallback']} templated fallbacks (labelled "
                     "'fallback'; turn them off with template_fallback=false).")
    if qa.get("expected_useful"):
        lines.append(useful_line(qa["expected_useful"]))
    removed = [f"{n} {k.split(': ', 1)[1]}" for k, n in c.items() if k.startswith("removed: ")]
    if removed:
        lines.append("- Cleaned out of the documents: " + ", ".join(removed) + ".")
    for d in s.get("dropped") or []:
        examples = "".join(f"\n  > {e[:160].replace(chr(10), ' ⏎ ')}" for e in d["examples"][:2])
        lines.append(f"- Left out: **{d['count']}** {d['reason']}. For example:{examples}")
    if s["errors"]:
        lines.append(f"\n**{len(s['errors'])} problems** (good rows were kept):\n")
        lines += [f"- `{e['file']}`{' line ' + str(e['line']) if e['line'] else ''}: {e['reason']}"
                  for e in s["errors"][:15]]
    return "\n".join(lines)


def useful_line(u: dict) -> str:
    """What share of the generated pairs to expect to be sensible, where that was measured, and
    the Generator box's way to better ones (the service's `better` names the CLI's flags)."""
    return (f"- Written by {u['written_by']}: expect about **1 in {round(1 / u['share'])}** pairs to "
            f"be a sensible question ({u['measured']}). For better pairs, name a bigger generator "
            "under **Generator** (left): a catalogue model such as qwen2.5-3b in “Model name” "
            "with no server address, or your own server's address and its model name.")


def generator_box(s: dict):
    """The Generator box opens by itself when the summary suggests a bigger generator."""
    import gradio as gr

    return gr.update(open=True) if (s.get("qa") or {}).get("expected_useful") else gr.update()


def length_set(s: dict) -> int:
    """The max length the user set (the Max tokens slider): the cut-off less the template's tokens."""
    return s["max_len"] - s.get("template_tokens", 0)


def template_note(s: dict) -> str:
    n = s.get("template_tokens", 0)
    return f" ({s['max_len']} with the {n} tokens the chat template adds around each)" if n else ""


def hist_df(s: dict):
    import pandas as pd

    h = s["histogram"]
    return pd.DataFrame({"tokens": h["edges"][:-1], "to": h["edges"][1:], "examples": h["counts"]})


def hist_chart(s: dict):
    """Examples per token-length bin, each bar spanning its bin. Lengths are never negative: the
    axis runs from 0 to the last bin's end exactly (no "nice" rounding, no padding below 0)."""
    import altair as alt

    df = hist_df(s)
    top = int(df["to"].iloc[-1])
    return alt.Chart(df).mark_bar().encode(
        x=alt.X("tokens:Q", bin="binned", title="tokens per example",
                scale=alt.Scale(domain=[0, top], nice=False, zero=True, padding=0)),
        x2="to:Q", y=alt.Y("examples:Q", title="examples"),
        tooltip=[alt.Tooltip("tokens:Q", title="from"), alt.Tooltip("to:Q", title="to"), "examples"],
    ).properties(width="container", height=200, padding=CHART_PADDING)


def recipe_help(studio, recipe: str) -> str:
    return "" if recipe == "auto" else f"*{studio.choices()['data']['recipes'][recipe]}*"


def prepare(studio, session: Session, files, name: str, recipe: str, max_tokens, overlap, val,
            prompt_col: str, answer_col: str, gen_url: str, gen_model: str, model_ref: str,
            progress=None, heldout=None):
    """→ (summary markdown, histogram update, preview html, known-or-new panel, Generator box
    update, session). A dataset without a name is named after its first file. The known-or-new
    panel described the dataset before: a new one clears it."""
    import gradio as gr

    if not files:
        return ("⚠️ Upload at least one file first.", gr.update(visible=False), "", gr.update(),
                gr.update(), session)
    session.cancel.clear()
    mapping = {"prompt": prompt_col, "completion": answer_col} if prompt_col and answer_col else None
    # gr.Progress is falsy (it has a length): compare with None
    report = (lambda f, msg: progress(f, desc=msg)) if progress is not None else None
    try:
        s = studio.data_prepare([f if isinstance(f, str) else f.name for f in files],
                                (name or "").strip(), recipe=recipe, model=model_ref,
                                max_tokens=int(max_tokens), overlap=int(overlap),
                                val_fraction=float(val), mapping=mapping, progress=report,
                                cancel=session.cancel, generator_url=(gen_url or "").strip() or None,
                                generator_model=(gen_model or "").strip() or None,
                                heldout=(heldout if isinstance(heldout, str) else heldout.name)
                                if heldout else None)
        ref = s["ref"]
        segs = studio.data_preview(ref, model_ref, 4)
    except Exception as e:
        return error_text(e), gr.update(visible=False), "", gr.update(), gr.update(), session
    session = dataclasses.replace(session, dataset=ref, max_len=round_up(s["tokens"]["p95"]),
                                  train_len=round_up(s["tokens"]["max"]))
    return (summary_md(s), gr.update(value=hist_chart(s), visible=True), preview_html(segs), "",
            generator_box(s), session)


def triage_md(t: dict) -> str:
    if t.get("skipped"):
        return f"**Known or new:** skipped — {t['reason']}"
    lines = [f"**Known or new** ({t['asked']} of {t['of']} training questions asked): "
             f"{t['new']} teach something new, {t['known']} the model already answers. {t['verdict']}"]
    lines += [f"- {'already known' if e['known'] else 'new'}: {e['question'][:80]} → "
              f"{e['base'][:80]}" for e in t["examples"]]
    return "\n".join(lines)


def triage(studio, session: Session, model_ref: str, progress=None) -> str:
    """The 'What does the model already know?' button."""
    if not session.dataset:
        return "⚠️ Prepare a dataset first (or pick one): the check asks its training questions."
    if progress is not None:
        progress(0.1, desc="The base model answers the training questions (about a minute on CPU)…")
    try:
        return triage_md(studio.data_triage(session.dataset, model_ref))
    except Exception as e:
        return error_text(e)


def known_panel(studio, session: Session) -> str:
    """The known-or-new panel for the session's dataset: its saved check, else empty — never
    the check of a dataset prepared or picked before."""
    if not session.dataset:
        return ""
    try:
        t = studio.data_show(session.dataset, 1).get("triage")
    except Exception:  # deleted meanwhile: nothing to describe
        return ""
    return triage_md(t) if t else ""


KNOW = "What does the model already know?"
KINDS = {"suspects": "suspect rows", "duplicates": "duplicates", "leaks": "held-out leaks"}


def check_md(out: dict) -> str:
    """A check as a list: each finding's number (for Keep), row, flagged neighbour and why."""
    lines = [f"**Check of {out.get('dataset')}:** {out['rows']} rows — {len(out['duplicates'])} "
             f"duplicates, {len(out['leaks'])} held-out leaks, {len(out['suspects'])} suspect rows."
             + ("" if out.get("model_checked") else " (Without the base model's signals.)")]
    for kind in KINDS:
        for e in out[kind][:40]:
            ex, nb = e.get("example") or {}, e.get("neighbour") or {}
            what = (f"repeats {nb.get('where')} ({e['kind']})" if kind == "duplicates" else
                    f"held-out line {e['heldout_line']} asks it"
                    + (" with the same key words" if e.get("how") == "same words" else "")
                    + f": “{e['heldout_question'][:70]}”" if kind == "leaks" else e["why"])
            row = f"#{e['row']}" if e.get("row") is not None else "removed when prepared"
            lines.append(f"- {row} · {ex.get('where') or e.get('file')}: "
                         f"“{(ex.get('question') or ex.get('text') or '')[:70]}” → "
                         f"“{(ex.get('answer') or '')[:60]}” — {what}" + (" · kept" if e.get("kept") else ""))
    return "\n".join(lines)


def run_check(studio, session: Session, progress=None) -> str:
    """The Check button: duplicates, leaks and the base model's suspect rows."""
    if not session.dataset:
        return "⚠️ Prepare a dataset first (or pick one)."
    tick = (lambda f, msg: progress(f, desc=msg)) if progress is not None else None
    try:
        return check_md(studio.data_check(session.dataset, progress=tick, cancel=session.cancel))
    except Exception as e:
        return error_text(e)


def drop_flagged(studio, session: Session, kinds: list[str]):
    """"Drop these": a new version without the chosen kinds; the tab moves to it."""
    from dataclasses import replace

    if not session.dataset:
        return "⚠️ Prepare a dataset first (or pick one).", session
    try:
        out = studio.data_drop(session.dataset, kinds or [])
    except Exception as e:
        return error_text(e), session
    return (f"✅ **{out['name']}**: {out['dropped']} rows dropped, {out['records']} left. "
            f"{out['from']} is unchanged.", replace(session, dataset=out["ref"]))


def keep_rows(studio, session: Session, text: str) -> str:
    """"Keep": the listed rows (#numbers) stay in this and every later version."""
    import re

    rows = [int(x) for x in re.findall(r"\d+", text or "")]
    if not session.dataset or not rows:
        return "⚠️ Give the #numbers of the rows to keep, from the check's list (e.g. 4, 17)."
    try:
        out = studio.data_keep(session.dataset, rows)
    except Exception as e:
        return error_text(e)
    return f"Kept {out['kept']} rows: no drop removes them ({out['kept_in_all']} kept in all)."


def ready(session: Session):
    """What a prepared dataset enables: the two Next buttons and the knowledge check."""
    import gradio as gr

    on = bool(session.dataset)
    return (*shown(on, 2), gr.update(interactive=on, value=KNOW + (
        " (asks it the training questions)" if on else " (prepare a dataset first)")))


JOBS = Jobs()  # browser session → its running prepare


def cancel_session(session_hash: str | None) -> None:
    """The tab was closed or reloaded: its running prepare stops (nothing is saved)."""
    JOBS.stop(session_hash)


def cancel(session_hash: str | None):
    """The Cancel button: the job's own last words once it has stopped (common.Jobs)."""
    return JOBS.cancel(session_hash)


def build(studio, state, model):
    import gradio as gr

    data = studio.choices()["data"]
    helps = data["params_help"]
    gr.Markdown(INTRO, elem_classes="step-intro")
    with gr.Row():
        with gr.Column(scale=1):
            files = gr.File(label="Training files", file_count="multiple",
                            file_types=data["file_types"])
            sample = gr.Button("No data yet? Use the sample FAQ (a fictional bird feeder)", size="sm")
            name = gr.Textbox("", label="Dataset name", placeholder="named after the first file",
                              info="Letters, digits, - and _; left empty, the first file's name. "
                                   "Preparing the same name again makes a new version.")
            recipe = gr.Dropdown(["auto", *data["recipes"]], value="auto", label="Recipe",
                                 info="auto: tables use their format, documents become paragraph "
                                      "chunks, code becomes summary → function pairs.")
            recipe_info = gr.Markdown("")
            max_tokens = gr.Slider(32, 4096, 256, step=32, label="Max tokens", info=helps["max_tokens"])
            overlap = gr.Slider(0, 512, 32, step=8, label="Overlap (token-windows)", info=helps["overlap"])
            val = gr.Slider(0, 0.5, 0.1, step=0.05, label="Validation share",
                            info="Held back to check learning; 0.1 is typical.")
            with gr.Accordion("Held-out questions (optional)", open=False):
                gr.Markdown("Questions the model never trains on, with their answers — ask your "
                            "facts in other words. The report checks learning on them. A table "
                            "with question and answer columns (and optionally `expect`: the key "
                            "fact a right answer states).")
                heldout = gr.File(label="Held-out file", file_count="single",
                                  file_types=[".jsonl", ".json", ".csv", ".tsv", ".parquet"])
            with gr.Accordion("Column mapping (only if detection fails)", open=False):
                prompt_col = gr.Textbox(label="Question / prompt column")
                answer_col = gr.Textbox(label="Answer / completion column")
            with gr.Accordion("Generator: who writes question/answer pairs (optional)",
                              open=False) as gen_box:  # opens when the summary suggests a bigger one
                gr.Markdown("By default the model above writes them, run by llama.cpp. For better "
                            "pairs use a bigger model: a catalogue model's name (e.g. qwen2.5-3b; "
                            "downloaded once) in “Model name” with no server address, or a model "
                            "you already run in Ollama, LM Studio or a llama.cpp server — its "
                            "address and the model's name there.")
                gen_url = gr.Textbox(label="Server address", placeholder="http://127.0.0.1:11434/v1")
                gen_model = gr.Textbox(label="Model name (a catalogue model, or its name on the server)",
                                       placeholder="qwen2.5-3b, or qwen3:8b on a server")
            with gr.Row():
                go = gr.Button("Prepare dataset", variant="primary")
                stop = gr.Button("Cancel", variant="stop")
        with gr.Column(scale=2):
            out = gr.Markdown("Upload files, then press **Prepare dataset**.")
            with gr.Row():
                links = [next_button(Step.MEMORY, "Next: does it fit my GPU? (2 · Memory) →"),
                         next_button(Step.TRAIN, "Straight to 3 · Train →")]
            hist = gr.Plot(label="Token lengths", visible=False)
            preview = gr.HTML()
            know = gr.Button(KNOW + " (prepare a dataset first)", interactive=False,
                             size="sm")
            know_out = gr.Markdown()
            with gr.Accordion("Check: duplicates, held-out leaks, suspect rows", open=False):
                check = gr.Button("Check this dataset (base model, ~1 min per 1,000 rows)", size="sm")
                kinds = gr.CheckboxGroup([(v, k) for k, v in KINDS.items()], value=["suspects", "duplicates"],
                                         label="Drop these", info="A new version without them; "
                                         "the old one stays.")
                with gr.Row():
                    drop = gr.Button("Drop these (new version)", size="sm")
                    keep_text = gr.Textbox(label="Keep rows (#numbers from the list)", scale=2)
                    keep = gr.Button("Keep", size="sm")
                check_out = gr.Markdown()

    sample.click(lambda: ([data_sample(studio)], "nimbus-faq"), None, [files, name])
    recipe.change(lambda r: recipe_help(studio, r), recipe, recipe_info)

    def on_prepare(st, fl, nm, rc, mt, ov, vl, pc, ac, gu, gm, md, ho, request: gr.Request,
                   progress=gr.Progress()):
        with JOBS.run(request.session_hash, st.cancel) as job:  # closing the tab cancels it too
            out = prepare(studio, st, fl, nm, rc, mt, ov, vl, pc, ac, gu, gm, md, progress=progress,
                          heldout=ho)
            job.answer = out[0]
            return out
    on_prepare.__annotations__["request"] = gr.Request  # a real type: gradio fills it in

    def on_cancel(request: gr.Request):
        return cancel(request.session_hash if request else None)
    on_cancel.__annotations__["request"] = gr.Request

    # A few prepares at once: a long qa-pairs job in one tab must not hold up a small CSV in
    # another. Cancel skips the queue so it is heard while the job runs.
    go.click(on_prepare, [state, files, name, recipe, max_tokens, overlap, val, prompt_col,
                          answer_col, gen_url, gen_model, model, heldout],
             [out, hist, preview, know_out, gen_box, state],
             concurrency_limit=4, concurrency_id="prepare").then(
        ready, state, [*(b for b, _ in links), know])
    stop.click(on_cancel, None, out, queue=False)

    def on_triage(st, m, progress=gr.Progress()):
        return triage(studio, st, m, progress)

    know.click(on_triage, [state, model], know_out, concurrency_limit=1)
    check.click(lambda st, progress=gr.Progress(): run_check(studio, st, progress), state, check_out,
                concurrency_limit=1)
    drop.click(lambda st, k: drop_flagged(studio, st, k), [state, kinds], [check_out, state])
    keep.click(lambda st, t: keep_rows(studio, st, t), [state, keep_text], check_out)
    panel = (lambda st: known_panel(studio, st), state, know_out)
    return links, (ready, state, [*(b for b, _ in links), know]), panel


def data_sample(studio) -> str:
    return studio.choices()["sample_data"]
