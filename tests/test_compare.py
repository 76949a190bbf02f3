"""Compare step: base vs tuned on one weight copy, the report, and the bad inputs."""
import json

import pytest

from conftest import run_cli
from studio.errors import ConfigError, ExportError, RunError

pytestmark = pytest.mark.slow


def test_side_by_side_differs_and_base_is_base(studio, trained_run, base_model):
    out = studio.compare(trained_run["id"], "How much does the Nimbus Orbit cost?", max_new_tokens=24)
    assert out["base"] != out["tuned"] and not out["identical"]
    # The base side is the real base model: same answer as the plain model with no adapter.
    from studio.chat import GenSettings, generate

    model, tok = base_model  # a separate, untouched copy of the base model
    plain = generate(model, tok, [{"role": "user", "content": "How much does the Nimbus Orbit cost?"}],
                     GenSettings(max_new_tokens=24))
    assert plain["text"] == out["base"]


def test_one_copy_of_the_weights(studio, trained_run):
    _, pair = studio.pair_for(trained_run["id"])
    with pair.side("base") as b, pair.side("tuned") as t:
        assert b is t  # the adapter is toggled, the model is the same object
    assert pair.model.get_base_model() is pair.base  # PEFT wrapped the cached base, no copy
    base_params = {id(p) for n, p in pair.model.named_parameters() if "lora_" not in n}
    assert len(base_params) == len([n for n, _ in pair.model.named_parameters() if "lora_" not in n])


def test_sampling_is_seeded(studio, trained_run):
    a = studio.compare(trained_run["id"], "Tell me about birds.", temperature=0.9, seed=7, max_new_tokens=16)
    b = studio.compare(trained_run["id"], "Tell me about birds.", temperature=0.9, seed=7, max_new_tokens=16)
    assert a["base"] == b["base"] and a["tuned"] == b["tuned"]


def test_long_prompt_is_cut_from_the_left(studio, trained_run, monkeypatch):
    """A conversation longer than the model's context loses its start, with a notice. The
    context is made 1,024 tokens here so the check does not spend half a minute on 8k tokens."""
    from studio import chat

    monkeypatch.setattr(chat, "context_of", lambda model: 1024)
    out = studio.compare(trained_run["id"], "word " * 1500 + "What is the price?", max_new_tokens=4)
    assert out["prompt_truncated"] and "cut" in out["notice"]


def test_report(studio, trained_run, trained_report):
    r = trained_report
    assert r["base"]["val_loss"] > r["tuned"]["val_loss"]
    assert {"validation", "paraphrased"} <= set(r["tuned"])
    assert r["answers_compared"] == 8 + 24
    assert isinstance(r["flags"], list) and r["verdict"]
    assert studio.store.get_report(trained_run["id"])["verdict"] == r["verdict"]
    cli = run_cli("report", "--run", trained_run["id"], "--json", home=studio.home.root)
    data = json.loads(cli.stdout)
    assert data["base"]["val_loss"] == r["base"]["val_loss"]
    # #14's contract: what it learned and what it kept, in the JSON
    assert data["chosen_step"] in (6, 12)
    assert data["strength"] == (data["selection"]["chosen"].get("strength") or 1.0)
    assert data["retention"]["known"] > 0 and 0 <= data["retention"]["share"] <= 1
    assert data["forgetting"]["budget"] == 0.10 and data["forgetting"]["rise"] is not None
    assert {0.5, 0.75, 1.0} <= {t["strength"] for t in data["trade_off"]}
    assert data["suggested_strength"] in (0.5, 0.75, 1.0)
    assert set(data["known_new"]) == {"validation", "paraphrased"}
    assert not data["verdict"].startswith("Uncertain")  # 8 validation + 24 paraphrased questions
    assert "kept" in data["verdict"] and "budget" in data["verdict"]
    # #29: a row per lever, on or off, in plain words; the adapter's intruder dimensions counted
    levers = {x["lever"]: x for x in data["levers"]}
    assert set(levers) == {"replay", "self-distilled targets", "paraphrases", "targeted strength",
                           "where the update goes", "forgetting budget", "adapter strength", "safety replay"}
    assert levers["replay"]["on"] and not levers["paraphrases"]["on"]
    # the embedded model refuses none of the harmful requests: safety replay had nothing to keep
    assert not levers["safety replay"]["on"] and "refused none" in levers["safety replay"]["did"]
    assert "intruder dimensions" in levers["targeted strength"]["did"]


def test_strength_is_kept_and_used(studio, trained_run, trained_report):
    """The strength verb rewrites the adapter; compare tries one in memory; bad values refused."""
    rid = trained_run["id"]
    before = studio.run_strength(rid)
    try:
        out = run_cli("strength", "--run", rid, "--value", "0.5", "--json", home=studio.home.root)
        assert out.returncode == 0, out.stderr[-800:]
        assert json.loads(out.stdout)["strength"] == 0.5 and studio.run_strength(rid) == 0.5
        zero = studio.compare(rid, "Who makes the Nimbus Orbit?", max_new_tokens=12, strength=0.0)
        assert zero["tuned"] == zero["base"]                    # strength 0 is the base model
        bad = run_cli("strength", "--run", rid, "--value", "nan", "--json", home=studio.home.root)
        assert bad.returncode != 0 and "out of range" in bad.stdout + bad.stderr
        assert "Traceback" not in bad.stderr
    finally:
        studio.set_strength(rid, before)
    assert studio.run_strength(rid) == before
    # the adapter is as it was, so the shared report still holds: put it back for the next tests
    studio.store.put_report(rid, trained_report)


def test_flags():
    from studio.report import diagnose, score
    from studio.scoring import rouge_l

    fig = {"base": {"val_loss": 2.0, "probe_ppl": 10.0}, "tuned": {"val_loss": 1.5, "probe_ppl": 14.0}}
    flags = {f["flag"]: f["text"] for f in diagnose(fig, 10, 10, 0.0, {"train": {"lr": 1e-5}},
                                                    [{"step": 5, "loss": 0.1}])}
    assert "no change" in flags and "never trained" in flags["no change"] and "low" in flags["no change"]
    assert "memorised" in flags and "forgetting" in flags
    assert rouge_l("the price is 189 euros", "It costs 189 euros") > 0.3
    assert score(["It costs 189 euros."], [{"answer": "189 euros", "expect": "189"}])["fact_match"] == 1.0


def test_bad_inputs(studio, trained_run, faq_dataset):
    with pytest.raises(ConfigError, match="empty"):
        studio.compare(trained_run["id"], "  ")
    with pytest.raises(RunError, match="trained on 'smollm2-135m-instruct'"):
        studio.compare(trained_run["id"], "hi", model="other-model")
    queued = studio.train_create("cpu-quickstart", faq_dataset, max_steps=1)
    with pytest.raises(RunError, match="no adapter yet"):
        studio.compare(queued["id"], "hi")
    with pytest.raises(ExportError, match="export"):
        studio.compare(trained_run["id"], "hi", engine="llama.cpp")
    r = run_cli("compare", "--run", "missing-run", "--prompt", "hi", home=studio.home.root)
    assert r.returncode == 1 and "No run" in r.stderr


def test_deleted_run_folder(studio, faq_dataset):
    import shutil

    run = studio.train_create("cpu-quickstart", faq_dataset, max_steps=1)
    shutil.rmtree(studio.home.runs / run["id"])
    with pytest.raises(RunError, match="deleted"):
        studio.compare(run["id"], "hi")


def test_cli_compare_json(studio, trained_run):
    r = run_cli("compare", "--run", trained_run["id"], "--prompt", "Who makes the Nimbus Orbit?",
                "--max-new-tokens", "16", "--json", home=studio.home.root)
    assert r.returncode == 0, r.stderr[-1500:]
    out = json.loads(r.stdout)
    assert isinstance(out["base"], str) and isinstance(out["tuned"], str)
