"""Console scripts (fire; ``--help`` on each): switchback-finetune, -bench, -stats, -eval.

finetune, bench and eval are ``config_command``s: their flags are the fields of ``FinetuneOptions``,
``BenchOptions`` and ``EvalOptions``, coerced to the fields' types before the library sees them.
"""

from __future__ import annotations

from typing import Any

from leanlm.core.config_cli import config_command
from leanlm.core.console import entry
from leanlm.switchback.benchmark.command import BenchOptions, run_benchmark
from leanlm.switchback.evaluate import REPORTED, evaluate
from leanlm.switchback.options import EvalOptions, FinetuneOptions
from leanlm.switchback.stats import compare_logs
from leanlm.switchback.train import finetune


def finetune_runs(config: FinetuneOptions) -> str:
    """Fine-tune MODEL on DATASET NUM_RUNS times, with SwitchBack int8 layers or plain nn.Linear.

    The seed's recipe: batch 64, lr 1e-5 constant_with_warmup (5%), 5 epochs, source/target max 16/512
    tokens; each run appends a line to OUTPUT_DIR/finetune_log.jsonl (resumable). --switchback false
    trains nn.Linear; --variant global|vectorwise|mem_efficient|standard; --exclude names kept in float
    (default lm_head,k_proj,v_proj; none). --bf16 autocast; --threads N torch CPU threads. --nproc N
    trains each run on N processes (torchrun, DDP; or run the command under torchrun yourself, several
    nodes too); --report_to tensorboard|wandb|none. Datasets: instructions (offline), oasst1, longform
    (hub), or a JSON/JSONL file.
    """
    from leanlm.core.distributed import maybe_launch

    maybe_launch(config.nproc)
    runs = finetune(config)
    # one line per run instead of fire dumping every loss curve
    return "\n".join(
        f"{r['id']}: {r['seconds']:.1f} s, {r['steps']} steps, train loss {r['train_loss']:.4f}" for r in runs
    )


def evaluate_summary(config: EvalOptions) -> str:
    """Evaluate a model on offline lm-eval tasks; writes results.json and results.md in OUTPUT_DIR."""
    results: dict[str, dict[str, Any]] = evaluate(config)
    return "\n".join(
        f"{task}: " + ", ".join(f"{k}={v:.4f}" for k, v in m.items() if k in REPORTED)
        for task, m in results.items()
    )


finetune_command = config_command(FinetuneOptions, finetune_runs)
bench_command = config_command(BenchOptions, run_benchmark)
evaluate_command = config_command(EvalOptions, evaluate_summary)

finetune_main = entry(finetune_command, "switchback-finetune")
bench_main = entry(bench_command, "switchback-bench")
stats_main = entry(compare_logs, "switchback-stats")
eval_main = entry(evaluate_command, "switchback-eval")
