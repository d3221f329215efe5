"""Discrimination: split the cache pool into hard and easy instructions from the referee's marks.

Each instruction is judged twice, with the answers in both orders, to cancel the referee's position
bias: review "ts" shows (teacher, student), review "st" shows (student, teacher). Then

    teacher_score = (ts[0] + st[1]) / 2
    student_score = (ts[1] + st[0]) / 2
    gap = teacher_score - student_score
    hard  <=>  gap >= threshold (1.0 in the paper: a difference of averaged 1-10 marks, not a ratio)

Instructions without a parsed mark in both orders are reported as unscored, never averaged in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

HARD_THRESHOLD = 1.0


@dataclass
class Discrimination:
    hard: list[dict[str, Any]] = field(default_factory=list)
    easy: list[dict[str, Any]] = field(default_factory=list)
    unscored: list[str] = field(default_factory=list)  # ids lacking a parsed mark in one order

    def summary(self) -> dict[str, Any]:
        scored = self.hard + self.easy
        n = len(scored)
        mean = lambda key: round(sum(r[key] for r in scored) / n, 4) if n else None  # noqa: E731
        return {
            "hard": len(self.hard),
            "easy": len(self.easy),
            "unscored": len(self.unscored),
            "mean_teacher_score": mean("teacher_score"),
            "mean_student_score": mean("student_score"),
            "mean_gap": mean("score_gap"),
        }


def pair_scores(ts: Sequence[float], st: Sequence[float]) -> tuple[float, float]:
    """(teacher_score, student_score) from the two reviews' (mark 1, mark 2) pairs."""
    return (ts[0] + st[1]) / 2.0, (ts[1] + st[0]) / 2.0


def discriminate(
    items: Sequence[Mapping[str, Any]],
    scores: Mapping[str, Mapping[str, Sequence[float] | None]],
    threshold: float = HARD_THRESHOLD,
) -> Discrimination:
    """Split ``items`` (id, instruction, input, teacher, student answers) by ``scores[id] = {"ts", "st"}``.

    Output rows carry ``id, instruction, input, teacher_output, student_output, teacher_score,
    student_score, score_gap`` and are sorted by (gap, teacher_score) descending, as in the original.
    """
    out = Discrimination()
    for item in items:
        s = scores.get(item["id"]) or {}
        ts, st = s.get("ts"), s.get("st")
        if ts is None or st is None:
            out.unscored.append(item["id"])
            continue
        teacher, student = pair_scores(ts, st)
        row = {
            "id": item["id"],
            "instruction": item["instruction"],
            "input": item.get("input", "") or "",
            "teacher_output": item.get("teacher_output", ""),
            "student_output": item.get("student_output", ""),
            "teacher_score": teacher,
            "student_score": student,
            "score_gap": teacher - student,
        }
        (out.hard if row["score_gap"] >= threshold else out.easy).append(row)
    key = lambda r: (r["score_gap"], r["teacher_score"])  # noqa: E731
    out.hard.sort(key=key, reverse=True)
    out.easy.sort(key=key, reverse=True)
    return out
