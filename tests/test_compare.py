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
    from studio.models.chat import GenSettings, generate

    model, tok = base_model  # a separate, untouched copy of the base model
    plain = generate(model, tok, [{"role": "user", "content": "How much does the Nimbus Orbit cost?"}],
                     GenSettings(max_new_tokens=24))
    assert plain["text"] == out["base"]


def test_one_copy_of_the_weights(studio, trained_run):
    _, pair = studio.pair_for(trained_run["id"])
    with pair.side("base") as b, pair.side("tuned") as t:
        assert b is t  # the adapter is toggled, the model is the same object
    assert pair.model.get_base_model() is pair.base  # PEFT wrapped the cached base, no copy
    # one copy of every base weight: the distinct base tensors (the tied embedding counted once,
    # by identity) add up to the base model's size — a copied layer or an lm_head untied from the
    # embeddings would add to it
    base = {id(p): p.numel() for n, p in pair.model.named_parameters(remove_duplicate=False) if "lora_" not in n}
    assert sum(base.values()) == studio.model_info(trained_run["model"])["params"] == 134_515_008


def test_sampling_is_seeded(studio, trained_run):
    a = studio.compare(trained_run["id"], "Tell me about birds.", temperature=0.9, seed=7, max_new_tokens=16)
    b = studio.compare(trained_run["id"], "Tell me about birds.", temperature=0.9, seed=7, max_new_tokens=16)
    assert a["base"] == b["base"] and a["tuned"] == b["tuned"]


def test_long_prompt_is_cut_from_the_left(studio, trained_run, monkeypatch):
    """A conversation longer than the model's context loses its start, with a notice. The
    context is made 1,024 tokens here so the check does not spend half a minute on 8k tokens."""
    from studio.models import chat

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
    # #14's contract: what it learned and what it kept, in the JSON (each figure: the tests below)
    assert {"chosen_step", "strength", "retention", "forgetting", "trade_off", "suggested_strength"} <= set(data)
    assert set(data["known_new"]) == {"validation", "paraphrased"}
    assert not data["verdict"].startswith("Uncertain")  # 8 validation + 24 paraphrased questions
    assert "kept" in data["verdict"] and "budget" in data["verdict"]
    # #29: a row per lever, on or off, in plain words; the adapter's intruder dimensions counted
    levers = {x["lever"]: x for x in data["levers"]}
    assert set(levers) == {"replay", "self-distilled targets", "paraphrases", "key-fact weight",
                           "targeted strength", "where the update goes", "forgetting budget",
                           "adapter strength", "safety replay"}
    assert levers["replay"]["on"] and not levers["paraphrases"]["on"] and not levers["key-fact weight"]["on"]
    # the embedded model refuses none of the harmful requests: safety replay had nothing to keep
    assert not levers["safety replay"]["on"] and "refused none" in levers["safety replay"]["did"]
    assert "intruder dimensions" in levers["targeted strength"]["did"]
    # #42: the rewards RL would use and the drift on the held-out questions, for this SFT run too
    assert data["reward"]["rl"] is False and data["reward"]["on"] == "paraphrased" and data["reward"]["n"] == 24
    assert data["reward"]["before"] != data["reward"]["after"] and "valid_json" not in data["reward"]
    assert data["reward"]["rewards"] == ["facts", "f1", "made_up", "length", "repetition"]  # the FAQ's prose answers
    assert data["drift"]["on"] == "paraphrased" and data["drift"]["answers"] == 24 and data["drift"]["kl"] > 0


def test_report_keeps_the_budgets_choice(trained_report):
    """The run's own evaluations decide: within the forgetting budget, the one whose held-out
    answers matched best — on a tie, the one that lost fewer everyday answers, then the higher
    strength, then the lower validation loss."""
    r = trained_report
    budget, lost_budget = r["forgetting"]["budget"], r["forgetting"]["retention_budget"]
    inside = [e for e in r["selection"]["evaluations"]
              if e["forgetting"] <= budget and (e.get("lost") or 0) <= lost_budget]
    chosen = max(inside, key=lambda e: (e["answer_match"], -(e.get("lost") or 0), e.get("strength", 1.0),
                                        -(e["eval_loss"] or 0.0)))
    assert r["chosen_step"] == chosen["step"] and r["strength"] == chosen.get("strength", 1.0)


def test_report_suggests_the_best_strength_within_the_budget(trained_report):
    """From the report's own trade-off rows: the best held-out match among the strengths whose
    forgetting stays within the budget (ties: the one that forgot less)."""
    r = trained_report
    rows = {t["strength"]: t for t in r["trade_off"]}
    assert set(rows) == {0.5, 0.75, 1.0}
    f = r["forgetting"]
    inside = [t for t in rows.values() if t["rise"] <= f["budget"] and 1 - t["kept"] <= f["retention_budget"]]
    best = max(round(t["match"], 2) for t in inside)
    if len({round(t["match"], 2) for t in rows.values()}) == 1 and rows[r["strength"]] in inside:
        want = rows[r["strength"]]  # every strength the same: the one the run has
    else:
        want = min((t for t in inside if round(t["match"], 2) == best),
                   key=lambda t: max(t["rise"], 0) + 1 - t["kept"])
    assert r["suggested_strength"] == want["strength"] and r["suggested_why"]


def test_report_counts_what_it_kept(trained_report, embedded_model_dir):
    """Of the everyday questions the base model answers right — its answers are shipped with the
    studio, so which it knows is counted here — the share the tuned model still answers."""
    from pathlib import Path

    from studio.retention import replay
    from studio.retention.base_answers import ASSETS

    kept = trained_report["retention"]
    key = f"{replay.model_key(Path(embedded_model_dir))}-cpu-float32"
    base = json.loads((ASSETS / f"smollm2-135m-instruct-{key}-retention.json").read_text())["answers"]
    rows = replay.retention_rows()
    assert kept["asked"] == len(rows) == len(base)
    assert kept["known"] == sum(replay.knows(base, rows)) > 0
    assert kept["share"] == round(kept["kept"] / kept["known"], 4)
    assert len(kept["lost"]) == kept["known"] - kept["kept"]             # every one, for the record
    assert all(not replay.right(x["tuned"], x["expected"]) and replay.right(x["base"], x["expected"])
               for x in kept["lost"])


def test_report_measures_how_much_it_forgot(trained_report):
    """The general-text perplexity's rise, from the report's own two perplexities."""
    r = trained_report
    f = r["forgetting"]
    assert f["budget"] == 0.10 and (f["probe_ppl_base"], f["probe_ppl_tuned"]) == (
        r["base"]["probe_ppl"], r["tuned"]["probe_ppl"])
    assert f["rise"] == round(r["tuned"]["probe_ppl"] / r["base"]["probe_ppl"] - 1, 4)


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
    from studio.evaluate.verdict import diagnose
    from studio.scoring import rouge_l, score
    from studio.spec import stored

    fig = {"base": {"val_loss": 2.0, "probe_ppl": 10.0}, "tuned": {"val_loss": 1.5, "probe_ppl": 14.0}}
    flags = {f["flag"]: f["text"] for f in diagnose(fig, 10, 10, 0.0, stored({"train": {"lr": 1e-5}}),
                                                    [{"step": 5, "loss": 0.1}])}
    assert "no change" in flags and "never trained" in flags["no change"] and "low" in flags["no change"]
    assert "memorised" in flags and "forgetting" in flags
    for objective in ("dpo", "grpo"):  # their logged loss is no cross-entropy: nothing to compare
        rl = diagnose(fig, 0, 10, 1.0, stored({"train": {"objective": objective}}), [{"step": 5, "loss": 0.01}])
        assert "memorised" not in {f["flag"] for f in rl}
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


def test_the_compare_step_lists_three_lost_answers_and_counts_the_rest():
    """The report keeps every lost everyday answer; Compare shows three and says how many more."""
    from studio.ui.compare_step import kept_md

    lost = [{"question": f"Q{i}?", "expected": "x", "tuned": "y\n\n y"} for i in range(5)]  # one line each
    text = "\n".join(kept_md({"retention": {"known": 41, "kept": 36, "asked": 60, "lost": lost}}))
    assert "kept 36 of the 41 general questions" in text
    assert [ln for ln in text.splitlines() if ln.startswith("- lost:")] == [
        f"- lost: Q{i}? — expected “x”, now: y y" for i in range(3)]
    assert text.endswith("- … and 2 more")
    assert "more" not in "\n".join(kept_md({"retention": {"known": 41, "kept": 38, "asked": 60,
                                                          "lost": lost[:3]}}))
    older = kept_md({"retention": {"known": 41, "kept": 31, "asked": 60, "lost": lost + lost[:1]}})
    assert older[-1] == "- … and 7 more"                    # a report from before listed 6 at most
    short = kept_md({"retention": {"known": 41, "kept": 37, "asked": 60, "lost": lost[:2]}})
    assert short[-1] == "- … and 2 more"                    # a list shorter than three: the rest counted
