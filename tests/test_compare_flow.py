"""Compare as a newcomer uses it: a second question in the same conversation, an error in the
generating thread, overlapping requests on the one shared model, and a report that measured
nothing is never kept as a finding."""
import threading

import pytest

from studio.errors import RunError

pytestmark = pytest.mark.slow

HANG = 120  # a hang detector's ceiling (seconds), never a speed target


def gradio_turns(*texts: str) -> list[dict]:
    """A conversation as Gradio's Chatbot hands it back: each turn's content a list of parts."""
    roles = ("user", "assistant")
    return [{"role": roles[i % 2], "content": [{"type": "text", "text": t}], "metadata": None}
            for i, t in enumerate(texts)]


def drain(stream) -> str:
    text = ""
    for text in stream:
        pass
    return text


def test_content_parts_become_text():
    from studio.models.chat import plain_messages, text_of

    assert text_of([{"type": "text", "text": "a"}, {"type": "file", "file": "x.png"}, "b"]) == "a\nb"
    assert text_of(None) == "" and text_of({"text": "c"}) == "c"
    assert plain_messages(gradio_turns("q", "a")) == [{"role": "user", "content": "q"},
                                                      {"role": "assistant", "content": "a"}]


def test_second_question_in_the_same_conversation(studio, trained_run):
    """The conversation so far comes back from the Chatbot as content parts: the second question
    is answered on both sides, by the facade and by the Compare step's handler."""
    from studio.ui import compare_step

    rid = trained_run["id"]
    first = studio.compare(rid, "Who makes the Nimbus Orbit?", max_new_tokens=12)
    history = gradio_turns("Who makes the Nimbus Orbit?", first["base"])
    msgs = history + [{"role": "user", "content": "And what does it cost?"}]
    assert drain(studio.compare_stream(rid, msgs, "tuned", max_new_tokens=12))
    out = studio.compare(rid, "And what does it cost?", None, history, 12)
    assert out["base"] and out["tuned"]

    base_h = gradio_turns("Who makes the Nimbus Orbit?", first["base"])
    tuned_h = gradio_turns("Who makes the Nimbus Orbit?", first["tuned"])
    *_, last = compare_step.ask(studio, rid, "hf", 12, 0, 0, "", base_h, tuned_h, "And what does it cost?")
    b, t, notice, box = last
    assert notice.startswith("Both answered"), notice
    assert len(b) == len(t) == 4 and b[-1]["role"] == "assistant" and box == ""


def test_an_error_while_generating_reaches_the_reader(studio, trained_run, monkeypatch):
    """A generation that fails in its thread is raised to the reader at once (the page shows the
    message), and the model is free again for the next question."""
    from studio.models import chat
    from studio.ui import compare_step

    def broken(*args, **kwargs):
        raise TypeError("can only concatenate str (not \"list\") to str")

    monkeypatch.setattr(chat, "generate", broken)
    said: list = []
    t = threading.Thread(target=lambda: said.extend(compare_step.ask(
        studio, trained_run["id"], "hf", 8, 0, 0, "", [], [], "Hello?")), daemon=True)
    t.start()
    t.join(HANG)
    assert not t.is_alive(), "the reader hung on a generation thread that had died"
    b, tuned_h, notice, box = said[-1]
    assert "concatenate" in notice and box == "Hello?" and b == [] and tuned_h == []
    monkeypatch.undo()
    _, pair = studio.pair_for(trained_run["id"])
    assert pair.lock.acquire(timeout=HANG)  # nothing left holding the shared model
    pair.lock.release()
    assert studio.compare(trained_run["id"], "Hello?", max_new_tokens=4)["base"] is not None


def test_overlapping_requests_take_turns(studio, trained_run):
    """While one request streams the base side (the adapter switched off on the one shared
    model), another asks for the tuned side: it waits for its turn and gets the tuned answer,
    never the base model's."""
    rid, q = trained_run["id"], "How much does the Nimbus Orbit cost?"
    alone = studio.compare(rid, q, max_new_tokens=24)
    assert alone["base"] != alone["tuned"]
    stream = studio.compare_stream(rid, [{"role": "user", "content": q}], "base", max_new_tokens=24)
    next(stream)  # the base side is generating now
    got: dict = {}
    other = threading.Thread(target=lambda: got.update(studio.compare(rid, q, max_new_tokens=24)))
    other.start()
    base_text = drain(stream)
    other.join(HANG)
    assert not other.is_alive()
    assert base_text.strip() == alone["base"]
    assert got["tuned"] == alone["tuned"] and got["base"] == alone["base"]


def test_adapter_in_effect_is_measured(studio, trained_run):
    from studio.evaluate.report import adapter_in_effect

    with studio.compares.session(trained_run["id"]) as (_, pair):
        assert adapter_in_effect(pair, pair.tok)
        pair.model.base_model.disable_adapter_layers()  # the fault the old chat thread left behind
        try:
            assert not adapter_in_effect(pair, pair.tok)
        finally:
            pair.model.base_model.enable_adapter_layers()


def test_a_report_that_measured_nothing_is_not_kept(studio, trained_run, trained_report, monkeypatch):
    """Tuned equal to base on every row: shown, said plainly, not stored — asking again (or
    "Recompute report") measures again; a real report is stored as before."""
    from studio.evaluate import report as rep
    from studio.ui import compare_step

    rid = trained_run["id"]
    calls = []

    def same_everywhere(pair, run, dataset, events):
        calls.append(run["id"])
        return {**trained_report, "identical_answers": 32, "answers_compared": 32, "adapter_applied": False,
                "flags": [{"flag": "adapter not in effect", "text": "…"}], "headline": "Not measured: …"}

    monkeypatch.setattr(rep, "build", same_everywhere)
    try:
        first = studio.report(rid, refresh=True)
        assert first["cached"] is False and studio.store.get_report(rid) is None
        md, *_ = compare_step.report(studio, rid)                 # "Did it learn?" measures again
        assert len(calls) == 2 and "not kept" in md and md.startswith("### Not measured")
        compare_step.report(studio, rid, refresh=True)           # "Recompute report"
        assert len(calls) == 3
        monkeypatch.setattr(rep, "build", lambda *a: (calls.append(1), dict(trained_report))[1])
        kept = studio.report(rid, refresh=True)
        assert kept["cached"] is True and studio.store.get_report(rid)["verdict"] == trained_report["verdict"]
        studio.report(rid)
        assert len(calls) == 4                                     # read back, not measured again
    finally:
        studio.store.put_report(rid, trained_report)


def test_stream_refuses_an_unknown_side_and_a_missing_adapter(studio, trained_run, faq_dataset):
    from studio.errors import ConfigError

    with pytest.raises(ConfigError, match="side"):
        next(studio.compare_stream(trained_run["id"], [{"role": "user", "content": "hi"}], "both"))
    queued = studio.train_create("cpu-quickstart", faq_dataset, max_steps=1)
    with pytest.raises(RunError, match="no adapter yet"):
        next(studio.compare_stream(queued["id"], [{"role": "user", "content": "hi"}], "tuned"))


def test_a_question_while_the_report_runs_waits_and_both_are_right(studio, faq_dataset, chat_tiny, monkeypatch):
    """The newcomer's second question, asked while "Did it learn?" is measuring: it waits for the
    report (which holds the one shared model), then gets the tuned model's answer; the report
    kept is the one measured alone. On the two-layer chat model: the overlap, not the model, is
    the point. The report waits until the question is at the model's door, so they overlap on
    any machine."""
    from studio.evaluate import compare as cmp
    from studio.evaluate import report as rep

    run = studio.train_create("cpu-quickstart", faq_dataset, str(chat_tiny),
                              ["train.eval_every=0", "train.save_every=2"], max_steps=2)
    rid = studio.train_run(run["id"])["id"]
    q = "How much does the Nimbus Orbit cost?"
    alone = studio.compare(rid, q, max_new_tokens=16)
    measured_alone = studio.report(rid, refresh=True)
    building, at_door = threading.Event(), threading.Event()
    real_build, real_hold = rep.build, cmp.Pair.hold

    def build(*args, **kwargs):  # the report holds the model from here to its end
        building.set()
        assert at_door.wait(HANG), "the question never reached the model"
        return real_build(*args, **kwargs)

    def hold(self, *args, **kwargs):
        if threading.current_thread().name == "question":
            at_door.set()
        return real_hold(self, *args, **kwargs)

    monkeypatch.setattr(rep, "build", build)
    monkeypatch.setattr(cmp.Pair, "hold", hold)
    got: dict = {}
    reporting = threading.Thread(target=lambda: got.update(report=studio.report(rid, refresh=True)))
    reporting.start()
    assert building.wait(HANG)
    asking = threading.Thread(target=lambda: got.update(answer=studio.compare(rid, q, max_new_tokens=16)),
                              name="question")
    asking.start()
    for t in (reporting, asking):
        t.join(HANG)
        assert not t.is_alive(), "a request hung"
    assert at_door.is_set()
    assert got["answer"]["base"] == alone["base"] and got["answer"]["tuned"] == alone["tuned"]
    same = ("base", "tuned", "examples", "retention", "safety", "adapter_applied", "verdict")
    assert {k: got["report"][k] for k in same} == {k: measured_alone[k] for k in same}
    assert studio.store.get_report(rid)["verdict"] == measured_alone["verdict"]
