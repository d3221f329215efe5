"""Shared test helpers (a unique module name: every package has a tests/ folder)."""

from __future__ import annotations


def make_pool(n: int, start: int = 0) -> list[dict]:
    """Distinct instructions; some with an input, to check it is carried through every stage."""
    topics = [
        "volcanoes",
        "tax law",
        "sorting",
        "poetry",
        "tides",
        "chess",
        "bread",
        "orbits",
        "vaccines",
        "jazz",
    ]
    pool = []
    for i in range(start, start + n):
        rec = {
            "instruction": f"Task {i}: explain {topics[i % len(topics)]} to a student in case {i * 37 % 101}."
        }
        if i % 4 == 0:
            rec["input"] = f"context number {i}"
        pool.append(rec)
    return pool
