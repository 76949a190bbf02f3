"""A run that started from another (--from-run) is judged and scaled as the second update only:
strength 0 is the start run's adapter (not the base), 1 this run's, 0.5 the midpoint of the two
updates — in memory (retention/delta.swapped) and written to disk (strength.apply), which every
export reads; the report gives the start's figures and says which of the two the run kept.
"""
import json
import shutil
from pathlib import Path

import pytest

from studio.paths import RUN


def _adapters(tmp: Path, tiny_model: str):
    """A tiny model with two LoRA adapters on the same layers and rank: the start (B0, A0) and
    this run's (B, A) = the start trained further (here: moved at random), as PEFT folders."""
    import torch
    from peft import get_peft_model

    from studio.models import registry as models
    from studio.spec import LoraSpec

    torch.manual_seed(1)
    model = get_peft_model(models.load_model(Path(tiny_model)),
                           models.lora_config(LoraSpec(rank=4, alpha=8, dropout=0.0), 2))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)
    model.save_pretrained(tmp / "start")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.add_(torch.randn_like(p) * 0.2)
    model.save_pretrained(tmp / "full")
    return model


def _logits(tiny_model: str, adapter: Path | None):
    import torch
    from peft import PeftModel

    from studio.models import registry as models

    m = models.load_model(Path(tiny_model))
    if adapter is not None:
        m = PeftModel.from_pretrained(m, str(adapter))
    ids = torch.tensor([[1, 400, 2000, 31, 77, 9000]])
    with torch.no_grad():
        return m.eval()(input_ids=ids).logits


def _merged(tiny_model: str, adapter: Path) -> dict:
    from peft import PeftModel

    from studio.models import registry as models

    m = PeftModel.from_pretrained(models.load_model(Path(tiny_model)), str(adapter)).merge_and_unload()
    return {k: v.clone() for k, v in m.state_dict().items() if "proj" in k}


@pytest.fixture(scope="module")
def second_run(tmp_path_factory, tiny_model):
    """A run folder as a --from-run run leaves it: adapter/ (finished), adapter-start/."""
    tmp = tmp_path_factory.mktemp("from-run")
    model = _adapters(tmp, tiny_model)
    run_dir = tmp / "runs" / "second"
    run_dir.mkdir(parents=True)
    shutil.copytree(tmp / "full", run_dir / RUN.adapter)
    (run_dir / RUN.adapter / RUN.complete).write_text("")
    from studio.retention.delta import keep_start

    keep_start(run_dir, tmp / "start")
    return tmp, run_dir, model


def test_strength_in_memory_scales_only_what_the_second_run_added(second_run, tiny_model):
    import torch

    from studio.retention import delta

    tmp, _, model = second_run
    full, cfg = delta.read(tmp / "full")
    start = delta.read(tmp / "start")[0]
    ids = torch.tensor([[1, 400, 2000, 31, 77, 9000]])
    model.eval()
    with torch.no_grad():
        as_trained = model(input_ids=ids).logits
        at = {}
        for value in (0.0, 0.5, 1.0):
            with delta.swapped(model, full, start, cfg, value):
                at[value] = model(input_ids=ids).logits
        assert torch.equal(model(input_ids=ids).logits, as_trained)  # restored after the block
        with model.disable_adapter():
            base = model(input_ids=ids).logits
    start_logits, full_logits = _logits(tiny_model, tmp / "start"), _logits(tiny_model, tmp / "full")
    torch.testing.assert_close(at[0.0], start_logits, rtol=1e-4, atol=1e-5)  # the start, not the base
    assert not torch.allclose(at[0.0], base, atol=1e-3)
    torch.testing.assert_close(at[1.0], full_logits, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(at[0.5], start_logits, atol=1e-3) and not torch.allclose(at[0.5], full_logits, atol=1e-3)
    # the same at 0.5 as the adapter written to disk at 0.5 (what exports read)
    tensors, cfg2 = delta.blended(full, start, cfg, 0.5)
    half = tmp / "half"
    shutil.copytree(tmp / "full", half)
    from safetensors.torch import save_file

    save_file(tensors, str(half / delta.WEIGHTS))
    (half / delta.CONFIG).write_text(json.dumps(cfg2))
    torch.testing.assert_close(at[0.5], _logits(tiny_model, half), rtol=1e-4, atol=1e-5)


def test_strength_written_to_disk_is_the_line_from_the_start_run(second_run, tiny_model):
    import torch

    from studio.retention import strength

    tmp, run_dir, _ = second_run
    start, full = _merged(tiny_model, tmp / "start"), _merged(tiny_model, tmp / "full")
    try:
        strength.apply(run_dir, 0.5)
        assert strength.current(run_dir) == 0.5
        cfg = json.loads((run_dir / RUN.adapter / "adapter_config.json").read_text())
        assert cfg["r"] == 8 and cfg["lora_alpha"] == 8  # rank 2r, the scale folded into B
        assert (run_dir / RUN.adapter / RUN.complete).exists()
        half = _merged(tiny_model, run_dir / RUN.adapter)
        for k in full:  # merged weights: exactly halfway between the start's and this run's
            torch.testing.assert_close(half[k], (start[k] + full[k]) / 2, rtol=1e-5, atol=1e-6)
        strength.apply(run_dir, 0.0)
        torch.testing.assert_close(_logits(tiny_model, run_dir / RUN.adapter),
                                   _logits(tiny_model, tmp / "start"), rtol=1e-4, atol=1e-5)
    finally:
        strength.apply(run_dir, 1.0)  # as trained, at its own rank again
    assert json.loads((run_dir / RUN.adapter / "adapter_config.json").read_text())["r"] == 4
    torch.testing.assert_close(_logits(tiny_model, run_dir / RUN.adapter),
                               _logits(tiny_model, tmp / "full"), rtol=0, atol=0)


def test_a_fresh_run_scales_the_whole_update_as_before(second_run, tiny_model, tmp_path):
    import torch

    from studio.retention import strength

    tmp = second_run[0]
    run_dir = tmp_path / "fresh"
    shutil.copytree(tmp / "full", run_dir / RUN.adapter)
    (run_dir / RUN.adapter / RUN.complete).write_text("")
    strength.apply(run_dir, 0.0)
    assert not (run_dir / RUN.adapter_start).exists()
    torch.testing.assert_close(_logits(tiny_model, run_dir / RUN.adapter), _logits(tiny_model, None),
                               rtol=1e-5, atol=1e-6)
    assert json.loads((run_dir / RUN.adapter / "adapter_config.json").read_text())["r"] == 4


@pytest.mark.e2e
def test_sft_then_from_run_is_judged_against_the_start_and_reported(studio, faq_dataset, tiny_model,
                                                                   monkeypatch):
    """Two short runs on the two-layer model, the second from the first: the start adapter is kept
    with it, every evaluation carries its figures against the start, the lower strengths the
    budget tries scale the second update only (here every full-strength evaluation is made to
    look over budget, so the budget keeps 0.75: a rank-2r adapter), and the report gives the
    start's figures and says which of the two it kept."""
    from studio.retention import strength
    from studio.train.selection import Watcher

    knobs = ["train.replay=0", "train.eval_every=2", "train.save_every=2", "train.max_len=128",
             "train.lr=1e-2", "lora.rank=4", "lora.alpha=8"]
    first = studio.train_create("cpu-quickstart", faq_dataset, tiny_model, knobs, max_steps=2)
    studio.train_run(first["id"])
    monkeypatch.setattr(Watcher, "over", lambda self, e: e.get("strength", 1.0) == 1.0)
    run = studio.train_create("cpu-quickstart", faq_dataset, tiny_model, knobs, max_steps=2,
                              from_run=first["id"])
    assert studio.train_run(run["id"])["status"] == "completed"
    monkeypatch.undo()
    run_dir = Path(studio.run_show(run["id"])["path"])
    assert (run_dir / RUN.adapter_start / "adapter_model.safetensors").exists()
    sel = json.loads((run_dir / RUN.selection).read_text())
    assert sel["start"]["probe_ppl"] and all("vs_start" in e for e in sel["evals"])
    assert sorted(e.get("strength", 1.0) for e in sel["evals"]) == [0.25, 0.5, 0.75, 1.0]
    assert strength.current(run_dir) == 0.75
    assert json.loads((run_dir / RUN.adapter / "adapter_config.json").read_text())["r"] == 8

    rep = studio.report(run["id"], refresh=True)
    assert rep["from_run"]["id"] == first["id"]
    assert {"fact_match", "probe_ppl", "kept"} <= set(rep["from_run"]) and rep["from_run"]["probe_ppl"]
    vs = rep["vs_start"]
    assert vs["words"].startswith(("Kept what run", "Lost part of what run")) and first["id"] in vs["words"]
    assert vs["words"] in rep["verdict"] and vs["probe_ppl_rise"] is not None
    assert [r["strength"] for r in rep["trade_off"]] == [0.5, 0.75, 1.0]
    # the run it started from (no --from-run): no start kept, no figures against one
    first_dir = Path(studio.run_show(first["id"])["path"])
    assert not (first_dir / RUN.adapter_start).exists()
    assert json.loads((first_dir / RUN.selection).read_text()).get("start") is None


def test_the_report_measures_the_start_on_the_same_questions(second_run, tiny_model):
    """The report's start figures are the start run's adapter's (the tuned side at strength 0 of
    the second update), not the base's; the words say kept or lost by the fact match."""
    from studio.data.templates import mean_loss
    from studio.evaluate import second
    from studio.evaluate.compare import Pair
    from studio.models import registry as models
    from studio.scoring import ppl, probe_examples

    tmp, run_dir, _ = second_run
    tok = models.load_tokenizer(Path(tiny_model))
    pair = Pair(models.load_model(Path(tiny_model)), tok)
    pair.use("second", run_dir / RUN.adapter)
    rows = [{"messages": [{"role": "user", "content": "Where is Fernwick Labs?"}],
             "answer": "Fernwick Labs is in Tallinn.", "expect": "Tallinn"}]
    probe = probe_examples()[:2]
    start = second.start_figures(pair, tok, {"path": str(run_dir)}, "sft-1", rows, probe,
                                 {"rows": [], "asked": 0}, 4)
    assert start["id"] == "sft-1" and set(start) >= {"fact_match", "probe_ppl", "kept"}
    with pair.side("tuned") as m:
        tuned_ppl = ppl(mean_loss(m, tok, probe, 512))
    with pair.side("base") as m:
        base_ppl = ppl(mean_loss(m, tok, probe, 512))
    from peft import PeftModel

    alone = PeftModel.from_pretrained(models.load_model(Path(tiny_model)), str(tmp / "start")).eval()
    assert start["probe_ppl"] == pytest.approx(ppl(mean_loss(alone, tok, probe, 512)), rel=1e-4)
    assert start["probe_ppl"] != pytest.approx(base_ppl, rel=1e-3)
    with pair.side("tuned") as m:  # the block restored this run's adapter
        assert ppl(mean_loss(m, tok, probe, 512)) == tuned_ppl
    assert second.start_figures(pair, tok, {"path": str(tmp)}, "", rows, probe, {"rows": []}, 4) is None

    start.update(fact_match=0.58, known_idx=[0, 1, 2, 3])
    kept = second.against_start(start, {"probe_ppl": start["probe_ppl"], "paraphrased": {"fact_match": 0.6}},
                                "paraphrased", {"still": [0, 1, 2]})
    assert kept["kept_learned"] and kept["kept"] == 0.75 and kept["probe_ppl_rise"] == 0
    assert kept["words"].startswith("Kept what run sft-1 (the run it started from) learned: fact match 58% → 60%")
    lost = second.against_start(start, {"probe_ppl": None, "paraphrased": {"fact_match": 0.2}},
                                "paraphrased", {"still": []})
    assert not lost["kept_learned"] and lost["words"].startswith(
        "Lost part of what run sft-1 (the run it started from) learned: fact match 58% → 20%")


def test_each_evaluation_is_judged_against_the_start_too():
    """An evaluation's figures against the start's: perplexity rise, answer match change, and of
    the general questions the start answered right (positions among the base's), the share kept."""
    from studio.train.selection import vs_start

    start = {"probe_ppl": 20.0, "answer_match": 0.5, "kept_idx": [0, 2, 5, 7]}
    got = vs_start({"probe_ppl": 22.0, "answer_match": 0.25, "kept_idx": [0, 1, 2]}, start)
    assert got == {"forgetting": 0.1, "answer_match": 0.5, "match_change": -0.25, "kept": 0.5}
    assert vs_start({"probe_ppl": None, "answer_match": None}, {"kept_idx": []}) == {
        "forgetting": None, "answer_match": None, "match_change": None, "kept": None}
