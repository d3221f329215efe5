"""Decoding speed report in the Spec-Bench layout.

Input: ``runs[method]`` is a list of per-question dicts ``{"id", "category", "new_tokens",
"seconds", "forwards" | "accept_lengths", "output_ids"}``. ``forwards`` counts the model calls that
produced tokens (prefill included, so plain greedy decoding has ``forwards == new_tokens``);
``accept_lengths`` (one entry per call, the bonus token included, as Spec-Bench logs it) may be
given instead, and then ``forwards = len(accept_lengths)``.

For a method ``m`` and a set ``Q`` of questions it shares with the baseline ``b``:

* tokens/s      = sum_Q new_tokens_m / sum_Q seconds_m
* speedup       = sum_Q seconds_b / sum_Q seconds_m           (ratio of total wall time)
* mean accepted = sum_Q new_tokens_m / sum_Q forwards_m       (tokens per forward; 1.0 for greedy)
* equal outputs = |{q in Q : output_ids_m(q) == output_ids_b(q)}| / |Q|

computed per category and over all questions. ``speedup_mean_speed`` (Spec-Bench's own ratio of
the mean per-question tokens/s) is kept in the JSON for comparison with published tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from leanlm.core.errors import UserError
from leanlm.core.records import write_json, write_text

OVERALL = "overall"


def _forwards(q: Mapping[str, Any]) -> int | None:
    if q.get("forwards") is not None:
        return int(q["forwards"])
    if q.get("accept_lengths") is not None:
        return len(q["accept_lengths"])
    return None


def _check(method: str, questions: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    by_id: dict[str, Mapping[str, Any]] = {}
    for i, q in enumerate(questions):
        for key in ("id", "new_tokens", "seconds"):
            if key not in q:
                raise UserError(f"speed report: {method} question {i} has no {key!r} field")
        if q["seconds"] <= 0:
            raise UserError(f"speed report: {method} question {q['id']!r} has seconds={q['seconds']} (<= 0)")
        qid = str(q["id"])
        if qid in by_id:
            raise UserError(f"speed report: {method} has question id {qid!r} twice")
        by_id[qid] = q
    return by_id


def _stats(ids: list[str], run: Mapping[str, Mapping[str, Any]], base: Mapping[str, Mapping[str, Any]]):
    tokens = sum(int(run[i]["new_tokens"]) for i in ids)
    seconds = sum(float(run[i]["seconds"]) for i in ids)
    base_seconds = sum(float(base[i]["seconds"]) for i in ids)
    fwd = [_forwards(run[i]) for i in ids]
    speeds = [int(run[i]["new_tokens"]) / float(run[i]["seconds"]) for i in ids]
    base_speeds = [int(base[i]["new_tokens"]) / float(base[i]["seconds"]) for i in ids]
    comparable = [
        i for i in ids if run[i].get("output_ids") is not None and base[i].get("output_ids") is not None
    ]
    equal = sum(list(run[i]["output_ids"]) == list(base[i]["output_ids"]) for i in comparable)
    mean_base_speed = sum(base_speeds) / len(ids)
    return {
        "n": len(ids),
        "new_tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "speedup": base_seconds / seconds,
        "speedup_mean_speed": (sum(speeds) / len(ids)) / mean_base_speed if mean_base_speed else None,
        "mean_accepted": tokens / sum(fwd) if None not in fwd and sum(fwd) else None,
        "equal_outputs": equal / len(comparable) if comparable else None,
    }


def speed_report(runs: Mapping[str, Sequence[Mapping[str, Any]]], baseline: str = "greedy") -> dict[str, Any]:
    """Per-method, per-category speed figures against ``baseline`` (see the module docstring).

    Returns ``{"baseline", "categories": [...], "methods": {method: {"overall": stats,
    "categories": {category: stats}}}}``; questions without a ``category`` count as ``"all"``.
    Only the questions a method shares with the baseline enter its figures (``n`` says how many).
    """
    if baseline not in runs:
        raise UserError(f"speed report: baseline {baseline!r} not among the runs ({', '.join(runs)})")
    tables = {m: _check(m, qs) for m, qs in runs.items()}
    base = tables[baseline]
    categories: list[str] = []
    for q in base.values():
        c = str(q.get("category", "all"))
        if c not in categories:
            categories.append(c)
    methods: dict[str, Any] = {}
    for method, run in tables.items():
        shared = [i for i in base if i in run]
        if not shared:
            raise UserError(f"speed report: {method} shares no question id with the baseline {baseline!r}")
        per_cat = {}
        for c in categories:
            ids = [i for i in shared if str(base[i].get("category", "all")) == c]
            if ids:
                per_cat[c] = _stats(ids, run, base)
        methods[method] = {"overall": _stats(shared, run, base), "categories": per_cat}
    return {"baseline": baseline, "categories": categories, "methods": methods}


def _fmt(x: float | None, spec: str, suffix: str = "") -> str:
    return "n/a" if x is None else f"{x:{spec}}{suffix}"


def render_markdown(report: Mapping[str, Any], title: str = "Decoding speed") -> str:
    """Two Markdown tables: speedup per category (Spec-Bench's main table) and overall details."""
    cats = list(report["categories"])
    methods = report["methods"]
    lines = [
        f"## {title}",
        "",
        f"Baseline: `{report['baseline']}`. Speedup = baseline total time / method total time.",
        "",
    ]
    lines.append("| method | " + " | ".join(cats) + " | overall | mean accepted | tokens/s |")
    lines.append("|---" * (len(cats) + 4) + "|")
    for m, r in methods.items():
        cells = [_fmt(r["categories"].get(c, {}).get("speedup"), ".2f", "x") for c in cats]
        o = r["overall"]
        lines.append(
            f"| {m} | " + " | ".join(cells) + f" | {_fmt(o['speedup'], '.2f', 'x')} | "
            f"{_fmt(o['mean_accepted'], '.2f')} | {_fmt(o['tokens_per_s'], '.1f')} |"
        )
    lines += [
        "",
        "| method | questions | new tokens | seconds | tokens/s | speedup | mean accepted | output = baseline |",
    ]
    lines.append("|---" * 8 + "|")
    for m, r in methods.items():
        o = r["overall"]
        eq = None if o["equal_outputs"] is None else 100 * o["equal_outputs"]
        lines.append(
            f"| {m} | {o['n']} | {o['new_tokens']} | {o['seconds']:.2f} | {o['tokens_per_s']:.1f} | "
            f"{o['speedup']:.2f}x | {_fmt(o['mean_accepted'], '.2f')} | {_fmt(eq, '.1f', '%')} |"
        )
    return "\n".join(lines) + "\n"


def write_report(
    path_stem: str | Path, report: Mapping[str, Any], title: str = "Decoding speed"
) -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` atomically; returns both paths."""
    stem = Path(path_stem)
    json_path, md_path = stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".md")
    write_json(json_path, report)
    write_text(md_path, render_markdown(report, title))
    return json_path, md_path
