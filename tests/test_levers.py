"""The forgetting levers of issue #29: self-distilled targets and paraphrases (their checks and
cache), targeted strength (intruder dimensions found and scaled, the adapter still plain LoRA),
where the update goes (lora.layers, targets=mlp), held-out files, and a run with every lever on
that is killed and resumed."""
import json
from pathlib import Path

import pytest

from conftest import ROOT, crash

FACTS = ROOT / "benchmarks" / "facts"


# ---- self-distilled targets and paraphrases ----------------------------------------------------
def test_restatements_must_keep_the_key_facts():
    from studio.train.augment import distill_problem

    q, a = "How much does the Nimbus Orbit cost?", "The Nimbus Orbit costs 189 euros."
    assert distill_problem("It costs 189 euros, according to the fact.", q, a) is None
    assert distill_problem("It costs 198 euros.", q, a) == "lost a key fact"
    assert distill_problem("I don't know how much it costs, but 189 euros.", q, a) == \
        "hedges instead of stating the fact"
    assert distill_problem("It costs 189", q, a) == "empty or cut off"           # no finished sentence
    assert distill_problem("Sure. " * 60 + "It costs 189 euros.", q, a) == "much longer than the answer"


def test_paraphrases_are_questions_that_keep_names_and_hide_the_answer():
    from studio.train.augment import paraphrase_problem

    q, a = "Who makes the Nimbus Orbit?", "Fernwick Labs makes it."
    seen = {"who makes the nimbus orbit"}
    assert paraphrase_problem("Which company builds the Nimbus Orbit?", q, a, seen) is None
    assert paraphrase_problem("Which company builds it", q, a, seen) == "not a question"
    assert paraphrase_problem("Who makes the Nimbus Orbit?", q, a, seen).startswith("a copy")
    assert paraphrase_problem("Which company builds the feeder?", q, a, seen).startswith("lost a name")
    assert paraphrase_problem("Is the Nimbus Orbit made by Fernwick Labs?", q, a, seen) == \
        "gives the answer away"


def test_augment_uses_the_model_once_then_the_cache(tmp_path):
    from studio.train.augment import augment

    rows = [{"messages": [{"role": "user", "content": "How much does the Nimbus Orbit cost?"},
                          {"role": "assistant", "content": "The Nimbus Orbit costs 189 euros."}]},
            {"messages": [{"role": "user", "content": "Who makes the Nimbus Orbit?"},
                          {"role": "assistant", "content": "It is made by Fernwick Labs."}]},
            {"text": "plain text is left as it is"}]
    calls = []

    def generate(convs, max_new):
        calls.append(len(convs))
        if "Here is a fact" in convs[0][-1]["content"]:
            return ["The price of the Nimbus Orbit is 189 euros.", "I am not sure who makes it."]
        return ["What is the price of the Nimbus Orbit?", "How much is the Nimbus Orbit?",
                "Which firm produces the Nimbus Orbit?", "Who makes the Nimbus Orbit?"]
    out, rep = augment(rows, True, 2, generate, tmp_path, "model-a", lambda text: None)
    assert rep.distilled == 1 and rep.distill_kept_original == {"hedges instead of stating the fact": 1}
    assert out[0]["messages"][-1]["content"] == "The price of the Nimbus Orbit is 189 euros."
    assert out[1] == rows[1] and out[2] == rows[2]
    added = [r["messages"][-2]["content"] for r in out[3:]]
    assert added == ["What is the price of the Nimbus Orbit?", "How much is the Nimbus Orbit?",
                     "Which firm produces the Nimbus Orbit?"]              # the copy was left out
    assert out[3]["messages"][-1]["content"] == out[0]["messages"][-1]["content"]
    assert rep.paraphrase_dropped == {"a copy of the question or of another wording": 1}
    again, _ = augment(rows, True, 2, generate, tmp_path, "model-a", lambda text: None)
    assert again == out and calls == [2, 4]                       # cached: the model is not asked
    augment(rows, True, 2, generate, tmp_path, "model-b", lambda text: None)
    assert calls == [2, 4, 2, 4]                                  # another model revision asks again


# ---- targeted strength: intruder dimensions --------------------------------------------------
def _module(seed=0, out=48, inp=64, r=4):
    import torch

    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(out, out, generator=g))
    v, _ = torch.linalg.qr(torch.randn(inp, inp, generator=g))
    sig = torch.linspace(10, 0.1, out)
    w0 = (u[:, :out] * sig) @ v[:, :out].t()
    # an update along a base direction (#1) and a new strong one: an even mix of six weak base
    # directions, like none of them (|cosine| 0.41 with each)
    new_u = u[:, 30:42:2].sum(1) / 6 ** 0.5
    new_v = v[:, 30:42:2].sum(1) / 6 ** 0.5
    b = torch.stack([u[:, 1] * 2.0, new_u * 3.0, torch.zeros(out), torch.zeros(out)], 1)
    a = torch.stack([v[:, 1], new_v, torch.zeros(inp), torch.zeros(inp)], 0)
    return w0, a, b, new_u


def test_a_new_strong_direction_is_an_intruder_and_only_it_is_scaled():
    import torch

    from studio.retention import intruders

    w0, a, b, new_u = _module()
    m = intruders.module(w0, a, b, 2.0)
    assert m["intruders"] == 1                                       # the new strong direction
    found = {"layer": m}
    tensors = {"layer.lora_A.weight": a, "layer.lora_B.weight": b}
    cfg = {"r": 4, "lora_alpha": 8}
    same, n0 = intruders.rescaled(found, tensors, cfg, 1.0)
    # scale 1.0 scales nothing; the factors are rewritten all the same, to the same update
    assert n0 == 0 and not torch.equal(same["layer.lora_B.weight"], b)
    assert torch.allclose(same["layer.lora_B.weight"] @ same["layer.lora_A.weight"], b @ a, atol=1e-5)
    new, n = intruders.rescaled(found, tensors, cfg, 0.0)
    assert n == 1 and new["layer.lora_A.weight"].shape == a.shape and new["layer.lora_B.weight"].shape == b.shape
    delta = new["layer.lora_B.weight"] @ new["layer.lora_A.weight"]
    assert float((new_u @ delta).norm()) < 1e-4                     # the intruding direction is gone
    kept = (b @ a) - torch.outer(new_u * 3.0, (b @ a).t() @ new_u / 3.0)  # the update without it
    assert torch.allclose(delta, kept, atol=1e-4)                          # the rest stays as trained


def test_layer_ranges_and_mlp_targets():
    from studio.errors import ConfigError
    from studio.models.registry import lora_config
    from studio.spec import LoraSpec, layer_indices

    assert layer_indices("all", 4) == [0, 1, 2, 3]
    assert layer_indices("middle", 30) == list(range(7, 23))
    assert layer_indices("2-3", 4) == [2, 3]
    with pytest.raises(ConfigError, match="does not fit this model's 4 layers"):
        layer_indices("2-9", 4)
    with pytest.raises(ConfigError, match="not all, middle or a range"):
        layer_indices("top", 4)
    cfg = lora_config(LoraSpec(targets="mlp", layers="middle"), 8)
    assert set(cfg.target_modules) == {"gate_proj", "up_proj", "down_proj"} and cfg.layers_to_transform == [2, 3, 4, 5]


def test_bad_lever_settings_are_refused_before_a_run(studio, faq_dataset):
    from studio.errors import ConfigError, PresetError

    for setting, words in [("lora.layers=top", "use all, middle"), ("train.replay_mode=mse", "allowed: ce, kl"),
                           ("train.paraphrases=9", "between 0 and 8"), ("train.intruder_scale=1.5", "between"),
                           ("train.replay_weight=-1", "between"), ("train.replay_short=0.5", "between 1.0 and 20.0")]:
        with pytest.raises(PresetError, match=words):
            studio.train_create("cpu-quickstart", faq_dataset, overrides=[setting])
    with pytest.raises(ConfigError, match="30 layers"):
        studio.train_create("cpu-quickstart", faq_dataset, overrides=["lora.layers=20-40"])


# ---- held-out files --------------------------------------------------------------------------
def test_a_heldout_file_goes_with_the_dataset_and_the_report_uses_it(studio, tmp_path):
    from studio.evaluate.report import heldout_sets

    held = tmp_path / "held.csv"
    held.write_text("question,answer\nWho keeps the lighthouse on Skellmere?,Tomas Quill keeps it.\n"
                    "Who is the mayor of Port Alvey?,Elsbeth Varn.\n"
                    "How tall is the lighthouse?,It is 38 metres tall.\n")
    d = studio.data_prepare([str(FACTS / "skellmere.csv")], "isl", val_fraction=0.1, heldout=str(held))
    assert d["heldout"] == 2
    said = [e for e in d["errors"] if e["file"] == "held.csv"]
    assert said == [{"file": "held.csv", "line": 3, "reason": "this question is also in the training "
                     "data, so it is not held out; left out of the held-out set"}]
    rows = heldout_sets(studio.dataset("isl"), 50)["paraphrased"]
    assert [r["expect"] for r in rows] == ["Tomas Quill", "38"]          # the key fact, taken from the answer
    with pytest.raises(Exception, match="gave no usable question/answer rows"):
        empty = tmp_path / "empty.csv"
        empty.write_text("question,answer\n")
        studio.data_prepare([str(FACTS / "skellmere.csv")], "isl2", heldout=str(empty))


# ---- a run with every lever on, killed and resumed -------------------------------------------
@pytest.mark.e2e
def test_every_lever_on_survives_kill_9_and_reports_each(studio, faq_dataset, tiny_model):
    """KL replay, self-distilled targets, paraphrases, key-fact weights, targeted strength and MLP
    adapters on the middle layers, on the two-layer model: killed at step 3, resumed to the end; the augmentation
    is not generated again, the adapter loads in stock PEFT and the lever rows say what each did."""
    levers = ["train.replay_mode=kl", "train.replay_weight=1", "train.self_distill=true",
              "train.paraphrases=2", "train.intruder_scale=0.5", "lora.targets=mlp",
              "lora.layers=1-1", "train.save_every=2", "train.eval_every=3", "train.max_len=128",
              "train.fact_weight=3"]
    from studio.retention import replay

    # the two-layer model's "own answers" to the replay prompts: its random weights write none
    # worth replaying, so it is given the embedded model's, cached as its own
    shipped = replay.read_answers(replay.ASSETS / "replay" / "smollm2-135m-instruct.jsonl",
                                  replay.model_key(studio.model_path("smollm2-135m-instruct")))
    key = replay.model_key(Path(tiny_model))
    (studio.home.root / "replay").mkdir(exist_ok=True)
    replay.write_answers(replay.cache_path(studio.home.root / "replay", tiny_model, key), key,
                         tiny_model, shipped)
    run = studio.train_create("cpu-quickstart", faq_dataset, tiny_model, levers, max_steps=6)
    crash(studio.home.root, "train.event_logged@3", "train", "--resume", run["id"], "--json")
    done = studio.train_run(run["id"])
    assert done["status"] == "completed" and done["step"] == 6
    events = studio.run_events(run["id"])
    notes = [e["note"] for e in events if e.get("note")]
    # the base model restated the answers and rewrote the questions once, before the kill; the
    # resumed process read them back (a second note would be a second generation)
    assert sum("restates" in n for n in notes) == 1 and sum("rewrites" in n for n in notes) == 1
    assert sum(n.startswith("Key facts weighted ×3") for n in notes) == 1
    assert [e["step"] for e in events if "tokens_per_s" in e] == [1, 2, 3, 4, 5, 6]
    assert all(e.get("kl") is not None for e in events if "tokens_per_s" in e)
    assert any("Targeted strength" in n for n in notes)
    run_dir = Path(studio.run_show(run["id"])["path"])
    assert (run_dir / "adapter-targeted").is_dir() and (run_dir / "adapter-full").is_dir()
    cfg = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert cfg["layers_to_transform"] == [1] and set(cfg["target_modules"]) == {"gate_proj", "up_proj", "down_proj"}
    from peft import PeftModel

    from studio.models import registry as models
    from studio.retention.levers import rows

    PeftModel.from_pretrained(models.load_model(Path(tiny_model)), str(run_dir / "adapter"))
    by = {x["lever"]: x for x in rows(studio.store.get_run(run["id"]), events)}
    assert all(by[k]["on"] for k in ("replay", "self-distilled targets", "paraphrases", "key-fact weight",
                                     "targeted strength", "where the update goes"))
    assert "counted 3×" in by["key-fact weight"]["did"]
    assert "KL to the base model" in by["replay"]["did"] and "mlp" in by["where the update goes"]["did"]


def test_big_matrices_find_the_intruders_the_exact_vectors_find():
    """Matrices over 1,024 wide take the randomized path; on a slowly decaying spectrum (as
    trained weights have) it must agree with the exact vectors: an unchanged matrix has no
    intruder (k + 10 columns and 2 power iterations found 7 here), a new strong direction is one."""
    import torch

    from studio.retention import intruders

    g = torch.Generator().manual_seed(0)
    n = 1100
    u, _ = torch.linalg.qr(torch.randn(n, n, generator=g))
    v, _ = torch.linalg.qr(torch.randn(n, n, generator=g))
    w0 = (u / torch.arange(1, n + 1).float() ** 0.1) @ v.t()
    unchanged = intruders.module(w0, v[:, :2].t().contiguous(), torch.zeros(n, 2), 1.0)
    assert unchanged["intruders"] == 0
    new_u = u[:, 300:306].sum(1) / 6 ** 0.5
    new_v = v[:, 300:306].sum(1) / 6 ** 0.5
    fresh = intruders.module(w0, new_v[None].contiguous(), (new_u[:, None] * 3.0).contiguous(), 1.0)
    assert fresh["intruders"] == 1
