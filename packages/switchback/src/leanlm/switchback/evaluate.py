"""lm-eval accuracy of a (fine-tuned) model, offline, as the seed evaluated its SwitchBack runs.

The seed evaluated the saved weights through plain ``nn.Linear`` (hellaswag, boolq, swag,
winogrande, xwinograd_en); ``--switchback true`` instead runs inference through int8 SwitchBack
layers (weights pre-quantized with ``prepare_for_eval``), to see what int8 inference costs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from leanlm.core.errors import UserError
from leanlm.core.records import write_json, write_text

DEFAULT_TASKS = "hellaswag,boolq,winogrande"


def _task_list(tasks: str | list[str] | tuple[str, ...]) -> list[str]:
    names = (
        [t.strip() for t in tasks.split(",")] if isinstance(tasks, str) else [str(t).strip() for t in tasks]
    )
    names = [t for t in names if t]
    if not names:
        raise UserError("--tasks is empty")
    return names


def evaluate(
    model: str = "default",
    tasks: str = DEFAULT_TASKS,
    num_fewshot: int | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    switchback: bool = False,
    variant: str = "global",
    exclude: str | None = None,
    dtype: str | None = None,
    output_dir: str = "switchback-eval",
) -> dict[str, dict[str, Any]]:
    """Evaluate a model on offline lm-eval tasks; writes results.json and results.md in OUTPUT_DIR.

    Args:
        model: alias, local path (e.g. switchback-finetune's OUTPUT_DIR/model) or hub id.
        tasks: comma-separated: hellaswag, boolq, winogrande, piqa, arc_challenge, openbookqa, social_i_qa, mmlu, gsm8k.
        num_fewshot: few-shot examples (default: each task's own).
        limit: documents per task (default: all).
        batch_size: lm-eval batch size.
        switchback: run inference through int8 SwitchBack layers (pre-quantized weights).
        variant: SwitchBack variant for --switchback true.
        exclude: layers kept in float (default lm_head,k_proj,v_proj).
        dtype: bf16 or fp32 (default: fp32 on CPU).
        output_dir: where results.json and results.md go.
    """
    from leanlm.core.evaluation import run_lm_eval
    from leanlm.core.models import load_model, load_tokenizer

    names = _task_list(tasks)
    net = load_model(model, dtype=dtype)
    tokenizer = load_tokenizer(model)
    int8 = switchback
    if int8:
        from leanlm.switchback.layers import SwitchBackLinear
        from leanlm.switchback.surgery import swap_linear_layers

        swap_linear_layers(net, variant, exclude)
        net.eval()
        for module in net.modules():
            if isinstance(module, SwitchBackLinear):
                module.prepare_for_eval()
    results = run_lm_eval(net, tokenizer, names, num_fewshot=num_fewshot, limit=limit, batch_size=batch_size)
    out = Path(output_dir)
    write_json(out / "results.json", {"model": model, "switchback": int8, "variant": variant if int8 else None,
                                      "limit": limit, "num_fewshot": num_fewshot, "results": results})  # fmt: skip
    lines = ["| task | metric | value | n |", "|---|---|---|---|"]
    for task, metrics in results.items():
        for key, value in metrics.items():
            if key in {"acc", "acc_norm", "exact_match"} and isinstance(value, float):
                lines.append(f"| {task} | {key} | {value:.4f} | {metrics.get('n', '')} |")
    write_text(out / "results.md", "\n".join(lines) + "\n")
    return results
