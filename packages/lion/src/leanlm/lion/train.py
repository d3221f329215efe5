"""Imitation: instruction-tune the student on the teacher's answers.

Each example is ``### Instruction:\\n{instruction[\\n\\n input]}\\n\\n### Response:\\n`` followed by the
teacher's answer and EOS; the loss counts answer tokens only (prompt labels are -100,
``leanlm.core.sft``). HF Trainer with the shared presets (``leanlm.core.training``): bf16 on CUDA,
fp32 on CPU, DeepSpeed ZeRO-2/3 (``--deepspeed zero3_offload``) or FSDP full sharding (``--fsdp``).
Paper defaults: 3 epochs, lr 2e-5 cosine, warmup 3%, no weight decay, sequence length 1024,
global batch 128 (2 per device x 8 accumulation x 8 GPUs).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from leanlm.core.errors import UserError
from leanlm.core.sft import PaddingCollator, tokenize_example
from leanlm.lion.pools import Record
from leanlm.lion.prompts import student_prompt

log = logging.getLogger(__name__)

LION_TRAIN_DEFAULTS: dict[str, Any] = {
    "num_train_epochs": 3,
    "learning_rate": 2e-5,
    "lr_scheduler_type": "cosine",
    "warmup_ratio": 0.03,
    "weight_decay": 0.0,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 8,
    "save_strategy": "steps",
    "save_steps": 600,
    "save_total_limit": 1,
    "logging_steps": 1,
}


def build_examples(
    tokenizer: Any, records: Sequence[Record], max_length: int = 1024
) -> list[dict[str, list[int]]]:
    """Tokenized, prompt-masked examples from ``{instruction, input, output}`` records."""
    out = []
    for i, r in enumerate(records):
        if not isinstance(r.get("output"), str) or not r.get("instruction"):
            raise UserError(f"training record {i + 1} (id {r.get('id')!r}) needs 'instruction' and 'output'")
        prompt = student_prompt(r["instruction"], r.get("input"))
        out.append(tokenize_example(tokenizer, prompt, r["output"], max_length=max_length))
    return out


class _ListDataset:
    def __init__(self, items: list[dict[str, list[int]]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.items[i]


def train_student(
    model: str | Any,
    records: Sequence[Record],
    output_dir: str | Path,
    *,
    tokenizer: Any = None,
    max_length: int = 1024,
    deepspeed: str | None = None,
    fsdp: bool = False,
    resume: bool = True,
    seed: int = 42,
    **overrides: Any,
) -> dict[str, Any]:
    """Fine-tune ``model`` (name/path or a loaded model) on ``records``; save model + tokenizer in ``output_dir``.

    ``overrides`` are TrainingArguments fields (``num_train_epochs=1``, ``learning_rate=...``).
    Returns the trainer's metrics. Resumes from the newest ``checkpoint-N`` in ``output_dir``.
    """
    from transformers import Trainer

    from leanlm.core.distributed import is_main_process, set_seed
    from leanlm.core.models import load_model, load_tokenizer
    from leanlm.core.training import save_run_config, train_with_resume, training_arguments

    if not records:
        raise UserError("no training records (the teacher answered nothing?)")
    set_seed(seed)
    if isinstance(model, str):
        tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model)
        # fp32 master weights; mixed precision (bf16 on CUDA) comes from the trainer, as in the original
        model = load_model(model, dtype="float32")
    elif tokenizer is None:
        raise UserError("train_student: pass tokenizer= with a model object")
    elif isinstance(tokenizer, str):
        tokenizer = load_tokenizer(tokenizer)
    model.train()
    output_dir = Path(output_dir)
    args = training_arguments(output_dir, LION_TRAIN_DEFAULTS, {"seed": seed, **overrides},
                              deepspeed=deepspeed, fsdp=fsdp, model=model)  # fmt: skip
    dataset = _ListDataset(build_examples(tokenizer, records, max_length))
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=PaddingCollator(tokenizer.pad_token_id, side="right"),
    )
    result = train_with_resume(trainer, resume)
    trainer.save_model(str(output_dir))
    if is_main_process():
        tokenizer.save_pretrained(str(output_dir))
        save_run_config(output_dir, {"method": "lion", "examples": len(dataset), "max_length": max_length,
                                     "args": args.to_dict()})  # fmt: skip
    model.eval()
    return dict(result.metrics)
