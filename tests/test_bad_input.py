"""Bad input, table-driven: every case ends in an exit code and a message that says what and
where — never a traceback, never silent garbage. Runs the CLI in-process (`studio.cli.main`);
an exception escaping it fails the case. The big-input cases also check peak memory.
"""
import contextlib
import io
import json
import random
import string
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, new_home

SAMPLE = ROOT / "assets" / "sample" / "product_faq.jsonl"
GOOD = '{"prompt": "What colour is the Orbit?", "completion": "It is green."}\n'


@pytest.fixture(scope="module")
def home(tmp_path_factory, embedded_model_dir):
    h = new_home(tmp_path_factory, "bad-input-home", embedded_model_dir)
    assert cli(h, "data", "prepare", str(SAMPLE), "--name", "faq")[0] == 0
    return h


def cli(home: Path, *argv: str) -> tuple[int, str, str]:
    from studio.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([*argv, "--home", str(home)])
        except SystemExit as e:  # argparse usage errors
            code = e.code
    return code, out.getvalue(), err.getvalue()


# ---- files: (name, bytes or text, expected exit code, words in the output) -----------------
def _zip(entries: dict, symlinks=(), store=False) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED if store else zipfile.ZIP_DEFLATED) as z:
        for n, data in entries.items():
            z.writestr(n, data)
        for n in symlinks:
            zi = zipfile.ZipInfo(n)
            zi.external_attr = 0o120777 << 16
            z.writestr(zi, "/etc/passwd")
    return buf.getvalue()


def _pdf(encrypt_user: str | None = None, encrypt_owner: str | None = None, blank=True) -> bytes:
    from pypdf import PdfWriter

    w = PdfWriter()
    w.add_blank_page(200, 200)
    if encrypt_user is not None:
        w.encrypt(encrypt_user, encrypt_owner or "owner", algorithm="AES-128")
    buf = io.BytesIO()
    w.write(buf)
    return buf.getvalue()


def _docx(text: str | None) -> bytes:
    import docx

    d = docx.Document()
    if text:
        d.add_paragraph(text)
    buf = io.BytesIO()
    d.save(buf)
    return buf.getvalue()


def _parquet(col) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table({"prompt": ["q1", "q2"], "completion": col}), buf)
    return buf.getvalue()


def _row(**kw) -> str:
    return json.dumps(kw) + "\n"


FILES = [
    ("deep.json", "[" * 100_000 + "]" * 100_000, 1, ["nested too deeply"]),
    ("deep.jsonl", '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}\n" + GOOD, 0, ["nested too deeply"]),
    ("bigint.jsonl", '{"prompt": "q", "completion": ' + "9" * 5000 + "}\n" + GOOD, 0, ["cannot read"]),
    ("surrogate.jsonl", '{"prompt": "q\\ud800", "completion": "a"}\n' + GOOD, 0, ["invalid Unicode"]),
    ("nan.jsonl", '{"prompt": "q", "completion": NaN}\n' + GOOD, 0, ["not a number"]),
    ("inf.jsonl", '{"prompt": "q", "completion": Infinity}\n' + GOOD, 0, ["not a number"]),
    ("list.jsonl", _row(prompt="q", completion=["a", "b"]) + GOOD, 0, ["'completion' is a list"]),
    ("dict.jsonl", _row(prompt="q", completion={"a": 1}) + GOOD, 0, ["'completion' is a dict"]),
    ("bool.jsonl", _row(prompt="q", completion=True) + GOOD, 0, ["true/false"]),
    ("number.jsonl", _row(prompt="How many?", completion=42), 0, []),
    ("parts.jsonl", _row(messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]},
                                   {"role": "assistant", "content": "hello"}]), 0, []),
    ("bin.parquet", _parquet([b"\xff\xfe\x00\x81", b"fine"]), 0, ["binary data"]),
    ("utf8bytes.parquet", _parquet([b"yes", b"no"]), 0, []),
    ("mixed.jsonl", GOOD.encode() + '{"prompt": "naïve?", "completion": "café"}\n'.encode("cp1252"),
     0, ["not UTF-8", "Windows-1252"]),
    ("u16.txt", ("Plain text saved as UTF-16 without a byte-order mark.\n" * 20).encode("utf-16-le"), 0, []),
    ("u16bom.jsonl", ("\ufeff" + GOOD).encode("utf-16-le"), 0, []),
    ("onenul.jsonl", GOOD.encode()[:10] + b"\x00" + GOOD.encode()[10:], 0,
     ["1 NUL byte (", "removed; the line was kept"]),
    ("nul.csv", b"prompt,completion\nWhat is it?,A bird feeder.\nHow much is it?,It costs 189 eu\x00ro\x00s.\n", 0,
     ["2 NUL bytes", "removed; the row was kept"]),
    ("nul.txt", b"Some notes about the feeder.\x00 It holds seed.\n" * 5, 0, ["5 NUL bytes", "text was kept"]),
    ("photo.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), 1, ["binary"]),
    ("empty.jsonl", "", 1, ["empty"]),
    ("blank.txt", "   \n\n  ", 1, ["empty"]),
    ("empty.zip", _zip({}), 1, ["archive is empty"]),
    ("symlink.zip", _zip({"a.jsonl": GOOD}, symlinks=["passwd.txt"]), 0, ["symbolic link"]),
    ("escape.zip", _zip({"../evil.jsonl": GOOD, "ok.jsonl": GOOD}), 0, ["escapes the archive"]),
    ("absolute.zip", _zip({"/etc/evil.jsonl": GOOD, "ok.jsonl": GOOD}), 0, ["absolute path"]),
    ("bomb.zip", _zip({"zeros.txt": b"0" * 5_000_000, "ok.jsonl": GOOD}), 0, ["compression ratio"]),
    ("nested.zip", _zip({"inner.zip": _zip({"a.jsonl": GOOD}), "ok.jsonl": GOOD}), 0,
     ["unsupported file type inside"]),
    ("fake.zip", "this is not a zip", 1, ["not a readable zip"]),
    ("locked.pdf", _pdf("secret"), 1, ["password-protected"]),
    ("ownerlock.pdf", _pdf("", "owner"), 1, ["no text layer"]),
    ("broken.pdf", b"%PDF-1.4\nthis is not really a pdf", 1, ["not a readable PDF"]),
    ("scan.pdf", _pdf(), 1, ["no text layer", "OCR"]),
    ("broken.docx", _zip({"word/nothing.xml": "<x/>"}), 1, ["not a readable .docx", "save it again"]),
    ("empty.docx", _docx(None), 1, [".docx has no text"]),
    ("tool.exe", b"MZ\x90\x00", 1, ["unsupported file type"]),
    ("number.json", "42", 1, ["not a list of records"]),
    ("numbers.json", "[1, 2, 3]", 1, ["item 1 is int"]),
    ("array.jsonl", "[1, 2]\n" + GOOD, 0, ["expected a JSON object"]),
    ("unterminated.jsonl", '{"prompt": "q\n' + GOOD, 0, ["not valid JSON (", "; column"]),
    ("noheader.csv", "\nq,a\n", 1, ["no header"]),
    ("fields.csv", "prompt,completion\nq,a,extra\nq2,a2\n", 0, ["3 fields but the header has 2"]),
    ("longcell.csv", "prompt,completion\nq," + "x" * 200_000 + "\n", 0, []),
    ("tabs.tsv", "prompt\tcompletion\nq\ta\n", 0, []),
    ("columns.jsonl", _row(foo="x", bar="y"), 1, ["match no known format"]),
    ("role.jsonl", _row(messages=[{"role": "wizard", "content": "x"}]) + GOOD, 0, ["unknown role"]),
    ("noassistant.jsonl", _row(messages=[{"role": "user", "content": "x"}]) + GOOD, 0,
     ["no assistant turn"]),
    ("emptyanswer.jsonl", _row(prompt="q", completion="  ") + GOOD, 0, ["answer is empty"]),
    ("speaker.jsonl", _row(conversations=[{"from": "alien", "value": "x"}]) + GOOD, 0, ["unknown speaker"]),
    ("alpaca.jsonl", _row(instruction="Do it", output="") + GOOD, 0, ["answer is empty"]),
    ("hugefield.jsonl", _row(prompt="q", completion="x" * 2_000_000) + GOOD, 0, ["1,000,000"]),
    ("text.jsonl", _row(text=["not", "text"]) + _row(text="Real text."), 0, ["'text' is a list"]),
]


@pytest.mark.parametrize("name, content, code, words", FILES, ids=[f[0] for f in FILES])
def test_bad_files(home, tmp_path, name, content, code, words):
    f = tmp_path / name
    f.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
    got, out, err = cli(home, "data", "prepare", str(f), "--name", "case", "--json")
    text = out + err
    assert got == code, (got, text[-1500:])
    assert "Traceback" not in text
    for w in words:
        assert w in text, (w, text[-1500:])
    assert " at at " not in text
    if got == 0:  # what was kept is text, never a Python repr of a list
        folder = Path(json.loads(out)["path"])
        rows = (folder / "train.jsonl").read_text() + (folder / "validation.jsonl").read_text()
        assert "['" not in rows and "b'" not in rows


def test_a_csv_row_with_nul_bytes_is_kept_clean_and_named(home, tmp_path):
    """A NUL byte in a CSV row (a broken export) is removed, and the row is named by its line."""
    f = tmp_path / "nul.csv"
    f.write_bytes(b"question,answer\nWhat is it?,A feeder.\nHow much?,189 eu\x00ros\nWho?,Fernwick.\n")
    code, out, _ = cli(home, "data", "prepare", str(f), "--name", "nulcsv", "--val-fraction", "0", "--json")
    assert code == 0
    got = json.loads(out)
    assert [(e["line"], e["reason"]) for e in got["errors"]] == [
        (3, "1 NUL byte (\\x00, left by a broken export) removed; the row was kept")]
    rows = (Path(got["path"]) / "train.jsonl").read_text()
    assert "189 euros" in rows and "\\u0000" not in rows and got["records"] == 3


def test_no_python_reprs_in_prepared_data(home, tmp_path):
    f = tmp_path / "reprs.jsonl"
    f.write_text(_row(prompt=["a", "b"], completion="x") + _row(prompt="q", completion=b"x".hex())
                 + _row(prompt="What is 2+2?", completion=4))
    code, out, _ = cli(home, "data", "prepare", str(f), "--name", "reprs", "--json")
    path = Path(json.loads(out)["path"])
    rows = (path / "train.jsonl").read_text() + (path / "validation.jsonl").read_text()
    assert "['a', 'b']" not in rows and '"4"' in rows


# ---- flags and settings ------------------------------------------------------------------------
CLI = [
    # data prepare flags
    (["data", "prepare", str(SAMPLE), "--name", "x", "--map", "prompt"], 1, ["should look like ours=theirs"]),
    (["data", "prepare", str(SAMPLE), "--name", "x", "--map", "prompt=nope", "--map", "completion=answer"],
     1, ["mapped column 'nope'"]),
    (["data", "prepare", str(SAMPLE), "--name", "../etc"], 1, ["not allowed"]),
    (["data", "prepare", str(SAMPLE), "--name", "x", "--recipe", "magic"], 2, ["invalid choice"]),
    (["data", "prepare", str(SAMPLE), "--name", "x", "--val-fraction", "1.5"], 1, ["val_fraction"]),
    (["data", "prepare", str(SAMPLE), "--name", "x", "--set", "nope=1"], 1, ["unknown key 'nope'"]),
    (["data", "prepare", str(SAMPLE), "--name", "x", "--max-tokens", "-5"], 1, ["max_tokens"]),
    (["data", "prepare", "/no/such/file.jsonl", "--name", "x"], 1, ["cannot be read"]),
    (["data", "prepare", str(ROOT / "assets"), "--name", "x"], 1, ["unsupported file type"]),
    (["data", "show", "nope"], 1, ["No dataset named 'nope'"]),
    # training settings (all refused before a run exists)
    *[(["train", "--preset", "cpu-quickstart", "--dataset", "faq", "--set", s], 1, w) for s, w in [
        ("train.lr=.nan", ["finite"]), ("train.lr=.inf", ["finite"]), ("lora.alpha=.inf", ["finite"]),
        ("lora.alpha=-1", ["between"]), ("train.lr=-1", ["between"]), ("train.lr=fast", ["must be a number"]),
        ("lora.rank=0", ["between 1"]), ("lora.rank=8.5", ["whole number"]),
        ("lora.rank=99999999", ["between"]), ("train.max_steps=-1", ["between 0"]),
        ("train.dtype=fp64", ["allowed"]), ("method=full", ["allowed: lora, qlora"]),
        ("quant.bits=3", ["allowed: 4, 8"]), ("train.nope=1", ["unknown key 'train.nope'"]),
        ("train.lr", ["key=value"]), ("train.lr=[1", ["Cannot read the value"]),
        ("train=3", ["mapping"]), ("train.micro_batch=0", ["between 1"]),
        ("train.warmup_ratio=0.9", ["between"]), ("train.schedule=weird", ["allowed"]),
        ("train.max_len=8", ["between 16"]), ("train.seed=-1", ["between 0"]),
        ("lora.dropout=2", ["between"]), ("train.epochs=1e9", ["between"]),
        ("train.optimizer=lion", ["allowed"]), ("lora.targets=5", ["must be text"]),
        ("train.packing=maybe", ["true or false"]), ("train.loss=fast", ["allowed: chunked, full"]),
        ("train.loss_chunk=0", ["between 1"]), ("train.offload=on", ["nothing to move"])]],
    (["train", "--preset", "nope", "--dataset", "faq"], 1, ["No preset named 'nope'"]),
    (["train", "--preset", "../../etc/passwd", "--dataset", "faq"], 1, ["No preset named"]),
    (["train", "--preset", "cpu-quickstart", "--dataset", "nope"], 1, ["No dataset named 'nope'"]),
    (["train", "--dataset", "faq"], 1, ["needs --preset"]),
    (["train", "--resume", "nope"], 1, ["No run with id 'nope'"]),
    (["train", "--resume", "nope", "--preset", "cpu-quickstart"], 1, ["leave out"]),
    (["train", "--preset", "cpu-quickstart", "--dataset", "faq", "--model", "no-such-model"], 1,
     ["Unknown model 'no-such-model'"]),
    (["train", "--preset", "cpu-quickstart", "--dataset", "faq", "--max-steps", "-3"], 1, ["between 0"]),
    (["train", "--preset", "cpu-quickstart", "--dataset", "faq", "--max-steps", "x"], 2, ["invalid int"]),
    # export
    (["export", "--run", "nope", "--format", "gguf"], 1, ["No run with id 'nope'"]),
    (["export", "--model", "no-such-model", "--format", "gguf"], 1, ["Unknown model"]),
    (["export", "--format", "gguf"], 2, ["one of the arguments --run --model is required"]),
    (["export", "--run", "a", "--model", "b", "--format", "gguf"], 2, ["not allowed with"]),
    (["export", "--model", "smollm2-135m-instruct", "--format", "weird"], 2, ["invalid choice"]),
    (["export", "--model", "smollm2-135m-instruct", "--format", "adapter"], 1, ["needs a training run"]),
    (["export", "--model", "smollm2-135m-instruct", "--format", "gguf", "--quant", "q3_weird"], 1,
     ["Unknown quant 'q3_weird'"]),
    (["export", "--model", "smollm2-135m-instruct", "--format", "gguf", "--out", "/no/such/dir/x.gguf"],
     1, ["does not exist"]),
    # estimate
    (["estimate", "--model", "llama-3.1-8b", "--seq-len", "0"], 1, ["between 16"]),
    (["estimate", "--model", "llama-3.1-8b", "--batch", "0"], 1, ["between 1"]),
    (["estimate", "--model", "llama-3.1-8b", "--rank", "0"], 1, ["between 1"]),
    (["estimate", "--model", "llama-3.1-8b", "--vram-gb", "-5"], 1, ["must be positive"]),
    (["estimate", "--model", "llama-3.1-8b", "--gpu", "rtx-409"], 1, ["Unknown GPU", "Did you mean"]),
    (["estimate", "--model", "nope-7b"], 1, ["Unknown model 'nope-7b'"]),
    (["estimate", "--model", "llama-3.1-8b", "--bits", "4"], 1, ["goes with --method qlora"]),
    (["estimate", "--model", "llama-3.1-8b", "--seq-len", "abc"], 2, ["invalid int"]),
    (["estimate", "--model", "llama-3.1-8b", "--targets", "nope"], 1, ["is not a linear layer"]),
    (["estimate", "--model", "llama-3.1-8b", "--method", "qlora", "--bits", "3"], 2, ["invalid choice"]),
    # look-ups
    (["runs", "show", "nope"], 1, ["No run with id 'nope'"]),
    (["runs", "stop", "nope"], 1, ["No run with id 'nope'"]),
    (["runs", "delete", "nope"], 1, ["No run with id 'nope'"]),
    (["compare", "--run", "nope", "--prompt", "hi"], 1, ["No run with id 'nope'"]),
    (["report", "--run", "nope"], 1, ["No run with id 'nope'"]),
    (["models", "info", "nope"], 1, ["Unknown model 'nope'"]),
    (["presets", "show", "nope"], 1, ["No preset named 'nope'"]),
]


@pytest.mark.parametrize("argv, code, words", CLI, ids=[" ".join(c[0][:3] + c[0][-1:])[:60] for c in CLI])
def test_bad_flags(home, argv, code, words):
    before = sorted(p.name for p in (home / "runs").iterdir())
    got, out, err = cli(home, *argv)
    text = out + err
    assert got == code, (got, text[-1500:])
    assert "Traceback" not in text
    for w in words:
        assert w in text, (w, text[-1500:])
    assert sorted(p.name for p in (home / "runs").iterdir()) == before  # nothing half-made


def test_unknown_model_lists_names_once_and_suggests_the_catalogue(home):
    _, _, err = cli(home, "models", "info", "smollm2-135m-instruc")
    names = err.split("Names:")[1]
    assert names.count("smollm2-135m-instruct") == 1 and names.count("qwen3-0.6b") == 1
    _, _, err = cli(home, "models", "info", "qwen3-0.6")       # a typo of a catalogue name
    assert "Did you mean: qwen3-0.6b" in err


def test_export_never_overwrites_without_force(home, tmp_path):
    mine = tmp_path / "mine.gguf"
    mine.write_text("my precious file")
    code, _, err = cli(home, "export", "--model", "smollm2-135m-instruct", "--format", "gguf",
                       "--quant", "f16", "--out", str(mine))
    assert code == 1 and "already exists" in err and "--force" in err
    assert mine.read_text() == "my precious file"
    folder = tmp_path / "a-folder"
    folder.mkdir()
    code, _, err = cli(home, "export", "--model", "smollm2-135m-instruct", "--format", "gguf",
                       "--quant", "f16", "--out", str(folder))
    assert code == 1 and "is a folder" in err
    (folder / "keep.txt").write_text("x")
    code, _, err = cli(home, "export", "--model", "smollm2-135m-instruct", "--format", "ollama",
                       "--quant", "f16", "--out", str(folder))
    assert code == 1 and "not empty" in err and (folder / "keep.txt").exists()


def test_default_export_path_stays_under_exports(home, tmp_path):
    from studio.export.service import safe_label

    assert safe_label("..") == "model" and "/" not in safe_label("a/b/../c")


# ---- big inputs: bounded memory --------------------------------------------------------------
def _peak_growth_mb(fn) -> float:
    import psutil

    from studio.train.measure import PeakRSS

    base = psutil.Process().memory_info().rss
    with PeakRSS() as p:
        fn()
    return (p.peak - base) / 2**20


def test_a_50mb_line_is_skipped_with_flat_memory(home, tmp_path):
    f = tmp_path / "huge-line.jsonl"
    rnd = random.Random(0)
    chunk = "".join(rnd.choice(string.ascii_letters) for _ in range(2**20))
    with open(f, "w") as out:
        out.write('{"prompt": "q", "completion": "' + chunk * 50 + '"}\n' + GOOD)
    result = {}
    grow = _peak_growth_mb(lambda: result.update(r=cli(home, "data", "prepare", str(f), "--name",
                                                        "huge", "--json")))
    code, out, err = result["r"]
    assert code == 0 and "over 4 MB" in out and grow < 150, (grow, err[-500:])


def test_a_big_zip_entry_is_streamed(home, tmp_path):
    rnd = random.Random(1)
    line = "".join(rnd.choice(string.ascii_letters) for _ in range(2**20))
    f = tmp_path / "big.zip"
    with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("rows.jsonl", "w") as w:
            w.write(('{"prompt": "q", "completion": "' + line * 40 + '"}\n').encode())
            w.write(GOOD.encode())
    result = {}
    grow = _peak_growth_mb(lambda: result.update(r=cli(home, "data", "prepare", str(f), "--name",
                                                        "bigzip", "--json")))
    code, out, _ = result["r"]
    assert code == 0 and "over 4 MB" in out and grow < 150, grow


def test_suite_size():
    n = len(FILES) + len(CLI) + 7
    print(f"\nbad-input suite: {n} cases")
    assert n >= 100
