"""D-LLM's training recipe (the original script's) as the shared ``TrainFlags``, torch-free.

The learning rate is not in the recipe: it comes from ``blr`` (lr = blr * effective batch / 256,
see ``leanlm.dllm.train.finetune``). Kept apart from ``train`` so that the console scripts can
take their defaults from it and answer ``--help`` without importing torch.
"""

from __future__ import annotations

from typing import Any

from leanlm.core.training import TrainFlags

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
