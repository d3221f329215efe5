"""``leanlm demo switchback``: a toy fine-tune with and without SwitchBack, then the Welch t-test.

Two short runs each way on the offline instruction data (a few steps, small batch, short targets)
so it finishes in a few minutes on a CPU; the timing statistics at this scale are a smoke test of
the pipeline, not a speed claim (see the package README for the benchmark).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from leanlm.core.demo import DemoResult
from leanlm.core.records import read_jsonl
from leanlm.switchback.options import FinetuneOptions
from leanlm.switchback.stats import compare_logs
from leanlm.switchback.train import finetune

DEMO = FinetuneOptions(
    dataset="instructions",
    limit=32,
    target_max_len=48,
    num_runs=2,
    save_model=False,
    batch_size=4,
    max_steps=4,
    learning_rate=1e-5,
)


def run_demo(out_dir: Path, model: str = "default") -> DemoResult:
    """Two toy fine-tunes of ``model`` each way, the t-test on their times, and the largest loss gap."""
    out_dir = Path(out_dir)
    logs = {}
    for switchback in (False, True):
        folder = out_dir / ("switchback" if switchback else "linear")
        finetune(replace(DEMO, model=model, switchback=switchback, output_dir=str(folder)))
        logs[switchback] = folder / "finetune_log.jsonl"
    table = compare_logs(str(logs[False]), str(logs[True]), alpha=0.05, output_dir=str(out_dir / "stats"))
    linear, sb = read_jsonl(logs[False]), read_jsonl(logs[True])
    loss_gap = max(abs(a["final_loss"] - b["final_loss"]) for a, b in zip(linear, sb))
    summary = "\n".join(
        [
            f"Toy fine-tune of `{model}`: {DEMO.num_runs} runs x {DEMO.max_steps} steps "
            f"(batch {DEMO.batch_size}) with nn.Linear and with SwitchBack (global int8; lm_head, "
            "k_proj, v_proj kept in float), then Welch's t-test on the run times.",
            "",
            table,
            "",
            f"Largest final-loss gap between matching runs: {loss_gap:.4f} nats. "
            "Plot: `stats/t_distribution.png`.",
        ]
    )
    metrics = {
        "linear_seconds": [r["seconds"] for r in linear],
        "switchback_seconds": [r["seconds"] for r in sb],
        "final_loss_gap": loss_gap,
    }
    return DemoResult("switchback", ok=loss_gap < 0.1, summary=summary, metrics=metrics)
