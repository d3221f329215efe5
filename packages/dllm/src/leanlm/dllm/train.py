"""Fine-tuning with the HF Trainer: only routers and LoRA train; loss = CE + lambda(t) * ratio loss.

Defaults follow the original script (``leanlm.dllm.options.DLLM_RECIPE``): lr = blr * effective_batch / 256 with
blr 9e-3, AdamW(0.9, 0.95), weight decay 0.02 (none on biases and norms), warm-up then cosine decay,
lambda ramped by a sine over training. ``router_lr`` sets the routers' own learning rate, and
``router_schedule="constant"`` keeps it constant after the warm-up (LoRA still decays on the cosine)
so that the routers can still follow lambda, which peaks at the end of training.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer

from leanlm.core.errors import UserError
from leanlm.core.training import TrainFlags, save_run_config, train_with_resume
from leanlm.dllm.loss import lambda_schedule
from leanlm.dllm.model import DLLM
from leanlm.dllm.options import DLLM_ARGUMENTS, DLLM_RECIPE, ROUTER_SCHEDULES

log = logging.getLogger(__name__)

TRAINABLE_FILE = "dllm_trainable.pt"


def check_router_schedule(router_schedule: str) -> str:
    if router_schedule not in ROUTER_SCHEDULES:
        raise UserError(f"router_schedule must be one of {ROUTER_SCHEDULES}, got {router_schedule!r}")
    return router_schedule


def lr_lambdas(
    groups: list[dict[str, Any]], warmup_steps: int, total_steps: int, router_schedule: str
) -> list[Any]:
    """Per param group LR multipliers: linear warm-up, then half-cosine to 0 (HF ``cosine``); router
    groups (``group["router"]``) stay at 1 after the warm-up when ``router_schedule == "constant"``."""
    check_router_schedule(router_schedule)

    def cosine(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

    def constant(step: int) -> float:
        return min(1.0, step / max(1, warmup_steps))

    return [constant if g.get("router") and router_schedule == "constant" else cosine for g in groups]


def param_groups(dllm: DLLM, lr: float, router_lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """Four groups: {routers, LoRA} x {decayed matrices, undecayed biases/norm weights}."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in dllm.named_parameters():
        if not p.requires_grad:
            continue
        key = (name.startswith("routers."), p.dim() >= 2)
        groups.setdefault(key, []).append(p)
    return [
        {
            "params": ps,
            "lr": router_lr if is_router else lr,
            "weight_decay": weight_decay if decay else 0.0,
            "router": is_router,
        }
        for (is_router, decay), ps in groups.items()
    ]


class DLLMTrainer(Trainer):
    """Trainer that feeds lambda(progress) to the model, logs the loss parts, and checkpoints only
    what D-LLM trains (routers + LoRA) instead of the frozen base weights."""

    router_schedule = "cosine"

    def create_scheduler(self, num_training_steps: int, optimizer: Any = None) -> Any:
        if self.lr_scheduler is None and self.router_schedule != "cosine":
            optimizer = optimizer or self.optimizer
            warmup = self.args.get_warmup_steps(num_training_steps)
            lambdas = lr_lambdas(optimizer.param_groups, warmup, num_training_steps, self.router_schedule)
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
            self._created_lr_scheduler = True
        return super().create_scheduler(num_training_steps, optimizer)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001
        # ``model`` may be wrapped (DDP, DeepSpeed): read D-LLM's own attributes from the unwrapped one
        dllm = self.accelerator.unwrap_model(model)
        progress = self.state.global_step / max(self.state.max_steps, 1)
        lam = lambda_schedule(progress, dllm.config.lambda_max, dllm.config.lambda_ramp)
        out = model(**inputs, lambda_now=lam)
        self._parts = {
            "ce": float(out.ce_loss.detach()),
            "ratio_loss": float(out.ratio_loss.detach()),
            "lambda": lam,
            "exec_ratio": out.exec_ratio,
        }
        if dllm.routers:
            self._parts["router_lr"] = max(g["lr"] for g in self.optimizer.param_groups if g.get("router"))
        return (out.loss, out) if return_outputs else out.loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs and getattr(self, "_parts", None):
            logs = logs | {k: round(v, 4) for k, v in self._parts.items()}
        super().log(logs, *args, **kwargs)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        folder = Path(output_dir or self.args.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        dllm = self.accelerator.unwrap_model(self.model)
        torch.save({k: v.detach().cpu() for k, v in dllm.trainable_state().items()}, folder / TRAINABLE_FILE)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        model = self.accelerator.unwrap_model(model or self.model)
        state = torch.load(Path(resume_from_checkpoint) / TRAINABLE_FILE, map_location="cpu")
        with torch.no_grad():
            for key, target in model.trainable_state().items():
                target.copy_(state[key])


def finetune(
    dllm: DLLM,
    tokenizer: Any,
    features: list[dict[str, list[int]]],
    output_dir: str | Path,
    flags: TrainFlags = DLLM_RECIPE,
    *,
    blr: float = 9e-3,
    router_lr: float | None = None,
    router_schedule: str = "cosine",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train routers + LoRA on tokenized ``features``; returns a summary (the caller saves the model).

    ``flags.learning_rate`` None: ``blr * batch_size * grad_accum / 256``; ``router_lr`` None: the same.
    ``extra``: TrainingArguments fields that win over the flags.
    """
    from leanlm.core.sft import PaddingCollator

    batch_size, grad_accum = flags.batch_size or 8, flags.grad_accum or 1
    lr = flags.learning_rate if flags.learning_rate is not None else blr * batch_size * grad_accum / 256
    router_lr = router_lr if router_lr is not None else lr
    weight_decay = flags.weight_decay if flags.weight_decay is not None else 0.0
    check_router_schedule(router_schedule)  # before any work
    flags = flags.override(learning_rate=lr)
    args = flags.to_training_arguments(output_dir, overrides=extra, **DLLM_ARGUMENTS)
    optimizer = torch.optim.AdamW(param_groups(dllm, lr, router_lr, weight_decay), betas=(0.9, 0.95))
    dllm.train()
    trainer = DLLMTrainer(
        model=dllm,
        args=args,
        train_dataset=features,
        data_collator=PaddingCollator(tokenizer.pad_token_id, side="right"),
        optimizers=(optimizer, None),
    )
    trainer.router_schedule = router_schedule
    rates = {"lr": lr, "router_lr": router_lr, "router_schedule": router_schedule}
    save_run_config(
        output_dir,
        {
            "dllm": dllm.config.to_dict(),
            **rates,
            "epochs": flags.epochs,
            "batch_size": batch_size,
            "grad_accum": grad_accum,
            "flags": flags.record(),
        },
    )
    t0 = time.time()
    result = train_with_resume(trainer, flags.resume)
    dllm.eval()
    history = [h for h in trainer.state.log_history if "loss" in h]
    return {
        "train_loss": result.training_loss,
        "steps": trainer.state.global_step,
        "seconds": time.time() - t0,
        **rates,
        "history": history,
    }
