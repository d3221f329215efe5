"""Console scripts (fire; ``--help`` on each): switchback-finetune, -bench, -stats, -eval."""

from __future__ import annotations

import functools
import inspect
from typing import Any

from leanlm.core.console import entry, parse_bool
from leanlm.switchback.benchmark import run_benchmark
from leanlm.switchback.evaluate import evaluate
from leanlm.switchback.stats import compare_logs
from leanlm.switchback.train import finetune


def finetune_command(
    model: str = "default",
    dataset: str = "instructions",
    switchback: bool = True,
    variant: str = "global",
    exclude: str | None = None,
    num_runs: int = 1,
    output_dir: str = "runs/switchback-finetune",
    log_file: str | None = None,
    source_max_len: int = 16,
    target_max_len: int = 512,
    template: str | None = None,
    limit: int | None = None,
    dtype: str | None = None,
    save_model: bool = True,
    threads: int | None = None,
    learning_rate: float | None = None,
    epochs: float | None = None,
    batch_size: int | None = None,
    grad_accum: int | None = None,
    max_steps: int | None = None,
    logging_steps: int | None = None,
    bf16: bool | None = None,
    gradient_checkpointing: bool | None = None,
    seed: int | None = None,
    report_to: str | None = None,
    nproc: int | None = None,
) -> str:
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
    from leanlm.switchback.train import SWITCHBACK_RECIPE

    flags = SWITCHBACK_RECIPE.override(learning_rate=learning_rate, epochs=epochs, batch_size=batch_size,
                                       grad_accum=grad_accum, max_steps=max_steps, logging_steps=logging_steps,
                                       bf16=bf16, gradient_checkpointing=gradient_checkpointing, seed=seed,
                                       report_to=report_to)  # fmt: skip
    switchback, save_model = parse_bool(switchback, "--switchback"), parse_bool(save_model, "--save_model")
    maybe_launch(nproc)
    runs = finetune(model, dataset, switchback, variant, exclude, num_runs, output_dir, log_file, source_max_len,
                    target_max_len, template, limit, dtype, save_model, threads, flags)  # fmt: skip
    # one line per run instead of fire dumping every loss curve
    return "\n".join(
        f"{r['id']}: {r['seconds']:.1f} s, {r['steps']} steps, train loss {r['train_loss']:.4f}" for r in runs
    )


@functools.wraps(evaluate)
def evaluate_command(*args: Any, **kwargs: Any) -> str:
    # fire passes named flags positionally, and leaves ``--switchback true`` a string: the library takes a bool
    bound = inspect.signature(evaluate).bind(*args, **kwargs)
    if "switchback" in bound.arguments:
        bound.arguments["switchback"] = parse_bool(bound.arguments["switchback"], "--switchback")
    results = evaluate(*bound.args, **bound.kwargs)
    return "\n".join(
        f"{task}: "
        + ", ".join(f"{k}={v:.4f}" for k, v in m.items() if k in {"acc", "acc_norm", "exact_match"})
        for task, m in results.items()
    )


finetune_main = entry(finetune_command, "switchback-finetune")
bench_main = entry(run_benchmark, "switchback-bench")
stats_main = entry(compare_logs, "switchback-stats")
eval_main = entry(evaluate_command, "switchback-eval")
