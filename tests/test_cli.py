"""CLI contract: --help everywhere, --json output, exit codes 0 / 1 (user error) / 2 (usage)."""
import json

import pytest
import yaml

from conftest import ROOT, ZYGOTE, run_cli


def test_help_on_every_verb():
    from studio.cli import build_parser

    def parsers(p, name=""):
        yield name, p
        for a in p._actions:
            choices = getattr(a, "choices", None)
            for word, child in (choices.items() if isinstance(choices, dict) else ()):
                if hasattr(child, "format_help"):
                    yield from parsers(child, f"{name} {word}".strip())

    seen = dict(parsers(build_parser()))
    assert {"estimate", "train", "data prepare", "data check"} <= set(seen)
    for name, p in seen.items():
        text = p.format_help()
        # a "%" in a help text is a format code to argparse: a stray one printed a whole dict
        assert text and "{'" not in text and "%(" not in text, (name, text[:2000])
    assert "~30% slower" in " ".join(seen["estimate"].format_help().split())  # the run spec's help, as written


def test_models_and_presets_json(studio_home):
    r = run_cli("models", "list", "--json", home=studio_home)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["name"] == "smollm2-135m-instruct"
    r = run_cli("models", "info", "smollm2-135m-instruct", "--json", home=studio_home)
    assert json.loads(r.stdout)["params"] == 134_515_008
    r = run_cli("presets", "list", "--json", home=studio_home)
    assert "cpu-quickstart" in {p["name"] for p in json.loads(r.stdout)}
    r = run_cli("presets", "show", "cpu-quickstart", "--json", home=studio_home)
    shipped = yaml.safe_load((ROOT / "presets" / "cpu-quickstart.yaml").read_text())
    shown = json.loads(r.stdout)
    assert {k: shown["train"][k] for k in shipped["train"]} == shipped["train"]   # as the file says
    assert {k: shown["lora"][k] for k in shipped["lora"]} == shipped["lora"]


def test_cli_calls_fork_after_the_studio_set_its_own_environment(studio_home, monkeypatch):
    """A process that trained or evaluated has the variables the studio sets (tokenizers'
    parallelism, the hub's timeouts): later CLI calls still fork from the zygote (each fresh
    process costs the imports, ≈ 4 s; the suite makes dozens of such calls)."""
    import os

    from studio.evaluate.harness import offline_unless_reachable
    from studio.train.runs import cuda_allocator_defaults

    monkeypatch.setattr(os, "environ", dict(os.environ))  # put back as it was afterwards
    for var in ZYGOTE.STUDIO_SETS:
        os.environ.pop(var, None)
    before_env = dict(os.environ)
    offline_unless_reachable()
    cuda_allocator_defaults()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # as runs.py does before training
    assert set(os.environ) - set(before_env) <= ZYGOTE.STUDIO_SETS
    before = ZYGOTE.forked
    assert run_cli("presets", "list", "--json", home=studio_home).returncode == 0
    assert ZYGOTE.forked == before + 1


@pytest.mark.parametrize("args", [["bogus"], ["models", "list", "--nope"], ["models"], []])
def test_usage_errors_exit_2(args, studio_home):
    r = run_cli(*args, home=studio_home)
    assert r.returncode == 2 and "usage" in r.stderr


def test_user_errors_exit_1_without_traceback(tmp_path, studio_home):
    cases = [
        (["models", "info", "no-such-model"], studio_home, "Unknown model"),
        (["presets", "show", "nope"], studio_home, "No preset named"),
    ]
    f = tmp_path / "a-file"
    f.write_text("x")
    cases.append((["models", "list"], f, "is a file"))
    bad = tmp_path / "bad-home"
    bad.mkdir()
    (bad / "studio.db").write_text("not sqlite, but important")
    cases.append((["models", "list"], bad, "not a usable studio database"))
    for args, home, words in cases:
        r = run_cli(*args, home=home)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert words in r.stderr and "Traceback" not in r.stderr
    assert (bad / "studio.db").read_text() == "not sqlite, but important"


def test_times_read_as_dates_in_text_output():
    """`runs list` showed created_at as 1.796e+09: a `…_at` value is a local date and time in
    tables and in `key  value` lines; other numbers are as before, and --json keeps the seconds."""
    import time

    from studio.cli.render import render

    t = time.mktime((2026, 12, 4, 13, 26, 0, 0, 0, -1))
    table = render([{"id": "r1", "created_at": t, "loss": 0.123456, "step": 8}])
    assert "2026-12-04 13:26" in table and "e+09" not in table and "0.1235" in table
    lines = render({"id": "r1", "updated_at": t, "step": 8, "error": None})
    assert "updated_at  2026-12-04 13:26" in lines and "step        8" in lines
