"""The Lion stages on top of ``leanlm.core.generation``: every paid response is cached on disk.

Each stage sends ``GenerationRequest``s through ``generate(..., output=<jsonl>)``. Request ids are
derived from the exact messages sent (a hash), so a re-run, a resume after a crash or a later
iteration asking the same thing reads the cached answer instead of paying again, and a changed
prompt can never be answered from a stale cache line. Requests that still fail after the backend's
own retries get ``passes`` more tries, then are reported by id; they never silently vanish.

Each stage returns its outputs and a ``StageReport`` (requests, retries, tokens, seconds, failures).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from leanlm.core.errors import UserError
from leanlm.core.generation import (
    GenerationRequest,
    GenerationResult,
    SamplingParams,
    check_failures,
    generate,
)
from leanlm.core.records import ResumableJsonlWriter
from leanlm.lion.filters import RougeDeduper, Similarity, clean_generation, rule_rejection
from leanlm.lion.pools import Record, messages_id, text_id
from leanlm.lion.prompts import generator_messages, referee_messages, student_prompt, teacher_messages
from leanlm.lion.referee import parse_scores
from leanlm.lion.roles import RoleConfig

log = logging.getLogger(__name__)

# Sampling per role, as in the original: teacher 0.7 / 1024 tokens, referee 0.2 / 512, generator 1.0.
TEACHER_PARAMS = SamplingParams(max_new_tokens=1024, temperature=0.7, seed=0)
STUDENT_PARAMS = SamplingParams(max_new_tokens=1024, temperature=0.7, seed=0)
REFEREE_PARAMS = SamplingParams(max_new_tokens=512, temperature=0.2, seed=0)
GENERATOR_PARAMS = SamplingParams(max_new_tokens=256, temperature=1.0, top_p=1.0, seed=0)


@dataclass
class StageReport:
    stage: str
    items: int = 0
    ok: int = 0
    failed: list[str] = field(default_factory=list)  # ids still unanswered after every pass
    requests: int = 0  # requests sent by this call (0 when everything came from the cache)
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: int = 0  # answers read back from the cache file
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["failed_count"] = len(self.failed)
        d["failed"] = self.failed[:20]
        return d


class _Meter:
    """Counts one stage's share of a (possibly shared) backend's counters."""

    def __init__(self, backend: Any, report: StageReport):
        self.backend, self.report = backend, report
        self.before = dict(backend.stats.as_dict())
        self.t0 = time.perf_counter()

    def finish(self) -> StageReport:
        after = self.backend.stats.as_dict()
        for key in ("requests", "retries", "prompt_tokens", "completion_tokens"):
            setattr(self.report, key, getattr(self.report, key) + after[key] - self.before[key])
        self.report.seconds += time.perf_counter() - self.t0
        return self.report


def run_requests(
    requests: Sequence[GenerationRequest],
    backend: Any,
    params: SamplingParams,
    output: Path,
    desc: str,
    passes: int = 2,
    report: StageReport | None = None,
    max_failed_fraction: float = 0.0,
) -> dict[str, GenerationResult]:
    """``generate`` with a resumable cache file, re-asking failures up to ``passes`` times in total.

    Returns id -> result (failed results included, ``ok=False``). Raises ``IncompleteGeneration``
    (a UserError) when more than ``max_failed_fraction`` of the requests still failed.
    """
    results: dict[str, GenerationResult] = {}
    todo = list(requests)
    for p in range(max(1, passes)):
        if not todo:
            break
        if report is not None and p == 0:
            report.cached += len(_cached_ok(output) & {q.id for q in todo})
        got = generate(
            todo, backend, params, output=output, desc=desc, progress=False, max_failed_fraction=None
        )
        for r in got:
            results[r.id] = r
        todo = [q for q in todo if not results[q.id].ok]
    # a stage that lost requests stops here (nothing downstream trains on partial answers)
    check_failures(results.values(), max_failed_fraction, desc, output)
    return results


def _cached_ok(output: Path) -> set[str]:
    """Ids already answered in a cache file (opening it also cuts a torn last line from a crash)."""
    if not Path(output).exists():
        return set()
    with ResumableJsonlWriter(output) as w:
        return {k for k, v in w.done.items() if v.get("ok")}


# ------------------------------------------------------------------------------------ teacher / student


def teacher_answers(
    pool: Sequence[Record],
    backend: Any,
    output: Path,
    params: SamplingParams = TEACHER_PARAMS,
    passes: int = 2,
    max_failed_fraction: float = 0.0,
) -> tuple[list[Record], StageReport]:
    """Teacher answers for ``pool``: records ``{id, instruction, input, output}`` for the answered ones."""
    report = StageReport("teacher", items=len(pool))
    meter = _Meter(backend, report)
    reqs = []
    for rec in pool:
        msgs = teacher_messages(rec["instruction"], rec.get("input"))
        reqs.append(GenerationRequest(id=messages_id(msgs), messages=msgs, meta={"pool_id": rec["id"]}))
    results = run_requests(
        _unique(reqs), backend, params, output, "teacher", passes, report, max_failed_fraction
    )
    out = []
    for rec, q in zip(pool, reqs):
        r = results[q.id]
        if r.ok:
            out.append(_answer(rec, r.text.strip()))
        else:
            report.failed.append(rec["id"])
    report.ok = len(out)
    return out, meter.finish()


def student_answers(
    pool: Sequence[Record],
    backend: Any,
    output: Path,
    params: SamplingParams = STUDENT_PARAMS,
    passes: int = 2,
    max_failed_fraction: float = 0.0,
) -> tuple[list[Record], StageReport]:
    """Student answers in its ``### Instruction / ### Response`` format (plain prompt, no chat template)."""
    report = StageReport("infer", items=len(pool))
    meter = _Meter(backend, report)
    reqs = []
    for rec in pool:
        prompt = student_prompt(rec["instruction"], rec.get("input"))
        reqs.append(
            GenerationRequest(id=text_id(prompt, prefix="s"), prompt=prompt, meta={"pool_id": rec["id"]})
        )
    results = run_requests(
        _unique(reqs), backend, params, output, "student", passes, report, max_failed_fraction
    )
    out = []
    for rec, q in zip(pool, reqs):
        r = results[q.id]
        if r.ok:
            # a student that keeps writing past its answer starts a new "### Instruction:" block
            out.append(_answer(rec, r.text.split("### Instruction:")[0].strip()))
        else:
            report.failed.append(rec["id"])
    report.ok = len(out)
    return out, meter.finish()


def _answer(rec: Record, text: str) -> Record:
    """An answered pool record: ``{id, instruction, input, output}``."""
    return {"id": rec["id"], "instruction": rec["instruction"], "input": rec.get("input", ""), "output": text}


def _unique(reqs: Sequence[GenerationRequest]) -> list[GenerationRequest]:
    """The same question asked twice (duplicate instructions) is sent once."""
    seen: dict[str, GenerationRequest] = {}
    for q in reqs:
        seen.setdefault(q.id, q)
    return list(seen.values())


# ------------------------------------------------------------------------------------ referee

ORDERS = ("ts", "st")  # ts: (teacher, student) shown as answers 1, 2; st: swapped
FORCED_PREFIX = "Reasons: (not asked).\nScore of answer 1:"


def chat_renderer(model: str) -> Callable[[list[dict[str, str]]], str]:
    """The raw prompt a local chat model sees for ``messages`` (its tokenizer's chat template)."""
    from leanlm.core.models import load_tokenizer

    tok = load_tokenizer(model)
    if not getattr(tok, "chat_template", None):
        raise UserError(f"{model}: the tokenizer has no chat template; use --referee_format review")
    return lambda msgs: tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


def referee_renderer(fmt: str, role: RoleConfig) -> Callable[[list[dict[str, str]]], str] | None:
    """None (a free review) or the chat renderer of the forced-format referee (see ``referee_scores``).

    ``fmt``: review, forced (local hf/vllm referees only) or auto (forced for a local referee).
    """
    if fmt not in ("auto", "review", "forced"):
        raise UserError(f"--referee_format must be auto, review or forced, got {fmt!r}")
    local = role.backend in ("hf", "transformers", "vllm")
    if fmt == "forced" and not local:
        raise UserError("--referee_format forced needs a local referee (--backend hf or vllm)")
    return chat_renderer(role.model) if (fmt == "forced" or (fmt == "auto" and local)) else None


def referee_scores(
    items: Sequence[Record],
    backend: Any,
    output: Path,
    params: SamplingParams = REFEREE_PARAMS,
    attempts: int = 3,
    passes: int = 2,
    max_failed_fraction: float = 0.0,
    render: Callable[[list[dict[str, str]]], str] | None = None,
) -> tuple[dict[str, dict[str, tuple[float, float] | None]], list[Record], StageReport]:
    """Both-order reviews of (teacher_output, student_output) for every item.

    An unparsable review is asked again (a new request id per attempt, sampling at temperature >= 0.7
    with a new seed so that a deterministic referee can answer differently), up to ``attempts`` in all.
    Returns ``scores[id] = {"ts": (m1, m2) | None, "st": ...}``, the review records, and the report
    (``extra.unparsable`` lists the (id, order) pairs that never parsed).

    ``render`` (for small local referees that do not keep to formats): turns the chat into the model's
    raw prompt; the request then ends with the first closing line ``Score of answer 1:`` already
    written, so the model only has to continue the format (reasons are skipped).
    """
    report = StageReport("referee", items=len(items))
    meter = _Meter(backend, report)
    scores: dict[str, dict[str, tuple[float, float] | None]] = {
        it["id"]: {"ts": None, "st": None} for it in items
    }
    reviews: list[Record] = []
    pending = [(it, order) for it in items for order in ORDERS]
    retried = 0
    for attempt in range(max(1, attempts)):
        if not pending:
            break
        p = params if attempt == 0 else _resample(params, attempt)
        reqs = {}
        for it, order in pending:
            a1, a2 = (it["teacher_output"], it["student_output"])[:: 1 if order == "ts" else -1]
            msgs = referee_messages(it["instruction"], it.get("input"), a1, a2)
            rid = f"{it['id']}:{order}:{attempt}:{messages_id(msgs)[:10]}"
            if render is None:
                reqs[(it["id"], order)] = GenerationRequest(id=rid, messages=msgs)
            else:
                prompt = render(msgs) + FORCED_PREFIX
                reqs[(it["id"], order)] = GenerationRequest(id=rid + ":f", prompt=prompt)
        results = run_requests(
            list(reqs.values()), backend, p, output, f"referee#{attempt}", passes, report, max_failed_fraction
        )
        still = []
        for it, order in pending:
            r = results[reqs[(it["id"], order)].id]
            text = r.text if render is None else FORCED_PREFIX + r.text
            parsed = parse_scores(text) if r.ok else None
            review = {"id": it["id"], "order": order, "attempt": attempt, "ok": r.ok, "scores": parsed}
            reviews.append(review | {"review": text, "error": r.error})
            if parsed is None:
                still.append((it, order))
            else:
                scores[it["id"]][order] = parsed
        if attempt > 0:
            retried += len(pending)
        pending = still
    unparsable = [f"{it['id']}:{order}" for it, order in pending]
    report.ok = sum(1 for s in scores.values() if s["ts"] is not None and s["st"] is not None)
    report.failed = unparsable
    report.extra = {
        "review_retries": retried,
        "unparsable": unparsable[:50],
        "unparsable_count": len(unparsable),
    }
    if unparsable:
        log.warning("referee: %d reviews stayed unparsable after %d attempts", len(unparsable), attempts)
    return scores, reviews, meter.finish()


def _resample(params: SamplingParams, attempt: int) -> SamplingParams:
    """A retry's sampling: at least temperature 0.7 and a new seed, so a deterministic referee can differ."""
    return dataclasses.replace(params, temperature=max(params.temperature, 0.7), seed=params.seed + attempt)


# ------------------------------------------------------------------------------------ generation


def token_budget(seed_instruction: str, factor: int = 4, floor: int = 16) -> int:
    """The original's per-request limit: 4 tokens per word of the seed (with a small floor)."""
    return max(floor, factor * len(seed_instruction.split()))


def generate_instructions(
    kind: str,
    seeds: Sequence[Record],
    num: int,
    backend: Any,
    output: Path,
    deduper: RougeDeduper,
    params: SamplingParams = GENERATOR_PARAMS,
    seed: int = 0,
    max_requests: int | None = None,
    passes: int = 2,
    max_failed_fraction: float = 0.0,
    on_round: Callable[[int, int], None] | None = None,
) -> tuple[list[Record], StageReport]:
    """Up to ``num`` new ``kind`` (hard|easy) instructions, one seed per request.

    Requests are numbered k = 0, 1, ...; request k uses seed ``order[k % len(seeds)]`` of a seeded
    shuffle (uniform over seeds, as the original's sampling, but without repeats until all were used).
    Requests go out in rounds sized by the acceptance rate so far; each round's answers are filtered in
    k order (rules, then ROUGE-L against ``deduper``, to which accepted instructions are added), so the
    result depends only on the cached answers: a resumed run ends exactly as an uninterrupted one.
    Stops at ``num`` accepted or ``max_requests`` sent (default 3 * num + 16).
    """
    if kind not in ("hard", "easy"):
        raise UserError(f"--kind must be hard or easy, got {kind!r}")
    report = StageReport(f"generate_{kind}", items=num)
    meter = _Meter(backend, report)
    accepted: list[Record] = []
    reasons: Counter[str] = Counter()
    if not seeds or num <= 0:
        report.extra = {"note": "no seed instructions" if not seeds else "nothing asked", "rejected": {}}
        return accepted, meter.finish()
    order = list(range(len(seeds)))
    random.Random(f"{seed}:{kind}").shuffle(order)
    limit = max_requests if max_requests is not None else 3 * num + 16
    k = rounds = 0
    while len(accepted) < num and k < limit:
        size = _round_size(num - len(accepted), len(accepted), k, limit)
        batch = _round_requests(kind, seeds, order, k, size)
        budget = max(token_budget(s["instruction"]) for _, s in batch)
        p = dataclasses.replace(params, max_new_tokens=min(budget, params.max_new_tokens))
        requests = [q for q, _ in batch]
        results = run_requests(
            requests, backend, p, output, report.stage, passes, report, max_failed_fraction
        )
        for q, s in batch:
            if len(accepted) >= num:
                break
            r = results[q.id]
            if not r.ok:
                report.failed.append(q.id)
            text, why, sim = _judge(r, s, deduper)
            if why is not None:
                reasons[why] += 1
                continue
            deduper.add(text)
            accepted.append(_new_instruction(kind, text, s, sim))
        k += size
        rounds += 1
        if on_round:
            on_round(rounds, len(accepted))
    report.ok = len(accepted)
    report.extra = {
        "rounds": rounds,
        "requests_planned": k,
        "rejected": dict(reasons),
        "acceptance": round(len(accepted) / k, 4) if k else None,
    }
    return accepted, meter.finish()


def _round_size(need: int, accepted: int, sent: int, limit: int) -> int:
    """Requests for the next round: ``need / rate`` at the acceptance rate so far, within ``limit``."""
    rate = max(0.25, accepted / sent) if sent else 1.0  # the floor keeps a bad start from a huge round
    return min(limit - sent, max(1, math.ceil(need / rate)))


def _round_requests(
    kind: str, seeds: Sequence[Record], order: Sequence[int], start: int, size: int
) -> list[tuple[GenerationRequest, Record]]:
    """Requests ``start .. start + size - 1`` with their seeds: request j uses ``seeds[order[j % n]]``."""
    batch = []
    for j in range(start, start + size):
        s = seeds[order[j % len(seeds)]]
        msgs = generator_messages(kind, s["instruction"])
        batch.append((GenerationRequest(id=f"{kind}-{j:06d}-{messages_id(msgs)[:10]}", messages=msgs), s))
    return batch


def _judge(
    r: GenerationResult, seed: Record, deduper: RougeDeduper
) -> tuple[str, str | None, Similarity | None]:
    """(the cleaned instruction, why it is rejected or None, its similarity to the reference set)."""
    if not r.ok:
        return "", "request failed", None
    text = clean_generation(r.text)
    why = rule_rejection(text, _truncated(r, token_budget(seed["instruction"])))
    if why is not None:
        return text, why, None
    novel, sim = deduper.is_novel(text)
    return text, None if novel else "ROUGE-L > 0.7", sim


def _new_instruction(kind: str, text: str, seed: Record, sim: Similarity) -> Record:
    """An accepted instruction, with its seed and its nearest reference (for the report)."""
    return {
        "id": text_id(text, "", prefix="g"),
        "instruction": text,
        "input": "",
        "kind": kind,
        "seed_id": seed["id"],
        "seed_instruction": seed["instruction"],
        "seed_output": seed.get("teacher_output", seed.get("output", "")),
        "rouge_max": round(sim.score, 4),
        "most_similar": sim.most_similar,
    }


def _truncated(r: GenerationResult, budget: int) -> bool:
    """Would the answer have been cut at its own budget? (The round's limit is the largest budget.)

    More tokens than the budget: cut. Exactly the budget: cut unless the server said it stopped.
    """
    reason = r.meta.get("finish_reason")
    if reason == "length":
        return True
    if r.completion_tokens is None:
        return False
    return r.completion_tokens > budget or (r.completion_tokens == budget and reason != "stop")
