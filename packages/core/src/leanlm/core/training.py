"""HF Trainer set-up shared by the methods: the training flags, DeepSpeed/FSDP configs, resume.

Every trainer takes the same short flags (``--epochs --batch_size --grad_accum --learning_rate
--max_steps ... --report_to --deepspeed``), held in one typed ``TrainFlags``. A method states its
paper recipe as a ``TrainFlags`` instance; the command line overrides it field by field; what the
hardware decides (bf16 on CUDA, fp32 and ``use_cpu`` on CPU) is filled in last unless given:

    RECIPE = TrainFlags(learning_rate=3e-2, lr_scheduler_type="cosine", batch_size=8, grad_accum=2)
    flags = RECIPE.override(learning_rate=1e-2, max_steps=None)      # None: keep the recipe's
    args = flags.to_training_arguments("runs/bita", dataloader_drop_last=False)

``training_arguments(output_dir, defaults, overrides)`` is the same merge on TrainingArguments
field names, for method-specific fields that are not flags.
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
from leanlm.core.flags import parse_report_to

log = logging.getLogger(__name__)

DEEPSPEED_PRESETS = ("zero2", "zero2_offload", "zero3", "zero3_offload")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _refuse_unknown(keys: Any, valid: set[str], what: str) -> None:
    """One line for the first name not in ``valid``, with the closest valid one."""
    for key in keys:
        if key not in valid:
            hint = difflib.get_close_matches(key, valid, n=1)
            raise UserError(f"unknown {what} {key!r}" + (f"; did you mean {hint[0]!r}?" if hint else ""))


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
    _refuse_unknown(merged, {f.name for f in dataclasses.fields(TrainingArguments)}, "training option")
    cuda = _cuda()
    if (merged.get("deepspeed") or deepspeed) and not cuda:
        raise UserError("DeepSpeed runs only on CUDA GPUs here (accelerate does not start it on a CPU)")
    merged.setdefault("report_to", "none")  # a tracker only when asked for (--report_to)
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


# TrainFlags field -> TrainingArguments field (the rest keep their name or are not TrainingArguments)
FLAG_TO_ARGUMENT = {
    "epochs": "num_train_epochs",
    "batch_size": "per_device_train_batch_size",
    "grad_accum": "gradient_accumulation_steps",
}
NOT_ARGUMENTS = ("deepspeed", "fsdp", "resume")  # handled by to_training_arguments / train_with_resume
# what every trainer's command line takes, by these names (tested per package); nproc is maybe_launch's
TRAINER_FLAGS = (
    "epochs",
    "batch_size",
    "grad_accum",
    "learning_rate",
    "max_steps",
    "seed",
    "report_to",
    "nproc",
)
LONG_NAMES = ("num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps", "lr")


def missing_trainer_flags(command: Any) -> list[str]:
    """The shared trainer flags ``command`` (a console script's function) lacks, and the long
    TrainingArguments names it takes instead: both should be empty."""
    import inspect

    params = set(inspect.signature(command).parameters)
    return [f for f in TRAINER_FLAGS if f not in params] + [f"--{n}" for n in LONG_NAMES if n in params]


@dataclasses.dataclass(frozen=True)
class TrainFlags:
    """The training flags of every leanlm trainer, by one name each; None means "HF's default".

    ``epochs``/``batch_size`` (per process)/``grad_accum`` map to ``num_train_epochs``/
    ``per_device_train_batch_size``/``gradient_accumulation_steps``; the global batch is
    ``batch_size * grad_accum * world_size``. ``report_to``: ``none`` (default), ``tensorboard``,
    ``wandb`` or both comma-separated. ``deepspeed``: a ZeRO preset or a JSON path (CUDA only).
    ``fsdp``: full sharding, one unit per decoder layer. ``resume``: continue from the newest
    complete ``checkpoint-N``. Values are checked on construction (one-line ``UserError``).
    """

    epochs: float | None = None
    max_steps: int | None = None
    batch_size: int | None = None
    grad_accum: int | None = None
    learning_rate: float | None = None
    lr_scheduler_type: str | None = None
    warmup_ratio: float | None = None
    weight_decay: float | None = None
    max_grad_norm: float | None = None
    save_steps: int | None = None
    save_total_limit: int | None = None
    logging_steps: int | None = None
    seed: int | None = None
    bf16: bool | None = None
    gradient_checkpointing: bool | None = None
    report_to: str | None = None
    deepspeed: str | None = None
    fsdp: bool = False
    resume: bool = True

    def __post_init__(self) -> None:
        from leanlm.core.console import parse_bool

        for name in ("bf16", "gradient_checkpointing", "fsdp", "resume"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):  # fire leaves ``--fsdp true`` a string
                object.__setattr__(self, name, parse_bool(value, f"--{name}"))
        if self.report_to is not None:
            object.__setattr__(self, "report_to", ",".join(parse_report_to(self.report_to, installed=True)))
        if self.deepspeed and not _cuda():
            raise UserError(
                f"--deepspeed {self.deepspeed}: DeepSpeed runs only on CUDA GPUs here (accelerate does not "
                "start it on a CPU); drop --deepspeed (CPU processes train with DDP, or --fsdp where offered)"
            )
        if self.deepspeed and self.fsdp:
            raise UserError("--deepspeed and --fsdp exclude each other; choose one")
        if self.deepspeed:
            import importlib.util

            if importlib.util.find_spec("deepspeed") is None:  # an extra since pip installs skip its sdist
                raise UserError("--deepspeed needs DeepSpeed: pip install 'leanlm-core[deepspeed]'")

    def override(self, **given: Any) -> TrainFlags:
        """A copy with the ``given`` fields that are not None replaced (flags the user did not set stay)."""
        _refuse_unknown(given, {f.name for f in dataclasses.fields(self)}, "training flag")
        return dataclasses.replace(self, **{k: v for k, v in given.items() if v is not None})

    def argument_fields(self) -> dict[str, Any]:
        """The set flags as TrainingArguments fields (``epochs`` -> ``num_train_epochs``, ...)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None or f.name in NOT_ARGUMENTS:
                continue
            out[FLAG_TO_ARGUMENT.get(f.name, f.name)] = value.split(",") if f.name == "report_to" else value
        return out

    def to_training_arguments(
        self,
        output_dir: str | Path,
        *,
        model: Any = None,
        overrides: dict[str, Any] | None = None,
        **method_specific: Any,
    ) -> Any:
        """``TrainingArguments``: ``method_specific`` fields (a method's constants that are not flags,
        e.g. ``adam_beta2=0.95``), then these flags, then ``overrides`` (TrainingArguments fields a
        caller sets directly; None values ignored). ``model`` picks the FSDP wrap class."""
        return training_arguments(
            output_dir,
            method_specific | self.argument_fields(),
            overrides,
            deepspeed=self.deepspeed,
            fsdp=self.fsdp,
            model=model,
        )

    def to_argv(self, base: TrainFlags | None = None) -> list[str]:
        """The flags that differ from ``base`` (default: all set ones) as a command line
        (``["--epochs", "3", ...]``), for a relaunched trainer whose defaults are ``base``."""
        argv: list[str] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None and (base is None or value != getattr(base, f.name)):
                argv += [f"--{f.name}", str(value).lower() if isinstance(value, bool) else str(value)]
        return argv

    def record(self) -> dict[str, Any]:
        """The flags as a plain dict (for ``leanlm_run.json``)."""
        return dataclasses.asdict(self)


def enable_cpu_fsdp(trainer: Any) -> Any:
    """Make ``--fsdp`` shard on CPU processes too (gloo), as it does on GPUs; returns ``trainer``.

    accelerate turns a FSDP plugin into FSDP only for accelerator devices: on ``MULTI_CPU`` it
    silently wraps the model in plain DDP (every rank holds every parameter). Here the state is
    switched to FSDP with the plugin TrainingArguments built, so ``prepare`` applies FSDP2's
    ``fully_shard`` per decoder layer on the CPU mesh. A no-op unless FSDP was asked for on a
    multi-process CPU run.
    """
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = trainer.accelerator.state
    if (
        not trainer.args.fsdp
        or trainer.is_fsdp_enabled
        or state.distributed_type != DistributedType.MULTI_CPU
    ):
        return trainer
    state.fsdp_plugin = FullyShardedDataParallelPlugin(**trainer.args.fsdp_plugin_args)
    state.distributed_type = DistributedType.FSDP
    trainer.is_fsdp_enabled = True

    def save_model(output_dir: str | None = None, _internal_call: bool = False) -> None:
        # checkpoints too: HF's save waits forever on CPU ranks (see save_trained_model)
        save_trained_model(trainer, output_dir or trainer.args.output_dir)

    trainer.save_model = save_model
    return trainer


def save_trained_model(trainer: Any, output_dir: str | Path) -> None:
    """``trainer.save_model(output_dir)``, also for a FSDP-sharded model: every rank joins the
    gather of the full state dict, and rank 0 writes it through an unsharded copy built on the meta
    device (HF's own save inspects the sharded parameters on rank 0 alone, which waits forever for
    the other ranks)."""
    if not getattr(trainer, "is_fsdp_enabled", False):
        trainer.save_model(str(output_dir))
        return
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    import torch
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from transformers import AutoModelForCausalLM

    # a collective: plain full tensors on rank 0 (cpu_offload), nothing on the others
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(trainer.model, options=options)
    if not trainer.args.should_save:
        return
    config = trainer.accelerator.unwrap_model(trainer.model).config
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config)
    missing, unexpected = plain.load_state_dict(state, strict=False, assign=True)
    plain.tie_weights()
    left = [k for k in missing if plain.get_parameter(k).is_meta] if missing else []
    if left or unexpected:
        raise RuntimeError(f"FSDP state dict does not fit {type(plain).__name__}: {left or unexpected}")
    plain.save_pretrained(str(output_dir))


def local_parameter_share(model: Any) -> tuple[int, int]:
    """(parameter values this process holds, values of the whole model): a FSDP-sharded parameter
    (a DTensor) counts its local shard, so on N ranks the first number is about total / N."""
    from torch.distributed.tensor import DTensor

    local = total = 0
    for p in model.parameters():
        total += p.numel()
        local += p.to_local().numel() if isinstance(p, DTensor) else p.numel()
    return local, total


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
