"""``generate``: run requests through a backend with resumable JSONL output and a progress bar.

Resume rule: an id whose last record in ``output`` has ``ok: true`` is finished and is never sent
again (a paid request is never repeated); an id whose last record failed is retried, and its new
record is appended (the last line for an id wins when the file is read back).

A run that lost requests is not a finished run: when more than ``max_failed_fraction`` (default 0)
of the requests still failed at the end, ``generate`` raises ``IncompleteGeneration`` (a
``UserError``: one line, exit 2) naming how many failed and how to resume, after every answer
has been written. Pipelines built on it therefore never mark a stage done on partial data.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

from leanlm.core.errors import UserError
from leanlm.core.generation.base import Backend
from leanlm.core.generation.types import GenerationRequest, GenerationResult, SamplingParams
from leanlm.core.records import ResumableJsonlWriter

log = logging.getLogger(__name__)


class IncompleteGeneration(UserError):
    """More requests failed than the caller allows; the answers that arrived are saved."""

    def __init__(self, message: str, failed: list[str]):
        super().__init__(message)
        self.failed = failed


def check_failures(
    results: Iterable[GenerationResult],
    max_failed_fraction: float,
    desc: str,
    output: str | os.PathLike | None = None,
) -> None:
    """Raise ``IncompleteGeneration`` when more than ``max_failed_fraction`` of ``results`` failed."""
    results = list(results)
    failed = [r for r in results if not r.ok]
    if not failed or len(failed) <= max_failed_fraction * len(results):
        return
    saved = (
        f"the {len(results) - len(failed)} answers are saved in {output}: re-run the same command to "
        "retry only the failed ones"
        if output is not None
        else "nothing was saved"
    )
    raise IncompleteGeneration(
        f"{desc}: {len(failed)} of {len(results)} requests failed (first error: {failed[0].error}); "
        f"{saved}, or pass --max_failed_fraction to accept some failures",
        [r.id for r in failed],
    )


def _coerce_requests(requests: Iterable[GenerationRequest | dict[str, Any]]) -> list[GenerationRequest]:
    out = [GenerationRequest.coerce(r) for r in requests]
    seen: set[str] = set()
    for r in out:
        if r.id in seen:
            raise UserError(
                f"duplicate request id {r.id!r}: ids must be unique (they key the resumable output)"
            )
        seen.add(r.id)
    return out


def _progress(total: int, initial: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="req", disable=not enabled, dynamic_ncols=True)


def generate(
    requests: Iterable[GenerationRequest | dict[str, Any]],
    backend: Backend,
    params: SamplingParams | None = None,
    output: str | os.PathLike | None = None,
    desc: str = "generate",
    progress: bool = True,
    max_failed_fraction: float | None = 0.0,
) -> list[GenerationResult]:
    """Answer ``requests`` with ``backend``; return one result per request, in request order.

    With ``output`` (a ``.jsonl`` path) every result is appended as it arrives, finished ids are
    skipped on a re-run, and failed ones are retried. Without it nothing is written.
    ``max_failed_fraction``: see the module docstring; None returns failed results to the caller
    (which then applies ``check_failures`` itself, e.g. after its own extra passes).
    """
    params = params or SamplingParams()
    reqs = _coerce_requests(requests)
    results: dict[str, GenerationResult] = {}
    writer = ResumableJsonlWriter(output) if output is not None else None
    try:
        if writer is not None:
            for r in reqs:
                record = writer.done.get(r.id)
                if record is not None and record.get("ok"):
                    results[r.id] = GenerationResult.from_record(record)
        pending = [r for r in reqs if r.id not in results]
        if writer is not None and results:
            log.info(
                "%s: %d of %d already done in %s, %d to go",
                desc,
                len(results),
                len(reqs),
                output,
                len(pending),
            )
        failed = 0
        if pending:
            backend.preflight()  # before the progress bar: an unreachable server is one line
        with _progress(len(reqs), len(results), desc, progress) as bar:

            def on_result(result: GenerationResult) -> None:
                nonlocal failed
                if writer is not None:
                    writer.write(result.to_record())
                results[result.id] = result
                failed += not result.ok
                bar.update(1)
                if failed:
                    bar.set_postfix(failed=failed, refresh=False)

            if pending:
                backend.run(pending, params, on_result)
    finally:
        if writer is not None:
            writer.close()
    missing = [r.id for r in reqs if r.id not in results]
    if missing:  # a backend bug, not a user error: every request must be answered or recorded failed
        raise RuntimeError(
            f"backend {backend.name!r} returned no result for {len(missing)} ids, e.g. {missing[0]!r}"
        )
    ordered = [results[r.id] for r in reqs]
    if max_failed_fraction is not None:
        check_failures(ordered, max_failed_fraction, desc, output)
    if failed:
        where = f"; re-run to retry them (finished ids in {output} are skipped)" if output is not None else ""
        log.warning("%s: %d of %d requests failed%s", desc, failed, len(pending), where)
    return ordered


def usage_since(output: str | os.PathLike, offset: int = 0) -> dict[str, int]:
    """Answers recorded in ``output`` after byte ``offset`` and the tokens they cost.

    A stage that notes the size of its results file before it starts can so count what it paid
    over every attempt, a killed one included: each finished request is a line, with its usage.
    """
    import json

    path = os.fspath(output)
    totals = {"answers": 0, "prompt_tokens": 0, "completion_tokens": 0}
    if not os.path.exists(path):
        return totals
    with open(path, "rb") as f:
        f.seek(offset)
        for line in f:
            if not line.endswith(b"\n"):
                break  # a torn last line was never a delivered answer
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            totals["answers"] += 1
            totals["prompt_tokens"] += int(record.get("prompt_tokens") or 0)
            totals["completion_tokens"] += int(record.get("completion_tokens") or 0)
    return totals
