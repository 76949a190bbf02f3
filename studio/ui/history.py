"""History: every dataset, run, export and evaluation, when it was made, the disk space each
takes, and deleting them."""

from .common import error_text, human_bytes, local_time

INTRO = ("**History.** Everything you made, when (your local time), and the disk space it takes. "
         "Reopen a run in steps 3–5 by picking it there; delete what you no longer need (this "
         "cannot be undone).")
COLUMNS = ["kind", "made", "detail", "size", "id"]


def tables(studio):
    import pandas as pd

    rows = [{"kind": r["kind"], "made": local_time(r.get("created_at")), "detail": r["detail"],
             "size": human_bytes(r["bytes"]), "id": r["id"]} for r in studio.inventory()]
    return pd.DataFrame(rows or [{"kind": "", "made": "", "detail": "nothing yet", "size": "", "id": ""}],
                        columns=COLUMNS)


def delete(studio, kind: str, ident: str):
    """→ (message, table). Each kind is deleted by its own facade call."""
    deleters = {"dataset": studio.data_delete, "run": studio.run_delete,
                "export": lambda i: studio.export_delete(int(i)),
                "evaluation": lambda i: studio.evaluation_delete(int(i))}
    try:
        if kind not in deleters:
            raise ValueError(f"unknown kind {kind!r}")
        r = deleters[kind]((ident or "").strip())
    except ValueError:
        return f"⚠️ '{ident}' is not an {kind} id (a number from the table).", tables(studio)
    except Exception as e:
        return error_text(e), tables(studio)
    return f"Deleted {kind} {ident}; freed {human_bytes(r['bytes_freed'])}.", tables(studio)


def ask(kind: str, ident: str):
    """The first press of Delete: name what would go and how much space it frees, and show
    Confirm / Keep. → (message, confirm row visible)."""
    import gradio as gr

    ident = (ident or "").strip()
    if not ident:
        return "⚠️ Click a row of the table (or type its name / id) first.", gr.update(visible=False)
    return (f"Delete {kind} **{ident}** for good? This cannot be undone.", gr.update(visible=True))


PICK_FIRST = "Delete… (click a row first)"


def deletable(ident: str):
    """Delete… acts once something is named."""
    import gradio as gr

    ready = bool((ident or "").strip())
    return gr.update(interactive=ready, value="Delete…" if ready else PICK_FIRST)


def pick(table, row: int) -> tuple[str, str]:
    r = table.iloc[row]
    return r["kind"], r["id"]


def build(studio, state):
    import gradio as gr

    gr.Markdown(INTRO, elem_classes="step-intro")
    table = gr.Dataframe(label="Datasets, runs, exports and evaluations", interactive=False)
    with gr.Row():
        kind = gr.Radio(["dataset", "run", "export", "evaluation"], value="run", label="Delete a")
        ident = gr.Textbox(label="Name / id (click a row to fill it in)")
        remove = gr.Button(PICK_FIRST, variant="stop", interactive=False)
    msg = gr.Markdown()
    with gr.Row(visible=False) as confirm_row:
        confirm = gr.Button("Yes, delete it", variant="stop")
        keep = gr.Button("No, keep it")

    def on_select(evt: gr.SelectData, df):
        return pick(df, evt.index[0])

    table.select(on_select, table, [kind, ident])
    ident.change(deletable, ident, remove)
    remove.click(ask, [kind, ident], [msg, confirm_row])
    def on_confirm(k, i):
        said, rows = delete(studio, k, i)
        gone = said.startswith("Deleted")
        return said, rows, gr.update(visible=False), "" if gone else gr.update()

    confirm.click(on_confirm, [kind, ident], [msg, table, confirm_row, ident])
    keep.click(lambda: ("Kept.", gr.update(visible=False)), None, [msg, confirm_row])
    return lambda st: tables(studio), [table]
