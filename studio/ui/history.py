"""History: every dataset, run and export, the disk space each takes, and deleting them."""

from pathlib import Path

from .common import error_text, human_bytes

INTRO = ("**History.** Everything you made, with the disk space it takes. Reopen a run in steps "
         "3–5 by picking it there; delete what you no longer need (this cannot be undone).")


def size(path) -> int:
    if not path:
        return 0
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.exists() else 0


def tables(studio):
    import pandas as pd

    ds = [{"kind": "dataset", "id": d["name"], "detail": f"v{d['version']}, {d['records']} examples",
           "size": human_bytes(size(str(Path(d["path"]).parent)))} for d in studio.data_list()]
    seen = set()
    ds = [d for d in ds if not (d["id"] in seen or seen.add(d["id"]))]
    runs = [{"kind": "run", "id": r["id"], "detail": f"{r['status']}, {r['preset']}, {r['dataset']}",
             "size": human_bytes(size(studio.run_show(r["id"]).get("path")))} for r in studio.runs_list()]
    ex = [{"kind": "export", "id": str(e["id"]), "detail": f"{e['format']} {e['quant']} of "
           f"{e['run_id'] or e['model']}", "size": human_bytes(e["bytes"])} for e in studio.exports_list()]
    return pd.DataFrame(ds + runs + ex or [{"kind": "", "id": "", "detail": "nothing yet", "size": ""}])


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
