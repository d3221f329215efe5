"""Building the generation backend behind a role (teacher, referee, generator, student).

A role is ``backend`` + ``model`` (+ server options). ``openai`` talks to OpenAI (key from
``OPENAI_API_KEY`` or ``--api_key``) or to any compatible server given by ``base_url`` (a vLLM or
TGI server; local servers need no key). ``hf``/``vllm`` run a local model in this process, so the
whole loop also runs offline with the embedded model standing in for the teacher.

Before the first request, a server's host and port are checked with a plain TCP connect, so an
unreachable base URL is one clear error instead of minutes of retries.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from leanlm.core.errors import UserError
from leanlm.core.generation import BackendStats
from leanlm.core.generation.spec import BackendSpec

OPENAI_URL = "https://api.openai.com/v1"
LOCAL_BACKENDS = ("hf", "vllm")
SERVER_BACKENDS = ("openai", "tgi")


@dataclass(frozen=True)
class RoleConfig(BackendSpec):
    """A role's backend: core's ``BackendSpec`` with Lion's defaults (an OpenAI model, 16 in flight)."""

    backend: str = "openai"
    model: str | None = "gpt-3.5-turbo"
    concurrency: int = 16


def resolve_api_key(cfg: RoleConfig) -> str:
    key = cfg.api_key or os.environ.get("OPENAI_API_KEY")
    if key:
        return key
    if cfg.base_url and urlparse(cfg.base_url).hostname not in {"api.openai.com"}:
        return "EMPTY"  # self-hosted OpenAI-compatible servers (vLLM, TGI) ignore the key
    raise UserError(
        "no OpenAI API key: set OPENAI_API_KEY or pass --api_key "
        "(or --base_url for a self-hosted OpenAI-compatible server)"
    )


def make_backend(cfg: RoleConfig, *, check: bool = True) -> Any:
    """A ``leanlm.core.generation`` backend for ``cfg``."""
    if cfg.backend == "openai":  # OpenAI itself unless a base URL is given; a local server needs no key
        cfg = dataclasses.replace(cfg, api_key=resolve_api_key(cfg), base_url=cfg.base_url or OPENAI_URL)
    backend = cfg.build()
    if check:
        backend.preflight()  # an unreachable server: one line before any stage starts
    return backend


class LazyBackend:
    """A role's backend built on first use, so a stage replayed from its cache loads no model."""

    def __init__(self, cfg: RoleConfig):
        self.cfg, self._b = cfg, None
        self._stats = BackendStats()
        self.name = cfg.backend

    @property
    def stats(self) -> BackendStats:
        return self._b.stats if self._b is not None else self._stats

    def _backend(self) -> Any:
        if self._b is None:
            self._b = make_backend(self.cfg)
        return self._b

    def preflight(self) -> None:
        self._backend().preflight()

    def run(self, *args: Any, **kwargs: Any) -> None:
        return self._backend().run(*args, **kwargs)

    def close(self) -> None:
        if self._b is not None and hasattr(self._b, "close"):
            self._b.close()
        self._b = None
