"""Brute-force reference implementations: slow, obviously right, for tests to compare fast paths to."""

from __future__ import annotations

from collections.abc import Iterable


def brute_force_max_rouge(text: str, references: Iterable[str]) -> float:
    """Reference implementation for tests: score every pair with ``rouge-score`` itself."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return max((scorer.score(r, text)["rougeL"].fmeasure for r in references), default=0.0)
