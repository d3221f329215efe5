"""KD-based QAT: a frozen full-precision teacher distils into its fake-quantized copy (HF Trainer).

Student = the model with every linear but ``lm_head`` swapped for ``QuantLinear``, its latent
weights clamped by the clip cache (an initialisation only: QAT may move them back out). Teacher =
a second, frozen copy of the full-precision model. Loss: ``losses`` (CAKLD by default, gamma from
the teacher's confidence on the first training batches). Checkpoints are ordinary HF folders of
latent weights with a ``quantization_config`` (``checkpoint``), resumed automatically.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import torch
from torch import nn

from leanlm.bitdistiller.checkpoint import attach_quantization_config
from leanlm.bitdistiller.clip import apply_clip
from leanlm.bitdistiller.data import read_teacher_file, tokenize_teacher
from leanlm.bitdistiller.losses import KDLoss, build_loss, teacher_confidence
from leanlm.bitdistiller.modules import quantize_model
from leanlm.bitdistiller.quant import QuantSpec
from leanlm.core.errors import UserError
from leanlm.core.training import TrainFlags

log = logging.getLogger(__name__)

# the paper's recipe (train.sh): lr 8e-6 constant, seq 1024, global batch 8 GPUs x 16 = 128, 4 epochs (LLaMA-2)
BITDISTILLER_RECIPE = TrainFlags(
    learning_rate=8e-6,
    lr_scheduler_type="constant",
    weight_decay=0.0,
    batch_size=16,
    grad_accum=8,
    epochs=4,
    logging_steps=1,
    save_steps=50,
    save_total_limit=3,
    seed=42,
)


def _trainer_class() -> type:
    from transformers import Trainer

    class KDTrainer(Trainer):
        """Trainer whose loss compares the student's logits with a frozen teacher's."""

        def __init__(self, *args: Any, teacher: nn.Module | None, kd_loss: KDLoss, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.teacher = teacher
            self.kd_loss = kd_loss

        def compute_loss(
            self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False, **_: Any
        ):
            labels = inputs["labels"]
            out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            teacher_logits = None
            if self.kd_loss.needs_teacher:
                with torch.no_grad():
                    teacher_logits = self.teacher(
                        input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
                    ).logits
            loss = self.kd_loss(out.logits, teacher_logits, labels)
            return (loss, out) if return_outputs else loss

    return KDTrainer


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict[str, Any]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]


def build_student(model: nn.Module, spec: QuantSpec, clip: str | Path | dict | None) -> nn.Module:
    quantize_model(model, spec)
    if clip is not None:
        n = apply_clip(model, clip, spec)
        log.info("applied the clip cache to %d layers", n)
    attach_quantization_config(model, spec)
    return model


def compute_gamma(
    teacher: nn.Module, rows: list[dict[str, Any]], collator: Any, batch_size: int, n_batches: int, seed: int
) -> float:
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    batches = (
        collator([rows[i] for i in order[b : b + batch_size]]) for b in range(0, len(order), batch_size)
    )
    return teacher_confidence(teacher, batches, n_batches)


def _finished_run(output_dir: str | Path, max_steps: int | None) -> Path | None:
    """The summary of a run that already reached ``max_steps`` (HF Trainer would add one more step)."""
    from leanlm.core.records import read_json

    summary = Path(output_dir) / "train_summary.json"
    if not max_steps or max_steps <= 0 or not summary.exists():
        return None
    done = read_json(summary)
    return summary if done.get("steps", 0) >= max_steps and done.get("max_steps") == max_steps else None


def train(
    model_name: str,
    data: str | Path,
    output_dir: str | Path,
    spec: QuantSpec,
    clip: str | Path | None = None,
    loss: str = "cakld",
    gamma: float | None = None,
    gamma_batches: int = 10,
    max_length: int = 1024,
    eval_fraction: float = 0.0,
    mask_prompt: bool = False,
    max_samples: int | None = None,
    dtype: str | None = None,
    flags: TrainFlags = BITDISTILLER_RECIPE,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run KD-QAT; returns a summary (gamma, steps, losses, final folder).

    ``flags``: the training flags (default the paper recipe); ``overrides``: TrainingArguments
    fields that win over them (``{"max_steps": 4}``).
    """
    from leanlm.core.models import load_model, load_tokenizer
    from leanlm.core.records import read_json, write_json
    from leanlm.core.sft import PaddingCollator
    from leanlm.core.training import last_checkpoint, save_run_config, train_with_resume

    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    max_steps = overrides.get("max_steps", flags.max_steps)
    resume = flags.resume
    finished = _finished_run(output_dir, max_steps) if resume else None
    if finished is not None:
        log.info(
            "%s already reached max_steps; nothing to train (delete the folder to start again)", output_dir
        )
        return read_json(finished)
    rows = read_teacher_file(data)
    if max_samples:
        rows = rows[:max_samples]
    seed = int(overrides.get("seed", flags.seed if flags.seed is not None else 42))
    tokenizer = load_tokenizer(model_name)
    examples = tokenize_teacher(rows, tokenizer, max_length, mask_prompt)
    n_eval = int(len(examples) * eval_fraction)
    eval_set, train_set = examples[:n_eval], examples[n_eval:]  # the original takes the first 20% as eval
    if not train_set:
        raise UserError(f"{data}: no training examples left after the {eval_fraction:.0%} eval split")
    collator = PaddingCollator(tokenizer.pad_token_id, side="right")
    evaluation = {}
    if n_eval:
        every = overrides.get("save_steps", flags.save_steps)
        evaluation = {"eval_strategy": "steps", "eval_steps": every}
    args = flags.to_training_arguments(output_dir, overrides=overrides, **evaluation)

    kd_loss_name = loss.lower()
    teacher = None
    if kd_loss_name != "ce":
        teacher = load_model(model_name, dtype=dtype)
        teacher.requires_grad_(False)
        teacher.config.use_cache = False
    if kd_loss_name == "cakld" and gamma is None:
        gamma = compute_gamma(
            teacher, train_set, collator, args.per_device_train_batch_size, gamma_batches, seed
        )
        log.info("CAKLD gamma (teacher mean top-1 probability over %d batches) = %.4f", gamma_batches, gamma)
    kd_loss = build_loss(kd_loss_name, gamma)

    student = build_student(load_model(model_name, dtype=dtype), spec, clip)
    student.config.use_cache = False
    student.train()
    if teacher is not None:
        teacher.to(student.device)
    save_run_config(
        output_dir,
        {"model": model_name, "data": str(data), "spec": spec.to_dict(), "clip": str(clip) if clip else None,
         "loss": kd_loss_name, "gamma": gamma, "max_length": max_length, "train_examples": len(train_set),
         "eval_examples": len(eval_set), "flags": flags.record(), "training_args": overrides},
    )  # fmt: skip
    trainer = _trainer_class()(
        model=student,
        args=args,
        train_dataset=ListDataset(train_set),
        eval_dataset=ListDataset(eval_set) if eval_set else None,
        data_collator=collator,
        teacher=teacher,
        kd_loss=kd_loss,
    )
    resumed_from = last_checkpoint(output_dir) if resume else None
    result = train_with_resume(trainer, resume)
    final = Path(output_dir) / "final"
    student.config.use_cache = (
        True  # off for training only: generation from the saved model needs its KV cache
    )
    trainer.save_model(str(final))  # every rank joins (sharded states gather); rank 0 writes
    main = trainer.args.should_save
    if main:
        tokenizer.save_pretrained(str(final))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    summary = {
        "final": str(final),
        "gamma": gamma,
        "loss": kd_loss_name,
        "steps": trainer.state.global_step,
        "world_size": args.world_size,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "train_loss": getattr(result, "training_loss", None),
        "resumed_from": resumed_from,
        "max_steps": max_steps,
    }
    if main:
        write_json(Path(output_dir) / "train_summary.json", summary)
    return summary
