"""Ollama Modelfiles per chat family: the Go TEMPLATE, rendered by Go's text/template (the engine
Ollama runs), gives the same prompt text as the model's own Jinja chat template; stops and
sampling come from the family or the model's generation_config.json."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from studio.models import families
from studio.errors import ExportError
from studio.export import modelfile

GO = Path(__file__).parent / "go" / "render.go"
# Minimal templates written by us, each with its family's features.
JINJA = {
    "llama3": ("{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m.role + "
               "'<|end_header_id|>\n\n' + m.content + '<|eot_id|>' }}{% endfor %}"
               "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"),
    "chatml-think": ("{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.role == 'assistant' and "
                     "loop.last %}<think>\n\n</think>\n\n{% endif %}{{ m.content }}<|im_end|>\n"
                     "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"),
    "gemma": ("{{ bos_token }}{% if messages[0].role == 'system' %}{% set sys = messages[0].content + "
              "'\n\n' %}{% set rest = messages[1:] %}{% else %}{% set sys = '' %}{% set rest = messages %}"
              "{% endif %}{% for m in rest %}<start_of_turn>{{ 'model' if m.role == 'assistant' else "
              "m.role }}\n{{ (sys if loop.first else '') + m.content }}<end_of_turn>\n{% endfor %}"
              "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"),
    "phi3": ("{% for m in messages %}{{ '<|' + m.role + '|>\n' + m.content + '<|end|>\n' }}{% endfor %}"
             "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"),
    "phi4-mini": ("{% for m in messages %}{{ '<|' + m.role + '|>' + m.content + '<|end|>' }}{% endfor %}"
                  "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"),
    "mistral-v7": ("{{ bos_token }}{% for m in messages %}{% if m.role == 'system' %}[SYSTEM_PROMPT]"
                   "{{ m.content }}[/SYSTEM_PROMPT]{% elif m.role == 'user' %}[INST]{{ m.content }}[/INST]"
                   "{% else %}{{ m.content }}</s>{% endif %}{% endfor %}"),
    "mistral": ("{{ bos_token }}{% if messages[0].role == 'system' %}{% set sys = messages[0].content + "
                "'\n\n' %}{% set rest = messages[1:] %}{% else %}{% set sys = '' %}{% set rest = messages %}"
                "{% endif %}{% for m in rest %}{% if m.role == 'user' %}[INST] {{ (sys if loop.first else '') "
                "+ m.content }} [/INST]{% else %}{{ m.content }}</s>{% endif %}{% endfor %}"),
}
FAMILY = {"llama3": "llama3", "chatml-think": "chatml", "gemma": "gemma", "phi3": "phi3",
          "phi4-mini": "phi3", "mistral-v7": "mistral-v7", "mistral": "mistral"}
CONVERSATIONS = [
    [{"role": "user", "content": "What does the Orbit cost?"}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Hi there"}],
    [{"role": "user", "content": "One?"}, {"role": "assistant", "content": "Yes, one."},
     {"role": "user", "content": "And two?"}],
    [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Q1"},
     {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}],
]


@pytest.fixture(scope="module")
def go_render(tmp_path_factory):
    if not shutil.which("go"):
        pytest.skip("Go is not installed (make test installs golang-go where it can)")
    exe = tmp_path_factory.mktemp("go") / "render"
    subprocess.run(["go", "build", "-o", str(exe), str(GO)], check=True, capture_output=True,
                   env={**__import__("os").environ, "GOCACHE": str(exe.parent / "cache"),
                        "GOFLAGS": "-mod=mod", "GO111MODULE": "off"})

    def render(template: str, messages: list[dict]) -> str:
        out = subprocess.run([str(exe)], input=json.dumps({"template": template, "messages": messages}),
                             capture_output=True, text=True, check=True)
        return out.stdout
    return render


@pytest.fixture(scope="module")
def embedded_tok(embedded_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_model_dir)


@pytest.fixture
def tok(embedded_tok):
    """The embedded tokenizer with its own template back after each test."""
    original = embedded_tok.chat_template
    yield embedded_tok
    embedded_tok.chat_template = original


def ollama_messages(tok, conv: list[dict]) -> list[dict]:
    """What Ollama hands the template: the Modelfile's SYSTEM first when the user sent none."""
    system = modelfile.default_system(tok)
    if system and conv[0]["role"] != "system":
        return [{"role": "system", "content": system}, *conv]
    return conv


@pytest.mark.parametrize("name", [*JINJA, "embedded"])
def test_go_template_renders_like_the_model_template(tok, go_render, name):
    if name != "embedded":
        tok.chat_template = JINJA[name]
    fam, template = families.ollama_template(tok)
    assert fam.name == FAMILY.get(name, "chatml")
    for conv in CONVERSATIONS:
        want = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
        if tok.chat_template.startswith("{{ bos_token }}"):  # llama.cpp/Ollama add BOS themselves
            want = want.removeprefix(tok.bos_token)
        assert go_render(template, ollama_messages(tok, conv)) == want, (name, conv)


def test_modelfile_per_family(tok, tmp_path):
    text = modelfile.render("m.gguf", tok)                  # the embedded model: ChatML + default system
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM' in text
    assert 'PARAMETER stop "<|im_end|>"' in text and "PARAMETER temperature 0.7" in text
    assert "Compare answers greedily" in text
    tok.chat_template = JINJA["gemma"]
    gemma = modelfile.render("m.gguf", tok, "lora.gguf")
    assert "SYSTEM" not in gemma and "ADAPTER ./lora.gguf" in gemma
    assert "PARAMETER top_k 64" in gemma and "<start_of_turn>model" in gemma
    (tmp_path / "generation_config.json").write_text(json.dumps(
        {"do_sample": True, "temperature": 0.6, "top_p": 0.95, "top_k": 20, "repetition_penalty": 1.05}))
    own = modelfile.render("m.gguf", tok, model_dir=tmp_path)
    assert "PARAMETER temperature 0.6" in own and "PARAMETER repeat_penalty 1.05" in own
    assert "generation_config.json" in own


def test_stops_are_shared_by_every_engine(tok):
    from studio.models.families import stop_ids

    tok.chat_template = JINJA["llama3"]
    assert families.stop_tokens(tok) == ["<|im_end|>"]      # the family's stops this vocab lacks drop out
    tok.chat_template = JINJA["chatml-think"]
    assert families.stop_tokens(tok) == ["<|im_end|>", "<|im_start|>"]
    assert set(stop_ids(tok)) == {tok.convert_tokens_to_ids(t) for t in ["<|im_end|>", "<|im_start|>"]}


def test_unknown_template_says_what_to_do(tok):
    tok.chat_template = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    with pytest.raises(ExportError, match="llama.cpp or LM Studio"):
        modelfile.render("m.gguf", tok)
