"""The flags of the Lion console scripts: one dataclass per command, each flag stated once with its help.

``leanlm.core.config_cli.config_command(Flags, run)`` turns a class into its command: the fields are
the flags (typed: fire's strings are coerced before ``run`` sees them), fields without a default are
the positional arguments. Every command that talks to a model takes the role flags of ``RoleOptions``,
and ``RoleOptions.role()`` is the one mapping from them to a ``RoleConfig``.

Field order is the command line's. A dataclass lists its bases' fields first, from the last base to
the first, so a command names the class of its positional arguments last:
``TeacherOptions(RoleOptions, PoolIO)`` reads ``POOL OUTPUT``, the role flags, then its own flags.
A redeclared field (``InferOptions.backend``) keeps its place and takes the new default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from leanlm.core.config_cli import fields_for, flag
from leanlm.core.training import TrainFlags
from leanlm.lion.discriminate import HARD_THRESHOLD
from leanlm.lion.filters import ROUGE_THRESHOLD
from leanlm.lion.roles import RoleConfig

FAILED_HELP = "share of the requests allowed to fail after every retry (0: any failure stops, exit 2)"
TEMPERATURE_HELP = "sampling temperature (0: greedy)"
THRESHOLD_HELP = "hard when the teacher's mark minus the student's is at least this"
REFEREE_FORMAT_HELP = "review (free), forced (the score line pre-written) or auto (forced for hf/vllm)"


@dataclass
class RoleOptions:
    """Which model plays a role and how to reach it (the fields of ``RoleConfig``, by the same names)."""

    backend: str = flag("openai", "openai (OpenAI, or a compatible server with --base_url), tgi, hf or vllm")
    model: str | None = flag(None, "the model: a served name (OpenAI's default gpt-3.5-turbo) or a folder")
    base_url: str | None = flag(None, "an OpenAI-compatible server (vLLM, TGI): http://host:8000/v1")
    api_key: str | None = flag(None, "the API key (default $OPENAI_API_KEY; self-hosted servers need none)")
    concurrency: int = flag(16, "requests in flight at once")
    max_retries: int = flag(6, "retries of a request (429, 5xx, timeout) before it counts as failed")
    timeout: float = flag(120.0, "seconds to wait for one answer")

    def role(self, **extra: Any) -> RoleConfig:
        """The ``RoleConfig`` these flags name (``extra``: further fields, e.g. ``batch_size``).

        No ``--model``: gpt-3.5-turbo on OpenAI itself, else the server's or the embedded model.
        """
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(RoleOptions)}
        default_model = "gpt-3.5-turbo" if self.backend == "openai" and not self.base_url else "default"
        return RoleConfig(**values | {"model": self.model or default_model} | extra)


@dataclass
class PoolIO:
    pool: str = flag(help="the instructions: a .json/.jsonl file or a dataset name (instructions)")
    output: str = flag(help="the answers (JSONL); every request is cached in <output>.requests.jsonl")


@dataclass
class TeacherOptions(RoleOptions, PoolIO):
    max_new_tokens: int = flag(1024, "the longest answer, in tokens")
    temperature: float = flag(0.7, TEMPERATURE_HELP)
    limit: int | None = flag(None, "only the first LIMIT instructions")
    max_failed_fraction: float = flag(0.0, FAILED_HELP)


@dataclass
class InferOptions(RoleOptions, PoolIO):
    backend: str = flag("hf", "hf or vllm (in process), or openai with --base_url (a vLLM server)")
    model: str = flag("default", "the student: a model folder or name")
    batch_size: int = flag(8, "prompts per batch of an in-process backend")
    max_new_tokens: int = flag(1024, "the longest answer, in tokens")
    temperature: float = flag(0.7, TEMPERATURE_HELP)
    limit: int | None = flag(None, "only the first LIMIT instructions")
    max_failed_fraction: float = flag(0.0, FAILED_HELP)


@dataclass
class RefereeIO:
    teacher: str = flag(help="lion-teacher's answers (JSONL)")
    student: str = flag(help="lion-infer's answers (JSONL), matched to the teacher's by id")
    output: str = flag(help="the marks (JSONL); the reviews go to <output>.reviews.jsonl")


@dataclass
class RefereeOptions(RoleOptions, RefereeIO):
    attempts: int = flag(3, "tries of a review until both marks parse")
    max_new_tokens: int = flag(512, "the longest review, in tokens")
    temperature: float = flag(0.2, TEMPERATURE_HELP)
    referee_format: str = flag("auto", REFEREE_FORMAT_HELP)
    max_failed_fraction: float = flag(0.0, FAILED_HELP)


@dataclass
class DiscriminateOptions:
    reviews: str = flag(help="lion-referee's output (JSONL)")
    hard: str = flag(help="the hard instructions (JSONL)")
    easy: str = flag(help="the easy instructions (JSONL)")
    threshold: float = flag(HARD_THRESHOLD, THRESHOLD_HELP)


@dataclass
class GenerateIO:
    seeds: str = flag(help="the seed instructions: lion-discriminate's hard or easy output")
    output: str = flag(help="the new instructions (JSONL); requests cached in <output>.requests.jsonl")
    kind: str = flag("hard", "hard or easy: which generator brief")
    num: int = flag(100, "how many new instructions to accept")
    reference: str | list[str] | tuple[str, ...] | None = flag(None, "pool file(s) not to resemble (ROUGE-L)")


@dataclass
class GenerateOptions(RoleOptions, GenerateIO):
    max_new_tokens: int = flag(256, "the most tokens of a request (each is held to 4 per seed word)")
    temperature: float = flag(1.0, TEMPERATURE_HELP)
    rouge_threshold: float = flag(ROUGE_THRESHOLD, "reject an instruction with ROUGE-L above this")
    max_requests: int | None = flag(None, "stop after this many requests (default 3 * num + 16)")
    seed: int = flag(0, "seed of the order in which seed instructions are used, and of the sampling")
    max_failed_fraction: float = flag(0.0, FAILED_HELP)


@dataclass
class TrainOptions:
    """lion-train's flags; the training ones are ``TrainFlags``' by name, unset (None) = the recipe's."""

    data: str = flag(help="the training records: instruction, input, output (JSON/JSONL)")
    output_dir: str = flag(help="the trained student (model, tokenizer, checkpoints)")
    model: str = flag("default", "the base model: a name or folder")
    max_length: int = flag(1024, "tokens per example (prompt + answer)")
    learning_rate: float | None = flag(None, "peak learning rate")
    epochs: float | None = flag(None, "passes over the data")
    batch_size: int | None = flag(None, "examples per process and step")
    grad_accum: int | None = flag(None, "steps accumulated per optimizer update")
    max_steps: int | None = flag(None, "stop after this many optimizer updates")
    lr_scheduler_type: str | None = flag(None, "the learning rate schedule (TrainingArguments' name)")
    warmup_ratio: float | None = flag(None, "share of the updates spent warming up")
    weight_decay: float | None = flag(None, "AdamW weight decay")
    save_steps: int | None = flag(None, "a checkpoint every this many updates")
    logging_steps: int | None = flag(None, "log every this many updates")
    gradient_checkpointing: bool | None = flag(None, "recompute activations to save memory")
    seed: int | None = flag(None, "seed of the initialization and the data order")
    report_to: str | None = flag(None, "none, tensorboard, wandb or tensorboard,wandb")
    deepspeed: str | None = flag(None, "zero2, zero2_offload, zero3, zero3_offload or a config JSON (CUDA)")
    fsdp: bool = flag(False, "shard the model over the processes (one unit per decoder layer)")
    nproc: int | None = flag(None, "re-launch under torchrun with this many processes")
    resume: bool = flag(True, "continue from the newest checkpoint in OUTPUT_DIR")
    extra: dict | None = flag(None, "other TrainingArguments fields, a JSON object")

    def train_flags(self, recipe: TrainFlags) -> TrainFlags:
        """``recipe`` with the training flags given on the command line."""
        return recipe.override(**fields_for(self, TrainFlags))


@dataclass
class IterateIO:
    train_pool: str = flag(help="the first train pool: a .json/.jsonl file or a dataset name")
    run_dir: str = flag(help="the run's folder (state, caches, pools, students, reports)")


# the training flags lion-iterate takes (its --seed is the run's sampling seed, passed on separately)
ITERATE_TRAINING = (
    "epochs",
    "learning_rate",
    "batch_size",
    "grad_accum",
    "max_steps",
    "report_to",
    "deepspeed",
    "fsdp",
)


@dataclass
class IterateOptions(RoleOptions, IterateIO):
    """lion-iterate's flags; the role flags name the teacher (and the referee and generator by default)."""

    backend: str = flag("openai", "the teacher's (and referee's, generator's) backend: openai, tgi, hf, vllm")
    model: str | None = flag(None, "the teacher's model (also the referee's and generator's unless named)")
    cache_pool: str | None = flag(None, "the first cache pool (default: the train pool)")
    pool_limit: int | None = flag(None, "only the first POOL_LIMIT instructions of each pool file")
    iterations: int = flag(1, "rounds of the loop (raise it to continue a finished run)")
    student: str = flag("default", "the student's base model: a name or folder")
    referee_model: str | None = flag(None, "the referee's model (default: the teacher's)")
    generator_model: str | None = flag(None, "the generator's model (default: the teacher's)")
    student_backend: str = flag("hf", "the student answers with hf or vllm (in process) or openai")
    student_base_url: str | None = flag(None, "with --student_backend openai: the server of the new student")
    num_hard: int = flag(3000, "new hard instructions per iteration")
    num_easy: int = flag(3000, "new easy instructions per iteration")
    threshold: float = flag(HARD_THRESHOLD, THRESHOLD_HELP)
    teacher_max_tokens: int = flag(1024, "the longest teacher answer, in tokens")
    student_max_tokens: int = flag(1024, "the longest student answer, in tokens")
    referee_max_tokens: int = flag(512, "the longest review, in tokens")
    generator_max_tokens: int = flag(256, "the most tokens of a generator request")
    review_attempts: int = flag(3, "tries of a review until both marks parse")
    referee_format: str = flag("auto", REFEREE_FORMAT_HELP)
    train: bool = flag(True, "train the student each iteration (false: --student answers as it is)")
    epochs: float = flag(3.0, "passes over the train pool")
    learning_rate: float = flag(2e-5, "peak learning rate")
    max_length: int = flag(1024, "tokens per training example (prompt + answer)")
    batch_size: int = flag(2, "examples per process and step")
    grad_accum: int = flag(8, "steps accumulated per optimizer update")
    max_steps: int | None = flag(None, "stop training after this many optimizer updates")
    report_to: str | None = flag(None, "none, tensorboard, wandb or tensorboard,wandb")
    deepspeed: str | None = flag(None, "zero2, zero2_offload, zero3, zero3_offload or a config JSON (CUDA)")
    fsdp: bool = flag(False, "shard the student over the processes (with --nproc)")
    nproc: int | None = flag(None, "train each student as a torchrun job of this many processes")
    price_in: float = flag(0.0, "USD per 1M prompt tokens (the report's cost column)")
    price_out: float = flag(0.0, "USD per 1M completion tokens")
    seed: int = flag(0, "the sampling seed of every role")
    max_failed_fraction: float = flag(0.0, FAILED_HELP)

    def train_flags(self) -> TrainFlags:
        """The training flags this command sets (the rest stay the recipe's in ``train_student``)."""
        return TrainFlags(**{name: getattr(self, name) for name in ITERATE_TRAINING})

    def student_role(self) -> RoleConfig | None:
        """None: hf on the trained student's folder; else the student's backend (vllm, or a server)."""
        if self.student_backend == "hf":
            return None
        server = {"base_url": self.student_base_url, "concurrency": self.concurrency}
        return RoleConfig(backend=self.student_backend, model=self.student, **server)
