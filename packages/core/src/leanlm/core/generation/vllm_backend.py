"""The ``vllm`` backend: ``vllm.LLM`` in this process, when vllm is installed.

vllm is not in the lock: each release pins torch and transformers exactly. Install it into the
environment (``pip install vllm``, on a CUDA machine), or run a vLLM server and use the ``openai``
backend (``--base-url host:8000``), which needs nothing extra.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

from leanlm.core.errors import UserError
from leanlm.core.generation.base import Backend, OnResult
from leanlm.core.generation.types import GenerationRequest, GenerationResult, SamplingParams

INSTALL_HELP = (
    "the vllm backend needs vllm, which is not installed (it is kept out of the lock because it pins torch "
    "and transformers): `pip install vllm` into this environment on a CUDA machine, or run a vLLM server "
    "(`vllm serve MODEL`) and use the openai backend with --base-url HOST:8000"
)


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(self, model: str = "default", batch_size: int | None = None, **llm_options: Any):
        """``model``: alias, path or hub id (resolved like every leanlm model name).
        ``llm_options`` go to ``vllm.LLM`` (e.g. ``tensor_parallel_size=2``, ``gpu_memory_utilization``)."""
        super().__init__()
        if not vllm_available():
            raise UserError(INSTALL_HELP)
        try:
            import vllm
        except Exception as e:  # installed but broken (a torch mismatch, say)
            raise UserError(f"vllm is installed but failed to import ({e}); {INSTALL_HELP}") from None
        from leanlm.core.models import model_location

        self._vllm = vllm
        self.llm = vllm.LLM(model=model_location(model), **llm_options)
        self.batch_size = batch_size  # None: hand vllm everything at once (it schedules itself)

    def _sampling(self, params: SamplingParams) -> Any:
        return self._vllm.SamplingParams(
            max_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=params.seed,
            stop=list(params.stop) if params.stop else None,
        )

    def run(self, requests: Sequence[GenerationRequest], params: SamplingParams, on_result: OnResult) -> None:
        sampling = self._sampling(params)
        step = self.batch_size or max(1, len(requests))
        for start in range(0, len(requests), step):
            chunk = list(requests[start : start + step])
            chats = [r for r in chunk if r.messages is not None]
            plain = [r for r in chunk if r.messages is None]
            outputs: list[tuple[GenerationRequest, Any]] = []
            if plain:
                outs = self.llm.generate([r.prompt for r in plain], sampling, use_tqdm=False)
                outputs += list(zip(plain, outs))
            if chats:
                outs = self.llm.chat([r.messages for r in chats], sampling, use_tqdm=False)
                outputs += list(zip(chats, outs))
            self.stats.add(requests=len(chunk))
            for request, out in outputs:
                completion = out.outputs[0]
                ids = list(completion.token_ids)
                prompt_tokens = len(out.prompt_token_ids or [])
                self.stats.add(prompt_tokens=prompt_tokens, completion_tokens=len(ids))
                on_result(
                    GenerationResult(
                        id=request.id,
                        text=completion.text,
                        prompt_tokens=prompt_tokens,
                        completion_tokens=len(ids),
                        meta=dict(request.meta),
                        token_ids=ids,
                    )
                )
