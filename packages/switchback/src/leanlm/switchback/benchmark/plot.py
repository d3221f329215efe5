"""layers.png: each layer mode's speed-up over bf16 ``nn.Linear`` against the layer width (matplotlib)."""

from __future__ import annotations

from typing import Any

LINE_STYLES = ("-", "--", ":", "-.")


def speedups(rows: list[dict[str, Any]], mode: str, tokens: int) -> list[tuple[int, float]]:
    """(width, bf16 nn.Linear ms / ``mode`` ms) at ``tokens``, by width; rows without both times are left out."""
    base = {(r["width"], r["tokens"]): r.get("ms") for r in rows if r["mode"] == "linear-bf16"}
    pts = [
        (r["width"], base[(r["width"], tokens)] / r["ms"])
        for r in rows
        if r["mode"] == mode and r["tokens"] == tokens and r.get("ms") and base.get((r["width"], tokens))
    ]
    return sorted(pts)


def plot_layers(rows: list[dict[str, Any]], path: Any) -> None:
    """PNG: speed-up over bf16 nn.Linear vs width, one line per (mode, tokens)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    token_counts = sorted({r["tokens"] for r in rows})
    modes = [m for m in dict.fromkeys(r["mode"] for r in rows) if m != "linear-bf16"]
    for i, mode in enumerate(modes):  # one colour per mode, one line style per token count
        for j, n in enumerate(token_counts):
            pts = speedups(rows, mode, n)
            if pts:
                style = {"color": f"C{i % 10}", "ls": LINE_STYLES[j % len(LINE_STYLES)]}
                ax.plot(*zip(*pts), marker="o", label=f"{mode}, {n} tokens", **style)
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("layer width")
    ax.set_ylabel("speed-up over bf16 nn.Linear (fwd+bwd)")
    ax.legend(fontsize=6, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
