"""Instruction pools: loading, validation, stable ids and the per-iteration bookkeeping.

A pool is a list of ``{"id", "instruction", "input"}`` records (other fields are kept). It comes from
a ``.json``/``.jsonl`` file or an offline dataset name (``instructions``). Records without an ``id`` get
one from a hash of their text, so the same instruction has the same id in every pool and run.

Bookkeeping after iteration i (the paper's rule): train pool(i+1) = train pool(i) + new hard + new
easy instructions; cache pool(i+1) = the new instructions only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from leanlm.core.errors import RecordError, UserError

Record = dict[str, Any]


def text_id(*parts: str, prefix: str = "") -> str:
    """A short stable id for a piece of text (sha1 of the parts, separated by NUL)."""
    h = hashlib.sha1("\x00".join(parts).encode("utf-8")).hexdigest()[:16]
    return prefix + h


def messages_id(messages: Sequence[dict[str, str]]) -> str:
    return text_id(json.dumps(list(messages), sort_keys=True, ensure_ascii=False))


def _jsonl_line_numbers(path: Path) -> list[int]:
    with path.open("r", encoding="utf-8") as f:
        return [n for n, line in enumerate(f, start=1) if line.strip()]


def load_pool(source: str | Path, *, limit: int | None = None, seed: int | None = None) -> list[Record]:
    """Read and validate a pool; errors name the file and line. An empty pool is an error."""
    from leanlm.core.datasets import load_records

    path = Path(source)
    is_file = path.suffix in {".json", ".jsonl", ".ndjson"} or path.exists()
    if is_file and not path.exists():
        raise UserError(f"{path}: no such pool file")
    raw = load_records(str(source), limit=limit, seed=seed)
    lines = (
        _jsonl_line_numbers(path)
        if is_file and seed is None and path.suffix in {".jsonl", ".ndjson"}
        else None
    )
    pool = normalize_pool(raw, source=str(source), line_numbers=lines)
    if not pool:
        raise UserError(f"{source}: the pool is empty (no instructions to work on)")
    return pool


def normalize_pool(
    records: Iterable[Record], *, source: str = "pool", line_numbers: Sequence[int] | None = None
) -> list[Record]:
    """Check fields, fill ``input``/``id``, drop exact duplicates, reject conflicting ids."""
    out: dict[str, Record] = {}
    for i, rec in enumerate(records):
        line = line_numbers[i] if line_numbers is not None and i < len(line_numbers) else None
        where = f"record {i + 1}" if line is None else None
        instruction = rec.get("instruction")
        if not isinstance(instruction, str) or not instruction.strip():
            raise RecordError(source, line, f"{where + ': ' if where else ''}missing or empty 'instruction'")
        inp = rec.get("input") or ""
        if not isinstance(inp, str):
            raise RecordError(source, line, f"{where + ': ' if where else ''}'input' must be a string")
        rid = str(rec["id"]) if rec.get("id") is not None else text_id(instruction, inp, prefix="i")
        item = {**rec, "id": rid, "instruction": instruction.strip(), "input": inp}
        if rid in out:
            if (out[rid]["instruction"], out[rid]["input"]) != (item["instruction"], item["input"]):
                raise RecordError(source, line, f"id {rid!r} is used by two different instructions")
            continue
        out[rid] = item
    return list(out.values())


def merge_pools(*pools: Iterable[Record]) -> list[Record]:
    """Union by id, first occurrence wins, order kept."""
    seen: dict[str, Record] = {}
    for pool in pools:
        for rec in pool:
            seen.setdefault(rec["id"], rec)
    return list(seen.values())


def pool_entry(rec: Record) -> Record:
    """The fields a pool keeps for an instruction (answers and scores are stage outputs, not pool data)."""
    return {"id": rec["id"], "instruction": rec["instruction"], "input": rec.get("input", "") or ""}


def next_pools(train: Sequence[Record], new_hard: Sequence[Record], new_easy: Sequence[Record]):
    """(train pool, cache pool) for the next iteration."""
    new = merge_pools([pool_entry(r) for r in new_hard], [pool_entry(r) for r in new_easy])
    return merge_pools(train, new), new
