"""``lion-iterate``: the whole adversarial distillation loop, resumable, in one run directory.

One iteration i (pools from iteration i-1, or the initial ones):

1. teacher       teacher answers for train pool + cache pool (one cache file for the whole run)
2. train         student (from the base model) fine-tuned on the train pool answers -> iter_i/student
3. infer         student answers on the cache pool
4. referee       both-order reviews of teacher vs student answers on the cache pool
5. discriminate  hard (teacher - student >= 1.0) and easy instructions
6. generate_hard new instructions from hard seeds; 7. generate_easy from easy seeds; both rejected
                 when ROUGE-L > 0.7 against the cache pool and everything generated so far in the run
8. pools         train(i+1) = train(i) + new; cache(i+1) = new; the iteration report

Layout of ``run_dir``::

    state.json            config + finished stages + each stage's report
    teacher.jsonl         every teacher answer (cache keyed by the exact request)
    pools/train_1.jsonl   pools/cache_1.jsonl, then *_2.jsonl ...
    iter_1/ student/ student.jsonl referee.jsonl reviews.jsonl hard.jsonl easy.jsonl
            generate.jsonl new_hard.jsonl new_easy.jsonl report.json
    report.md             one row per finished iteration

A crash at any point is resumed by running the same command again: every stage, training and the
pool bookkeeping included, goes through ``replay.Iteration.stage``: finished stages are replayed from
their cache files (no request is sent twice) or, for training, kept; unfinished training resumes
from its checkpoint. The reports are ``report.py``'s.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leanlm.core.errors import UserError
from leanlm.core.generation import SamplingParams
from leanlm.core.records import read_jsonl, write_json, write_jsonl
from leanlm.lion.discriminate import HARD_THRESHOLD, Discrimination, discriminate
from leanlm.lion.filters import ROUGE_THRESHOLD, RougeDeduper
from leanlm.lion.pools import Record, load_pool, merge_pools, next_pools
from leanlm.lion.replay import Iteration, Step
from leanlm.lion.report import iteration_report, write_summary
from leanlm.lion.roles import LazyBackend, RoleConfig
from leanlm.lion.stages import (
    GENERATOR_PARAMS,
    REFEREE_PARAMS,
    STUDENT_PARAMS,
    TEACHER_PARAMS,
    generate_instructions,
    referee_renderer,
    referee_scores,
    student_answers,
    teacher_answers,
)
from leanlm.lion.state import RunState, digest

log = logging.getLogger(__name__)


@dataclass
class IterateConfig:
    """The typed settings of a run (``state.json`` keeps them, API keys left out: ``public()``)."""

    train_pool: str
    cache_pool: str | None = None  # default: the train pool (the paper starts both from Alpaca)
    pool_limit: int | None = None
    student: str = "default"
    iterations: int = 1
    teacher: RoleConfig = field(default_factory=RoleConfig)
    referee: RoleConfig | None = None  # default: the teacher's config
    generator: RoleConfig | None = None
    student_role: RoleConfig | None = None  # default: hf on the trained student folder
    num_hard: int = 3000
    num_easy: int = 3000
    threshold: float = HARD_THRESHOLD
    rouge_threshold: float = ROUGE_THRESHOLD
    teacher_max_tokens: int = TEACHER_PARAMS.max_new_tokens
    student_max_tokens: int = STUDENT_PARAMS.max_new_tokens
    referee_max_tokens: int = REFEREE_PARAMS.max_new_tokens
    generator_max_tokens: int = GENERATOR_PARAMS.max_new_tokens
    review_attempts: int = 3
    referee_format: str = "auto"  # review | forced | auto (forced for local hf/vllm referees)
    train: bool = True
    train_options: dict[str, Any] = field(default_factory=dict)  # TrainingArguments overrides + max_length
    deepspeed: str | None = None
    fsdp: bool = False
    nproc: int | None = None  # train the student on this many processes (a torchrun job)
    seed: int = 0
    price_in: float = 0.0  # USD per 1M prompt tokens (for the cost column)
    price_out: float = 0.0  # USD per 1M completion tokens
    max_failed_fraction: float = 0.0  # share of a stage's requests allowed to fail (0: any failure stops)

    def roles(self) -> dict[str, RoleConfig]:
        return {
            "teacher": self.teacher,
            "referee": self.referee or self.teacher,
            "generator": self.generator or self.teacher,
        }

    def public(self) -> dict[str, Any]:
        """JSON-able, without API keys (state files are shared)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for k in ("teacher", "referee", "generator", "student_role"):
            if d[k] is not None:
                d[k] = d[k].public()
        return d


class LionRun:
    """The loop over iterations in ``run_dir``; each stage of an iteration is one ``replay.Step``."""

    def __init__(self, run_dir: str | Path, config: IterateConfig):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.state = RunState.open(self.run_dir, config.public())
        self._backends: dict[tuple, LazyBackend] = {}

    def backend(self, role: str) -> LazyBackend:
        """The backend of an API role; roles with equal settings share one."""
        cfg = self.config.roles()[role]
        if cfg.key() not in self._backends:
            self._backends[cfg.key()] = LazyBackend(cfg)
        return self._backends[cfg.key()]

    def close(self) -> None:
        for b in self._backends.values():
            b.close()

    def pool_path(self, kind: str, i: int) -> Path:
        return self.run_dir / "pools" / f"{kind}_{i}.jsonl"

    def pools(self, i: int) -> tuple[list[Record], list[Record]]:
        """(train pool, cache pool) of iteration ``i``; the first ones are read from the config's files."""
        train_path, cache_path = self.pool_path("train", i), self.pool_path("cache", i)
        if i == 1 and not train_path.exists():
            c = self.config
            train = load_pool(c.train_pool, limit=c.pool_limit)
            cache = load_pool(c.cache_pool, limit=c.pool_limit) if c.cache_pool else train
            write_jsonl(cache_path, cache)
            write_jsonl(train_path, train)  # written last: its presence means both exist
        return read_jsonl(train_path), read_jsonl(cache_path)

    def generated_so_far(self, before: int) -> list[str]:
        """Every instruction generated in iterations 1 .. before - 1."""
        texts = []
        for j in range(1, before):
            for kind in ("hard", "easy"):
                p = self.run_dir / f"iter_{j}" / f"new_{kind}.jsonl"
                if p.exists():
                    texts += [r["instruction"] for r in read_jsonl(p)]
        return texts

    def sampling(self, max_new_tokens: int, temperature: float, **kw: Any) -> SamplingParams:
        return SamplingParams(
            max_new_tokens=max_new_tokens, temperature=temperature, seed=self.config.seed, **kw
        )

    # ------------------------------------------------------------------ one iteration
    def iteration(self, i: int) -> dict[str, Any]:
        """The eight stages of iteration ``i`` (see the module docstring); returns its report."""
        it = Iteration(self.state, i, self.run_dir / f"iter_{i}")
        train_pool, cache_pool = self.pools(i)
        if not cache_pool:
            raise UserError(
                f"iteration {i}: the cache pool is empty (the previous iteration generated nothing)"
            )
        teacher = {a["id"]: a for a in self.teacher_stage(it, train_pool, cache_pool)}
        train_records = [teacher[r["id"]] for r in train_pool if r["id"] in teacher]
        student_model, train_inputs = self.train_stage(it, train_records)
        student = {a["id"]: a for a in self.infer_stage(it, cache_pool, student_model, train_inputs)}
        items = [
            {**r, "teacher_output": teacher[r["id"]]["output"], "student_output": student[r["id"]]["output"]}
            for r in cache_pool
            if r["id"] in teacher and r["id"] in student
        ]
        scores = self.referee_stage(it, items)
        d = self.discriminate_stage(it, items, scores)
        new = self.generate_stages(it, cache_pool, d)
        next_train, next_cache = self.pools_stage(it, train_pool, new)
        pools = {"train": train_pool, "cache": cache_pool, "next_train": next_train, "next_cache": next_cache}
        stages = dict(self.state.reports.get(str(i), {}))
        report = iteration_report(i, stages, pools, self.config.price_in, self.config.price_out)
        write_json(it.dir / "report.json", report)
        return report

    def teacher_stage(
        self, it: Iteration, train_pool: list[Record], cache_pool: list[Record]
    ) -> list[Record]:
        """Teacher answers for train pool + cache pool; the train pool's also as Alpaca records
        (``teacher_data.jsonl``, for other tools such as BitDistiller's teacher data)."""
        c, cache = self.config, self.run_dir / "teacher.jsonl"
        asked = merge_pools(train_pool, cache_pool)
        params = self.sampling(c.teacher_max_tokens, 0.7)

        def run() -> tuple[list[Record], Any]:
            backend = self.backend("teacher")
            answers, report = teacher_answers(
                asked, backend, cache, params, max_failed_fraction=c.max_failed_fraction
            )
            by_id = {a["id"]: a for a in answers}
            write_jsonl(
                it.dir / "teacher_data.jsonl", [by_id[r["id"]] for r in train_pool if r["id"] in by_id]
            )
            return answers, report

        return it.stage(Step("teacher", digest(asked), run, cache=cache))

    def train_stage(self, it: Iteration, records: list[Record]) -> tuple[str, str]:
        """(the student model that answers next, the training's inputs digest).

        Training is the one stage no cache replays: once finished it is kept (``replay``), and a
        student trained on other inputs is set aside, never resumed.
        """
        c, student_dir = self.config, it.dir / "student"
        inputs = digest(records, c.student, c.train, c.train_options)
        if not c.train:
            step = Step(
                "train", inputs, lambda: (c.student, {"stage": "train", "skipped": True}), stale=[student_dir]
            )
            return it.stage(step), inputs

        def run() -> tuple[str, dict[str, Any]]:
            from leanlm.lion.train import train_student

            opts = dict(c.train_options)  # TrainingArguments fields, and the sequence length
            opts.setdefault("max_length", 1024)
            parallel = {"deepspeed": c.deepspeed, "fsdp": c.fsdp, "nproc": c.nproc}
            metrics = train_student(c.student, records, student_dir, seed=c.seed, **parallel, **opts)
            return str(student_dir), {"stage": "train", "examples": len(records), **metrics}

        step = Step("train", inputs, run, stale=[student_dir], replay=lambda: str(student_dir))
        return it.stage(step), inputs

    def infer_stage(
        self, it: Iteration, cache_pool: list[Record], student_model: str, train_inputs: str
    ) -> list:
        """Student answers on the cache pool; answers of another student are set aside."""
        c = self.config
        srole = c.student_role or RoleConfig(backend="hf", model=student_model)
        if c.student_role is not None and srole.backend in ("hf", "vllm"):
            srole = dataclasses.replace(srole, model=student_model)
        backend = LazyBackend(srole)
        params = self.sampling(c.student_max_tokens, 0.7)
        output = it.dir / "student.jsonl"

        def run() -> tuple[list[Record], Any]:
            return student_answers(
                cache_pool, backend, output, params, max_failed_fraction=c.max_failed_fraction
            )

        try:
            return it.stage(Step("infer", digest(train_inputs, cache_pool, srole.key()), run, stale=[output]))
        finally:
            backend.close()  # free the student before the referee loads anything

    def referee_stage(self, it: Iteration, items: list[Record]) -> dict[str, Any]:
        """Both-order marks for every item; the reviews go to ``reviews.jsonl``."""
        c, cache = self.config, it.dir / "referee.jsonl"
        params = self.sampling(c.referee_max_tokens, 0.2)

        def run() -> tuple[dict[str, Any], Any]:
            scores, reviews, report = referee_scores(
                items,
                self.backend("referee"),
                cache,
                params,
                attempts=c.review_attempts,
                render=referee_renderer(c.referee_format, c.roles()["referee"]),
                max_failed_fraction=c.max_failed_fraction,
            )
            write_jsonl(it.dir / "reviews.jsonl", reviews)
            return scores, report

        return it.stage(Step("referee", digest(items), run, cache=cache))

    def discriminate_stage(self, it: Iteration, items: list[Record], scores: dict) -> Discrimination:
        """Hard and easy instructions (teacher - student mark >= threshold) from the marks."""

        def run() -> tuple[Discrimination, dict[str, Any]]:
            d = discriminate(items, scores, self.config.threshold)
            write_jsonl(it.dir / "hard.jsonl", d.hard)
            write_jsonl(it.dir / "easy.jsonl", d.easy)
            return d, {"stage": "discriminate", **d.summary()}

        return it.stage(Step("discriminate", digest(items, scores, self.config.threshold), run))

    def generate_stages(self, it: Iteration, cache_pool: list[Record], d: Discrimination) -> dict[str, list]:
        """New hard and easy instructions, novel against the cache pool and everything generated so far."""
        c, cache = self.config, it.dir / "generate.jsonl"
        reference = [r["instruction"] for r in cache_pool] + self.generated_so_far(it.i)
        deduper = RougeDeduper(reference, c.rouge_threshold)
        params = self.sampling(c.generator_max_tokens, 1.0, top_p=1.0)
        new: dict[str, list[Record]] = {}
        for kind, seeds, num in (("hard", d.hard, c.num_hard), ("easy", d.easy, c.num_easy)):

            def run(kind: str = kind, seeds: list = seeds, num: int = num) -> tuple[list[Record], Any]:
                backend = self.backend("generator")
                limits = {"seed": c.seed + it.i, "max_failed_fraction": c.max_failed_fraction}
                accepted, report = generate_instructions(
                    kind, seeds, num, backend, cache, deduper, params, **limits
                )
                write_jsonl(it.dir / f"new_{kind}.jsonl", accepted)
                return accepted, report

            inputs = digest(kind, seeds, num, reference, c.seed)
            new[kind] = it.stage(Step(f"generate_{kind}", inputs, run, cache=cache))
        return new

    def pools_stage(self, it: Iteration, train_pool: list[Record], new: dict[str, list]) -> tuple[list, list]:
        """train(i+1) = train(i) + new, cache(i+1) = new; (re)written on every run, from the inputs."""
        next_train, next_cache = next_pools(train_pool, new["hard"], new["easy"])

        def run() -> tuple[tuple[list, list], dict[str, Any]]:
            write_jsonl(self.pool_path("cache", it.i + 1), next_cache)
            write_jsonl(self.pool_path("train", it.i + 1), next_train)
            report = {"stage": "pools", "next_train": len(next_train), "next_cache": len(next_cache)}
            return (next_train, next_cache), report

        return it.stage(Step("pools", digest(next_train, next_cache), run))

    def run(self) -> list[dict[str, Any]]:
        """Every iteration in order (finished ones replay for free); ``report.md`` after each."""
        reports = []
        try:
            for i in range(1, self.config.iterations + 1):
                log.info("lion: iteration %d of %d", i, self.config.iterations)
                reports.append(self.iteration(i))
                write_summary(self.run_dir, reports)
        finally:
            self.close()
        return reports


def iterate(run_dir: str | Path, config: IterateConfig) -> list[dict[str, Any]]:
    return LionRun(run_dir, config).run()
