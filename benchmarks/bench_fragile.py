"""Which everyday answers does a tuned model lose: the ones fine-tuning breaks, or the ones the base
model barely had?

The report's retention counts, of the shipped general questions (assets/retention.jsonl) the base
model answers right, how many the tuned model still does. Three measurements, on the embedded
model (fp32, CPU):
  1. margin — at the first token of the expected answer in the base model's own greedy answer
     ("four" in "A dog has four legs."), how far that token's log-probability stands above the
     next most likely one's. A small margin: the base was right by a hair.
  2. random — the same retention check after a random change of the weights shaped like a real
     run's: each adapted matrix moved by an update with the singular values of that run's own
     update (scale·B·A, at the strength it kept) along random orthonormal directions. It has the
     real update's size and spectrum, not its directions: a real update lines up with the text
     the model reads, a random one mostly does not. The same count is not the same cause: the
     script prints which answers each loses, and what each loses at a smaller size.
  3. lost — from bench_outcome.py results (their runs' report.json, looked up in the bench homes
     under the system temp folder): how often each known question was lost.
It prints, per question, margin / lost by random changes / lost by real runs, and the loss rate by
margin band.

Usage: .venv/bin/python benchmarks/bench_fragile.py --run RUN_DIR [--run RUN_DIR ...] [--random N]
         [--sizes 0.5,1] [--label LABEL,LABEL] [RESULTS.json ...]
  --run: a finished quickstart run kept at strength 1 (its adapter sets the shape of the random
  changes: per adapted matrix, the singular values of its update); --random: random changes per run
  and size (default 4); --sizes: their size as a multiple of the run's (default 1). The real runs'
  losses at strengths below 1 come from their reports' trade-off tables; --label: only the
  results' runs of these recipes.
"""
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BANDS = (0.5, 1.5, 3.0)  # margin bands, nats: < 0.5, 0.5–1.5, 1.5–3, ≥ 3


def known_rows(model, tok, model_dir: Path) -> tuple[list[dict], list[str]]:
    """The retention rows the base model answers right, and its answers to them (the report's
    own stored answers where they match, else generated)."""
    from studio.retention import replay
    from studio.retention.base_answers import memo_for

    rows = replay.retention_rows()
    base = memo_for(None, model_dir.name, model_dir, model).answers(
        "retention", [r["question"] for r in rows], replay.RETENTION_TOKENS,
        lambda _: replay.retention_answers(model, tok, rows))
    ok = replay.knows(base, rows)
    return [r for r, k in zip(rows, ok) if k], [b for b, k in zip(base, ok) if k]


def margins(model, tok, rows: list[dict], answers: list[str]) -> list[float | None]:
    """Log-probability margin of the expected answer's first token over the runner-up, at the
    place the base model's own answer states it (None where it cannot be found)."""
    import re

    import torch

    from studio.models.chat import context_of, encode_prompt
    from studio.retention.replay import NUMBER_WORDS

    out: list[float | None] = []
    for r, a in zip(rows, answers):
        first = r["expect"].split()[0]
        forms = [first] + [w for w, n in NUMBER_WORDS.items() if n == first.lower()]  # "4": "four"
        m = next((x for f in forms for x in [re.search(rf"(?<!\w){re.escape(f)}(?!\w)", a, re.IGNORECASE)]
                  if x), None)
        enc = tok(a, add_special_tokens=False, return_offsets_mapping=True)
        at = next((i for i, (_, e) in enumerate(enc["offset_mapping"]) if m and e > m.start()), None)
        if at is None:
            print(f"  (no margin: \"{r['expect']}\" not found in the base answer \"{a[:60]}\")")
            out.append(None)
            continue
        prompt, _ = encode_prompt(tok, [{"role": "user", "content": r["question"]}], context_of(model), 32)
        ids = torch.tensor([prompt + enc["input_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, len(prompt) + at - 1].float(), -1)
        want = enc["input_ids"][at]
        other = logp.clone()
        other[want] = -float("inf")
        out.append(float(logp[want] - other.max()))
    return out


def updates(run_dir: Path) -> dict[str, object]:
    """Per adapted matrix (module path), the singular values of the run's update ΔW = scale·B·A
    at the strength it kept (LoRA or rsLoRA scale)."""
    import torch

    from studio.retention import delta

    tensors, cfg = delta.read(run_dir / "adapter")
    c = delta.scale_of(cfg)
    return {mod: torch.linalg.svdvals(c * tensors[kb].float() @ tensors[ka].float())
            for mod, (ka, kb) in delta.lora_pairs(tensors).items()}


def random_kept(model_dir: Path, spectra: dict[str, object], size: float, rows: list[dict],
                seed: int) -> list[bool]:
    """Which known rows the model still answers after each adapted matrix moves by a change with
    the run's own singular values × `size` along random directions (random orthonormal U, V)."""
    import torch

    from studio.models import registry as models
    from studio.retention import replay

    g = torch.Generator().manual_seed(seed)
    model = models.load_model(model_dir, "cpu", "fp32")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for where, sv in spectra.items():
            w = params[where + ".weight"]
            u = torch.linalg.qr(torch.randn(w.shape[0], len(sv), generator=g))[0]
            v = torch.linalg.qr(torch.randn(w.shape[1], len(sv), generator=g))[0]
            w += (u * (size * sv)) @ v.t()
    return replay.knows(replay.retention_answers(model, models.load_tokenizer(model_dir), rows), rows)


def real_losses(files: list[str], rows: list[dict], labels: set[str] | None
                ) -> tuple[list[int], int, dict[float, list[float]]]:
    """Over the runs of the results files kept at strength 1: how often each known row was lost,
    how many runs, and per strength of their reports' trade-off tables the answers each lost."""
    from studio.retention import replay

    all_rows = replay.retention_rows()
    index = [all_rows.index(r) for r in rows]
    lost, n, by_strength = [0] * len(rows), 0, {}
    for f in files:
        for r in json.loads(Path(f).read_text()):
            homes = list(Path(tempfile.gettempdir()).glob(f"bench-outcome-*/runs/{r['run']}"))
            if not homes or (labels and r["label"] not in labels):
                continue
            try:
                known = json.loads((homes[0] / "selection.json").read_text())["base"]["known"]
                rep = json.loads((homes[0] / "report.json").read_text())
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if known != index or (rep.get("strength") or 1.0) != 1.0:
                continue
            still = set(rep["retention"]["still"])
            n += 1
            for j in range(len(rows)):
                lost[j] += j not in still
            for t in rep.get("trade_off") or []:
                if t.get("kept") is not None:
                    by_strength.setdefault(t["strength"], []).append(len(rows) * (1 - t["kept"]))
    return lost, n, by_strength


def main() -> None:
    from studio.models import registry as models
    from studio.retention import strength

    import argparse

    ap = argparse.ArgumentParser(description="What a random change shaped like a run's update loses "
                                             "of the everyday answers (see the module docstring).")
    ap.add_argument("--run", action="append", type=Path, required=True,
                    help="a finished quickstart run kept at strength 1 (repeat for more)")
    ap.add_argument("--random", type=int, default=4, help="random changes per run and size")
    ap.add_argument("--sizes", default="1", help="sizes as multiples of the run's update, e.g. 0.5,1")
    ap.add_argument("--label", help="only the results' runs of these recipes, e.g. short106")
    ap.add_argument("results", nargs="*", help="bench_outcome.py results JSON files")
    a = ap.parse_args()
    runs, files, n_random = a.run, a.results, max(1, a.random)
    sizes = [float(x) for x in a.sizes.split(",")]
    labels = set(a.label.split(",")) if a.label else None
    for run in runs:
        if not (run / "adapter" / "adapter_config.json").is_file():
            sys.exit(f"bench_fragile.py: {run} is not a finished run (no adapter/adapter_config.json): "
                     "name a run folder, e.g. /tmp/bench-outcome-*/runs/RUN_ID")
    model_dir = Path(json.loads((runs[0] / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"])
    model = models.load_model(model_dir, "cpu", "fp32")
    tok = models.load_tokenizer(model_dir)
    rows, answers = known_rows(model, tok, model_dir)
    margin = margins(model, tok, rows, answers)
    rand: dict[float, list[list[bool]]] = {s: [] for s in sizes}
    params = dict(model.named_parameters())
    for k, run in enumerate(runs):
        if strength.current(run) != 1.0:
            print(f"note: {run.name} keeps its adapter at strength {strength.current(run):g}: its update, "
                  "so the random changes' size 1, is that much of what it trained")
        spectra = updates(run)
        rel = [float(sv.norm()) / float(params[w + ".weight"].norm()) for w, sv in spectra.items()]
        top = [float(sv[0] / sv.norm()) ** 2 for sv in spectra.values()]
        print(f"{run.name}: {len(spectra)} adapted matrices; update / weight (Frobenius) {sum(rel) / len(rel):.2%} "
              f"on average (largest {max(rel):.2%}); the top singular direction holds "
              f"{sum(top) / len(top):.0%} of an update's energy on average")
        for i, size in enumerate(sizes):
            rand[size] += [random_kept(model_dir, spectra, size, rows, 10_000 * k + 100 * i + j)
                           for j in range(n_random)]
    real, n_real, by_strength = real_losses(files, rows, labels)
    shown = 1.0 if 1.0 in rand else sizes[-1]
    one = rand[shown]
    print(f"\n{len(rows)} known questions; {n_random} random changes per size per run; {n_real} real runs "
          f"kept at strength 1")
    print(f"{'margin':>7} {'random':>7} {'real':>7}  question | base answer   (random: size {shown:g})")
    for j in sorted(range(len(rows)), key=lambda j: (margin[j] is not None, margin[j] or 0.0)):
        m = f"{margin[j]:7.2f}" if margin[j] is not None else f"{'?':>7}"
        print(f"{m} {sum(not x[j] for x in one):>3}/{len(one):<3} {real[j]:>3}/{n_real:<3}  "
              f"{rows[j]['question'][:48]} | {answers[j][:40]}")
    print("\nby margin (nats): known, lost per random change, lost per real run")
    edges = (-1e9,) + BANDS + (1e9,)
    for lo, hi in zip(edges, edges[1:]):
        js = [j for j in range(len(rows)) if margin[j] is not None and lo <= margin[j] < hi]
        if js:
            r = sum(sum(not x[j] for x in one) for j in js) / len(one)
            q = sum(real[j] for j in js) / max(1, n_real)
            name = f"< {hi:g}" if lo < -1e8 else f"≥ {lo:g}" if hi > 1e8 else f"{lo:g}–{hi:g}"
            print(f"  {name:>8}: {len(js):>2} known, {r:4.1f} lost by a random change, {q:4.1f} by a real run")
    print("\nanswers lost of the known, by the size of the change (1 = the run's own update):")
    for size in sizes:
        got = [sum(not x for x in k) for k in rand[size]]
        real_at = by_strength.get(size) or []
        print(f"  size {size:g}: random {sum(got) / len(got):.1f} (min {min(got)}, max {max(got)}, "
              f"{len(got)} changes)" + (f"; real runs at strength {size:g}: {sum(real_at) / len(real_at):.1f} "
                                         f"({len(real_at)} runs)" if real_at else ""))


if __name__ == "__main__":
    main()
