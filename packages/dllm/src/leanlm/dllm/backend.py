"""D-LLM's layer-skipping decoding as a core generation backend (entry point ``leanlm.backends: dllm``).

Registered in this package's ``pyproject.toml``, so ``get_backend("dllm", model=FOLDER)`` (and
``leanlm serve --backend dllm --model FOLDER``, Lion's roles, teacher data) decodes with the routers
of a ``dllm-finetune`` folder without importing this package. Requests are batched with left
padding (``decode.generate`` keeps each row's positions and its per-layer KV validity), and each
result's ``meta`` carries that row's executed-block ratio.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from leanlm.core.errors import UserError
from leanlm.core.generation.base import Backend, OnResult
from leanlm.core.generation.hf import answer, end_token_ids, prompt_ids
from leanlm.core.generation.types import GenerationRequest, SamplingParams


class DLLMBackend(Backend):
    """Answers requests with a saved D-LLM (``model``: the folder ``dllm-finetune`` wrote)."""

    name = "dllm"

    def __init__(
        self,
        model: str,
        base: str | None = None,
        batch_size: int = 8,
        dtype: str | None = None,
        device: str | None = None,
        tokenizer: Any = None,
    ):
        super().__init__()
        from leanlm.core.models import load_tokenizer
        from leanlm.dllm.model import DLLM

        if int(batch_size) < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}")
        self.dllm = DLLM.load(model, base, dtype=dtype, device=device)
        self.tokenizer = (
            load_tokenizer(base or self.dllm.config.base_model) if tokenizer is None else tokenizer
        )
        self.batch_size = int(batch_size)

    def run(self, requests: Sequence[GenerationRequest], params: SamplingParams, on_result: OnResult) -> None:
        import torch

        from leanlm.dllm.decode import generate

        end_ids = end_token_ids(self.dllm.lm.generation_config, self.tokenizer)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        encoded = sorted(((r, prompt_ids(self.tokenizer, r)) for r in requests), key=lambda x: -len(x[1]))
        for start in range(0, len(encoded), self.batch_size):
            batch = encoded[start : start + self.batch_size]
            width = max(len(ids) for _, ids in batch)
            # left padding: every row's last prompt token in the same column (positions from the mask)
            input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for _, ids in batch])
            mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for _, ids in batch])
            out = generate(
                self.dllm,
                input_ids,
                mask,
                max_new_tokens=params.max_new_tokens,
                eos_token_id=sorted(end_ids),
                temperature=params.temperature,
                top_p=params.top_p,
                seed=int(params.seed or 0),
            )
            self.stats.add(requests=len(batch))
            for (request, ids), generated, stats in zip(batch, out.tokens, out.stats):
                self.stats.add(prompt_tokens=len(ids), completion_tokens=len(generated))
                ratio = round(float(stats.get("decode_exec_ratio", float("nan"))), 4)
                on_result(
                    answer(self.tokenizer, request, len(ids), generated, end_ids, params, exec_ratio=ratio)
                )
