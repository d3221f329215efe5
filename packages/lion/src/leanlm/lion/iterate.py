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

A crash at any point is resumed by running the same command again: finished stages are skipped or
replayed from their cache files (no request is sent twice), training resumes from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leanlm.core.errors import UserError
from leanlm.core.generation import BackendStats, SamplingParams, usage_since
from leanlm.core.records import read_jsonl, write_json, write_jsonl, write_text
from leanlm.lion.discriminate import HARD_THRESHOLD, discriminate
from leanlm.lion.filters import ROUGE_THRESHOLD, RougeDeduper
from leanlm.lion.pools import load_pool, merge_pools, next_pools
from leanlm.lion.roles import RoleConfig, make_backend
from leanlm.lion.stages import (
    GENERATOR_PARAMS,
    REFEREE_PARAMS,
    STUDENT_PARAMS,
    TEACHER_PARAMS,
    StageReport,
    chat_renderer,
    generate_instructions,
    referee_scores,
    student_answers,
    teacher_answers,
)
from leanlm.lion.state import RunState, digest

log = logging.getLogger(__name__)

API_STAGES = ("teacher", "referee", "generate_hard", "generate_easy")


@dataclass
class IterateConfig:
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


def referee_renderer(fmt: str, role: RoleConfig) -> Any:
    """None (free review) or the chat renderer for the forced-format referee (see ``referee_scores``)."""
    if fmt not in ("auto", "review", "forced"):
        raise UserError(f"--referee_format must be auto, review or forced, got {fmt!r}")
    local = role.backend in ("hf", "transformers", "vllm")
    if fmt == "forced" and not local:
        raise UserError("--referee_format forced needs a local referee (--backend hf or vllm)")
    return chat_renderer(role.model) if (fmt == "forced" or (fmt == "auto" and local)) else None


class _Lazy:
    """A backend built on first use, so a fully cached (replayed) stage loads no model."""

    def __init__(self, cfg: RoleConfig):
        self.cfg, self._b = cfg, None
        self._stats = BackendStats()
        self.name = cfg.backend

    @property
    def stats(self) -> BackendStats:
        return self._b.stats if self._b is not None else self._stats

    def _backend(self) -> Any:
        if self._b is None:
            self._b = make_backend(self.cfg)
        return self._b

    def preflight(self) -> None:
        self._backend().preflight()

    def run(self, *args: Any, **kwargs: Any) -> None:
        return self._backend().run(*args, **kwargs)

    def close(self) -> None:
        if self._b is not None and hasattr(self._b, "close"):
            self._b.close()
        self._b = None


class Iteration:
    """Runs the stages of one iteration against a RunState."""

    def __init__(self, run: LionRun, i: int):
        self.run, self.i = run, i
        self.dir = run.run_dir / f"iter_{i}"
        self.dir.mkdir(parents=True, exist_ok=True)

    def redo_if_changed(self, name: str, inputs: str) -> bool:
        """Undo a finished stage whose inputs changed since it ran; True when it was undone."""
        if not self.run.state.inputs_changed(self.i, name, inputs):
            return False
        log.info("iteration %d: the inputs of %s changed since it ran; redoing it", self.i, name)
        self.run.state.undo(self.i, name)
        return True

    def stage(self, name: str, fn: Any, inputs: str, cache: Path | None = None) -> Any:
        """Run (or replay) a stage; record its first report and its inputs' digest in the state file.

        ``cache``: the stage's results file; the report's ``paid`` then counts the answers (and
        tokens) recorded there since the stage first started, over every attempt.
        """
        state = self.run.state
        self.redo_if_changed(name, inputs)
        if (state.report(self.i, name) or {}).get("failed_count"):  # finished with allowed failures:
            state.undo(self.i, name)  # ask the failed ones again and report afresh
        start = None
        if cache is not None and not state.is_done(self.i, name):
            start = state.cache_start(self.i, name, cache.stat().st_size if cache.exists() else 0)
        value, report = fn()
        if not state.is_done(self.i, name):
            report = report.as_dict() if isinstance(report, StageReport) else report
            if start is not None:
                report["paid"] = usage_since(cache, start)
            state.mark_done(self.i, name, report, inputs)
        return value

    def set_aside(self, path: Path) -> None:
        """Move ``path`` (a folder or file made from stale inputs) to ``<name>.stale``, replacing an older one."""
        if not path.exists():
            return
        stale = path.with_name(path.name + ".stale")
        if stale.is_dir():
            shutil.rmtree(stale)
        elif stale.exists():
            stale.unlink()
        path.rename(stale)


class LionRun:
    def __init__(self, run_dir: str | Path, config: IterateConfig):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.state = RunState.open(self.run_dir, config.public())
        self._backends: dict[tuple, _Lazy] = {}

    def backend(self, role: str) -> _Lazy:
        cfg = self.config.roles()[role]
        key = cfg.key()
        if key not in self._backends:
            self._backends[key] = _Lazy(cfg)
        return self._backends[key]

    def close(self) -> None:
        for b in self._backends.values():
            b.close()

    # ------------------------------------------------------------------ pools
    def pools(self, i: int) -> tuple[list[dict], list[dict]]:
        train_path, cache_path = (
            self.run_dir / "pools" / f"train_{i}.jsonl",
            self.run_dir / "pools" / f"cache_{i}.jsonl",
        )
        if i == 1 and not train_path.exists():
            c = self.config
            train = load_pool(c.train_pool, limit=c.pool_limit)
            cache = load_pool(c.cache_pool, limit=c.pool_limit) if c.cache_pool else train
            write_jsonl(cache_path, cache)
            write_jsonl(train_path, train)  # written last: its presence means both exist
        return read_jsonl(train_path), read_jsonl(cache_path)

    def generated_so_far(self, before: int) -> list[str]:
        texts = []
        for j in range(1, before):
            for kind in ("hard", "easy"):
                p = self.run_dir / f"iter_{j}" / f"new_{kind}.jsonl"
                if p.exists():
                    texts += [r["instruction"] for r in read_jsonl(p)]
        return texts

    # ------------------------------------------------------------------ one iteration
    def iteration(self, i: int) -> dict[str, Any]:
        c = self.config
        it = Iteration(self, i)
        train_pool, cache_pool = self.pools(i)
        if not cache_pool:
            raise UserError(
                f"iteration {i}: the cache pool is empty (the previous iteration generated nothing)"
            )

        teacher_params = SamplingParams(max_new_tokens=c.teacher_max_tokens, temperature=0.7, seed=c.seed)
        asked = merge_pools(train_pool, cache_pool)
        answers = it.stage(
            "teacher",
            lambda: teacher_answers(asked, self.backend("teacher"), self.run_dir / "teacher.jsonl", teacher_params,
                                    max_failed_fraction=c.max_failed_fraction),
            digest(asked), self.run_dir / "teacher.jsonl",
        )  # fmt: skip
        by_id = {a["id"]: a for a in answers}
        train_records = [by_id[r["id"]] for r in train_pool if r["id"] in by_id]
        # the teacher's answers as Alpaca records, for other tools (e.g. BitDistiller's teacher data)
        write_jsonl(it.dir / "teacher_data.jsonl", train_records)

        student_dir = it.dir / "student"
        train_inputs = digest(train_records, c.student, c.train, c.train_options)
        if it.redo_if_changed("train", train_inputs):
            it.set_aside(student_dir)  # its checkpoints were trained on other data: never resume them
        if c.train:
            if not self.state.is_done(i, "train"):
                from leanlm.lion.train import train_student

                opts = dict(c.train_options)
                max_length = int(opts.pop("max_length", 1024))
                metrics = train_student(c.student, train_records, student_dir, max_length=max_length,
                                        deepspeed=c.deepspeed, fsdp=c.fsdp, seed=c.seed, nproc=c.nproc,
                                        **opts)  # fmt: skip
                self.state.mark_done(
                    i, "train", {"stage": "train", "examples": len(train_records), **metrics}, train_inputs
                )
            student_model = str(student_dir)
        else:
            student_model = c.student
            if not self.state.is_done(i, "train"):
                self.state.mark_done(i, "train", {"stage": "train", "skipped": True}, train_inputs)

        srole = c.student_role or RoleConfig(backend="hf", model=student_model)
        if c.student_role is not None and srole.backend in ("hf", "vllm"):
            srole = dataclasses.replace(srole, model=student_model)
        student_backend = _Lazy(srole)
        student_params = SamplingParams(max_new_tokens=c.student_max_tokens, temperature=0.7, seed=c.seed)
        infer_inputs = digest(train_inputs, cache_pool, srole.key())
        if it.redo_if_changed("infer", infer_inputs):
            it.set_aside(it.dir / "student.jsonl")  # its answers came from another student model
        try:
            s_answers = it.stage(
                "infer",
                lambda: student_answers(
                    cache_pool,
                    student_backend,
                    it.dir / "student.jsonl",
                    student_params,
                    max_failed_fraction=c.max_failed_fraction,
                ),
                infer_inputs,
            )
        finally:
            student_backend.close()  # free the student before the referee loads anything
        s_by_id = {a["id"]: a for a in s_answers}

        items = [
            {**r, "teacher_output": by_id[r["id"]]["output"], "student_output": s_by_id[r["id"]]["output"]}
            for r in cache_pool
            if r["id"] in by_id and r["id"] in s_by_id
        ]
        ref_params = SamplingParams(max_new_tokens=c.referee_max_tokens, temperature=0.2, seed=c.seed)

        def referee() -> tuple[Any, StageReport]:
            scores, reviews, report = referee_scores(
                items,
                self.backend("referee"),
                it.dir / "referee.jsonl",
                ref_params,
                attempts=c.review_attempts,
                render=referee_renderer(c.referee_format, c.roles()["referee"]),
                max_failed_fraction=c.max_failed_fraction,
            )
            write_jsonl(it.dir / "reviews.jsonl", reviews)
            return scores, report

        scores = it.stage("referee", referee, digest(items), it.dir / "referee.jsonl")

        def disc() -> tuple[Any, dict[str, Any]]:
            d = discriminate(items, scores, c.threshold)
            write_jsonl(it.dir / "hard.jsonl", d.hard)
            write_jsonl(it.dir / "easy.jsonl", d.easy)
            return d, {"stage": "discriminate", **d.summary()}

        d = it.stage("discriminate", disc, digest(items, scores, c.threshold))

        deduper_seed = [r["instruction"] for r in cache_pool] + self.generated_so_far(i)
        deduper = RougeDeduper(deduper_seed, c.rouge_threshold)
        gen_params = SamplingParams(
            max_new_tokens=c.generator_max_tokens, temperature=1.0, top_p=1.0, seed=c.seed
        )
        new: dict[str, list[dict]] = {}
        for kind, seeds, num in (("hard", d.hard, c.num_hard), ("easy", d.easy, c.num_easy)):

            def gen(kind: str = kind, seeds: list = seeds, num: int = num) -> tuple[Any, StageReport]:
                accepted, report = generate_instructions(
                    kind, seeds, num, self.backend("generator"), it.dir / "generate.jsonl", deduper, gen_params,
                    seed=c.seed + i, max_failed_fraction=c.max_failed_fraction,
                )  # fmt: skip
                write_jsonl(it.dir / f"new_{kind}.jsonl", accepted)
                return accepted, report

            new[kind] = it.stage(f"generate_{kind}", gen, digest(kind, seeds, num, deduper_seed, c.seed),
                                 it.dir / "generate.jsonl")  # fmt: skip

        next_train, next_cache = next_pools(train_pool, new["hard"], new["easy"])
        pools_inputs = digest(next_train, next_cache)
        it.redo_if_changed("pools", pools_inputs)
        if not self.state.is_done(i, "pools"):
            write_jsonl(self.run_dir / "pools" / f"cache_{i + 1}.jsonl", next_cache)
            write_jsonl(self.run_dir / "pools" / f"train_{i + 1}.jsonl", next_train)
        report = self.iteration_report(i, train_pool, cache_pool, next_train, next_cache)
        write_json(it.dir / "report.json", report)
        if not self.state.is_done(i, "pools"):
            self.state.mark_done(i, "pools", {"stage": "pools", "next_train": len(next_train),
                                              "next_cache": len(next_cache)}, pools_inputs)  # fmt: skip
        return report

    # ------------------------------------------------------------------ reports
    def iteration_report(
        self, i: int, train: list, cache: list, next_train: list, next_cache: list
    ) -> dict[str, Any]:
        c = self.config
        stages = {k: v for k, v in self.state.reports.get(str(i), {}).items()}
        disc = stages.get("discriminate", {})
        api = {"requests": 0, "retries": 0, "prompt_tokens": 0, "completion_tokens": 0}
        for name in API_STAGES:
            stage = stages.get(name, {})
            paid = stage.get(
                "paid", {}
            )  # tokens over every attempt (a resumed stage's meter saw only the last)
            for key in api:
                api[key] += int(paid.get(key, stage.get(key, 0)) or 0)
        cost = (api["prompt_tokens"] * c.price_in + api["completion_tokens"] * c.price_out) / 1e6
        gh, ge = stages.get("generate_hard", {}), stages.get("generate_easy", {})
        return {
            "iteration": i,
            "train_pool": len(train),
            "cache_pool": len(cache),
            "teacher_answered": stages.get("teacher", {}).get("ok"),
            "teacher_failed": stages.get("teacher", {}).get("failed_count"),
            "student_answered": stages.get("infer", {}).get("ok"),
            "scored": stages.get("referee", {}).get("ok"),
            "unparsable_reviews": stages.get("referee", {}).get("extra", {}).get("unparsable_count"),
            "hard": disc.get("hard"),
            "easy": disc.get("easy"),
            "unscored": disc.get("unscored"),
            "mean_teacher_score": disc.get("mean_teacher_score"),
            "mean_student_score": disc.get("mean_student_score"),
            "new_hard": gh.get("ok"),
            "new_easy": ge.get("ok"),
            "rejected": {
                "hard": gh.get("extra", {}).get("rejected"),
                "easy": ge.get("extra", {}).get("rejected"),
            },
            "next_train_pool": len(next_train),
            "next_cache_pool": len(next_cache),
            "api": {**api, "cost_usd": round(cost, 6)},
            "train_loss": stages.get("train", {}).get("train_loss"),
            "seconds": {
                k: round(float(v.get("seconds", v.get("train_runtime", 0)) or 0), 2)
                for k, v in stages.items()
            },
            "stages": stages,
        }

    def write_summary(self, reports: list[dict[str, Any]]) -> Path:
        cols = ["iteration", "train_pool", "cache_pool", "hard", "easy", "mean_teacher_score", "mean_student_score",
                "new_hard", "new_easy", "unparsable_reviews"]  # fmt: skip
        lines = ["# Lion run report", "", "| " + " | ".join(cols) + " | requests | tokens | cost USD |",
                 "|" + "---|" * (len(cols) + 3)]  # fmt: skip
        for r in reports:
            a = r["api"]
            cells = [str(r.get(k)) for k in cols]
            lines.append("| " + " | ".join(cells) + f" | {a['requests']} | {a['prompt_tokens'] + a['completion_tokens']}"
                         f" | {a['cost_usd']:.4f} |")  # fmt: skip
        path = self.run_dir / "report.md"
        write_text(path, "\n".join(lines) + "\n")
        return path

    def run(self) -> list[dict[str, Any]]:
        reports = []
        try:
            for i in range(1, self.config.iterations + 1):
                log.info("lion: iteration %d of %d", i, self.config.iterations)
                reports.append(self.iteration(i))
                self.write_summary(reports)
        finally:
            self.close()
        return reports


def iterate(run_dir: str | Path, config: IterateConfig) -> list[dict[str, Any]]:
    return LionRun(run_dir, config).run()
