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
from leanlm.bitdistiller.options import BITDISTILLER_RECIPE, TrainOptions
from leanlm.bitdistiller.quant import QuantSpec
from leanlm.core.errors import UserError

log = logging.getLogger(__name__)

__all__ = ["BITDISTILLER_RECIPE", "TrainOptions", "build_student", "compute_gamma", "train"]


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


def _split_examples(config: TrainOptions, tokenizer: Any) -> tuple[list[dict], list[dict]]:
    """(train, eval) tokenized examples; the eval set is the first ``eval_fraction``, as in the original."""
    rows = read_teacher_file(config.data)
    if config.max_samples:
        rows = rows[: config.max_samples]
    examples = tokenize_teacher(rows, tokenizer, config.max_length, config.mask_prompt)
    n_eval = int(len(examples) * config.eval_fraction)
    if not examples[n_eval:]:
        raise UserError(
            f"{config.data}: no training examples left after the {config.eval_fraction:.0%} eval split"
        )
    return examples[n_eval:], examples[:n_eval]


def _teacher_and_loss(
    config: TrainOptions, train_set: list[dict], collator: Any, batch_size: int, seed: int
) -> tuple[nn.Module | None, KDLoss, float | None]:
    """(frozen teacher or None for ``ce``, the loss, its gamma): CAKLD's gamma measured when not given."""
    from leanlm.core.models import load_model

    name, gamma, teacher = config.loss.lower(), config.gamma, None
    if name != "ce":
        teacher = load_model(config.model, dtype=config.dtype)
        teacher.requires_grad_(False)
        teacher.config.use_cache = False
    if name == "cakld" and gamma is None:
        gamma = compute_gamma(teacher, train_set, collator, batch_size, config.gamma_batches, seed)
        log.info(
            "CAKLD gamma (teacher mean top-1 probability over %d batches) = %.4f", config.gamma_batches, gamma
        )
    return teacher, build_loss(name, gamma), gamma


def _student(config: TrainOptions, spec: QuantSpec, teacher: nn.Module | None) -> nn.Module:
    """The fake-quantized, clip-initialised copy in training mode, on the device the teacher joins."""
    from leanlm.core.models import load_model

    student = build_student(load_model(config.model, dtype=config.dtype), spec, config.clip)
    student.config.use_cache = False
    student.train()
    if teacher is not None:
        teacher.to(student.device)
    return student


def _summary(trainer: Any, result: Any, final: Path, kd_loss: str, gamma: float | None, **extra: Any) -> dict:
    """What a run reports (and writes as ``train_summary.json``): steps, first/last loss, the final folder."""
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "final": str(final),
        "gamma": gamma,
        "loss": kd_loss,
        "steps": trainer.state.global_step,
        "world_size": trainer.args.world_size,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "train_loss": getattr(result, "training_loss", None),
        **extra,
    }


def train(
    config: TrainOptions, spec: QuantSpec | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run KD-QAT; returns a summary (gamma, steps, losses, final folder).

    ``spec``: the quantization (default ``config.quant_spec()``: the flags, group size fitted);
    training flags: ``config.train_flags()`` (the paper's recipe where a flag is unset);
    ``overrides``: TrainingArguments fields that win over them (``{"max_steps": 4}``).
    """
    from leanlm.core.models import load_tokenizer
    from leanlm.core.records import read_json, write_json
    from leanlm.core.sft import PaddingCollator
    from leanlm.core.training import last_checkpoint, save_run_config, train_with_resume

    spec, flags, loss_name = spec or config.quant_spec(), config.train_flags(), config.loss.lower()
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    max_steps = overrides.get("max_steps", flags.max_steps)
    finished = _finished_run(config.output_dir, max_steps) if flags.resume else None
    if finished is not None:
        log.info(
            "%s already reached max_steps; nothing to train (delete the folder to start again)",
            config.output_dir,
        )
        return read_json(finished)
    tokenizer = load_tokenizer(config.model)
    train_set, eval_set = _split_examples(config, tokenizer)
    collator = PaddingCollator(tokenizer.pad_token_id, side="right")
    every = overrides.get("save_steps", flags.save_steps)  # evaluate with each checkpoint
    evaluation = {"eval_strategy": "steps", "eval_steps": every} if eval_set else {}
    args = flags.to_training_arguments(config.output_dir, overrides=overrides, **evaluation)
    seed = overrides.get("seed", flags.seed if flags.seed is not None else 42)
    teacher, kd_loss, gamma = _teacher_and_loss(
        config, train_set, collator, args.per_device_train_batch_size, seed
    )

    student = _student(config, spec, teacher)
    save_run_config(
        config.output_dir,
        {
            "model": config.model,
            "data": config.data,
            "spec": spec.to_dict(),
            "clip": config.clip or None,
            "loss": loss_name,
            "gamma": gamma,
            "max_length": config.max_length,
            "train_examples": len(train_set),
            "eval_examples": len(eval_set),
            "flags": flags.record(),
            "training_args": overrides,
        },
    )
    trainer = _trainer_class()(
        model=student,
        args=args,
        train_dataset=ListDataset(train_set),
        eval_dataset=ListDataset(eval_set) if eval_set else None,
        data_collator=collator,
        teacher=teacher,
        kd_loss=kd_loss,
    )
    resumed_from = last_checkpoint(config.output_dir) if flags.resume else None
    result = train_with_resume(trainer, flags.resume)
    final = Path(config.output_dir) / "final"
    # off for training only: generation from the saved model needs its KV cache
    student.config.use_cache = True
    trainer.save_model(str(final))  # every rank joins (sharded states gather); rank 0 writes
    summary = _summary(
        trainer, result, final, loss_name, gamma, resumed_from=resumed_from, max_steps=max_steps
    )
    if trainer.args.should_save:
        tokenizer.save_pretrained(str(final))
        write_json(Path(config.output_dir) / "train_summary.json", summary)
    return summary
