"""The flags of the BiTA console scripts, each stated once as a dataclass: ``cli.py`` turns each into
its command with ``leanlm.core.config_cli.config_command`` (fire's values typed on the way in), and
the ``run_*`` functions (``commands.py``, ``train.run_train``) take them. bita-train's flags also
carry the paper's training recipe (``BITA_RECIPE``), which an unset training flag keeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from leanlm.bita.model import BiTAConfig
from leanlm.core.config_cli import fields_for, flag
from leanlm.core.training import TrainFlags

# the paper's recipe (LLaMA-2-7B-chat, 8 GPUs: global batch 8 x 2 x 8 = 128)
BITA_RECIPE = TrainFlags(
    learning_rate=3e-2,
    lr_scheduler_type="cosine",
    epochs=1.0,
    batch_size=8,
    grad_accum=2,
    weight_decay=0.0,
    max_grad_norm=1.0,
    logging_steps=10,
    save_steps=5000,
    save_total_limit=2,
    seed=0,
)
BITA_ARGUMENTS: dict[str, Any] = {"dataloader_drop_last": False}  # TrainingArguments fields, not flags
CPU_MAX_STEPS = 40  # a short job when no GPU is present and no step count was given

TREE_HELP = "tree shape(s): 1 | 1-1 | 3-2-1 | tri:5 | auto:N, + pld:L for a prompt-lookup branch"
# --tree fields are typed Any: fire reads ``--tree 1,1`` as the tuple (1, 1) and ``--tree 5`` as an
# int; the value stays as fire read it so that ``tree_text`` gives the tree parser back the text
# that was typed (a str field would turn (1,) into "1" and accept the ambiguous "1,")


@dataclass
class GenPromptsOptions:
    """bita-gen-prompts' flags."""

    data: str = flag("instructions", "a core dataset name or a JSON/JSONL file of instructions")
    output: str = flag("bita_prompts.jsonl", "the prompts file to write")
    model: str = flag("default", "the model the prompts are for (its template; its tokenizer for chat)")
    template: str | None = flag(None, "the prompt template (default: chosen from the model name)")
    style: str = flag("full", "full (the template's system prompt) | short (none) | both")
    limit: int | None = flag(None, "the first N instructions")
    seed: int | None = flag(None, "shuffle the instructions with this seed before --limit")


@dataclass
class GenOutputsOptions:
    """bita-gen-outputs' flags (the backend ones are ``BackendSpec`` fields of the same names)."""

    prompts: str = flag(help="a prompts file (bita-gen-prompts)")
    output: str = flag("bita_data.jsonl", "the answers file (resumable JSONL)")
    model: str = flag("default", "the model to load, or the served model's name")
    backend: str = flag("hf", "hf | tgi | openai | vllm | a registered backend")
    base_url: str | None = flag(None, "the server (tgi, openai)")
    api_key: str | None = flag(None, "the server's key (openai)")
    max_new_tokens: int = flag(512, "the longest answer, in tokens")
    batch_size: int = flag(8, "prompts per batch (in-process backends)")
    concurrency: int = flag(8, "requests in flight (servers)")
    limit: int | None = flag(None, "the first N prompts")
    dtype: str | None = flag(None, "model dtype (in-process backends)")
    max_failed_fraction: float = flag(0.0, "the share of requests that may fail without failing the run")


@dataclass
class EvalOptions:
    """bita-eval's flags."""

    data: str = flag(help="questions: Spec-Bench / MT-Bench, a bita-gen-prompts file, humaneval, a dataset")
    adapter: str | None = flag(None, "the adapter folder (default: an untrained adapter on --model)")
    model: str = flag("default", "the base model (default: the adapter's)")
    output_dir: str = flag("bita_eval", "where speed.json, speed.md and runs.json go")
    template: str | None = flag(None, "the prompt template (default: chosen from the model name)")
    max_new_tokens: int = flag(128, "tokens per answer")
    limit: int | None = flag(None, "the first N questions")
    per_category: int | None = flag(None, "the first N questions of each category")
    tree: Any = flag("tri:5", TREE_HELP + "; several separated by ';'")
    pld_tokens: int = flag(10, "prompt-lookup tokens of the pld baseline (0: skip it)")
    dtype: str | None = flag(None, "model dtype (default: chosen for the device)")
    warmup: int = flag(1, "untimed warm-up prompts")
    turns: int = flag(1, "turns of multi-turn questions (2: MT-Bench's second turn too)")
    calibrate: bool = flag(False, "save the adapter's acceptance statistics instead of timing")
    calibration_ranks: int = flag(10, "ranks per mask kept by --calibrate (1..64)")


@dataclass
class GenerateOptions:
    """bita-generate's flags."""

    prompts: str | None = flag(None, "a prompts file, as bita-eval's DATA")
    prompt: str | None = flag(None, "one prompt text (the answer is printed)")
    adapter: str | None = flag(None, "the adapter folder (default: an untrained adapter on --model)")
    model: str = flag("default", "the base model (default: the adapter's)")
    output: str = flag("bita_answers.jsonl", "the answers file (resumable JSONL)")
    template: str | None = flag(None, "the prompt template (default: chosen from the model name)")
    max_new_tokens: int = flag(256, "the longest answer, in tokens")
    tree: Any = flag("tri:5", TREE_HELP)
    limit: int | None = flag(None, "the first N prompts")
    dtype: str | None = flag(None, "model dtype (default: chosen for the device)")
    temperature: float = flag(0.0, "0: greedy; > 0 samples with the speculative acceptance rule")
    top_p: float = flag(1.0, "nucleus sampling mass")
    seed: int = flag(0, "sampling seed")


@dataclass
class TrainOptions:
    """bita-train's flags: the data, the adapter's shape, the packing and the training flags."""

    data: str = flag(help="generated JSONL: records with prompt + output (bita-gen-outputs)")
    model: str = flag("default", "the base model: an alias or a folder")
    output_dir: str = flag("runs/bita", "the adapter folder (checkpoint-N inside; a rerun resumes)")
    num_masks: int = flag(3, "M: mask tokens, the draft length")
    num_prefix: int = flag(16, "P: prefix tokens (per-layer keys and values)")
    prefix_dropout: float = flag(0.1, "dropout on the prefix")
    max_groups: int = flag(64, "mask groups per training example")
    cutoff: int = flag(2048, "longest packed example, in tokens")
    resample: int = flag(4, "copies of each pair, each with its own random windows")
    limit: int | None = flag(None, "train on the first N records")
    dtype: str | None = flag(None, "model dtype (default: chosen for the device)")
    learning_rate: float | None = flag(None, "default: the recipe's 3e-2")
    epochs: float | None = flag(None, "passes over the resampled data (default 1)")
    batch_size: int | None = flag(None, "examples per process and step (default 8)")
    grad_accum: int | None = flag(None, "gradient accumulation steps (default 2)")
    max_steps: int | None = flag(None, "optimizer steps (default: the epochs; 40 without a GPU)")
    save_steps: int | None = flag(None, "steps between checkpoints (default 5000)")
    logging_steps: int | None = flag(None, "steps between loss lines (default 10)")
    seed: int = flag(0, "adapter init, data windows and training")
    report_to: str | None = flag(None, "tensorboard | wandb | none")
    deepspeed: str | None = flag(None, "zero2 | zero3 | zero2_offload | zero3_offload | a JSON path (CUDA)")
    nproc: int | None = flag(None, "N > 1 relaunches under torchrun")
    resume: bool = flag(True, "continue from the newest complete checkpoint-N")

    def train_flags(self) -> TrainFlags:
        """The paper recipe with the training flags that were given (None keeps the recipe's)."""
        return BITA_RECIPE.override(**fields_for(self, TrainFlags))

    def adapter_config(self) -> BiTAConfig:
        """The adapter's hyperparameters, checked (a one-line UserError before any work)."""
        config = BiTAConfig(
            num_masks=self.num_masks,
            num_prefix=self.num_prefix,
            prefix_dropout=self.prefix_dropout,
            base_model=self.model,
        )
        config.validate()
        return config
