"""The shared flag names of every leanlm command and the values each accepts, checked up front.

A flag means the same thing in every console script (``--batch_size`` is a count of examples,
``--output`` a file, ``--output_dir`` a folder), so its range is stated once, here, and
``check_flag_values`` applies it to the command line before fire runs anything: a bad value
costs one line and exit 2, not a model load or a paid request. Commands keep their own checks for
what only they know (``--turns 1|2``, a tree spec); flags not named here pass through.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leanlm.core.errors import UserError


@dataclass(frozen=True)
class Rule:
    """What a flag's value must be: a number in ``[low, high]`` (``integer`` or not), or a path kind."""

    what: str  # the one-line description used in the error
    check: Callable[[Any], bool]


def _num(integer: bool, low: float = -math.inf, high: float = math.inf, open_low: bool = False) -> Callable:
    def ok(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return False
        if integer and not float(v).is_integer():
            return False
        return (v > low if open_low else v >= low) and v <= high

    return ok


COUNT = Rule("an integer >= 1", _num(True, 1))
NONNEG_INT = Rule("an integer >= 0", _num(True, 0))
POSITIVE = Rule("a number > 0", _num(False, 0, open_low=True))
NONNEG = Rule("a number >= 0", _num(False, 0))
FRACTION = Rule("a number in [0, 1]", _num(False, 0, 1))
PROBABILITY = Rule("a number in (0, 1]", _num(False, 0, 1, open_low=True))
STEPS = Rule("-1 (no limit) or an integer >= 1", lambda v: _num(True, 1)(v) or v == -1)

OUTPUT_FILE, OUTPUT_DIR = "output file", "output folder"

# --report_to: where HF Trainer sends its logs (the package whose import the tracker needs)
REPORT_TO_CHOICES = {"none": None, "tensorboard": "tensorboard", "wandb": "wandb"}


def parse_report_to(value: Any, installed: bool = False) -> list[str]:
    """``none`` -> ``["none"]``; ``tensorboard``, ``wandb`` or ``tensorboard,wandb`` -> the list.

    With ``installed``, a tracker whose package does not import is refused too (before training,
    not after the first logging step).
    """
    import importlib.util

    names = [
        n.strip() for n in (",".join(value) if isinstance(value, list | tuple) else str(value)).split(",")
    ]
    names = [n for n in names if n]
    bad = [n for n in names if n not in REPORT_TO_CHOICES]
    if bad or not names or ("none" in names and len(names) > 1):
        raise UserError(f"--report_to must be none, tensorboard, wandb or tensorboard,wandb; got {value!r}")
    if installed:
        for name in names:
            package = REPORT_TO_CHOICES[name]
            missing = package == "tensorboard" and not any(
                importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")
            )
            missing = missing or (package == "wandb" and importlib.util.find_spec("wandb") is None)
            if missing:
                raise UserError(
                    f"--report_to {name}: the {package} package is not installed (pip install {package})"
                )
    return names


def _report_to_ok(value: Any) -> bool:
    try:
        parse_report_to(value)
    except UserError:
        return False
    return True


REPORT_TO = Rule("none, tensorboard, wandb or tensorboard,wandb", _report_to_ok)

FLAG_RULES: dict[str, Rule | str] = {
    # counts
    **dict.fromkeys(
        (
            "batch_size",
            "per_device_train_batch_size",
            "grad_accum",
            "gradient_accumulation_steps",
            "concurrency",
            "iterations",
            "cutoff",
            "limit",
            "max_new_tokens",
            "max_length",
            "max_seq_len",
            "seqlen",
            "max_chunks",
            "n_grid",
            "n_samples",
            "num",
            "nproc",
            "save_steps",
            "logging_steps",
            "num_masks",
            "num_prefix",
            "attempts",
            "review_attempts",
            "teacher_max_tokens",
            "student_max_tokens",
            "referee_max_tokens",
            "generator_max_tokens",
            "max_requests",
            "max_samples",
            "max_sample",
            "test_size",
            "lora_rank",
            "repeats",
            "num_runs",
            "threads",
            "seq",
            "batch",
            "resample",
            "max_groups",
            "source_max_len",
            "target_max_len",
            "gamma_batches",
            "pld_tokens",
            "group_size",
        ),
        COUNT,
    ),
    **dict.fromkeys(
        (
            "max_retries",
            "seed",
            "num_hard",
            "num_easy",
            "start_layer",
            "reserve_initials",
            "num_fewshot",
            "loss_steps",
            "warmup",
        ),
        NONNEG_INT,
    ),
    "max_steps": STEPS,
    **dict.fromkeys(
        ("epochs", "num_train_epochs", "learning_rate", "lr", "blr", "router_lr", "timeout"), POSITIVE
    ),
    **dict.fromkeys(("temperature", "weight_decay", "price_in", "price_out", "lambda_max"), NONNEG),
    **dict.fromkeys(
        (
            "warmup_ratio",
            "prefix_dropout",
            "eval_fraction",
            "max_failed_fraction",
            "rouge_threshold",
            "max_shrink",
        ),
        FRACTION,
    ),
    **dict.fromkeys(("top_p", "target"), PROBABILITY),
    "report_to": REPORT_TO,
    # paths a command writes
    **dict.fromkeys(("output", "out", "log_file", "dump_clip"), OUTPUT_FILE),
    **dict.fromkeys(("output_dir", "out_dir", "run_dir"), OUTPUT_DIR),
}


def parse_flags(argv: list[str]) -> dict[str, Any]:
    """``--name value`` / ``--name=value`` pairs of a command line, values parsed as fire parses them.

    A flag followed by another flag (or by nothing) is a boolean ``True``. Words after a lone
    ``--`` are fire's own flags and are left out.
    """
    from fire.parser import DefaultParseValue

    if "--" in argv:
        argv = argv[: argv.index("--")]
    flags: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        word = argv[i]
        i += 1
        if not word.startswith("--") or len(word) == 2:
            continue
        name, eq, value = word[2:].partition("=")
        name = name.replace("-", "_")
        if not eq:
            if i < len(argv) and not argv[i].startswith("--"):
                value, i = argv[i], i + 1
            else:
                flags[name] = True
                continue
        flags[name] = DefaultParseValue(value)
    return flags


def _writable_parent(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` if it is a folder we can write into, else None."""
    for parent in [path.parent, *path.parent.parents]:
        if parent.exists():
            return parent if parent.is_dir() and os.access(parent, os.W_OK | os.X_OK) else None
    return None


def check_output_path(path: str | os.PathLike, kind: str, flag: str = "output") -> Path:
    """Raise a UserError unless ``path`` can be written as ``kind`` (an output file or folder)."""
    p = Path(path).expanduser()
    if kind == OUTPUT_FILE and p.is_dir():
        raise UserError(f"--{flag} {p}: is a folder; give a file path")
    if kind == OUTPUT_DIR and p.exists() and not p.is_dir():
        raise UserError(f"--{flag} {p}: is a file; give a folder path")
    if p.exists():
        if not os.access(p, os.W_OK):
            raise UserError(f"--{flag} {p}: not writable")
    elif _writable_parent(p) is None:
        raise UserError(f"--{flag} {p}: cannot be created (no writable folder above it)")
    return p


def check_flag_values(argv: list[str], rules: dict[str, Rule | str] = FLAG_RULES) -> None:
    """Raise a UserError for the first flag on ``argv`` whose value breaks its rule in ``rules``."""
    for name, value in parse_flags(argv).items():
        rule = rules.get(name)
        if rule is None or value is None:
            continue
        if isinstance(rule, str):
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                raise UserError(f"--{name} needs a path, got {value!r}")
            check_output_path(str(value), rule, name)
        elif not rule.check(value):
            raise UserError(f"--{name} must be {rule.what}, got {value!r}")
