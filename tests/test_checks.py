"""The data Check (#43): clean document characters, duplicates, held-out leaks, suspect rows,
keep and drop — and the `data check` contract scripts rely on."""
import json
import threading
from pathlib import Path

import pytest

from conftest import ROOT, run_cli
from studio.data import chars, checks, clean, suspects
from studio.errors import Cancelled, DataError

CHARS = ROOT / "tests" / "data" / "chars"
FAQ = [json.loads(x) for x in (ROOT / "assets" / "sample" / "product_faq.jsonl").read_text().splitlines()]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


# ---- characters ---------------------------------------------------------------------------------
def test_a_real_groff_pdf_comes_out_without_ligatures_or_typeset_minus():
    """Two pages of bash(1) as Debian ships it: pdfminer alone gives 'ﬁ' and U+2212; ours none,
    and words the typesetter broke at a line end are whole again."""
    from pdfminer.high_level import extract_text

    raw = (CHARS / "bash-pages.pdf").read_bytes()
    plain = extract_text(str(CHARS / "bash-pages.pdf"))
    assert plain.count("\ufb01") >= 20 and plain.count("\u2212") >= 10   # the PDF really has them
    text, pages, _ = clean.pdf_markdown(raw)
    assert pages == 2 and not chars.SUSPECT.search(text)
    assert "specified" in text and "initialization" in text and "parameter" in text
    assert "ini- tialization" not in text and "-i" in text            # `−i` is the option -i


def test_character_fixes_spare_code_and_real_compounds():
    assert chars.fix_chars("ﬁle ½ x²") == "file 1⁄2 x2"                      # prose: NFKC
    assert chars.fix_chars("ls \u2212l x² ˜/ﬁle", code=True) == "ls -l x² ~/file"  # code: no NFKC
    vocab = chars.vocabulary("the currently-executing command")
    assert chars.join_hyphens("the currently-\nexecuting one", vocab) == "the currently-executing one"
    assert chars.join_hyphens("the pre-\nfix and meta-\nand control-keys") == "the prefix and meta- and control-keys"


def test_a_ruled_table_stays_row_by_row(tmp_path):
    fpdf = pytest.importorskip("fpdf")
    pdf = fpdf.FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=11)
    pdf.multi_cell(0, 6, "Properties of a feeder record, one per line of the table below.")
    with pdf.table() as table:
        for row in (("Property", "Type", "Default"), ("name", "String", "none"),
                    ("capacity", "Int", "2000"), ("weight", "Double", "1.5")):
            r = table.row()
            for cell in row:
                r.cell(cell)
    text, _, notes = clean.pdf_markdown(bytes(pdf.output()))
    assert "| capacity | Int | 2000 |" in text and "| Property | Type | Default |" in text
    assert notes["tables kept as rows"] == 1 and "String String" not in text


# ---- model-free findings --------------------------------------------------------------------
@pytest.mark.parametrize("question,vague", [
    ("What are these functions?", True), ("What is the relevant code?", True),
    ("What does this section describe?", True), ("What does asn1_der_coding return?", False),
    ("How much does the Nimbus Orbit cost?", False), ("Which option turns off job control?", False)])
def test_questions_that_need_their_chunk(question, vague):
    assert suspects.context_free(question) is vague


@pytest.fixture(scope="module")
def checked(studio, tmp_path_factory):
    """A Q/A file with the same question twice, a near copy, a held-out file copying one."""
    tmp = tmp_path_factory.mktemp("check")
    rows = [dict(r) for r in FAQ[:12]]
    rows.append({"question": FAQ[2]["question"], "answer": "It costs 200 euros."})        # line 13
    rows.append({"question": FAQ[4]["question"].replace("does the", "does your"), "answer": FAQ[4]["answer"]})  # 14
    rows.append({"question": "What are these functions?", "answer": "They parse DER."})   # 15
    data = write_jsonl(tmp / "faq.jsonl", rows)
    held = write_jsonl(tmp / "held.jsonl", [{"question": "Something never trained?", "answer": "no"},
                                            {"question": FAQ[6]["question"].lower(), "answer": "x"}])
    studio.data_prepare([data], "chk", val_fraction=0)
    return studio, tmp, held


def test_duplicates_leaks_and_lines_as_the_contract_says(checked):
    studio, tmp, held = checked
    r = run_cli("data", "check", "chk", "--heldout", held, "--quick", "--json", home=studio.home.root)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert set(out) == {"rows", "duplicates", "leaks", "suspects"} and out["rows"] == 15
    assert {"line": 13, "of": 3, "kind": "exact"} in out["duplicates"]
    assert {"line": 14, "of": 5, "kind": "near"} in out["duplicates"]
    assert out["leaks"] == [{"heldout_line": 2, "line": 7}]
    # line 13 asks line 3's question and says 200 euros where line 3 says 189; line 14 asks line
    # 5's nearly and says the same: only the first contradicts
    assert sorted(s["line"] for s in out["suspects"]) == [13, 15]
    assert all(set(s) == {"line", "why", "score"} for s in out["suspects"])
    conflict = next(s for s in out["suspects"] if s["line"] == 13)
    assert "line 3" in conflict["why"] and "'200'" in conflict["why"] and "'189'" in conflict["why"]


def test_rows_alike_but_for_their_numbers_are_neither_duplicates_nor_leaks():
    def row(i, q, a):
        msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        return checks.Row(i, "train", {"messages": msgs}, "f.jsonl", i + 1, q, a, q + " " + a)
    sample = [json.loads(x) for x in (ROOT / "assets" / "sample" / "arithmetic_qa.jsonl").read_text().splitlines()]
    held = [json.loads(x) for x in (ROOT / "assets" / "sample" / "arithmetic_qa_heldout.jsonl").read_text().splitlines()]
    rows = [row(i, r["question"], r["answer"]) for i, r in enumerate(sample)]
    assert checks.duplicates(rows, []) == [] and checks.leaks(held, rows) == []
    # the same words and the same numbers are still a copy, whatever their commas
    held = [{"question": "How much is 5 plus 6? Answer with the number only.", "answer": "11"},
            {"question": "Is the hall's capacity 1000 seats?", "answer": "yes"}]
    rows += [row(len(rows), "How much is 5 + 6? Answer with the number only.", "11"),
             row(len(rows) + 1, "Is the hall's capacity 1,000 seats?", "Yes.")]
    assert [(x["heldout_index"], rows[x["row"]].question) for x in checks.leaks(held, rows)] == [
        (0, "What is 5 plus 6? Answer with the number only."), (1, "Is the hall's capacity 1,000 seats?")]
    wing = "The east wing of the museum, rebuilt after the fire of the old town, now holds {} paintings."
    more = [row(len(rows), "So is the hall's capacity 1,000 seats?", "Yes."),
            row(len(rows) + 1, "What does the east wing hold?", wing.format("1,250")),
            row(len(rows) + 2, "What does the east wing hold?", wing.format("1,350"))]  # an exact question
    assert sorted((d["row"], d["kind"]) for d in checks.duplicates(rows + more, [])) == [
        (len(rows), "near"), (len(rows) + 2, "exact")]
    more[2] = row(len(rows) + 2, "And what does the east wing hold?", wing.format("1,350"))
    assert [d["row"] for d in checks.duplicates(rows + more, [])] == [len(rows)]
    assert checks.numbers("X200 costs 1,000 euros, 3.5 kg, 2 of them") == ["1000", "3.5", "2"]
    assert not checks.same_facts("Is the tax rate 1.5 percent?", "Is the tax rate 5.1 percent?")
    assert not checks.same_facts("What is 16 minus 5?", "What is 5 minus 16?")
    assert not checks.same_facts("Does the X200 fold?", "Does the X300 fold?")
    assert not checks.same_facts("X200 costs how much?", "X300 costs how much?")
    assert not checks.same_facts("What does the h100 cost?", "What does the h200 cost?")
    assert not checks.same_facts("Where is gate b12?", "Where is gate b14?")
    assert checks.same_facts("Where is gate B12?", "where is gate b12")
    # numbers written in words are numbers: in order, as digits
    assert checks.numbers("It lasts twenty-five years, one hundred and five days, 1,000 hours") == [
        "25", "105", "1000"]
    assert checks.numbers("2 million, two million, 1.5 million, three point five") == [
        "2000000", "2000000", "1500000", "3.5"]
    # neighbouring numbers stay apart; a lone "one" is a pronoun as often as a number
    assert checks.numbers("between five and ten, two and five, nineteen eighty-four") == [
        "5", "10", "2", "5", "19", "84"]
    assert checks.numbers("Which one is it? It is one of the oldest. No one knows.") == []
    assert not checks.same_facts("Is it two and five?", "Is it three and four?")
    # a number word before a long run of dashes or spaces (an underlined heading): no slow matching
    assert checks.numbers("Part one hundred\n" + "-" * 5000 + "x" + " " * 5000 + "two") == ["100", "2"]
    assert not checks.same_facts("What is five plus six?", "What is five plus sixteen?")
    assert checks.same_facts("Does it last two years?", "Does it last 2 years?")
    # nor are questions alike but for a name; one that leaves a name out may be the same question
    caps = [row(0, "What is the capital of Peru? Answer with the city's name only.", "Lima"),
            row(1, "How much does the Nimbus Orbit cost in the online shop today?", "189 euros.")]
    held = [{"question": "What is the capital of Chile? Answer with the city's name only.", "answer": "Santiago"},
            {"question": "Which city is the capital of Peru? Answer with the city's name only.", "answer": "Lima"},
            {"question": "How much does the Orbit cost in the online shop today?", "answer": "189 euros."}]
    assert [x["heldout_index"] for x in checks.leaks(held, caps)] == [1, 2]


def test_a_held_out_question_with_its_words_moved_is_a_leak_and_another_question_is_not():
    """Character shingles change with the word order ("the Zephyr X300 kettle's warranty" against
    "the warranty on the Zephyr X300 kettle": Jaccard 0.686, under LEAK); the same content words,
    moved, are a copy. A real rewording (a word more or another) is the held-out set's purpose and
    stays unflagged, and so do questions the same words turn into another: another model, the
    other direction, another tense or person, names swapped, too short to say."""
    def row(i, q):
        msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": "Two years."}]
        return checks.Row(i, "train", {"messages": msgs}, "f.jsonl", i + 1, q, "Two years.", q)
    train = ["What is the Zephyr X300 kettle's warranty?", "Who is the head teacher of Gorse Hill School?",
             "Who runs it?", "How do I convert Celsius to Fahrenheit?", "Does Acme own Beta Corp?",
             "When was the Orbit toaster released?", "What does his contract at Acme say?",
             "Can I wash the kettle lid in the dishwasher?"]
    held = [{"question": q} for q in (
        "What is the warranty on the Zephyr X300 kettle?",                 # moved: a leak
        "What is the warranty on the Zephyr X200 kettle?",                 # another model
        "Who is in charge of Gorse Hill School as head teacher?",          # reworded
        "It runs who?",                                                    # under MIN_REORDERED words
        "On the Zephyr X300 kettle, what is the warranty?",                # moved again
        "How do I convert Fahrenheit to Celsius?",                         # the other direction
        "Does Beta Corp own Acme?",                                        # names swapped
        "When will the Orbit toaster be released?",                        # another tense
        "What does her contract at Acme say?",                             # another person
        "Should we wash a kettle lid in our dishwasher?",                  # another modal and person
        "In the dishwasher, can I wash the kettle lid?")]                  # moved
    found = checks.leaks(held, [row(i, q) for i, q in enumerate(train)])
    assert [(x["heldout_index"], x["row"], x["how"]) for x in found] == [
        (0, 0, "same words"), (4, 0, "same words"), (10, 7, "near")]  # the last: shingles find it first
    assert found[0]["similarity"] < checks.LEAK
    assert checks.current({"leaks": found})["leaks"] == found     # a saved check keeps them
    from studio.cli.render import check_text
    assert "the same key words, moved" in check_text({"dataset": "d", "rows": 3, "duplicates": [], "leaks": found,
                                                      "suspects": [], "model_checked": False})


def test_rows_that_contradict_an_earlier_row_are_suspects_and_fuller_answers_are_not():
    def row(i, q, a, history=()):
        msgs = [*history, {"role": "user", "content": q}, {"role": "assistant", "content": a}]
        return checks.Row(i, "train", {"messages": msgs}, "f.jsonl", i + 1, q, a, q + " " + a)
    rows = [row(0, "When did the Velmora bridge open?", "It opened in 1931."),
            row(1, "When did the Velmora bridge open?", "It opened in 1931, designed by Ilse Marrow."),
            row(2, "When did the Velmora Bridge open?", "The bridge opened in 1934."),
            row(3, "Who designed the Velmora bridge?", "Ilse Marrow designed it."),
            row(4, "Who designed the Velmora bridge?", "Tomas Fenn designed it."),
            row(5, "How long is the warranty?", "2 years."),
            row(6, "How long is the warranty?", "2 years, from the day of purchase."),
            row(7, "What is 5 plus 6?", "It is 11."),
            row(8, "What is 5 plus 16?", "It is 21."),                   # another question
            row(9, "How many seats does the hall have?", "It has 1,000 seats."),
            row(10, "How many seats does the hall have?", "1000 seats."),  # the same number
            row(11, "And why?", "Because of the 3 storms.", [{"role": "user", "content": "Is it closed?"},
                                                             {"role": "assistant", "content": "Yes."}]),
            row(12, "And why?", "Because of 2 strikes.", [{"role": "user", "content": "Is it late?"},
                                                          {"role": "assistant", "content": "Yes."}])]
    got = {e["line"]: e for e in checks.conflicts(rows)}
    assert set(got) == {3, 5}                           # 1934 vs 1931; Tomas Fenn vs Ilse Marrow
    assert "'1934'" in got[3]["why"] and "line 1" in got[3]["why"] and got[3]["neighbour"]["where"] == "f.jsonl line 1"
    assert "'Tomas Fenn'" in got[5]["why"] and "'Ilse Marrow'" in got[5]["why"] and got[5]["score"] == 1.0
    # the sample arithmetic set asks many near-identical questions about different numbers
    sample = [json.loads(x) for x in (ROOT / "assets" / "sample" / "arithmetic_qa.jsonl").read_text().splitlines() if x.strip()]
    plain = [row(i, r["question"], r["answer"]) for i, r in enumerate(sample) if "question" in r]
    assert plain and checks.conflicts(plain) == []
    # a question asked nearly the same way (an apostrophe: Jaccard below the duplicates' 0.8)
    kettle = [row(0, "How long is the Zephyr kettle warranty?", "The Zephyr kettle has a 2-year warranty."),
              row(1, "How long is the Zephyr kettle's warranty?", "The warranty lasts 3 years.")]
    assert [e["line"] for e in checks.conflicts(kettle)] == [2]
    # numbers written in words: "two years" against "3 years" contradicts, against "2 years" not
    words = [row(0, "How long is the Zephyr kettle warranty?", "It lasts two years."),
             row(1, "How long is the Zephyr kettle warranty?", "It lasts 2 years from purchase."),
             row(2, "How long is the Zephyr kettle warranty?", "It lasts three years.")]
    got = checks.conflicts(words)
    assert [e["line"] for e in got] == [3] and "'3'" in got[0]["why"] and "'2'" in got[0]["why"]
    # "one of the oldest" states no number against "built in 1350"
    bridge = [row(0, "How old is the Velmora bridge?", "It is one of the oldest bridges in Tallinn."),
              row(1, "How old is the Velmora bridge?", "It was built in 1350.")]
    assert checks.conflicts(bridge) == []


def test_every_prepare_counts_what_the_check_finds(checked):
    studio, _, _ = checked
    d = studio.dataset("chk")
    found = checks.load(Path(d["path"]))
    assert found["rows"] == 15 and not found["model_checked"]
    assert {e["line"] for e in found["duplicates"]} == {13, 14}


def test_drop_makes_a_new_version_and_keep_is_remembered(checked):
    studio, tmp, held = checked
    studio.data_check("chk", held, suspects=False)
    kept_row = next(e["row"] for e in checks.load(Path(studio.dataset("chk@v1")["path"]))
                    ["duplicates"] if e["line"] == 14)
    studio.data_keep("chk@v1", [kept_row])
    out = studio.data_drop("chk@v1", "duplicates,leaks", held)
    assert out["name"] == "chk@v2" and out["dropped"] == 2 and out["records"] == 13
    assert studio.dataset("chk@v1")["records"] == 15                 # the old version stays
    lines = json.loads((Path(studio.dataset("chk@v2")["path"]) / "lines.json").read_text())
    assert [o[1] for o in lines["train"]] == [x for x in range(1, 16) if x not in (7, 13)]
    with pytest.raises(DataError, match="Nothing to drop"):     # the kept one is not dropped
        studio.data_drop("chk@v2", "duplicates")


def test_bad_inputs_say_what_to_do(checked, tmp_path):
    studio, tmp, _ = checked
    with pytest.raises(DataError, match="No dataset named 'nope'"):
        studio.data_check("nope", suspects=False)
    with pytest.raises(DataError, match="does not exist"):
        studio.data_check("chk@v1", str(tmp_path / "missing.jsonl"), suspects=False)
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n")
    with pytest.raises(DataError, match=r"gave no question/answer rows \(line 1: not valid JSON"):
        studio.data_check("chk@v1", str(broken), suspects=False)
    with pytest.raises(DataError, match="--drop takes"):
        studio.data_drop("chk@v1", "typos")
    with pytest.raises(DataError, match="Nothing to drop"):
        studio.data_drop("chk@v2", "leaks")          # its check: no held-out file of its own, no leaks
    r = run_cli("data", "check", "nope", "--json", home=studio.home.root)
    assert r.returncode == 1 and "No dataset named" in json.loads(r.stdout)["error"]


# ---- the base model's signals ------------------------------------------------------------------
def test_swapped_answers_are_flagged_and_clean_rows_mostly_not(studio, tmp_path):
    """Sixteen sample rows, two pairs of answers swapped: the base model finds them."""
    rows = [dict(r) for r in FAQ[:32:2]]
    for a, b in ((1, 9), (4, 13)):
        rows[a]["answer"], rows[b]["answer"] = rows[b]["answer"], rows[a]["answer"]
    studio.data_prepare([write_jsonl(tmp_path / "swapped.jsonl", rows)], "swapped", val_fraction=0)
    seen = []
    out = studio.data_check("swapped", progress=lambda f, msg: seen.append(f))
    flagged = {e["line"] for e in out["suspects"]}
    assert len({2, 10, 5, 14} & flagged) >= 3, out["suspects"]       # benchmarks: 92% of 48
    assert len(flagged - {2, 10, 5, 14}) <= 2 and seen and max(seen) > 0.9
    assert all(e["why"] and isinstance(e["score"], float) for e in out["suspects"])


def test_cancel_stops_the_model_pass(studio, tiny_model):
    from studio.data.checks import rows_of

    cancel = threading.Event()
    cancel.set()
    folder = Path(studio.dataset("faq")["path"]) if any(
        d["name"] == "faq" for d in studio.data_list()) else None
    if folder is None:
        studio.data_prepare([str(ROOT / "assets" / "sample" / "product_faq.jsonl")], "faq")
        folder = Path(studio.dataset("faq")["path"])
    model, tok = studio.loaded_model(tiny_model)
    with pytest.raises(Cancelled):
        suspects.find(model, tok, rows_of(folder), cancel=cancel)


@pytest.mark.parametrize("budget,head_rows", [(3072, 512), (160, 7)])
def test_batched_losses_equal_one_plain_pass_per_row(studio, tiny_model, monkeypatch, budget, head_rows):
    """The model pass batches rows, runs each group's shared template opening once and projects
    all answer positions together: each loss is still the answer's mean loss in a plain forward
    pass of that row alone (bfloat16 on a CPU: equal to a few hundredths of a nat) — also with
    batches and projections cut small, so their edges are crossed."""
    import torch

    monkeypatch.setattr(suspects, "BATCH_TOKENS", budget)
    monkeypatch.setattr(suspects, "HEAD_ROWS", head_rows)
    padded, real = [], suspects._batch_losses

    def batch(model, tok, seqs, shared):  # every batch within the budget, or one row alone
        padded.append((len(seqs), len(seqs) * (max(len(q) for q, _ in seqs) - shared)))
        return real(model, tok, seqs, shared)
    monkeypatch.setattr(suspects, "_batch_losses", batch)
    model, tok = studio.loaded_model(tiny_model)
    pairs = [(r["question"], r["answer"]) for r in FAQ[:6]] + [(None, r["answer"]) for r in FAQ[:6]]
    pairs.append((FAQ[7]["question"], FAQ[0]["answer"]))
    got = suspects.answer_losses(model, tok, pairs, tick=lambda n: None)
    for (q, a), loss in zip(pairs, got):
        seq, start = suspects._encode(tok, q, a, {})
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([seq])).logits[0, start - 1:len(seq) - 1].float()
        plain = float(torch.nn.functional.cross_entropy(logits, torch.tensor(seq[start:])))
        assert abs(loss - plain) < 0.05, (q, a[:40], loss, plain)
    assert all(rows == 1 or tokens <= budget for rows, tokens in padded), padded
    assert len(padded) > (2 if budget < 1000 else 1)


def test_a_check_saved_before_the_same_facts_rule_leaks_only_what_it_would_today(tmp_path):
    from studio.evaluate.report import leaked_heldout

    def leak(k, held, train, sim):
        return {"heldout_index": k, "heldout_question": held, "similarity": sim, "example": {"question": train}}
    checks.save(tmp_path, {"leaks": [
        leak(0, "How much is 35 + 3? Answer with the number only.", "How much is 38 + 5? Answer with the number only.", 0.74),
        leak(1, "How much is 5 plus 6?", "How much is 5 + 6?", 0.72),
        leak(2, "what is 5 plus 6", "What is 5 plus 6?", 1.0)]})
    assert leaked_heldout({"path": str(tmp_path)}) == {1, 2}
    # the Data step's list and a drop read the saved check the same way: the stale leak is gone
    assert [e["heldout_index"] for e in checks.load(tmp_path)["leaks"]] == [1, 2]
    # a damaged entry is left out, not the whole check
    checks.save(tmp_path, {"rows": 3, "leaks": [None, {"heldout_question": None, "similarity": 0.8}]})
    assert checks.load(tmp_path) == {"rows": 3, "leaks": []}


def test_the_report_gives_the_figure_without_leaked_questions():
    from studio.evaluate.verdict import verdict

    fig = {"base": {"paraphrased": {"fact_match": 0.1, "without_leaks": {"fact_match": 0.0}}},
           "tuned": {"paraphrased": {"fact_match": 0.8, "leaked": 3,
                                     "without_leaks": {"fact_match": 0.5}}}}
    text = verdict(fig, [], {"headline": "It learned."})
    assert "3 of them copy a training question" in text and "tuned 50%" in text


def test_the_data_steps_check_section_lists_keeps_and_drops(checked):
    from studio.ui import data_step
    from studio.ui.session import Session

    studio, _, held = checked
    text = data_step.check_md(studio.data_check("chk@v1", held, suspects=False))
    assert "repeats faq.jsonl line 3 (exact)" in text and "held-out line 2 asks it" in text
    assert "the question says nothing without its document chunk" in text
    assert "Give the #numbers" in data_step.keep_rows(studio, Session(dataset="chk@v1"), "")
    msg, after = data_step.drop_flagged(studio, Session(dataset="chk@v1"), [])
    assert "--drop takes" in msg and after.dataset == "chk@v1"
