"""The run spec: one frozen dataclass tree for every setting of a run, with its help text.

Owns the schema (each knob with its help, type, allowed range and choices, written once here),
strict building from plain data (a preset file, config.yaml, `--set` overrides; the knob
machinery itself is knobs.py), changing a spec with `update()` (a new copy, validated), and the
flat view the estimator's CLI flags and JSON keys use (`seq_len` is `train.max_len`, `batch` is
`train.micro_batch`, …). The preset loader, the UI, the CLI, the estimator, pre-flight and the
training child all pass this same object; YAML appears only at the file boundary (presets.py,
train/config.py). Knows nothing of models, torch or the store.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import ConfigError, PresetError
from .knobs import apply_overrides, build, check_value, knob
from .optimizers import OPTIMIZERS


@dataclass(frozen=True)
class LoraSpec:
    rank: int = knob(16, "LoRA rank r: size of the low-rank update. 8–32 is typical; higher "
                         "learns more and uses more memory.", min=1, max=4096, flat="rank")
    alpha: float = knob(32.0, "LoRA alpha: the update is scaled by alpha/r (or alpha/sqrt(r) with "
                              "rsLoRA). Twice the rank is a common choice.", min=0.0, max=1e6)
    dropout: float = knob(0.0, "Dropout on the LoRA input during training (0 disables).",
                          min=0.0, max=0.9)
    targets: str = knob("all-linear", "Which layers get adapters: 'all-linear', 'mlp' (gate, up, "
                                      "down) or a comma list such as 'q,k,v,o,gate,up,down'.",
                        flat="targets")
    layers: str = knob("all", "Which decoder layers get adapters: all, middle (the middle half, "
                              "where factual associations live) or a range such as 8-20 (0 is the "
                              "first layer).")
    rslora: bool = knob(False, "rsLoRA: scale by alpha/sqrt(r), which keeps high ranks stable.")
    dora: bool = knob(False, "DoRA: learn a magnitude per output as well as the direction "
                             "(slower, sometimes better at low rank).", flat="dora")


@dataclass(frozen=True)
class QuantSpec:
    bits: int = knob(4, "Bits for the frozen base weights with QLoRA (4 or 8); other methods "
                        "keep them in 16 bits.", choices=(4, 8), flat="bits",
                     flag_choices=(16, 8, 4))
    type: str = knob("nf4", "4-bit code book: nf4 (normal float, usually better) or fp4.",
                     choices=("nf4", "fp4"), flat="quant_type")
    double_quant: bool = knob(True, "Quantize the per-block scales too (saves ~0.4 bit/param).",
                              flat="double_quant")


@dataclass(frozen=True)
class TrainSpec:
    lr: float = knob(2e-4, "Peak learning rate. LoRA on a large model likes 1e-4–5e-4 (the GPU "
                           "presets: 2e-4; DPO 5e-5); a tiny model with the soft anchor holding it "
                           "takes more (the CPU quickstart: 2e-3). Too high forgets what the model "
                           "knew, too low changes nothing.", min=1e-8, max=1.0)
    max_steps: int = knob(0, "Optimizer steps to run; 0 means run `epochs` passes over the data.",
                          min=0, max=10_000_000)
    epochs: float = knob(1.0, "Passes over the training split (used when max_steps is 0).",
                         min=0.01, max=1000)
    micro_batch: int = knob(4, "Examples per forward pass. Lower it first when memory is short.",
                            min=1, max=65536, flat="batch")
    grad_accum: int = knob(1, "Micro-batches accumulated per optimizer step "
                              "(effective batch = micro_batch × grad_accum).", min=1, max=4096)
    max_len: int = knob(512, "Longest example in tokens; longer ones are truncated.",
                        min=16, max=10_000_000, flat="seq_len")
    warmup_ratio: float = knob(0.05, "Fraction of steps spent warming the learning rate up.",
                               min=0.0, max=0.5)
    schedule: str = knob("cosine", "Learning-rate schedule after warmup.",
                         choices=("cosine", "linear", "constant"))
    weight_decay: float = knob(0.0, "AdamW weight decay.", min=0.0, max=1.0)
    optimizer: str = knob("adamw", "Optimizer: adamw, adamw-8bit or paged-adamw-8bit "
                                   "(bitsandbytes, GPU), or sgd.",
                          choices=tuple(OPTIMIZERS), flat="optimizer")
    seed: int = knob(42, "Random seed for data order, split and adapter init.", min=0, max=2**32 - 1)
    order: str = knob("shuffled", "Order of your examples in training: shuffled (a new random order "
                                  "each pass, as most tools train) or curriculum (easy → hard by the "
                                  "base model's loss on each answer, topics taken in turn; supervised "
                                  "runs). Published gains are about a point and sometimes negative: "
                                  "benchmarks/RESULTS.md has what we measured.",
                      choices=("shuffled", "curriculum"))
    grad_ckpt: bool = knob(False, "Gradient checkpointing: recompute activations in the backward "
                                  "pass; ~30% slower, much less activation memory.", flat="grad_ckpt")
    packing: bool = knob(True, "Padding-free batching: examples are laid end to end with their "
                               "own position ids, so no compute is spent on padding and no "
                               "example attends to another.")
    dtype: str = knob("auto", "Compute dtype: auto (bf16 on GPUs that have it, else fp16 on "
                              "CUDA; on a CPU, supervised LoRA runs train in bf16 mixed precision "
                              "where it multiplies bf16 fast (native bf16: AVX512-BF16, AMX; "
                              "STUDIO_CPU_BF16=1/0 forces it), everything else in fp32), bf16, fp16 "
                              "or fp32. On a CPU, bf16 for a supervised LoRA run keeps fp32 weights "
                              "and evaluations and multiplies in bf16 while it trains.",
                      choices=("auto", "bf16", "fp16", "fp32"), flat="dtype")
    loss: str = knob("chunked", "How the loss is computed: chunked (from the final hidden "
                                "states, a chunk of tokens at a time: never all [tokens × "
                                "vocabulary] logits at once — same result, far less memory at "
                                "long lengths) or full (all logits at once, as most tools train).",
                     choices=("chunked", "full"), flat="loss")
    loss_chunk: int = knob(1024, "Tokens per chunk of the chunked loss: its memory is chunk × "
                                 "vocabulary × 8 bytes (fp32 logits and their gradient).",
                           min=1, max=1_000_000)
    offload: str = knob("auto", "Activation offloading (CUDA): the saved activations (with "
                                "checkpointing, each block's input) wait in pinned CPU memory "
                                "until backward needs them, copied out and back while the GPU "
                                "computes. auto: on when the run would not fit the GPU "
                                "otherwise; on; off.", choices=("auto", "on", "off"),
                        flat="offload")
    kbit_norms: str = knob("fp32", "QLoRA: the norm weights and the residual stream between "
                                   "blocks in fp32 (PEFT's prepare_model_for_kbit_training) or in "
                                   "the compute dtype (norms still compute in fp32 inside; half the "
                                   "residual's memory per token: what long contexts need).",
                           choices=("fp32", "compute"), flat="kbit_norms")
    mlp_chunk: int = knob(0, "With checkpointing: run each recomputed block's MLP this many tokens "
                             "at a time (its gate/up activations are the largest working set at "
                             "long lengths; 0 = off). Same gradients, a little more compute.",
                          min=0, max=10_000_000, flat="mlp_chunk")
    replay: float = knob(0.5, "Self-replay: the base model's own answers to general prompts (assets/"
                              "replay/) join training, this many per training example (0 turns it "
                              "off). It keeps what the model could already do.",
                         min=0.0, max=4.0)
    replay_mode: str = knob("ce", "How replay anchors the model: ce (it learns the base model's "
                                  "greedy answers like the user's examples) or kl (a soft anchor: "
                                  "on replay text the tuned model's next-token distribution is pulled "
                                  "toward the base model's own — the adapter switched off, no second "
                                  "copy — with weight replay_weight; far richer per token than one "
                                  "greedy answer).", choices=("ce", "kl"))
    replay_weight: float = knob(1.0, "replay_mode kl: weight of the KL term against the loss on your "
                                     "data. Higher keeps more of the base model, learns less.",
                                min=0.0, max=100.0)
    replay_short: float = knob(1.0, "Short-answer replay: the replay set's short factual questions "
                                    "(\"Who painted the Mona Lisa? Keep it short.\") are drawn this "
                                    "many times as readily as its other prompts, in place of some of "
                                    "them. Tuning on facts breaks short everyday answers first (after "
                                    "a product FAQ the 135M model said \"A dog has five legs.\"); a "
                                    "higher weight holds them harder. Needs train.replay > 0; 1 = no "
                                    "preference.",
                               min=1.0, max=20.0)
    replay_checked: bool = knob(False, "Replay only the base model's answers that state the known "
                                       "answer, where one is known (the replay set's short factual "
                                       "questions and sums). Without it a small model's wrong answers "
                                       "(\"How many hearts does a human have?\" \"The answer is 12.\") are "
                                       "rehearsed too, and teach it to answer other questions that way. "
                                       "Needs train.replay > 0.")
    safety_replay: float = knob(0.1, "Safety replay: the base model's own refusals to harmful "
                                     "requests (assets/safety/, only the ones it refused) join "
                                     "training, this many per training example, so fine-tuning does "
                                     "not wear its refusals away. A model that refuses none gets none "
                                     "(a note says so); 0 turns it off.", min=0.0, max=2.0)
    self_distill: bool = knob(False, "Self-distilled targets: before training, the base model "
                                     "restates each answer in its own words, given the answer as a "
                                     "fact in its prompt; a restatement that keeps the answer's key "
                                     "facts (numbers, names) replaces it. Training then pulls the "
                                     "model less far from its own style. Generated once per dataset "
                                     "version and model, then cached.")
    paraphrases: int = knob(0, "Question rephrasings per training question, written by the base "
                               "model and checked (a real question, its names and numbers kept, not "
                               "a copy): each joins training with the same answer, so the fact is "
                               "learned as a fact, not as one wording. Generated once, then cached.",
                            min=0, max=8)
    fact_weight: float = knob(1.0, "Key-fact weight: the tokens of the numbers and names an answer "
                                   "states that its question does not (\"612\", \"Fernwick Labs\") "
                                   "count this many times in the loss, the rest of the answer once. "
                                   "A tuned model that says \"611 bird species\" has learned the "
                                   "sentence, not the fact; a higher weight learns the facts first, "
                                   "and keeps fewer everyday answers (on four fact sets 3 learned 75% "
                                   "of the held-out facts against 68%, kept 88% against 91.5%: "
                                   "benchmarks/RESULTS.md). Supervised runs; 1 = every answer token "
                                   "the same.",
                              min=1.0, max=10.0)
    intruder_scale: float = knob(1.0, "Targeted strength: after training, each adapted layer's "
                                      "update directions that the base weights hardly use "
                                      "('intruder dimensions', found by an SVD of B·A) are scaled by "
                                      "this; the rest stay as trained. 1 leaves the adapter as "
                                      "trained; 0 removes those directions.", min=0.0, max=1.0)
    forget_budget: float = knob(0.10, "Forgetting budget: how much general-text perplexity may rise "
                                      "(0.10 = 10%). At each evaluation the run keeps the best "
                                      "checkpoint within it (the last one also at lower adapter "
                                      "strengths); that one becomes the final adapter. 0 turns the "
                                      "choice off: the last step at full strength.",
                                min=0.0, max=10.0)
    retention_budget: float = knob(0.25, "Forgetting budget for everyday answers: the share of the "
                                         "general questions the base model answers right "
                                         "(assets/retention.jsonl) that the tuned model may get "
                                         "wrong (0.25 = a quarter). Counts with the perplexity budget "
                                         "in the checkpoint and strength the run keeps, and the report "
                                         "warns past it. A 135M model loses 17–29% at any step that "
                                         "learns (2026-12-06): a tighter budget there keeps the base "
                                         "model and learns nothing.", min=0.0, max=1.0)
    objective: str = knob("sft", "What the run learns from: sft (supervised: your answers), dpo "
                                 "(preference pairs: prefer the chosen answer over the rejected one, "
                                 "kept near the reference — the model before this run, the adapter "
                                 "switched off), orpo (preference pairs with the supervised loss, no "
                                 "reference), or grpo / rloo (reinforcement learning: the model tries "
                                 "several answers per question and learns from the rewards the studio "
                                 "derives from your data — train.rewards). dpo and orpo need a "
                                 "preference dataset; grpo and rloo need questions with answers, code, "
                                 "or your own reward file.",
                          choices=("sft", "dpo", "orpo", "grpo", "rloo"), flat="objective")
    beta: float = knob(0.1, "dpo: how far the model may move from the reference (higher stays "
                            "closer); orpo: the weight of the preference term next to the supervised "
                            "loss; grpo/rloo: the weight of the KL to the base model (the same "
                            "weights, adapter off; 0 skips that forward pass and logs no kl).",
                       min=0.0, max=100.0)
    rewards: str = knob("", "grpo/rloo: the rewards, comma-separated — names from `python -m "
                            "studio rewards list`, auto (the ones the dataset supports; safety is "
                            "only ever added by name: auto,safety), or the path of your own .py "
                            "file defining reward(prompt, completion, **row); empty: auto. "
                            "`python -m studio rewards preview` shows the choice.")
    generations: int = knob(4, "grpo/rloo: answers sampled per question; each is rewarded against "
                               "the others of its group. More gives a steadier signal and costs "
                               "generation time.", min=2, max=64)
    completion_len: int = knob(64, "grpo/rloo: the most tokens a sampled answer may have.",
                               min=4, max=8192)
    temperature: float = knob(1.0, "grpo/rloo: sampling temperature of the tries; higher spreads "
                                   "the answers (and their rewards) more.", min=0.05, max=3.0)
    vllm: bool = knob(False, "grpo/rloo: sample the tries with vLLM on the same GPU (TRL's "
                             "colocate mode) instead of plain transformers — faster for long "
                             "answers; needs vllm installed and a CUDA GPU, and reserves 30% of "
                             "the GPU's memory for itself.")
    pref_loss: str = knob("sigmoid", "dpo loss variant: sigmoid (the DPO paper), ipo (IPO: no "
                                     "overconfidence on clean pairs), hinge (SLiC) or robust (noisy "
                                     "labels).", choices=("sigmoid", "ipo", "hinge", "robust"))
    stop_separated: bool = knob(True, "dpo: stop early once the pairs are all preferred by a wide "
                                      "margin (every pair of each batch preferred, the mean reward "
                                      "margin where the DPO loss is under 0.01) for as many steps "
                                      "as a pass over them takes (with log_every above 1: the "
                                      "logged means): more steps only widen the margins and move "
                                      "the model further from where it started. The run ends "
                                      "completed at that step. orpo and sft ignore it.")
    pref_sft: float = knob(0.0, "dpo: the weight of a supervised term on the chosen answers beside "
                                "the preference loss (RPO): DPO pushes the rejected answer down and "
                                "often drags the chosen one, which shares most of its words, down "
                                "with it; this term holds the chosen answer up. 0: off; orpo "
                                "has a supervised term of its own and ignores it.",
                           min=0.0, max=100.0)
    log_every: int = knob(1, "Write a progress event every N steps.", min=1, max=1_000_000)
    eval_every: int = knob(0, "Evaluate on the validation split every N steps (0: only at the end).",
                           min=0, max=10_000_000)
    save_every: int = knob(25, "Save a checkpoint every N steps.", min=1, max=10_000_000)
    keep_checkpoints: int = knob(3, "How many recent checkpoints to keep (the final one is always "
                                    "kept).", min=1, max=100)


@dataclass(frozen=True)
class EstimateSpec:
    """How the memory estimate models the run; training itself does not read these."""
    device: str = knob("cuda", "Estimate for a GPU (cuda: CUDA context + allocator slack) or the "
                               "CPU (fp32, none of those).", choices=("cuda", "cpu"), flat="device")
    loop: str = knob("trainer", "trainer: the Hugging Face Trainer as Finetune Studio runs it "
                                "(bf16/fp16 autocast, logits dropped before backward); plain: a "
                                "PyTorch loop in the load dtype without autocast that keeps the "
                                "output through backward (how some published numbers were measured).",
                     choices=("trainer", "plain"), flat="loop")
    attention: str = knob("sdpa", "Attention kernel: sdpa/flash keep no T×T matrix; eager stores "
                                  "the attention probabilities.", choices=("sdpa", "flash", "eager"),
                          flat="attention")


TRAINABLE_METHODS = ("lora", "qlora")
LAYERS = re.compile(r"^(all|middle|\d+-\d+)$")
MLP_TARGETS = ("gate", "up", "down")  # lora.targets=mlp


def layer_indices(layers: str, n: int) -> list[int]:
    """The decoder layers `lora.layers` names in a model of `n` layers: all; middle (the middle
    half, [n/4, n − n/4)); or an inclusive range "a-b" (0 is the first layer)."""
    text = layers.strip().lower()
    if not LAYERS.match(text):
        raise ConfigError(f"lora.layers '{layers}' is not all, middle or a range such as 8-20.")
    if text == "all":
        return list(range(n))
    if text == "middle":
        return list(range(n // 4, n - n // 4))
    lo, hi = (int(x) for x in text.split("-"))
    if not lo <= hi < n:
        raise ConfigError(f"lora.layers {layers} does not fit this model's {n} layers (0 to {n - 1}); "
                          f"use a range inside it, middle, or all.")
    return list(range(lo, hi + 1))


@dataclass(frozen=True)
class RunSpec:
    name: str = knob("", "Short name, the preset file's stem.")
    description: str = knob("", "Who this preset is for, in a sentence or two.")
    model: str = knob("smollm2-135m-instruct", "Model: registry name, local folder, .gguf file "
                                               "or hub id.")
    method: str = knob("lora", "lora: 16/32-bit frozen base; qlora: 4/8-bit frozen base (needs "
                               "bitsandbytes on the device); full: every weight (estimate only).",
                       choices=("lora", "qlora", "full"), flat="method")
    method_fallback: bool = knob(True, "If QLoRA cannot run on this device (no bitsandbytes "
                                       "support), train with LoRA instead and say so; false "
                                       "refuses to start.")
    gpu_gb: float = knob(0.0, "Smallest GPU memory (GB) this preset is meant for; 0 = CPU.",
                         min=0.0, max=2048)
    from_run: str = knob("", "Start from an earlier run's adapter (its id) instead of a fresh one: "
                             "the usual SFT-then-DPO recipe. Its LoRA settings are kept; with dpo "
                             "the reference is the model with that adapter, as it was.")
    lora: LoraSpec = field(default_factory=LoraSpec)
    quant: QuantSpec = field(default_factory=QuantSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    estimate: EstimateSpec = field(default_factory=EstimateSpec)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def weight_bits(self) -> int:
        """Bits of the frozen base weights: the quant bits for QLoRA, else 16."""
        return self.quant.bits if self.method == "qlora" else 16


SECTIONS = {f.name: f.default_factory for f in fields(RunSpec) if dataclasses.is_dataclass(
    f.default_factory if f.default_factory is not dataclasses.MISSING else None)}


def _leaves() -> dict[str, tuple[str | None, dataclasses.Field]]:
    """Leaf name → (section or None, field). Leaf names are unique across the tree."""
    out: dict[str, tuple[str | None, dataclasses.Field]] = {}
    for f in fields(RunSpec):
        if f.name in SECTIONS:
            for g in fields(SECTIONS[f.name]):
                out[g.name] = (f.name, g)
        else:
            out[f.name] = (None, f)
    return out


LEAVES = _leaves()
FLAT = {f.metadata["flat"]: name for name, (_, f) in LEAVES.items() if f.metadata.get("flat")}


def stored(data: dict[str, Any] | None) -> RunSpec:
    """The run spec of a stored run config (its store row, config.yaml), read so that an older run
    folder still reads: keys it does not know are left out, and a missing or unreadable value
    takes the field's default — the one fallback every reader of a run shares."""
    def read(cls: type, d: Any) -> Any:
        kwargs = {}
        for f in fields(cls):
            if not isinstance(d, dict) or f.name not in d:
                continue
            sub = f.default_factory if f.default_factory is not dataclasses.MISSING else None
            try:
                kwargs[f.name] = (read(sub, d[f.name]) if dataclasses.is_dataclass(sub)
                                  else check_value("run config", f.name, f, d[f.name]))
            except PresetError:
                continue
        return cls(**kwargs)
    return read(RunSpec, data or {})


# ---- changing a spec --------------------------------------------------------------------------
def update(spec: RunSpec, where: str = "settings", **changes: Any) -> RunSpec:
    """A new spec with leaf values changed, each validated. Keys are leaf names (`max_len`) or
    their flat names (`seq_len`); None values are ignored."""
    sections: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for key, value in changes.items():
        if value is None:
            continue
        leaf = FLAT.get(key, key)
        if leaf not in LEAVES:
            raise PresetError(f"{where}: unknown setting '{key}'. Known: {', '.join(sorted(LEAVES))}.")
        sec, f = LEAVES[leaf]
        value = check_value(where, f"{sec}.{leaf}" if sec else leaf, f, value)
        (sections.setdefault(sec, {}) if sec else top)[leaf] = value
    for sec, vals in sections.items():
        top[sec] = dataclasses.replace(getattr(spec, sec), **vals)
    return dataclasses.replace(spec, **top) if top else spec


def dotted(key: str) -> str:
    """`lr` → `train.lr`, `seq_len` → `train.max_len`: the full name of a setting."""
    leaf = FLAT.get(key, key)
    sec = LEAVES[leaf][0] if leaf in LEAVES else None
    return f"{sec}.{leaf}" if sec else leaf


def flat_view(spec: RunSpec) -> dict[str, Any]:
    """The estimator's flat names → values (the JSON `setting` of an estimate)."""
    out = {}
    for flat, leaf in FLAT.items():
        sec, _ = LEAVES[leaf]
        out[flat] = getattr(getattr(spec, sec) if sec else spec, leaf)
    out["bits"] = spec.weight_bits
    return out


def from_flat(base: RunSpec | None = None, where: str = "estimate settings", **flat: Any) -> RunSpec:
    """A spec from flat estimate settings (CLI flags, UI inputs, tests). `bits` 16 means an
    unquantized base; 8/4 need method qlora."""
    flat = {k: v for k, v in flat.items() if v is not None}
    bits = flat.pop("bits", None)
    spec = update(base or estimate_base(), where, **flat)
    if bits is not None and bits != 16:
        if spec.method != "qlora":
            raise ConfigError("--bits 8/4 goes with --method qlora (quantized frozen base weights).")
        spec = update(spec, where, bits=bits)
    return spec


def estimate_base() -> RunSpec:
    """What `estimate` assumes when a setting is not given: a memory-lean single-GPU run — one
    example of 1,024 tokens per step with gradient checkpointing (the question is "does it fit")."""
    return update(RunSpec(), "defaults", max_len=1024, micro_batch=1, grad_ckpt=True)


# ---- overrides and help -----------------------------------------------------------------------
def override(spec: RunSpec, overrides: list[str], where: str = "--set") -> RunSpec:
    """`spec` with dotted `key=value` overrides applied, validated as a whole again."""
    return build(RunSpec, apply_overrides(spec.to_dict(), overrides, where), where)


def field_help(cls: type = RunSpec, prefix: str = "") -> dict[str, str]:
    """Dotted key → help text, for the CLI, the UI `info=` and docs."""
    out = {}
    for f in fields(cls):
        sub = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(sub):
            out.update(field_help(sub, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = f.metadata.get("help", "")
    return out


def flat_fields() -> dict[str, dataclasses.Field]:
    """Flat name → its field (help, choices, type): the estimate's CLI flags are made from these."""
    return {flat: LEAVES[leaf][1] for flat, leaf in FLAT.items()}
