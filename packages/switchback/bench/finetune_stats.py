"""``switchback-finetune --num-runs N`` both ways on the embedded model, then ``switchback-stats``.

    uv run python packages/switchback/bench/finetune_stats.py --num-runs 3 --max-steps 10

Writes bench/finetune/{linear,switchback}/finetune_log.jsonl and bench/finetune/stats/*.
"""

from __future__ import annotations

from pathlib import Path

from leanlm.core.cli import run_cli
from leanlm.switchback.stats import compare_logs
from leanlm.switchback.train import finetune

HERE = Path(__file__).parent


def main(
    model: str = "default",
    num_runs: int = 3,
    max_steps: int = 10,
    batch_size: int = 8,
    limit: int = 256,
    target_max_len: int = 128,
    learning_rate: float = 1e-5,
    threads: int = 1,
    output_dir: str = str(HERE / "finetune"),
) -> str:
    """N fine-tunes with nn.Linear, N with SwitchBack, then Welch's t-test on the run times."""
    out = Path(output_dir)
    common = dict(model=model, dataset="instructions", num_runs=num_runs, max_steps=max_steps,
                  batch_size=batch_size, limit=limit, target_max_len=target_max_len,
                  learning_rate=learning_rate, save_model=False, threads=threads)  # fmt: skip
    # interleave the two conditions run by run so slow phases of the shared machine hit both alike
    for n in range(1, num_runs + 1):
        finetune(switchback=False, output_dir=str(out / "linear"), **{**common, "num_runs": n})
        finetune(switchback=True, output_dir=str(out / "switchback"), **{**common, "num_runs": n})
    return compare_logs(str(out / "linear" / "finetune_log.jsonl"), str(out / "switchback" / "finetune_log.jsonl"),
                        alpha=0.05, output_dir=str(out / "stats"))  # fmt: skip


if __name__ == "__main__":
    run_cli(main, "switchback-finetune-stats")
