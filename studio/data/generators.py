"""Generators for the data recipes: prompt → text, from the fastest engine at hand.

Owns three engines behind one callable: llama.cpp on a GGUF (the embedded model ships as one; on
a CPU it is several times faster than transformers), any OpenAI-compatible server the user runs
(Ollama, LM Studio, llama.cpp's server, vLLM: a base URL and a model name, health-checked before
any work, with timeouts and retries, answers streamed), and transformers as the fallback for a model that has no
GGUF. Every engine is greedy (the same chunk gives the same pairs) and checks the cancel event
while it writes, so Cancel stops within a token or a request. Also owns what was measured of a
generator model's pairs (MEASURED: the share a person found sensible), so the Data step can say
what to expect and offer a bigger generator; it does not judge pairs itself.
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import Cancelled, ConfigError, DataError

MAX_NEW_TOKENS = 192  # two Q/A pairs or a summary fit; a rambling model stops here


@dataclass
class Generator:
    """A callable prompt → text, with what it runs on (shown to the user), and — where the engine
    can hold its output to a JSON schema (llama.cpp's grammars, a server's response_format) —
    `json(messages, schema, max_tokens)`: the text, or None when this engine cannot constrain.
    `model`: the local model it runs, by the name the model box takes (the embedded model's name,
    a catalogue name, a folder's name), whichever engine runs it; None for a server's model."""
    write: Callable[[str], str]
    engine: str
    label: str
    constrained: Callable[[list[dict[str, str]], dict, int], str | None] | None = None
    model: str | None = None

    def __call__(self, prompt: str) -> str:
        return self.write(prompt)

    def json(self, messages: list[dict[str, str]], schema: dict, max_tokens: int) -> str | None:
        return self.constrained(messages, schema, max_tokens) if self.constrained else None


@dataclass(frozen=True)
class Measured:
    """How useful one generator model's question/answer pairs were found, and where: a person
    judged each pair sensible (the answer is in the document and answers the question as asked)."""
    model: str       # the model box's name for it (Generator.model)
    written_by: str  # how the Data step names it to the user
    share: float     # pairs judged sensible, 0–1
    measured: str    # how many, on what, where it is recorded


# Filled in from benchmarks/RESULTS.md; a model without a line here has not been measured.
MEASURED = {m.model: m for m in (
    Measured(model="smollm2-135m-instruct", written_by="the small embedded model (SmolLM2-135M-Instruct)",
             share=0.33, measured="hand-checked on three real manuals: 20 of 60 pairs of this recipe, "
             "9 of 27 with a reworded prompt — benchmarks/RESULTS.md, 2026-12-04"),
)}
BETTER = ("Use a bigger model as the generator: --generator-model NAME (a catalogue model, e.g. "
          "qwen2.5-3b; `python -m studio models list` lists them; downloaded once, run by "
          "transformers), or your own server through --generator-url URL --generator-model NAME "
          "(Ollama, LM Studio, llama.cpp's server).")


def expected_useful(gen: Generator) -> dict[str, Any] | None:
    """What share of the pairs `gen` writes to expect to be sensible, where that was measured and
    how to do better; None for a model that was not measured (a server's, a bigger one)."""
    m = MEASURED.get(gen.model or "")
    if m is None:
        return None
    return {"share": m.share, "measured": m.measured, "better": BETTER, "written_by": m.written_by}


def _cancelled(cancel: threading.Event | None) -> bool:
    return cancel is not None and cancel.is_set()


# ---- llama.cpp on a GGUF ---------------------------------------------------------------------
def llama_cpp(gguf_path, cancel: threading.Event | None = None, n_ctx: int = 2048) -> Generator:
    from llama_cpp import Llama

    from ..models import families
    from ..models.registry import llama_threads

    llm = Llama(model_path=str(gguf_path), n_ctx=n_ctx, verbose=False, seed=0,
                n_threads=llama_threads())
    fam = families.known_family_of(llm.metadata.get("tokenizer.chat_template"))
    stops = list(fam.stops) if fam else None

    def chat(messages: list[dict[str, str]], max_tokens: int, **extra) -> str:
        if _cancelled(cancel):  # before the prompt and grammar are processed (seconds when busy)
            raise Cancelled("Cancelled; nothing was saved.")
        parts = []
        for piece in llm.create_chat_completion(messages=messages, max_tokens=max_tokens,
                                                temperature=0.0, top_k=1, stop=stops, stream=True,
                                                **extra):
            if _cancelled(cancel):
                raise Cancelled("Cancelled; nothing was saved.")
            parts.append(piece["choices"][0]["delta"].get("content") or "")
        return "".join(parts).strip()

    def write(prompt: str) -> str:
        return chat([{"role": "user", "content": prompt}], MAX_NEW_TOKENS)

    def constrained(messages, schema, max_tokens):  # a grammar made from the schema
        return chat(messages, max_tokens, response_format={"type": "json_object", "schema": schema})
    return Generator(write, "llama.cpp", f"llama.cpp on {os.path.basename(str(gguf_path))}", constrained)


# ---- an OpenAI-compatible server -------------------------------------------------------------
def _base(url: str) -> str:
    url = (url or "").strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"Generator URL '{url}' must start with http:// or https:// — e.g. "
                          "http://127.0.0.1:11434/v1 for Ollama or http://127.0.0.1:1234/v1 for "
                          "LM Studio.")
    return url if url.endswith("/v1") else url + "/v1"


def openai_compatible(url: str, model: str, cancel: threading.Event | None = None,
                      timeout: float = 120.0, retries: int = 2, api_key: str | None = None) -> Generator:
    """Checks the server and the model name now; each request then has a timeout and retries."""
    import httpx

    base = _base(url)
    if not (model or "").strip():
        raise ConfigError("Give the generator's model name as the server knows it (e.g. "
                          "`ollama list` shows it), with --generator-model.")
    headers = {"Authorization": f"Bearer {api_key or os.environ.get('OPENAI_API_KEY') or 'none'}"}
    client = httpx.Client(timeout=httpx.Timeout(timeout, connect=5.0), headers=headers)
    try:
        r = client.get(f"{base}/models")
        r.raise_for_status()
        names = [m.get("id") for m in r.json().get("data", [])]
    except httpx.HTTPStatusError as e:
        raise DataError(f"The generator at {base} answered {e.response.status_code} to /models; "
                        "is it an OpenAI-compatible server (the URL usually ends in /v1)?") from None
    except (ValueError, AttributeError):
        raise DataError(f"The server at {base} answered /models with something that is not "
                        f"OpenAI's JSON ({r.text[:80]!r}); give the address of its OpenAI-compatible "
                        "API (usually ending in /v1).") from None
    except httpx.HTTPError as e:
        raise DataError(f"Cannot reach the generator at {base} ({type(e).__name__}). Start the "
                        "server (e.g. `ollama serve`, LM Studio's server tab, or `python -m "
                        "llama_cpp.server --model FILE.gguf`) and check the address.") from None
    if names and model not in names:
        raise DataError(f"The generator at {base} has no model '{model}'. It has: "
                        f"{', '.join(map(str, names[:12]))}.")

    server = OpenAIServer(client, base, model, cancel, timeout, retries)
    return Generator(server.write, "openai", f"{model} at {base}", server.constrained)


class OpenAIServer:
    """Requests to one checked OpenAI-compatible server: streamed answers, each with a timeout and
    retries, and the structured-output shape the server takes, found once (probing)."""

    # OpenAI's json_schema shape first, then llama-cpp-python's json_object + schema; the first
    # one the server takes is kept, and a server that takes neither gets the plain prompt
    SHAPES = (lambda schema: {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
              lambda schema: {"type": "json_object", "schema": schema})

    def __init__(self, client, base: str, model: str, cancel: threading.Event | None,
                 timeout: float, retries: int):
        self.client, self.base, self.model, self.cancel = client, base, model, cancel
        self.timeout, self.retries = timeout, retries
        self.untried = list(self.SHAPES)  # shapes not probed yet
        self.shape = None                 # the shape the server took

    def write(self, prompt: str) -> str:
        return self.send({"model": self.model, "messages": [{"role": "user", "content": prompt}],
                          "temperature": 0, "max_tokens": MAX_NEW_TOKENS, "stream": True})

    def constrained(self, messages, schema, max_tokens) -> str | None:
        body = {"model": self.model, "messages": messages, "temperature": 0, "stream": True,
                "max_tokens": max_tokens}
        if self.shape is not None:
            return self.send({**body, "response_format": self.shape(schema)})
        while self.untried:  # probing: one try per shape, so an unsupported one costs no retries
            shape = self.untried.pop(0)
            try:
                text = self.send({**body, "response_format": shape(schema)}, tries=1)
            except DataError:
                continue
            self.shape = shape
            return text
        return None  # an older server: the plain prompt and the parser do the job

    def send(self, body: dict[str, Any], tries: int | None = None) -> str:
        import httpx

        tries, base, last = tries or self.retries + 1, self.base, ""
        for attempt in range(tries):
            if _cancelled(self.cancel):
                raise Cancelled("Cancelled; nothing was saved.")
            try:
                with self.client.stream("POST", f"{base}/chat/completions", json=body) as r:
                    if r.status_code >= 500 or r.status_code == 429:
                        last = f"it answered {r.status_code}"
                    elif r.status_code >= 400:
                        raise DataError(f"The generator at {base} refused the request ({r.status_code}: "
                                        f"{r.read().decode(errors='replace')[:200]}).")
                    else:
                        return self.answer(r)
            except httpx.TimeoutException:
                last = f"no answer within {self.timeout:g} s"
            except httpx.HTTPError as e:
                last = f"the connection failed ({type(e).__name__})"
            except (ValueError, KeyError, IndexError, TypeError):
                raise DataError(f"The generator at {base} did not answer in OpenAI's format. "
                                "Check the URL points at its /v1 API.") from None
            if attempt + 1 < tries:
                time.sleep(min(8.0, 1.0 * 2 ** attempt))
        raise DataError(f"The generator at {base} failed {tries} times: {last}. Check the "
                        "server, or pick a smaller model there.")

    def answer(self, r) -> str:
        """The text of one streamed (server-sent events) or whole JSON answer; the cancel flag
        is read at every streamed piece."""
        if "text/event-stream" not in r.headers.get("content-type", ""):
            r.read()
            return (r.json()["choices"][0]["message"]["content"] or "").strip()
        parts = []
        for line in r.iter_lines():
            if _cancelled(self.cancel):
                raise Cancelled("Cancelled; nothing was saved.")
            if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                continue
            choice = json.loads(line[5:])["choices"][0]
            parts.append((choice.get("delta") or {}).get("content") or "")
        return "".join(parts).strip()


# ---- transformers (the fallback) ------------------------------------------------------------
def transformers_model(model, tok, cancel: threading.Event | None = None) -> Generator:
    from transformers import StoppingCriteria, StoppingCriteriaList

    from ..models.chat import GenSettings, generate

    class Cancel(StoppingCriteria):
        def __call__(self, input_ids, scores, **kw):
            return _cancelled(cancel)

    def write(prompt: str) -> str:
        out = generate(model, tok, [{"role": "user", "content": prompt}],
                       GenSettings(max_new_tokens=MAX_NEW_TOKENS),
                       stopping=StoppingCriteriaList([Cancel()]))["text"]
        if _cancelled(cancel):
            raise Cancelled("Cancelled; nothing was saved.")
        return out
    return Generator(write, "transformers", "transformers on the CPU/GPU")

