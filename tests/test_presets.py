"""Presets: every shipped file validates; bad files fail with file, key and what is allowed."""
from pathlib import Path

import pytest

from studio import presets
from studio.spec import field_help, override
from studio.errors import PresetError

REQUIRED = {"cpu-quickstart", "gpu-8gb-qlora", "gpu-12gb-qlora", "gpu-16gb-lora", "gpu-24gb-lora"}


def test_all_shipped_presets_validate():
    loaded = presets.list_presets()
    assert REQUIRED <= {p.name for p in loaded}
    for p in loaded:
        assert p.description, p.name
        text = (presets.PRESETS_DIR / f"{p.name}.yaml").read_text()
        assert text.startswith("#"), f"{p.name} needs a header comment saying who it is for"
    assert presets.get_preset("gpu-8gb-qlora").method == "qlora"


def write(tmp_path: Path, body: str) -> Path:
    f = tmp_path / "bad.yaml"
    f.write_text(body)
    return f


@pytest.mark.parametrize("body, words", [
    ("train:\n  lrr: 0.1\n", ["bad.yaml", "train.lrr", "Allowed keys", "lr"]),
    ("train:\n  lr: fast\n", ["bad.yaml", "train.lr", "must be a number", "'fast'"]),
    ("train:\n  lr: -0.001\n", ["bad.yaml", "train.lr", "between"]),
    ("method: full\n", ["method", "allowed: lora, qlora"]),
    ("lora:\n  rank: 0\n", ["lora.rank", "between 1"]),
    ("lora:\n  rank: 8.5\n", ["lora.rank", "whole number"]),
    ("train: 3\n", ["train", "mapping"]),
    ("- a\n- b\n", ["top level", "mapping"]),
    ("train:\n  lr: [1\n", ["bad.yaml", "not valid YAML", "line"]),
    ("colour: blue\n", ["unknown key 'colour'"]),
])
def test_bad_preset_files(tmp_path, body, words):
    with pytest.raises(PresetError) as e:
        presets.load_file(write(tmp_path, body))
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_scientific_notation_and_overrides():
    p = presets.load_file(presets.PRESETS_DIR / "cpu-quickstart.yaml",
                          ["train.lr=2e-4", "lora.rank=8", "lora.dora=true"])
    assert p.train.lr == pytest.approx(2e-4) and p.lora.rank == 8 and p.lora.dora is True
    with pytest.raises(PresetError, match="train.nope"):
        override(p, ["train.nope=1"])
    with pytest.raises(PresetError, match="key=value"):
        override(p, ["train.lr"])
    with pytest.raises(PresetError, match="Cannot read the value"):
        override(p, ["train.lr=[1"])


def test_help_written_once_on_fields():
    h = field_help()
    assert "learning rate" in h["train.lr"].lower()
    assert all(h.values()), [k for k, v in h.items() if not v]


def test_every_gpu_preset_fits_a_card_of_its_size(studio):
    """What a GPU preset promises, checked by the estimator on the smallest card of its size
    (the GRPO presets' generation included): a preset that outgrew its card fails here."""
    import yaml

    gpus = yaml.safe_load((presets.PRESETS_DIR / "catalog" / "gpus.yaml").read_text())
    gpu_presets = [p for p in presets.list_presets() if p.gpu_gb > 0]
    assert {"gpu-8gb-qlora-grpo", "gpu-12gb-qlora-grpo", "gpu-24gb-lora-grpo"} <= {p.name for p in gpu_presets}
    for p in gpu_presets:
        card = min((k for k, g in gpus.items() if isinstance(g, dict) and g.get("vram_gb") == p.gpu_gb),
                   key=lambda k: gpus[k]["usable_gb"])
        r = studio.estimate(p.model, card, spec=p)
        assert r["fits"], (p.name, card, r["total_gb"], gpus[card]["usable_gb"])
