"""Ollama Modelfile: FROM the GGUF, a Go TEMPLATE matching the model's chat template, a stop
PARAMETER for every end-of-turn token, the default SYSTEM prompt, and an optional ADAPTER.

Owns recognising the chat-template family from the Jinja source (ChatML, Llama 3, Gemma,
Mistral [INST]) — Ollama templates are Go templates, so each family has its own — and reading
the default system prompt by rendering the model's own template without one.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ExportError

TEMPLATES = {
    "chatml": ('{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
               '{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}'
               '<|im_start|>assistant\n', ["<|im_end|>", "<|im_start|>"]),
    "llama3": ('<|begin_of_text|>{{- if .System }}<|start_header_id|>system<|end_header_id|>\n\n'
               '{{ .System }}<|eot_id|>{{ end }}{{- range .Messages }}<|start_header_id|>{{ .Role }}'
               '<|end_header_id|>\n\n{{ .Content }}<|eot_id|>{{ end }}'
               '<|start_header_id|>assistant<|end_header_id|>\n\n', ["<|eot_id|>", "<|end_of_text|>"]),
    "gemma": ('{{- range .Messages }}<start_of_turn>{{ if eq .Role "assistant" }}model{{ else }}'
              '{{ .Role }}{{ end }}\n{{ .Content }}<end_of_turn>\n{{ end }}<start_of_turn>model\n',
              ["<end_of_turn>"]),
    "mistral": ('{{- range .Messages }}{{ if eq .Role "user" }}[INST] {{ .Content }} [/INST]'
                '{{ else }}{{ .Content }}</s>{{ end }}{{ end }}', ["</s>", "[INST]"]),
}


def family(chat_template: str) -> str:
    if "<|im_start|>" in chat_template:
        return "chatml"
    if "<|start_header_id|>" in chat_template:
        return "llama3"
    if "<start_of_turn>" in chat_template:
        return "gemma"
    if "[INST]" in chat_template:
        return "mistral"
    raise ExportError("This model's chat template is not one we can translate for Ollama "
                      "(ChatML, Llama 3, Gemma or Mistral). Use the GGUF with llama.cpp, which "
                      "reads the template from the file, or write the TEMPLATE by hand.")


def default_system(tok) -> str | None:
    """The system prompt the template inserts when none is given (e.g. SmolLM's), if any."""
    text = tok.apply_chat_template([{"role": "user", "content": "¤"}], tokenize=False)
    if "<|im_start|>system\n" in text:
        return text.split("<|im_start|>system\n", 1)[1].split("<|im_end|>", 1)[0].strip() or None
    return None


def render(gguf_name: str, tok, adapter_name: str | None = None, temperature: float = 0.7) -> str:
    fam = family(tok.chat_template or "")
    template, stops = TEMPLATES[fam]
    eos = tok.eos_token
    if eos and eos not in stops:
        stops = [*stops, eos]
    lines = [f"FROM ./{gguf_name}"]
    if adapter_name:
        lines.append(f"ADAPTER ./{adapter_name}")
    lines.append(f'TEMPLATE """{template}"""')
    system = default_system(tok)
    if system:
        lines.append(f'SYSTEM """{system}"""')
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    lines.append(f"PARAMETER temperature {temperature}")
    return "\n".join(lines) + "\n"


def write(folder: Path, gguf_name: str, tok, adapter_name: str | None = None) -> Path:
    path = folder / "Modelfile"
    tmp = folder / ".Modelfile.tmp"
    tmp.write_text(render(gguf_name, tok, adapter_name))
    tmp.replace(path)
    return path
