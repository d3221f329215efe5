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
import socket
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


def check_reachable(url: str, timeout: float = 5.0) -> None:
    """One TCP connect to the server behind ``url``; a UserError names it when nothing answers."""
    from leanlm.core.generation.remote import normalize_url

    parsed = urlparse(normalize_url(url))
    if parsed.scheme not in {"http", "https"} or not parsed.hostname:
        raise UserError(f"base URL {url!r} is not an http(s) URL")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            pass
    except OSError as e:
        raise UserError(f"cannot reach {url} ({parsed.hostname}:{port}: {e.strerror or e})") from None


def make_backend(cfg: RoleConfig, *, check: bool = True) -> Any:
    """A ``leanlm.core.generation`` backend for ``cfg``."""
    from leanlm.core.generation import get_backend

    name = cfg.backend.lower()
    if name == "openai":
        key = resolve_api_key(cfg)
        url = cfg.base_url or OPENAI_URL
        if check:
            check_reachable(url)
        return get_backend(
            "openai",
            model=cfg.model,
            base_url=url,
            api_key=key,
            concurrency=cfg.concurrency,
            max_retries=cfg.max_retries,
            timeout=cfg.timeout,
            backoff_base=cfg.backoff_base,
        )
    if name == "tgi":
        if not cfg.base_url:
            raise UserError("the tgi backend needs --base_url (the text-generation-inference server)")
        if check:
            check_reachable(cfg.base_url)
        return get_backend(
            "tgi",
            base_url=cfg.base_url,
            concurrency=cfg.concurrency,
            max_retries=cfg.max_retries,
            timeout=cfg.timeout,
            backoff_base=cfg.backoff_base,
        )
    if name in {"hf", "transformers"}:
        return get_backend("hf", model=cfg.model, batch_size=cfg.batch_size)
    if name == "vllm":
        return get_backend("vllm", model=cfg.model)
    raise UserError(f"unknown backend {cfg.backend!r}; choose one of openai, tgi, hf, vllm")


class BackendPool:
    """Backends built once per distinct role config and shared (the paper's teacher plays three roles)."""

    def __init__(self) -> None:
        self._backends: dict[tuple, Any] = {}

    def get(self, cfg: RoleConfig) -> Any:
        k = cfg.key()
        if k not in self._backends:
            self._backends[k] = make_backend(cfg)
        return self._backends[k]

    def close(self) -> None:
        for b in self._backends.values():
            close = getattr(b, "close", None)
            if close:
                close()
        self._backends.clear()
