"""Filtering generated instructions: the original's rules, then ROUGE-L novelty against a pool.

Rules (as in the original post-processing): drop a generation that was cut off by the token limit,
mentions the word "instruction", has 3 words or fewer, starts with punctuation, or starts with a
non-ASCII character. Then drop it if its ROUGE-L F-measure (``rouge-score``'s tokenizer and LCS, no
stemming) with any instruction of the reference set (the cache pool plus everything accepted so far)
is above 0.7.

Tokens come from ``rouge_score.tokenize`` (lower case, alphanumeric runs, no stemming: exactly what
``RougeScorer(["rougeL"], use_stemmer=False)`` uses). The LCS is a rolling-row DP here rather than
``rouge_scorer._score_lcs``: importing ``rouge_scorer`` imports nltk, seconds of start-up for every
command; the tests check the scores against ``RougeScorer`` itself.

ROUGE-L F = 2 * LCS(a, b) / (|a| + |b|) and LCS(a, b) <= |bag(a) & bag(b)| (the multiset overlap), so
``2 * overlap / (|a| + |b|)`` bounds the score from above. The deduper computes the exact LCS only for
pool items whose bound can still beat the best score found so far (branch and bound): the same
decision and the same maximum as scoring every pair, at a fraction of the cost.
"""

from __future__ import annotations

import re
import string
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rouge_score import tokenize as rouge_tokenize

from leanlm.lion.prompts import GENERATOR_MARKERS

ROUGE_THRESHOLD = 0.7
_LEADING_LABEL = re.compile(r"^\s*(?:#?\s*new\s+task\s*#?\s*:|task\s*:)\s*", re.IGNORECASE)


def clean_generation(text: str) -> str:
    """The instruction inside a generator reply: markers, a leading label and wrapping quotes removed."""
    text = (text or "").strip()
    for marker in GENERATOR_MARKERS:
        if marker in text:  # an echoed prompt: keep what follows the last marker
            text = text.split(marker)[-1].lstrip(":").strip()
    text = _LEADING_LABEL.sub("", text).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def rule_rejection(text: str, truncated: bool = False) -> str | None:
    """Why the original's rules reject ``text`` (a short reason), or None if it passes."""
    if truncated:
        return "cut off by the token limit"
    if not text:
        return "empty"
    if re.search(r"instruction", text, re.IGNORECASE):
        return "mentions 'instruction'"
    if len(text.split()) <= 3:
        return "3 words or fewer"
    if text[0] in string.punctuation:
        return "starts with punctuation"
    if not text[0].isascii():
        return "starts with a non-ASCII character"
    return None


def rouge_tokens(text: str) -> list[str]:
    return rouge_tokenize.tokenize(text, None)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (O(|a|*|b|) time, O(|b|) memory)."""
    if len(b) > len(a):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


@dataclass
class Similarity:
    score: float  # max ROUGE-L F-measure over the reference set (0.0 when it is empty)
    most_similar: str | None


class RougeDeduper:
    """Max ROUGE-L F of a text against a growing reference set."""

    def __init__(self, texts: Iterable[str] = (), threshold: float = ROUGE_THRESHOLD):
        self.threshold = threshold
        self.texts: list[str] = []
        self._tokens: list[list[str]] = []
        self._index: dict[str, list[tuple[int, int]]] = defaultdict(list)  # token -> [(doc, count)]
        self.lcs_calls = 0  # exact LCS computations done (for the benchmark)
        for t in texts:
            self.add(t)

    def __len__(self) -> int:
        return len(self.texts)

    def add(self, text: str) -> None:
        doc = len(self.texts)
        tokens = rouge_tokens(text)
        self.texts.append(text)
        self._tokens.append(tokens)
        for tok, count in Counter(tokens).items():
            self._index[tok].append((doc, count))

    def similarity(self, text: str) -> Similarity:
        tokens = rouge_tokens(text)
        if not tokens:
            return Similarity(0.0, None)
        overlap: dict[int, int] = defaultdict(int)
        for tok, count in Counter(tokens).items():
            for doc, c in self._index.get(tok, ()):
                overlap[doc] += min(count, c)
        n = len(tokens)
        bounds = sorted(
            ((2.0 * ov / (n + len(self._tokens[doc])), doc) for doc, ov in overlap.items()), reverse=True
        )
        best, best_doc = 0.0, None
        for bound, doc in bounds:
            if bound <= best:
                break  # no remaining item can score higher
            self.lcs_calls += 1
            other = self._tokens[doc]
            f = 2.0 * lcs_length(other, tokens) / (len(other) + n)
            if f > best:
                best, best_doc = f, doc
        return Similarity(best, None if best_doc is None else self.texts[best_doc])

    def is_novel(self, text: str) -> tuple[bool, Similarity]:
        sim = self.similarity(text)
        return sim.score <= self.threshold, sim
