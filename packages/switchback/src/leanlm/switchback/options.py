"""The flags of the SwitchBack console scripts, each stated once: ``FinetuneOptions`` (with the
fine-tuning recipe) and ``EvalOptions``.

The console script is ``config_command(FinetuneOptions, ...)`` and the library's ``finetune`` takes
the same typed config, so neither restates the other's parameters. The training flags among the
fields (``--learning_rate --epochs --batch_size ...``, core's ``TrainFlags`` names) override
``SWITCHBACK_RECIPE`` where set; ``None`` keeps the recipe's value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leanlm.core.config_cli import fields_for, flag
from leanlm.core.errors import UserError
from leanlm.core.training import TrainFlags
from leanlm.switchback.surgery import DEFAULT_EXCLUDE

# the seed's sft/script.sh, with the warmup made effective (constant_with_warmup, not constant)
SWITCHBACK_RECIPE = TrainFlags(
    batch_size=64,
    learning_rate=1e-5,
    lr_scheduler_type="constant_with_warmup",
    warmup_ratio=0.05,
    epochs=5,
    max_grad_norm=1.0,
    weight_decay=0.0,
    logging_steps=1,
    seed=0,
    gradient_checkpointing=False,
)
SWITCHBACK_ARGUMENTS: dict[str, Any] = {  # TrainingArguments fields that are not flags
    "adam_beta2": 0.999,
    "optim": "adamw_torch",
    "save_strategy": "no",
    "data_seed": 42,
    "dataloader_drop_last": False,
}


def _recipe(name: str) -> str:
    """Help text naming the recipe's value of training flag ``name`` (what an unset flag keeps)."""
    value = getattr(SWITCHBACK_RECIPE, name)
    return f"recipe: {str(value).lower() if isinstance(value, bool) else value}"


@dataclass(frozen=True)
class FinetuneOptions:
    """One fine-tuning experiment: NUM_RUNS runs of MODEL on DATASET, each from a fresh model."""

    model: str = flag("default", "alias, local path or hub id (default: the embedded SmolLM2-135M-Instruct).")
    dataset: str = flag(
        "instructions", "instructions (offline), oasst1/longform (hub), or a local JSON/JSONL file."
    )
    switchback: bool = flag(
        True, "swap linear layers for SwitchBack (true) or train the plain model (false)."
    )
    variant: str = flag(
        "global", "global (default), vectorwise, mem_efficient, or standard (16-bit reference)."
    )
    # a string default, not None: "none" must reach parse_exclude as "no exclusions", not "the defaults"
    exclude: str = flag(
        ",".join(DEFAULT_EXCLUDE), 'comma-separated layer names kept in float ("none" for none).'
    )
    num_runs: int = flag(1, "repeated runs (fresh model each time) for the timing statistics.")
    output_dir: str = flag("runs/switchback-finetune", "where the run log and the last run's model go.")
    log_file: str | None = flag(
        None, "the JSONL run log (default: OUTPUT_DIR/finetune_log.jsonl); logged run ids are skipped."
    )
    source_max_len: int = flag(16, "token budget of the prompt (seed: 16).")
    target_max_len: int = flag(512, "token budget of the target (seed: 512).")
    template: str | None = flag(
        None, "prompt template (default: the tokenizer's chat template, else instruction_response)."
    )
    limit: int | None = flag(None, "use only the first LIMIT records (after a seeded shuffle).")
    dtype: str | None = flag(None, "model weights dtype (bf16, fp32; default fp32 on CPU, bf16 on CUDA).")
    save_model: bool = flag(True, "save the last run's model (plain nn.Linear layers) to OUTPUT_DIR/model.")
    threads: int | None = flag(
        None, "torch CPU threads (default: torch's choice; 1 is steadier on a busy machine)."
    )
    learning_rate: float | None = flag(None, f"peak learning rate ({_recipe('learning_rate')}).")
    epochs: float | None = flag(None, f"passes over the data ({_recipe('epochs')}).")
    batch_size: int | None = flag(None, f"examples per step and process ({_recipe('batch_size')}).")
    grad_accum: int | None = flag(None, "gradient accumulation steps.")
    max_steps: int | None = flag(None, "stop after this many optimizer steps (overrides --epochs).")
    logging_steps: int | None = flag(None, f"log the loss every N steps ({_recipe('logging_steps')}).")
    bf16: bool | None = flag(None, "bf16 autocast (default: on CUDA if supported, off on CPU).")
    gradient_checkpointing: bool | None = flag(
        None, f"recompute activations in backward ({_recipe('gradient_checkpointing')})."
    )
    seed: int | None = flag(
        None, f"the seed of every run, so runs differ only in timing noise ({_recipe('seed')})."
    )
    report_to: str | None = flag(None, "tensorboard, wandb or none (default).")
    nproc: int | None = flag(
        None, "train each run on N processes (the console script relaunches under torchrun)."
    )

    def __post_init__(self) -> None:
        if self.num_runs < 1:
            raise UserError(f"--num-runs must be at least 1, got {self.num_runs}")
        if self.switchback:
            from leanlm.switchback.layers import variant_class

            variant_class(self.variant)  # unknown variant: fail before loading anything
        self.train_flags()  # a bad --report_to fails here, before any work

    def train_flags(self) -> TrainFlags:
        """``SWITCHBACK_RECIPE`` with the training flags that are set replaced."""
        return SWITCHBACK_RECIPE.override(**fields_for(self, TrainFlags))

    def log_path(self) -> Path:
        """The JSONL run log: ``log_file``, else OUTPUT_DIR/finetune_log.jsonl."""
        return Path(self.log_file) if self.log_file else Path(self.output_dir) / "finetune_log.jsonl"


DEFAULT_TASKS = "hellaswag,boolq,winogrande"


@dataclass(frozen=True)
class EvalOptions:
    """One evaluation: MODEL on TASKS, through plain or int8 SwitchBack layers."""

    model: str = flag("default", "alias, local path (e.g. switchback-finetune's OUTPUT_DIR/model) or hub id.")
    tasks: str = flag(
        DEFAULT_TASKS,
        "comma-separated: hellaswag, boolq, winogrande, piqa, arc_challenge, openbookqa, social_i_qa, mmlu, gsm8k.",
    )
    num_fewshot: int | None = flag(None, "few-shot examples (default: each task's own).")
    limit: int | None = flag(None, "documents per task (default: all).")
    batch_size: int = flag(8, "lm-eval batch size.")
    switchback: bool = flag(False, "run inference through int8 SwitchBack layers (pre-quantized weights).")
    variant: str = flag("global", "SwitchBack variant for --switchback true.")
    # a string default, not None: "none" must reach parse_exclude as "no exclusions", not "the defaults"
    exclude: str = flag(",".join(DEFAULT_EXCLUDE), 'layers kept in float ("none" for none).')
    dtype: str | None = flag(None, "bf16 or fp32 (default: fp32 on CPU).")
    output_dir: str = flag("switchback-eval", "where results.json and results.md go.")
