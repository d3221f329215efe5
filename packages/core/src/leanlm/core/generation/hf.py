"""The ``hf`` backend: a transformers causal LM in this process, batched with left padding.

Prompts are tokenized as given; chats are rendered with the tokenizer's chat template (with the
generation prompt). Requests are sorted by length (longest first: an out-of-memory shows up at
once, and batches pad less), then split into batches of ``batch_size``. Left padding plus the
attention mask keeps each row's positions identical to an unpadded run, so greedy output matches
``model.generate`` on the single prompt.

Sampling (``temperature > 0``) seeds torch's generator per batch from ``params.seed`` and the
batch's ids, so a re-run with the same batches reproduces the same text.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from typing import Any

from leanlm.core.errors import UserError
from leanlm.core.generation.base import Backend, OnResult
from leanlm.core.generation.types import GenerationRequest, GenerationResult, SamplingParams
from leanlm.core.sft import encode_prompt
from leanlm.core.templates import render_chat


def end_token_ids(generation_config: Any, tokenizer: Any) -> set[int]:
    """The ids that end an answer: the generation config's ``eos_token_id`` (one id, or a list such as
    Llama-3's ``<|eot_id|>`` and ``<|end_of_text|>``) plus the tokenizer's ``eos_token_id``."""
    eos = getattr(generation_config, "eos_token_id", None)
    ids = {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])}
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


def until_end(ids: Sequence[int], end_ids: set[int]) -> list[int]:
    """``ids`` up to and including the first end id (what follows it, e.g. padding, dropped)."""
    for i, t in enumerate(ids):
        if t in end_ids:
            return list(ids[: i + 1])
    return list(ids)


def answer(
    tokenizer: Any,
    request: GenerationRequest,
    prompt_tokens: int,
    generated: Sequence[int],
    end_ids: set[int],
    params: SamplingParams,
    **meta: Any,
) -> GenerationResult:
    """The result of an in-process generation: ``generated`` (ids, up to and including an end id) decoded
    without its end ids and cut at the stop strings; ``meta`` adds to the request's meta."""
    text = tokenizer.decode([t for t in generated if t not in end_ids], skip_special_tokens=True)
    return GenerationResult(
        id=request.id,
        text=cut_at_stop(text, params.stop),
        prompt_tokens=prompt_tokens,
        completion_tokens=len(generated),
        meta={**request.meta, **meta},
        token_ids=list(generated),
    )


def cut_at_stop(text: str, stop: Sequence[str] | None) -> str:
    """``text`` up to (not including) the earliest occurrence of any stop string."""
    if not stop:
        return text
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=len(text))
    return text[:cut]


def prompt_ids(tok: Any, request: GenerationRequest) -> list[int]:
    """Token ids a local model sees for ``request``: a chat through the tokenizer's chat template
    (which writes its own special tokens), a plain prompt as the tokenizer encodes it."""
    if request.messages is not None:
        missing = (
            f"request {request.id!r} has chat messages but the tokenizer has no chat template; "
            "send a formatted 'prompt' instead (leanlm.core.templates.format_prompt)"
        )
        text = render_chat(request.messages, tok, missing)
        return tok(text, add_special_tokens=False)["input_ids"]
    return encode_prompt(tok, request.prompt)  # a prompt rendered by a chat template keeps one BOS


class HFBackend(Backend):
    name = "hf"

    def __init__(
        self,
        model: Any = "default",
        tokenizer: Any = None,
        batch_size: int = 8,
        device: str | None = None,
        dtype: str | None = None,
    ):
        super().__init__()
        from leanlm.core.models import load_model, load_tokenizer

        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(model, str):
            tokenizer = tokenizer if tokenizer is not None else model
            model = load_model(model, dtype=dtype, device=device)
        if tokenizer is None:
            raise UserError("the hf backend needs a tokenizer when given a model object (tokenizer=...)")
        if isinstance(tokenizer, str):
            tokenizer = load_tokenizer(tokenizer)
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size

    # -- prompt rendering -------------------------------------------------------------------
    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        """Token ids of the request's prompt (chats through the chat template)."""
        return prompt_ids(self.tokenizer, request)

    def _generation_config(self, params: SamplingParams) -> Any:
        cfg = copy.deepcopy(self.model.generation_config)
        cfg.max_new_tokens = params.max_new_tokens
        cfg.max_length = None
        cfg.do_sample = not params.greedy
        if params.greedy:  # unset sampling knobs so transformers does not warn about unused ones
            cfg.temperature, cfg.top_p, cfg.top_k = None, None, None
        else:
            cfg.temperature, cfg.top_p, cfg.top_k = params.temperature, params.top_p, None
        cfg.num_beams = 1
        if cfg.pad_token_id is None:
            cfg.pad_token_id = self.tokenizer.pad_token_id
        if params.stop:
            cfg.stop_strings = list(params.stop)
        return cfg

    # -- generation -------------------------------------------------------------------------
    def run(self, requests: Sequence[GenerationRequest], params: SamplingParams, on_result: OnResult) -> None:
        import torch

        encoded = [(r, self.prompt_ids(r)) for r in requests]
        encoded.sort(key=lambda item: -len(item[1]))
        cfg = self._generation_config(params)
        end_ids = end_token_ids(cfg, self.tokenizer)
        pad_id = cfg.pad_token_id
        device = next(self.model.parameters()).device
        for start in range(0, len(encoded), self.batch_size):
            batch = encoded[start : start + self.batch_size]
            width = max(len(ids) for _, ids in batch)
            # left padding: every row's last prompt token sits at the same column
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (_, ids) in enumerate(batch):
                input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                attention_mask[row, width - len(ids) :] = 1
            if not params.greedy:
                key = f"{params.seed}:" + "\x00".join(r.id for r, _ in batch)
                torch.manual_seed(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little"))
            extra = {"tokenizer": self.tokenizer} if params.stop else {}
            with torch.no_grad():
                out = self.model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention_mask.to(device),
                    generation_config=cfg,
                    **extra,
                )
            self.stats.add(requests=len(batch))
            new = out[:, width:].tolist()
            for (request, ids), row in zip(batch, new):
                generated = until_end(row, end_ids)
                self.stats.add(prompt_tokens=len(ids), completion_tokens=len(generated))
                on_result(answer(self.tokenizer, request, len(ids), generated, end_ids, params))
