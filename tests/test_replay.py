"""Self-replay, the retention probe, the forgetting budget's choice and adapter strength."""
import json
import re
from pathlib import Path

import pytest

from studio.retention import replay
from studio.paths import RUN


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    w = re.sub(r"[^\w\s]", " ", text.lower()).split()
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


def test_prompt_set_is_big_varied_and_the_same_every_time():
    ps = replay.prompts()
    assert len(ps) >= 200 and len(set(ps)) == len(ps)
    assert ps == replay.prompts()
    text = replay.PROMPTS.read_text()
    for kind in ("knowledge", "how-to", "writing", "arithmetic", "code", "chit-chat"):
        assert f"## {kind}" in text


def test_probe_text_and_questions_never_reach_training_data():
    """Neither the general-text probe nor the retention questions (nor their answers' wording)
    may be trained on: the prompts and the shipped replay answers share no 6 words in a row with
    the probe, and no retention question appears among the prompts."""
    probe = replay.ASSETS.joinpath("general_probe.txt").read_text()
    probe6 = ngrams(probe, 6)
    retention = {replay.words(r["question"]).__str__() for r in replay.retention_rows()}
    shipped = sorted(replay.ASSETS.joinpath("replay").glob("*.jsonl"))
    assert shipped, "the embedded model's replay answers are shipped"
    texts = list(replay.prompts())
    for f in shipped:
        texts += [json.loads(x).get("answer", "") for x in f.read_text().splitlines()[1:]]
    for t in texts:
        assert not (ngrams(t, 6) & probe6), t
    for q in replay.prompts():
        assert replay.words(q).__str__() not in retention, q
        for r in replay.retention_rows():
            assert not (ngrams(q, 5) & ngrams(r["question"], 5)), (q, r["question"])


def test_shipped_answers_belong_to_the_embedded_model(embedded_model_dir):
    rows = replay.read_answers(replay.ASSETS / "replay" / "smollm2-135m-instruct.jsonl",
                               replay.model_key(embedded_model_dir))
    assert rows is not None and len(rows) >= 200
    assert sum(bool(r["answer"]) for r in rows) == len(rows)


def model_and_generator(tmp_path, answer):
    """A model folder, and a generator that answers each prompt with `answer(i)` and counts its
    calls (and a list for the notes)."""
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    calls, notes = [], []

    def gen(prompts):
        calls.append(len(prompts))
        return [answer(i) for i in range(len(prompts))]
    return model, gen, calls, notes


def test_cache_is_used_regenerated_when_damaged_and_never_crashes(tmp_path):
    model, gen, calls, notes = model_and_generator(tmp_path, lambda i: f"Answer number {i}.")
    cache = tmp_path / "replay"
    rows = replay.answers(cache, "my-model", model, gen, notes.append)
    assert len(rows) == len(replay.prompts()) and calls == [len(rows)] and not notes
    assert replay.answers(cache, "my-model", model, gen, notes.append) == rows and len(calls) == 1
    (f,) = cache.glob("*.jsonl")
    f.write_text(f.read_text()[:500])                      # cut by a kill
    assert len(replay.answers(cache, "my-model", model, gen, notes.append)) == len(rows)
    assert len(calls) == 2 and "damaged or out of date" in notes[0]
    f.write_text("not json at all\n")
    assert replay.answers(cache, "my-model", model, gen, notes.append) == rows and len(calls) == 3
    (model / "config.json").write_text('{"model_type": "llama", "hidden_size": 8}')  # new revision
    replay.answers(cache, "my-model", model, gen, notes.append)
    assert len(calls) == 4
    # answers to an earlier prompt set (prompts were added since): made again, the new ones too
    f = replay.cache_path(cache, "my-model", replay.model_key(model))
    f.write_text(f.read_text().replace(f'"prompts": "{replay.prompt_set()}"', '"prompts": "0123456789abcdef"'))
    assert len(replay.answers(cache, "my-model", model, gen, notes.append)) == len(replay.prompts())
    assert len(calls) == 5 and "out of date" in notes[-1]


def test_a_model_that_finishes_no_answer_is_asked_once(tmp_path):
    """A base model that finishes none of the general prompts (cut off or empty) trains without
    self-replay; that is kept, so a later run does not ask the 245 prompts again."""
    model, gen, calls, notes = model_and_generator(tmp_path, lambda i: "")
    cache = tmp_path / "replay"
    assert replay.answers(cache, "base-model", model, gen, notes.append) == [] and len(calls) == 1
    assert replay.answers(cache, "base-model", model, gen, notes.append) == [] and len(calls) == 1
    assert not notes
    (f,) = cache.glob("*.jsonl")
    f.write_text(f.read_text().replace('"answers": 0', '"answers": 3'))  # rows lost: made again
    assert replay.answers(cache, "base-model", model, gen, notes.append) == [] and len(calls) == 2


def test_mix_counts_and_is_seeded():
    rows = [{"prompt": f"p{i}", "answer": f"a{i}"} for i in range(50)]
    assert len(replay.mix(rows, 40, 0.5, 1)) == 20
    assert replay.mix(rows, 40, 0.5, 1) == replay.mix(rows, 40, 0.5, 1)
    assert replay.mix(rows, 40, 0.0, 1) == []
    assert len(replay.mix(rows, 400, 1.0, 1)) == 50          # never more than the set
    ex = replay.mix(rows, 4, 0.5, 1)[0]
    assert [m["role"] for m in ex["messages"]] == ["user", "assistant"]


@pytest.mark.parametrize("answer,expect,ok", [
    ("The capital is Rome.", "Rome", True), ("It is 120.", "12", False), ("twelve", "12", True),
    ("Buenos Aires is the capital", "Buenos Aires", True), ("Aires Buenos", "Buenos Aires", False),
    ("", "Rome", False)])
def test_retention_match(answer, expect, ok):
    assert replay.right(answer, expect) is ok


def watcher(tmp_path, evals, budget=0.10, best_step=None):
    from studio.train.selection import Watcher

    (tmp_path / RUN.selection).write_text(json.dumps({"budget": budget, "base": {"probe_ppl": 10.0},
                                              "evals": evals, "best_step": best_step}))
    if best_step is not None:
        (tmp_path / "best-adapter").mkdir(exist_ok=True)
    return Watcher(tmp_path, None, [], budget, start=10**6, lost_budget=0.25)


def ev(step, match, forgetting, loss=1.0):
    return {"step": step, "answer_match": match, "forgetting": forgetting, "eval_loss": loss,
            "probe_ppl": 10 * (1 + forgetting)}


def test_budget_keeps_the_best_checkpoint_within_it(tmp_path):
    w = watcher(tmp_path, [ev(25, 0.3, 0.02), ev(50, 0.6, 0.08), ev(75, 0.7, 0.25)], best_step=50)
    c = w.choice(75)
    assert c["chosen_step"] == 50 and c["last"]["step"] == 75
    assert "forgot more than the budget allows" in c["reason"] and c["adapter"] is not None


def test_budget_no_checkpoint_meets_it_keeps_the_least_forgetting(tmp_path):
    w = watcher(tmp_path, [ev(25, 0.3, 0.40), ev(50, 0.6, 0.20), ev(75, 0.7, 0.30)], best_step=50)
    c = w.choice(75)
    assert c["chosen_step"] == 50 and "No evaluation stayed within" in c["reason"]


def test_budget_counts_general_answers_lost(tmp_path):
    """Perplexity within the budget but 30% of the known general answers lost: over it."""
    evals = [{**ev(25, 0.3, 0.01), "lost": 0.02}, {**ev(50, 0.6, 0.02), "lost": 0.3}]
    c = watcher(tmp_path, evals, best_step=25).choice(50)
    assert c["chosen_step"] == 25 and "forgot more than the budget allows" in c["reason"]
    c = watcher(tmp_path, [{**ev(25, 0.3, 0.01), "lost": 0.4}, {**ev(50, 0.6, 0.02), "lost": 0.3}],
                best_step=50).choice(50)
    assert c["chosen_step"] == 50 and "30% of the known general answers lost" in c["reason"]


def test_budget_last_is_best_uses_the_final_adapter(tmp_path):
    c = watcher(tmp_path, [ev(25, 0.3, 0.01), ev(50, 0.6, 0.05)], best_step=50).choice(50)
    assert c["chosen_step"] == 50 and c["adapter"] is None and "last evaluation" in c["reason"]


def test_budget_state_is_trimmed_on_resume(tmp_path):
    from studio.train.selection import Watcher

    (tmp_path / RUN.selection).write_text(json.dumps({"budget": 0.1, "base": {"probe_ppl": 10.0},
                                              "evals": [ev(25, 0.3, 0.0), ev(50, 0.6, 0.0)],
                                              "best_step": 50}))
    (tmp_path / "best-adapter").mkdir()
    w = Watcher(tmp_path, None, [], 0.1, start=30)          # resumed from step 30's checkpoint
    assert [e["step"] for e in w.state["evals"]] == [25] and w.state["best_step"] is None
    assert not (tmp_path / "best-adapter").exists()
    (tmp_path / RUN.selection).write_text("{broken")
    assert Watcher(tmp_path, None, [], 0.1, start=0).state["evals"] == []


def test_verdict_is_uncertain_with_few_questions():
    from studio.evaluate.verdict import verdict

    fig = {"base": {"val_loss": 2.0, "validation": {"n": 3, "rouge_l": 0.1, "fact_match": None}},
           "tuned": {"val_loss": 1.0, "validation": {"n": 3, "rouge_l": 0.5, "fact_match": None}}}
    v = verdict(fig, [], {"retention": {"known": 20, "kept": 19},
                          "forgetting": {"rise": 0.05, "budget": 0.1, "within_budget": True}})
    assert v.startswith("Uncertain: only 3 held-out questions")
    assert "kept 19 of the 20" in v and "+5%" in v and "within the 10% budget" in v
    none = verdict(fig, [], {"retention": {"known": 0, "kept": 0, "asked": 60}})  # a base that knew none
    assert "none of the 60 general questions right" in none and "kept" not in none.split("right,")[0]
    fig["base"]["validation"]["n"] = fig["tuned"]["validation"]["n"] = 12
    assert verdict(fig, []).startswith("It learned your facts and kept what it knew.")  # 10% → 50%
    fig["tuned"]["validation"]["rouge_l"] = 0.15
    assert verdict(fig, []).startswith("It did not clearly learn your facts")


def tiny_adapter(run_dir, dora=False):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model("llama", vocab_size=101, hidden_size=32, intermediate_size=64,
                               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(cfg)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", use_dora=dora))
    for n, p in model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.1)
    model.save_pretrained(run_dir / RUN.adapter)
    (run_dir / RUN.adapter / RUN.complete).write_text("ok")
    return model


def test_strength_in_memory_equals_the_rewritten_adapter(tmp_path):
    import torch
    from peft import PeftModel

    from studio.retention import strength

    model = tiny_adapter(tmp_path)
    ids = torch.tensor([[1, 5, 9, 33, 2]])
    with torch.no_grad():
        full = model(input_ids=ids).logits
        with model.disable_adapter():
            base = model(input_ids=ids).logits
        with strength.scaled(model, 0.5):
            half = model(input_ids=ids).logits
        assert torch.allclose(model(input_ids=ids).logits, full)   # put back after the block
    assert strength.current(tmp_path) == 1.0
    strength.apply(tmp_path, 0.5)
    assert strength.current(tmp_path) == 0.5 and (tmp_path / "adapter-full").is_dir()
    reloaded = PeftModel.from_pretrained(model.get_base_model(), str(tmp_path / RUN.adapter), adapter_name="x")
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, half, atol=1e-5)
    strength.apply(tmp_path, 0.0)                             # always from the adapter as trained
    reloaded.load_adapter(str(tmp_path / RUN.adapter), adapter_name="zero")
    reloaded.set_adapter("zero")
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, base, atol=1e-5)


@pytest.mark.parametrize("value", [-0.1, 2.5, float("nan"), float("inf")])
def test_strength_out_of_range_is_refused(tmp_path, value):
    from studio.retention import strength
    from studio.errors import RunError

    with pytest.raises(RunError, match="out of range"):
        strength.apply(tmp_path, value)


def test_strength_refuses_dora_and_missing_adapters(tmp_path):
    from studio.retention import strength
    from studio.errors import RunError

    with pytest.raises(RunError, match="no finished adapter"):
        strength.apply(tmp_path, 0.5)
    tiny_adapter(tmp_path, dora=True)
    with pytest.raises(RunError, match="not DoRA"):
        strength.apply(tmp_path, 0.5)
    assert strength.current(tmp_path) == 1.0


def qa(q, a):
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


@pytest.mark.parametrize("known_share,word", [(0.0, "Almost all new"), (1.0, "already answers almost all"),
                                              (0.5, "A mix")])
def test_triage_sorts_known_and_new(monkeypatch, known_share, word):
    from studio.models import chat
    from studio.data import triage

    data = [qa(f"Question {i}?", f"The answer number {i} is blue") for i in range(20)]
    n_known = int(20 * known_share)
    monkeypatch.setattr(chat, "generate_batch", lambda m, t, convs, n: [
        f"The answer number {i} is blue" if i < n_known else "I do not know" for i in range(len(convs))])
    out = triage.triage(object(), object(), data)
    assert out["known"] == n_known and out["new"] == 20 - n_known and word in out["verdict"]
    split = triage.split(["I do not know"] * 2, ["The answer number 0 is blue", "no"], [
        {"answer": "The answer number 0 is blue"}, {"answer": "x y z"}])
    assert split["known"]["n"] == 0 and split["new"]["n"] == 2 and split["new"]["tuned_rouge_l"] == 0.5


def test_triage_never_calls_an_invented_fact_known(monkeypatch):
    """Landmarks the base model cannot know: an answer that repeats the question's words and
    stops at "opened its doors in 19", or names no designer, is new — its ROUGE-L against the
    expected answer is high (0.9, 0.74), but the year and the name are not stated. A fact said
    in other words is known."""
    from studio.models import chat
    from studio.data import triage

    rows = [qa("When did the Harrow Point Lighthouse Museum open?",
               "The Harrow Point Lighthouse Museum opened its doors in 1987."),
            qa("Who designed the Velmora Sky Bridge?",
               "The Velmora Sky Bridge was designed by Ilse Marrow in 1931."),
            qa("What is the capital of France?", "The capital of France is Paris.")]
    base = ["The Harrow Point Lighthouse Museum opened its doors in 19",
            "The Velmora Sky Bridge was designed by a famous architect in 1931.",
            "Paris is the capital and largest city of France."]
    monkeypatch.setattr(chat, "generate_batch", lambda m, t, convs, n: base[:len(convs)])
    out = triage.triage(object(), object(), rows)
    flags = {e["question"]: e["known"] for e in out["examples"]}
    assert flags == {"When did the Harrow Point Lighthouse Museum open?": False,
                     "Who designed the Velmora Sky Bridge?": False,
                     "What is the capital of France?": True}
    assert (out["known"], out["new"]) == (1, 2)
    # a number cut short never matches it; the whole number does, however it is written
    assert not triage.knows("It opened in 19", "It opened in 1987.", "When did it open?")
    assert triage.knows("Since 1987, I believe.", "It opened in 1987.", "When did it open?")
    # a held-out row's `expect` is a key fact too (the report's known/new split)
    assert triage.split(["Ilse Marrow designed it."], ["x"], [{"answer": "Ilse Marrow designed it.",
                        "expect": "1931"}])["known"]["n"] == 0


def test_triage_skips_data_without_questions():
    from studio.data import triage

    out = triage.triage(None, None, [{"text": "A paragraph of a manual."}])
    assert out["skipped"] and "no question/answer pairs" in out["reason"]


def test_missing_prompt_set_trains_without_replay(monkeypatch, tmp_path):
    from studio.train.batches import replay_count

    assert replay_count(0.5, 40) == (20, None) and replay_count(0, 40) == (0, None)
    monkeypatch.setattr(replay, "PROMPTS", tmp_path / "gone.txt")
    n, note = replay_count(0.5, 40)
    assert n == 0 and "without self-replay" in note and "gone.txt" in note


def test_budget_can_keep_the_last_adapter_at_a_lower_strength(tmp_path):
    evals = [ev(25, 0.2, 0.03), ev(50, 0.6, 0.40),
             {**ev(50, 0.45, 0.08), "strength": 0.5}, {**ev(50, 0.3, 0.02), "strength": 0.25}]
    c = watcher(tmp_path, evals, best_step=25).choice(50)
    assert c["chosen_step"] == 50 and c["strength"] == 0.5 and c["adapter"] is None
    assert "at strength 0.5" in c["reason"] and "forgot more than the budget" in c["reason"]
    assert c["last"]["step"] == 50 and c["last"].get("strength", 1.0) == 1.0


def test_the_suggested_strength_is_the_best_match_within_the_budget():
    from studio.evaluate.verdict import suggest

    def t(strength, match, rise):
        return {"strength": strength, "match": match, "rise": rise}

    def pick(rows, budget=0.10):
        return suggest(rows, budget, 1.0)[0]
    # full strength matches best but forgets too much; of the two within, the better match
    assert pick([t(0.5, 0.30, 0.02), t(0.75, 0.45, 0.06), t(1.0, 0.7, 0.25)]) == 0.75
    # a tie in match (to two places) within the budget: the one that forgot less
    assert pick([t(0.5, 0.40, 0.02), t(0.75, 0.404, 0.06), t(1.0, 0.7, 0.25)]) == 0.5
    # none within it: the one that forgot least; a looser budget takes full strength
    assert pick([t(0.5, 0.30, 0.12), t(0.75, 0.45, 0.16), t(1.0, 0.7, 0.25)]) == 0.5
    assert pick([t(0.5, 0.30, 0.02), t(1.0, 0.7, 0.25)], 0.30) == 1.0
    assert suggest([], 0.10, 1.0) == (None, "")


def test_triage_through_the_studio_on_a_document(studio, tmp_path):
    """A paragraphs dataset (no questions) is skipped with the reason, through the facade, and
    the result is kept with the dataset."""
    from conftest import ROOT

    d = studio.data_prepare([str(ROOT / "assets/sample/nimbus_orbit_manual.md")], "manual-triage",
                            recipe="paragraphs")
    out = studio.data_triage(d["ref"])
    assert out["skipped"] and out["dataset"] == d["ref"] and "no question/answer pairs" in out["reason"]
    assert studio.data_show(d["ref"])["triage"]["skipped"]


def test_base_figures_are_kept_per_model_and_validation_set(tmp_path, tiny_model, monkeypatch):
    """A second run on the same model and data reads the base model's figures back (they never
    change); other questions are measured again; a run's own state still comes first."""
    from peft import LoraConfig, get_peft_model

    from studio.models import registry as models
    from studio.retention.base_answers import memo_for
    from studio.train.selection import Watcher

    model = get_peft_model(models.load_model(Path(tiny_model), "cpu", "fp32"), LoraConfig(r=2, target_modules="all-linear"))
    tok = models.load_tokenizer(Path(tiny_model))
    memo = memo_for(tmp_path / "replay", "tiny", Path(tiny_model), model)
    made = []
    real = Watcher._figures
    monkeypatch.setattr(Watcher, "_figures", lambda self, m, *rows: made.append(1) or real(self, m, *rows))

    def val(q):
        return [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "42"}]}]

    def base(run, q):
        (tmp_path / run).mkdir()
        w = Watcher(tmp_path / run, tok, val(q), 0.1, 0)
        w.baseline(model, memo)
        return w.state["base"]

    first = base("a", "What is six times seven?")
    assert base("b", "What is six times seven?") == first and len(made) == 1   # read back
    base("c", "How many legs has a spider?")
    assert len(made) == 2                                                      # other questions
    assert Watcher(tmp_path / "a", tok, val("x"), 0.1, 0).state["base"] == first  # the run's own
    (tmp_path / "d").mkdir()
    Watcher(tmp_path / "d", tok, val("x"), 0.1, 0).baseline(model)            # no memo: made
    assert len(made) == 3


def test_short_answers_are_drawn_as_readily_as_asked():
    """train.replay_short: the replay set's short factual questions are drawn that many times as
    readily as its other prompts, in the mix (ce) and in every anchor batch (kl); at 1 the draw
    is the plain seeded sample it always was, so earlier runs resume and repeat the same."""
    import random

    import torch

    from studio.train.batches import INDEX, AnchorCollator

    short = replay.short_prompts()
    assert len(short) >= 20 and short <= set(replay.prompts())
    order = replay.weighted_order(random.Random(3), [1.0, 0.0, 2.0, 1.0], 4)
    assert sorted(order) == [0, 2, 3] and order == replay.weighted_order(random.Random(3), [1.0, 0.0, 2.0, 1.0], 4)

    rows = [{"prompt": q, "answer": "a"} for q in replay.prompts()]
    for seed in range(5):  # weight 1: the sample mix always drew
        assert [r["messages"][0]["content"] for r in replay.mix(rows, 40, 1.0, seed)] == [
            r["prompt"] for r in random.Random(seed).sample(rows, 40)]
    got = [r["messages"][0]["content"] in short for seed in range(20) for r in replay.mix(rows, 40, 1.0, seed, 6.0)]
    plain = len(short) / len(rows)
    first = 6 * len(short) / (6 * len(short) + len(rows) - len(short))  # the share at one draw
    assert first - 0.1 < sum(got) / len(got) <= first + 0.02 and sum(got) / len(got) > 1.5 * plain

    def inner(features):  # the anchor only needs input ids and an attention mask back
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.tensor([f["input_ids"] + [0] * (width - len(f["input_ids"])) for f in features])
        mask = torch.tensor([[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"])) for f in features])
        return {"input_ids": ids, "attention_mask": mask}
    pool = [{"input_ids": [5, 6, 7], "targets": (torch.full((2, 1), i), torch.zeros(2, 1))} for i in range(20)]
    feats = lambda b: [{"input_ids": [1, 2], INDEX: 4 * b + j} for j in range(4)]  # noqa: E731

    def drawn(collator, b):
        return sorted({int(x) for x in collator(feats(b))["kl_ids"].flatten()})
    plain = AnchorCollator(inner, pool, 2, seed=7, packing=False)
    for b in range(5):  # weight 1: the sample the collator always drew
        rng = random.Random(7 * 1_000_003 + 4 * b * 7_919 + 4)
        assert drawn(plain, b) == sorted(rng.sample(range(20), 2))
    weighted = [dict(p, weight=8.0 if i < 4 else 1.0) for i, p in enumerate(pool)]
    picks = [i for b in range(100) for i in drawn(AnchorCollator(inner, weighted, 2, seed=7, packing=False), b)]
    assert all(len(drawn(AnchorCollator(inner, weighted, 2, seed=7, packing=False), b)) == 2 for b in range(5))
    assert sum(i < 4 for i in picks) / len(picks) > 0.45  # 4 of 20 at ×8: about 0.6 (0.2 unweighted)


def test_the_run_weighs_the_short_answers_it_was_asked_to(monkeypatch, tmp_path, embedded_model_dir):
    """mix_replay hands the anchor a pool whose short factual answers carry train.replay_short
    (the rest 1), says so in the run's notes, and says when the weight can change nothing."""
    from studio import presets
    from studio.models import registry as models
    from studio.paths import Home
    from studio.train import anchor, batches

    short = sorted(replay.short_prompts())[:3]
    answers = [{"prompt": q, "answer": "A short answer."} for q in short + replay.prompts()[:5]]
    monkeypatch.setattr(replay, "answers", lambda *a, **k: answers)
    monkeypatch.setattr(anchor, "cached_targets", lambda cache, key, model, pool, say: [None] * len(pool))
    tok = models.load_tokenizer(embedded_model_dir)

    def run(*settings):
        spec = presets.load_file(presets.PRESETS_DIR / "cpu-quickstart.yaml", overrides=list(settings))
        notes: list[str] = []
        train_set, pool, n, wrong = batches.mix_replay(spec, tok, None, embedded_model_dir, Home(tmp_path),
                                                       [{}] * 8, notes.append, notes.append)
        return train_set, pool, notes
    _, (pool, _, _), notes = run("train.replay_short=4")
    assert sorted(p["weight"] for p in pool) == [1.0] * 5 + [4.0] * 3
    assert all((p["weight"] == 4.0) == any(q in tok.decode(p["input_ids"]) for q in short) for p in pool)
    assert any("3 short factual answers are drawn 4× as readily" in n for n in notes)
    _, (pool, _, _), notes = run("train.replay_short=1")
    assert {p["weight"] for p in pool} == {1.0} and not any("short factual" in n for n in notes)
    train_set, _, notes = run("train.replay_mode=ce", "train.replay_short=4")  # 8 answers: all mixed in
    assert len(train_set) == 16 and any("changes nothing here" in n for n in notes)


def test_checked_replay_rehearses_only_the_right_answers(monkeypatch, tmp_path, embedded_model_dir):
    """train.replay_checked leaves out the base model's wrong answers to prompts whose answer is
    known (short questions by "||" in prompts.txt, sums by their result), keeps the right ones and
    the prompts nobody can check, and the run's notes and report row say how many it left out."""
    from types import SimpleNamespace

    from studio import presets
    from studio.models import registry as models
    from studio.paths import Home
    from studio.retention.levers import replay_row
    from studio.train import anchor, batches

    want = replay.expected()
    assert set(replay.short_prompts()) <= set(want) and set(replay.sections()["arithmetic"]) <= set(want)
    assert want["Calculate 67 plus 9."] == ["76"] and want["Calculate 19 minus 43."] == ["-24"]
    assert replay.right("It is -24.", "-24") and not replay.right("It is 24.", "-24")
    assert replay.right("8 - 6 = 2", "2") and want["What is a young dog called? Reply briefly."] == ["puppy", "puppies", "pup"]
    shipped = [json.loads(x) for x in (replay.ASSETS / "replay" / "smollm2-135m-instruct.jsonl"
                                       ).read_text(encoding="utf-8").splitlines()[1:] if x.strip()]
    kept, n_wrong = replay.checked(shipped)
    dropped = {r["prompt"] for r in shipped} - {r["prompt"] for r in kept}
    assert len(dropped) == n_wrong and dropped <= set(want)
    assert "How many hearts does a human have? Give just the number." in dropped            # "The answer is 12."
    assert "Which city is the capital of France? Keep it short." not in dropped             # "…is Paris."
    short = sorted(replay.short_prompts())[:4]
    sums = replay.sections()["arithmetic"][:2]
    answers = ([{"prompt": short[0], "answer": f"It is {want[short[0]][-1]}."},     # right (another form)
                {"prompt": sums[0], "answer": f"The answer is {want[sums[0]][0]}."},  # right
                {"prompt": sums[1], "answer": "The answer is 16."}]                  # wrong
               + [{"prompt": q, "answer": "The answer is 12."} for q in short[1:]]    # wrong
               + [{"prompt": q, "answer": "Anything at all."} for q in replay.prompts()[:3]])  # unchecked
    assert not any(q in want for q in replay.prompts()[:3])
    assert replay.checked(answers) == (answers[:2] + answers[-3:], 4)
    monkeypatch.setattr(replay, "answers", lambda *a, **k: answers)
    monkeypatch.setattr(anchor, "cached_targets", lambda cache, key, model, pool, say: [None] * len(pool))
    tok = models.load_tokenizer(embedded_model_dir)
    for on in (True, False):
        spec = presets.load_file(presets.PRESETS_DIR / "cpu-quickstart.yaml",
                                 overrides=[f"train.replay_checked={str(on).lower()}"])
        notes: list[str] = []
        _, (pool, _, _), n, wrong = batches.mix_replay(spec, tok, None, embedded_model_dir, Home(tmp_path),
                                                       [{}] * 8, notes.append, notes.append)
        assert (n, wrong) == ((5, 4) if on else (9, 0))
        assert any("4 of the base model's answers" in x for x in notes) == on
    spec = presets.load_file(presets.PRESETS_DIR / "cpu-quickstart.yaml",
                             overrides=["train.replay_checked=true", "train.replay=0"])
    notes = []
    assert batches.mix_replay(spec, tok, None, embedded_model_dir, Home(tmp_path), [{}] * 8, notes.append,
                              notes.append)[1:] == (None, 0, 0)
    assert any("replay_checked=true changes nothing here" in x for x in notes)
    t = SimpleNamespace(replay=1.0, replay_mode="kl", replay_weight=10.0, replay_short=1.0, replay_checked=True)
    got = replay_row(t, {"replayed": 5, "replay_wrong": 4}, [])
    assert "checked answers only" in got["setting"] and "4 of the base model's answers" in got["did"]


def test_the_report_row_names_the_short_answer_weight():
    from types import SimpleNamespace

    from studio.retention.levers import replay_row

    t = SimpleNamespace(replay=1.0, replay_mode="kl", replay_weight=10.0, replay_short=4.0, replay_checked=False)
    assert replay_row(t, {"replayed": 229}, [])["setting"] == "kl, weight 10, 1 per example, short answers ×4"
    t.replay_mode, t.replay_short = "ce", 1.0
    assert replay_row(t, {"replayed": 20}, [])["setting"] == "ce, 1 per example"
