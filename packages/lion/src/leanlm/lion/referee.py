"""Reading the referee's two marks out of its free-text review.

The prompt asks for two closing lines ``Score of answer 1: <mark>`` / ``Score of answer 2: <mark>``.
Models drift from formats, so the parser accepts the usual variants (``Answer 2``, ``Assistant 1``,
``**8**``, ``8/10``, ``7.5``) anywhere in the review, taking the LAST mention of each (a review may
quote the format before using it). A review without both marks, or with a mark outside [1, 10], is
unparsable: ``None``, never a sentinel such as -1 that could be averaged in by mistake.
"""

from __future__ import annotations

import re

SCORE_MIN, SCORE_MAX = 1.0, 10.0

_NUMBER = r"(\d+(?:\.\d+)?)"
# "Score of answer 1: 8", "score for Assistant 2 - 7.5/10", "Answer 1 score: **9**"
_PATTERNS = [
    re.compile(
        r"score\s*(?:of|for)?\s*(?:the\s+)?(?:answer|assistant|response)?\s*#?\s*([12])\s*[*_]*\s*[:=\-]\s*[*_]*\s*"
        + _NUMBER
        + r"(?:\s*/\s*10)?",
        re.IGNORECASE,
    ),
    re.compile(
        r"(?:answer|assistant|response)\s*#?\s*([12])\s*(?:'s)?\s*score\s*[*_]*\s*[:=\-]\s*[*_]*\s*"
        + _NUMBER
        + r"(?:\s*/\s*10)?",
        re.IGNORECASE,
    ),
]


def parse_scores(review: str | None) -> tuple[float, float] | None:
    """``(mark of answer 1, mark of answer 2)`` or ``None`` when the review does not give both."""
    if not review:
        return None
    found: dict[str, tuple[int, float]] = {}
    for pattern in _PATTERNS:
        for m in pattern.finditer(review):
            which, value = m.group(1), float(m.group(2))
            if which not in found or m.start() > found[which][0]:
                found[which] = (m.start(), value)
    if "1" not in found or "2" not in found:
        return None
    s1, s2 = found["1"][1], found["2"][1]
    if not (SCORE_MIN <= s1 <= SCORE_MAX and SCORE_MIN <= s2 <= SCORE_MAX):
        return None
    return s1, s2
