"""Curriculum ordering (#43, train.order=curriculum): easy → hard within each topic, topics in
turn, replay spread through; a run reads its examples in that order, keeps it in its folder and
reads it back on resume; a run too short to reach the hardest examples says so."""
import json
from pathlib import Path

import pytest

from studio.train import batches, curriculum


def test_the_order_is_easy_to_hard_topics_in_turn_and_replay_spread():
    # positions 0-5 are the user's examples (two topics), 6-7 are replay rows
    losses = {0: 3.0, 1: 1.0, 2: 2.0, 3: 0.5, 4: 2.5, 5: 1.5}
    topic = {0: 0, 1: 0, 2: 0, 3: 1, 4: 1, 5: 1}
    got = curriculum.order(8, list(range(6)), losses, topic)
    user = [i for i in got if i < 6]
    assert user == [1, 3, 2, 5, 0, 4]                  # rank 1 of each topic, then 2, then 3
    for t in (0, 1):                                   # easy → hard inside each topic
        mine = [losses[i] for i in user if topic[i] == t]
        assert mine == sorted(mine)
    assert sorted(got) == list(range(8))               # every example once
    assert got.index(6) in (1, 2, 3) and got.index(7) in (5, 6, 7)  # replay spread, not bunched


def test_topics_group_texts_that_share_words():
    texts = [f"The railway station {i} opens at dawn" for i in range(16)] + \
            [f"Cheese recipe {i} needs milk and salt" for i in range(16)]
    t = curriculum.topics(texts, seed=0)
    assert len(set(t[:16])) == 1 and len(set(t[16:])) == 1 and t[0] != t[16]
    assert curriculum.topics(texts[:10], seed=0) == [0] * 10   # a small set is one topic
    assert curriculum.topics([f"{i % 10} + {i % 7}" for i in range(40)], seed=0) == [0] * 40  # no words: one


def test_difficulty_is_the_base_models_loss_from_the_first_trained_token(embedded_model_dir):
    """On the embedded model (a random two-layer one finds every token equally hard, so a wrong
    start position would not show)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from studio.models import registry as models

    tok = models.load_tokenizer(embedded_model_dir)
    model = get_peft_model(models.load_model(embedded_model_dir), LoraConfig(r=4, target_modules="all-linear"))
    rows = batches.encode_examples(tok, [{"messages": [{"role": "user", "content": q},
                                                       {"role": "assistant", "content": a}]}
                                         for q, a in [("Who makes it?", "Fernwick Labs."),
                                                      ("How much is it?", "It costs 189 euros in shops."),
                                                      ("Color?", "Blue and a light grey.")]], 128)
    got = curriculum.difficulty(model, tok, rows)
    for r, loss in zip(rows, got):
        start = next(i for i, y in enumerate(r["labels"]) if y != -100)
        with torch.inference_mode(), model.disable_adapter():
            logits = model(input_ids=torch.tensor([r["input_ids"]])).logits[0, start - 1:-1].float()
        plain = float(torch.nn.functional.cross_entropy(logits, torch.tensor(r["input_ids"][start:])))
        assert abs(loss - plain) < 0.05, (loss, plain)


@pytest.mark.e2e
def test_a_curriculum_run_reads_its_examples_in_that_order(studio, faq_dataset, tiny_model, monkeypatch):
    seen: list[list[int]] = []
    real = batches.CountingCollator.__call__

    def spy(self, features):
        if features and all(batches.INDEX in f for f in features):  # training batches only
            seen.append([f[batches.INDEX] for f in features])
        return real(self, features)
    monkeypatch.setattr(batches.CountingCollator, "__call__", spy)
    run = studio.train_create("cpu-quickstart", faq_dataset, tiny_model, [
        "train.order=curriculum", "train.replay=0", "train.safety_replay=0", "train.forget_budget=0",
        "train.eval_every=0", "train.max_len=128", "train.micro_batch=4"], max_steps=3)
    done = studio.train_run(run["id"])
    assert done["status"] == "completed"
    run_dir = Path(studio.run_show(run["id"])["path"])
    did = json.loads((run_dir / "levers.json").read_text())["curriculum"]
    assert did["examples"] > 8 and did["easiest"] < did["hardest"]
    assert [i for b in seen for i in b][:8] == did["first"]         # the trainer kept the order
    kept = json.loads((run_dir / "curriculum.json").read_text())
    rows = [{batches.INDEX: i, "input_ids": [1], "labels": [1]} for i in range(kept["size"])]
    again, read = curriculum.arrange(rows, None, None, 0, batches.INDEX, print, run_dir / "curriculum.json")
    assert read["read_back"] and [r[batches.INDEX] for r in again] == kept["order"]  # a resume: no model pass
    notes = [e["note"] for e in studio.run_events(run["id"]) if e.get("note")]
    assert any(n.startswith("Curriculum: ") for n in notes)
    shuffled = studio.train_create("cpu-quickstart", faq_dataset, tiny_model, [
        "train.replay=0", "train.safety_replay=0", "train.forget_budget=0", "train.eval_every=0",
        "train.max_len=128", "train.micro_batch=4"], max_steps=1)
    seen.clear()
    studio.train_run(shuffled["id"])
    assert seen[0] != did["first"][:4]                             # off by default: shuffled


def test_the_order_setting_takes_its_two_choices_only():
    from studio.errors import PresetError
    from studio.spec import RunSpec, update

    spec = update(RunSpec(), order="curriculum")
    assert spec.train.order == "curriculum"
    with pytest.raises(PresetError, match="'train.order' is 'hardest-first'; allowed: shuffled, curriculum"):
        update(RunSpec(), order="hardest-first")


def test_a_run_too_short_for_the_hardest_examples_is_told(studio, faq_dataset, tiny_model):
    short = studio.train_create("cpu-quickstart", faq_dataset, tiny_model, [
        "train.order=curriculum", "train.micro_batch=2"], max_steps=3)
    assert any("hardest ones" in n and "are never reached" in n for n in short["notes"]), short["notes"]
    whole = studio.train_create("cpu-quickstart", faq_dataset, tiny_model, [
        "train.order=curriculum", "train.micro_batch=4"], max_steps=200)
    assert not any("never reached" in n for n in whole["notes"])
