"""HF Trainer set-up shared by the methods: argument presets, DeepSpeed/FSDP configs, resume.

A method states its paper defaults as a dict; the user's command-line overrides win; what the
hardware decides (bf16 on CUDA, fp32 and ``use_cpu`` on CPU) is filled in last unless given.

    args = training_arguments("runs/bita", BITA_DEFAULTS, {"learning_rate": 1e-2}, deepspeed="zero2")
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from leanlm.core.errors import UserError

log = logging.getLogger(__name__)

DEEPSPEED_PRESETS = ("zero2", "zero2_offload", "zero3", "zero3_offload")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def deepspeed_config(
    stage: int = 2, offload: bool = False, path: str | Path | None = None
) -> dict[str, Any] | Path:
    """A ZeRO-``stage`` (2 or 3) config with HF "auto" values; written to ``path`` as JSON if given.

    ``offload`` moves optimizer state (and with ZeRO-3 the parameters) to CPU memory.
    """
    if stage not in (2, 3):
        raise UserError(f"DeepSpeed ZeRO stage must be 2 or 3, got {stage}")
    zero: dict[str, Any] = {
        "stage": stage,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
    }
    if stage == 3:
        zero |= {
            "stage3_prefetch_bucket_size": "auto",
            "stage3_param_persistence_threshold": "auto",
            "stage3_gather_16bit_weights_on_model_save": True,
        }
    if offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    config = {
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "zero_optimization": zero,
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "steps_per_print": 100,
        "wall_clock_breakdown": False,
    }
    if path is None:
        return config
    from leanlm.core.records import write_json

    write_json(path, config)
    return Path(path)


def resolve_deepspeed(choice: str | None, output_dir: str | Path) -> str | None:
    """``zero2|zero2_offload|zero3|zero3_offload`` -> a JSON file in ``output_dir``; a path passes through."""
    if not choice:
        return None
    if choice in DEEPSPEED_PRESETS:
        stage = 3 if choice.startswith("zero3") else 2
        return str(
            deepspeed_config(stage, choice.endswith("offload"), Path(output_dir) / f"ds_{choice}.json")
        )
    if Path(choice).exists():
        return str(choice)
    raise UserError(f"--deepspeed {choice!r}: not a file and not one of {', '.join(DEEPSPEED_PRESETS)}")


def decoder_layer_classes(model: Any) -> list[str]:
    """The class names FSDP wraps: the model's ``_no_split_modules`` (its decoder layer, e.g.
    ``Qwen3DecoderLayer``), found through wrappers such as peft or a method's own module."""
    for module in model.modules():
        names = getattr(module, "_no_split_modules", None)
        if names:
            return sorted(names)
    raise UserError(
        f"{type(model).__name__} names no decoder layer (_no_split_modules) for FSDP to wrap; "
        "pass fsdp_options(layer_class=...)"
    )


def fsdp_options(
    layer_class: str | list[str] | None = None, cpu_offload: bool = False, model: Any = None
) -> dict[str, Any]:
    """TrainingArguments fields for FSDP full sharding, wrapping each decoder layer.

    The layer class is ``layer_class`` when given, else derived from ``model``; with neither, it is
    left to accelerate, which takes the wrapped model's ``_no_split_modules`` when it shards it.
    """
    config: dict[str, Any] = {"reshard_after_forward": True}
    if layer_class is not None:
        config["transformer_layer_cls_to_wrap"] = (
            [layer_class] if isinstance(layer_class, str) else list(layer_class)
        )
    elif model is not None:
        config["transformer_layer_cls_to_wrap"] = decoder_layer_classes(model)
    if cpu_offload:
        config["cpu_offload"] = True
    return {"fsdp": True, "fsdp_config": config}


def training_arguments(
    output_dir: str | Path,
    defaults: dict[str, Any],
    overrides: dict[str, Any] | None = None,
    *,
    deepspeed: str | None = None,
    fsdp: bool = False,
    model: Any = None,
) -> Any:
    """Build ``transformers.TrainingArguments`` from method ``defaults`` + user ``overrides``.

    Overrides whose value is None are ignored (unset flags). ``warmup_ratio`` is accepted and
    mapped to transformers 5's fractional ``warmup_steps``. Unknown keys raise a UserError that
    suggests the nearest valid name.
    """
    from transformers import TrainingArguments

    merged = dict(defaults)
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    if "warmup_ratio" in merged:
        ratio = float(merged.pop("warmup_ratio"))
        merged.setdefault("warmup_steps", ratio if ratio < 1 else int(ratio))
    valid = {f.name for f in dataclasses.fields(TrainingArguments)}
    for key in merged:
        if key not in valid:
            hint = difflib.get_close_matches(key, valid, n=1)
            raise UserError(
                f"unknown training option {key!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
            )
    cuda = _cuda()
    merged.setdefault("report_to", "none")
    merged.setdefault("save_strategy", "steps")
    merged.setdefault("save_steps", 500)
    merged.setdefault("save_total_limit", 2)
    merged.setdefault("logging_steps", 10)
    merged.setdefault("remove_unused_columns", False)
    if not cuda:
        merged.setdefault("use_cpu", True)
        merged["bf16"] = bool(merged.get("bf16", False))  # torch's CPU autocast runs bf16
        merged["fp16"] = False  # fp16 AMP needs CUDA
    elif "bf16" not in merged and "fp16" not in merged:
        import torch

        merged["bf16"] = torch.cuda.is_bf16_supported()
        merged["fp16"] = not merged["bf16"]
    if deepspeed:
        merged["deepspeed"] = resolve_deepspeed(deepspeed, output_dir)
    if fsdp:  # wraps ``model``'s decoder layer class (or, without a model, what accelerate derives)
        merged.update(fsdp_options(model=model))
    return TrainingArguments(output_dir=str(output_dir), **merged)


CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
INCOMPLETE_PREFIX = "incomplete-"  # outside HF's ``checkpoint-*`` globs: never resumed, never rotated


def checkpoint_complete(folder: str | Path) -> bool:
    """Whether HF Trainer finished writing ``folder``: it writes ``trainer_state.json`` last (after the
    weights, optimizer and RNG state), so a readable one for the same step means the rest is there."""
    folder = Path(folder)
    match = CHECKPOINT_PATTERN.match(folder.name)
    try:
        state = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, or torn by a kill mid-write
        return False
    return match is not None and isinstance(state, dict) and state.get("global_step") == int(match.group(1))


def _is_rank_zero() -> bool:
    return os.environ.get("RANK", "0") == "0" and os.environ.get("LOCAL_RANK", "0") == "0"


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest complete ``checkpoint-N`` folder in ``output_dir``, or None.

    A newer folder that a kill left half-written is moved aside to ``incomplete-checkpoint-N``
    (by rank 0; other ranks just skip it) with a one-line warning, so the run resumes from the
    newest complete checkpoint instead of failing on every re-run.
    """
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    found = [
        (int(m.group(1)), p)
        for p in folder.iterdir()
        if (m := CHECKPOINT_PATTERN.match(p.name)) and p.is_dir()
    ]
    for _, candidate in sorted(found, reverse=True):
        if checkpoint_complete(candidate):
            return str(candidate)
        if _is_rank_zero():
            aside = candidate.with_name(INCOMPLETE_PREFIX + candidate.name)
            n = 1
            while aside.exists():
                aside, n = candidate.with_name(f"{INCOMPLETE_PREFIX}{n}-{candidate.name}"), n + 1
            candidate.rename(aside)
            log.warning("%s is incomplete (killed while saving?): moved aside to %s", candidate, aside.name)
    return None


def train_with_resume(trainer: Any, resume: bool | str = True) -> Any:
    """``trainer.train`` resuming from the last checkpoint when ``resume`` is True (or a given path)."""
    checkpoint = (
        resume if isinstance(resume, str) else (last_checkpoint(trainer.args.output_dir) if resume else None)
    )
    if checkpoint:
        log.info("resuming from %s", checkpoint)
    return trainer.train(resume_from_checkpoint=checkpoint)


def save_run_config(output_dir: str | Path, config: dict[str, Any]) -> None:
    """Record the effective configuration of a run next to its checkpoints (JSON, atomic)."""
    from leanlm.core.records import write_json

    write_json(Path(output_dir) / "leanlm_run.json", json.loads(json.dumps(config, default=str)))
