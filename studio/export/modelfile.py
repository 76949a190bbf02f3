"""Ollama Modelfile: FROM the GGUF, the family's Go TEMPLATE, a stop PARAMETER for every
end-of-turn token, sampling PARAMETERs, the default SYSTEM prompt, and an optional ADAPTER.

Owns writing the file and reading the default system prompt (by rendering the model's own
template without one); what differs per chat family lives in studio/families.py.
"""
from __future__ import annotations

from pathlib import Path

from ..models import families

SENTINEL = "¤"


def default_system(tok) -> str | None:
    """The system prompt the template inserts when none is given (e.g. SmolLM2's or Qwen2.5's),
    found as the text between the family's system opening and the user turn."""
    without = tok.apply_chat_template([{"role": "user", "content": SENTINEL}], tokenize=False)
    with_sys = tok.apply_chat_template([{"role": "system", "content": SENTINEL + SENTINEL},
                                        {"role": "user", "content": SENTINEL}], tokenize=False)
    head, _, tail = with_sys.partition(SENTINEL + SENTINEL)
    if not tail or not without.startswith(head):  # no system turn of its own (Gemma, Mistral)
        return None
    close = tail.split(SENTINEL, 1)[0]            # the system turn's closing + the user opening
    rest = without[len(head):]
    text = rest.split(close, 1)[0] if close and close in rest else ""
    return text.strip() or None


def render(gguf_name: str, tok, adapter_name: str | None = None, model_dir: Path | None = None) -> str:
    fam, template = families.ollama_template(tok)
    params, source = families.sampling(tok, model_dir)
    lines = [f"# Written by Finetune Studio for the {fam.name} chat format ({fam.examples}).",
             f"# Sampling below is {source}. Finetune Studio's Compare answers greedily",
             "# (temperature 0), so to see the same answers run with temperature 0.",
             f"FROM ./{gguf_name}"]
    if adapter_name:
        lines.append(f"ADAPTER ./{adapter_name}")
    lines.append(f'TEMPLATE """{template}"""')
    system = default_system(tok)
    if system:
        lines.append(f'SYSTEM """{system}"""')
    lines += [f'PARAMETER stop "{s}"' for s in families.stop_tokens(tok)]
    lines += [f"PARAMETER {k} {v:g}" for k, v in params.items()]
    return "\n".join(lines) + "\n"


def write(folder: Path, gguf_name: str, tok, adapter_name: str | None = None,
          model_dir: Path | None = None) -> Path:
    path = folder / "Modelfile"
    tmp = folder / ".Modelfile.tmp"
    tmp.write_text(render(gguf_name, tok, adapter_name, model_dir))
    tmp.replace(path)
    return path
