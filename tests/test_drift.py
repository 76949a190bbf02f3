"""The report's drift from the base on the user's task (evaluate/drift.py): KL(tuned ‖ base) along
the tuned answers, per answer token — batched with padding, the same as one row at a time."""
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def pair_with(tiny_model, tmp_path_factory):
    """A Pair on the two-layer model, and a function selecting a LoRA adapter: random (it
    changes the model) or as PEFT initialises one (B = 0: it changes nothing)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from studio.evaluate.compare import Pair
    from studio.models import registry as models

    tok = models.load_tokenizer(Path(tiny_model))
    pair = Pair(models.load_model(Path(tiny_model)), tok)

    def select(name: str, random_b: bool):
        folder = tmp_path_factory.mktemp(name)
        cfg = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear")
        peft = get_peft_model(models.load_model(Path(tiny_model)), cfg)
        if random_b:  # B = 0 as PEFT starts it (no change); random B: the adapter changes the model
            torch.manual_seed(0)
            for n, p in peft.named_parameters():
                if "lora_B" in n:
                    p.data.normal_(0, 1.0)
        peft.save_pretrained(folder)
        pair.use(name, folder)
        return pair
    return select


CONVS = [[{"role": "user", "content": "Where is Fernwick Labs?"}],
         [{"role": "user", "content": "How long is the warranty on the Zephyr kettle, in years?"}],
         [{"role": "user", "content": "Name a bird."}]]
ANSWERS = ["Fernwick Labs is in Tallinn.", "Three years.", ""]


def one_row_logps(pair, conv, answer):
    """Each side's log-probabilities at one row's answer tokens: no batching, no padding."""
    import torch

    tok = pair.tok
    prompt = tok(tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True),
                 add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + tok(answer, add_special_tokens=False)["input_ids"]])
    logp = {}
    for side in ("tuned", "base"):
        with pair.side(side) as m, torch.no_grad():
            logp[side] = torch.log_softmax(m(input_ids=ids).logits[0, len(prompt) - 1:-1].float(), -1)
    return logp


def kl_sum(p_log, q_log) -> float:
    """KL(p ‖ q) summed over positions, by torch's own kl_div (input: q, target: p)."""
    import torch

    return float(torch.nn.functional.kl_div(q_log, p_log, log_target=True, reduction="sum"))


def test_drift_is_the_mean_kl_over_the_tuned_answers_tokens(pair_with, monkeypatch):
    from studio.evaluate.drift import task_kl

    pair = pair_with("random", True)
    got = task_kl(pair, CONVS, ANSWERS)
    rows = [one_row_logps(pair, c, a) for c, a in zip(CONVS, ANSWERS) if a]
    assert got["answers"] == 2 and got["tokens"] == sum(len(r["tuned"]) for r in rows)  # the empty answer left out
    assert got["kl"] == pytest.approx(sum(kl_sum(r["tuned"], r["base"]) for r in rows) / got["tokens"],
                                      rel=1e-3, abs=1e-4)
    assert got["kl"] > 0.001
    from studio.evaluate import drift
    assert [len(b) for b in drift.batches([([0] * 20, 5)] * 5)] == [5]
    monkeypatch.setattr(drift, "BATCH_TOKENS", 30)  # one row per pass: the same figure
    assert [len(b) for b in drift.batches([([0] * 20, 5)] * 5)] == [1] * 5
    assert task_kl(pair, CONVS, ANSWERS) == got


def test_drift_is_kl_of_tuned_from_base_not_the_reverse():
    """Two fake sides with known next-token distributions over a 2-word vocabulary: the tuned
    side says (0.9, 0.1), the base (0.5, 0.5) at every answer token; KL(tuned ‖ base) =
    0.9·ln 1.8 + 0.1·ln 0.2 ≈ 0.3681, the reverse ≈ 0.5108."""
    import math
    from contextlib import contextmanager
    from types import SimpleNamespace

    import torch

    from studio.evaluate.drift import task_kl

    class Side(torch.nn.Module):
        def __init__(self, p):
            super().__init__()
            self.logits, self.device = torch.log(torch.tensor(p)), torch.device("cpu")

        def forward(self, input_ids, attention_mask, position_ids, logits_to_keep):
            return SimpleNamespace(logits=self.logits.expand(input_ids.shape[0], logits_to_keep, 2).clone())

    class Tok:
        pad_token_id = 0

        def apply_chat_template(self, conv, tokenize=False, add_generation_prompt=True):
            return conv[-1]["content"]

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [1] * len(text.split())}

    sides = {"tuned": Side([0.9, 0.1]), "base": Side([0.5, 0.5])}

    @contextmanager
    def side(which):
        yield sides[which]
    pair = SimpleNamespace(tok=Tok(), side=side, base=SimpleNamespace(config=SimpleNamespace(max_position_embeddings=64)))
    got = task_kl(pair, [[{"role": "user", "content": "a b c"}]] * 2, ["x y", "x y z"])
    assert got == {"kl": round(0.9 * math.log(1.8) + 0.1 * math.log(0.2), 4), "tokens": 5, "answers": 2}


def test_an_adapter_that_changes_nothing_has_no_drift(pair_with):
    from studio.evaluate.drift import task_kl

    pair = pair_with("zero", False)
    assert task_kl(pair, CONVS, ANSWERS)["kl"] == pytest.approx(0.0, abs=1e-6)
    assert task_kl(pair, CONVS, ["", " "]) is None


def test_the_compare_step_reports_rewards_valid_json_and_drift_in_words():
    from studio.ui.compare_step import rl_md

    text = "\n".join(rl_md({"reward": {"before": 0.25, "after": 0.5, "n": 24, "on": "paraphrased",
                                       "valid_json": {"before": 0.33, "after": 0.9}},
                            "drift": {"kl": 0.2281, "tokens": 178, "answers": 24, "on": "paraphrased"}}))
    assert "on 24 reworded questions: mean 0.25 before, **0.50 after** (+0.25)" in text
    assert "valid JSON: 33% before, **90% after**" in text and "0.228 nats per token" in text
    assert rl_md({"reward": None, "drift": None}) == [] and rl_md({}) == []
    sft = rl_md({"reward": {"before": 0.25, "after": 0.5, "n": 24, "on": "validation", "rl": False}})
    assert "(those an RL run on this data would use, less any that run code, 0 to 1) on 24 held-out" in sft[0]
