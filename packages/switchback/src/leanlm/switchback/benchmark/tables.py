"""Markdown tables of the benchmark rows; ratios are baseline time / mode time (> 1 is faster)."""

from __future__ import annotations

from typing import Any

STEP_HEAD = (
    "model",
    "layers",
    "batch x seq",
    "mode",
    "step ms",
    "tokens/s",
    "vs bf16",
    "vs fp32",
    "loss",
    "note",
)


def ratio(base: float | None, value: float | None) -> str:
    """``base / value`` as ``1.23x``; ``n/a`` when either is missing."""
    return f"{base / value:.2f}x" if base and value else "n/a"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def layer_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one row per (width, tokens), one column per mode (ms), speed-ups vs bf16 and fp32 nn.Linear."""
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    keys = list(dict.fromkeys((r["width"], r["out"], r["tokens"]) for r in rows))
    fast = [m for m in modes if not m.startswith("linear")]
    head = ["width", "out", "tokens", *[f"{m} ms" for m in modes]]
    head += [f"{m} vs bf16" for m in fast] + [f"{m} vs fp32" for m in fast if m.startswith("switchback")]
    lines = [_row(head), "|" + "---|" * len(head)]
    for w, o, n in keys:
        cell = {r["mode"]: r.get("ms") for r in rows if (r["width"], r["out"], r["tokens"]) == (w, o, n)}
        vals = [f"{cell[m]:.1f}" if cell.get(m) else "n/a" for m in modes]
        vals += [ratio(cell.get("linear-bf16"), cell.get(m)) for m in fast]
        vals += [ratio(cell.get("linear-fp32"), cell.get(m)) for m in fast if m.startswith("switchback")]
        lines.append(_row([str(w), str(o), str(n), *vals]))
    return "\n".join(lines)


def step_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one row per (model, mode): step time, throughput, speed-ups vs the model's bf16 and fp32 runs."""
    lines = [_row(list(STEP_HEAD)), "|" + "---|" * len(STEP_HEAD)]
    by = {(r["model"], r["mode"]): r for r in rows}
    for r in rows:
        bf16 = by.get((r["model"], "bf16"), {}).get("ms")
        fp32 = by.get((r["model"], "fp32"), {}).get("ms")
        ms = r.get("ms")
        ms_s = f"{ms:.0f}" if ms else "n/a"
        tps = f"{r['tokens_per_s']:.0f}" if ms else "n/a"
        loss = f"{r['loss']:.4f}" if "loss" in r else ""
        lines.append(
            f"| {r['model']} | {r.get('layers') or 'all'} | {r['batch']}x{r['seq']} | {r['mode']} | {ms_s} | "
            f"{tps} | {ratio(bf16, ms)} | {ratio(fp32, ms)} | {loss} | {r.get('error', '')} |"
        )
    return "\n".join(lines)


def results_markdown(
    meta: dict[str, Any], layer_rows: list[dict[str, Any]], step_rows: list[dict[str, Any]]
) -> str:
    """results.md: the run's metadata, the layer table and (if any) the training-step table."""
    md = [
        "# SwitchBack benchmark",
        "",
        f"torch {meta['torch']}, {meta['threads']} threads, torchao: {meta['torchao']}",
        f"device: {meta['device']}",
        "",
        "## One linear layer, forward + backward (median ms)",
        "",
        layer_table(layer_rows),
    ]
    if step_rows:
        md += ["", "## Training step (forward, loss, backward, AdamW; median ms)", "", step_table(step_rows)]
    return "\n".join(md) + "\n"
