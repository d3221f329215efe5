"""Building the generation backend behind a role (teacher, referee, generator, student).

A role is ``backend`` + ``model`` (+ server options). ``openai`` talks to OpenAI (key from
``OPENAI_API_KEY`` or ``--api_key``) or to any compatible server given by ``base_url`` (a vLLM or
TGI server; local servers need no key). ``hf``/``vllm`` run a local model in this process, so the
whole loop also runs offline with the embedded model standing in for the teacher.

Before the first request, a server's host and port are checked with a plain TCP connect, so an
unreachable base URL is one clear error instead of minutes of retries.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlparse

from leanlm.core.errors import UserError

OPENAI_URL = "https://api.openai.com/v1"
LOCAL_BACKENDS = ("hf", "vllm")
SERVER_BACKENDS = ("openai", "tgi")


@dataclass(frozen=True)
class RoleConfig:
    backend: str = "openai"
    model: str = "gpt-3.5-turbo"
    base_url: str | None = None
    api_key: str | None = None
    concurrency: int = 16
    max_retries: int = 6
    timeout: float = 120.0
    backoff_base: float = 1.0  # seconds before the first retry (doubles each retry)
    batch_size: int = 8  # local backends

    def key(self) -> tuple:
        """Roles with equal keys share one backend (one loaded model, one connection pool)."""
        return tuple(sorted((k, v) for k, v in asdict(self).items() if k != "api_key"))

    def public(self) -> dict[str, Any]:
        """The config without the secret, for state files and reports."""
        d = asdict(self)
        d["api_key"] = "***" if self.api_key else None
        return d


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
    from leanlm.core.generation import get_backend

    name = cfg.backend.lower()
    if name == "openai":
        key = resolve_api_key(cfg)
        url = cfg.base_url or OPENAI_URL
        backend = get_backend(
            "openai",
            model=cfg.model,
            base_url=url,
            api_key=key,
            concurrency=cfg.concurrency,
            max_retries=cfg.max_retries,
            timeout=cfg.timeout,
            backoff_base=cfg.backoff_base,
        )
    elif name == "tgi":
        if not cfg.base_url:
            raise UserError("the tgi backend needs --base_url (the text-generation-inference server)")
        backend = get_backend(
            "tgi",
            base_url=cfg.base_url,
            concurrency=cfg.concurrency,
            max_retries=cfg.max_retries,
            timeout=cfg.timeout,
            backoff_base=cfg.backoff_base,
        )
    elif name in {"hf", "transformers"}:
        backend = get_backend("hf", model=cfg.model, batch_size=cfg.batch_size)
    else:  # vllm, or a backend a method package registered (BiTA, D-LLM decoding)
        backend = get_backend(name, model=cfg.model)
    if check:
        backend.preflight()  # an unreachable server: one line before any stage starts
    return backend
