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

from leanlm.core.distributed import in_distributed_job, world_size
from leanlm.core.errors import UserError
from leanlm.core.sft import PaddingCollator, tokenize_example
from leanlm.core.training import TrainFlags
from leanlm.lion.pools import Record
from leanlm.lion.prompts import student_prompt

log = logging.getLogger(__name__)

# the paper's recipe (global batch 128 = 2 per device x 8 accumulation x 8 GPUs)
LION_RECIPE = TrainFlags(
    epochs=3,
    learning_rate=2e-5,
    lr_scheduler_type="cosine",
    warmup_ratio=0.03,
    weight_decay=0.0,
    batch_size=2,
    grad_accum=8,
    save_steps=600,
    save_total_limit=1,
    logging_steps=1,
    seed=42,
)


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
    flags: TrainFlags = LION_RECIPE,
    *,
    tokenizer: Any = None,
    max_length: int = 1024,
    deepspeed: str | None = None,
    fsdp: bool | None = None,
    resume: bool | None = None,
    seed: int | None = None,
    nproc: int | None = None,
    **training_args: Any,
) -> dict[str, Any]:
    """Fine-tune ``model`` (name/path or a loaded model) on ``records``; save model + tokenizer in ``output_dir``.

    ``flags``: the training flags (default the paper recipe); ``deepspeed``/``fsdp``/``resume``/
    ``seed`` given here replace theirs. ``training_args``: further TrainingArguments fields, which
    win over the flags (``num_train_epochs=1``). Returns the trainer's metrics. Resumes from the
    newest ``checkpoint-N`` in ``output_dir``. With ``fsdp`` on several processes the model is
    really sharded (CPU processes too: ``enable_cpu_fsdp``). ``nproc`` > 1 (``model`` a name or
    path): the training runs as a torchrun job of that many processes (``launch_training``).
    """
    from transformers import Trainer

    from leanlm.core.distributed import is_main_process, set_seed
    from leanlm.core.models import load_model, load_tokenizer
    from leanlm.core.training import (
        enable_cpu_fsdp,
        local_parameter_share,
        save_run_config,
        save_trained_model,
        train_with_resume,
    )

    flags = flags.override(deepspeed=deepspeed, fsdp=fsdp, resume=resume, seed=seed)
    if not records:
        raise UserError("no training records (the teacher answered nothing?)")
    if nproc and nproc > 1 and not in_distributed_job():
        if not isinstance(model, str):
            raise UserError("train_student(nproc=...) needs the model as a name or path")
        return launch_training(model, records, output_dir, flags, nproc, max_length, training_args)
    if flags.fsdp and world_size() == 1:
        raise UserError("--fsdp shards over several processes: add --nproc N (or run under torchrun)")
    set_seed(flags.seed if flags.seed is not None else 42)
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
    args = flags.to_training_arguments(output_dir, model=model, overrides=training_args)
    dataset = _ListDataset(build_examples(tokenizer, records, max_length))
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=PaddingCollator(tokenizer.pad_token_id, side="right"),
    )
    enable_cpu_fsdp(trainer)
    result = train_with_resume(trainer, flags.resume)
    if args.world_size > 1:
        local, total = local_parameter_share(trainer.model_wrapped)
        kind = "FSDP" if trainer.is_fsdp_enabled else "replicated"
        rank = (args.process_index, args.world_size)
        log.info("rank %d of %d held %d of %d parameter values (%s)", *rank, local, total, kind)
    save_trained_model(trainer, output_dir)  # every rank joins (a sharded model is gathered), rank 0 writes
    if is_main_process():
        tokenizer.save_pretrained(str(output_dir))
        run = {"method": "lion", "examples": len(dataset), "max_length": max_length, "flags": flags.record()}
        metrics = result.metrics | {"world_size": args.world_size}
        save_run_config(output_dir, run | {"args": args.to_dict(), "metrics": metrics})
    model.eval()
    return dict(result.metrics) | {"world_size": args.world_size}


def launch_training(
    model: str,
    records: Sequence[Record],
    output_dir: str | Path,
    flags: TrainFlags,
    nproc: int,
    max_length: int,
    training_args: dict[str, Any],
) -> dict[str, Any]:
    """``train_student`` as a torchrun job of ``nproc`` processes (this module run as ``lion-train``);
    the records go through a JSONL file beside ``output_dir``; returns the job's metrics."""
    import subprocess

    from leanlm.core.distributed import launch_command
    from leanlm.core.records import read_json, write_jsonl

    output_dir = Path(output_dir)
    data = output_dir.with_name(output_dir.name + ".train_records.jsonl")
    write_jsonl(data, list(records))
    argv = ["-m", "leanlm.lion.train", str(data), str(output_dir), "--model", model]
    argv += ["--max_length", str(max_length), *flags.to_argv(base=LION_RECIPE)]
    if training_args:  # a Python literal: fire reads it back as the dict (JSON's true/null it would not)
        argv += ["--extra", repr(training_args)]
    log.info("training on %d processes: torchrun %s", nproc, " ".join(argv))
    code = subprocess.call(launch_command(nproc, argv))
    if code != 0:
        raise UserError(f"the {nproc}-process training job failed (exit {code}); re-run to resume it")
    return dict(read_json(output_dir / "leanlm_run.json").get("metrics", {}))


# the entry of the torchrun job ``launch_training`` starts: lion-train, one rank each
if __name__ == "__main__":
    from leanlm.lion.cli import train_main

    train_main()
