"""Run configuration: the run spec plus where it came from, and the checks before anything runs.

Owns `RunConfig` — the spec, the preset and overrides it was made from, the dataset version and
the pre-flight notes — and its file boundary, `config.yaml` in the run folder (the same keys as
always: the spec's sections at top level, then preset/overrides/dataset/notes, so older run
folders still resume). Also owns pre-flight, which returns a new config (never edits one) and
fails with a clear message before a child process starts (empty dataset, every example longer
than max length, chat data for a model without a chat template, QLoRA on a device that cannot
do it) and decides a CPU run's precision once (cpu_precision: bf16 mixed precision where the CPU
has native bf16), and the arithmetic of step counts.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError, RunError
from ..faults import atomic_write_text
from ..presets import check_trainable, get_preset
from ..records import DatasetRef
from ..optimizers import OPTIMIZERS
from ..spec import RunSpec, build, dotted, override, update
from ..paths import RUN

RUN_KEYS = ("preset", "overrides", "dataset", "notes")
RL = ("grpo", "rloo")  # objectives that learn from sampled answers and rewards (train/rl.py)


@dataclass(frozen=True)
class DatasetInfo:
    """The dataset version a run trains on, as recorded when the run was made."""
    name: str
    version: int
    path: str
    splits: dict[str, int] = field(default_factory=dict)
    formats: dict[str, int] = field(default_factory=dict)

    @property
    def ref(self) -> DatasetRef:
        return DatasetRef(self.name, self.version)


@dataclass(frozen=True)
class RunConfig:
    spec: RunSpec
    preset: str
    dataset: DatasetInfo
    overrides: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {**self.spec.to_dict(), "preset": self.preset, "overrides": list(self.overrides),
                "dataset": dataclasses.asdict(self.dataset), "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = RUN.config) -> "RunConfig":
        if not isinstance(data, dict) or not isinstance(data.get("dataset"), dict):
            raise RunError(f"{where}: not a run configuration (no dataset section). Start a new run.")
        body = {k: v for k, v in data.items() if k not in RUN_KEYS}
        try:
            ds = DatasetInfo(**data["dataset"])
        except TypeError as e:
            raise RunError(f"{where}: its dataset section is damaged ({e}). Start a new run.") from None
        return cls(spec=build(RunSpec, body, where), preset=str(data.get("preset", "")),
                   dataset=ds, overrides=tuple(data.get("overrides") or ()),
                   notes=tuple(data.get("notes") or ()))

    def write(self, run_dir: Path) -> Path:
        """config.yaml, written whole or not at all."""
        import yaml

        return atomic_write_text(run_dir / RUN.config, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def read(cls, run_dir: Path) -> "RunConfig":
        import yaml

        path = Path(run_dir) / RUN.config
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise RunError(f"{path} cannot be read ({e}); the run cannot continue. Start a new "
                           "run.") from None
        return cls.from_dict(data, str(path))


def supervised_only(t) -> bool:
    """Whether the run asks for a lever only supervised runs have."""
    return bool(t.self_distill or t.paraphrases or t.replay_mode == "kl" or t.fact_weight != 1.0)


def build_config(preset_name: str, dataset: dict[str, Any], model: str | None,
                 overrides: list[str], max_steps: int | None, **changes: Any) -> RunConfig:
    """Preset + overrides (`key=value` texts) + changes (settings by name) + model and max
    steps + the dataset's record → a RunConfig that remembers every change as `key=value`."""
    spec = get_preset(preset_name)
    if model:
        overrides = [f"model={model}", *overrides]
    if max_steps is not None:  # a setting by name, checked (and named in errors) like the others
        changes = {"max_steps": max_steps, **changes}
    if overrides:
        spec = check_trainable(override(spec, overrides), "--set")
    if changes:
        spec = check_trainable(update(spec, "settings", **changes), "settings")
        overrides = [*overrides, *(f"{dotted(k)}={v}" for k, v in changes.items() if v is not None)]
    stats = dataset.get("stats") or {}
    ds = DatasetInfo(name=dataset["name"], version=dataset["version"], path=dataset["path"],
                     splits=stats.get("splits", {}), formats=stats.get("formats", {}))
    return RunConfig(spec=spec, preset=preset_name, dataset=ds, overrides=tuple(overrides))


def rank() -> int:
    """This process's rank in a multi-GPU run (0 alone): only rank 0 writes files and the store."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def total_steps(spec: RunSpec, n_train: int, world: int = 1) -> int:
    t = spec.train
    if t.max_steps:
        return int(t.max_steps)
    per_step = t.micro_batch * t.grad_accum * world
    return max(1, math.ceil(t.epochs * n_train / per_step))


def cpu_mixed(p, device: str) -> bool:
    """Whether this run trains in bf16 mixed precision on a CPU: fp32 weights, the training
    forward and backward under a bf16 autocast (trainer.StudioLoss). Read from the run's own
    dtype, which cpu_precision decided once — never measured again in the child, a rank or a resume."""
    return device == "cpu" and mixable(p) and p.train.dtype == "bf16"


def mixable(p) -> bool:
    """Runs that may train in bf16 mixed precision on a CPU: supervised LoRA (RL: most of a step
    is generation; preference runs: not measured in bf16; QLoRA keeps its own dtypes)."""
    return p.method == "lora" and p.train.objective == "sft"


def cpu_precision(spec: RunSpec, notes: list[str]) -> RunSpec:
    """A CPU run's dtype, decided here and kept in its config: auto is bf16 mixed precision for a
    run that may (mixable) where this CPU multiplies bf16 fast (models.cpu_bf16_fast), else fp32.
    Says which, and warns when bf16 was asked for on a CPU that emulates it."""
    from ..models.registry import cpu_bf16_fast, cpu_bf16_speedup

    if spec.train.dtype == "auto":
        spec = update(spec, dtype="bf16" if mixable(spec) and cpu_bf16_fast() else "fp32")
    if not cpu_mixed(spec, "cpu"):
        return spec
    ratio, forced = cpu_bf16_speedup()
    how = (f"STUDIO_CPU_BF16={os.environ.get('STUDIO_CPU_BF16', '').strip()}" if forced
           else f"this CPU multiplies bf16 {ratio:.1f}× as fast as fp32")
    notes.append(f"Training in bf16 mixed precision ({how}): the forward and backward passes "
                 "multiply in bf16; the weights and every evaluation stay fp32 (train.dtype=fp32 "
                 "turns it off).")
    if not forced and ratio < 1:
        notes.append(f"train.dtype=bf16 on a CPU that multiplies bf16 at {ratio:.1f}× the speed of "
                     "fp32 (no native bf16): this run is slower than it would be in fp32; "
                     "train.dtype=auto picks the faster one.")
    return spec


def preflight(cfg: RunConfig, dataset: dict[str, Any], tok, device: str) -> RunConfig:
    """A checked copy of `cfg` (with fallback notes); raises on what would make the run fail."""
    from ..data.recipes import has_chat
    from ..models.registry import qlora_supported

    spec, notes = cfg.spec, list(cfg.notes)
    stats = dataset["stats"]
    n_train = stats.get("splits", {}).get("train", 0)
    if n_train == 0:
        raise DataError(f"Dataset {dataset['name']} v{dataset['version']} has no training examples. "
                        "Prepare it again with more data or a smaller validation fraction.")
    max_len = spec.train.max_len
    shortest = stats.get("tokens", {}).get("min", 0)
    if shortest > max_len:
        raise DataError(f"Every example in {dataset['name']} is longer than max length {max_len} "
                        f"tokens (the shortest has {shortest}); nothing would train. Raise "
                        f"train.max_len to at least {stats['tokens'].get('p50', shortest)} or prepare "
                        "the data with a smaller --max-tokens.")
    from ..data.preference import is_pair_format

    pairs = {f for f in stats.get("formats", {}) if is_pair_format(f)}
    if spec.train.objective in RL:
        spec, notes = rl_checks(spec, dataset, device, notes)
    elif spec.train.objective != "sft" and not pairs:
        raise DataError(f"train.objective {spec.train.objective} learns from preference pairs, and "
                        f"{dataset['name']} holds none. Prepare a file with prompt, chosen and "
                        "rejected (assets/sample/product_preferences.jsonl is an example), or build "
                        f"pairs from your Q/A data: python -m studio data pairs {dataset['name']}.")
    if spec.train.objective == "sft" and pairs and pairs == set(stats.get("formats", {})):
        raise DataError(f"{dataset['name']} holds preference pairs (chosen and rejected answers); "
                        "train it with train.objective=dpo or orpo (--method dpo), or prepare "
                        "question/answer data for supervised training.")
    if spec.train.objective in ("dpo", "orpo") and supervised_only(spec.train):
        notes.append("Self-distilled targets, paraphrases, key-fact weights and KL replay are for "
                     f"supervised runs; this {spec.train.objective} run trains on the pairs as they are.")
    if spec.train.order == "curriculum":
        spec = curriculum_checks(spec, n_train, notes)
    if has_chat(stats.get("formats", {})) and not getattr(tok, "chat_template", None):
        raise DataError(f"Dataset {dataset['name']} holds chat examples, but model {spec.model} "
                        "has no chat template. Pick an instruct/chat model, or prepare plain-text "
                        "data (recipe paragraphs or token-windows).")
    if spec.method == "qlora":
        ok, why = qlora_supported(device)
        if not ok:
            if not spec.method_fallback:
                raise ConfigError(f"QLoRA was requested but cannot run here: {why}. Use method "
                                  "lora, or set method_fallback=true to fall back automatically.")
            spec = update(spec, method="lora")
            notes.append(f"QLoRA is not available on {device} ({why}); training with LoRA instead.")
    if device != "cuda" and OPTIMIZERS[spec.train.optimizer].cuda_only:
        notes.append(f"The {spec.train.optimizer} optimizer needs a CUDA GPU; using adamw on {device}.")
        spec = update(spec, optimizer="adamw")
    notes += chunk_notes(spec, len(tok) if tok is not None else None)
    if device == "cpu" and spec.train.dtype in ("fp16",):
        spec = update(spec, dtype="fp32")
        notes.append("fp16 training needs a GPU; using fp32 on CPU.")
    if device == "cpu":
        spec = cpu_precision(spec, notes)
    return dataclasses.replace(cfg, spec=spec, notes=tuple(notes))


def curriculum_checks(spec: RunSpec, n_train: int, notes: list[str]) -> RunSpec:
    """train.order=curriculum: supervised runs only (others are shuffled, with a note), and a
    note when the run stops before the hardest examples, which come last."""
    t = spec.train
    if t.objective != "sft":
        notes.append(f"Curriculum ordering is for supervised runs; this {t.objective} run takes its "
                     "examples in a shuffled order.")
        return update(spec, order="shuffled")
    seen = t.max_steps * t.micro_batch * t.grad_accum * world_size()
    if t.max_steps and seen < n_train:
        notes.append(f"Curriculum: this run stops after {seen} of the {n_train} examples, so the "
                     "hardest ones — they come last — are never reached. Give it more steps "
                     "(or train.max_steps=0 for whole passes), or keep the shuffled order.")
    return spec


def rl_checks(spec: RunSpec, dataset: dict[str, Any], device: str, notes: list[str]
              ) -> tuple[RunSpec, list[str]]:
    """A grpo/rloo run: its rewards must come from this dataset (or a reward file) — refused
    here, before a child starts, with what to add — and a CPU run drops GPU habits that break or
    crawl there (bf16, activation checkpointing: generation is most of a step)."""
    from ..data.prepare import read_split
    from .rewards import choose, reward_rows

    t = spec.train
    if t.rewards:  # a reward file by its full path: the training child runs in another folder
        names = [str(Path(n).expanduser().resolve()) if n.endswith(".py") or "/" in n else n
                 for n in (x.strip() for x in t.rewards.split(",")) if n]
        spec = update(spec, rewards=",".join(names))
        t = spec.train
    rows = reward_rows(read_split(Path(dataset["path"]), "train"))
    chosen = choose(rows, t.rewards, f"Dataset {dataset['name']} v{dataset['version']}")
    notes.append(f"{t.objective} rewards: {', '.join(r.name for r in chosen)}"
                 + ("" if t.rewards else " (chosen from the dataset; --reward A,B overrides)") + ".")
    if supervised_only(t):
        notes.append("Self-distilled targets, paraphrases, key-fact weights and KL replay are for "
                     f"supervised runs; this {t.objective} run learns from its own answers and their rewards.")
    if t.vllm:
        vllm_check(device, notes)
    if device == "cpu":
        if t.grad_ckpt:
            spec = update(spec, grad_ckpt=False)
            notes.append("Activation checkpointing is off on CPU for RL: memory is not what binds "
                         "there, and it would recompute every forward pass.")
        if t.dtype == "bf16":
            spec = update(spec, dtype="fp32")
            notes.append("bf16 training on CPU is slow; using fp32 for this RL run.")
    return spec, notes


def vllm_check(device: str, notes: list[str]) -> None:
    """train.vllm: refused before a child starts where vLLM cannot run, with what to do."""
    import importlib.util

    off = "or leave train.vllm off (`--set train.vllm=false`) to sample with plain transformers."
    if device != "cuda":
        raise ConfigError(f"train.vllm samples with vLLM, which needs a CUDA GPU; this run is on "
                          f"{device}. Run it on a machine with one, {off}")
    if importlib.util.find_spec("vllm") is None:
        raise ConfigError(f"train.vllm is on but vLLM is not installed here. Install it (`pip "
                          f"install vllm`, Linux with CUDA), {off}")
    notes.append("vLLM samples the tries on this GPU and reserves 30% of its memory; the memory "
                 "estimate counts plain transformers generation, so leave that room free.")


def check_layers(spec: RunSpec, model_path: Path) -> None:
    """lora.layers must name layers the model has (config.json's num_hidden_layers)."""
    import json

    from ..spec import layer_indices

    if spec.lora.layers.strip().lower() == "all":
        return
    try:
        cfg = json.loads((Path(model_path) / "config.json").read_text())
    except (OSError, ValueError):
        return  # a model without a config.json (a .gguf file) is checked when it loads
    cfg = cfg.get("text_config", cfg)
    n = cfg.get("num_hidden_layers") or cfg.get("n_layer")
    if n:
        layer_indices(spec.lora.layers, int(n))


def chunk_notes(spec, vocab: int | None) -> list[str]:
    """A chunk of the chunked loss larger than a step's tokens is one chunk of all of them: say
    so (with what those logits cost) when the user chose that chunk; the default is silent."""
    t = spec.train
    tokens = t.max_len * t.micro_batch
    default = type(t)().loss_chunk
    if t.loss != "chunked" or t.loss_chunk <= tokens or t.loss_chunk == default:
        return []
    cost = f", {tokens * vocab * 8 / 2**30:.2f} GB of fp32 logits and their gradient" if vocab else ""
    return [f"train.loss_chunk {t.loss_chunk:,} is more than a step's {tokens:,} tokens (max_len "
            f"{t.max_len} × micro_batch {t.micro_batch}): the loss is computed in one chunk of "
            f"{tokens:,} tokens{cost}. A smaller chunk saves memory only at longer lengths."]


def pinning_works() -> str | None:
    """None when pinned (page-locked) CPU memory can be allocated here; else why not."""
    import torch

    try:
        torch.empty(1024, pin_memory=True)
    except RuntimeError as e:
        return str(e).splitlines()[0][:200]
    return None


def decide_offload(cfg: RunConfig, model_path: Path, device: str) -> RunConfig:
    """train.offload=auto → on when the estimate says the run does not fit this GPU without it;
    "on" is refused where there is no GPU memory to spare, or too little CPU memory to hold the
    activations — before the run starts, with the estimate's numbers."""
    spec, notes = cfg.spec, list(cfg.notes)
    want = spec.train.offload
    if want == "off" or (want == "auto" and device != "cuda"):
        return dataclasses.replace(cfg, spec=update(spec, offload="off"))
    if device != "cuda":
        raise ConfigError(f"Activation offloading moves a GPU's saved activations to CPU memory; "
                          f"this run trains on {device}, where there is nothing to move. Use "
                          "train.offload=off (or auto).")
    import psutil
    import torch

    from ..memory.estimate import estimate
    from ..memory.advice import fits, load_shape

    try:
        shape, _ = load_shape(str(model_path))
    except ConfigError:  # e.g. a .gguf model: no config.json to estimate from
        if want == "on":
            raise ConfigError(f"train.offload=on needs the model's config.json to check the CPU "
                              f"memory it takes; {model_path} has none. Use auto or off.") from None
        return dataclasses.replace(cfg, spec=update(spec, offload="off"))
    gpu_gb = torch.cuda.mem_get_info()[1] / 2**30
    base = update(spec, device="cuda", offload="off")
    if want == "auto":
        if fits(shape, base, gpu_gb):  # the Memory step's fit rule, headroom included
            return dataclasses.replace(cfg, spec=update(spec, offload="off"))
        notes.append("The run does not fit the GPU as set; saved activations are offloaded to "
                     "CPU memory (train.offload=auto).")
    est = estimate(shape, update(base, offload="on"))
    why = pinning_works()
    if why is not None:
        raise ConfigError(f"Activation offloading needs pinned CPU memory, which this machine refused "
                          f"({why}). Without offloading the run needs ~{estimate(shape, base)['total_gb']:.1f} "
                          f"GB of GPU memory (this GPU: {gpu_gb:.1f} GB). Use train.offload=off and "
                          "shorten train.max_len or lower train.micro_batch if it does not fit.")
    free = psutil.virtual_memory().available / 2**30
    if est["host_ram_gb"] > free * 0.9:
        raise ConfigError(f"Offloading would keep ~{est['host_ram_gb']:.1f} GB of activations in CPU "
                          f"memory, but only {free:.1f} GB is free. Shorten train.max_len, lower "
                          "train.micro_batch, or turn on train.grad_ckpt (far fewer saved activations).")
    return dataclasses.replace(cfg, spec=update(spec, offload="on"), notes=tuple(notes))
