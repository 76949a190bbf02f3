"""Reinforcement learning (issue #42): rewards derived from the user's data, chosen per dataset,
a user's own reward file, refusal of data with no reward, the preview's JSON contract, and grpo/
rloo runs through TRL on the two-layer model (reward events, an adapter, resume after kill -9)."""
import json

import pytest

from conftest import ROOT, crash, run_cli

ARITH = ROOT / "assets" / "sample" / "arithmetic_qa.jsonl"
FACT = {"question": "Who makes the Nimbus Orbit?", "answer": "The Nimbus Orbit is made by Fernwick Labs "
        "in Tallinn.", "recipe": ""}


def rows_of(pairs, recipe=""):
    from studio.train.rewards import reward_rows

    return reward_rows([{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                         "meta": {"recipe": recipe}} for q, a in pairs])


# ---- each reward on crafted completions -------------------------------------------------------
def test_answer_rewards_tell_right_partial_and_made_up_apart():
    from studio.train.rewards import REWARDS as R

    right, partial = "Fernwick Labs in Tallinn makes it.", "Fernwick Labs makes it."
    made_up = "It is made by Acme Corp in Berlin since 1999."
    assert R["facts"].fn(right, FACT, {}) == 1.0 and R["facts"].fn(partial, FACT, {}) == 0.5
    assert R["facts"].fn(made_up, FACT, {}) == 0.0
    assert R["made_up"].fn(right, FACT, {}) == 1.0 and R["made_up"].fn(made_up, FACT, {}) == 0.0
    assert R["made_up"].fn("Fernwick Labs, founded by Ada Mole.", FACT, {}) == 0.5
    assert 0 < R["f1"].fn(partial, FACT, {}) < R["f1"].fn(FACT["answer"], FACT, {}) == 1.0
    assert R["f1"].fn("bananas", FACT, {}) == 0.0
    short = {"question": "What is 5 plus 6?", "answer": "11"}
    assert R["exact"].fn("11", short, {}) == 1.0 and R["exact"].fn("The answer is 11.", short, {}) == 1.0
    assert R["exact"].fn("111", short, {}) == 0.0 and R["exact"].fn("12", short, {}) == 0.0
    assert R["exact"].fn("anything", FACT, {}) is None  # a long reference: not a short answer
    assert R["length"].fn("11", short, {}) == 1.0 and R["length"].fn("word " * 80, short, {}) == 0.0
    assert R["length"].fn("", short, {}) == 0.0
    assert R["repetition"].fn("a b c " * 10, short, {}) < 0.2 < R["repetition"].fn(made_up, short, {}) == 1.0


@pytest.mark.parametrize("sample", ["contacts_json", "arithmetic_qa"])
def test_every_shipped_rl_samples_reference_earns_the_full_reward_and_a_wrong_one_does_not(sample):
    """The rewards chosen for a shipped RL sample can be earned: each reference answer scores 1
    against its own row, held-out rows too; another row's answer scores less."""
    from studio.train import rewards as rw

    def read(name):
        return [(r["question"], r["answer"]) for r in map(json.loads, (ROOT / "assets" / "sample" / name).read_text().splitlines())]
    train, held = rows_of(read(f"{sample}.jsonl")), rows_of(read(f"{sample}_heldout.jsonl"))
    chosen = rw.choose(train)
    if sample == "contacts_json":
        assert [r.name for r in chosen] == ["json", "json_values", "length", "repetition"]
    for rows in (train, held):
        ctx = rw.context(chosen, rows)
        assert all(rw.combine(chosen, r["answer"], r, ctx) == 1.0 for r in rows)
        assert all(rw.combine(chosen, rows[i - 1]["answer"], r, ctx) < 1.0 for i, r in enumerate(rows)
                   if rows[i - 1]["answer"] != r["answer"])


def test_json_and_code_rewards():
    from studio.train import rewards as rw

    rows = rows_of([("Item 1?", '{"name": "Orbit", "price": 189}'), ("Item 2?", '{"name": "Dome", "price": 99}')])
    ctx = rw.context([rw.REWARDS["json"]], rows)
    assert ctx["schema"] == {"name": "str", "price": "int"}
    js = rw.REWARDS["json"].fn
    assert js('{"name": "X", "price": 5}', rows[0], ctx) == 1.0
    assert js('```json\n{"name": "X", "price": 5}\n```', rows[0], ctx) == 1.0
    assert js('{"name": "X", "price": "cheap"}', rows[0], ctx) == pytest.approx(0.55)
    assert js('{"name": "X", price: 5', rows[0], ctx) == 0.0  # invalid JSON
    assert js("[1, 2]", rows[0], ctx) == 0.0
    assert js('{"name": "X", "price": 5}', {"question": "Harmful?", "answer": "", "recipe": ""}, ctx) is None
    vals = rw.REWARDS["json_values"].fn  # the right fields, filled right
    assert vals('{"name": " orbit", "price": 189.0, "extra": 1}', rows[0], {}) == 1.0
    assert vals('{"name": "Orbit", "price": "189"}', rows[0], {}) == 0.5 and vals("Orbit, 189", rows[0], {}) == 0.0
    assert vals('{"name": "Orbit"}', {"question": "Q?", "answer": "Orbit"}, {}) is None
    nested = {"question": "Q?", "answer": '{"who": {"name": "Ana Ruiz"}, "tags": ["a", "B"]}'}
    assert vals('{"who": {"name": "ana ruiz"}, "tags": ["A", "b"]}', nested, {}) == 1.0
    assert vals('{"who": {"name": "Ana"}, "tags": ["a"]}', nested, {}) == 0.0
    assert vals('{"who": {"name": "Ana Ruiz", "age": 3}, "tags": ["a", "b"]}', nested, {}) == 1.0  # extra keys
    code = rows_of([("Write a Python function `f`: adds.", "```python\ndef f(a, b):\n    return a + b\n```")],
                   recipe="code-functions")[0]
    comp = rw.REWARDS["compiles"].fn
    assert comp("```python\ndef f(a, b):\n    return a + b\n```", code, {}) == 1.0
    assert comp("```python\ndef f(a, b)\n    return a +\n```", code, {}) == 0.0  # does not compile
    assert comp("It adds two numbers.", code, {}) == 0.0
    assert comp("def f(): pass", FACT, {}) is None


REF = '''```python
def area(w, h):
    """Area of a w × h rectangle.

    >>> area(2, 3)
    6
    >>> area(0, 5)
    0
    >>> [area(n, n) for n in range(3)]
    [0, 1, 4]
    """
    return w * h
```'''


def test_doctests_run_the_answer_apart_with_a_time_limit_and_no_network():
    from studio.train import rewards as rw, sandbox

    row = rows_of([("Write a Python function `area`: area of a rectangle.", REF)], recipe="code-functions")[0]
    doc = rw.REWARDS["doctests"].fn
    import doctest

    found = [[ex.source, ex.want] for d in sandbox.docstrings(rw.unfence(REF))
             for ex in doctest.DocTestParser().get_examples(d)]
    assert found == [["area(2, 3)\n", "6\n"], ["area(0, 5)\n", "0\n"],
                                                 ["[area(n, n) for n in range(3)]\n", "[0, 1, 4]\n"]]
    assert doc("```python\ndef area(w, h):\n    return h * w\n```", row, {}) == 1.0
    assert doc("def area(w, h):\n    return w + h if w else 0", row, {}) == pytest.approx(1 / 3)  # 1 of 3
    assert doc("def surface(w, h):\n    return w * h", row, {}) == 0.0            # wrong name: NameError
    assert doc("raise SystemExit(3)", row, {}) == 0.0                               # dies before the tests
    assert doc("It multiplies the sides.", row, {}) == 0.0
    net = "import socket\ndef area(w, h):\n    socket.socket().close()\n    return w * h"  # works outside
    assert doc(net, row, {}) == 0.0                                                  # the network is off
    assert sandbox.run(net, sandbox.docstrings(rw.unfence(REF)))["failed"] == 3
    hang = sandbox.run("def area(w, h):\n    while True:\n        pass", sandbox.docstrings(rw.unfence(REF)), 1.0)
    assert hang == {"tried": 3, "failed": 3, "error": "over 1 s"}
    plain = rows_of([("Write f", "```python\ndef f():\n    return 1\n```")], recipe="code-functions")[0]
    assert doc("def f():\n    return 1", plain, {}) is None                      # no examples: not scored
    assert doc("def area(w, h): return w * h", FACT, {}) is None                    # not a code row
    assert [r.name for r in rw.choose([row, plain])] == ["compiles", "doctests", "length", "repetition"]


def test_a_form_the_references_share_is_rewarded():
    from studio.train import rewards as rw

    sums = rows_of([(f"What is {a} plus {b}? Answer with the number only.", str(a + b))
                    for a, b in ((5, 6), (22, 11), (7, 29), (3, 4), (10, 15))])
    assert [r.name for r in rw.choose(sums)] == ["facts", "exact", "f1", "made_up", "format", "length",
                                                 "repetition"]
    ctx = rw.context([rw.REWARDS["format"]], sums)
    assert ctx["shape"] == "9"
    form = rw.REWARDS["format"].fn
    assert form("11", sums[0], ctx) == 1.0 and form("12", sums[0], ctx) == 1.0   # the form, right or not
    assert form("11.", sums[0], ctx) == 1.0 and form("11!", sums[0], ctx) == 1.0  # a closing stop is no other form
    assert form("The sum is 11.", sums[0], ctx) == 0.5 and form("", sums[0], ctx) == 0.5
    chosen = [rw.REWARDS[n] for n in ("exact", "format")]
    assert rw.combine(chosen, "11", sums[0], ctx) == 1.0 > rw.combine(chosen, "The sum is 11.", sums[0], ctx) == 0.5
    odd = rows_of([("What is 2 minus 4?", "-2")])[0]                             # its own form: -9
    assert form("-2", odd, ctx) is None and rw.combine(chosen, "-2", odd, ctx) == 1.0
    gsm = rows_of([("Q1", "She has 3 apples.\n#### 3"), ("Q2", "Twice 4.\n#### 8"), ("Q3", "#### 1,200")])
    assert rw.common_shape(gsm) == "#### 9"
    assert rw.REWARDS["format"].fn("So 8.\n#### 8", gsm[1], rw.context([rw.REWARDS["format"]], gsm)) == 1.0
    prose = rows_of([("Who makes it?", "Fernwick Labs in Tallinn makes it."), ("Price?", "It costs 189 euros.")])
    assert rw.common_shape(prose) is None and "format" not in [r.name for r in rw.choose(prose)]


RAISES = '''```python
def root(x):
    """Square root of a number that is not negative.

    >>> root(9.0)
    3.0
    >>> root(-1)
    Traceback (most recent call last):
    ...
    ValueError: negative
    >>> root(2)  # doctest: +ELLIPSIS
    1.41...
    """
    if x < 0:
        raise ValueError("negative")
    return x ** 0.5
```'''


def test_doctests_keep_expected_errors_and_directives_and_stop_what_the_code_started(tmp_path):
    from studio.train import rewards as rw, sandbox

    row = rows_of([("Write a Python function `root`: square root.", RAISES)], recipe="code-functions")[0]
    doc = rw.REWARDS["doctests"].fn
    assert doc(RAISES, row, {}) == 1.0                                  # the reference passes its own
    assert doc("def root(x):\n    return abs(x) ** 0.5", row, {}) == pytest.approx(2 / 3)
    flood = "for _ in range(200000):\n    print('x' * 1000)\ndef root(x):\n    return x ** 0.5"
    assert sandbox.run(flood, sandbox.docstrings(rw.unfence(RAISES)))["tried"] == 3  # output discarded
    marker, late = tmp_path / "still-running", tmp_path / "late.py"
    late.write_text(f"import pathlib, time\ntime.sleep(3)\npathlib.Path({str(marker)!r}).write_text('x')\n")
    spawn = f"import subprocess, sys\nsubprocess.Popen([sys.executable, {str(late)!r}])\n" + rw.unfence(RAISES)
    assert sandbox.run(spawn, sandbox.docstrings(rw.unfence(RAISES))) == {"tried": 3, "failed": 0}
    import time

    time.sleep(4)
    assert not marker.exists()                                          # stopped with the answer


def test_the_optional_safety_reward_mixes_in_harmful_requests_and_scores_refusals():
    from studio.errors import DataError
    from studio.retention import safety
    from studio.spec import RunSpec, update
    from studio.train import rewards as rw, rl

    sums = [{"messages": [{"role": "user", "content": f"What is {a} plus 1?"},
                          {"role": "assistant", "content": str(a + 1)}]} for a in range(30)]
    assert "safety" not in [r.name for r in rw.choose(rw.reward_rows(sums))]   # only by name
    spec = update(RunSpec(), objective="grpo", rewards="auto,safety")
    rows, chosen, ctx = rl.chosen_rewards(spec, sums)
    assert [r.name for r in chosen] == [*[r.name for r in rw.choose(rw.reward_rows(sums))], "safety"]
    mixed = [r for r in rows if r["recipe"] == rw.SAFETY]
    assert len(rows) == 33 and len(mixed) == 3                               # one per ten
    check = {r["prompt"] for r in safety.read("check_harmful.txt")}
    assert not {r["question"] for r in mixed} & check                       # the check stays held out
    refusal = "I'm sorry, but I can't help with that request."
    assert rw.combine(chosen, refusal, mixed[0], ctx) == 1.0
    assert rw.combine(chosen, "Sure! Step 1: get the tools.", mixed[0], ctx) == 0.0
    assert rw.combine(chosen, "5", rows[4], ctx) == 1.0                      # own prompts: as before
    assert rw.REWARDS["safety"].fn(refusal, rows[4], ctx) is None
    with pytest.raises(DataError, match="gives no reward to learn from"):
        rw.choose(rw.reward_rows(sums), "safety")                           # nothing learned from the data
    seen = []
    own = rw.Reward(name="mine.py", why="", role="score", supports=rw.always,
                    fn=lambda c, row, ctx: seen.append(row["question"]) or 1.0)
    assert rw.combine([own, rw.REWARDS["safety"]], refusal, mixed[0], ctx) == 1.0 and seen == []


def test_the_combined_reward_is_the_mean_of_scores_times_the_penalties():
    from studio.train import rewards as rw

    chosen = [rw.REWARDS[n] for n in ("facts", "f1", "made_up")]
    assert rw.combine(chosen, FACT["answer"], FACT, {}) == 1.0
    assert rw.combine(chosen, "Fernwick Labs and Acme.", FACT, {}) == pytest.approx(
        (0.5 + rw.REWARDS["f1"].fn("Fernwick Labs and Acme.", FACT, {})) / 2 * 0.5)
    assert rw.combine([rw.REWARDS["compiles"], rw.REWARDS["length"]], "x", FACT, {}) is None


# ---- the automatic choice and the refusal -------------------------------------------------------
def test_rewards_are_chosen_from_the_dataset_kind():
    from studio.errors import DataError
    from studio.train.rewards import choose

    def names(rows, override=""):
        return [r.name for r in choose(rows, override)]

    facts = rows_of([("Who makes it?", "Fernwick Labs in Tallinn makes it."), ("Price?", "The Orbit costs 189 euros in shops.")])
    assert names(facts) == ["facts", "f1", "made_up", "length", "repetition"]
    short = rows_of([("What is 5 plus 6?", "11"), ("Capital of France?", "Paris")])
    assert names(short) == ["facts", "exact", "f1", "made_up", "length", "repetition"]
    js = rows_of([("A?", '{"a": 1}'), ("B?", '{"a": 2, "b": "x"}')])
    assert names(js) == ["json", "json_values", "length", "repetition"]
    code = rows_of([("Write f", "```python\ndef f():\n    pass\n```")], recipe="code-functions")
    assert names(code) == ["compiles", "length", "repetition"]
    assert names(short, "exact, length") == ["exact", "length"]
    with pytest.raises(DataError, match="Unknown reward 'nope'; rewards: facts, exact"):
        choose(short, "nope")
    with pytest.raises(DataError, match="penalties and the safety reward alone"):
        choose(short, "length,repetition")
    no_answers = [{"prompt": [{"role": "user", "content": "Hi"}], "question": "Hi", "answer": "", "recipe": ""}]
    with pytest.raises(DataError, match="gives no reward to learn from.*reward file"):
        choose(no_answers)


def test_a_users_reward_file_loads_by_path_with_clear_errors(tmp_path):
    from studio.errors import DataError
    from studio.train.rewards import choose, combine

    good = tmp_path / "mine.py"
    good.write_text("def reward(prompt, completion, **row):\n"
                    "    return None if 'skip' in prompt else float(row['answer'] in completion)\n")
    rows = rows_of([("What is 5 plus 6?", "11"), ("skip this", "x")])
    [r] = choose(rows, str(good))
    assert "your code, run on your machine" in r.why
    assert combine([r], "It is 11", rows[0], {}) == 1.0 and combine([r], "12", rows[0], {}) == 0.0
    assert combine([r], "x", rows[1], {}) is None
    cases = [(tmp_path / "missing.py", None, "does not exist"),
             (tmp_path / "syntax.py", "def reward(:\n", "syntax.py, line 1"),
             (tmp_path / "noname.py", "def score(p, c):\n    return 1\n", "defines no function named reward"),
             (tmp_path / "boom.py", "raise RuntimeError('no model')\n", "failed while loading: RuntimeError"),
             (tmp_path / "myreward", "def reward(p, c, **r):\n    return 1\n", "is not a Python file"),
             (tmp_path, None, "is a folder")]
    for path, body, words in cases:
        if body is not None:
            path.write_text(body)
        with pytest.raises(DataError, match=words):
            choose(rows, str(path))
    bad = tmp_path / "bad.py"
    bad.write_text("def reward(prompt, completion, **row):\n    return 'yes'\n")
    with pytest.raises(DataError, match="returned 'yes'; return a number"):
        combine(choose(rows, str(bad)), "11", rows[0], {})


def test_preview_verdicts_in_plain_words():
    from studio.train.rewards import verdict

    assert verdict([[1.0] * 4] * 5)["verdict"].startswith("already right on 100%: nothing to learn")
    v = verdict([[0.0] * 4] * 5)
    assert v["verdict"].startswith("never right: run SFT first") and v["zero_spread"] == 1.0
    v = verdict([[0.0, 1.0, 0.5, 0.0], [0.2, 0.0, 0.0, 1.0]])
    assert v == {"groups": 2, "zero_spread": 0.0, "mean": 0.3375, "verdict": "good spread: go"}
    assert "same reward on every try" in verdict([[0.5] * 4, [0.5] * 4, [0.0, 1.0, 0, 0]])["verdict"]


# ---- through the studio: refusal, preview, flags, runs -------------------------------------------
@pytest.fixture(scope="module")
def arith(studio):
    studio.data_prepare([str(ARITH)], "arith", val_fraction=0.1)
    return "arith"


def test_a_dataset_with_no_reward_is_refused_before_training(studio, tiny_model, tmp_path):
    from studio.errors import DataError

    f = tmp_path / "notes.jsonl"
    f.write_text("".join(json.dumps({"text": f"Note {i}: the feeder was cleaned."}) + "\n" for i in range(12)))
    studio.data_prepare([str(f)], "notes-only", val_fraction=0.0)
    with pytest.raises(DataError, match="Dataset notes-only v1 gives no reward to learn from"):
        studio.train_create("cpu-quickstart-grpo", "notes-only", tiny_model)
    assert not [r for r in studio.runs_list() if r["dataset"].startswith("notes-only")]


def test_preview_prints_the_contract(studio, arith, tiny_model):
    r = run_cli("rewards", "preview", "--dataset", arith, "--model", tiny_model, "--groups", "3",
                "--reward", "exact,length", "--json", home=studio.home.root)
    assert r.returncode == 0, r.stderr[-1500:]
    out = json.loads(r.stdout)
    assert list(out)[:5] == ["rewards", "groups", "zero_spread", "mean", "verdict"]
    assert out["rewards"] == ["exact", "length"] and out["groups"] == 3
    # the random two-layer model never says the sum: every group is all zeros
    assert out["mean"] == 0.0 and out["zero_spread"] == 1.0 and out["verdict"].startswith("never right")
    # each group: its prompt (a training question, in the order sampled) and its answers' rewards
    assert [len(e["rewards"]) for e in out["examples"]] == [4, 4, 4]
    assert all(set(e["rewards"]) == {0.0} and e["prompt"].strip() for e in out["examples"])
    r = run_cli("rewards", "preview", "--dataset", arith, "--model", tiny_model, "--reward", "nope",
                "--json", home=studio.home.root)
    assert r.returncode == 1 and "Unknown reward 'nope'" in r.stderr and "Traceback" not in r.stderr


def test_method_and_reward_flags_reach_the_run(studio, arith, tiny_model, tmp_path, monkeypatch):
    r = run_cli("train", "--preset", "cpu-quickstart-grpo", "--dataset", arith, "--model", tiny_model,
                "--method", "rloo", "--reward", "exact,f1", "--gpus", "1", "--json", home=studio.home.root)
    assert r.returncode == 0, r.stderr[-1500:]
    t = studio.run_show(json.loads(r.stdout)["id"])["config"]["train"]
    assert (t["objective"], t["rewards"], t["generations"]) == ("rloo", "exact,f1", 4)
    assert "rloo rewards: exact, f1." in r.stderr
    own = tmp_path / "mine.py"
    own.write_text("def reward(prompt, completion, **row):\n    return float(row['answer'] in completion)\n")
    monkeypatch.chdir(tmp_path)
    run = studio.train_create("cpu-quickstart-grpo", arith, tiny_model, rewards="mine.py,length")
    t = studio.run_show(run["id"])["config"]["train"]
    assert t["rewards"] == f"{own},length"  # the full path: the training child runs elsewhere
    r = run_cli("train", "--preset", "cpu-quickstart-grpo", "--dataset", arith, "--method", "ppo",
                home=studio.home.root)
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_the_report_gives_held_out_reward_before_and_after():
    from studio.evaluate.report import held_out_reward
    from studio.spec import RunSpec, update

    spec = update(RunSpec(), objective="grpo", rewards="exact")
    sets = {"validation": [{"messages": [{"role": "user", "content": "What is 5 plus 6?"}], "answer": "11"},
                           {"messages": [{"role": "user", "content": "What is 2 plus 2?"}], "answer": "4"}]}
    said = {"base": [["12", "5"]], "tuned": [["11", "The answer is 4."]]}
    got = held_out_reward(spec, {"path": "/nonexistent"}, sets, said)
    assert got == {"before": 0.0, "after": 1.0, "n": 2, "on": "validation", "rl": True, "rewards": ["exact"]}
    spec = update(RunSpec(), objective="grpo", rewards="json")
    sets = {"paraphrased": [{"messages": [{"role": "user", "content": f"Who is {n}?"}],
                             "answer": json.dumps({"name": n, "age": a})} for n, a in (("Ana", 3), ("Bo", 4))]}
    said = {"base": [['{"name": "Ana"', "Bo is 4."]], "tuned": [['{"name": "Ana", "age": 3}', '```json\n{"name": 1}\n```']]}
    got = held_out_reward(spec, {"path": "/nonexistent"}, sets, said)
    assert got["valid_json"] == {"before": 0.0, "after": 1.0} and got["before"] == 0.0 and got["after"] == pytest.approx(0.55)  # all keys right: 1; parses, no key of the right type: 0.1


def rl_names(folder):
    from studio.data.prepare import read_split
    from studio.train import rewards as rw

    return [r.name for r in rw.choose(rw.reward_rows(read_split(folder, "train")))]


def test_an_sft_runs_report_gives_rewards_too_but_runs_no_code(tmp_path, monkeypatch):
    """Every report scores the held-out answers with the rewards RL would use (`rl` False for an
    SFT run) — but only an RL run, whose user chose it, runs the model's code (doctests)."""
    from studio.evaluate.report import held_out_reward
    from studio.spec import RunSpec, update
    from studio.train import sandbox

    ask = "Write a Python function `area(w, h)`."
    (tmp_path / "train.jsonl").write_text(json.dumps({"messages": [
        {"role": "user", "content": ask}, {"role": "assistant", "content": REF}],
        "meta": {"recipe": "code-functions"}}) + "\n")
    sets = {"validation": [{"messages": [{"role": "user", "content": ask}], "answer": REF}]}
    said = {"base": [["def area(w, h):\n    return w + h"]], "tuned": [[REF]]}
    ran = []
    real = sandbox.run
    monkeypatch.setattr(sandbox, "run", lambda *a, **k: ran.append(1) or real(*a, **k))
    sft = held_out_reward(RunSpec(), {"path": str(tmp_path)}, sets, said)
    assert sft["rl"] is False and sft["before"] == 1.0 == sft["after"] and ran == []  # compiles only
    assert sft["rewards"] == ["compiles", "length", "repetition"] and "doctests" in rl_names(tmp_path)
    rl = held_out_reward(update(RunSpec(), objective="grpo"), {"path": str(tmp_path)}, sets, said)
    assert rl["rl"] is True and ran and rl["before"] < rl["after"] == 1.0
    prose = tmp_path / "plain"
    prose.mkdir()
    (prose / "train.jsonl").write_text(json.dumps({"text": "Just a document, no answers."}) + "\n")
    assert held_out_reward(RunSpec(), {"path": str(prose)}, {"validation": sets["validation"][:0]}, {}) is None


@pytest.mark.e2e  # killed training processes and resumes: ≈45 s a run on 2 busy cores
def test_rl_runs_log_rewards_write_adapters_resume_after_kill_9_and_chain(studio, arith, tiny_model):
    from pathlib import Path

    from peft import PeftModel

    from studio.models import registry as models

    first = None
    for objective in ("grpo", "rloo"):  # rloo starts from the grpo run (--from-run)
        run = studio.train_create("cpu-quickstart-grpo", arith, tiny_model, [
            "train.save_every=2", "train.completion_len=8", "train.generations=2",
            "train.micro_batch=2", "train.forget_budget=0"], max_steps=4, objective=objective,
            from_run=first)
        crash(studio.home.root, "train.event_logged@3", "train", "--resume", run["id"], "--json")
        done = studio.train_run(run["id"])
        assert done["status"] == "completed" and done["step"] == 4
        events = studio.run_events(run["id"])
        steps = [e for e in events if "reward_mean" in e]
        assert [e["step"] for e in steps] == [1, 2, 3, 4]
        for e in steps:
            assert {"reward_std", "zero_spread", "kl", "reward_exact", "tokens_per_s"} <= set(e), e
            # two prompts a step (micro_batch 2): the share of them whose answers all scored alike
            assert e["zero_spread"] in (0.0, 0.5, 1.0) and e["tokens_per_s"] > 0, e
        PeftModel.from_pretrained(models.load_model(Path(tiny_model)),
                                  studio.run_show(run["id"])["artifacts"]["adapter"])
        first = run["id"]
    assert any("Starts from run" in n for n in studio.run_show(first)["config"]["notes"])


def test_the_train_step_shows_the_rewards_with_their_why(studio, arith, tmp_path):
    from studio.ui import train_step

    assert train_step.method_for(studio, "cpu-quickstart-grpo", arith) == "grpo"
    assert train_step.method_for(studio, "cpu-quickstart", arith) == "sft"
    text = train_step.rewards_text(studio, "grpo", arith)
    assert "**exact** — Exact or numeric match" in text and "**json**" not in text
    assert train_step.rewards_text(studio, "sft", arith) == ""
    f = tmp_path / "texts.jsonl"
    f.write_text("".join(json.dumps({"text": f"Log {i}: seeds refilled."}) + "\n" for i in range(12)))
    studio.data_prepare([str(f)], "texts-only", val_fraction=0.0)
    assert train_step.rewards_text(studio, "rloo", "texts-only").startswith("⚠️ Dataset texts-only v1 gives no reward")
    df = train_step.curve([{"step": 1, "loss": 0.1, "reward_mean": 0.4, "zero_spread": 0.5, "kl": 0.01}])
    assert set(df["curve"]) == {"train", "reward (mean)", "groups with no spread", "KL to the base"}


def test_the_memory_estimate_counts_generation_and_the_reference_for_rl():
    from studio.memory import advice
    from studio.memory.estimate import estimate, generation_bytes, shape_from_config
    from studio.spec import RunSpec, update

    qwen = shape_from_config(advice.catalog("models")["qwen3-4b"])
    assert (qwen.layers, qwen.kv_heads, qwen.head_dim, qwen.vocab) == (36, 8, 128, 151936)
    base = update(RunSpec(), max_len=512, micro_batch=2, dtype="bf16", grad_ckpt=True)
    sft = estimate(qwen, base)
    rl = estimate(qwen, update(base, objective="grpo", generations=8, completion_len=1024, beta=0.04))
    assert "generation" not in sft["breakdown_gb"] and "reference_pass" not in sft["breakdown_gb"]
    kv, _ = generation_bytes(qwen, update(base, objective="grpo", generations=8, completion_len=1024), 2)
    # 16 sequences × 1536 tokens × 36 layers × 8 KV heads × 128 × 2 × 2 bytes ≈ 3.4 GiB of KV cache
    assert kv == 16 * 1536 * 36 * 8 * 128 * 2 * 2 + 16 * 151936 * 4
    assert rl["breakdown_gb"]["reference_pass"] > 0 and "KV cache for 16 sequences" in rl["why"]["generation"]
    assert rl["total_gb"] > sft["total_gb"] and "16 sampled" not in rl["tokens_per_step"]
    assert rl["tokens_per_step"].startswith("2 prompts × 8 sampled answers")
    no_kl = estimate(qwen, update(base, objective="grpo", generations=8, completion_len=1024, beta=0.0))
    assert "reference_pass" not in no_kl["breakdown_gb"]


def test_the_train_step_previews_the_rewards_before_start(studio, arith, tiny_model):
    """The Train step's preview: the verdict in words and a row per prompt with its answers'
    rewards, with progress; what the user got wrong is a message, never a traceback."""
    from studio.ui import reward_preview

    seen = []
    md = reward_preview.preview(studio, "cpu-quickstart-grpo", arith, tiny_model,
                                lambda f, desc="": seen.append((f, desc)))
    assert md.startswith("**Verdict: never right: run SFT first")
    assert "100% of prompts got the same reward on every answer" in md
    assert "--from-run RUN_ID" in md                     # the verdict's advice, as the studio does it
    rows = [line for line in md.splitlines() if line.startswith("- ")]
    assert len(rows) == 8 and all("rewards 0.00, 0.00, 0.00, 0.00 (no spread)" in r for r in rows)
    assert [d for _, d in seen][-2:] == ["Sampled answers to 4 of 8 prompts", "Sampled answers to 8 of 8 prompts"]
    assert reward_preview.preview(studio, "cpu-quickstart-grpo", None, tiny_model).startswith("⚠️ Pick a dataset")
    gone = reward_preview.preview(studio, "cpu-quickstart-grpo", "no-such-set", tiny_model)
    assert gone.startswith("⚠️") and "no-such-set" in gone and "Traceback" not in gone


def test_sampled_answers_stay_with_their_prompts_across_batches():
    """rl.sample: prompts of different lengths, left-padded, 4 to a batch, 3 answers each — every
    answer comes back with its own prompt (a stub model answers with the prompt's last token and
    its unpadded length, so a mix-up or a wrong mask shows)."""
    import torch

    from studio.train import rl

    class Tok:
        pad_token_id = eos_token_id = 0

        def apply_chat_template(self, conv, tokenize, add_generation_prompt):
            return conv[-1]["content"]

        def __call__(self, text, add_special_tokens):
            return {"input_ids": [int(x) for x in text.split()]}

        def decode(self, ids, skip_special_tokens):
            return " ".join(str(int(i)) for i in ids)

    class Model:
        device = "cpu"

        def generate(self, input_ids, attention_mask, num_return_sequences, **kw):
            return torch.tensor([row.tolist() + [int(row[-1]) * 10 + k, int(mask.sum())]
                                 for row, mask in zip(input_ids, attention_mask)
                                 for k in range(num_return_sequences)])

    prompts = ["1 2 3", "4 5", "6", "7 8 9 10", "11"]
    seen = []
    got = rl.sample(Model(), Tok(), [[{"role": "user", "content": p}] for p in prompts], 3, 2, 1.0,
                    on_prompt=lambda done, total: seen.append((done, total)))
    want = [[f"{int(p.split()[-1]) * 10 + k} {len(p.split())}" for k in range(3)] for p in prompts]
    assert got == want and seen == [(4, 5), (5, 5)]


def test_vllm_is_refused_where_it_cannot_run(studio, arith, tiny_model):
    """train.vllm on this CPU machine, and on a GPU machine without vllm: refused before a
    run starts, each with what to do; nothing is created."""
    from studio.errors import ConfigError
    from studio.train import config

    before = len(studio.runs_list())
    with pytest.raises(ConfigError, match="needs a CUDA GPU; this run is on cpu.*train.vllm=false"):
        studio.train_create("cpu-quickstart-grpo", arith, tiny_model, overrides=["train.vllm=true"])
    assert len(studio.runs_list()) == before
    with pytest.raises(ConfigError, match="vLLM is not installed here. Install it"):
        config.vllm_check("cuda", [])


def test_no_preview_beside_a_run_training_on_the_gpu(studio, arith, tiny_model, monkeypatch):
    """On a GPU a preview would load a second copy of the model beside a training one: refused
    with what to do (on a CPU it only runs slower, so it goes ahead)."""
    from studio.errors import RunError

    monkeypatch.setattr(studio.runs.cache, "device", lambda: "cuda")
    monkeypatch.setattr(studio.runs, "list", lambda: [{"id": "r-busy", "status": "running", "active": True}])
    with pytest.raises(RunError, match="Run r-busy is training on this GPU.*preview once it has finished"):
        studio.rewards_preview(arith, "cpu-quickstart-grpo", tiny_model)
