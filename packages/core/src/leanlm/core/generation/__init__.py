"""One interface for text generation, several backends.

    from leanlm.core.generation import GenerationRequest, SamplingParams, generate, get_backend

    backend = get_backend("openai", model="gpt-4o-mini", concurrency=16)      # or "hf", "tgi", "vllm"
    results = generate(requests, backend, SamplingParams(max_new_tokens=128), output="out.jsonl")

Backends: ``hf`` (transformers in process, batched, left padded), ``openai`` (any
OpenAI-compatible server), ``tgi`` (text-generation-inference via ``huggingface_hub``), ``vllm``
(``vllm.LLM`` in process when vllm is installed). ``generate`` writes a resumable JSONL output.
"""

from __future__ import annotations

from typing import Any

from leanlm.core.errors import UserError
from leanlm.core.generation.base import Backend
from leanlm.core.generation.runner import IncompleteGeneration, check_failures, generate, usage_since
from leanlm.core.generation.types import BackendStats, GenerationRequest, GenerationResult, SamplingParams

BACKENDS = ("hf", "openai", "tgi", "vllm")


def get_backend(name: str, **options: Any) -> Backend:
    """Build a backend by name. Options: see each backend class (``HFBackend``, ``OpenAIBackend``, ...)."""
    key = name.lower().strip()
    if key in {"hf", "transformers"}:
        from leanlm.core.generation.hf import HFBackend

        return HFBackend(**options)
    if key == "openai":
        from leanlm.core.generation.openai_backend import OpenAIBackend

        return OpenAIBackend(**options)
    if key == "tgi":
        from leanlm.core.generation.tgi import TGIBackend

        return TGIBackend(**options)
    if key == "vllm":
        from leanlm.core.generation.vllm_backend import VLLMBackend

        return VLLMBackend(**options)
    raise UserError(f"unknown generation backend {name!r}; choose one of {', '.join(BACKENDS)}")


__all__ = [
    "BACKENDS",
    "Backend",
    "BackendStats",
    "GenerationRequest",
    "GenerationResult",
    "IncompleteGeneration",
    "SamplingParams",
    "check_failures",
    "generate",
    "get_backend",
    "usage_since",
]
