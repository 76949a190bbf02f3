"""Chat-template families: one record per family of the models we train and export.

Owns what depends on how a model writes a conversation: recognising the family from the Jinja
chat template, its end-of-turn (stop) tokens — used alike by Compare, the chat engines, the
parity check and the Ollama Modelfile — the Ollama TEMPLATE (a Go template over .Messages that
renders what the model's own Jinja template renders, checked by tests/test_modelfile.py with
Go's text/template), and the family's published sampling settings, used when the model folder has
no generation_config.json of its own.

llama.cpp and Ollama add the beginning-of-text token themselves, so no TEMPLATE writes it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ExportError

SYSTEM_INTO_FIRST_USER = (  # for templates with no system role: the system text opens turn one
    '{{- $sys := "" }}{{- range .Messages }}{{- if eq .Role "system" }}{{ $sys = .Content }}'
    '{{- else if eq .Role "user" }}USER_OPEN{{ if $sys }}{{ $sys }}SYS_SEP{{ $sys = "" }}{{ end }}'
    '{{ .Content }}USER_CLOSE{{ else if eq .Role "assistant" }}AST_OPEN{{ .Content }}AST_CLOSE'
    '{{ end }}{{ end }}GEN')  # no "{{-" after literal text: it would eat the turn's newline


def _system_into_user(user_open: str, user_close: str, ast_open: str, ast_close: str,
                      sep: str, gen: str) -> str:
    return (SYSTEM_INTO_FIRST_USER.replace("USER_OPEN", user_open).replace("USER_CLOSE", user_close)
            .replace("AST_OPEN", ast_open).replace("AST_CLOSE", ast_close)
            .replace("SYS_SEP", sep).replace("GEN", gen))


@dataclass(frozen=True)
class Family:
    name: str
    markers: tuple[str, ...]        # all of these appear in the Jinja source of the family
    template: str                   # Ollama Go template over .Messages (roles system/user/assistant)
    stops: tuple[str, ...]          # end-of-turn tokens; the tokenizer's eos is added to these
    run_on: tuple[str, ...]         # text that means an answer ran into the next turn
    sampling: dict[str, float] = field(default_factory=dict)  # the publisher's recommendation
    examples: str = ""


FAMILIES: tuple[Family, ...] = (
    Family("llama3", ("<|start_header_id|>",),
           '{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n'
           '{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n',
           ("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"), ("<|start_header_id|>", "<|eot_id|>"),
           {"temperature": 0.6, "top_p": 0.9}, "Llama 3.x"),
    Family("chatml", ("<|im_start|>",),
           '{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}'
           '<|im_start|>assistant\n',
           ("<|im_end|>", "<|im_start|>"), ("<|im_start|>", "<|im_end|>"),
           {"temperature": 0.7, "top_p": 0.8, "top_k": 20}, "Qwen2.5, Qwen3, SmolLM2, SmolLM3"),
    Family("gemma", ("<start_of_turn>",),
           _system_into_user("<start_of_turn>user\n", "<end_of_turn>\n", "<start_of_turn>model\n",
                             "<end_of_turn>\n", "\n\n", "<start_of_turn>model\n"),
           ("<end_of_turn>",), ("<start_of_turn>", "<end_of_turn>"),
           {"temperature": 1.0, "top_k": 64, "top_p": 0.95}, "Gemma 2, Gemma 3"),
    Family("phi3", ("<|assistant|>", "<|end|>"),
           '{{- range .Messages }}<|{{ .Role }}|>NL{{ .Content }}<|end|>NL{{ end }}<|assistant|>NL',
           ("<|end|>", "<|endoftext|>"), ("<|user|>", "<|end|>"),
           {"temperature": 0.7, "top_p": 0.95}, "Phi-3, Phi-4-mini"),
    Family("mistral-v7", ("[SYSTEM_PROMPT]", "[INST]"),
           '{{- range .Messages }}{{ if eq .Role "system" }}[SYSTEM_PROMPT]{{ .Content }}'
           '[/SYSTEM_PROMPT]{{ else if eq .Role "user" }}[INST]{{ .Content }}[/INST]'
           '{{ else }}{{ .Content }}</s>{{ end }}{{ end }}',
           ("</s>",), ("[INST]",), {"temperature": 0.15}, "Mistral-Small 24B"),
    Family("mistral", ("[INST]",),
           _system_into_user("[INST] ", " [/INST]", "", "</s>", "\n\n", ""),
           ("</s>",), ("[INST]",), {"temperature": 0.7}, "Mistral 7B"),
)


def family_of(chat_template: str | None) -> Family:
    """The family whose markers all appear in the template; ExportError when none matches."""
    text = chat_template or ""
    for fam in FAMILIES:
        if all(m in text for m in fam.markers):
            return fam
    raise ExportError("This model's chat template is not one we can write for Ollama ("
                      + "; ".join(f"{f.name}: {f.examples}" for f in FAMILIES) + "). Use the GGUF "
                      "with llama.cpp or LM Studio, which read the template from the file, or "
                      "write the Modelfile's TEMPLATE by hand.")


def known_family_of(chat_template: str | None) -> Family | None:
    try:
        return family_of(chat_template)
    except ExportError:
        return None


def known_family(tok) -> Family | None:
    return known_family_of(getattr(tok, "chat_template", None))


def ollama_template(tok) -> tuple[Family, str]:
    """The family and its Go template, fitted to this tokenizer's spacing where families vary
    (Phi-3 puts a newline after each role tag, Phi-4-mini does not)."""
    fam = family_of(getattr(tok, "chat_template", None))
    template = fam.template
    if "NL" in template:
        probe = tok.apply_chat_template([{"role": "user", "content": "¤"}], tokenize=False)
        template = template.replace("NL", "\n" if "<|user|>\n¤" in probe else "")
    return fam, template


def stop_tokens(tok) -> list[str]:
    """End-of-turn tokens of this tokenizer: its family's that it has, and its eos."""
    vocab = tok.get_vocab()
    fam = known_family(tok)
    wanted = list(fam.stops) if fam else [t for f in FAMILIES for t in f.stops]
    stops = [t for t in dict.fromkeys(wanted) if t in vocab]
    if tok.eos_token and tok.eos_token not in stops:
        stops.append(tok.eos_token)
    return stops


def run_on_markers(tok) -> tuple[str, ...]:
    fam = known_family(tok)
    return fam.run_on if fam else tuple(dict.fromkeys(m for f in FAMILIES for m in f.run_on))


OLLAMA_PARAMS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k",
                 "repetition_penalty": "repeat_penalty", "min_p": "min_p"}


def sampling(tok, model_dir: Path | None = None) -> tuple[dict[str, float], str]:
    """Sampling settings and where they come from: the model's own generation_config.json when
    it asks for sampling, else the family's published recommendation."""
    gc: dict[str, Any] = {}
    if model_dir and (Path(model_dir) / "generation_config.json").exists():
        try:
            gc = json.loads((Path(model_dir) / "generation_config.json").read_text())
        except (OSError, ValueError):
            gc = {}
    own = {OLLAMA_PARAMS[k]: v for k, v in gc.items() if k in OLLAMA_PARAMS and isinstance(v, (int, float))}
    if gc.get("do_sample") and "temperature" in own:
        return own, "the model's generation_config.json"
    fam = known_family(tok)
    if fam:
        return dict(fam.sampling), f"the {fam.examples} publisher's recommendation"
    return {"temperature": 0.7}, "a general default"


def stop_ids(tok, model=None) -> list[int]:
    """Every end-of-turn id: the chat family's (stop_tokens above), the eos, the generation config's."""
    ids = {tok.eos_token_id}
    gc = getattr(model, "generation_config", None)
    extra = getattr(gc, "eos_token_id", None) if gc is not None else None
    ids.update(extra if isinstance(extra, list) else [extra])
    ids.update(tok.convert_tokens_to_ids(t) for t in stop_tokens(tok))
    return sorted(i for i in ids if isinstance(i, int) and i >= 0)
