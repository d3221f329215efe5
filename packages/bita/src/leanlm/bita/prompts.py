"""Self-distillation data for BiTA: prompts in the base model's template, then its greedy answers.

``make_prompts``: instruction records -> ``{"id", "prompt", "instruction", "input", "template",
"template_tag"}``; ``full`` keeps the template's system prompt, ``short`` drops it where the
template allows (the original's "prompt" vs "prompt2" files).

``generate_outputs``: the prompts through a ``leanlm.core.generation`` backend (greedy), into ONE
resumable JSONL (one line per answer; a re-run skips finished ids and retries failed ones).
``training_records`` turns that file (or any ``{"prompt", "output"}`` JSONL) into training pairs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from leanlm.core.errors import UserError

STYLES = ("full", "short")


def instruction_of(record: dict[str, Any]) -> tuple[str, str]:
    """(instruction, input) from the record shapes of ``leanlm.core.datasets`` and Spec-Bench."""
    if isinstance(record.get("turns"), list) and record["turns"]:
        return str(record["turns"][0]), ""
    for key in ("instruction", "question", "prompt", "text"):
        value = record.get(key)
        if isinstance(value, str) and value.strip():
            return value, str(record.get("input") or "")
    raise UserError(
        f"record {record.get('id', '?')!r} has no instruction, question, prompt, text or turns field"
    )


def make_prompts(
    records: list[dict[str, Any]], tokenizer: Any, template: str, style: str = "full"
) -> list[dict[str, Any]]:
    from leanlm.core.templates import format_prompt

    if style not in STYLES:
        raise UserError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
    out = []
    for i, r in enumerate(records):
        instruction, extra = instruction_of(r)
        system = None if style == "full" else ""
        prompt = format_prompt(template, instruction, extra or None, system=system, tokenizer=tokenizer)
        rid = str(r.get("id", r.get("question_id", i)))
        out.append(
            {
                "id": f"{rid}-{style}",
                "prompt": prompt,
                "instruction": instruction,
                "input": extra,
                "template": template,
                "template_tag": style,
            }
        )
    return out


def generate_outputs(
    prompts: list[dict[str, Any]],
    output: str | Path,
    backend: Any,
    max_new_tokens: int = 512,
    stop: list[str] | None = None,
    max_failed_fraction: float = 0.0,
) -> list[Any]:
    """Greedy answers for every prompt record, appended to ``output`` as they arrive (resumable)."""
    from leanlm.core.generation import GenerationRequest, SamplingParams, generate

    requests = []
    for i, p in enumerate(prompts):
        if not isinstance(p.get("prompt"), str) or not p["prompt"]:
            raise UserError(f"prompt record {i + 1} has no 'prompt' text (make it with bita-gen-prompts)")
        meta = {k: v for k, v in p.items() if k not in {"id", "prompt", "messages", "meta"}}
        meta["prompt"] = p["prompt"]
        requests.append(GenerationRequest(id=str(p.get("id", i)), prompt=p["prompt"], meta=meta))
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, stop=stop)
    return generate(
        requests,
        backend,
        params,
        output=output,
        desc="bita-gen-outputs",
        max_failed_fraction=max_failed_fraction,
    )


def training_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``{"prompt", "output"}`` per id from a gen-outputs file (last line per id wins, failures
    dropped) or from plain ``{"prompt"|"model_input_texts", "output"}`` records."""
    by_id: dict[str, dict[str, Any]] = {}
    plain = []
    for r in records:
        if "text" in r and isinstance(r.get("meta"), dict) and "ok" in r:
            by_id[str(r.get("id"))] = r
        else:
            plain.append(r)
    out = list(plain)
    for r in by_id.values():
        if r.get("ok"):
            out.append({"id": r.get("id"), "prompt": r["meta"].get("prompt"), "output": r.get("text")})
    return out
