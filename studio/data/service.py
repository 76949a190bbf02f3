"""The Data step as a service: prepare a dataset version, list, look up, show, preview, delete,
and its Check (checks.py: duplicates, leaks, suspects; keep them, or drop them into a new version).

Owns turning a prepared summary into a store row (the version number comes from the store),
resolving "name" / "name@vN" references (records.DatasetRef), and lending recipes a generator
(generators.py: a user's OpenAI-compatible server, else llama.cpp on the model's GGUF, else
transformers) that loads only when a recipe asks for text. Dependencies come in explicitly: the
store, the datasets folder and the model cache. The flow itself is prepare.py.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from ..models import registry as models
from ..errors import DataError
from ..faults import disk_guard, sweep
from ..locks import hold
from ..records import DatasetRef
from ..spec import apply_overrides, build
from . import generators, heldout as held, prepare as prep, templates
from .ingest import SUPPORTED
from .recipes import RECIPES, RecipeParams

STAT_KEYS = ("splits", "tokens", "truncated", "dropped_too_long", "duplicates_removed",
             "empty_removed", "formats", "histogram", "recipe_counters", "max_len", "heldout", "qa")

class DataService:
    def __init__(self, store, datasets_dir: Path, cache):
        self.store, self.datasets_dir, self.cache = store, Path(datasets_dir), cache

    def prepare(self, files: list[str], name: str, *, recipe: str = "auto",
                model: str = models.DEFAULT_MODEL, max_tokens: int = 256,
                max_len: int | None = None, overlap: int = 32, val_fraction: float = 0.1,
                seed: int = 42, mapping: dict[str, str] | None = None,
                generator_model: str | None = None, generator_url: str | None = None,
                progress: Any = None, cancel: Any = None, heldout: str | None = None,
                settings: list[str] | None = None, **recipe_params: Any) -> dict[str, Any]:
        """One new dataset version. Recipe parameters come by name or as `key=value` texts
        (`settings`, the CLI's --set). A generator URL (an OpenAI-compatible server) is checked
        here, before any work; a local generator loads only if a recipe asks for text. Without
        a name, the dataset is named after its first file."""
        name = prep.check_name(name or prep.name_for(files))
        given = apply_overrides({"max_tokens": max_tokens, "overlap": overlap, **recipe_params},
                                settings or [])
        params = build(RecipeParams, given, "recipe parameters")
        tok = self.cache.tokenizer(model)
        made: list = []
        if generator_url:
            made.append(generators.openai_compatible(generator_url, generator_model or "", cancel))

        class Lazy:  # the local generator loads only when a recipe asks for text
            def get(me) -> generators.Generator:
                if not made:
                    made.append(self.local_generator(generator_model or model, cancel))
                return made[0]

            def __call__(me, prompt: str) -> str:
                return me.get()(prompt)

            def json(me, messages, schema, max_tokens):
                return me.get().json(messages, schema, max_tokens)
        generator = Lazy()

        # One prepare per name at a time (the lock dies with its process, kill -9 included);
        # a version a killed prepare left behind is registered first, so the name is never stuck.
        with hold(self.datasets_dir / ".locks" / f"{name}.lock", f"Dataset {name}"):
            self.reconcile(name)
            version = max(self.store.next_dataset_version(name), 1 + max(self._versions(name), default=0))
            with disk_guard(self.datasets_dir):
                # unless given, examples may be one chunk budget plus the template around it
                template = 0 if max_len else templates.overhead(tok)
                summary = prep.prepare(files, name, self.datasets_dir, tok, recipe=recipe,
                                       params=params, max_len=max_len or params.max_tokens + template,
                                       val_fraction=val_fraction, seed=seed, mapping=mapping,
                                       generator=generator, progress=progress, cancel=cancel,
                                       version=version, model=model,
                                       heldout=heldout or held.sample_file(files))
            useful = (generators.expected_useful(made[0])
                      if made and (summary["qa"] or {}).get("generated") else None)
            if useful:  # kept with the version's stats, so `data show` says it too
                summary["qa"]["expected_useful"] = useful
            self._register(summary, recipe, model)
            summary["check"] = self.quick_check(Path(summary["path"]))
        summary["ref"] = str(DatasetRef(name, version))
        summary["template_tokens"] = template  # max_len = the length the user set + this
        if made:
            summary["generator"] = made[0].label
        return summary

    def local_generator(self, ref: str, cancel: Any = None) -> generators.Generator:
        """llama.cpp when the model has a GGUF (the embedded one ships as one), else transformers;
        either way the generator knows which model it runs (what was measured of it follows)."""
        spec = self.cache.resolve(ref)
        gguf = (models.embedded_gguf() if spec.kind == "embedded" else
                Path(spec.path) if spec.kind == "gguf" else None)
        if gguf is not None and models.llama_cpp_available()[0]:
            gen = generators.llama_cpp(gguf, cancel)
        else:
            gen = generators.transformers_model(*self.cache.loaded(ref), cancel)
        return dataclasses.replace(gen, model=spec.name)

    def _register(self, summary: dict[str, Any], recipe: str, model: str) -> None:
        name, version = summary["name"], summary["version"]
        val_fraction, seed, mapping = summary["val_fraction"], summary["seed"], summary["mapping"]
        self.store.add_dataset(name=name, version=version, path=summary["path"],
                               sources=summary["sources"], recipe=recipe,
                               params={**summary["params"], "model": model,
                                       "val_fraction": val_fraction, "seed": seed,
                                       "mapping": mapping or {}},
                               stats={k: summary[k] for k in STAT_KEYS},
                               records=summary["records"])

    def _versions(self, name: str) -> list[int]:
        folder = self.datasets_dir / name
        return [int(v.name[1:]) for v in folder.glob("v*") if v.name[1:].isdigit()] if folder.is_dir() else []

    def reconcile(self, name: str | None = None) -> None:
        """Sweep temp folders of prepares that died; register complete versions that a kill left
        unregistered (their meta.json and splits are whole), remove incomplete ones."""
        sweep(self.datasets_dir, prep.TMP_RE)
        names = [name] if name else [d.name for d in self.datasets_dir.iterdir()
                                     if d.is_dir() and not d.name.startswith(".")] \
            if self.datasets_dir.is_dir() else []
        for n in names:
            for v in self._versions(n):
                if self.store.get_dataset(n, v) is None:
                    self._adopt(self.datasets_dir / n / f"v{v}")

    def _adopt(self, folder: Path) -> None:
        import json

        try:
            meta = json.loads((folder / "meta.json").read_text())
            whole = all(sum(1 for _ in open(folder / f"{k}.jsonl", "rb")) == meta["splits"][k]
                        for k in ("train", "validation"))
        except (OSError, ValueError, KeyError, TypeError):
            whole = False
        if not whole:
            shutil.rmtree(folder, ignore_errors=True)
            return
        meta["path"] = str(folder)
        self._register(meta, meta.get("recipe", "auto"), meta.get("model") or models.DEFAULT_MODEL)

    def list(self) -> list[dict[str, Any]]:
        return [{"name": d["name"], "version": d["version"], "ref": str(DatasetRef(d["name"], d["version"])),
                 "records": d["records"],
                 "recipe": d["recipe"], "sources": d["sources"], "created_at": d["created_at"],
                 "path": d["path"]} for d in self.store.list_datasets()]

    def get(self, ref: str, version: int | None = None) -> dict[str, Any]:
        r = DatasetRef.parse(ref, version)
        d = self.store.get_dataset(r.name, r.version)
        if d is None:
            known = sorted({x["name"] for x in self.store.list_datasets()})
            raise DataError(f"No dataset named '{r.name}'{f' version {r.version}' if r.version else ''}. "
                            f"Known datasets: {', '.join(known) or 'none yet'} — prepare one with "
                            "`python -m studio data prepare FILE --name NAME`.")
        if not Path(d["path"]).is_dir():
            raise DataError(f"Dataset {r.name} v{d['version']} is recorded but its folder "
                            f"{d['path']} is gone. Prepare it again.")
        return d

    def show(self, ref: str, examples: int = 3) -> dict[str, Any]:
        import json

        d = self.get(ref)
        d["examples"] = prep.read_split(Path(d["path"]), "train", examples)
        try:
            d["triage"] = json.loads((Path(d["path"]) / "triage.json").read_text())
        except (OSError, ValueError):
            d["triage"] = None
        return d

    def triage(self, ref: str, model: str | None = None) -> dict[str, Any]:
        """Known or new: the base model answers the training questions (triage.py); the result
        is kept beside the dataset (triage.json) and shown with it."""
        import json

        from ..faults import atomic_write_text
        from .triage import triage

        d = self.get(ref)
        model = model or d["params"].get("model", models.DEFAULT_MODEL)
        examples = prep.read_split(Path(d["path"]), "train")
        if any(ex.get("messages") for ex in examples):
            out = triage(*self.cache.loaded(model), examples)
        else:
            out = triage(None, None, examples)  # no questions: skipped with the reason, no model
        out.update(dataset=str(DatasetRef(d["name"], d["version"])), model=model)
        atomic_write_text(Path(d["path"]) / "triage.json", json.dumps(out, indent=1))
        return out

    def pairs(self, ref: str, name: str | None = None, model: str | None = None,
              generator_model: str | None = None, generator_url: str | None = None,
              progress: Any = None, cancel: Any = None, answerer: Any = None) -> dict[str, Any]:
        """Factuality pairs from a Q/A dataset (factuality.py): the model answers each question
        closed book; where it misses the grounded answer's fact, (chosen = the grounded answer,
        rejected = its own) — a new preference dataset, `name` (default NAME-pairs), with the
        counts of pairs made and questions left out. `answerer` (label, questions → answers, in
        one batch) answers instead of the generators: a trained run's own model (--from-run)."""
        import tempfile

        from . import factuality
        from .recipes import Context, RecipeParams

        d = self.get(ref)
        model = model or d["params"].get("model", models.DEFAULT_MODEL)
        name = name or f"{d['name']}-pairs"
        prep.check_name(name)
        rows = factuality.qa_rows(prep.read_split(Path(d["path"]), "train") +
                                  prep.read_split(Path(d["path"]), "validation"))
        if not rows:
            raise DataError(f"Dataset {d['name']} has no question/answer examples to make pairs from; "
                            "pairs come from Q/A data (or the factuality-pairs recipe on documents).")
        if answerer is not None:  # every question in one batch, then looked up row by row
            label, answer_all = answerer
            questions = [prompt[-1]["content"] for prompt, _ in rows]
            said = dict(zip(questions, answer_all(questions)))
            gen = generators.Generator(lambda q: said.get(q, ""), "transformers", label)
        else:
            gen = (generators.openai_compatible(generator_url, generator_model or "", cancel) if generator_url
                   else self.local_generator(generator_model or model, cancel))
        ctx = Context(self.cache.tokenizer(model), RecipeParams(), gen, cancel, progress)
        made = []
        for i, row in enumerate(factuality.pairs(rows, lambda prompt: gen(prompt[-1]["content"]),
                                                 ctx.counters, ctx.drop, ctx.check)):
            made.append(row)
            if progress:
                progress(min(0.95, (i + 1) / len(rows)), f"{len(made)} pairs so far")
        if not made:
            raise DataError(f"The model already answers all {len(rows)} questions of {d['name']} with "
                            "their facts: there is nothing to prefer. Pairs come from questions it "
                            "gets wrong.")
        with tempfile.TemporaryDirectory(prefix=".pairs-", dir=self.datasets_dir) as tmp:
            src = Path(tmp) / f"{d['name']}-factuality.jsonl"
            src.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in made) + "\n", encoding="utf-8")
            summary = self.prepare([str(src)], name, model=model, heldout=held.as_file(Path(d["path"]), Path(tmp)),
                                   val_fraction=d["params"].get("val_fraction", 0.1))
        summary["pairs"] = {"made": len(made), "known": ctx.counters["factuality_known"],
                            "rejected_cut": ctx.counters["factuality_cut"],
                            "asked": len(rows), "generator": gen.label,
                            "left_out": prep.dropped_summary(ctx)}
        return summary

    def preview(self, ref: str, model: str | None = None, n: int = 5) -> list[Any]:
        """Rendered examples as (text, learned?) segments: the loss mask made visible; a
        preference pair as {prompt: the rendered prompt, once; chosen; rejected}, side by side."""
        from .preference import is_pair

        d = self.get(ref)
        tok = self.cache.tokenizer(model or d["params"].get("model", models.DEFAULT_MODEL))
        max_len = d["stats"].get("max_len", 512)
        out: list[Any] = []
        for ex in prep.read_split(Path(d["path"]), "train", n):
            if is_pair(ex):
                out.append({"prompt": templates.render_text(tok, ex["prompt"], add_generation_prompt=True),
                            "chosen": ex["chosen"][0]["content"], "rejected": ex["rejected"][0]["content"]})
            else:
                out.append(templates.preview_segments(tok, templates.encode(tok, ex, max_len)))
        return out

    def delete(self, ref: str) -> dict[str, Any]:
        d = self.get(ref)
        folder = Path(d["path"]).parent
        size = models.folder_size(folder)
        self.store.delete_dataset(d["name"])
        shutil.rmtree(folder, ignore_errors=True)
        return {"deleted": d["name"], "bytes_freed": size}

    @staticmethod
    def choices() -> dict[str, Any]:
        """What the Data step offers: recipes with their help, file types, parameter help."""
        from ..spec import field_help

        return {"recipes": {name: r.help for name, r in RECIPES.items()},
                "file_types": sorted(SUPPORTED), "params_help": field_help(RecipeParams)}

    # ---- the Check: duplicates, leaks, suspects; keep or drop (checks.py, suspects.py) ----------
    def check(self, ref: str, heldout: str | None = None, model: str | None = None,
              suspects: bool = True, progress: Any = None, cancel: Any = None) -> dict[str, Any]:
        """Check one version: duplicates and held-out leaks (against `heldout`, a file, else the
        version's own held-out questions), and with `suspects` the base model's suspect rows.
        Saved beside the version (check.json) and returned in full."""
        from . import checks

        d = self.get(ref)
        folder = Path(d["path"])
        rows = held.for_check(folder, heldout)
        model = model or d["params"].get("model", models.DEFAULT_MODEL)
        pair = self.cache.loaded(model) if suspects else (None, None)
        out = checks.run(folder, rows, *pair, progress=progress, cancel=cancel)
        out.update(dataset=str(DatasetRef(d["name"], d["version"])), model=model if suspects else None,
                   heldout_file=Path(heldout).name if heldout else None)
        checks.save(folder, out)
        return out

    def quick_check(self, folder: Path) -> dict[str, int]:
        """What every prepare checks (no model): duplicates, held-out leaks, questions that need
        their chunk, unsupported answers — counted; the rows are in check.json."""
        from . import checks

        out = checks.run(folder, held.for_check(folder, None))
        return {k: len(out[k]) for k in checks.KINDS}

    def keep(self, ref: str, rows: list[int]) -> dict[str, Any]:
        """Remember that these flagged rows (indexes in the version) stay, in this and every
        later version: no drop removes them."""
        from . import checks

        d = self.get(ref)
        folder = Path(d["path"])
        result = checks.load(folder)
        every = checks.rows_of(folder)
        bad = [r for r in rows if not 0 <= r < len(every)]
        if bad or result is None:
            raise DataError(f"Dataset {d['name']} v{d['version']} has {'no check yet' if result is None else f'no row {bad[0]}'}"
                            "; run the check first and keep rows it lists.")
        total = checks.remember_keep(folder.parent, [every[r].key for r in rows])
        checks.mark_kept(result, every, checks.kept(folder.parent))
        checks.save(folder, result)
        return {"dataset": result.get("dataset"), "kept": len(rows), "kept_in_all": total}

    def drop(self, ref: str, kinds: str | list[str], heldout: str | None = None,
             model: str | None = None, progress: Any = None, cancel: Any = None) -> dict[str, Any]:
        """A new version without the rows the check flagged as `kinds` (suspects, duplicates,
        leaks — a leak drops the training row the held-out question copies); the old version
        stays. Uses the stored check when it covers what is asked, else checks first."""
        from . import checks

        kinds = checks.parse_kinds(kinds)
        d = self.get(ref)
        folder = Path(d["path"])
        result = checks.load(folder)
        if result is None or heldout or ("suspects" in kinds and not result.get("model_checked")):
            result = self.check(ref, heldout, model, "suspects" in kinds, progress, cancel)
        rows = checks.to_drop(result, kinds)
        if not rows:
            raise DataError(f"Nothing to drop: the check of {d['name']} v{d['version']} flags no "
                            f"{' or '.join(kinds)} (or you chose to keep every one). The dataset is "
                            "unchanged.")
        return self.derive(d, rows, f"dropped {len(rows)} rows flagged as {', '.join(kinds)}")

    def derive(self, d: dict[str, Any], drop: set[int], note: str) -> dict[str, Any]:
        """The next version of dataset `d` without rows `drop`, registered, its own check run."""
        name = d["name"]
        tok = self.cache.tokenizer(d["params"].get("model", models.DEFAULT_MODEL))
        with hold(self.datasets_dir / ".locks" / f"{name}.lock", f"Dataset {name}"):
            self.reconcile(name)
            version = max(self.store.next_dataset_version(name), 1 + max(self._versions(name), default=0))
            with disk_guard(self.datasets_dir):
                summary = prep.derive(Path(d["path"]), self.datasets_dir, version, drop, tok, note)
            self._register(summary, d["recipe"], d["params"].get("model", models.DEFAULT_MODEL))
        self.quick_check(Path(summary["path"]))
        ref = str(DatasetRef(name, version))
        return {"name": ref, "ref": ref, "from": str(DatasetRef(name, d["version"])),
                "dropped": len(drop), "records": summary["records"], "splits": summary["splits"]}
