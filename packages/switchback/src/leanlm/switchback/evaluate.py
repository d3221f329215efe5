"""lm-eval accuracy of a (fine-tuned) model, offline, as the seed evaluated its SwitchBack runs.

The seed evaluated the saved weights through plain ``nn.Linear`` (hellaswag, boolq, swag,
winogrande, xwinograd_en); ``--switchback true`` instead runs inference through int8 SwitchBack
layers (weights pre-quantized with ``prepare_for_eval``), to see what int8 inference costs.
``EvalOptions`` (``options.py``) holds switchback-eval's flags; ``evaluate`` takes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from leanlm.core.errors import UserError
from leanlm.core.records import write_json, write_text
from leanlm.switchback.options import EvalOptions

REPORTED = ("acc", "acc_norm", "exact_match")  # the metrics results.md and the summary show


def _task_list(tasks: str) -> list[str]:
    """``"boolq, piqa"`` -> ``["boolq", "piqa"]``; an empty list is a UserError."""
    names = [t.strip() for t in tasks.split(",") if t.strip()]
    if not names:
        raise UserError("--tasks is empty")
    return names


def _int8_inference(net: Any, variant: str, exclude: str) -> None:
    """Swap ``net``'s linears for SwitchBack layers whose int8 weights are quantized once, up front."""
    from leanlm.switchback.layers import SwitchBackLinear
    from leanlm.switchback.surgery import swap_linear_layers

    swap_linear_layers(net, variant, exclude)
    net.eval()
    for module in net.modules():
        if isinstance(module, SwitchBackLinear):
            module.prepare_for_eval()


def results_table(results: dict[str, dict[str, Any]]) -> str:
    """results.md: one row per (task, reported metric) with the task's document count."""
    lines = ["| task | metric | value | n |", "|---|---|---|---|"]
    for task, metrics in results.items():
        for key, value in metrics.items():
            if key in REPORTED and isinstance(value, float):
                lines.append(f"| {task} | {key} | {value:.4f} | {metrics.get('n', '')} |")
    return "\n".join(lines) + "\n"


def evaluate(config: EvalOptions) -> dict[str, dict[str, Any]]:
    """Evaluate a model on offline lm-eval tasks; writes results.json and results.md in OUTPUT_DIR."""
    from leanlm.core.evaluation import run_lm_eval
    from leanlm.core.models import load_model, load_tokenizer

    names = _task_list(config.tasks)
    net = load_model(config.model, dtype=config.dtype)
    tokenizer = load_tokenizer(config.model)
    int8 = config.switchback
    if int8:
        _int8_inference(net, config.variant, config.exclude)
    results = run_lm_eval(
        net,
        tokenizer,
        names,
        num_fewshot=config.num_fewshot,
        limit=config.limit,
        batch_size=config.batch_size,
    )
    out = Path(config.output_dir)
    record = {
        "model": config.model,
        "switchback": int8,
        "variant": config.variant if int8 else None,
        "limit": config.limit,
        "num_fewshot": config.num_fewshot,
        "results": results,
    }
    write_json(out / "results.json", record)
    write_text(out / "results.md", results_table(results))
    return results
