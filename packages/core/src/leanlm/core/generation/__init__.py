"""One interface for text generation, several backends.

    from leanlm.core.generation import GenerationRequest, SamplingParams, generate, get_backend

    backend = get_backend("openai", model="gpt-4o-mini", concurrency=16)      # or "hf", "tgi", "vllm"
    results = generate(requests, backend, SamplingParams(max_new_tokens=128), output="out.jsonl")

Backends: ``hf`` (transformers in process, batched, left padded), ``openai`` (any
OpenAI-compatible server), ``tgi`` (text-generation-inference via ``huggingface_hub``), ``vllm``
(``vllm.LLM`` in process when vllm is installed), and any a method package registers under the
entry-point group ``leanlm.backends`` (``bita``, ``dllm``). ``generate`` writes a resumable JSONL
output. Commands fill a ``BackendSpec`` from their backend flags and ``build()`` it.
"""

from __future__ import annotations

from typing import Any

from leanlm.core.errors import UserError
from leanlm.core.generation.base import Backend
from leanlm.core.generation.runner import IncompleteGeneration, check_failures, generate, usage_since
from leanlm.core.generation.spec import BackendSpec
from leanlm.core.generation.types import BackendStats, GenerationRequest, GenerationResult, SamplingParams

BACKENDS = ("hf", "openai", "tgi", "vllm")
BACKEND_GROUP = "leanlm.backends"  # entry points: name -> a Backend factory (a method's decoding)


def registered_backends() -> dict[str, Any]:
    """Backends that installed packages register under the entry-point group ``leanlm.backends``."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=BACKEND_GROUP)}


def get_backend(name: str, **options: Any) -> Backend:
    """Build a backend by name. Options: see each backend class (``HFBackend``, ``OpenAIBackend``, ...).

    Besides the built-in ones, a method package can offer its decoding as a backend (BiTA's lossless
    tree decoding, D-LLM's layer skipping) by registering a factory under ``leanlm.backends`` in its
    ``pyproject.toml``; ``get_backend(<that name>, **options)`` then builds it, so any pipeline (Lion's
    roles, teacher data, ``leanlm serve``) can use it without importing the method.
    """
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
    registered = registered_backends()
    if key in registered:
        import inspect

        factory = registered[key].load()
        params = inspect.signature(factory).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            unknown = sorted(set(options) - set(params))
            if unknown:
                raise UserError(f"backend {key!r} takes no option(s) {', '.join(unknown)}; its options: "
                                f"{', '.join(n for n in params if n != 'self')}")  # fmt: skip
        return factory(**options)
    known = ", ".join([*BACKENDS, *sorted(registered)])
    raise UserError(f"unknown generation backend {name!r}; choose one of {known}")


__all__ = [
    "BACKENDS",
    "Backend",
    "BackendSpec",
    "BackendStats",
    "GenerationRequest",
    "GenerationResult",
    "IncompleteGeneration",
    "SamplingParams",
    "check_failures",
    "generate",
    "get_backend",
    "registered_backends",
    "usage_since",
]
