"""History: every dataset, run and export, the disk space each takes, and deleting them."""

from .common import error_text, human_bytes

INTRO = ("**History.** Everything you made, with the disk space it takes. Reopen a run in steps "
         "3–5 by picking it there; delete what you no longer need (this cannot be undone).")


def tables(studio):
    import pandas as pd

    rows = [{"kind": r["kind"], "id": r["id"], "detail": r["detail"], "size": human_bytes(r["bytes"])}
            for r in studio.inventory()]
    return pd.DataFrame(rows or [{"kind": "", "id": "", "detail": "nothing yet", "size": ""}])


def build(studio, state):
    import gradio as gr

    gr.Markdown(INTRO, elem_classes="step-intro")
    table = gr.Dataframe(label="Datasets, runs and exports", interactive=False)
    with gr.Row():
        kind = gr.Radio(["dataset", "run", "export"], value="run", label="Delete a")
        ident = gr.Textbox(label="Name / id (click a row to fill it in)")
        delete = gr.Button("Delete", variant="stop")
    msg = gr.Markdown()

    def pick(evt: gr.SelectData, df):
        row = df.iloc[evt.index[0]]
        return row["kind"], row["id"]

    table.select(pick, table, [kind, ident])

    def do_delete(kind, ident):
        try:
            if kind == "dataset":
                r = studio.data_delete(ident)
            elif kind == "run":
                r = studio.run_delete(ident)
            else:
                r = studio.export_delete(int(ident))
        except Exception as e:
            return error_text(e), tables(studio)
        return f"Deleted {kind} {ident}; freed {human_bytes(r['bytes_freed'])}.", tables(studio)

    delete.click(do_delete, [kind, ident], [msg, table])
    return lambda st: tables(studio), [table]
