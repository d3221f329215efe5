"""``generate``: run requests through a backend with resumable JSONL output and a progress bar.

Resume rule: an id whose last record in ``output`` has ``ok: true`` is finished and is never sent
again (a paid request is never repeated); an id whose last record failed is retried, and its new
record is appended (the last line for an id wins when the file is read back).
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
) -> list[GenerationResult]:
    """Answer ``requests`` with ``backend``; return one result per request, in request order.

    With ``output`` (a ``.jsonl`` path) every result is appended as it arrives, finished ids are
    skipped on a re-run, and failed ones are retried. Without it nothing is written.
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
    if failed:
        where = f"; re-run to retry them (finished ids in {output} are skipped)" if output is not None else ""
        log.warning("%s: %d of %d requests failed%s", desc, failed, len(pending), where)
    return [results[r.id] for r in reqs]
