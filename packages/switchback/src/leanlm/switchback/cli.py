"""Console scripts (fire; ``--help`` on each): switchback-finetune, -bench, -stats, -eval."""

from __future__ import annotations

import functools
from typing import Any

from leanlm.core.cli import entry
from leanlm.switchback.benchmark import run_benchmark
from leanlm.switchback.evaluate import evaluate
from leanlm.switchback.stats import compare_logs
from leanlm.switchback.train import finetune


@functools.wraps(finetune)
def finetune_command(*args: Any, **kwargs: Any) -> str:
    # print a one-line summary per run instead of fire dumping every loss curve
    runs = finetune(*args, **kwargs)
    return "\n".join(
        f"{r['id']}: {r['seconds']:.1f} s, {r['steps']} steps, train loss {r['train_loss']:.4f}" for r in runs
    )


@functools.wraps(evaluate)
def evaluate_command(*args: Any, **kwargs: Any) -> str:
    results = evaluate(*args, **kwargs)
    return "\n".join(
        f"{task}: "
        + ", ".join(f"{k}={v:.4f}" for k, v in m.items() if k in {"acc", "acc_norm", "exact_match"})
        for task, m in results.items()
    )


finetune_main = entry(finetune_command, "switchback-finetune")
bench_main = entry(run_benchmark, "switchback-bench")
stats_main = entry(compare_logs, "switchback-stats")
eval_main = entry(evaluate_command, "switchback-eval")
