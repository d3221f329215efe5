"""Supervised fine-tuning data: prompt-masked labels and a padding collator.

For a prompt of P tokens and a response of R tokens, ``input_ids`` has P+R(+EOS) tokens and
``labels`` equals ``input_ids`` with the first P positions set to -100, so the causal-LM loss
counts only response tokens (the shift happens inside the model).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

IGNORE_INDEX = -100


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a rendered prompt carrying exactly the BOS its model expects.

    Text rendered by a chat template already starts with the BOS text on Llama-3, Gemma,
    Mistral-style and Phi-3 tokenizers; encoding it with special tokens would add a second BOS.
    So special tokens are added only when the text does not already start with the BOS.
    """
    bos = getattr(tokenizer, "bos_token", None)
    starts_with_bos = bool(bos) and text.startswith(bos)
    return tokenizer(text, add_special_tokens=not starts_with_bos)["input_ids"]


def tokenize_example(
    tokenizer: Any,
    prompt: str,
    response: str,
    *,
    max_length: int = 1024,
    add_eos: bool = True,
    max_prompt_length: int | None = None,
) -> dict[str, list[int]]:
    """Token ids and labels for one (prompt, response) pair.

    The prompt is cut from the left to ``max_prompt_length`` (default: half of ``max_length``) so
    that a long prompt always leaves room for response tokens; the response is cut on the right.
    """
    prompt_ids = encode_prompt(tokenizer, prompt)
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    if add_eos and tokenizer.eos_token_id is not None:
        response_ids = response_ids + [tokenizer.eos_token_id]
    budget_prompt = max_prompt_length if max_prompt_length is not None else max_length // 2
    if len(prompt_ids) + len(response_ids) > max_length and len(prompt_ids) > budget_prompt:
        prompt_ids = prompt_ids[-max(budget_prompt, max_length - len(response_ids)) :]
    response_ids = response_ids[: max(0, max_length - len(prompt_ids))]
    input_ids = prompt_ids + response_ids
    labels = [IGNORE_INDEX] * len(prompt_ids) + response_ids
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}


@dataclass
class PaddingCollator:
    """Pads ``input_ids``/``attention_mask``/``labels`` (and any other list-of-int field) to the batch max.

    ``input_ids`` pad with ``pad_token_id``, ``labels`` with -100, masks with 0.
    ``side`` is "right" for training, "left" for batched generation.
    """

    pad_token_id: int
    side: str = "right"
    pad_to_multiple_of: int | None = None

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            length = (length + m - 1) // m * m
        batch: dict[str, torch.Tensor] = {}
        for key in features[0]:
            if not isinstance(features[0][key], (list, tuple)):
                batch[key] = torch.tensor([f[key] for f in features])  # scalar fields: stack as they are
                continue
            values = [list(f[key]) for f in features]
            pad = {"input_ids": self.pad_token_id, "labels": IGNORE_INDEX}.get(key, 0)
            rows = []
            for v in values:
                fill = [pad] * (length - len(v))
                rows.append(fill + v if self.side == "left" else v + fill)
            batch[key] = torch.tensor(rows, dtype=torch.long)
        return batch
