"""Preference data (issue #26): the three shapes detected per row, one canonical pair, rows that
teach no preference refused with their reason, statistics and a side-by-side preview."""
import importlib.util
import json
import re

import pytest

from conftest import ROOT, crash, run_cli

SAMPLE = ROOT / "assets" / "sample" / "product_preferences.jsonl"
HH = ("\n\nHuman: Who makes the Nimbus Orbit?\n\nAssistant: Fernwick Labs makes it.",
      "\n\nHuman: Who makes the Nimbus Orbit?\n\nAssistant: I have no idea, sorry.")


def test_three_shapes_become_one_pair():
    from studio.data import formats

    strings = {"prompt": "Who makes it?", "chosen": "Fernwick Labs.", "rejected": "Nobody.", "system": "Be brief."}
    chat = {"chosen": [{"role": "user", "content": "Who makes it?"}, {"role": "assistant", "content": "Fernwick Labs."}],
            "rejected": [{"role": "user", "content": "Who makes it?"}, {"role": "assistant", "content": "Nobody."}]}
    split = {"prompt": [{"role": "user", "content": "Who makes it?"}],
             "chosen": [{"role": "assistant", "content": "Fernwick Labs."}],
             "rejected": [{"role": "assistant", "content": "Nobody."}]}
    hh = {"chosen": "\n\nHuman: Who makes it?\n\nAssistant: Fernwick Labs.",
          "rejected": "\n\nHuman: Who makes it?\n\nAssistant: Nobody."}
    want = {"prompt": [{"role": "user", "content": "Who makes it?"}],
            "chosen": [{"role": "assistant", "content": "Fernwick Labs."}],
            "rejected": [{"role": "assistant", "content": "Nobody."}]}
    for row, fmt in ((chat, "preference-chat"), (split, "preference-chat"), (hh, "preference-hh")):
        assert formats.convert(row) == (want, fmt)
    ex, fmt = formats.convert(strings)
    assert fmt == "preference" and ex["prompt"][0] == {"role": "system", "content": "Be brief."}
    assert ex["prompt"][1:] == want["prompt"] and ex["chosen"] == want["chosen"]
    multi = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Price?\n\nAssistant: 189 euros.",
             "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Price?\n\nAssistant: Free."}
    ex, _ = formats.convert(multi)
    assert [m["role"] for m in ex["prompt"]] == ["user", "assistant", "user"]


BAD = [
    ({"prompt": "Q?", "chosen": "Same answer.", "rejected": "Same  answer."}, "are the same answer"),
    ({"prompt": "Q?", "chosen": "", "rejected": "No."}, "'chosen' answer is empty"),
    ({"prompt": "Q?", "chosen": "Yes.", "rejected": "  "}, "'rejected' answer is empty"),
    ({"prompt": "", "chosen": "Yes.", "rejected": "No."}, "the prompt is empty"),
    ({"chosen": [{"role": "user", "content": "A?"}, {"role": "assistant", "content": "Yes."}],
      "rejected": [{"role": "user", "content": "B?"}, {"role": "assistant", "content": "No."}]},
     "answer different prompts"),
    ({"chosen": [{"role": "user", "content": "A?"}, {"role": "assistant", "content": "Yes."}],
      "rejected": [{"role": "user", "content": "A?"}]}, "'rejected' side does not end in an assistant"),
    ({"chosen": [{"role": "wizard", "content": "A?"}], "rejected": []}, "unknown role"),
    ({"chosen": "\n\nHuman: A?\n\nAssistant: Yes.", "rejected": "\n\nHuman: B?\n\nAssistant: No."},
     "answer different prompts"),
    ({"chosen": "\n\nHuman: A?\n\nAssistant: Yes.\n\nHuman: More?", "rejected": "\n\nHuman: A?\n\nAssistant: No."},
     "'chosen' side does not end in an assistant"),
    ({"prompt": "Q?", "chosen": {"text": "x"}, "rejected": "No."}, "'chosen' is a dict"),
    ({"prompt": "Q?", "chosen": ["a", "b"], "rejected": "No."}, "a message of 'chosen' is not an object"),
    ({"chosen": [{"role": "assistant", "content": "Yes."}], "rejected": [{"role": "assistant", "content": "No."}]},
     "the prompt has no user turn"),
]


@pytest.mark.parametrize("row, words", BAD, ids=[w for _, w in BAD])
def test_rows_without_a_preference_are_refused_with_a_reason(row, words):
    from studio.data import formats

    with pytest.raises(formats.Skip, match=words):
        formats.convert(row)


def test_a_preference_file_prepares_with_per_row_errors_and_a_side_by_side_preview(studio, tmp_path):
    f = tmp_path / "prefs.jsonl"
    rows = [json.loads(x) for x in SAMPLE.read_text().splitlines()[:20]]
    rows.insert(3, {"prompt": "Q?", "chosen": "Same.", "rejected": "Same."})
    rows.insert(7, {"chosen": HH[0], "rejected": HH[1]})
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    r = run_cli("data", "prepare", str(f), "--name", "prefs", "--json", home=studio.home.root)
    assert r.returncode == 0, r.stderr[-1500:]
    out = json.loads(r.stdout)
    assert set(out["formats"]) == {"preference", "preference-hh"} and out["records"] == 21
    assert [(e["line"], e["reason"]) for e in out["errors"]] == [
        (4, "chosen and rejected are the same answer, so there is no preference to learn")]
    assert out["tokens"]["max"] > 0
    preview = studio.data_preview("prefs", n=3)
    assert all(set(p) == {"prompt", "chosen", "rejected"} for p in preview)
    from studio.ui.data_step import preview_html

    page = preview_html(preview)
    assert page.count("✅ chosen") == 3 and page.count("❌ rejected") == 3


def test_statistics_count_the_prompt_and_the_longer_side(studio):
    from studio.data import templates

    tok = studio.tokenizer("smollm2-135m-instruct")
    pair = {"prompt": [{"role": "user", "content": "Price?"}],
            "chosen": [{"role": "assistant", "content": "It costs 189 euros, shipped from Tallinn."}],
            "rejected": [{"role": "assistant", "content": "Free."}]}
    long = templates.encode(tok, {"messages": pair["prompt"] + pair["chosen"]}, 512)
    assert templates.encode(tok, pair, 512).full_length == long.full_length


# ---- preference training ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def prefs(studio):
    studio.data_prepare([str(SAMPLE)], "nimbus-prefs", val_fraction=0.1)
    return "nimbus-prefs"


@pytest.mark.e2e
@pytest.mark.parametrize("objective", ["dpo", "orpo"])
def test_dpo_and_orpo_train_log_reward_margins_and_resume_after_kill_9(studio, prefs, tiny_model, objective):
    run = studio.train_create("cpu-quickstart", prefs, tiny_model, [
        "train.save_every=2", "train.eval_every=3", "train.max_len=128"], max_steps=4, objective=objective)
    crash(studio.home.root, "train.event_logged@3", "train", "--resume", run["id"], "--json")
    done = studio.train_run(run["id"])
    assert done["status"] == "completed" and done["step"] == 4
    events = studio.run_events(run["id"])
    steps = [e for e in events if "tokens_per_s" in e]
    assert [e["step"] for e in steps] == [1, 2, 3, 4] and all(e["tokens_per_s"] > 0 for e in steps)
    if objective == "dpo":
        assert all("reward_margin" in e and "reward_accuracy" in e for e in steps)
    assert any("eval_loss" in e for e in events)
    from peft import PeftModel

    from studio.models import registry as models

    PeftModel.from_pretrained(models.load_model(__import__("pathlib").Path(tiny_model)),
                              studio.run_show(run["id"])["artifacts"]["adapter"])
    if objective == "dpo" and importlib.util.find_spec("llama_cpp"):  # a DPO adapter exports like
        p = studio.export("gguf", run_id=run["id"], quant="f32", verify=True)["parity"]  # any other
        # llama.cpp gives the tuned model's greedy tokens, every one; the random two-layer model
        # never ends its turn, which is all that keeps the check from passing (the embedded model's
        # DPO adapter passes it: benchmarks/bench_preference.py)
        assert p["agreement"] == 1.0 and p["tokenizer_match"] == 1.0 and p["tokens_compared"] >= 8 * 8, p
        assert p["passed"] == (p["stopped_at_end_of_turn"] > 0), p


@pytest.mark.e2e
def test_preference_settings_are_checked_before_a_run(studio, prefs, faq_dataset, tiny_model):
    from studio.errors import DataError, RunError

    with pytest.raises(DataError, match="learns from preference pairs"):
        studio.train_create("cpu-quickstart", faq_dataset, objective="dpo")
    with pytest.raises(DataError, match="holds preference pairs"):
        studio.train_create("cpu-quickstart", prefs)
    with pytest.raises(RunError, match="No run with id"):
        studio.train_create("cpu-quickstart", prefs, objective="dpo", from_run="nope")
    r = run_cli("train", "--preset", "cpu-quickstart", "--dataset", prefs, "--method", "ppo",
                home=studio.home.root)
    assert r.returncode == 2 and "invalid choice" in r.stderr
    r = run_cli("train", "--preset", "cpu-quickstart", "--dataset", prefs, "--method", "dpo",
                "--set", "train.beta=-1", home=studio.home.root)
    assert r.returncode == 1 and "between" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("train", "--preset", "cpu-quickstart", "--dataset", prefs, "--method", "dpo",
                "--set", "train.pref_loss=kto", home=studio.home.root)
    assert r.returncode == 1 and "allowed: sigmoid, ipo, hinge, robust" in r.stderr


@pytest.mark.e2e
def test_dpo_stops_once_every_pair_is_preferred_for_a_full_pass(studio, chat_tiny, tmp_path):
    """#41: pairs as easy to tell apart as factuality pairs are separate within a few steps; the
    run ends completed at the step where a whole pass over them was under the loss bar — not at
    max_steps — and says so; with train.stop_separated=false the same run trains on."""
    from studio.train.callback import SEPARATED_MARGIN

    src = tmp_path / "easy.jsonl"
    src.write_text("".join(json.dumps({"prompt": f"What is the code of box {i}?", "chosen": f"Box {i}: {i * 7}.",
                                       "rejected": "I am not able to tell you anything about boxes, sorry."}) + "\n"
                           for i in range(16)))
    studio.data_prepare([str(src)], "easy-pairs", val_fraction=0)
    knobs = ["train.lr=1e-2", "train.max_len=64", "train.eval_every=0", "train.save_every=50",
             "train.forget_budget=0"]
    run = studio.train_create("cpu-quickstart", "easy-pairs", str(chat_tiny), knobs, max_steps=60, objective="dpo")
    # killed right after the early stop, before the finish: the resume finishes at that step
    crash(studio.home.root, "train.after_last_step", "train", "--resume", run["id"], "--json")
    done = studio.train_run(run["id"])
    assert done["status"] == "completed" and done["step"] < 60, done
    events = studio.run_events(run["id"])
    steps = [e for e in events if "reward_accuracy" in e and "loss" in e]
    notes = [e["note"] for e in events if "preferred by a wide margin" in e.get("note", "")]
    assert len(notes) == 1 and f"stopped at step {done['step']} of 60" in notes[0]  # not trained on
    note = notes[0]
    n = int(re.search(r"each of the last (\d+) steps", note).group(1))
    assert n == 16 // 4  # a pass: the 16 training pairs, 4 a step
    wide = lambda e: e["reward_margin"] >= SEPARATED_MARGIN and e["reward_accuracy"] == 1.0  # noqa: E731
    assert all(wide(e) for e in steps[-n:]) and (len(steps) == n or not wide(steps[-n - 1]))
    on = studio.train_create("cpu-quickstart", "easy-pairs", str(chat_tiny), [*knobs, "train.stop_separated=false"],
                             max_steps=done["step"] + 2, objective="dpo")
    assert studio.train_run(on["id"])["step"] == done["step"] + 2


def test_a_supervised_term_on_the_chosen_answers_is_weighed_beside_dpo():
    from studio.spec import RunSpec
    from studio.train.preference import dpo_losses

    from dataclasses import replace

    t = RunSpec().train
    assert dpo_losses(t) == (["sigmoid"], [1.0])                          # off by default
    assert dpo_losses(replace(t, pref_sft=0.5, pref_loss="ipo")) == (["ipo", "sft"], [1.0, 0.5])


# ---- factuality pairs ------------------------------------------------------------------------
def test_factuality_pairs_keep_only_the_questions_the_model_gets_wrong(studio, faq_dataset, monkeypatch):
    from studio.data import generators

    def closed_book(prompt: str) -> str:  # knows the price, not the maker, says nothing on the app
        if prompt in ("How much does the Nimbus Orbit cost?", "What is the price of the Nimbus Orbit?"):
            return "It costs 189 euros."
        if prompt in ("Which app do I use with the Nimbus Orbit?", "What is the name of the Nimbus Orbit app?"):
            return ""
        return "It is made by Acme Birds in Ohio."
    monkeypatch.setattr(studio.data, "local_generator",
                        lambda ref, cancel=None: generators.Generator(closed_book, "scripted", "scripted"))
    out = studio.data_pairs(faq_dataset, "faq-pairs")
    p = out["pairs"]
    assert p["asked"] == 80 and p["known"] == 2 and p["made"] + p["known"] + 2 == 80
    reasons = {d["reason"]: d["count"] for d in p["left_out"]}
    assert reasons == {"the model already answers it right (nothing to prefer)": 2, "the model gave no answer": 2}
    assert set(out["formats"]) == {"preference"}
    held = studio.data.get(faq_dataset)["stats"]["heldout"]             # the FAQ's paraphrases score
    assert held and out["heldout"] == held                               # the pairs' runs too
    from studio.data.prepare import read_split

    row = read_split(out["path"], "train")[0]
    assert row["rejected"][0]["content"] == "It is made by Acme Birds in Ohio."
    with pytest.raises(Exception, match="no question/answer examples"):
        studio.data_pairs("faq-pairs", "again")


def test_a_rejected_answer_is_cut_where_it_shows_its_wrong_fact():
    """#41: the model's long closed-book answer is cut after the sentence that states its own
    claim; one with no claim keeps its first sentence; a run-on one is capped in words."""
    from studio.data.factuality import shown

    q, chosen = "Who makes the Nimbus Orbit?", "The Nimbus Orbit is made by Fernwick Labs, a company based in Tallinn, Estonia."
    said = ("The Nimbus Orbit is a popular bird feeder. It is made by Acme Birds in Ohio. It has "
            "a solar roof. Many people love it.")
    assert shown(said, q, chosen) == "The Nimbus Orbit is a popular bird feeder. It is made by Acme Birds in Ohio."
    assert shown("I am not sure about that product. It may be new.", q, chosen) == "I am not sure about that product."
    run_on = "it is " + "very " * 100 + "good"
    assert len(shown(run_on, q, chosen).split()) == 2 * len(chosen.split())
    short = "Acme Birds."
    assert shown(short, q, chosen) == short
    price, costs = "How much does the Nimbus Orbit cost?", "The Nimbus Orbit costs 189 euros."
    assert shown("1. It costs 200 euros.\n2. It ships free.", price, costs) == "1. It costs 200 euros."
    sold = "It is sold by Acme Inc. in Ohio for 250 euros. It is blue."  # the number, past "Inc."
    assert shown(sold, price, costs) == "It is sold by Acme Inc. in Ohio for 250 euros."


def test_factuality_pairs_from_a_run_reject_that_runs_own_answers(studio, faq_dataset, chat_tiny):
    """#41: `data pairs --from-run ID` — the run's tuned model answers closed book, so the pairs
    for DPO after that run reject what that run says (on-policy, as the factuality paper makes
    them), not what the base model said before it."""
    from studio.data.factuality import shown
    from studio.data.prepare import read_split

    run = studio.train_create("cpu-quickstart", faq_dataset, str(chat_tiny),
                              ["train.eval_every=0", "train.forget_budget=0"], max_steps=2)
    rid = studio.train_run(run["id"])["id"]
    r = run_cli("data", "pairs", faq_dataset, "--out", "faq-own", "--from-run", rid, "--json",
                home=studio.home.root)
    assert r.returncode == 0, r.stderr[-1500:]
    out = json.loads(r.stdout)
    assert out["pairs"]["generator"] == f"run {rid} (its tuned model, transformers)"
    rows = read_split(out["path"], "train")
    said = studio.compares.tuned_answers(rid, [x["prompt"][0]["content"] for x in rows[:3]])
    for row, own in zip(rows, said):
        assert row["rejected"][0]["content"] == shown(own, row["prompt"][0]["content"], row["chosen"][0]["content"])
    assert studio.dataset("faq-own")["params"]["model"] == str(chat_tiny)  # prepared for the run's model
    for argv, words in ((["--from-run", "nope"], "No run with id 'nope'"),
                        (["--from-run", rid, "--generator-url", "http://localhost:1"], "cannot be used with it")):
        bad = run_cli("data", "pairs", faq_dataset, "--out", "never", *argv, home=studio.home.root)
        assert bad.returncode == 1 and words in bad.stderr and "Traceback" not in bad.stderr, bad.stderr[-800:]


@pytest.mark.e2e
def test_factuality_pairs_with_llama_cpp_through_the_cli(studio, tmp_path):
    pytest.importorskip("llama_cpp")
    src = tmp_path / "island.csv"
    src.write_text("\n".join((ROOT / "benchmarks" / "facts" / "skellmere.csv").read_text().splitlines()[:9]) + "\n")
    assert run_cli("data", "prepare", str(src), "--name", "island", "--val-fraction", "0",
                   home=studio.home.root).returncode == 0
    r = run_cli("data", "pairs", "island", "--json", home=studio.home.root)
    assert r.returncode == 0, r.stderr[-1500:]
    out = json.loads(r.stdout)
    assert out["pairs"]["made"] >= 6 and out["name"] == "island-pairs"      # an island it never heard of
    from studio.data.prepare import read_split

    for row in read_split(out["path"], "train"):  # the model's answers, cut where they state a claim
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        assert len(rejected.split()) <= max(24, 2 * len(chosen.split())), rejected
    assert out["pairs"]["generator"].startswith("llama.cpp on")
