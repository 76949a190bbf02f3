"""Data step: formats, recipes, loss mask, stats, and every bad input a user can upload."""
import json
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, run_cli
from studio.data import formats, templates
from studio.data.ingest import Issue, iter_path
from studio.data.questions import parse_pairs
from studio.data.recipes import RECIPES, Context, RecipeParams, qa_pairs
from studio.data.ingest import Document
from studio.errors import ConfigError, DataError

SAMPLE = ROOT / "assets" / "sample"


@pytest.fixture(scope="module")
def tok(studio):
    return studio.tokenizer("smollm2-135m-instruct")


def items(path):
    issues = []
    return list(iter_path(Path(path), issues)), issues


def test_recipe_registry_lists_all():
    assert set(RECIPES) == {"token-windows", "paragraphs", "sections", "qa-pairs", "factuality-pairs",
                            "keyword-pairs", "code-functions"}
    assert all(r.help for r in RECIPES.values())


@pytest.mark.parametrize("row, fmt", [
    ({"instruction": "Say hi", "input": "", "output": "hi"}, "alpaca"),
    ({"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}, "sharegpt"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, "messages"),
    ({"prompt": "a", "completion": "b"}, "prompt-completion"),
    ({"question": "a", "answer": "b"}, "prompt-completion"),
    ({"text": "hello"}, "text"),
])
def test_format_detection_and_conversion(row, fmt):
    assert formats.detect_one(row) == fmt
    ex, used = formats.convert(row)
    assert used == fmt
    assert ("text" in ex) if fmt == "text" else ex["messages"][-1]["role"] == "assistant"


def test_manual_mapping_overrides_detection():
    ex, _ = formats.convert({"q": "What?", "a": "That."}, {"prompt": "q", "completion": "a"})
    assert ex["messages"][1]["content"] == "That."
    with pytest.raises(formats.Skip, match="missing"):
        formats.convert({"q": "x"}, {"prompt": "q", "completion": "a"})


def test_label_mask_only_on_assistant(tok):
    ex = {"messages": [{"role": "user", "content": "Ping?"}, {"role": "assistant", "content": "Pong."}]}
    segs = templates.preview_segments(tok, templates.encode(tok, ex, 512))
    learned = "".join(t for t, on in segs if on)
    assert learned == "Pong.<|im_end|>"
    assert "Ping?" in "".join(t for t, on in segs if not on)


def test_prepare_sample_faq(studio, tok):
    s = studio.data_prepare([str(SAMPLE / "product_faq.jsonl")], "faq-test", val_fraction=0.1)
    assert s["records"] == 80 and s["splits"] == {"train": 72, "validation": 8}
    assert s["errors"] == [] and s["formats"] == {"prompt-completion": 80}
    rows = [json.loads(x) for split in ("train", "validation")
            for x in (Path(s["path"]) / f"{split}.jsonl").read_text().splitlines()]
    lengths = [templates.encode(tok, ex, s["max_len"]).full_length for ex in rows]  # counted here
    t = s["tokens"]
    assert (t["total"], t["min"], t["max"]) == (sum(lengths), min(lengths), max(lengths))
    for p, value in ((50, t["p50"]), (95, t["p95"])):   # a percentile: p% at or below it, the rest at or above
        assert value in lengths and sum(n <= value for n in lengths) >= p / 100 * len(lengths)
        assert sum(n >= value for n in lengths) >= (100 - p) / 100 * len(lengths)
    again = studio.data_prepare([str(SAMPLE / "product_faq.jsonl")], "faq-test")
    assert again["version"] == 2
    assert studio.dataset("faq-test")["version"] == 2
    train = [json.loads(x) for x in open(Path(again["path"]) / "train.jsonl")]
    assert all("messages" in r for r in train)


def test_documents_and_code_recipes(tok):
    p = RecipeParams(max_tokens=64)
    ctx = Context(tok, p)
    text = (SAMPLE / "nimbus_orbit_manual.md").read_text()
    doc = Document(text, "manual.md")
    paras = list(RECIPES["paragraphs"].run(doc, ctx))
    assert len(paras) > 5
    for r in paras:
        assert len(tok(r["text"])["input_ids"]) <= 64
        last = r["text"].rstrip().splitlines()[-1]
        assert last[-1] in ".!?:)" or last.startswith("#"), last  # never mid-sentence
    secs = list(RECIPES["sections"].run(doc, ctx))
    assert any(r["text"].startswith("Nimbus Orbit User Manual > Getting started > Charging") for r in secs)
    wins = list(RECIPES["token-windows"].run(doc, Context(tok, RecipeParams(max_tokens=50, overlap=10))))
    assert len(wins) > 10
    kws = list(RECIPES["keyword-pairs"].run(doc, ctx))
    assert kws and kws[0]["messages"][0]["content"].startswith("Tell me about ")
    code = list(RECIPES["code-functions"].run(Document((SAMPLE / "birdlog.py").read_text(), "b.py", "code"), ctx))
    names = [c["meta"]["name"] for c in code]
    assert "top_species" in names and "Feeder.refill" in names and "Feeder.eat" not in names
    assert ctx.counters["code_skipped_no_docstring"] == 2  # __init__ and eat
    with pytest.raises(ConfigError, match="overlap"):
        list(RECIPES["token-windows"].run(doc, Context(tok, RecipeParams(max_tokens=32, overlap=32))))


def test_sentence_splitting_copes_with_abbreviations(tok):
    from studio.data import chunking

    text = ("Dr. Smith met Mr. Jones at 5 p.m. in the lab. They talked about e.g. birds. " * 20 +
            "then a long run of words without any punctuation at all " * 30)
    chunks = chunking.paragraphs(tok, text, 40)
    assert all(len(tok(c)["input_ids"]) <= 40 for c in chunks)
    assert not any(c.endswith("Dr.") or c.endswith("Mr.") for c in chunks)


def test_paragraph_chunks_fit_their_budget_as_joined(tok):
    """Many short paragraphs: the blank lines between them cost tokens too (two in SmolLM2's
    tokenizer), so a chunk counted as joined still fits; no text is lost on the way."""
    from studio.data import chunking

    paras = [f"Item {i}: open at dawn." for i in range(80)]
    chunks = chunking.paragraphs(tok, "\n\n".join(paras), 64)
    assert len(chunks) > 5 and all(len(tok(c, add_special_tokens=False)["input_ids"]) <= 64 for c in chunks)
    assert "\n\n".join(chunks).split("\n\n") == paras


def test_document_examples_fit_the_default_length(tmp_path, studio):
    """Paragraph chunks at the default budget are not reported as cut: the length they are
    checked against is the chunk budget plus the template around it."""
    doc = tmp_path / "manual.md"
    doc.write_text("\n\n".join(f"Step {i}. Rinse the tray, dry it and refill it with {i} grams of seed."
                               for i in range(200)))
    s = studio.data_prepare([str(doc)], "manual", val_fraction=0)
    assert s["truncated"] == 0 and s["max_len"] > 256 and s["tokens"]["max"] <= s["max_len"]


def test_qa_pairs_with_scripted_generator(tok):
    replies = iter([
        "Q: How long does the battery last?\nA: The battery lasts 41 days.\n"
        "Q: Who won the 1998 World Cup?\nA: France won the final in Paris.\nQ: \nA: nothing",
        "I cannot help with that.",
    ] * 20)
    ctx = Context(tok, RecipeParams(max_tokens=120), generator=lambda prompt: next(replies))
    text = "The battery lasts 41 days on a full charge.\n\nIt charges over USB-C in three hours."
    out = list(qa_pairs(Document(text * 1, "m.md"), ctx))
    assert any(r["messages"][0]["content"] == "How long does the battery last?" for r in out)
    assert ctx.counters["dropped: ungrounded (the answer is not in the chunk)"] >= 1
    assert "France won" in ctx.dropped["ungrounded (the answer is not in the chunk)"][0]  # shown
    assert parse_pairs("1. Q: a?\nA: b") == [("a?", "b")]
    ctx2 = Context(tok, RecipeParams(max_tokens=20), generator=lambda p: "no pairs here")
    fb = list(qa_pairs(Document(text, "m.md"), ctx2))
    assert fb and all(r["meta"]["fallback"] for r in fb) and ctx2.counters["qa_fallback"] == len(fb)
    with pytest.raises(ConfigError, match="generator"):
        list(qa_pairs(Document(text, "m.md"), Context(tok, RecipeParams())))


FEEDER = "# Nimbus Orbit\n\nThe Nimbus Orbit costs 89 dollars and holds two kilograms of seed.\n"


def scripted_engine(label: str):
    """An engine that writes one grounded pair for the FEEDER text, built where a real one would be."""
    from studio.data import generators

    pair = "Q: How much does the Nimbus Orbit cost?\nA: The Nimbus Orbit costs 89 dollars."
    return lambda *a, **k: generators.Generator(lambda prompt: pair, label, label)


def test_pairs_by_the_embedded_model_say_what_share_to_expect(studio, tmp_path, monkeypatch, capsys):
    """The embedded model's pairs carry the share measured by hand and a bigger generator to use,
    whichever engine ran it; a catalogue model, a server, templated fallbacks and an uploaded Q/A
    file carry none."""
    from studio.data import generators, service

    monkeypatch.setattr(generators, "llama_cpp", scripted_engine("llama.cpp"))
    monkeypatch.setattr(generators, "transformers_model", scripted_engine("transformers"))
    monkeypatch.setattr(generators, "openai_compatible", scripted_engine("openai"))
    monkeypatch.setattr(studio.data.cache, "loaded", lambda ref: (None, None))  # nothing loads
    for llama, engine in ((True, "llama.cpp"), (False, "transformers")):  # the model, whoever runs it
        monkeypatch.setattr(service.models, "llama_cpp_available", lambda on=llama: (on, ""))
        gen = studio.data.local_generator("smollm2-135m-instruct")
        assert (gen.engine, gen.model) == (engine, "smollm2-135m-instruct")
    doc = tmp_path / "feeder.md"
    doc.write_text(FEEDER)
    s = studio.data_prepare([str(doc)], "feeder", recipe="qa-pairs", val_fraction=0)
    assert s["generator"] == "transformers" and s["qa"]["generated"] == 1
    useful = s["qa"]["expected_useful"]
    assert useful["share"] == 0.33 and "20 of 60" in useful["measured"] and "RESULTS.md" in useful["measured"]
    assert "--generator-model NAME" in useful["better"] and "--generator-url URL" in useful["better"]
    assert studio.dataset(s["ref"])["stats"]["qa"]["expected_useful"] == useful  # `data show` too
    assert s["qa"]["generated_share"] == 1.0 and s["qa"]["fallback"] == 0       # the rest as before
    from studio.cli import main                  # the CLI, in this process (the engines stay scripted)

    monkeypatch.setattr(service.models, "llama_cpp_available", lambda: (True, ""))
    cli = ["data", "prepare", str(doc), "--name", "feeder", "--recipe", "qa-pairs", "--home",
           str(studio.home.root)]
    assert main([*cli, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["qa"]["expected_useful"]["share"] == 0.33
    assert main(cli) == 0
    assert ("expect about 33% of the pairs written by the small embedded model (SmolLM2-135M-Instruct) "
            "to be sensible") in capsys.readouterr().out
    monkeypatch.setattr(service.models, "llama_cpp_available", lambda: (False, ""))
    # a catalogue name with no server address is a local model (run by transformers, not measured)
    assert studio.data.local_generator("qwen2.5-3b").model == "qwen2.5-3b"
    s = studio.data_prepare([str(doc)], "feeder", recipe="qa-pairs", generator_model="qwen2.5-3b")
    assert s["qa"]["generated"] == 1 and "expected_useful" not in s["qa"]
    s = studio.data_prepare([str(doc)], "feeder", recipe="qa-pairs", generator_url="http://127.0.0.1:9/v1",
                            generator_model="smollm2-135m-instruct")   # a server's model: its own
    assert s["generator"] == "openai" and "expected_useful" not in s["qa"]
    monkeypatch.setattr(generators, "transformers_model", lambda *a, **k: generators.Generator(
        lambda prompt: "nothing to ask", "transformers", "transformers"))  # only templated fallbacks
    s = studio.data_prepare([str(doc)], "feeder", recipe="qa-pairs")
    assert s["qa"]["generated"] == 0 and "expected_useful" not in s["qa"]
    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"prompt": "How much is it?", "completion": "89 dollars."}\n')
    assert studio.data_prepare([str(qa)], "uploaded", val_fraction=0)["qa"] is None


# ---- bad inputs -----------------------------------------------------------------------------
def test_malformed_json_lines_are_reported_and_good_rows_kept(tmp_path, studio):
    f = tmp_path / "mixed.jsonl"
    f.write_text('{"prompt": "a?", "completion": "b"}\n{broken\n[1,2]\n'
                 '{"prompt": "c?", "completion": ""}\n{"prompt": "d?", "completion": "e"}\n')
    s = studio.data_prepare([str(f)], "mixed", val_fraction=0)
    assert s["records"] == 2
    lines = {e["line"]: e["reason"] for e in s["errors"]}
    assert "not valid JSON" in lines[2] and "JSON object" in lines[3] and "empty" in lines[4]
    assert s["empty_removed"] == 1


def test_json_not_a_list_and_empty_file(tmp_path):
    (tmp_path / "obj.json").write_text('{"a": 1}')
    (tmp_path / "empty.jsonl").write_text("")
    assert "not a list" in items(tmp_path / "obj.json")[1][0].reason
    assert "empty" in items(tmp_path / "empty.jsonl")[1][0].reason


def test_csv_missing_columns_and_ragged_rows(tmp_path, studio):
    (tmp_path / "ragged.csv").write_text("question,answer\nWhat?,That\nonly-one-field\nWhy?,Because,extra\n")
    recs, issues = items(tmp_path / "ragged.csv")
    assert len(recs) == 1 and {i.line for i in issues} == {3, 4}
    (tmp_path / "cols.csv").write_text("foo,bar\n1,2\n")
    with pytest.raises(DataError, match="match no known format"):
        studio.data_prepare([str(tmp_path / "cols.csv")], "cols")
    ok = studio.data_prepare([str(tmp_path / "cols.csv")], "cols",
                             mapping={"prompt": "foo", "completion": "bar"}, val_fraction=0)
    assert ok["records"] == 1


def test_unrecognised_columns_reported_once_per_file(tmp_path, studio):
    f = tmp_path / "wide.csv"
    f.write_text("foo,bar\n" + "".join(f"{i},{i}\n" for i in range(120)) + "What?,\n")
    g = tmp_path / "good.jsonl"
    g.write_text('{"prompt": "a?", "completion": "b"}\n')
    s = studio.data_prepare([str(f), str(g)], "wide", val_fraction=0)
    assert s["records"] == 1
    assert [e["file"] for e in s["errors"]] == ["wide.csv"] and "no known format" in s["errors"][0]["reason"]


def test_encodings(tmp_path):
    (tmp_path / "latin.txt").write_bytes("Café crème brûlée. Ça va très bien.".encode("latin-1"))
    (tmp_path / "u16.jsonl").write_bytes('{"text": "héllo wörld"}\n'.encode("utf-16"))
    (tmp_path / "latin.jsonl").write_bytes('{"text": "naïve café"}\n'.encode("latin-1"))
    assert "Café crème" in items(tmp_path / "latin.txt")[0][0].text
    assert items(tmp_path / "u16.jsonl")[0][0].data == {"text": "héllo wörld"}
    assert items(tmp_path / "latin.jsonl")[0][0].data == {"text": "naïve café"}


def test_binary_renamed_txt_and_unsupported(tmp_path):
    (tmp_path / "photo.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    assert "binary" in items(tmp_path / "photo.txt")[1][0].reason
    (tmp_path / "a.exe").write_bytes(b"MZ")
    assert "unsupported" in items(tmp_path / "a.exe")[1][0].reason


def test_pdf_without_text_layer_and_docx(tmp_path):
    from pypdf import PdfWriter

    w = PdfWriter()
    w.add_blank_page(200, 200)
    w.write(tmp_path / "scan.pdf")
    assert "no text layer" in items(tmp_path / "scan.pdf")[1][0].reason
    import docx

    d = docx.Document()
    d.add_heading("Setup", level=1)
    d.add_paragraph("Charge the feeder first.")
    d.save(tmp_path / "m.docx")
    doc = items(tmp_path / "m.docx")[0][0]
    assert doc.text.startswith("# Setup") and "Charge the feeder" in doc.text


def test_zip_slip_and_bomb(tmp_path):
    z = tmp_path / "bundle.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("good/faq.jsonl", '{"prompt": "a?", "completion": "b"}\n')
        zf.writestr("../evil.jsonl", '{"text": "x"}\n')
        zf.writestr("/abs/evil.txt", "x")
        zf.writestr("bomb.txt", "A" * 5_000_000)
    recs, issues = items(z)
    assert [r.data for r in recs] == [{"prompt": "a?", "completion": "b"}]
    reasons = " | ".join(i.reason for i in issues)
    assert "escapes" in reasons and "absolute" in reasons and "zip bomb" in reasons
    assert not (tmp_path.parent / "evil.jsonl").exists()


def test_no_assistant_turn_and_nothing_usable(tmp_path, studio):
    f = tmp_path / "chat.jsonl"
    f.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    r = run_cli("data", "prepare", str(f), "--name", "nothing", "--json", home=studio.home.root)
    assert r.returncode == 1 and "no assistant turn" in r.stderr and "Traceback" not in r.stderr


def test_duplicates_removed(tmp_path, studio):
    f = tmp_path / "dups.jsonl"
    rows = [{"prompt": "Hello?", "completion": "World."}, {"prompt": "Hello?", "completion": "World."},
            {"prompt": "hello", "completion": "world"}, {"prompt": "Other?", "completion": "Yes."}]
    f.write_text("\n".join(json.dumps(r) for r in rows))
    s = studio.data_prepare([str(f)], "dups", val_fraction=0)
    assert s["records"] == 2 and s["duplicates_removed"] == {"exact": 1, "near": 1}


def test_truncation_counted(tmp_path, studio):
    f = tmp_path / "long.jsonl"
    f.write_text(json.dumps({"prompt": "Tell me.", "completion": "word " * 300}) + "\n" +
                 json.dumps({"prompt": "word " * 300, "completion": "short"}) + "\n" +
                 json.dumps({"prompt": "Hi?", "completion": "Hi."}) + "\n")
    s = studio.data_prepare([str(f)], "long", max_tokens=64, val_fraction=0)
    assert s["truncated"] == 1 and s["dropped_too_long"] == 1 and s["records"] == 2


def test_bad_name_and_recipe(studio):
    with pytest.raises(ConfigError, match="not allowed"):
        studio.data_prepare(["x.jsonl"], "../etc")
    with pytest.raises(ConfigError, match=r"e\.g\. Ete-2024-notes\)"):  # a name it would take
        studio.data_prepare(["x.jsonl"], "Été 2024 notes!")
    with pytest.raises(ConfigError, match="Unknown recipe"):
        studio.data_prepare([str(SAMPLE / "product_faq.jsonl")], "x", recipe="magic")


def test_large_jsonl_streams_with_bounded_memory(tmp_path, studio):
    import tracemalloc

    f = tmp_path / "big.jsonl"
    row = '{"text": "%s"}\n'
    with open(f, "w") as out:
        i = 0
        while out.tell() < 20 * 2**20:
            out.write(row % (f"record {i} " + "lorem ipsum dolor sit amet " * 30))
            i += 1
    issues: list[Issue] = []
    tracemalloc.start()
    n = sum(1 for _ in iter_path(f, issues))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n == i and not issues
    assert peak < 5 * 2**20, f"reading 20 MB held {peak / 2**20:.1f} MB"


def test_cli_prepare_json_contract(studio):
    r = run_cli("data", "prepare", str(SAMPLE / "product_faq.jsonl"), "--name", "cli-faq",
                "--max-tokens", "128", "--val-fraction", "0.25", "--json", home=studio.home.root)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert isinstance(out["records"], int) and out["records"] == 80
    assert out["splits"] == {"train": 60, "validation": 20}
    for key in ("tokens", "truncated", "duplicates_removed", "errors"):
        assert key in out
    r = run_cli("data", "list", "--json", home=studio.home.root)
    assert "cli-faq" in {d["name"] for d in json.loads(r.stdout)}
    r = run_cli("data", "show", "cli-faq", "--json", home=studio.home.root)
    assert json.loads(r.stdout)["examples"]


# Minimal templates written here, each with one feature of a family's real template.
QWEN3_LIKE = (  # an empty thinking block on the last answer only (Qwen3 without reasoning)
    "{% for m in messages %}{% if m.role == 'assistant' %}<|im_start|>assistant\n"
    "{% if loop.last %}<think>\n\n</think>\n\n{% endif %}{{ m.content }}<|im_end|>\n"
    "{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
GEMMA_LIKE = (  # no system role: the system text opens the first user turn
    "{% set sys = messages[0].content + '\n\n' if messages[0].role == 'system' else '' %}"
    "{% for m in messages if m.role != 'system' %}<start_of_turn>{{ 'model' if m.role == 'assistant' else 'user' }}\n"
    "{{ sys if loop.first else '' }}{{ m.content }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")


@pytest.mark.parametrize("template", [QWEN3_LIKE, GEMMA_LIKE], ids=["thinking", "no-system-role"])
def test_loss_mask_with_family_templates(tok, template):
    """Every answer is learned with its end-of-turn marker, nothing else is — also when a
    template renders the last answer differently (an empty think block) or folds the system
    text into the first user turn."""
    import copy

    t = copy.deepcopy(tok)
    t.chat_template = template
    msgs = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello there."}, {"role": "user", "content": "Price?"},
            {"role": "assistant", "content": "It costs 89 euros."}]
    enc = templates.encode(t, {"messages": msgs}, 512)
    learned = "".join(text for text, on in templates.preview_segments(t, enc) if on)
    rest = "".join(text for text, on in templates.preview_segments(t, enc) if not on)
    assert "Hello there." in learned and "It costs 89 euros." in learned
    assert "Hi" in rest and "Price?" in rest and "You are terse." in rest
    assert "Hello" not in rest and "89 euros" not in rest
    end = "<|im_end|>" if template is QWEN3_LIKE else "<end_of_turn>"
    assert learned.count(end) == 2 and rest.count(end) == 3 - (template is GEMMA_LIKE)
