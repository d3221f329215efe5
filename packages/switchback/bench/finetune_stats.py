"""``switchback-finetune --num-runs N`` both ways on the embedded model, then ``switchback-stats``;
optionally one longer run each way to compare the losses.

    uv run python packages/switchback/bench/finetune_stats.py --num-runs 5 --max-steps 3 --loss-steps 50

Writes bench/results/finetune/{linear,switchback}/finetune_log.jsonl, bench/results/finetune/stats/* and, with
``--loss-steps``, bench/results/finetune/loss/{linear,switchback}/finetune_log.jsonl and loss.{json,md}
(``--output-dir`` names another folder than bench/results/finetune).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from leanlm.core.console import run_cli
from leanlm.core.records import write_json, write_text
from leanlm.switchback.options import FinetuneOptions
from leanlm.switchback.stats import compare_logs
from leanlm.switchback.train import finetune

HERE = Path(__file__).parent


def loss_comparison(out: Path, common: FinetuneOptions, steps: int) -> str:
    """One run of ``steps`` steps each way (same seed and data); the loss curves side by side."""
    runs = {}
    for name, sb in (("linear", False), ("switchback", True)):
        config = replace(common, switchback=sb, output_dir=str(out / name), num_runs=1, max_steps=steps)
        runs[name] = finetune(config)[-1]
    lin, sb = runs["linear"]["losses"], runs["switchback"]["losses"]
    gaps = [s - ln for (_, ln), (_, s) in zip(lin, sb)]
    tail = gaps[-10:]  # one batch's loss is noisy: also the mean gap over the last 10 logged steps
    result = {
        "steps": steps,
        "linear_final": lin[-1][1],
        "switchback_final": sb[-1][1],
        "final_gap": gaps[-1],
        "mean_gap_last10": sum(tail) / len(tail),
        "max_abs_gap": max(abs(g) for g in gaps),
        "linear_seconds": runs["linear"]["seconds"],
        "switchback_seconds": runs["switchback"]["seconds"],
        "linear": lin,
        "switchback": sb,
    }
    write_json(out / "loss.json", result)
    md = (
        f"| steps | nn.Linear final loss | SwitchBack final loss | gap (nats) | mean gap, last 10 steps | "
        f"max gap | nn.Linear s | SwitchBack s |\n|---|---|---|---|---|---|---|---|\n| {steps} | {lin[-1][1]:.4f} | "
        f"{sb[-1][1]:.4f} | {gaps[-1]:+.4f} | {result['mean_gap_last10']:+.4f} | {result['max_abs_gap']:.4f} | "
        f"{result['linear_seconds']:.1f} | {result['switchback_seconds']:.1f} |\n"
    )
    write_text(out / "loss.md", md)
    return md


def main(
    model: str = "default",
    num_runs: int = 3,
    max_steps: int = 10,
    batch_size: int = 8,
    limit: int = 256,
    target_max_len: int = 128,
    learning_rate: float = 1e-5,
    dtype: str = "fp32",
    bf16: bool = True,
    threads: int = 1,
    loss_steps: int = 0,
    output_dir: str = str(HERE / "results" / "finetune"),
) -> str:
    """N fine-tunes with nn.Linear, N with SwitchBack, Welch's t-test on the run times; then, if
    ``loss_steps``, one run of that many steps each way for the loss comparison.

    Default precision: fp32 master weights with bf16 autocast (HF Trainer's --bf16), as the seed trained.
    """
    out = Path(output_dir)
    common = FinetuneOptions(
        model=model,
        dataset="instructions",
        limit=limit,
        target_max_len=target_max_len,
        dtype=dtype,
        save_model=False,
        threads=threads,
        max_steps=max_steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        bf16=bf16,
    )
    # interleave the two conditions run by run so slow phases of the shared machine hit both alike
    for n in range(1, num_runs + 1):
        finetune(replace(common, switchback=False, output_dir=str(out / "linear"), num_runs=n))
        finetune(replace(common, switchback=True, output_dir=str(out / "switchback"), num_runs=n))
    report = compare_logs(
        str(out / "linear" / "finetune_log.jsonl"),
        str(out / "switchback" / "finetune_log.jsonl"),
        alpha=0.05,
        output_dir=str(out / "stats"),
    )
    if loss_steps:
        report += "\n\n" + loss_comparison(out / "loss", common, int(loss_steps))
    return report


if __name__ == "__main__":
    run_cli(main, "switchback-finetune-stats")
