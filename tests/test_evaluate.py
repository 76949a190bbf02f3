"""Before/after benchmarks (issue #27): lm-evaluation-harness on the base and the tuned model
through the CLI, equal to the harness run directly, stored and reused; the studio's own local
task; the bad inputs, each a clear message."""
import json
from pathlib import Path

import pytest

from conftest import ROOT, run_cli

LOCAL = ROOT / "assets" / "eval" / "studio_general"


def test_the_local_task_is_there_and_named():
    from studio.evaluate.harness import task_names_in

    assert task_names_in(LOCAL) == ["studio_general"]
    rows = [json.loads(x) for x in (LOCAL / "questions.jsonl").read_text().splitlines()]
    assert len(rows) >= 190 and all(len(r["choices"]) == 4 and 0 <= r["answer"] < 4 for r in rows)


def test_plain_words_say_when_a_change_is_noise():
    from studio.evaluate.harness import metrics_of, plain

    assert metrics_of({"acc,none": 0.5, "acc_stderr,none": 0.03, "alias": "x", "acc_norm,none": "N/A"}) == {
        "acc": 0.5, "acc_stderr": 0.03, "acc_norm": None}
    same = plain("hellaswag", {"acc": 0.412, "acc_stderr": 0.01}, {"acc": 0.408, "acc_stderr": 0.01})
    assert same == "hellaswag acc 41.2% → 40.8%: no real change (within the measurement's noise)."
    worse = plain("t", {"acc": 0.6, "acc_stderr": 0.01}, {"acc": 0.4, "acc_stderr": 0.01})
    assert worse == "t acc 60.0% → 40.0%: worse by 20.0%."


def test_bad_requests_are_clear_messages(studio, tmp_path, faq_dataset):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "task.yaml").write_text("task: [unclosed\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    queued = studio.train_create("cpu-quickstart", faq_dataset, max_steps=1)
    cases = [(["--model", "smollm2-135m-instruct", "--tasks", "hellaswg"], "Did you mean: hellaswag"),
             (["--model", "smollm2-135m-instruct", "--tasks", str(broken)], "not a readable task file"),
             (["--model", "smollm2-135m-instruct", "--tasks", str(empty)], "holds no task"),
             (["--model", "smollm2-135m-instruct", "--tasks", str(tmp_path / "nope" / "t.yaml")], "does not exist"),
             (["--model", "smollm2-135m-instruct", "--limit", "0"], "positive number"),
             (["--run", queued["id"]], "no adapter yet"),
             (["--run", "x", "--model", "y"], "a run (--run ID"),
             (["--model", "smollm2-135m-instruct", "--gguf"], "give --run ID")]
    for argv, words in cases:
        r = run_cli("eval", *argv, home=studio.home.root)
        assert r.returncode == 1 and words in r.stderr, (argv, r.stderr[-800:])
        assert "Traceback" not in r.stderr


@pytest.mark.e2e
def test_a_hub_task_offline_says_which_and_how(studio):
    from studio.evaluate import harness as evaluate

    if evaluate.hub_reachable():
        pytest.skip("this machine reaches the hub: the offline message cannot be shown")
    r = run_cli("eval", "--model", "smollm2-135m-instruct", "--tasks", "arc_easy", "--limit", "2",
                home=studio.home.root, timeout=120)
    assert r.returncode == 1 and "Task arc_easy needs its data from the Hugging Face hub" in r.stderr


@pytest.mark.e2e
def test_eval_of_a_run_equals_the_harness_and_is_stored(studio, trained_run, embedded_model_dir):
    r = run_cli("eval", "--run", trained_run["id"], "--tasks", f"studio_general,{LOCAL}", "--limit", "30",
                "--json", home=studio.home.root)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    got = out["tasks"]["studio_general"]
    assert set(got) == {"base", "tuned"} and {"acc", "acc_stderr", "acc_norm"} <= set(got["tuned"])
    assert out["summary"][0].startswith("studio_general acc_norm")
    # the harness itself, on the same model, adapter and task
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    adapter = Path(studio.run_show(trained_run["id"])["artifacts"]["adapter"])
    direct = simple_evaluate(model="hf", model_args=f"pretrained={embedded_model_dir},peft={adapter}",
                             tasks=["studio_general"], limit=30, task_manager=TaskManager(include_path=str(LOCAL)),
                             bootstrap_iters=1000, log_samples=False, batch_size=16, device="cpu")
    want = direct["results"]["studio_general"]
    assert got["tuned"]["acc"] == pytest.approx(want["acc,none"], abs=1e-9)
    assert got["tuned"]["acc_norm"] == pytest.approx(want["acc_norm,none"], abs=1e-9)
    again = studio.evaluate(["studio_general", str(LOCAL)], trained_run["id"], limit=30)
    assert again["reused"] and again["tasks"] == out["tasks"]
    assert studio.evaluations(trained_run["id"])[0]["tasks"] == ["studio_general"]
    # listed in History and by `evals list`; deleted there, and gone
    row = next(r for r in studio.inventory() if r["kind"] == "evaluation")
    assert row["detail"].startswith(f"studio_general on {trained_run['id']}; studio_general acc_norm")
    listed = run_cli("evals", "list", "--run", trained_run["id"], "--json", home=studio.home.root)
    assert [e["id"] for e in json.loads(listed.stdout)] == [int(row["id"])]
    from studio.ui import history

    said, _ = history.delete(studio, "evaluation", row["id"])
    assert said.startswith(f"Deleted evaluation {row['id']}") and not studio.evaluations(trained_run["id"])
    gone = run_cli("evals", "delete", row["id"], home=studio.home.root)
    assert gone.returncode == 1 and f"No evaluation with id {row['id']}" in gone.stderr
