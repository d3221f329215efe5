"""Train the BiTA adapter (mask embeddings + prefix) with HF Trainer; the base model stays frozen.

Paper defaults (LLaMA-2-7B-chat): M=3, P=16, lr 3e-2 cosine, 1 epoch over 4x resampled data,
cutoff 2048, 64 groups per sample, global batch 128 (8 per device x 2 accumulation x 8 GPUs), bf16
on GPU (``leanlm.core.training`` decides), DeepSpeed ZeRO-2/3 presets via ``deepspeed=zero2|zero3``.
The output folder is an adapter folder (``adapter.safetensors`` + ``bita_config.json``); each
``checkpoint-N`` is one too, and a rerun resumes from the last one.

``options.TrainOptions`` holds bita-train's flags (the command line is built from its fields) and
``run_train`` runs one, from the records file to the saved adapter.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from leanlm.bita.data import build_dataset, tokenize_pair
from leanlm.bita.model import BiTAModel
from leanlm.bita.options import BITA_ARGUMENTS, BITA_RECIPE, CPU_MAX_STEPS, TrainOptions
from leanlm.bita.prompts import training_records
from leanlm.core.errors import UserError
from leanlm.core.sft import PaddingCollator
from leanlm.core.training import TrainFlags

log = logging.getLogger(__name__)


def prompt_response_pairs(records: list[dict[str, Any]], source: str) -> list[tuple[str, str]]:
    """(prompt, output) from generated records (``prompt`` or the original's ``model_input_texts``)."""
    pairs = []
    for i, r in enumerate(records):
        prompt = r.get("prompt", r.get("model_input_texts"))
        output = r.get("output")
        if not isinstance(prompt, str) or not isinstance(output, str):
            raise UserError(
                f"{source}: record {i + 1} needs string fields 'prompt' and 'output' (run bita-gen-outputs)"
            )
        if output.strip():
            pairs.append((prompt, output))
    if not pairs:
        raise UserError(f"{source}: no record with a non-empty 'output' to train on")
    return pairs


def make_trainer_class() -> type:
    from transformers import Trainer

    class BiTATrainer(Trainer):
        """Saves and resumes only the adapter (not the frozen base weights)."""

        def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
            if self.args.should_save:
                self.model.save_adapter(output_dir or self.args.output_dir)

        def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
            from safetensors.torch import load_file

            from leanlm.bita.model import ADAPTER_FILE

            target = model or self.model
            path = Path(resume_from_checkpoint) / ADAPTER_FILE
            target.load_adapter_state(load_file(str(path)), where=str(path))

    return BiTATrainer


def train_adapter(
    model: BiTAModel,
    tokenizer: Any,
    records: list[dict[str, Any]],
    output_dir: str | Path,
    flags: TrainFlags = BITA_RECIPE,
    *,
    max_groups: int = 64,
    cutoff: int = 2048,
    resample: int = 4,
    source: str = "data",
    **training_args: Any,
) -> dict[str, Any]:
    """Train ``model``'s adapter on (prompt, output) records; saves the adapter to ``output_dir``.

    ``flags``: the training flags (default the paper recipe); ``training_args``: further
    TrainingArguments fields, which win over the flags (``max_steps=4``, ``save_steps=1000``).
    """
    from leanlm.core.training import save_run_config, train_with_resume

    seed = flags.seed if flags.seed is not None else 0
    pairs = [tokenize_pair(tokenizer, p, o) for p, o in prompt_response_pairs(records, source)]
    dataset = build_dataset(
        pairs,
        num_masks=model.num_masks,
        vocab_size=model.vocab_size,
        max_groups=max_groups,
        cutoff=cutoff,
        resample=resample,
        seed=seed,
    )
    if not dataset:
        raise UserError(f"{source}: every response is shorter than M+1={model.num_masks + 1} tokens")
    args = flags.to_training_arguments(output_dir, overrides=training_args, **BITA_ARGUMENTS)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    trainer = make_trainer_class()(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=PaddingCollator(pad, pad_to_multiple_of=4),  # ints (freeze_len, ...) are stacked
    )
    model.train()
    result = train_with_resume(trainer, flags.resume)
    model.eval()
    if args.should_save:  # rank 0 of a distributed run (DDP keeps the replicas equal)
        model.save_adapter(output_dir)
    summary = {
        "examples": len(dataset),
        "pairs": len(pairs),
        "mask_labels": sum(ex["num_groups"] * model.num_masks for ex in dataset),
        "steps": int(result.global_step),
        "world_size": args.world_size,
        "train_loss": float(result.training_loss),
        "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
    }
    if args.should_save:
        run = {
            "bita": model.config.__dict__,
            "data": summary,
            "flags": flags.record(),
            "args": args.to_dict(),
        }
        save_run_config(output_dir, run)
    return summary


def run_train(config: TrainOptions) -> dict[str, Any]:
    """Train a BiTA adapter for MODEL on the generated JSONL DATA (records with prompt + output).

    Paper defaults: M=3, P=16, lr 3e-2 cosine, 1 epoch over 4x resampled data, cutoff 2048,
    64 groups, batch 8 x 2 accumulation per process. deepspeed: zero2 | zero3 | zero2_offload |
    zero3_offload | a JSON path (CUDA). --nproc N>1 relaunches under torchrun (or run the command
    under torchrun yourself, several nodes too). --report_to tensorboard|wandb|none. Without a GPU
    and without --max_steps the job stops after 40 steps (a short CPU run).
    """
    import torch

    from leanlm.core.distributed import maybe_launch
    from leanlm.core.models import load_model, load_tokenizer
    from leanlm.core.records import read_records

    flags = config.train_flags()
    adapter = config.adapter_config()
    maybe_launch(config.nproc)
    records = training_records(read_records(config.data))
    if not records:
        raise UserError(f"{config.data}: no records")
    if config.limit:
        records = records[: config.limit]
    if not torch.cuda.is_available() and flags.max_steps is None:
        flags = flags.override(max_steps=CPU_MAX_STEPS)
        log.info("no GPU: a short CPU job of %d steps (pass --max_steps to change)", CPU_MAX_STEPS)
    tokenizer = load_tokenizer(config.model)
    bita = BiTAModel(load_model(config.model, dtype=config.dtype), adapter, seed=config.seed)
    packing = {"max_groups": config.max_groups, "cutoff": config.cutoff, "resample": config.resample}
    summary = train_adapter(bita, tokenizer, records, config.output_dir, flags, **packing, source=config.data)
    summary.pop("losses", None)
    summary["output_dir"] = str(config.output_dir)
    return summary
