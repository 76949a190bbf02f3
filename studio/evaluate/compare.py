"""Base vs tuned on one copy of the weights: the engine behind the Compare step and the report.

Owns loading a run's adapter onto the (cached) base model with PEFT and toggling it — base
answers come from `disable_adapter()`, so there is one copy of the base weights, never two —
plus the checks that a run can be compared (it has an adapter, its folder exists, the adapter
belongs to this base model). The llama.cpp engine (base GGUF + LoRA GGUF) lives here too, and
CompareService: the Compare step's answers and the report, with explicit dependencies.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import FeatureUnavailable, RunError
from ..paths import RUN, adapter_dir, read_events


def check_base(run: dict[str, Any], model_ref: str) -> None:
    if model_ref != run["model"]:
        raise RunError(f"Run {run['id']}'s adapter was trained on '{run['model']}', not on "
                       f"'{model_ref}'. An adapter only fits the base model it was trained on; "
                       f"compare with --model {run['model']} (the default).")


class Pair:
    """A PEFT-wrapped base model with any number of run adapters loaded by name.

    Which adapter is selected, whether it is switched off (the base side) and its strength are
    state of the one shared model: `hold()` takes the pair's lock for a whole piece of work
    (a chat answer, a report, a benchmark), so two requests that overlap — a second tab, a
    question while the report runs — take turns instead of scoring one side with the other's
    switch."""

    def __init__(self, base_model, tok):
        import threading

        self.base, self.tok, self.model = base_model, tok, None
        self.memo = None  # the base model's answers to the fixed sets, kept (base_answers.Memo)
        self.loaded: dict[str, tuple[str, int]] = {}  # run id → (adapter name, weights' mtime)
        self.lock = threading.RLock()

    @contextmanager
    def hold(self, run_id: str, adapter: Path) -> Iterator["Pair"]:
        """This run's adapter selected and the pair to this caller alone until the block ends."""
        with self.lock:
            self.use(run_id, adapter)
            yield self

    def use(self, run_id: str, adapter: Path) -> None:
        """Select the run's adapter, loading it first — again when its weights changed since (a
        new adapter strength): the new copy is loaded before the old one is dropped."""
        from peft import PeftModel

        stamp = (adapter / "adapter_model.safetensors").stat().st_mtime_ns
        old = self.loaded.get(run_id)
        if old is None or old[1] != stamp:
            name = run_id if old is None else f"{run_id}@{stamp}"
            if self.model is None:
                self.model = PeftModel.from_pretrained(self.base, str(adapter), adapter_name=name)
                self.model.eval()
            else:
                self.model.load_adapter(str(adapter), adapter_name=name)
            self.model.set_adapter(name)
            if old is not None:
                self.model.delete_adapter(old[0])
            self.loaded[run_id] = (name, stamp)
        self.model.set_adapter(self.loaded[run_id][0])

    @contextmanager
    def side(self, which: str) -> Iterator[Any]:
        """`with pair.side("base") as m:` — the adapter is off for base, on for tuned (under the
        pair's lock, so a side is never switched under another request's feet)."""
        ctx = self.model.disable_adapter() if which == "base" else nullcontext()
        with self.lock, ctx:
            yield self.model


def llama_engine(base_gguf: Path, lora_gguf: Path | None, n_ctx: int = 2048):
    """A llama.cpp model (optionally with a LoRA GGUF); raises when llama-cpp-python is missing."""
    from ..models.registry import llama_cpp_available

    ok, why = llama_cpp_available()
    if not ok:
        raise FeatureUnavailable(why)
    from llama_cpp import Llama

    from ..models.registry import llama_threads

    kwargs: dict[str, Any] = {"model_path": str(base_gguf), "n_ctx": n_ctx, "verbose": False,
                              "seed": 0, "n_threads": llama_threads()}
    if lora_gguf is not None:
        kwargs["lora_path"] = str(lora_gguf)
    return Llama(**kwargs)


def llama_chat(llm, messages: list[dict[str, str]], max_new_tokens: int, temperature: float,
               seed: int) -> str:
    from ..models import families

    fam = families.known_family_of(llm.metadata.get("tokenizer.chat_template"))
    out = llm.create_chat_completion(messages=messages, max_tokens=max_new_tokens,
                                     temperature=temperature, seed=seed,
                                     stop=list(fam.stops) if fam else None,
                                     top_k=1 if temperature == 0 else 40)
    return (out["choices"][0]["message"]["content"] or "").strip()


def conversation(prompt: str, system: str | None = None,
                 history: list[dict[str, str]] | None = None) -> list[dict[str, str]]:
    from ..errors import ConfigError

    from ..models.chat import plain_messages

    if not prompt or not prompt.strip():
        raise ConfigError("The prompt is empty; type a question to compare the answers.")
    return ([{"role": "system", "content": system}] if system else []) + plain_messages(history or []) + [
        {"role": "user", "content": prompt}]


class CompareService:
    """Base vs tuned answers and the did-it-learn report. Dependencies: the store, the model
    cache, run and dataset look-ups, and a maker of the base model's GGUF (llama.cpp engine)."""

    ENGINES = ("hf", "llama.cpp")

    def __init__(self, store, cache, run: Callable[[str], dict[str, Any]],
                 dataset: Callable[[str], dict[str, Any]], base_gguf: Callable[[str], Path],
                 answers_dir: Path | None = None):
        self.store, self.cache, self.run, self.dataset = store, cache, run, dataset
        self.base_gguf, self.answers_dir = base_gguf, answers_dir

    def pair_for(self, run_id: str, model: str | None = None):
        """The cached base model with this run's adapter loaded and selected (for one look;
        work that generates or scores holds it with `session`)."""
        with self.session(run_id, model) as (run, pair):
            return run, pair

    @contextmanager
    def session(self, run_id: str, model: str | None = None) -> Iterator[tuple[dict[str, Any], Pair]]:
        """(run, pair) with this run's adapter selected, the pair held by this caller alone for
        the block: overlapping requests on the shared model take turns."""
        from ..models import registry as models

        run = self.run(run_id)
        check_base(run, model or run["model"])
        adapter = adapter_dir(run)
        path = self.cache.path(run["model"])
        pair = self.cache.heavy(("pair", str(path)), lambda: Pair(
            models.load_model(path, self.cache.device()), self.cache.tokenizer(run["model"])))
        with pair.hold(run_id, adapter):
            if pair.memo is None:
                from ..retention.base_answers import memo_for

                pair.memo = memo_for(self.answers_dir, run["model"], path, pair.base)
            yield run, pair

    def compare(self, run_id: str, prompt: str, system: str | None = None,
                history: list[dict[str, str]] | None = None, max_new_tokens: int = 128,
                temperature: float = 0.0, seed: int = 0, engine: str = "hf",
                model: str | None = None, strength: float | None = None,
                tuned_history: list[dict[str, str]] | None = None) -> dict[str, Any]:
        """The same prompt answered by base and tuned, same settings and seed; `strength` tries
        the tuned side at another adapter strength (in memory; `set_strength` keeps one).
        `history` is the conversation so far; `tuned_history` the tuned side's own, where its
        earlier answers differ (default: the same)."""
        from ..models.chat import GenSettings, generate
        from ..errors import ConfigError

        convs = {"base": conversation(prompt, system, history),
                 "tuned": conversation(prompt, system, history if tuned_history is None else tuned_history)}
        if engine not in self.ENGINES:
            raise ConfigError(f"Unknown engine '{engine}'; use {' or '.join(self.ENGINES)}.")
        if engine == "llama.cpp":
            return self._compare_llama(run_id, convs, max_new_tokens, temperature, seed)
        s = GenSettings(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
        with self.session(run_id, model) as (run, pair):
            out: dict[str, Any] = {"run_id": run_id, "engine": "hf", "model": run["model"]}
            for side in ("base", "tuned"):
                with pair.side(side) as m, self.at_strength(m, run, side, strength):
                    r = generate(m, pair.tok, convs[side], s)
                out[side] = r["text"]
                out[f"{side}_tokens"] = r["tokens"]
                out["prompt_truncated"] = r["prompt_truncated"]
        if out["prompt_truncated"]:
            out["notice"] = "The conversation was longer than the context; its start was cut."
        out["identical"] = out["base"] == out["tuned"]
        return out

    def stream(self, run_id: str, messages: list[dict[str, str]], side: str,
               max_new_tokens: int = 128, temperature: float = 0.0, top_p: float = 0.95,
               seed: int = 0, strength: float | None = None) -> Iterator[str]:
        """Yield growing answer text for one side (the UI streams base, then tuned). The
        thread that generates holds the pair while it generates (chat.stream), so another
        request waits for it and never sees this side's switch; a generation error is raised
        here at once."""
        from ..models.chat import GenSettings, stream
        from ..errors import ConfigError

        if side not in ("base", "tuned"):
            raise ConfigError(f"Unknown side '{side}': use base or tuned.")
        run, pair = self.pair_for(run_id)  # errors (no adapter, wrong model) raised here, at once

        @contextmanager
        def hold():
            with self.session(run_id) as (run_now, p), p.side(side) as m, \
                    self.at_strength(m, run_now, side, strength):
                yield m
        yield from stream(hold, pair.tok, messages, GenSettings(max_new_tokens, temperature, top_p, seed))

    @staticmethod
    def at_strength(model, run: dict[str, Any], side: str, strength: float | None):
        """The tuned side at `strength` (relative to the strength its adapter applies now)."""
        from ..retention import strength as st

        if side != "tuned" or strength is None:
            return nullcontext()
        from ..retention.delta import start_dir

        value = st.check(strength)
        if st.current(Path(run["path"])) == 0 and start_dir(run["path"]) is None:
            raise RunError("This run's adapter is set to strength 0 (the base model); set a "
                           "strength above 0 first (python -m studio strength RUN 1).")
        return st.at(model, Path(run["path"]), value)

    def heldout_questions(self, run_id: str, limit: int = 50) -> list[str]:
        """Questions the run never trained on, from its own dataset: the validation split and,
        where the dataset has one, its paraphrase file. None for data without questions."""
        from .report import heldout_sets

        run = self.run(run_id)
        try:
            dataset = self.dataset(run["dataset"])
        except Exception:  # the dataset was deleted: no questions to offer, nothing to break
            return []
        seen, out = set(), []
        for rows in heldout_sets(dataset, limit).values():
            for r in rows:
                q = r["messages"][-1]["content"]
                if q not in seen:
                    seen.add(q)
                    out.append(q)
        return out

    def strength(self, run_id: str) -> float:
        """The adapter strength the run keeps (1.0 = as trained)."""
        from ..retention import strength as st

        return st.current(Path(self.run(run_id)["path"]))

    def set_strength(self, run_id: str, value: float) -> dict[str, Any]:
        """Keep `value` as the run's adapter strength: Compare, the report and every export use
        it from now on; the stored report is computed again when next asked for."""
        from ..retention import strength as st

        run = self.run(run_id)
        adapter_dir(run)
        st.apply(Path(run["path"]), value)
        self.store.put_report(run_id, None)
        (Path(run["path"]) / RUN.report).unlink(missing_ok=True)
        return {"run_id": run_id, "strength": st.current(Path(run["path"])),
                "note": "Compare, the report and every export now use this strength; the adapter "
                        "as trained is kept in adapter-full/."}

    def _compare_llama(self, run_id, convs, max_new_tokens, temperature, seed):
        """Base GGUF vs the tuned side as llama.cpp runs it: base + LoRA GGUF, else the merged GGUF."""
        from ..errors import ExportError

        run = self.run(run_id)
        done = {e["format"]: e for e in self.store.list_exports(run_id)
                if Path(e["path"]).exists() and e["format"] in ("lora-gguf", "gguf")}
        if not done:
            raise ExportError("Answering with llama.cpp needs this run exported as a GGUF first: "
                              "export it in step 5 (gguf or lora-gguf), or run "
                              f"`python -m studio export --run {run_id} --format gguf`.")
        base = self.base_gguf(run["model"])  # made once (f16, ~2 s for the embedded model)
        if "lora-gguf" in done:
            tuned_model, lora = base, Path(done["lora-gguf"]["path"])
        else:
            tuned_model, lora = Path(done["gguf"]["path"]), None
        out = {"run_id": run_id, "engine": "llama.cpp", "model": run["model"],
               "tuned_file": str(lora or tuned_model)}
        for side, path, adapter in (("base", base, None), ("tuned", tuned_model, lora)):
            llm = llama_engine(path, adapter)
            out[side] = llama_chat(llm, convs[side], max_new_tokens, temperature, seed)
            del llm
        out["identical"] = out["base"] == out["tuned"]
        return out

    def tuned_answers(self, run_id: str, questions: list[str], max_new_tokens: int = 64) -> list[str]:
        """The run's tuned model's greedy answers to `questions`, one user turn each (batched)."""
        from ..models.chat import generate_batch

        with self.session(run_id) as (_, pair), pair.side("tuned") as m:
            return generate_batch(m, pair.tok, [[{"role": "user", "content": q}] for q in questions],
                                  max_new_tokens)

    def report(self, run_id: str, refresh: bool = False) -> dict[str, Any]:
        """The did-it-learn report (computed once, then read from the store), also written as
        report.json in the run folder."""
        import json

        from . import report as rep
        from .verdict import inconclusive

        if not refresh:
            cached = self.store.get_report(run_id)
            if cached:
                return cached
        with self.session(run_id) as (run, pair):
            data = rep.build(pair, run, self.dataset(run["dataset"]), read_events(run["path"]))
        data["cached"] = not inconclusive(data)  # else asking again computes it again
        self.store.put_report(run_id, data if data["cached"] else None)
        (Path(run["path"]) / RUN.report).write_text(json.dumps(data, indent=1))
        return data

    def report_file(self, run_id: str) -> Path:
        """report.json in the run folder: the report last computed (computing one first when
        there is none, or when the stored one predates the file)."""
        import json

        path = Path(self.run(run_id)["path"]) / RUN.report
        if not path.exists():
            data = self.report(run_id)
            if not path.exists():  # a stored report from before reports were written there
                path.write_text(json.dumps(data, indent=1))
        return path
