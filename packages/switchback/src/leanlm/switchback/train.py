"""Supervised fine-tuning with or without SwitchBack, repeated N times for a timing comparison.

Each run loads the model fresh, optionally swaps its linear layers, trains with HF Trainer (the
seed's defaults: batch 64, lr 1e-5, constant schedule with a 5% warmup that really applies, source/
target max lengths 16/512, target-only loss) and appends one JSON line to the run log:
``{"id", "switchback", "variant", "seconds", "train_loss", "losses": [[step, loss], ...], ...}``.
The log is resumable: runs already in it are skipped, so an interrupted ``--num-runs 10`` continues.
``finetune`` takes one ``FinetuneOptions`` (options.py), the same one switchback-finetune fills.
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
from leanlm.core.records import ResumableJsonlWriter
from leanlm.core.sft import PaddingCollator
from leanlm.core.training import TrainFlags, save_run_config
from leanlm.switchback.data import build_examples, load_pairs
from leanlm.switchback.options import SWITCHBACK_ARGUMENTS, FinetuneOptions
from leanlm.switchback.surgery import count_swapped, parse_exclude, swap_linear_layers, unswap_linear_layers

log = logging.getLogger(__name__)


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


def _prepare_process(threads: int | None) -> None:
    import torch

    from leanlm.core.cpu_memory import keep_freed_memory

    if threads:
        torch.set_num_threads(threads)
    if not torch.cuda.is_available():
        keep_freed_memory()  # CPU training: reuse large activation buffers instead of page-faulting them in


def _examples(config: FinetuneOptions, tokenizer: Any, flags: TrainFlags) -> list[dict[str, list[int]]]:
    """The tokenized training set, cut to a multiple of the batch size as the seed did."""
    seed = flags.seed if flags.seed is not None else 0
    records = load_pairs(config.dataset, limit=config.limit, seed=seed if config.limit else None)
    examples = build_examples(
        records,
        tokenizer,
        template=config.template,
        source_max_len=config.source_max_len,
        target_max_len=config.target_max_len,
    )
    bs = flags.batch_size or 64
    if len(examples) >= bs:
        examples = examples[: len(examples) // bs * bs]
    return examples


def _run_config(config: FinetuneOptions, flags: TrainFlags, examples: int) -> dict[str, Any]:
    """What leanlm_run.json records of the experiment."""
    return {
        "model": config.model,
        "dataset": config.dataset,
        "switchback": config.switchback,
        "variant": config.variant,
        "exclude": list(parse_exclude(config.exclude)),
        "examples": examples,
        "flags": flags.record(),
        "source_max_len": config.source_max_len,
        "target_max_len": config.target_max_len,
        "dtype": config.dtype,
    }


def _one_run(
    config: FinetuneOptions,
    flags: TrainFlags,
    index: int,
    examples: list[dict[str, list[int]]],
    tokenizer: Any,
) -> tuple[dict[str, Any], Any]:
    """Run ``index`` from a freshly loaded (and, with SwitchBack, swapped) model: (its log record, the model)."""
    from leanlm.core.models import load_model

    rid = run_id(config.switchback, config.variant, index)
    net = load_model(config.model, dtype=config.dtype)
    swapped = swap_linear_layers(net, config.variant, config.exclude) if config.switchback else []
    log.info("run %s: %s", rid, count_swapped(net))
    out = Path(config.output_dir)
    stats = train_once(net, copy.copy(examples), tokenizer.pad_token_id, out / "trainer", flags)
    record = {
        "id": rid,
        "run": index,
        "switchback": config.switchback,
        "variant": config.variant if config.switchback else "linear",
        "swapped_layers": len(swapped),
        "model": config.model,
        "dataset": config.dataset,
        "examples": len(examples),
        "tokens_per_epoch": sum(len(e["input_ids"]) for e in examples),
        **stats,
    }
    if not math.isfinite(record["train_loss"]):
        log.warning("%s: the training loss is not finite", rid)
    log.info("%s: %.1f s, train loss %.4f", rid, stats["seconds"], stats["train_loss"])
    return record, net


def _save_plain(net: Any, tokenizer: Any, folder: Path) -> None:
    """Save ``net`` with plain nn.Linear layers again, so any HF loader opens it."""
    unswap_linear_layers(net)
    net.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def finetune(config: FinetuneOptions) -> list[dict[str, Any]]:
    """Fine-tune ``config.model`` ``config.num_runs`` times, with SwitchBack layers or plain nn.Linear.

    Every run starts from a fresh model with the same seed and data, so runs differ only in timing
    noise; each appends one record to the run log (runs already logged are skipped and returned
    as logged). Under torchrun every rank trains each run data-parallel and rank 0 alone writes
    the log, leanlm_run.json and the last run's model (OUTPUT_DIR/model, when ``save_model``).
    """
    from leanlm.core.models import load_tokenizer

    _prepare_process(config.threads)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_path = config.log_path()
    flags = config.train_flags()
    tokenizer = load_tokenizer(config.model)
    examples = _examples(config, tokenizer, flags)
    main = is_main_process()
    if main:
        save_run_config(out, _run_config(config, flags, len(examples)))
    tokens = sum(len(e["input_ids"]) for e in examples)
    log.info("%d examples, %d tokens per epoch; log: %s", len(examples), tokens, log_path)

    results = []
    with ResumableJsonlWriter(log_path) if main else _LogReader(log_path) as writer:
        for index in range(config.num_runs):
            rid = run_id(config.switchback, config.variant, index)
            if rid in writer:
                log.info("%s already in %s: skipped", rid, log_path)
                results.append(writer.done[rid])
                continue
            record, net = _one_run(config, flags, index, examples, tokenizer)
            writer.write(record)
            results.append(record)
            if config.save_model and index == config.num_runs - 1 and main:
                _save_plain(net, tokenizer, out / "model")
            del net
    return results
