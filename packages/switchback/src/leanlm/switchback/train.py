"""Supervised fine-tuning with or without SwitchBack, repeated N times for a timing comparison.

Each run loads the model fresh, optionally swaps its linear layers, trains with HF Trainer (the
seed's defaults: batch 64, lr 1e-5, constant schedule with a 5% warmup that really applies, source/
target max lengths 16/512, target-only loss) and appends one JSON line to the run log:
``{"id", "switchback", "variant", "seconds", "train_loss", "losses": [[step, loss], ...], ...}``.
The log is resumable: runs already in it are skipped, so an interrupted ``--num-runs 10`` continues.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from pathlib import Path
from typing import Any

from leanlm.core.cli import parse_bool
from leanlm.core.errors import UserError
from leanlm.core.records import ResumableJsonlWriter
from leanlm.core.sft import PaddingCollator
from leanlm.core.training import save_run_config, training_arguments
from leanlm.switchback.data import build_examples, load_pairs
from leanlm.switchback.surgery import count_swapped, parse_exclude, swap_linear_layers, unswap_linear_layers

log = logging.getLogger(__name__)

# the seed's sft/script.sh, with the warmup made effective (constant_with_warmup, not constant)
FINETUNE_DEFAULTS: dict[str, Any] = {
    "per_device_train_batch_size": 64,
    "learning_rate": 1e-5,
    "lr_scheduler_type": "constant_with_warmup",
    "warmup_ratio": 0.05,
    "num_train_epochs": 5,
    "max_grad_norm": 1.0,
    "weight_decay": 0.0,
    "adam_beta2": 0.999,
    "optim": "adamw_torch",
    "logging_steps": 1,
    "save_strategy": "no",
    "seed": 0,
    "data_seed": 42,
    "dataloader_drop_last": False,
}


def run_id(switchback: bool, variant: str, index: int) -> str:
    return f"{variant if switchback else 'linear'}-run{index}"


def _loss_curve(log_history: list[dict[str, Any]]) -> list[list[float]]:
    return [[int(h["step"]), float(h["loss"])] for h in log_history if "loss" in h and "step" in h]


def train_once(
    model: Any,
    examples: list[dict[str, list[int]]],
    pad_token_id: int,
    output_dir: Path,
    overrides: dict[str, Any],
) -> dict[str, Any]:
    """Train ``model`` in place on ``examples``; returns wall time, loss curve and throughput."""
    from transformers import Trainer

    args = training_arguments(output_dir, FINETUNE_DEFAULTS, overrides)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=examples,
        data_collator=PaddingCollator(pad_token_id, side="right"),
    )
    t0 = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - t0
    curve = _loss_curve(trainer.state.log_history)
    return {
        "seconds": seconds,
        "minutes": seconds / 60,
        "train_loss": float(result.training_loss),
        "final_loss": curve[-1][1] if curve else float("nan"),
        "losses": curve,
        "steps": int(trainer.state.global_step),
    }


def finetune(
    model: str = "default",
    dataset: str = "instructions",
    switchback: bool | str = True,
    variant: str = "global",
    exclude: str | None = None,
    num_runs: int = 1,
    output_dir: str = "runs/switchback-finetune",
    log_file: str | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    epochs: float | None = None,
    max_steps: int | None = None,
    source_max_len: int = 16,
    target_max_len: int = 512,
    template: str | None = None,
    limit: int | None = None,
    dtype: str | None = None,
    bf16: bool | str | None = None,
    gradient_checkpointing: bool | str = False,
    seed: int = 0,
    save_model: bool | str = True,
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """Fine-tune ``model`` on ``dataset`` ``num_runs`` times, with SwitchBack layers or plain nn.Linear.

    Args:
        model: alias, local path or hub id (default: the embedded SmolLM2-135M-Instruct).
        dataset: ``instructions`` (offline), ``oasst1``/``longform`` (hub), or a local JSON/JSONL file.
        switchback: swap linear layers for SwitchBack (true) or train the plain model (false).
        variant: global (default), vectorwise, mem_efficient, or standard (16-bit reference layers).
        exclude: comma-separated layer names kept in float (default: lm_head,k_proj,v_proj; "none" for none).
        num_runs: repeated runs (fresh model each time) for the timing statistics.
        output_dir: where the run log and the last run's model go.
        log_file: the JSONL run log (default: OUTPUT_DIR/finetune_log.jsonl); existing run ids are skipped.
        batch_size, learning_rate, epochs, max_steps: override the seed's 64, 1e-5, 5 epochs.
        source_max_len, target_max_len: token budgets for prompt and target (seed: 16 and 512).
        template: prompt template (default: the tokenizer's chat template, else instruction_response).
        limit: use only the first LIMIT records (after a seeded shuffle).
        dtype: model weights dtype (bf16, fp32; default fp32 on CPU, bf16 on CUDA).
        bf16: bf16 autocast (HF Trainer's --bf16).
        gradient_checkpointing: trade compute for activation memory.
        seed: training seed (the same for every run: runs differ only in timing noise).
        save_model: save the last run's model (plain nn.Linear layers) to OUTPUT_DIR/model.
        threads: torch CPU threads (default: torch's choice; 1 gives steadier timings on a busy machine).
    """
    import torch

    from leanlm.core.cpu_memory import keep_freed_memory
    from leanlm.core.models import load_model, load_tokenizer

    if threads:
        torch.set_num_threads(int(threads))
    if not torch.cuda.is_available():
        keep_freed_memory()  # CPU training: reuse large activation buffers instead of page-faulting them in
    use_switchback = parse_bool(switchback, "--switchback")
    if int(num_runs) < 1:
        raise UserError(f"--num-runs must be at least 1, got {num_runs}")
    if use_switchback:
        from leanlm.switchback.layers import variant_class

        variant_class(variant)  # unknown variant: fail before loading anything
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_path = Path(log_file) if log_file else out / "finetune_log.jsonl"

    tokenizer = load_tokenizer(model)
    records = load_pairs(dataset, limit=limit, seed=seed if limit else None)
    examples = build_examples(
        records,
        tokenizer,
        template=template,
        source_max_len=int(source_max_len),
        target_max_len=int(target_max_len),
    )
    bs = int(batch_size or FINETUNE_DEFAULTS["per_device_train_batch_size"])
    if len(examples) >= bs:  # the seed truncates the train set to a multiple of the batch size
        examples = examples[: len(examples) // bs * bs]
    overrides = {
        "per_device_train_batch_size": bs,
        "learning_rate": learning_rate,
        "num_train_epochs": epochs,
        "max_steps": max_steps,
        "seed": seed,
        "gradient_checkpointing": parse_bool(gradient_checkpointing, "--gradient-checkpointing"),
        "bf16": None if bf16 is None else parse_bool(bf16, "--bf16"),
    }
    config = {
        "model": model, "dataset": dataset, "switchback": use_switchback, "variant": variant,
        "exclude": list(parse_exclude(exclude)), "examples": len(examples), "overrides": overrides,
        "source_max_len": source_max_len, "target_max_len": target_max_len, "dtype": dtype,
    }  # fmt: skip
    save_run_config(out, config)
    tokens = sum(len(e["input_ids"]) for e in examples)
    log.info("%d examples, %d tokens per epoch; log: %s", len(examples), tokens, log_path)

    results = []
    with ResumableJsonlWriter(log_path) as writer:
        for index in range(int(num_runs)):
            rid = run_id(use_switchback, variant, index)
            if rid in writer:
                log.info("%s already in %s: skipped", rid, log_path)
                results.append(writer.done[rid])
                continue
            net = load_model(model, dtype=dtype)
            swapped: list[str] = []
            if use_switchback:
                swapped = swap_linear_layers(net, variant, exclude)
            log.info("run %s: %s", rid, count_swapped(net))
            stats = train_once(net, copy.copy(examples), tokenizer.pad_token_id, out / "trainer", overrides)
            record = {"id": rid, "run": index, "switchback": use_switchback,
                      "variant": variant if use_switchback else "linear", "swapped_layers": len(swapped),
                      "model": model, "dataset": dataset, "examples": len(examples), "tokens_per_epoch": tokens,
                      **stats}  # fmt: skip
            if not math.isfinite(record["train_loss"]):
                log.warning("%s: the training loss is not finite", rid)
            writer.write(record)
            results.append(record)
            log.info("%s: %.1f s, train loss %.4f", rid, stats["seconds"], stats["train_loss"])
            if parse_bool(save_model, "--save-model") and index == int(num_runs) - 1:
                unswap_linear_layers(net)
                net.save_pretrained(out / "model")
                tokenizer.save_pretrained(out / "model")
            del net
    return results
