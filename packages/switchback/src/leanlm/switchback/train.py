"""Supervised fine-tuning with or without SwitchBack, repeated N times for a timing comparison.

Each run loads the model fresh, optionally swaps its linear layers, trains with HF Trainer (the
seed's defaults: batch 64, lr 1e-5, constant schedule with a 5% warmup that really applies, source/
target max lengths 16/512, target-only loss) and appends one JSON line to the run log:
``{"id", "switchback", "variant", "seconds", "train_loss", "losses": [[step, loss], ...], ...}``.
The log is resumable: runs already in it are skipped, so an interrupted ``--num-runs 10`` continues.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from leanlm.core.distributed import is_main_process
from leanlm.core.errors import UserError
from leanlm.core.records import ResumableJsonlWriter
from leanlm.core.sft import PaddingCollator
from leanlm.core.training import TrainFlags, save_run_config
from leanlm.switchback.data import build_examples, load_pairs
from leanlm.switchback.surgery import count_swapped, parse_exclude, swap_linear_layers, unswap_linear_layers

log = logging.getLogger(__name__)

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


def run_id(switchback: bool, variant: str, index: int) -> str:
    return f"{variant if switchback else 'linear'}-run{index}"


def _loss_curve(log_history: list[dict[str, Any]]) -> list[list[float]]:
    return [[int(h["step"]), float(h["loss"])] for h in log_history if "loss" in h and "step" in h]


def train_once(
    model: Any,
    examples: list[dict[str, list[int]]],
    pad_token_id: int,
    output_dir: Path,
    flags: TrainFlags,
) -> dict[str, Any]:
    """Train ``model`` in place on ``examples``; returns wall time, loss curve and throughput."""
    from transformers import Trainer

    args = flags.to_training_arguments(output_dir, **SWITCHBACK_ARGUMENTS)
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
        "world_size": args.world_size,
    }


class _LogReader:
    """What a rank other than 0 sees of the run log: the finished ids; rank 0 alone writes it."""

    def __init__(self, path: Path):
        self.done: dict[str, Any] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
                if line.endswith("\n") and line.strip():
                    record = json.loads(line)
                    self.done[record["id"]] = record

    def __contains__(self, rid: str) -> bool:
        return rid in self.done

    def write(self, record: dict[str, Any]) -> None:
        pass

    def __enter__(self) -> _LogReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def finetune(
    model: str = "default",
    dataset: str = "instructions",
    switchback: bool = True,
    variant: str = "global",
    exclude: str | None = None,
    num_runs: int = 1,
    output_dir: str = "runs/switchback-finetune",
    log_file: str | None = None,
    source_max_len: int = 16,
    target_max_len: int = 512,
    template: str | None = None,
    limit: int | None = None,
    dtype: str | None = None,
    save_model: bool = True,
    threads: int | None = None,
    flags: TrainFlags = SWITCHBACK_RECIPE,
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
        source_max_len, target_max_len: token budgets for prompt and target (seed: 16 and 512).
        template: prompt template (default: the tokenizer's chat template, else instruction_response).
        limit: use only the first LIMIT records (after a seeded shuffle).
        dtype: model weights dtype (bf16, fp32; default fp32 on CPU, bf16 on CUDA).
        save_model: save the last run's model (plain nn.Linear layers) to OUTPUT_DIR/model.
        threads: torch CPU threads (default: torch's choice; 1 gives steadier timings on a busy machine).
        flags: the training flags (default the seed's recipe: batch 64, lr 1e-5, 5 epochs); the same
            seed for every run, so runs differ only in timing noise. Under torchrun (several
            processes) every rank trains each run data-parallel and rank 0 writes the log and model.
    """
    import torch

    from leanlm.core.cpu_memory import keep_freed_memory
    from leanlm.core.models import load_model, load_tokenizer

    if threads:
        torch.set_num_threads(threads)
    if not torch.cuda.is_available():
        keep_freed_memory()  # CPU training: reuse large activation buffers instead of page-faulting them in
    if num_runs < 1:
        raise UserError(f"--num-runs must be at least 1, got {num_runs}")
    if switchback:
        from leanlm.switchback.layers import variant_class

        variant_class(variant)  # unknown variant: fail before loading anything
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_path = Path(log_file) if log_file else out / "finetune_log.jsonl"
    seed = flags.seed if flags.seed is not None else 0

    tokenizer = load_tokenizer(model)
    records = load_pairs(dataset, limit=limit, seed=seed if limit else None)
    examples = build_examples(
        records, tokenizer, template=template, source_max_len=source_max_len, target_max_len=target_max_len
    )
    bs = flags.batch_size or 64
    if len(examples) >= bs:  # the seed truncates the train set to a multiple of the batch size
        examples = examples[: len(examples) // bs * bs]
    main = is_main_process()
    config = {
        "model": model, "dataset": dataset, "switchback": switchback, "variant": variant,
        "exclude": list(parse_exclude(exclude)), "examples": len(examples), "flags": flags.record(),
        "source_max_len": source_max_len, "target_max_len": target_max_len, "dtype": dtype,
    }  # fmt: skip
    if main:
        save_run_config(out, config)
    tokens = sum(len(e["input_ids"]) for e in examples)
    log.info("%d examples, %d tokens per epoch; log: %s", len(examples), tokens, log_path)

    results = []
    with ResumableJsonlWriter(log_path) if main else _LogReader(log_path) as writer:
        for index in range(num_runs):
            rid = run_id(switchback, variant, index)
            if rid in writer:
                log.info("%s already in %s: skipped", rid, log_path)
                results.append(writer.done[rid])
                continue
            net = load_model(model, dtype=dtype)
            swapped: list[str] = []
            if switchback:
                swapped = swap_linear_layers(net, variant, exclude)
            log.info("run %s: %s", rid, count_swapped(net))
            stats = train_once(net, copy.copy(examples), tokenizer.pad_token_id, out / "trainer", flags)
            record = {"id": rid, "run": index, "switchback": switchback,
                      "variant": variant if switchback else "linear", "swapped_layers": len(swapped),
                      "model": model, "dataset": dataset, "examples": len(examples), "tokens_per_epoch": tokens,
                      **stats}  # fmt: skip
            if not math.isfinite(record["train_loss"]):
                log.warning("%s: the training loss is not finite", rid)
            writer.write(record)
            results.append(record)
            log.info("%s: %.1f s, train loss %.4f", rid, stats["seconds"], stats["train_loss"])
            if save_model and index == num_runs - 1 and main:
                unswap_linear_layers(net)
                net.save_pretrained(out / "model")
                tokenizer.save_pretrained(out / "model")
            del net
    return results
