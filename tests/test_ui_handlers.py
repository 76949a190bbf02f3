"""Every step's UI handlers, called as plain functions of (studio, session, inputs) — no browser.

Each handler returns what the components show; user mistakes come back as a ⚠️ message (never a
traceback) and leave the session as it was.
"""
import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT
from studio.ui import compare_step, data_step, export_step, history, memory_step, model_picker, train_step
from studio.ui.session import Session, Step

SAMPLE = ROOT / "assets" / "sample" / "product_faq.jsonl"


def is_update(x) -> bool:
    return isinstance(x, dict) and x.get("__type__") == "update"


# ---- data ---------------------------------------------------------------------------------
def test_data_prepare_fills_the_session(studio):
    s0 = Session()
    seen = []
    md, hist, preview, know, box, s = data_step.prepare(studio, s0, [str(SAMPLE)], "ui-faq", "auto", 256,
                                                   32, 0.1, "", "", "", "", "smollm2-135m-instruct",
                                                   progress=lambda f, desc: seen.append(desc))
    assert md.startswith("### ✅ ui-faq v1") and "highlighted" in preview
    assert hist["visible"] is True and hist["value"].to_dict()["mark"]["type"] == "bar"
    tokens = studio.dataset("ui-faq@v1")["stats"]["tokens"]
    # the Train step's lengths: the dataset's 95th percentile and its longest example, each rounded
    # up to a multiple of 64
    assert s.dataset == "ui-faq@v1" and (s.max_len, s.train_len) == (
        -(-tokens["p95"] // 64) * 64, -(-tokens["max"] // 64) * 64)
    assert f"95% under {tokens['p95']}, longest {tokens['max']}" in md
    assert s0.dataset is None  # the old session is untouched: handlers return a copy
    assert seen, "progress was reported"
    assert "Written by" not in md and box == {"__type__": "update"}  # uploaded pairs: no share to expect


def test_data_prepare_bad_input_is_a_message(studio, tmp_path):
    md, hist, preview, know, box, s = data_step.prepare(studio, Session(), [], "x", "auto", 256, 32, 0.1,
                                                   "", "", "", "", "smollm2-135m-instruct")
    assert md.startswith("⚠️ Upload") and s.dataset is None and know == {"__type__": "update"}
    bad = tmp_path / "empty.jsonl"
    bad.write_text("")
    md, hist, preview, know, box, s = data_step.prepare(studio, Session(), [str(bad)], "empty", "auto",
                                                   256, 32, 0.1, "", "", "", "", "smollm2-135m-instruct")
    assert md.startswith("⚠️") and "Traceback" not in md and s.dataset is None
    md, *_ = data_step.prepare(studio, Session(), [str(SAMPLE)], "../etc", "auto", 256, 32, 0.1,
                               "", "", "", "", "smollm2-135m-instruct")
    assert md.startswith("⚠️") and "not allowed" in md


def test_cancel_shows_what_the_job_showed_whichever_reply_comes_last(studio):
    """Cancel sets the tab's flag, waits for the job to end and answers with the job's own last
    words: on a busy machine the Cancel reply can reach the page after the job's, and must not
    leave "Cancelling…" over "Cancelled; nothing was saved"."""
    import threading
    import time

    from studio.ui.common import Jobs

    jobs, s = Jobs(), Session()
    assert jobs.cancel("tab") == {"__type__": "update"}          # nothing runs: no change
    started = threading.Event()

    def job():
        with jobs.run("tab", s.cancel) as j:
            started.set()
            while not s.cancel.is_set():                       # the job sees the flag…
                time.sleep(0.01)
            j.answer = "⚠️ Cancelled; nothing was saved."      # …and says so, a while later
    t = threading.Thread(target=job)
    t.start()
    started.wait(30)
    assert jobs.cancel("tab") == "⚠️ Cancelled; nothing was saved." and s.cancel.is_set()
    t.join(30)
    assert "tab" not in jobs.running
    jobs.WAIT_S = 0.05
    with jobs.run("slow") as j:                                   # still winding down: say so
        assert jobs.cancel("slow").startswith("Cancelling") and j.cancel.is_set()
    with jobs.run("closed") as j:                                 # a closed tab: the flag only
        jobs.stop("closed")
        assert j.cancel.is_set()


def prepare_as_ui(studio, session: Session, files: list[str], name: str, max_tokens: int = 256):
    return data_step.prepare(studio, session, files, name, "auto", max_tokens, 32, 0.1, "", "", "",
                             "", "smollm2-135m-instruct")


def test_data_summary_states_the_length_set_and_lengths_start_at_zero(studio):
    """The slider says 256: the summary says "Longer than 256 tokens" (the chat template's own
    tokens said apart), and the histogram's axis runs from 0 — no room below it."""
    md, hist, _, _, _, s = prepare_as_ui(studio, Session(), [str(SAMPLE)], "ui-len", max_tokens=256)
    cut = studio.dataset(s.dataset)["stats"]["max_len"]
    assert cut > 256                                   # examples are cut at 256 + the template
    assert f"Longer than 256 tokens ({cut} with the {cut - 256} tokens the chat template adds" in md
    assert f"Longer than {cut} tokens" not in md
    spec = hist["value"].to_dict()
    x = spec["encoding"]["x"]
    assert x["scale"]["domain"][0] == 0 and x["scale"]["nice"] is False and "x2" in spec["encoding"]
    edges = studio.dataset(s.dataset)["stats"]["histogram"]["edges"]
    assert x["scale"]["domain"][1] == edges[-1]


def test_a_dataset_without_a_name_is_named_after_its_file(studio, tmp_path):
    """Uploaded "My FAQ (v2).jsonl" with the name box left empty: the dataset is My-FAQ-v2, not
    a shared default; a second upload of it is its next version."""
    f = tmp_path / "My FAQ (v2).jsonl"
    f.write_bytes(SAMPLE.read_bytes())
    md, _, _, _, _, s = prepare_as_ui(studio, Session(), [str(f)], "")
    assert s.dataset == "My-FAQ-v2@v1" and md.startswith("### ✅ My-FAQ-v2 v1")
    _, _, _, _, _, s = prepare_as_ui(studio, s, [str(f)], "  ")
    assert s.dataset == "My-FAQ-v2@v2"


def test_known_or_new_panel_follows_the_dataset(studio):
    """The known-or-new panel describes the session's dataset only: preparing a new one clears
    it, and one picked elsewhere shows its own saved check (or nothing)."""
    manual = studio.data_prepare([str(ROOT / "assets/sample/nimbus_orbit_manual.md")], "ui-manual",
                                 recipe="paragraphs")["ref"]
    studio.data_triage(manual)                          # no questions: a saved "skipped" check
    s = Session(dataset=manual)
    assert data_step.known_panel(studio, s).startswith("**Known or new:** skipped")
    md, _, _, know, _, s2 = prepare_as_ui(studio, s, [str(SAMPLE)], "ui-next")
    assert md.startswith("### ✅") and know == "" and s2.dataset != manual
    assert data_step.known_panel(studio, s2) == ""      # the new dataset has no check yet
    assert data_step.known_panel(studio, Session()) == ""
    assert data_step.known_panel(studio, Session(dataset="gone@v9")) == ""


def test_pairs_by_the_embedded_model_say_what_to_expect_and_open_the_generator_box(studio, tmp_path,
                                                                                  monkeypatch):
    """Pairs the small embedded model wrote: the summary says about 1 in 3 will be sensible and how
    to get better ones, and the Generator box opens. A catalogue model typed in "Model name" with
    no server address is the local generator; its pairs, and a server's, say nothing of the sort."""
    from studio.data import generators

    pair = "Q: How much does the Nimbus Orbit cost?\nA: The Nimbus Orbit costs 89 dollars."
    asked = []

    def local(ref, cancel=None):
        asked.append(ref)
        return generators.Generator(lambda prompt: pair, "llama.cpp", f"llama.cpp on {ref}", model=ref)
    monkeypatch.setattr(studio.data, "local_generator", local)
    monkeypatch.setattr(generators, "openai_compatible", lambda url, model, cancel=None: generators.Generator(
        lambda prompt: pair, "openai", f"{model} at {url}"))
    doc = tmp_path / "feeder.md"
    doc.write_text("# Nimbus Orbit\n\nThe Nimbus Orbit costs 89 dollars and holds two kilograms of seed.\n")

    def run(gen_url: str, gen_model: str):
        return data_step.prepare(studio, Session(), [str(doc)], "ui-feeder", "qa-pairs", 256, 32, 0,
                                 "", "", gen_url, gen_model, "smollm2-135m-instruct")
    md, _, _, _, box, s = run("", "")
    assert asked == ["smollm2-135m-instruct"] and s.dataset
    assert ("Written by the small embedded model (SmolLM2-135M-Instruct): expect about **1 in 3** "
            "pairs to be a sensible question (hand-checked on three real manuals") in md
    assert "“Model name” with no server address" in md and box == {"__type__": "update", "open": True}
    md, _, _, _, box, _ = run("", "qwen2.5-3b")       # a catalogue model, no server: run locally
    assert asked[-1] == "qwen2.5-3b" and "llama.cpp on qwen2.5-3b" in md
    assert "Written by" not in md and box == {"__type__": "update"}
    md, _, _, _, box, _ = run("http://127.0.0.1:9/v1", "qwen3:8b")
    assert "qwen3:8b at http://127.0.0.1:9/v1" in md and asked[-1] == "qwen2.5-3b"
    assert "Written by" not in md and box == {"__type__": "update"}


def test_data_step_helpers(studio):
    assert data_step.recipe_help(studio, "qa-pairs") and data_step.recipe_help(studio, "auto") == ""
    assert data_step.data_sample(studio).endswith("product_faq.jsonl")


# ---- memory -------------------------------------------------------------------------------
def test_gpu_list_shows_each_cards_memory_and_the_advice_agrees_with_the_limits(studio):
    """The GPU list reads "RTX 4060 (8 GB)" while the estimate still gets rtx-4060; qwen3-4b at
    micro-batch 8 on it is advised the largest micro-batch that fits, the one the limits name."""
    choices = memory_step.gpu_choices(studio)
    gpus = studio.choices()["memory"]["gpus"]
    assert [v for _, v in choices] == [memory_step.CPU, "local", *gpus, memory_step.CUSTOM]
    assert ("RTX 4060 (8 GB)", "rtx-4060") in choices
    assert all(label.endswith(" GB)") for label, v in choices if v in gpus)
    _, verdict, s = memory_step.estimate(studio, Session(), "qwen3-4b", "qlora", 2048, 8, 16, True,
                                         "adamw", "rtx-4060", 12)
    assert "Does not fit** on RTX 4060 (8 GB)" in verdict
    assert "1. use micro-batch 5 " in verdict and dict(s.memory.settings)["micro_batch"] == 5
    assert "the largest micro-batch that fits at 2,048 tokens: 5;" in verdict
    _, verdict, _ = memory_step.estimate(studio, Session(), "qwen3-4b", "qlora", 2048, 5, 16, True,
                                         "adamw", "rtx-4060", 12)
    assert "✅ Fits" in verdict and "The largest micro-batch that fits at 2,048 tokens: 5;" in verdict


def test_memory_estimate_and_bad_model(studio):
    bar, verdict, s = memory_step.estimate(studio, Session(), "smollm2-135m-instruct", "lora", 256,
                                           2, 16, True, "adamw", memory_step.CPU, 12)
    assert "GB at peak" in verdict and bar.startswith("<div")
    assert s.memory is not None and s.memory.gpu == memory_step.CPU and s.memory.fits is None
    gpu = "rtx-4090"                     # 24 GB: an 8B QLoRA at 1,024 tokens fits (test_fit_advice)
    assert gpu in studio.choices()["memory"]["gpus"]
    bar, verdict, s2 = memory_step.estimate(studio, s, "llama-3.1-8b", "qlora", 1024, 1, 16, True,
                                            "adamw", gpu, 12)
    assert "✅ Fits" in verdict and "Does not fit" not in verdict and s2.memory.fits is True
    bar, verdict, s2 = memory_step.estimate(studio, s, "llama-3.1-8b", "lora", 1024, 1, 16, True,
                                            "adamw", "rtx-3060", 12)  # 12 GB, 16-bit weights: no…
    assert "❌ Does not fit" in verdict and "✅ Fits" not in verdict
    assert s2.memory.fits is True and dict(s2.memory.settings)["method"] == "qlora"  # …as planned: yes
    bar, verdict, s3 = memory_step.estimate(studio, s, "no-such-model-7b", "lora", 256, 1, 16, True,
                                            "adamw", memory_step.CUSTOM, 12)
    assert verdict.startswith("⚠️") and bar == "" and s3 is s
    assert memory_step.prefill(Session(max_len=320))["value"] == 320


def test_memory_advice_is_one_plan_that_train_takes(studio, faq_dataset):
    """An 8B model on an 8 GB card: numbered changes, each with its estimate, the limits under
    those changes; "Use these settings" carries them to the Train form and to the run."""
    _, verdict, s = memory_step.estimate(studio, Session(), "llama-3.1-8b", "lora", 2048, 4, 16,
                                         True, "adamw", "rtx-4060", 12)
    assert "Does not fit" in verdict and "1. use micro-batch 1" in verdict and "→ **" in verdict
    plan = dict(s.memory.settings)
    assert (f"With these changes, the largest micro-batch that fits at {plan['max_len']} tokens: 1;"
            " the longest sequence at micro-batch 1: ") in verdict
    assert "none" not in verdict.split("With these changes")[1].split("Suggested")[0]
    assert "| adapter weights |" in verdict and "trainable_weights" not in verdict  # plain names
    assert plan["method"] == "qlora" and plan["micro_batch"] == 1 and plan["max_len"] < 2048
    s2, model, tabs, msg = memory_step.use_settings(s)
    assert model["value"] == "llama-3.1-8b" and dict(s2.planned) == plan
    _, max_len, note, _, *_, rank, batch = train_step.refresh(studio, s2, "llama-3.1-8b")
    assert max_len == plan["max_len"] and batch == 1 and "Memory step's settings" in note
    assert "activation offloading on" in note and "method qlora" in note
    assert "✅ fits" in note and f"{s.memory.total_gb:.1f} GB" in note   # the run as planned
    # the suggested preset arrives after the planned numbers: its own lr and steps, the plan's rest
    preset = s.memory.preset
    about, lr, steps, rank, max_len, batch = train_step.planned_fields(studio, preset, s2, "llama-3.1-8b")
    assert (max_len, batch) == (plan["max_len"], 1) and lr == studio.preset(preset).train.lr
    other = "cpu-quickstart"                                # a preset the user picks instead: its own
    assert train_step.planned_fields(studio, other, s2, "llama-3.1-8b")[4] == studio.preset(other).train.max_len
    # the same note is stale once another model is picked
    _, _, note, *_ = train_step.refresh(studio, Session(memory=s.memory), "smollm2-135m-instruct")
    assert "GB" not in note


# ---- train --------------------------------------------------------------------------------
def test_train_form_and_bad_starts(studio, faq_dataset):
    import yaml

    about, lr, steps, rank, max_len, batch = train_step.preset_fields(studio, "cpu-quickstart")
    shipped = yaml.safe_load((ROOT / "presets" / "cpu-quickstart.yaml").read_text())  # the file itself
    assert (about, lr, steps, rank, max_len, batch) == (
        shipped["description"], shipped["train"]["lr"], shipped["train"]["max_steps"],
        shipped["lora"]["rank"], shipped["train"]["max_len"], shipped["train"]["micro_batch"])
    msg, s = train_step.start(studio, Session(), "cpu-quickstart", "", lr, steps, rank, max_len,
                              batch, "smollm2-135m-instruct")
    assert msg.startswith("⚠️ Choose a dataset") and s.run_id is None
    msg, s = train_step.start(studio, Session(), "cpu-quickstart", faq_dataset, -1, steps, rank,
                              max_len, batch, "smollm2-135m-instruct")
    assert msg.startswith("⚠️ **Learning rate** is -1") and "--set" not in msg and s.run_id is None
    msg, s = train_step.start(studio, Session(), "cpu-quickstart", faq_dataset, lr, None, rank,
                              max_len, batch, "smollm2-135m-instruct")   # a cleared box
    assert msg.startswith("⚠️ Steps: empty") and s.run_id is None
    msg, s = train_step.start(studio, Session(), "cpu-quickstart", faq_dataset, lr, steps, rank,
                              max_len, batch, "no-such-model")
    assert msg.startswith("⚠️") and s.run_id is None
    busy = Session(run_id="x", run_active=True)
    assert train_step.start(studio, busy, "cpu-quickstart", faq_dataset, lr, steps, rank, max_len,
                            batch, "smollm2-135m-instruct")[0].startswith("⚠️ This tab already")
    msg, s = train_step.stop(studio, Session())
    assert msg.startswith("⚠️ No run with id")


def test_train_tick_follows_a_run(studio, faq_dataset, trained_run, monkeypatch):
    nothing = train_step.tick(studio, Session())
    assert all(is_update(x) or isinstance(x, Session) for x in nothing)
    assert nothing[-1]["visible"] is False  # no run: no Next
    s = Session(run_id=trained_run["id"])
    status, plot, s, start, halt, again, table, link = train_step.tick(studio, s)
    assert trained_run["id"] in status and "completed" in status
    assert link["visible"] is True          # done: "Next: … Compare →" shows
    data = plot.data  # an altair chart over the curve's rows
    assert isinstance(data, pd.DataFrame) and set(data["curve"]) >= {"train"}
    assert str(data["step"].dtype) == "int64"
    assert plot.to_dict()["layer"][0]["encoding"]["x"]["axis"]["format"] == "d"  # whole steps
    assert s.plotted and start["interactive"] is True
    assert halt["interactive"] is False and again["interactive"] is False   # completed: neither
    status, plot, s, *_ = train_step.tick(studio, s)
    assert is_update(plot)  # nothing new: the plot is not redrawn
    ref = studio.dataset(faq_dataset)["name"] + "@v1"
    ds, max_len, note, runs, go, halt, again, *form = train_step.refresh(studio, Session(dataset=ref))
    assert ref in ds["choices"] and ds["value"] == ref and go["interactive"]
    assert not halt["interactive"] and "nothing running" in halt["value"]
    # a reload: the run this browser followed comes back, with the form as it was started
    back = train_step.reattach(studio, Session(), {"run_id": trained_run["id"], "dataset": "gone@v9"})
    assert back.run_id == trained_run["id"] and back.dataset != "gone@v9"
    ds, _, _, _, _, _, _, preset, lr, steps, *_ = train_step.refresh(studio, back)
    assert ds["value"] == trained_run["dataset"] and preset == trained_run["preset"]
    assert steps == studio.run_show(trained_run["id"])["max_steps"]
    # a run this browser followed that is gone: the run training now, if any, else none
    listed = studio.runs_list
    monkeypatch.setattr(studio, "runs_list", lambda: [{**r, "active": r["id"] == trained_run["id"]}
                                                      for r in listed()])
    assert train_step.reattach(studio, Session(), {"run_id": "nope"}).run_id == trained_run["id"]
    monkeypatch.setattr(studio, "runs_list", lambda: [{**r, "active": False} for r in listed()])
    assert train_step.reattach(studio, Session(), {"run_id": "nope"}).run_id is None
    monkeypatch.setattr(studio, "runs_list", listed)
    opened = train_step.open_run(Session(), runs, 0)
    assert opened.run_id == runs.iloc[0]["id"] and not opened.run_active
    msg, _ = train_step.stop(studio, s)
    assert msg.startswith("⚠️") and "not running" in msg


def test_stop_asks_first_and_forces_on_a_second_press(studio, faq_dataset, tiny_model):
    """Stop returns at once (a trainer still starting on a busy machine needs a minute to reach
    its step and save); the status says "stopping" meanwhile; a second press forces it."""
    run = studio.train_create("cpu-quickstart", faq_dataset, tiny_model, max_steps=2)
    s = Session(run_id=run["id"], run_active=True)
    msg, _ = train_step.stop(studio, s)
    shown_now = studio.run_show(run["id"])
    assert msg.startswith("Stopping") and shown_now["stopping"] and shown_now["active"]
    assert "stopping (saving a checkpoint), step 0/2" in train_step.status_md(shown_now, [])
    msg, _ = train_step.stop(studio, s)
    assert msg.startswith("Stopped at step") and studio.run_show(run["id"])["status"] == "stopped"


# ---- compare ------------------------------------------------------------------------------
def test_a_tab_offers_its_own_dataset_while_it_follows_another_tabs_run(studio, trained_run, monkeypatch):
    """A fresh tab follows the run training now, whoever started it; the dataset this tab then
    prepares is what its Train step offers, never that run's (seen as tab A offered the walk's
    dataset while the walk's run went on training on a busy machine)."""
    studio.data_prepare([str(ROOT / "assets" / "sample" / "product_faq.jsonl")], "tab-own")
    real = studio.run_show
    monkeypatch.setattr(studio, "run_show", lambda rid: {**real(rid), "active": True})
    mine = Session(run_id=trained_run["id"], run_active=True, dataset="tab-own@v1")
    ds, *_ = train_step.refresh(studio, mine)
    assert ds["value"] == "tab-own@v1" and trained_run["dataset"] != "tab-own@v1"
    ds, *_ = train_step.refresh(studio, dataclasses.replace(mine, dataset=None))
    assert ds["value"] == trained_run["dataset"]                       # nothing of its own: the run's
    studio.data_delete("tab-own")


def test_compare_ask_streams_both_sides(studio, trained_run):
    first = next(compare_step.ask(studio, "", "hf", 16, 0, 0, "", [], [], "hi"))
    assert first[2].startswith("⚠️ Pick a run")
    first = next(compare_step.ask(studio, trained_run["id"], "hf", 16, 0, 0, "", [], [], "  "))
    assert first[2].startswith("⚠️ Type")
    *_, last = compare_step.ask(studio, trained_run["id"], "hf", 8, 0, 0, "", [], [],
                                "How much does the Nimbus Orbit cost?")
    base, tuned, notice, box = last
    assert notice.startswith("Both answered") and box == ""
    assert base[-1]["role"] == "assistant" and tuned[-1]["role"] == "assistant"
    runs, engine, send, rep, why = compare_step.refresh(studio, Session(run_id=trained_run["id"]))
    assert runs["value"] == trained_run["id"] and send["interactive"] and why == ""


def test_compare_offers_the_runs_own_heldout_questions(studio, trained_run):
    from studio.data.prepare import read_split

    slider, picker = compare_step.run_changed(studio, trained_run["id"])
    val = [ex["messages"][-2]["content"] for ex in read_split(
        Path(studio.data_show(trained_run["dataset"])["path"]), "validation")]
    assert slider["value"] == 1.0 and picker["value"] is None
    assert set(val) <= set(picker["choices"]) and len(picker["choices"]) == len(val) + 24
    train_qs = {ex["messages"][-2]["content"] for ex in read_split(
        Path(studio.data_show(trained_run["dataset"])["path"]), "train")}
    assert not train_qs & set(picker["choices"])          # never a question it trained on
    slider, picker = compare_step.run_changed(studio, "")
    assert picker["choices"] == []


def test_compare_report_handler(studio, trained_run, trained_report):
    md, f, plot = compare_step.report(studio, "")
    assert md.startswith("⚠️") and f["visible"] is False and plot["visible"] is False
    md, f, plot = compare_step.report(studio, trained_run["id"])
    assert md.startswith("### ") and f["visible"] is True and f["value"].endswith("report.json")
    assert plot["visible"] and set(plot["value"].data["measure"]) == {
        "held-out: answers with the expected fact", "general-text perplexity rise"}
    assert "What it knew" in md and "Adapter strength" in md


# ---- export -------------------------------------------------------------------------------
def test_export_handlers(studio, trained_run):
    assert export_step.export(studio, "", ["gguf"], "q8_0", False).startswith("⚠️ Pick a run")
    assert export_step.export(studio, trained_run["id"], [], "q8_0", False).startswith("⚠️ Choose")
    out = export_step.export(studio, trained_run["id"], ["adapter"], "q8_0", False)
    assert out.startswith("**adapter**") and "⚠️" not in out and "Parity" not in out  # nothing to check
    out = export_step.export(studio, trained_run["id"], ["lora-gguf"], "q8_0", False)  # check unticked
    assert out.startswith("**lora-gguf**") and "⏭️ Parity was not checked (it was turned off)" in out
    assert f"python -m studio export --run {trained_run['id']} --format lora-gguf --quant f32" in out
    bad = export_step.export(studio, "no-such-run", ["gguf"], "q8_0", False)
    assert bad.startswith("⚠️ No run with id")
    s = export_step.chat_with_gguf(Session(), trained_run["id"])
    assert s.engine == "llama.cpp" and s.run_id == trained_run["id"]
    runs, go, chat, why = export_step.refresh(studio, s)
    assert runs["value"] == trained_run["id"] and go["interactive"]
    assert Step.COMPARE == 3  # the tab the chat button opens


# ---- history and the model picker -------------------------------------------------------
def test_history_delete_messages(studio):
    msg, table = history.delete(studio, "dataset", "no-such-dataset")
    assert msg.startswith("⚠️ No dataset named") and isinstance(table, pd.DataFrame)
    msg, _ = history.delete(studio, "export", "abc")
    assert msg.startswith("⚠️") and "not an export id" in msg
    msg, _ = history.delete(studio, "export", "999999")
    assert msg.startswith("⚠️ No export with id")
    msg, _ = history.delete(studio, "evaluation", "x1")
    assert msg.startswith("⚠️") and "not an evaluation id" in msg
    msg, _ = history.delete(studio, "evaluation", "999999")
    assert msg.startswith("⚠️ No evaluation with id 999999")
    t = history.tables(studio)
    assert list(t.columns) == ["kind", "made", "detail", "size", "id"]
    assert history.pick(t, 0) == (t.iloc[0]["kind"], t.iloc[0]["id"])


@pytest.fixture
def paris(monkeypatch):
    """Local time is Paris time for one test (dates are shown in the machine's time zone)."""
    import time

    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_history_says_when_each_thing_was_made_and_what_an_export_is(studio, faq_dataset, tmp_path, paris):
    """#38: History showed no dates and bare export numbers. Each row now has its local date and
    time; an export reads as format, quantization, file and source (its number stays: deleting
    and the CLI use it)."""
    from datetime import datetime

    f = tmp_path / "faq-run-q8_0.gguf"
    f.write_bytes(b"GGUF")
    e = studio.store.add_export(run_id=None, model="smollm2-135m-instruct", format="gguf",
                                quant="q8_0", path=str(f), bytes=145_000_000, seconds=14.0,
                                parity={"passed": True}, created_at=1765000000.0)
    try:
        t = history.tables(studio)
        row = t[(t["kind"] == "export") & (t["id"] == str(e["id"]))].iloc[0]
        assert row["made"] == "2025-12-06 06:46"                  # 05:46 UTC, in Paris
        assert row["detail"] == ("GGUF file, q8_0: faq-run-q8_0.gguf — of model "
                                 "smollm2-135m-instruct, parity passed")
        assert row["size"] == "138.3 MB"
        ds = t[(t["kind"] == "dataset") & (t["id"] == faq_dataset)].iloc[0]
        made = datetime.fromtimestamp(studio.dataset(faq_dataset)["created_at"])
        assert ds["made"] == made.strftime("%Y-%m-%d %H:%M")
        for when in t["made"]:                                    # every row: a real date
            datetime.strptime(when, "%Y-%m-%d %H:%M")
    finally:
        studio.export_delete(e["id"])


def test_parity_result_in_plain_words():
    """#38: "3 of 8 answers ended on their own" puzzled a newcomer: the result says what the
    limit is, that being cut there is normal, and what the comparison covers."""
    p = {"passed": True, "agreement": 0.9607, "threshold": 0.95, "tokenizer_match": 1.0,
         "prompts": 8, "tokens_compared": 356, "stopped_at_end_of_turn": 3,
         "ran_past_end_of_turn": 0, "compare_limit": 48, "answer_limit": 96, "seconds": 61.0}
    r = {"format": "gguf", "quant": "q8_0", "path": "/x/m.gguf", "bytes": 145_000_000, "seconds": 14}
    md = export_step.result_md({**r, "parity": p})
    assert "Parity ✅ passed (checked in 61 s)" in md
    assert ("3 of 8 test answers finished on their own before the 96-token limit; the other 5 "
            "were cut at the limit, which is normal for long answers (the token comparison "
            "covers each answer's first 48 tokens anyway)") in md
    assert "None ran on past its end" in md and "ended on their own" not in md
    none = export_step.result_md({**r, "parity": {**p, "stopped_at_end_of_turn": 0, "passed": False}})
    assert "Parity ❌ failed" in none and "At least one must finish on its own" in none
    skipped = export_step.result_md({**r, "parity_skipped": "Parity was not checked (it was turned off)."})
    assert "⏭️ Parity was not checked" in skipped and "Parity ✅" not in skipped


def test_model_picker_describe(studio):
    assert "Parameters" in model_picker.describe(studio, "smollm2-135m-instruct")
    assert model_picker.describe(studio, "no-such-model").startswith("⚠️")


def test_session_is_typed_and_frozen():
    s = Session()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.run_id = "x"
    assert dataclasses.replace(s, run_id="x").run_id == "x" and s.run_id is None


def test_loss_chart_marks_a_single_validation_point():
    """One evaluation so far is still drawn (a point, not an invisible one-point line), on
    whole steps; no evaluation yet keeps the validation series in the legend."""
    ev = [{"step": s, "loss": 2.0 - s / 10} for s in (1, 2, 3, 4)] + [{"step": 4, "loss": 1.6,
                                                                      "eval_loss": 2.9}]
    spec = train_step.chart(train_step.curve(ev)).to_dict()
    rows = list(spec["datasets"].values())[0]
    assert {"step": 4, "loss": 2.9, "curve": "validation"} in rows
    line, points = spec["layer"]
    assert line["mark"]["type"] == "line" and points["mark"]["type"] == "point"
    assert "validation" in str(points["transform"])
    assert line["encoding"]["x"]["axis"]["format"] == "d"
    assert line["encoding"]["color"]["scale"]["domain"] == ["train", "validation"]
    assert train_step.curve([]) is None
    dpo = train_step.chart(train_step.curve(ev + [{"step": 4, "loss": 0.6, "reward_margin": 0.8}])).to_dict()
    assert dpo["layer"][0]["encoding"]["color"]["scale"]["domain"] == ["train", "validation", "reward margin"]


def test_train_form_suggests_dpo_for_pairs(studio, faq_dataset):
    studio.data_prepare([str(ROOT / "assets" / "sample" / "product_preferences.jsonl")], "ui-prefs")
    assert train_step.method_for(studio, "cpu-quickstart", "ui-prefs") == "dpo"
    assert train_step.method_for(studio, "cpu-quickstart", faq_dataset) == "sft"
    assert train_step.method_for(studio, "cpu-quickstart", None) == "sft"


def test_data_step_enables_what_a_dataset_allows():
    """Before a dataset: no Next buttons and the knowledge check says why it waits."""
    to_memory, to_train, know = data_step.ready(Session())
    assert not to_memory["visible"] and not to_train["visible"]
    assert not know["interactive"] and "prepare a dataset first" in know["value"]
    to_memory, to_train, know = data_step.ready(Session(dataset="faq@v1"))
    assert to_memory["visible"] and to_train["visible"] and know["interactive"]


def test_clearing_the_heldout_picker_keeps_the_typed_question():
    assert compare_step.picked("What does it cost?") == "What does it cost?"
    assert is_update(compare_step.picked(None)) and is_update(compare_step.picked(""))
