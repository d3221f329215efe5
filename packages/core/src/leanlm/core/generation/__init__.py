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


def _builtin(key: str) -> Any:
    """The class of a built-in backend, imported on demand (None for other names)."""
    if key in {"hf", "transformers"}:
        from leanlm.core.generation.hf import HFBackend

        return HFBackend
    if key == "openai":
        from leanlm.core.generation.openai_backend import OpenAIBackend

        return OpenAIBackend
    if key == "tgi":
        from leanlm.core.generation.tgi import TGIBackend

        return TGIBackend
    if key == "vllm":
        from leanlm.core.generation.vllm_backend import VLLMBackend

        return VLLMBackend
    return None


def _check_options(key: str, factory: Any, options: dict[str, Any]) -> None:
    """One line for an option the backend does not take (server backends also take RemoteBackend's)."""
    import inspect

    from leanlm.core.generation.remote import RemoteBackend

    params = dict(inspect.signature(factory).parameters)
    if isinstance(factory, type) and issubclass(factory, RemoteBackend):
        params |= inspect.signature(RemoteBackend.__init__).parameters  # what its **remote takes
    elif any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return  # the factory takes any option (vllm hands extras to vllm.LLM)
    names = [n for n, p in params.items() if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise UserError(
            f"backend {key!r} takes no option(s) {', '.join(unknown)}; its options: {', '.join(names)}"
        )


def get_backend(name: str, **options: Any) -> Backend:
    """Build a backend by name. Options: see each backend class (``HFBackend``, ``OpenAIBackend``, ...).

    Besides the built-in ones, a method package can offer its decoding as a backend (BiTA's lossless
    tree decoding, D-LLM's layer skipping) by registering a factory under ``leanlm.backends`` in its
    ``pyproject.toml``; ``get_backend(<that name>, **options)`` then builds it, so any pipeline (Lion's
    roles, teacher data, ``leanlm serve``) can use it without importing the method.
    """
    key = name.lower().strip()
    factory = _builtin(key)
    registered = registered_backends() if factory is None else {}
    if factory is None and key in registered:
        factory = registered[key].load()
    if factory is not None:
        _check_options(key, factory, options)
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
