"""The steps agree with each other, and the report says what happened in plain words: handler
and unit tests of what a newcomer met walking the studio (no model is loaded here)."""

import pytest

from studio.ui.session import MemoryNote, Session, Step

QWEN_PLAN = Session(memory=MemoryNote(total_gb=6.2, fits=True, preset="gpu-8gb-qlora", gpu="RTX 4060",
                                      model="qwen3-4b"),
                    planned=(("method", "qlora"), ("micro_batch", 2)))


def test_a_cpu_preset_switches_to_its_model(studio):
    """cpu-quickstart after the Memory step set qwen3-4b: the Model box switches to the embedded
    model and says so, and the Memory step's qlora plan is no longer offered as in use."""
    from studio.ui import train_step

    box, note = train_step.preset_picked(studio, QWEN_PLAN, "cpu-quickstart", "qwen3-4b")
    assert box["value"] == "smollm2-135m-instruct"
    assert "Switched the model to **smollm2-135m-instruct**" in note and "qwen3-4b" in note
    assert "Using the Memory step's settings" not in note
    # a GPU preset trains the model chosen, and says the preset was made for another
    box, note = train_step.preset_picked(studio, Session(), "gpu-8gb-qlora", "llama-3.2-1b")
    assert "value" not in box and "Trains **llama-3.2-1b**" in note and "made for qwen3-4b" in note


def test_the_memory_plan_applies_only_to_its_own_preset_and_model(studio):
    from studio.ui import train_step

    assert dict(train_step.planned_for(QWEN_PLAN, "qwen3-4b", "gpu-8gb-qlora")) == {"method": "qlora",
                                                                                   "micro_batch": 2}
    assert train_step.planned_for(QWEN_PLAN, "qwen3-4b", "cpu-quickstart") == ()
    assert train_step.planned_for(QWEN_PLAN, "smollm2-135m-instruct", "gpu-8gb-qlora") == ()
    on = train_step.memory_note(studio, QWEN_PLAN, "qwen3-4b", "gpu-8gb-qlora")
    off = train_step.memory_note(studio, QWEN_PLAN, "qwen3-4b", "gpu-16gb-lora")
    assert "Using the Memory step's settings: method qlora" in on
    assert "Using the Memory step's settings" not in off and "Suggested preset: **gpu-8gb-qlora**" in off


def test_start_does_not_carry_a_stale_plan(studio, monkeypatch):
    """Start with another preset than the plan's: the plan's qlora is not passed along."""
    from studio.ui import train_step

    seen = {}
    monkeypatch.setattr(studio, "train_create", lambda *a, **kw: seen.update(kw) or {"id": "r1"})
    monkeypatch.setattr(studio, "train_spawn", lambda rid: None)
    monkeypatch.setattr(studio, "model_path", lambda *a, **kw: None)
    train_step.start(studio, QWEN_PLAN, "gpu-16gb-lora", "d@v1", 2e-4, 10, 16, 256, 2, "qwen3-4b")
    assert "method" not in seen
    train_step.start(studio, QWEN_PLAN, "gpu-8gb-qlora", "d@v1", 2e-4, 10, 16, 256, 2, "qwen3-4b")
    assert seen["method"] == "qlora"


def test_a_reload_reopens_the_tab_that_was_open():
    """The stored step becomes the selected tab (the browser walk checks it is stored when code
    opens a tab, and reopened after a reload); a missing or damaged one changes nothing."""
    from studio.ui import reopen

    assert reopen(int(Step.EXPORT)).selected == Step.EXPORT
    assert reopen("not a step") == {"__type__": "update"}
    assert reopen(None) == {"__type__": "update"}


def test_learning_rate_help_covers_the_presets(studio):
    """The help under the learning-rate box names the range the shipped presets use."""
    help_ = studio.preset_help()["train.lr"]
    for name in ("cpu-quickstart", "gpu-8gb-qlora", "gpu-8gb-qlora-dpo"):
        mantissa, exp = f"{studio.preset(name).train.lr:.0e}".split("e")
        assert f"{mantissa}e{int(exp)}" in help_, name


# ---- the report in plain words ----

def figures(base_match: float, tuned_match: float, n: int = 24, val: tuple = (2.0, 1.0)) -> dict:
    side = lambda m, v: {"val_loss": v, "probe_ppl": 10.0, "paraphrased": {"fact_match": m, "n": n}}
    return {"base": side(base_match, val[0]), "tuned": side(tuned_match, val[1])}


def test_a_second_update_that_lost_the_first_says_so_first():
    """SFT then DPO that took the facts from 58% to 4%: the headline says it lost what the SFT run
    learned, not "It learned your facts" (which it did, against the base); kept: as before."""
    from studio.evaluate.second import first_words

    vs = {"metric": "fact_match", "start": 0.58, "tuned": 0.04, "kept_learned": False, "probe_ppl_rise": None,
          "kept": None}
    vs["words"] = "Lost part of what run S (the run it started from) learned: fact match 58% → 4%."
    head, said = first_words(vs, "S", "It learned your facts and kept what it knew.",
                             "It learned your facts and kept what it knew. On reworded …")
    assert head == "It lost part of what run S (the run it started from) learned."
    assert said.startswith(head + " Lost part of what run S") and "Against the base model: It learned" in said
    kept = {**vs, "tuned": 0.6, "kept_learned": True, "words": "Kept what run S … learned."}
    assert first_words(kept, "S", "It learned.", "It learned. More.") == ("It learned.", "It learned. More. Kept what run S … learned.")


def test_headline_first_then_figures():
    from studio.evaluate.verdict import diagnose, headline, verdict
    from studio.spec import stored

    kept = {"known": 41, "kept": 28, "share": 28 / 41}
    fig = figures(0.1, 0.6)
    flags = diagnose(fig, 0, 24, 1.0, stored({"train": {"forget_budget": 0.10}}), [], True, kept)
    assert [f["flag"] for f in flags] == ["forgot general answers"]
    assert "13 of the 41" in flags[0]["text"] and "32% lost" in flags[0]["text"]
    rep = {"retention": kept, "forgetting": {"rise": -0.01, "budget": 0.1, "within_budget": True}}
    head = headline(fig, flags, rep)
    assert head == "It learned your facts but forgot some of what it knew."
    assert verdict(fig, flags, {**rep, "headline": head}).startswith(head + " On reworded held-out")
    some = {**rep, "retention": {"known": 41, "kept": 37, "share": 37 / 41}}   # lost 4: within budget
    assert headline(fig, [], some) == "It learned your facts and kept most of what it knew."
    assert headline(figures(0.1, 0.12), [], some) == ("It did not clearly learn your facts; it kept most of "
                                                      "what it knew.")
    assert "It kept 37 of the 41 general questions" in verdict(fig, [], some)  # the count, once, next
    every = {**rep, "retention": {"known": 41, "kept": 41, "share": 1.0}}
    assert headline(fig, [], every) == "It learned your facts and kept what it knew."
    few = {**rep, "retention": {"known": 41, "kept": 12, "share": 12 / 41}}   # a budget of 0.75 or more
    assert headline(fig, [], few) == "It learned your facts and kept less than half of what it knew."
    assert headline(figures(0.1, 0.6, n=3), [], rep).startswith("Uncertain: only 3 held-out questions")
    none = headline(fig, [], {"identical_answers": 24, "answers_compared": 24})
    assert none.startswith("Not measured")


def test_distinct_facts_in_validation_are_not_a_failure_to_learn():
    """Validation rows whose facts the training data never states: the report says their low
    score is not a failure to learn, and judges learning on held-out rewordings instead."""
    from studio.evaluate.report import facts_trained
    from studio.evaluate.verdict import headline, verdict

    train = [{"messages": [{"role": "user", "content": "Where is Fernwick Labs?"},
                           {"role": "assistant", "content": "Fernwick Labs is in Tallinn."}]}]
    val = [{"messages": [{"role": "user", "content": "Who founded Orbis Mill?"}], "answer": "Ada Korr founded it."},
           {"messages": [{"role": "user", "content": "Where is it?"}], "answer": "Fernwick Labs is in Tallinn."}]
    dataset = {"path": "unused"}
    from studio.evaluate import report as rep_mod

    orig = rep_mod.recall_rows
    rep_mod.recall_rows = lambda ds, limit: [{"answer": t["messages"][-1]["content"]} for t in train]
    try:
        assert facts_trained(val, dataset) == 0.5
        assert facts_trained(val[:1], dataset) == 0.0
    finally:
        rep_mod.recall_rows = orig
    side = lambda m: {"val_loss": 1.0, "validation": {"fact_match": m, "n": 24}}
    fig = {"base": side(0.0), "tuned": side(0.0)}
    rep = {"validation_facts_trained": 0.0}
    words = verdict(fig, [], rep)
    assert "not a failure to learn" in words and "Held-out questions" in words
    fig["base"]["val_loss"], fig["tuned"]["val_loss"] = 2.0, 1.0
    assert headline(fig, [], rep).startswith("It learned")  # judged by loss, not by distinct facts


@pytest.mark.parametrize("matches,now,want", [
    ((0.0, 0.0, 0.0), 1.0, 1.0),     # every strength the same: keep what it has (was 0.5)
    ((0.2, 0.5, 0.6), 1.0, 1.0),     # better at full strength, within budget
    ((0.4, 0.5, 0.6), 1.0, 0.75),    # full strength lost general answers beyond the budget
])
def test_suggested_strength(matches, now, want):
    from studio.evaluate.verdict import suggest

    kept = {0.5: 1.0, 0.75: 0.95, 1.0: 0.95 if want == 1.0 else 0.7}
    trade = [{"strength": s, "match": m, "rise": 0.01 * s, "kept": kept[s]}
             for s, m in zip((0.5, 0.75, 1.0), matches)]
    value, why = suggest(trade, 0.10, now, lost_budget=0.25)
    assert value == want and why


def test_charts_leave_room_for_the_plot_label():
    """Gradio draws the plot box's label over the chart's top-left corner: the loss chart's top
    (its highest peaks) must start below it."""
    from studio.ui.train_step import chart, curve

    spec = chart(curve([{"step": 1, "loss": 3.6}, {"step": 2, "loss": 1.0}])).to_dict()
    assert spec["padding"]["top"] >= 30
