"""Console scripts (fire): the Lion stages one by one, the whole loop, training and weight diffs.

Each command is ``config_command(Flags, run)``: its flags are the fields of a dataclass in
``leanlm.lion.options`` (typed before ``run`` sees them) and ``run`` calls the library with them.
Every command returns one dict (a stage's report, which fire prints), except lion-iterate (one
report per iteration) and lion-weight-diff (the folder written).

API roles take ``--backend openai|tgi|hf|vllm --model NAME [--base_url URL] [--api_key KEY]
[--concurrency 16]``; ``openai`` reads ``OPENAI_API_KEY`` and, with ``--base_url``, talks to any
OpenAI-compatible server (vLLM, TGI). Every paid answer is cached in ``<output>.requests.jsonl``:
re-running a command after a crash sends only what is missing.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from leanlm.core.config_cli import config_command
from leanlm.core.console import entry
from leanlm.core.errors import UserError
from leanlm.core.generation import SamplingParams
from leanlm.core.records import read_records, write_jsonl
from leanlm.lion import discriminate as disc
from leanlm.lion import stages
from leanlm.lion.filters import RougeDeduper
from leanlm.lion.iterate import IterateConfig, LionRun
from leanlm.lion.options import (
    DiscriminateOptions,
    GenerateOptions,
    InferOptions,
    IterateOptions,
    RefereeOptions,
    TeacherOptions,
    TrainOptions,
)
from leanlm.lion.pools import load_pool, normalize_pool
from leanlm.lion.roles import RoleConfig, make_backend

log = logging.getLogger("leanlm.lion")


def _cache(output: str | Path) -> Path:
    return Path(f"{output}.requests.jsonl")


def _answers(path: str, what: str) -> dict[str, dict]:
    recs = read_records(path)
    for i, r in enumerate(recs):
        if not isinstance(r.get("output"), str):
            raise UserError(f"{path}: record {i + 1} has no 'output' ({what} answers expected)")
    return {r["id"]: r for r in normalize_pool(recs, source=path)}


def _summary(report: stages.StageReport) -> dict[str, Any]:
    """The stage's report as the command's result, logged in one line (and the unanswered ids)."""
    d = report.as_dict()
    tokens = d["prompt_tokens"] + d["completion_tokens"]
    counts = (d["ok"], d["items"], d["requests"], d["retries"], tokens, d["seconds"])
    log.info("%s: %d of %d ok, %d requests, %d retries, %d tokens, %.1f s", d["stage"], *counts)
    if d["failed_count"]:
        log.warning(
            "%s: %d not answered (re-run to retry): %s", d["stage"], d["failed_count"], d["failed"][:5]
        )
    return d


def _pool_answers(
    f: TeacherOptions | InferOptions, answer: Callable[..., Any], role: RoleConfig
) -> dict[str, Any]:
    """``answer`` (the teacher's or the student's stage) for POOL with ``role`` -> OUTPUT."""
    records = load_pool(f.pool, limit=f.limit)
    params = SamplingParams(max_new_tokens=f.max_new_tokens, temperature=f.temperature)
    cache, fraction = _cache(f.output), f.max_failed_fraction
    answers, report = answer(records, make_backend(role), cache, params, max_failed_fraction=fraction)
    write_jsonl(f.output, answers)
    return _summary(report)


def run_teacher(f: TeacherOptions) -> dict[str, Any]:
    """Teacher answers for every instruction of POOL (.json/.jsonl or `instructions`) -> OUTPUT (JSONL)."""
    return _pool_answers(f, stages.teacher_answers, f.role())


def run_infer(f: InferOptions) -> dict[str, Any]:
    """Student answers (### Instruction/### Response prompt) for POOL with MODEL -> OUTPUT (JSONL).

    backend: hf (in process), vllm (in process, if installed), or openai with --base_url (a vLLM server).
    """
    return _pool_answers(f, stages.student_answers, f.role(batch_size=f.batch_size))


def run_referee(f: RefereeOptions) -> dict[str, Any]:
    """Referee marks for TEACHER vs STUDENT answers (matched by id), in both orders -> OUTPUT (JSONL).

    Each output line: id, instruction, input, teacher_output, student_output, ts and st (the two
    (mark 1, mark 2) pairs, null when unparsable after ATTEMPTS tries). --referee_format forced (the
    default for local hf/vllm referees) pre-writes the first score line so a small model only continues it.
    """
    t, s = _answers(f.teacher, "teacher"), _answers(f.student, "student")
    items = [
        {**r, "teacher_output": r["output"], "student_output": s[k]["output"]} for k, r in t.items() if k in s
    ]
    if not items:
        raise UserError(f"{f.teacher} and {f.student} share no instruction ids")
    role = f.role()
    render = stages.referee_renderer(f.referee_format, role)
    backend = make_backend(role)
    params = SamplingParams(max_new_tokens=f.max_new_tokens, temperature=f.temperature)
    scores, reviews, report = stages.referee_scores(
        items,
        backend,
        _cache(f.output),
        params,
        attempts=f.attempts,
        render=render,
        max_failed_fraction=f.max_failed_fraction,
    )
    keep = ("id", "instruction", "input", "teacher_output", "student_output")
    rows = [
        {k: it[k] for k in keep} | {"ts": scores[it["id"]]["ts"], "st": scores[it["id"]]["st"]}
        for it in items
    ]
    write_jsonl(f.output, rows)
    write_jsonl(f"{f.output}.reviews.jsonl", reviews)
    return _summary(report)


def run_discriminate(f: DiscriminateOptions) -> dict[str, Any]:
    """Split lion-referee's output into HARD (teacher - student >= THRESHOLD) and EASY (JSONL)."""
    rows = read_records(f.reviews)
    for i, r in enumerate(rows):
        if "ts" not in r or "st" not in r or "id" not in r:
            raise UserError(f"{f.reviews}: record {i + 1} lacks id/ts/st (is it lion-referee's output?)")
    scores = {r["id"]: {"ts": r["ts"], "st": r["st"]} for r in rows}
    d = disc.discriminate(rows, scores, f.threshold)
    write_jsonl(f.hard, d.hard)
    write_jsonl(f.easy, d.easy)
    summary = {"stage": "discriminate", **d.summary()}  # the report lion-iterate records for this stage
    log.info("discriminate: %s", summary)
    return summary


def run_generate(f: GenerateOptions) -> dict[str, Any]:
    """Up to NUM new KIND (hard|easy) instructions from SEEDS (lion-discriminate's output) -> OUTPUT.

    REFERENCE: pool file(s) (the cache pool, other generated files) a new instruction must not resemble
    (ROUGE-L > rouge_threshold is rejected); instructions accepted in this run are added as they come.
    """
    seed_records = read_records(f.seeds)
    if not seed_records:
        raise UserError(f"{f.seeds}: no seed instructions")
    seed_pool = normalize_pool(seed_records, source=f.seeds)
    refs: list[str] = []
    for path in [f.reference] if isinstance(f.reference, str) else list(f.reference or []):
        refs += [r["instruction"] for r in load_pool(path)]
    deduper = RougeDeduper(refs, f.rouge_threshold)
    backend = make_backend(f.role())
    params = SamplingParams(max_new_tokens=f.max_new_tokens, temperature=f.temperature)
    limits = {"max_requests": f.max_requests, "max_failed_fraction": f.max_failed_fraction}
    accepted, report = stages.generate_instructions(
        f.kind, seed_pool, f.num, backend, _cache(f.output), deduper, params, seed=f.seed, **limits
    )
    write_jsonl(f.output, accepted)
    return _summary(report)


def run_train(f: TrainOptions) -> dict[str, Any]:
    """Instruction-tune MODEL on DATA (records with instruction, input, output) -> OUTPUT_DIR.

    Defaults are the paper's: 3 epochs, lr 2e-5 cosine, warmup 3%, batch 2 x 8 accumulation per process,
    sequence 1024. --deepspeed zero2|zero2_offload|zero3|zero3_offload|<config.json> (CUDA); --fsdp (full
    shard, one unit per decoder layer, CPU processes too); --nproc N re-launches itself under torchrun (or
    run the command under torchrun yourself, several nodes too); --report_to tensorboard|wandb|none. Any
    other TrainingArguments field: --extra '{"tf32": true, "save_total_limit": 2}'.
    """
    from leanlm.core.distributed import maybe_launch
    from leanlm.lion.train import LION_RECIPE, train_student

    flags = f.train_flags(LION_RECIPE)
    if f.extra is not None and not isinstance(f.extra, dict):
        raise UserError(f"--extra must be a JSON object of TrainingArguments fields, got {f.extra!r}")
    maybe_launch(f.nproc)
    records = read_records(f.data)
    metrics = train_student(f.model, records, f.output_dir, flags, max_length=f.max_length, **(f.extra or {}))
    log.info("trained: %s", metrics)
    return {"stage": "train", "examples": len(records), **metrics}  # as lion-iterate records it


class WeightDiff:
    """Publish tuned weights as a diff from the base model (make) and add them back (recover)."""

    def make(self, path_raw: str, path_tuned: str, path_diff: str, dtype: str = "float16") -> str:
        """Write PATH_TUNED - PATH_RAW to PATH_DIFF (fp16 by default; a [PAD] token is added to the base if needed)."""
        from leanlm.lion.weight_diff import make_diff

        return str(make_diff(path_raw, path_tuned, path_diff, dtype))

    def recover(self, path_raw: str, path_diff: str, path_tuned: str, dtype: str = "float16") -> str:
        """Write PATH_RAW + PATH_DIFF to PATH_TUNED."""
        from leanlm.lion.weight_diff import recover

        recover(path_raw, path_diff, path_tuned, dtype)
        return path_tuned


def iterate_config(f: IterateOptions) -> IterateConfig:
    """The library's ``IterateConfig`` for lion-iterate's flags.

    Flags named like a config field are copied as they are; the role flags make the teacher (the
    referee and generator too, unless --referee_model/--generator_model name another model); the
    training flags go through ``TrainFlags`` (checked once) into ``train_options``.
    """
    train = f.train_flags()
    same = {x.name for x in dataclasses.fields(IterateConfig)} & {x.name for x in dataclasses.fields(f)}
    teacher = f.role()
    return IterateConfig(
        **{name: getattr(f, name) for name in same},
        teacher=teacher,
        referee=dataclasses.replace(teacher, model=f.referee_model) if f.referee_model else None,
        generator=dataclasses.replace(teacher, model=f.generator_model) if f.generator_model else None,
        student_role=f.student_role(),
        # they enter the train digest: epochs stays a float (3.0, not 3), so an unchanged run is not retrained
        train_options={**train.argument_fields(), "max_length": f.max_length},
    )


def run_iterate(f: IterateOptions) -> list[dict[str, Any]]:
    """The whole Lion loop for ITERATIONS rounds in RUN_DIR; re-run the same command to resume.

    The teacher API plays teacher, referee and generator (--referee_model/--generator_model to
    differ). The student is trained from STUDENT on the train pool each iteration and answers with
    --student_backend hf|vllm (in process) or openai --student_base_url (a server you restart on the
    new weights). --price_in/--price_out (USD per 1M tokens) fill the cost column of the report.
    A stage whose requests still fail after the retries stops the run (exit 2; re-run to resume)
    unless --max_failed_fraction allows that share to fail. --nproc N trains the student on N processes
    (a torchrun job per iteration; --fsdp shards it); the API stages stay in this process. --deepspeed
    (CUDA), --report_to tensorboard|wandb|none as in lion-train.
    """
    reports = LionRun(f.run_dir, iterate_config(f)).run()
    for r in reports:
        counts = (r["hard"], r["easy"], r["new_hard"], r["new_easy"], r["api"]["requests"])
        log.info("iteration %d: hard %s easy %s, new %s + %s, API requests %d", r["iteration"], *counts)
    return [{k: v for k, v in r.items() if k != "stages"} for r in reports]


teacher = config_command(TeacherOptions, run_teacher)
infer = config_command(InferOptions, run_infer)
referee = config_command(RefereeOptions, run_referee)
discriminate = config_command(DiscriminateOptions, run_discriminate)
generate = config_command(GenerateOptions, run_generate)
train = config_command(TrainOptions, run_train)
iterate = config_command(IterateOptions, run_iterate)

teacher_main = entry(teacher, "lion-teacher")
infer_main = entry(infer, "lion-infer")
referee_main = entry(referee, "lion-referee")
discriminate_main = entry(discriminate, "lion-discriminate")
generate_main = entry(generate, "lion-generate")
train_main = entry(train, "lion-train")
iterate_main = entry(iterate, "lion-iterate")
weight_diff_main = entry(WeightDiff, "lion-weight-diff")
