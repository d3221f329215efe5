"""Console scripts (fire): the Lion stages one by one, the whole loop, training and weight diffs.

API roles take ``--backend openai|tgi|hf|vllm --model NAME [--base_url URL] [--api_key KEY]
[--concurrency 16]``; ``openai`` reads ``OPENAI_API_KEY`` and, with ``--base_url``, talks to any
OpenAI-compatible server (vLLM, TGI). Every paid answer is cached in ``<output>.requests.jsonl``:
re-running a command after a crash sends only what is missing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from leanlm.core.console import entry, parse_bool
from leanlm.core.errors import UserError
from leanlm.core.generation import SamplingParams
from leanlm.core.records import read_records, write_jsonl
from leanlm.lion import discriminate as disc
from leanlm.lion import stages
from leanlm.lion.filters import ROUGE_THRESHOLD, RougeDeduper
from leanlm.lion.pools import load_pool, normalize_pool
from leanlm.lion.roles import RoleConfig, make_backend

log = logging.getLogger("leanlm.lion")


def _role(backend: str, model: str | None, base_url: str | None, api_key: str | None, concurrency: int,
          max_retries: int = 6, timeout: float = 120.0, batch_size: int = 8) -> RoleConfig:  # fmt: skip
    default_model = "gpt-3.5-turbo" if backend == "openai" and not base_url else "default"
    return RoleConfig(backend=backend, model=model or default_model, base_url=base_url, api_key=api_key,
                      concurrency=int(concurrency), max_retries=int(max_retries), timeout=float(timeout),
                      batch_size=int(batch_size))  # fmt: skip


def _cache(output: str | Path) -> Path:
    return Path(f"{output}.requests.jsonl")


def _answers(path: str, what: str) -> dict[str, dict]:
    recs = read_records(path)
    for i, r in enumerate(recs):
        if not isinstance(r.get("output"), str):
            raise UserError(f"{path}: record {i + 1} has no 'output' ({what} answers expected)")
    return {r["id"]: r for r in normalize_pool(recs, source=path)}


def _summary(report: stages.StageReport) -> dict[str, Any]:
    d = report.as_dict()
    log.info("%s: %d of %d ok, %d requests, %d retries, %d tokens, %.1f s", d["stage"], d["ok"], d["items"],
             d["requests"], d["retries"], d["prompt_tokens"] + d["completion_tokens"], d["seconds"])  # fmt: skip
    if d["failed_count"]:
        log.warning(
            "%s: %d not answered (re-run to retry): %s", d["stage"], d["failed_count"], d["failed"][:5]
        )
    return d


def teacher(
    pool: str,
    output: str,
    backend: str = "openai",
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    concurrency: int = 16,
    max_retries: int = 6,
    timeout: float = 120.0,
    max_new_tokens: int = 1024,
    temperature: float = 0.7,
    limit: int | None = None,
    max_failed_fraction: float = 0.0,
) -> dict[str, Any]:
    """Teacher answers for every instruction of POOL (.json/.jsonl or `instructions`) -> OUTPUT (JSONL)."""
    records = load_pool(pool, limit=limit)
    b = make_backend(_role(backend, model, base_url, api_key, concurrency, max_retries, timeout))
    params = SamplingParams(max_new_tokens=int(max_new_tokens), temperature=float(temperature))
    answers, report = stages.teacher_answers(
        records, b, _cache(output), params, max_failed_fraction=max_failed_fraction
    )
    write_jsonl(output, answers)
    return _summary(report)


def infer(
    pool: str,
    output: str,
    model: str = "default",
    backend: str = "hf",
    base_url: str | None = None,
    api_key: str | None = None,
    concurrency: int = 16,
    batch_size: int = 8,
    max_new_tokens: int = 1024,
    temperature: float = 0.7,
    limit: int | None = None,
    max_failed_fraction: float = 0.0,
) -> dict[str, Any]:
    """Student answers (### Instruction/### Response prompt) for POOL with MODEL -> OUTPUT (JSONL).

    backend: hf (in process), vllm (in process, if installed), or openai with --base_url (a vLLM server).
    """
    records = load_pool(pool, limit=limit)
    b = make_backend(_role(backend, model, base_url, api_key, concurrency, batch_size=batch_size))
    params = SamplingParams(max_new_tokens=int(max_new_tokens), temperature=float(temperature))
    answers, report = stages.student_answers(
        records, b, _cache(output), params, max_failed_fraction=max_failed_fraction
    )
    write_jsonl(output, answers)
    return _summary(report)


def referee(
    teacher: str,
    student: str,
    output: str,
    backend: str = "openai",
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    concurrency: int = 16,
    max_retries: int = 6,
    timeout: float = 120.0,
    attempts: int = 3,
    max_new_tokens: int = 512,
    temperature: float = 0.2,
    referee_format: str = "auto",
    max_failed_fraction: float = 0.0,
) -> dict[str, Any]:
    """Referee marks for TEACHER vs STUDENT answers (matched by id), in both orders -> OUTPUT (JSONL).

    Each output line: id, instruction, input, teacher_output, student_output, ts and st (the two
    (mark 1, mark 2) pairs, null when unparsable after ATTEMPTS tries). --referee_format forced (the
    default for local hf/vllm referees) pre-writes the first score line so a small model only continues it.
    """
    t, s = _answers(teacher, "teacher"), _answers(student, "student")
    items = [
        {**r, "teacher_output": r["output"], "student_output": s[k]["output"]} for k, r in t.items() if k in s
    ]
    if not items:
        raise UserError(f"{teacher} and {student} share no instruction ids")
    from leanlm.lion.iterate import referee_renderer

    role = _role(backend, model, base_url, api_key, concurrency, max_retries, timeout)
    render = referee_renderer(referee_format, role)
    b = make_backend(role)
    params = SamplingParams(max_new_tokens=int(max_new_tokens), temperature=float(temperature))
    scores, reviews, report = stages.referee_scores(items, b, _cache(output), params, attempts=int(attempts),
                                                    render=render, max_failed_fraction=max_failed_fraction)  # fmt: skip
    rows = []
    for it in items:
        sc = scores[it["id"]]
        rows.append({k: it[k] for k in ("id", "instruction", "input", "teacher_output", "student_output")}
                    | {"ts": sc["ts"], "st": sc["st"]})  # fmt: skip
    write_jsonl(output, rows)
    write_jsonl(f"{output}.reviews.jsonl", reviews)
    return _summary(report)


def discriminate(
    reviews: str, hard: str, easy: str, threshold: float = disc.HARD_THRESHOLD
) -> dict[str, Any]:
    """Split lion-referee's output into HARD (teacher - student >= THRESHOLD) and EASY (JSONL)."""
    rows = read_records(reviews)
    for i, r in enumerate(rows):
        if "ts" not in r or "st" not in r or "id" not in r:
            raise UserError(f"{reviews}: record {i + 1} lacks id/ts/st (is it lion-referee's output?)")
    scores = {r["id"]: {"ts": r["ts"], "st": r["st"]} for r in rows}
    d = disc.discriminate(rows, scores, float(threshold))
    write_jsonl(hard, d.hard)
    write_jsonl(easy, d.easy)
    summary = d.summary()
    log.info("discriminate: %s", summary)
    return summary


def generate(
    seeds: str,
    output: str,
    kind: str = "hard",
    num: int = 100,
    reference: str | list[str] | tuple[str, ...] | None = None,
    backend: str = "openai",
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    concurrency: int = 16,
    max_retries: int = 6,
    timeout: float = 120.0,
    max_new_tokens: int = 256,
    temperature: float = 1.0,
    rouge_threshold: float = ROUGE_THRESHOLD,
    max_requests: int | None = None,
    seed: int = 0,
    max_failed_fraction: float = 0.0,
) -> dict[str, Any]:
    """Up to NUM new KIND (hard|easy) instructions from SEEDS (lion-discriminate's output) -> OUTPUT.

    REFERENCE: pool file(s) (the cache pool, other generated files) a new instruction must not resemble
    (ROUGE-L > rouge_threshold is rejected); instructions accepted in this run are added as they come.
    """
    seed_records = read_records(seeds)
    if not seed_records:
        raise UserError(f"{seeds}: no seed instructions")
    seed_pool = normalize_pool(seed_records, source=seeds)
    refs: list[str] = []
    for path in [reference] if isinstance(reference, str) else list(reference or []):
        refs += [r["instruction"] for r in load_pool(path)]
    deduper = RougeDeduper(refs, float(rouge_threshold))
    b = make_backend(_role(backend, model, base_url, api_key, concurrency, max_retries, timeout))
    params = SamplingParams(max_new_tokens=int(max_new_tokens), temperature=float(temperature))
    accepted, report = stages.generate_instructions(kind, seed_pool, int(num), b, _cache(output), deduper, params,
                                                    seed=int(seed), max_requests=max_requests,
                                                    max_failed_fraction=max_failed_fraction)  # fmt: skip
    write_jsonl(output, accepted)
    return _summary(report)


def train(
    data: str,
    output_dir: str,
    model: str = "default",
    max_length: int = 1024,
    learning_rate: float | None = None,
    epochs: float | None = None,
    batch_size: int | None = None,
    grad_accum: int | None = None,
    max_steps: int | None = None,
    lr_scheduler_type: str | None = None,
    warmup_ratio: float | None = None,
    weight_decay: float | None = None,
    save_steps: int | None = None,
    logging_steps: int | None = None,
    gradient_checkpointing: bool | None = None,
    seed: int | None = None,
    report_to: str | None = None,
    deepspeed: str | None = None,
    fsdp: bool = False,
    nproc: int | None = None,
    resume: bool = True,
    extra: dict | None = None,
) -> dict[str, Any]:
    """Instruction-tune MODEL on DATA (records with instruction, input, output) -> OUTPUT_DIR.

    Defaults are the paper's: 3 epochs, lr 2e-5 cosine, warmup 3%, batch 2 x 8 accumulation per process,
    sequence 1024. --deepspeed zero2|zero2_offload|zero3|zero3_offload|<config.json> (CUDA); --fsdp (full
    shard, one unit per decoder layer, CPU processes too); --nproc N re-launches itself under torchrun (or
    run the command under torchrun yourself, several nodes too); --report_to tensorboard|wandb|none. Any
    other TrainingArguments field: --extra '{"tf32": true, "save_total_limit": 2}'.
    """
    from leanlm.core.distributed import maybe_launch
    from leanlm.lion.train import LION_RECIPE, train_student

    flags = LION_RECIPE.override(learning_rate=learning_rate, epochs=epochs, batch_size=batch_size,
                                 grad_accum=grad_accum, max_steps=max_steps, lr_scheduler_type=lr_scheduler_type,
                                 warmup_ratio=warmup_ratio, weight_decay=weight_decay, save_steps=save_steps,
                                 logging_steps=logging_steps, gradient_checkpointing=gradient_checkpointing,
                                 seed=seed, report_to=report_to, deepspeed=deepspeed, fsdp=fsdp, resume=resume)  # fmt: skip
    if extra is not None and not isinstance(extra, dict):
        raise UserError(f"--extra must be a JSON object of TrainingArguments fields, got {extra!r}")
    maybe_launch(nproc)
    records = read_records(data)
    metrics = train_student(model, records, output_dir, flags, max_length=max_length, **(extra or {}))
    log.info("trained: %s", metrics)
    return metrics


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


def iterate(
    train_pool: str,
    run_dir: str,
    cache_pool: str | None = None,
    pool_limit: int | None = None,
    iterations: int = 1,
    student: str = "default",
    backend: str = "openai",
    model: str | None = None,
    referee_model: str | None = None,
    generator_model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    concurrency: int = 16,
    max_retries: int = 6,
    timeout: float = 120.0,
    student_backend: str = "hf",
    student_base_url: str | None = None,
    num_hard: int = 3000,
    num_easy: int = 3000,
    threshold: float = disc.HARD_THRESHOLD,
    teacher_max_tokens: int = 1024,
    student_max_tokens: int = 1024,
    referee_max_tokens: int = 512,
    generator_max_tokens: int = 256,
    review_attempts: int = 3,
    referee_format: str = "auto",
    train: bool = True,
    epochs: float = 3,
    learning_rate: float = 2e-5,
    max_length: int = 1024,
    batch_size: int = 2,
    grad_accum: int = 8,
    max_steps: int | None = None,
    report_to: str | None = None,
    deepspeed: str | None = None,
    fsdp: bool = False,
    nproc: int | None = None,
    price_in: float = 0.0,
    price_out: float = 0.0,
    seed: int = 0,
    max_failed_fraction: float = 0.0,
) -> list[dict[str, Any]]:
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
    from leanlm.core.training import TrainFlags
    from leanlm.lion.iterate import IterateConfig, LionRun

    # the flags this command sets (the rest stay the recipe's in train_student); they enter the train
    # digest, so epochs stays a float as before (3.0, not 3: an unchanged run is not retrained)
    flags = TrainFlags(epochs=float(epochs), learning_rate=learning_rate, batch_size=batch_size, grad_accum=grad_accum,
                       max_steps=max_steps, report_to=report_to, deepspeed=deepspeed, fsdp=fsdp)  # fmt: skip

    role = _role(backend, model, base_url, api_key, concurrency, max_retries, timeout)
    cfg = IterateConfig(
        train_pool=str(train_pool),
        cache_pool=None if cache_pool is None else str(cache_pool),
        pool_limit=pool_limit,
        student=str(student),
        iterations=int(iterations),
        teacher=role,
        referee=RoleConfig(**{**role.__dict__, "model": referee_model}) if referee_model else None,
        generator=RoleConfig(**{**role.__dict__, "model": generator_model}) if generator_model else None,
        student_role=(
            None
            if student_backend == "hf"
            else RoleConfig(
                backend=student_backend, model=student, base_url=student_base_url, concurrency=concurrency
            )
        ),  # fmt: skip
        num_hard=int(num_hard),
        num_easy=int(num_easy),
        threshold=float(threshold),
        teacher_max_tokens=int(teacher_max_tokens),
        student_max_tokens=int(student_max_tokens),
        referee_max_tokens=int(referee_max_tokens),
        generator_max_tokens=int(generator_max_tokens),
        review_attempts=int(review_attempts),
        referee_format=str(referee_format),
        train=parse_bool(train, "--train"),
        train_options={**flags.argument_fields(), "max_length": max_length},
        deepspeed=flags.deepspeed,
        fsdp=flags.fsdp,
        nproc=nproc,
        price_in=float(price_in),
        price_out=float(price_out),
        seed=int(seed),
        max_failed_fraction=float(max_failed_fraction),
    )
    reports = LionRun(run_dir, cfg).run()
    for r in reports:
        log.info("iteration %d: hard %s easy %s, new %s + %s, API requests %d", r["iteration"], r["hard"], r["easy"],
                 r["new_hard"], r["new_easy"], r["api"]["requests"])  # fmt: skip
    return [{k: v for k, v in r.items() if k != "stages"} for r in reports]


teacher_main = entry(teacher, "lion-teacher")
infer_main = entry(infer, "lion-infer")
referee_main = entry(referee, "lion-referee")
discriminate_main = entry(discriminate, "lion-discriminate")
generate_main = entry(generate, "lion-generate")
train_main = entry(train, "lion-train")
iterate_main = entry(iterate, "lion-iterate")
weight_diff_main = entry(WeightDiff, "lion-weight-diff")
