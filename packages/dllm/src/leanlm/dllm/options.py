"""The flags of dllm-finetune, dllm-chat and dllm-eval, each stated once as a dataclass field.

``leanlm.core.config_cli.config_command`` turns each class into its console command (the fields
are the flags, in this order, with these defaults) and hands the typed instance to the run
function in ``leanlm.dllm.cli``. The D-LLM and training defaults are read from ``DLLMConfig``
and ``DLLM_RECIPE``, so a default lives in one place. Torch-free: ``--help`` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from leanlm.core.config_cli import fields_for, flag
from leanlm.core.errors import UserError
from leanlm.core.training import TrainFlags
from leanlm.dllm.config import DLLMConfig

# D-LLM's training recipe (the original script's); the learning rate comes from blr instead
# (lr = blr * effective batch / 256, see leanlm.dllm.train.finetune)
DLLM_RECIPE = TrainFlags(
    epochs=10.0,
    batch_size=8,
    grad_accum=1,
    weight_decay=0.02,
    warmup_ratio=0.2,
    lr_scheduler_type="cosine",
    max_steps=-1,
    save_steps=200,
    logging_steps=10,
    seed=0,
)
DLLM_ARGUMENTS: dict[str, Any] = {  # TrainingArguments fields that are not flags
    "adam_beta1": 0.9,
    "adam_beta2": 0.95,
    "save_only_model": False,
    "dataloader_num_workers": 0,
}
ROUTER_SCHEDULES = ("cosine", "constant")

METRICS = ("auto", "accuracy", "perplexity")


@dataclass
class FinetuneOptions:
    """dllm-finetune: data and model, the D-LLM hyperparameters, then the shared training flags."""

    data: str = flag(help="folder, .json/.jsonl alpaca file, or offline task (piqa, boolq, gsm8k, ...)")
    model: str = flag("default", "base model: a name, a folder, or 'default' (the embedded one)")
    output: str = flag("runs/dllm", "run folder: checkpoints, and the trained model in OUTPUT/dllm")
    template: str | None = flag(None, "a data folder's layout: alpaca or piqa (default: from its name)")
    choice_format: str = flag("number", "choice tasks: number (answer the option's number) or text")
    target: float = flag(DLLMConfig.target, "executed fraction of layers each token is pulled toward")
    lambda_max: float = flag(DLLMConfig.lambda_max, "ratio-loss weight at the end of the ramp")
    lambda_ramp: float = flag(DLLMConfig.lambda_ramp, "fraction of training to reach lambda_max")
    ratio_scope: str = flag(DLLMConfig.ratio_scope, "ratio loss on every token's ratio or the batch mean")
    start_layer: int = flag(DLLMConfig.start_layer, "first block with a router (earlier ones always run)")
    reserve_initials: int = flag(DLLMConfig.reserve_initials, "first tokens that execute every block")
    router_hidden: int | None = flag(DLLMConfig.router_hidden, "router width (default hidden/8, <= 512)")
    lora_rank: int = flag(DLLMConfig.lora_rank, "LoRA rank on q/k/v (0: no LoRA)")
    blr: float = flag(9e-3, "base learning rate: lr = blr * batch_size * grad_accum / 256")
    router_lr: float | None = flag(None, "the routers' learning rate (default: the LoRA's)")
    router_schedule: str = flag("cosine", "router LR after the warm-up: cosine or constant")
    max_length: int = flag(512, "tokens per training example (prompt + response), longer ones cut")
    limit: int | None = flag(None, "at most this many training examples")
    test_size: int = flag(200, "examples an offline task holds out for testing")
    dense: bool = flag(False, "train LoRA only, no routers (the dense baseline)")
    dtype: str | None = flag(None, "base model dtype (default: the model's)")
    learning_rate: float | None = flag(DLLM_RECIPE.learning_rate, "LoRA learning rate (default: from blr)")
    epochs: float = flag(DLLM_RECIPE.epochs, "passes over the training data")
    batch_size: int = flag(DLLM_RECIPE.batch_size, "examples per step and process")
    grad_accum: int = flag(DLLM_RECIPE.grad_accum, "gradient accumulation steps")
    max_steps: int = flag(DLLM_RECIPE.max_steps, "optimizer steps (-1: from epochs)")
    warmup_ratio: float = flag(DLLM_RECIPE.warmup_ratio, "fraction of training spent warming up")
    weight_decay: float = flag(DLLM_RECIPE.weight_decay, "AdamW weight decay (none on biases and norms)")
    save_steps: int = flag(DLLM_RECIPE.save_steps, "checkpoint every this many steps")
    logging_steps: int = flag(DLLM_RECIPE.logging_steps, "log every this many steps")
    seed: int = flag(DLLM_RECIPE.seed, "seed of the data split, LoRA init and Gumbel sampling")
    report_to: str | None = flag(DLLM_RECIPE.report_to, "none, tensorboard, wandb (comma-separated)")
    deepspeed: str | None = flag(DLLM_RECIPE.deepspeed, "a ZeRO preset (zero2, zero3, ..._offload) or JSON")
    nproc: int | None = flag(None, "relaunch under torchrun with this many processes")
    resume: bool = flag(DLLM_RECIPE.resume, "continue from the newest complete checkpoint in OUTPUT")

    def train_flags(self) -> TrainFlags:
        """The recipe with the training flags given here (checked by TrainFlags)."""
        return DLLM_RECIPE.override(**fields_for(self, TrainFlags))

    def dllm_config(self) -> DLLMConfig:
        """The routers' and LoRA's configuration, validated; ``--dense`` builds no routers."""
        return DLLMConfig(
            **fields_for(self, DLLMConfig), dynamic=not self.dense, base_model=self.model
        ).validate()


@dataclass
class ChatOptions:
    """dllm-chat: a saved D-LLM (or the base model) answering instructions."""

    dllm: str | None = flag("runs/dllm/dllm", "the folder dllm-finetune saved ('': the plain base model)")
    instructs: list[str] | str | None = flag(
        None, "the instructions, a list: \"['...', '...']\" (default: three built-in)"
    )
    model: str | None = flag(None, "base model (default: the one the D-LLM was trained on)")
    max_new_tokens: int = flag(128, "tokens to generate per answer")
    temperature: float = flag(0.1, "sampling temperature (0: greedy)")
    top_p: float = flag(0.75, "nucleus sampling mass")
    seed: int = flag(0, "sampling seed")
    dtype: str | None = flag(None, "base model dtype (default: the model's)")


@dataclass
class EvalOptions:
    """dllm-eval: a task metric of a saved D-LLM (or the base model) with its compute ratios."""

    dllm: str | None = flag("runs/dllm/dllm", "the folder dllm-finetune saved ('': the plain base model)")
    data: str = flag("piqa", "offline task, 'text' (Shakespeare perplexity), or a folder / file")
    metric: str = flag("auto", "auto, accuracy or perplexity (auto: accuracy on choice tasks)")
    model: str | None = flag(None, "base model (default: the one the D-LLM was trained on)")
    split: str = flag("test", "split of DATA to evaluate: train or test")
    choice_format: str = flag("number", "choice tasks: number (ask for the option's number) or text")
    limit: int | None = flag(200, "at most this many examples")
    test_size: int = flag(200, "examples an offline task holds out for testing")
    batch_size: int = flag(8, "sequences per forward")
    seqlen: int = flag(256, "chunk length of --data text")
    max_chunks: int = flag(16, "chunks of --data text")
    output: str | None = flag(None, "also write the result to this JSON file")
    dtype: str | None = flag(None, "base model dtype (default: the model's)")

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise UserError(f"--metric must be auto, accuracy or perplexity, got {self.metric!r}")
