"""Text output of the CLI: tables for lists, `key  value` lines for dicts, and the readable
summaries of an estimate and a prepared dataset. Formats only; computes nothing.
"""
from __future__ import annotations

import json
from typing import Any


def render(value: Any) -> str:
    """Human-readable text for a result: tables for lists of dicts, `key: value` for dicts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        keys = [k for k in value[0] if not isinstance(value[0][k], (dict, list))][:7]
        widths = {k: min(40, max(len(k), *(len(_cell(v.get(k), k)) for v in value))) for k in keys}
        lines = ["  ".join(k.ljust(widths[k]) for k in keys)]
        lines += ["  ".join(_cell(v.get(k), k)[:40].ljust(widths[k]) for k in keys) for v in value]
        return "\n".join(lines)
    if isinstance(value, list):
        return "\n".join(map(str, value)) or "(none)"
    if isinstance(value, dict):
        width = max((len(k) for k in value), default=0)
        out = []
        for k, v in value.items():
            if isinstance(v, (dict, list)):
                v = json.dumps(v, default=str)
                v = v if len(v) < 400 else v[:400] + "…"
            out.append(f"{k.ljust(width)}  {_cell(v, k) if k.endswith('_at') else v}")
        return "\n".join(out)
    return str(value)


def _cell(v: Any, key: str = "") -> str:
    """A value as a table cell; a time (a `…_at` key holds seconds since the epoch) as local time."""
    if key.endswith("_at") and isinstance(v, (int, float)) and not isinstance(v, bool):
        import time

        return time.strftime("%Y-%m-%d %H:%M", time.localtime(v))
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def estimate_text(out: dict[str, Any]) -> str:
    lines = [f"{out['model']}: {out['total_gb']:.2f} GB at peak ({out['total_params']:,} params, "
             f"{out['trainable_params']:,} trainable)"]
    lines += [f"  {k:20s} {v:8.3f} GB  {out['why'][k]}" for k, v in out["breakdown_gb"].items()]
    if out.get("gpu"):
        verdict = "fits" if out["fits"] else "does NOT fit"
        lines.append(f"{out['gpu']['name']} ({out['gpu']['usable_gb']} GB usable): {verdict}. "
                     + " ".join(out["advice"]))
        lines.append(("with those changes, " if out.get("limits_with_plan") else "")
                     + f"largest micro-batch: {out['max_micro_batch']}, longest sequence: "
                     f"{format(out['max_seq_len'], ',') if out['max_seq_len'] else 'none'} tokens; "
                     f"preset: {out['preset']}")
    lines += [f"warning: {w}" for w in out["warnings"]]
    if out.get("measured"):
        m = out["measured"]
        lines.append(f"measured on {m['device']}: {m['measured_gb']} GB vs estimate "
                     f"{m['estimate_gb']} GB ({m['error_pct']:+}%)")
    return "\n".join(lines)


def length_set(summary: dict[str, Any]) -> str:
    """The length as given (--max-tokens, or --max-len), with the chat template's tokens apart."""
    n = summary.get("template_tokens", 0)
    return f"{summary['max_len'] - n} tokens (+{n} of chat template)" if n else f"{summary['max_len']} tokens"


def dataset_text(summary: dict[str, Any]) -> str:
    t = summary["tokens"]
    lines = [f"dataset {summary['name']} v{summary['version']}: {summary['records']} examples "
             f"(train {summary['splits']['train']}, validation {summary['splits']['validation']})",
             f"tokens p50 {t['p50']}, p95 {t['p95']}, max {t['max']}; {summary['truncated']} longer "
             f"than {length_set(summary)} (truncated), {summary['dropped_too_long']} dropped",
             f"duplicates removed: {summary['duplicates_removed']}, empty removed: "
             f"{summary['empty_removed']}", f"saved in {summary['path']}"]
    c = summary.get("check")
    if c:
        lines.append(f"check: {c['duplicates']} duplicates, {c['leaks']} held-out leaks, "
                     f"{c['suspects']} suspect rows (python -m studio data check "
                     f"{summary['name']}@v{summary['version']} lists them; with the base model's signals)")
    qa = summary.get("qa") or {}
    if qa.get("generated") or qa.get("fallback"):
        lines.append(f"question/answer pairs: {qa['generated']} written by the generator "
                     f"({qa['from_chunk']} from whole chunks, {qa['from_sentences']} one per sentence), "
                     f"{qa['fallback']} templated fallbacks; left out: " + (", ".join(
                         f"{n} {why}" for why, n in qa["dropped"].items()) or "none"))
    useful = qa.get("expected_useful")
    if useful:
        lines.append(f"expect about {useful['share']:.0%} of the pairs written by {useful['written_by']} "
                     f"to be sensible ({useful['measured']}). {useful['better']}")
    lines += [f"  {e['file']}{':' + str(e['line']) if e['line'] else ''}: {e['reason']}"
              for e in summary["errors"][:20]]
    if len(summary["errors"]) > 20:
        lines.append(f"  … and {len(summary['errors']) - 20} more problems (see --json)")
    return "\n".join(lines)


def check_text(out: dict[str, Any]) -> str:
    """A dataset check as lines: each finding with where it is, its neighbour and why."""
    def at(e: dict[str, Any]) -> str:
        return (e.get("example") or {}).get("where") or f"{e.get('file')} line {e.get('line')}"

    live = {k: [e for e in out[k] if not e.get("kept")] for k in ("duplicates", "leaks", "suspects")}
    lines = [f"check of {out.get('dataset')}: {out['rows']} rows — {len(live['duplicates'])} duplicates, "
             f"{len(live['leaks'])} held-out leaks, {len(live['suspects'])} suspects"
             + ("" if out.get("model_checked") else " (without the base model's signals)")]
    for e in live["duplicates"][:20]:
        lines.append(f"  duplicate ({e['kind']}{', removed when prepared' if e.get('removed') else ''}): "
                     f"{e.get('file')} line {e['line']} repeats line {e['of']}" if e.get("removed") else
                     f"  duplicate ({e['kind']}, {e['similarity']:.2f}): {at(e)} repeats "
                     f"{e['neighbour']['where']}")
    for e in live["leaks"][:20]:
        lines.append(f"  leak: held-out line {e['heldout_line']} \"{e['heldout_question'][:60]}\" is "
                     f"asked in training at {at(e)}"
                     + (" (the same key words, moved)" if e.get("how") == "same words" else ""))
    for e in live["suspects"][:30]:
        lines.append(f"  suspect ({e['score']}): {at(e)} — {e['why']}")
    kept = sum(1 for k in live for e in out[k] if e.get("kept"))  # listed above: only the others
    if kept:
        lines.append(f"  ({kept} rows you kept are not listed)")
    lines.append("drop them into a new version with --drop suspects,duplicates,leaks")
    return "\n".join(lines)
