"""Rewards for reinforcement learning (train.objective=grpo|rloo), derived from the user's data.

Owns the reward registry (`REWARDS`: one record per reward with its name, the one-line `why` the
UI shows, its role, its function and the predicate saying whether a dataset supports it), the
rows rewards read (`reward_rows`: prompt, question, reference answer, recipe — from a prepared
chat example), the automatic choice from a dataset and the `--reward A,B` override (`choose`),
a user's own reward file (reward_file.py), the combined score a run optimises (`combine`) and the
verdict on a reward preview (`verdict`). Pure Python: no torch; the trainer and the preview
(train/rl.py) call it.

Every reward scores one completion in [0, 1], higher is better, or None where it does not apply
to that row. "score" rewards say how right an answer is; "penalty" rewards are 1 for a clean
answer and lower for a bad habit. The combined reward is the mean of the scores that apply,
times each penalty — so it stays in [0, 1], and a penalty alone never rewards an empty answer.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from ..errors import DataError
from ..scoring import NUMBER, key_facts, norm, states, fact_share
from .reward_record import Reward
from .sandbox import SECONDS as SANDBOX_SECONDS

SHORT_WORDS = 5          # a reference of up to 5 words is a short answer: exact/numeric match
JSON_SHARE = 0.8         # references are "JSON answers" when 80% of them parse as an object
FORMAT_SHARE = 0.8       # ... and have a form (`format`) when 80% of their last lines share one
FORMAT_MAX = 16          # the longest form that counts (in shape() symbols)
SAFETY = "safety-check"  # the recipe of the harmful requests the optional safety reward mixes in
SAFETY_SHARE = 0.1       # ... one per ten of the run's own prompts (at least one, at most the set)
ON_SAFETY_ROWS = ("safety", "length", "repetition")  # the rewards that apply to those requests
SAFETY_SET = "replay_harmful.txt"  # where they come from (assets/safety/; the check asks others)
FENCE = re.compile(r"```(?:\w+)?\s*\n(.*?)(?:```|$)", re.S)


# ---- rows -------------------------------------------------------------------------------------
def reward_rows(examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Prepared chat examples → the rows rewards read: `prompt` (the conversation up to the last
    answer), `question` (the last user turn), `answer` (the reference, "" without one) and
    `recipe` (e.g. code-functions). Examples without a user turn are left out."""
    out = []
    for ex in examples:
        msgs = ex.get("messages")
        if not isinstance(msgs, list) or not msgs:
            continue
        answer = msgs[-1]["content"] if msgs[-1].get("role") == "assistant" else ""
        prompt = msgs[:-1] if answer else msgs
        users = [m["content"] for m in prompt if m.get("role") == "user"]
        if not users:
            continue
        out.append({"prompt": prompt, "question": users[-1], "answer": answer or ex.get("answer", ""),
                    "recipe": (ex.get("meta") or {}).get("recipe", "")})
    return out


def unfence(text: str) -> str:
    """The body of the first ``` fenced block, or the text itself."""
    m = FENCE.search(text)
    return m.group(1).strip() if m else text.strip()


def as_json(text: str) -> Any:
    try:
        return json.loads(unfence(text))
    except (ValueError, TypeError):
        return None


# ---- the rewards --------------------------------------------------------------------------------
def facts(c: str, row: dict[str, Any], ctx: dict[str, Any]) -> float | None:
    if not row.get("answer") or not key_facts(row["answer"], row.get("question", "")):
        return None
    return fact_share(c, row["answer"], row.get("question", ""))


def first_number(text: str) -> float | None:
    m = NUMBER.search(text)
    try:
        return float(m.group(0).replace(",", "")) if m else None
    except ValueError:
        return None


def exact(c: str, row: dict[str, Any], ctx: dict[str, Any]) -> float | None:
    ref = row.get("answer", "")
    if not ref or len(norm(ref).split()) > SHORT_WORDS:
        return None
    if re.fullmatch(r"\s*-?[\d.,]+\s*", ref):  # a number: the completion's first number
        want = first_number(ref)
        return float(want is not None and first_number(c) == want)
    return float(norm(c) == norm(ref) or states(c, ref))


def f1(c: str, row: dict[str, Any], ctx: dict[str, Any]) -> float | None:
    if not row.get("answer"):
        return None
    got, want = Counter(norm(c).split()), Counter(norm(row["answer"]).split())
    same = sum((got & want).values())
    if not same:
        return 0.0
    p, r = same / sum(got.values()), same / sum(want.values())
    return 2 * p * r / (p + r)


def made_up(c: str, row: dict[str, Any], ctx: dict[str, Any]) -> float | None:
    if not row.get("answer"):
        return None
    known = f" {norm(row['answer'])} {norm(row.get('question', ''))} "
    claimed = key_facts(c)
    if not claimed:
        return 1.0
    invented = [f for f in claimed if f" {norm(f)} " not in known]
    return 1.0 - len(invented) / len(claimed)


def schema_of(references: list[str]) -> dict[str, str]:
    """key → the JSON type most references give it, over the references that are objects."""
    seen: dict[str, Counter] = {}
    for ref in references:
        obj = as_json(ref)
        if isinstance(obj, dict):
            for k, v in obj.items():
                seen.setdefault(k, Counter())[type(v).__name__] += 1
    return {k: c.most_common(1)[0][0] for k, c in seen.items()}


def json_schema(c: str, row: dict[str, Any], ctx: dict[str, Any]) -> float | None:
    schema = ctx.get("schema") or {}
    if not schema or not row.get("answer"):
        return None
    obj = as_json(c)
    if not isinstance(obj, dict):
        return 0.0
    right = sum(k in obj and type(obj[k]).__name__ == t for k, t in schema.items())
    return 0.1 + 0.9 * right / len(schema)  # it parses: a little; each key of the right type: more


def json_values(c: str, row: dict[str, Any], ctx: dict[str, Any]) -> float | None:
    """The share of the reference object's keys whose value the answer gives, equal (text compared
    case and spacing aside, numbers by value): the right fields, filled right."""
    ref = as_json(row.get("answer", ""))
    if not isinstance(ref, dict) or not ref:
        return None
    obj = as_json(c)
    if not isinstance(obj, dict):
        return 0.0
    return sum(k in obj and same_value(obj[k], v) for k, v in ref.items()) / len(ref)


def same_value(got: Any, want: Any) -> bool:
    """JSON values equal: text case, punctuation and spacing aside, numbers by value, objects and
    lists value by value; a number given as text ("66" for 66) is another type, not equal."""
    if isinstance(want, bool) or isinstance(got, bool):
        return got is want
    if isinstance(want, (int, float)) and isinstance(got, (int, float)):
        return float(got) == float(want)
    if isinstance(want, str) and isinstance(got, str):
        return norm(got) == norm(want)
    if isinstance(want, dict) and isinstance(got, dict):
        return all(k in got and same_value(got[k], v) for k, v in want.items())  # extra keys as at the top
    if isinstance(want, list) and isinstance(got, list):
        return len(want) == len(got) and all(same_value(g, w) for g, w in zip(got, want))
    return got == want


def is_code(row: dict[str, Any]) -> bool:
    return row.get("recipe") == "code-functions" or "```python" in row.get("answer", "")


def compiles(c: str, row: dict[str, Any], ctx: dict[str, Any]) -> float | None:
    if not is_code(row):
        return None
    src = unfence(c)
    if not src or not re.search(r"^\s*(def|class|async def)\s", src, re.M):
        return 0.0
    try:
        compile(src, "<completion>", "exec")
    except (SyntaxError, ValueError):
        return 0.0
    return 1.0


def doctests(c: str, row: dict[str, Any], ctx: dict[str, Any]) -> float | None:
    """The share of the reference function's doctest examples the completion's code passes, run
    in a separate process with a time limit and no network (sandbox.py); None where the
    reference has no examples."""
    from . import sandbox

    if not is_code(row):
        return None
    docs = sandbox.docstrings(unfence(row.get("answer", "")))
    if not docs:
        return None
    src = unfence(c)
    if not src.strip():
        return 0.0
    r = sandbox.run(src, docs)
    return (r["tried"] - r["failed"]) / r["tried"] if r["tried"] else 0.0


def shape(text: str) -> str:
    """The form of an answer's last line: numbers → 9, words → a, spaces folded, a closing full
    stop or exclamation mark dropped, the rest kept ("#### 42" → "#### 9", "2024-05-01" → "9-9-9",
    "B" → "a", "Berlin." → "a")."""
    lines = text.strip().splitlines()
    last = re.sub(r"\d+(?:[.,]\d+)*", "9", lines[-1].strip().rstrip(".!") if lines else "")
    return re.sub(r"\s+", " ", re.sub(r"[^\W\d_]+", "a", last))


def common_shape(rows: list[dict[str, Any]]) -> str | None:
    """The last-line form that FORMAT_SHARE of the reference answers share, if any (short forms
    only: a sentence's form says nothing)."""
    forms = Counter(shape(r["answer"]) for r in rows if r.get("answer"))
    if sum(forms.values()) < 2:
        return None
    form, n = forms.most_common(1)[0]
    return form if n >= FORMAT_SHARE * sum(forms.values()) and 0 < len(form) <= FORMAT_MAX else None


def in_form(c: str, row: dict[str, Any], ctx: dict[str, Any]) -> float | None:
    if not ctx.get("shape") or not row.get("answer") or shape(row["answer"]) != ctx["shape"]:
        return None  # only rows whose own reference is in the shared form
    return 1.0 if shape(c) == ctx["shape"] else 0.5


def refusal(c: str, row: dict[str, Any], ctx: dict[str, Any]) -> float | None:
    """On the harmful requests mixed in by the safety reward: 1 for a refusal (the safety
    check's rule), 0 for an answer; None on the run's own prompts."""
    from ..retention.safety import refuses

    return (1.0 if refuses(c) else 0.0) if row.get("recipe") == SAFETY else None


def length(c: str, row: dict[str, Any], ctx: dict[str, Any]) -> float | None:
    ref = len(row.get("answer", "").split()) or 30
    n = len(c.split())
    if n == 0:
        return 0.0
    lo, hi = 2 * ref + 10, 4 * ref + 20  # full marks up to twice the reference, none from four times
    return 1.0 if n <= lo else max(0.0, 1.0 - (n - lo) / (hi - lo))


def repetition(c: str, row: dict[str, Any], ctx: dict[str, Any]) -> float | None:
    words = norm(c).split()
    grams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
    if len(grams) < 4:
        return 1.0
    return len(set(grams)) / len(grams)


def with_answers(rows: list[dict[str, Any]]) -> bool:
    return bool(rows) and sum(bool(r.get("answer")) for r in rows) >= len(rows) / 2


def with_facts(rows: list[dict[str, Any]]) -> bool:
    return with_answers(rows) and not json_answers(rows) and not code_rows(rows) and sum(
        bool(key_facts(r["answer"], r["question"])) for r in rows if r.get("answer")) >= len(rows) / 2


def short_answers(rows: list[dict[str, Any]]) -> bool:
    return prose_answers(rows) and sum(0 < len(norm(r.get("answer", "")).split()) <= SHORT_WORDS
                                      for r in rows) >= len(rows) / 2


def prose_answers(rows: list[dict[str, Any]]) -> bool:
    return with_answers(rows) and not json_answers(rows) and not code_rows(rows)


def json_answers(rows: list[dict[str, Any]]) -> bool:
    refs = [r["answer"] for r in rows if r.get("answer")]
    return bool(refs) and sum(isinstance(as_json(a), dict) for a in refs) >= JSON_SHARE * len(refs)


def code_rows(rows: list[dict[str, Any]]) -> bool:
    return bool(rows) and sum(is_code(r) for r in rows) >= len(rows) / 2


def code_with_doctests(rows: list[dict[str, Any]]) -> bool:
    from .sandbox import docstrings

    return code_rows(rows) and any(is_code(r) and docstrings(unfence(r.get("answer", ""))) for r in rows)


def formatted(rows: list[dict[str, Any]]) -> bool:
    return not json_answers(rows) and not code_rows(rows) and common_shape(rows) is not None


def always(rows: list[dict[str, Any]]) -> bool:
    return bool(rows)


def never(rows: list[dict[str, Any]]) -> bool:  # asked for by name only
    return False


REWARDS: dict[str, Reward] = {r.name: r for r in (
    Reward(name="facts", role="score", fn=facts, supports=with_facts,
           why="Key-fact coverage: the share of the reference answer's names and numbers the answer states."),
    Reward(name="exact", role="score", fn=exact, supports=short_answers,
           why="Exact or numeric match, for short reference answers (a word, a name, a number)."),
    Reward(name="f1", role="score", fn=f1, supports=prose_answers,
           why="Token F1 against the reference answer: partial credit for the words they share."),
    Reward(name="made_up", role="penalty", fn=made_up, supports=with_facts,
           why="Penalty for names and numbers that are in neither the reference nor the question."),
    Reward(name="json", role="score", fn=json_schema, supports=json_answers,
           why="The answer parses as JSON with the keys and types the reference answers use (credit per key)."),
    Reward(name="json_values", role="score", fn=json_values, supports=json_answers,
           why="The answer's JSON gives each of the reference's keys the reference's value (credit per key)."),
    Reward(name="compiles", role="score", fn=compiles, supports=code_rows,
           why="The Python code in the answer compiles (a def or class, no syntax error)."),
    Reward(name="doctests", role="score", fn=doctests, supports=code_with_doctests, runs_code=True,
           why="The answer's code passes the reference function's doctest examples (run apart: "
               f"{SANDBOX_SECONDS:g} s, no network, a temp folder; credit per example)."),
    Reward(name="format", role="penalty", fn=in_form, supports=formatted,
           why="Half the reward for an answer whose last line is not in the form the references share "
               "(e.g. a bare number, a single word, '#### 42'), on rows whose reference has it."),
    Reward(name="safety", role="score", fn=refusal, supports=never,
           why=f"Optional (--reward auto,safety): harmful requests join the prompts, one per "
               f"{round(1 / SAFETY_SHARE)} (at most every request of assets/safety/{SAFETY_SET}); a refusal "
               "scores 1, an answer 0 (the report's safety check asks other requests)."),
    Reward(name="length", role="penalty", fn=length, supports=with_answers,
           why="Penalty for answers more than twice as long as the reference (none from four times)."),
    Reward(name="repetition", role="penalty", fn=repetition, supports=always,
           why="Penalty for repeating the same three words over and over."),
)}


# ---- choice and the combined score ---------------------------------------------------------------
def choose(rows: list[dict[str, Any]], names: str = "", dataset: str = "the dataset") -> list[Reward]:
    """The rewards a run uses: `names` ("A,B"; "auto" is every registry reward this dataset
    supports; a .py path is a user reward file) or, when empty, "auto". Refuses a choice in
    which no reward scores the run's own prompts."""
    chosen: list[Reward] = []
    for name in [n.strip() for n in (names or "auto").split(",") if n.strip()] or ["auto"]:
        if name == "auto":
            found = [r for r in REWARDS.values() if r.supports(rows)]
        elif name.endswith(".py") or "/" in name:
            from .reward_file import load_user

            found = [load_user(name)]
        elif name in REWARDS:
            found = [REWARDS[name]]
        else:
            raise DataError(f"Unknown reward '{name}'; rewards: {', '.join(REWARDS)}, auto (the ones "
                            "this dataset supports), or the path of your own reward file (.py).")
        chosen += [r for r in found if r.name not in {c.name for c in chosen}]
    if not any(r.role == "score" and r.name != "safety" for r in chosen):
        raise DataError(
            f"{dataset} gives no reward to learn from: RL needs each prompt's reference answer (a "
            "question with its answer: facts, short answers or JSON), Python code from the "
            "code-functions recipe, or your own reward file (--reward path/to/reward.py defining "
            "reward(prompt, completion, **row)). Add answers to the rows, or give a reward file"
            + (" — penalties and the safety reward alone score none of your own prompts." if chosen else "."))
    return chosen


def context(chosen: list[Reward], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What rewards need from the whole dataset: the JSON schema and the form the references share."""
    names = {r.name for r in chosen}
    return {"schema": schema_of([r["answer"] for r in rows if r.get("answer")]) if "json" in names else {},
            "shape": common_shape(rows) if "format" in names else None}


def values(chosen: list[Reward], completion: str, row: dict[str, Any], ctx: dict[str, Any]
           ) -> list[float | None]:
    """Each chosen reward's value for one completion, None where it does not apply; on the
    harmful requests the safety reward mixes in, only it and the built-in penalties apply (a
    user's reward file never sees them)."""
    mixed_in = row.get("recipe") == SAFETY
    return [r.fn(completion, row, ctx) if not mixed_in or r.name in ON_SAFETY_ROWS else None
            for r in chosen]


def combined(chosen: list[Reward], vals: list[float | None]) -> float | None:
    """The mean of the score rewards that apply, times each penalty; None when no score applies."""
    scores, factor = [], 1.0
    for r, v in zip(chosen, vals):
        if v is None:
            continue
        if r.role == "score":
            scores.append(v)
        else:
            factor *= v
    return sum(scores) / len(scores) * factor if scores else None


def combine(chosen: list[Reward], completion: str, row: dict[str, Any], ctx: dict[str, Any]
            ) -> float | None:
    return combined(chosen, values(chosen, completion, row, ctx))


def mean_reward(chosen: list[Reward], completions: list[str], rows: list[dict[str, Any]],
                ctx: dict[str, Any]) -> float | None:
    vals = [v for c, r in zip(completions, rows) if (v := combine(chosen, c, r, ctx)) is not None]
    return round(sum(vals) / len(vals), 4) if vals else None


def verdict(groups: list[list[float]]) -> dict[str, Any]:
    """A reward preview's figures and its words: groups of one prompt's sampled completions."""
    flat = [v for g in groups for v in g]
    mean = sum(flat) / len(flat) if flat else 0.0
    zero = sum(max(g) - min(g) < 1e-6 for g in groups) / len(groups) if groups else 1.0
    right = sum(v >= 0.95 for v in flat) / len(flat) if flat else 0.0
    if right >= 0.95:
        words = f"already right on {right:.0%}: nothing to learn"
    elif mean < 0.05:
        words = "never right: run SFT first, then RL from that run (--from-run)"
    elif zero > 0.5:
        words = (f"{zero:.0%} of prompts get the same reward on every try: little to learn from; "
                 "raise train.temperature or train.generations, or run SFT first")
    else:
        words = "good spread: go"
    return {"groups": len(groups), "zero_spread": round(zero, 4), "mean": round(mean, 4),
            "verdict": words}
