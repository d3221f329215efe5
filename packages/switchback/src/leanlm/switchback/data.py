"""Fine-tuning data: (prompt, target) pairs with the seed project's truncation and target-only loss.

The seed (QLoRA-style collator) cuts the source to ``source_max_len`` tokens and the target (+EOS)
to ``target_max_len`` tokens, and computes the loss on target tokens only. Here the prompt keeps its
*last* ``source_max_len`` tokens, so a chat prompt keeps its assistant header right before the target.

Datasets: ``instructions`` (offline: prompt = instruction(+input) in a template, target = output),
``oasst1`` / ``longform`` (the seed's hub sets; need network), or a local JSON/JSONL file with
``instruction``/``input``/``output``, ``input``/``output``, or ``text`` fields.
"""

from __future__ import annotations

from typing import Any

from leanlm.core.datasets import load_records
from leanlm.core.errors import UserError
from leanlm.core.sft import IGNORE_INDEX
from leanlm.core.templates import format_prompt

HUB_DATASETS = {"oasst1": "timdettmers/openassistant-guanaco", "longform": "akoksal/LongForm"}


def default_template(tokenizer: Any) -> str:
    return "chat" if getattr(tokenizer, "chat_template", None) else "instruction_response"


def to_pair(record: dict[str, Any], template: str, tokenizer: Any) -> tuple[str, str]:
    """One record -> (prompt text, target text)."""
    if "instruction" in record and "output" in record:
        prompt = format_prompt(
            template, record["instruction"], record.get("input") or None, tokenizer=tokenizer
        )
        return prompt, str(record["output"])
    if "input" in record and "output" in record:  # LongForm and the seed's custom sets: raw source
        return str(record["input"]), str(record["output"])
    if "text" in record:  # oasst1 as the seed used it: no source, the whole dialogue is the target
        return "", str(record["text"])
    raise UserError(
        f"record {record.get('id', '?')!r} has fields {sorted(record)}; expected instruction/output, "
        "input/output or text"
    )


def encode_pair(
    tokenizer: Any, prompt: str, target: str, source_max_len: int, target_max_len: int
) -> dict[str, list[int]]:
    """input_ids = prompt[-source_max_len:] + (target + EOS)[:target_max_len]; labels -100 on the prompt."""
    from leanlm.core.sft import encode_prompt

    prompt_ids = encode_prompt(tokenizer, prompt) if prompt else []  # one BOS, chat-rendered or not
    if tokenizer.bos_token_id is not None and not prompt_ids:
        prompt_ids = [tokenizer.bos_token_id]
    prompt_ids = prompt_ids[-source_max_len:] if source_max_len > 0 else []
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        target_ids = target_ids + [tokenizer.eos_token_id]
    target_ids = target_ids[:target_max_len]
    input_ids = prompt_ids + target_ids
    labels = [IGNORE_INDEX] * len(prompt_ids) + target_ids
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}


def load_pairs(dataset: str, limit: int | None = None, seed: int | None = None) -> list[dict[str, Any]]:
    name = HUB_DATASETS.get(str(dataset), str(dataset))
    return load_records(name, limit=limit, seed=seed)


def build_examples(
    records: list[dict[str, Any]],
    tokenizer: Any,
    *,
    template: str | None = None,
    source_max_len: int = 16,
    target_max_len: int = 512,
) -> list[dict[str, list[int]]]:
    """Tokenized training examples; records whose target is empty are dropped (nothing to learn)."""
    template = template or default_template(tokenizer)
    examples = []
    for record in records:
        prompt, target = to_pair(record, template, tokenizer)
        if not target.strip():
            continue
        examples.append(encode_pair(tokenizer, prompt, target, source_max_len, target_max_len))
    if not examples:
        raise UserError("no training example with a non-empty target")
    return examples
