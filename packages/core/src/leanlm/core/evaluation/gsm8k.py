"""GSM8K: pull the final number out of a model's answer and score it against the reference.

Extraction order (the first rule that matches wins):

1. ``#### 18`` (the dataset's own answer marker; the last one if several);
2. ``the answer is 18`` / ``answer: 18`` (case-insensitive; the last such phrase);
3. the last number anywhere in the text.

Numbers are normalized: ``$``, thousands commas and a trailing period are dropped, ``18.00`` becomes
``18``, ``-0`` becomes ``0``. ``None`` when the text holds no number.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from leanlm.core.errors import UserError

# a number with optional sign, currency, thousands separators and decimals: -$1,234.50
_NUM = r"-?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\$?\s?\.\d+"
_MARKER = re.compile(r"####\s*(" + _NUM + r")")
_PHRASE = re.compile(r"(?:the\s+(?:final\s+)?answer\s+is|answer\s*:)\s*[:=]?\s*\**\s*(" + _NUM + r")", re.I)
_ANY = re.compile(_NUM)


def normalize_number(raw: str) -> str | None:
    """Canonical string of a number: ``"$1,234.50"`` -> ``"1234.5"``, ``"18.00"`` -> ``"18"``."""
    s = raw.strip().replace("$", "").replace(",", "").replace(" ", "").rstrip(".")
    if not s or s in {"-", "."}:
        return None
    neg = s.startswith("-")
    s = s.lstrip("-")
    if "." in s:
        whole, frac = s.split(".", 1)
        frac = frac.rstrip("0")
        s = f"{whole or '0'}.{frac}" if frac else (whole or "0")
    s = s.lstrip("0") or "0"
    if s.startswith("."):
        s = "0" + s
    return s if not neg or s == "0" else "-" + s


def extract_gsm8k_answer(text: str) -> str | None:
    """The final numeric answer in ``text`` as a normalized string, or ``None``."""
    if not text:
        return None
    for pattern in (_MARKER, _PHRASE):
        hits = pattern.findall(text)
        if hits:
            return normalize_number(hits[-1])
    hits = _ANY.findall(text)
    return normalize_number(hits[-1]) if hits else None


def gsm8k_accuracy(
    predictions: Mapping[str, str] | Sequence[str], records: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Exact-match accuracy of extracted answers against the records' ``answer`` field.

    ``predictions`` is either a dict ``id -> generated text`` (records missing from it count as
    wrong) or a list aligned with ``records``. Returns ``{"accuracy", "correct", "total",
    "missing", "per_id": {id: {"pred", "gold", "correct"}}}``.
    """
    if not records:
        raise UserError("gsm8k_accuracy: no records to score")
    if not isinstance(predictions, Mapping):
        if len(predictions) != len(records):
            raise UserError(
                f"gsm8k_accuracy: {len(predictions)} predictions for {len(records)} records (a list must align)"
            )
        predictions = {str(r["id"]): p for r, p in zip(records, predictions)}
    per_id: dict[str, dict[str, Any]] = {}
    correct = missing = 0
    for r in records:
        if "answer" not in r:
            raise UserError(f"gsm8k_accuracy: record {r.get('id')!r} has no 'answer' field")
        rid = str(r["id"])
        gold = normalize_number(str(r["answer"]))
        text = predictions.get(rid)
        missing += text is None
        pred = extract_gsm8k_answer(text) if text is not None else None
        ok = pred is not None and pred == gold
        correct += ok
        per_id[rid] = {"pred": pred, "gold": gold, "correct": ok}
    return {
        "accuracy": correct / len(records),
        "correct": correct,
        "total": len(records),
        "missing": missing,
        "per_id": per_id,
    }
