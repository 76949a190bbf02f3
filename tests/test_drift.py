"""The report's drift from the base on the user's task (evaluate/drift.py): KL(tuned ‖ base) along
the tuned answers, per answer token — batched with padding, the same as one row at a time."""
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def pair_with(tiny_model, tmp_path_factory):
    """A Pair on the two-layer model, and a function selecting a LoRA adapter: random (it
    changes the model) or as PEFT initialises one (B = 0: it changes nothing)."""
    from peft import LoraConfig, get_peft_model

    from studio.evaluate.compare import Pair
    from studio.models import registry as models

    tok = models.load_tokenizer(Path(tiny_model))
    pair = Pair(models.load_model(Path(tiny_model)), tok)

    def select(name: str, random_b: bool):
        folder = tmp_path_factory.mktemp(name)
        cfg = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=not random_b)
        get_peft_model(models.load_model(Path(tiny_model)), cfg).save_pretrained(folder)
        pair.use(name, folder)
        return pair
    return select


CONVS = [[{"role": "user", "content": "Where is Fernwick Labs?"}],
         [{"role": "user", "content": "How long is the warranty on the Zephyr kettle, in years?"}],
         [{"role": "user", "content": "Name a bird."}]]
ANSWERS = ["Fernwick Labs is in Tallinn.", "Three years.", ""]


def one_row_kl(pair, conv, answer):
    """KL summed over one row's answer tokens, no batching and no padding, and the token count."""
    import torch

    tok = pair.tok
    prompt = tok(tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True),
                 add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + tok(answer, add_special_tokens=False)["input_ids"]])
    logp = {}
    for side in ("tuned", "base"):
        with pair.side(side) as m, torch.no_grad():
            logp[side] = torch.log_softmax(m(input_ids=ids).logits[0, len(prompt) - 1:-1].float(), -1)
    kl = (logp["tuned"].exp() * (logp["tuned"] - logp["base"])).sum(-1)
    return float(kl.sum()), kl.numel()


def test_drift_is_the_mean_kl_over_the_tuned_answers_tokens(pair_with):
    from studio.evaluate.drift import task_kl

    pair = pair_with("random", True)
    got = task_kl(pair, CONVS, ANSWERS)
    rows = [one_row_kl(pair, c, a) for c, a in zip(CONVS, ANSWERS) if a]
    assert got["answers"] == 2 and got["tokens"] == sum(n for _, n in rows)  # the empty answer is left out
    assert got["kl"] == pytest.approx(sum(k for k, _ in rows) / got["tokens"], rel=1e-3, abs=1e-4)
    assert got["kl"] > 0.001


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
    assert "(those an RL run on this data would use, 0 to 1) on 24 held-out questions" in sft[0]
