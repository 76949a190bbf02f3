"""Document recipes on real documents: clean extraction, chunk and pair quality with what was
left out shown, generators (llama.cpp, a real OpenAI-compatible server on 127.0.0.1), cancel."""
import http.server
import json
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT
from studio.data import clean
from studio.data.ingest import iter_path
from studio.data.passages import keyphrases
from studio.data.questions import fallback_topic
from studio.data.recipes import Context, RecipeParams, qa_pairs
from studio.errors import Cancelled, ConfigError, DataError

DOCS = ROOT / "tests" / "data" / "docs"
LABELS = json.loads((DOCS / "labels.json").read_text())


def junk(labels: dict, text: str) -> bool:
    body = re.sub(r"^## .*$", "", text, flags=re.M)
    return any(re.search(rf"^\s*(\d+\s+)?{re.escape(h)}(\s+\d+)?\s*$", body, re.M)
               for h in labels["running_headers"]) or bool(
        re.search(r"(?:\. ?){4,}\s*\d+\s*$", text, re.M))


def test_line_cleaning_keeps_code_and_joins_hyphens():
    text = ("The library does DER manip-\nulation.\n\n2.4 Library Notes . . . . . . . 4\n\n"
            "```\nx = a-\nb\n```\n")
    out, notes = clean.clean_text(text)
    assert "manipulation" in out and "Library Notes" not in out
    assert "```\nx = a-\nb\n```" in out                                # code untouched
    assert notes["contents lines (dot leaders)"] == 1


@pytest.mark.parametrize("text,reason", [
    ("Too short: here.", "too short"),
    ("Values: " + " ".join(str(i * 37) for i in range(60)) + " are the offsets of the header "
     "fields in each record", "mostly numbers or symbols"),
    (" ".join(["card32"] * 30) + " the format of the table", "repetitive"),
    ("The feeder holds two kilograms of seed and reports every visit to the phone app.", None),
])
def test_chunk_quality_filter(text, reason):
    assert clean.chunk_problem(text) == reason


@pytest.mark.parametrize("pdf", sorted(p.name for p in DOCS.glob("*.pdf")))
def test_real_pdf_paragraphs_have_no_junk(studio, pdf):
    """Hand-labelled running headers and contents lines never reach the chunks; headings stay."""
    r = studio.data_prepare([str(DOCS / pdf)], f"doc-{pdf[:8]}", recipe="paragraphs", val_fraction=0)
    from studio.data.prepare import read_split

    rows = [x["text"] for x in read_split(r["path"], "train")]
    bad = [t[:100] for t in rows if junk(LABELS[pdf], t)]
    assert len(bad) <= 0.02 * len(rows), bad
    assert any(t.startswith("## ") or "\n## " in t for t in rows)     # headings kept as titles
    assert r["recipe_counters"]["removed: running headers, footers and page numbers"] > 0
    for word in LABELS[pdf]["hyphenated"]:
        assert any(word in t for t in rows) and not any(f"{word[:5]}- " in t for t in rows)


def test_scanned_and_encrypted_pdfs_say_what_to_do(studio, tmp_path):
    from pypdf import PdfWriter

    scanned = tmp_path / "scan.pdf"
    w = PdfWriter()
    w.add_blank_page(612, 792)
    w.write(scanned)
    with pytest.raises(DataError, match="no text layer.*OCR"):
        studio.data_prepare([str(scanned)], "scan", recipe="paragraphs")
    locked = tmp_path / "locked.pdf"
    w = PdfWriter(clone_from=str(DOCS / "shared-mime-info-spec.pdf"))
    w.encrypt("secret", algorithm="AES-128")
    w.write(locked)
    with pytest.raises(DataError, match="password-protected"):
        studio.data_prepare([str(locked)], "locked", recipe="paragraphs")
    assert not (studio.home.datasets / "scan").exists() and not (studio.home.datasets / "locked").exists()


def test_pairs_are_checked_and_what_was_left_out_is_shown(studio):
    """Headings as questions, repeats, ungrounded answers and duplicates are dropped and
    counted with examples; a fallback never asks about a URL or a heading."""
    tok = studio.tokenizer("smollm2-135m-instruct")
    doc = next(iter_path(DOCS / "libtasn1.pdf", [], "libtasn1.pdf"))
    calls = []

    def scripted(prompt: str) -> str:
        if "Passage:" not in prompt:  # one question per sentence, after a chunk gave nothing
            return "Nothing useful here"
        calls.append(prompt)
        passage = " ".join(prompt.split("Passage:", 1)[1].split()[:14])
        return ["Q: 2.5 Future developments\nA: 2.5 Future developments",       # a heading
                "Q: What does the library parse?\nA: Bananas and rockets.",     # ungrounded
                f"Q: What does this part describe?\nA: {passage}",
                f"Q: What does this part describe?\nA: {passage}",              # a duplicate
                ][len(calls) - 1] if len(calls) <= 4 else "nothing useful"
    ctx = Context(tok, RecipeParams(), scripted)
    doc.text = "\n\n".join(ctx.chunks(doc)[:6])
    out = list(qa_pairs(doc, ctx))
    questions = [ex["messages"][0]["content"] for ex in out]
    assert questions.count("What does this part describe?") == 1
    reasons = set(ctx.dropped)
    assert {"not a question (a heading or a statement)", "duplicate question"} <= reasons
    assert "ungrounded (the answer is not in the chunk)" in reasons
    for ex in out:
        if ex["meta"]["fallback"]:
            q = ex["messages"][0]["content"]
            assert not re.search(r"www|http|gnu\.org|@", q), q
    # the chunk's own words, past its heading and addresses: what the text is about
    assert fallback_topic("## Report bugs\n\nSee https://www.gnu.org/software/ and "
                          "help-libtasn1@gnu.org for the mailing list about tag decoding.") == "tag decoding"


def test_keyphrases_come_from_textrank_not_stopwords():
    text = ("The DER encoding of an ASN.1 structure is written by asn1_der_coding. The DER "
            "encoding rules give one canonical byte string for each structure, and the decoder "
            "reads the DER encoding back into the structure tree.")
    kws = keyphrases(text, 3)
    assert kws and all(k not in {"the", "and", "each", "one", "back"} for k in kws)
    assert any("encoding" in k or "structure" in k for k in kws)


# ---- generators -----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server():
    """llama-cpp-python's own OpenAI-compatible server with the embedded GGUF, on 127.0.0.1."""
    pytest.importorskip("llama_cpp")
    pytest.importorskip("sse_starlette")
    from studio.models.registry import embedded_gguf

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_gguf()),
                             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
                             "--model_alias", "smol"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    import httpx

    for _ in range(120):
        try:
            if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("llama_cpp.server did not start")
    yield url
    proc.kill()
    proc.wait(10)


def test_a_local_server_writes_the_pairs(studio, llama_server, tmp_path):
    doc = tmp_path / "feeder.md"
    doc.write_text("# The Nimbus Orbit\n\nThe Nimbus Orbit is a bird feeder that costs 89 dollars. "
                   "It holds two kilograms of seed and has a night mode that switches off the "
                   "camera at dusk.\n")
    from conftest import run_cli

    r = run_cli("data", "prepare", str(doc), "--name", "served", "--recipe", "qa-pairs",
                "--generator-url", llama_server, "--generator-model", "smol", "--json",
                home=studio.home.root)
    assert r.returncode == 0, r.stderr[-1500:]
    out = json.loads(r.stdout)
    assert out["generator"] == f"smol at {llama_server}" and out["records"] >= 1
    assert "expected_useful" not in (out["qa"] or {})   # a server's model: nothing measured of it


def fake_openai(takes: set[str]) -> tuple[http.server.ThreadingHTTPServer, list[str]]:
    """An OpenAI-compatible server that knows model 'smol' and takes only the response_format
    types in `takes` (any other gets 500, as llama-cpp-python's server answers json_schema)."""
    seen: list[str] = []

    class Api(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.reply(200, json.dumps({"data": [{"id": "smol"}]}).encode())

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            kind = (body.get("response_format") or {}).get("type", "plain")
            seen.append(kind)
            if kind != "plain" and kind not in takes:
                return self.reply(500, b"internal error")
            delta = {"choices": [{"delta": {"content": '{"ok": true}' if kind != "plain" else "plain"}}]}
            self.reply(200, f"data: {json.dumps(delta)}\n\ndata: [DONE]\n\n".encode(), "text/event-stream")

        def reply(self, code, data, kind="application/json"):
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


@pytest.mark.parametrize("takes, asked, got", [
    ({"json_schema"}, ["json_schema", "json_schema"], '{"ok": true}'),
    ({"json_object"}, ["json_schema", "json_object", "json_object"], '{"ok": true}'),  # llama-cpp-python
    (set(), ["json_schema", "json_object"], None),                                     # an older server
])
def test_a_server_is_asked_for_the_output_shape_it_takes(takes, asked, got, monkeypatch):
    from types import SimpleNamespace

    from studio.data import generators

    slept: list[float] = []
    monkeypatch.setattr(generators, "time", SimpleNamespace(sleep=slept.append))
    server, seen = fake_openai(takes)
    try:
        gen = generators.openai_compatible(f"http://127.0.0.1:{server.server_address[1]}/v1", "smol")
        msgs = [{"role": "user", "content": "pairs?"}]
        assert gen.constrained(msgs, {"type": "object"}, 16) == got
        assert slept == []  # probing costs no retries with back-off
        assert gen.constrained(msgs, {"type": "object"}, 16) == got  # the shape that worked is kept
        assert seen == asked
        assert gen.write("hello") == "plain"
    finally:
        server.shutdown()


def test_generator_endpoint_problems_are_said_before_work(studio, llama_server, tmp_path):
    from studio.data import generators

    with pytest.raises(DataError, match="has no model 'nope'. It has: smol"):
        generators.openai_compatible(llama_server, "nope")
    with pytest.raises(DataError, match="Cannot reach the generator"):
        generators.openai_compatible(f"http://127.0.0.1:{free_port()}/v1", "smol")
    with pytest.raises(ConfigError, match="must start with http"):
        generators.openai_compatible("localhost:11434", "smol")

    class Html(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"<html>a router login page</html>")

        def log_message(self, *a):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Html)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(DataError, match="not OpenAI's JSON.*router login"):
            generators.openai_compatible(url, "smol")
    finally:
        server.shutdown()
    doc = tmp_path / "a.md"
    doc.write_text("Some text about feeders that is long enough to be a chunk of its own here.")
    with pytest.raises(DataError, match="has no model"):
        studio.data_prepare([str(doc)], "never", recipe="qa-pairs", generator_url=llama_server,
                            generator_model="nope")
    assert not (studio.home.datasets / "never").exists()


def counting(pieces, flag: threading.Event, at: int, taken: list):
    """`pieces` passed on one by one and counted in `taken`; Cancel is pressed (`flag` set) as
    piece `at` is handed over — mid-answer, whatever the machine's speed."""
    for piece in pieces:
        taken.append(piece)
        if len(taken) == at:
            flag.set()
        yield piece


def test_cancel_stops_llama_cpp_mid_answer(studio, monkeypatch):
    """Cancel pressed at the 3rd token: no 4th token is taken, the answer is dropped."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from studio.data import generators
    from studio.models.registry import embedded_gguf

    flag, taken = threading.Event(), []
    real = llama_cpp.Llama.create_chat_completion
    monkeypatch.setattr(llama_cpp.Llama, "create_chat_completion",
                        lambda self, **kw: counting(real(self, **kw), flag, 3, taken))
    gen = generators.llama_cpp(embedded_gguf(), flag)
    with pytest.raises(Cancelled):
        gen("Write a very long story about a bird feeder, with many chapters." * 3)
    assert len(taken) == 3 and all(p["choices"][0]["finish_reason"] is None for p in taken)  # mid-answer


def test_web_pages_become_markdown_without_menus(studio, tmp_path):
    page = tmp_path / "help.html"
    page.write_text("<html><head><style>p{color:red}</style><script>track()</script></head><body>"
                    "<nav>Home | Shop | About</nav><h1>Nimbus Orbit help</h1><p>The Nimbus Orbit "
                    "feeder holds two kilograms of seed and sends a photo of every visitor.</p>"
                    "<pre><code>orbit reset --hard\n\norbit pair</code></pre>"
                    "<footer>Copyright 2026 Fernwick</footer></body></html>")
    r = studio.data_prepare([str(page)], "web", recipe="paragraphs", val_fraction=0)
    from studio.data.prepare import read_split

    text = "\n".join(x["text"] for x in read_split(r["path"], "train"))
    assert "# Nimbus Orbit help" in text and "two kilograms" in text
    assert "```\norbit reset --hard\n\norbit pair\n```" in text           # code block whole
    assert not any(w in text for w in ("track()", "color:red", "Home | Shop", "Copyright"))


def test_a_slow_generator_times_out_with_retries():
    """A server that passes the health check but never answers in time: a clear error after
    the retries, not a hang."""
    from studio.data import generators

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"data": [{"id": "m"}]}')

        def do_POST(self):
            time.sleep(2)

        def log_message(self, *a):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        gen = generators.openai_compatible(f"http://127.0.0.1:{server.server_address[1]}", "m",
                                           timeout=0.5, retries=1)
        with pytest.raises(DataError, match="failed 2 times: no answer within 0.5 s"):
            gen("hello")
    finally:
        server.shutdown()


def test_cancel_stops_a_server_answer_mid_stream(llama_server, monkeypatch):
    """Cancel pressed as the server's 3rd streamed line arrives: no 4th line is read (the
    request is dropped mid-answer, before its [DONE])."""
    import httpx

    from studio.data import generators

    flag = threading.Event()
    gen = generators.openai_compatible(llama_server, "smol", flag)
    assert gen("Say hello.")                                         # streamed answers arrive whole
    taken: list[str] = []
    real = httpx.Response.iter_lines
    monkeypatch.setattr(httpx.Response, "iter_lines", lambda self: counting(real(self), flag, 3, taken))
    with pytest.raises(Cancelled):
        gen("Write a very long story about a bird feeder, with many chapters." * 3)
    assert len(taken) == 3 and not any("[DONE]" in line for line in taken)


def test_a_question_that_echoes_the_worked_example_is_left_out():
    """Seen on real manuals: the embedded model carried the prompt's example ("the ls command")
    into questions about other sentences; such a question is dropped with its reason, while a
    question about a sentence that really has those words is kept."""
    from studio.data.questions import pair_problem, question_problem

    sentence = "Returns the TAG and the CLASS of one element inside a structure."
    assert question_problem("What is the output of the ls command with the TAG and the CLASS of one "
                            "element?", sentence) == "copies the prompt's worked example"
    assert question_problem("What does asn1_read_tag return for one element?",
                            "The asn1_read_tag function returns the TAG and the CLASS of one element.") is None
    assert question_problem("Which files does the ls command list in the listing?",
                            "The ls command lists the files in the listing of a directory.") is None
    chunk = "APT uses a caching scheme, so this operation is faster the second time it is run."
    assert pair_problem("How does the ls command use the caching scheme?", "It is faster the second time.",
                        chunk, 0.5) == "copies the prompt's worked example"
