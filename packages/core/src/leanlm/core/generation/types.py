"""The data that flows through every generation backend: requests in, results out, counters.

A result is stored as one JSONL line (``GenerationResult.to_record``); ``from_record`` reads it
back, so a resumed run returns finished records exactly as they were written.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any

from leanlm.core.errors import UserError


@dataclass(frozen=True)
class SamplingParams:
    """How to decode. ``temperature == 0`` means greedy; ``stop`` strings end a completion (not included)."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: list[str] | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise UserError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top_p must be in (0, 1], got {self.top_p}")
        if isinstance(self.stop, str):  # a lone string is a common slip; treat it as one stop string
            object.__setattr__(self, "stop", [self.stop])

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class GenerationRequest:
    """One prompt (plain text, sent as is) or one chat (``messages``: [{"role", "content"}], templated)."""

    id: str
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.id = str(self.id)
        if (self.prompt is None) == (self.messages is None):
            raise UserError(f"request {self.id!r}: give exactly one of 'prompt' or 'messages'")
        if self.messages is not None and (
            not isinstance(self.messages, list)
            or not all(isinstance(m, dict) and "role" in m and "content" in m for m in self.messages)
        ):
            raise UserError(
                f"request {self.id!r}: 'messages' must be a list of {{'role', 'content'}} objects"
            )

    @classmethod
    def coerce(cls, item: GenerationRequest | dict[str, Any]) -> GenerationRequest:
        """Accept a request or a plain dict with the same keys (extra keys go to ``meta``)."""
        if isinstance(item, GenerationRequest):
            return item
        if not isinstance(item, dict) or "id" not in item:
            raise UserError(f"a generation request needs an 'id': {item!r:.200}")
        known = {"id", "prompt", "messages", "meta"}
        meta = dict(item.get("meta") or {})
        meta.update({k: v for k, v in item.items() if k not in known})
        return cls(id=item["id"], prompt=item.get("prompt"), messages=item.get("messages"), meta=meta)


@dataclass
class GenerationResult:
    """The answer to one request. ``ok=False`` carries ``error`` (and an empty ``text``).

    ``prompt_tokens``/``completion_tokens`` are None when the backend cannot tell.
    ``token_ids`` (the generated ids) is filled by in-process backends only.
    """

    id: str
    text: str = ""
    ok: bool = True
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    token_ids: list[int] | None = None

    @classmethod
    def failure(cls, request: GenerationRequest, error: str) -> GenerationResult:
        return cls(id=request.id, text="", ok=False, error=error, meta=dict(request.meta))

    def to_record(self) -> dict[str, Any]:
        record = asdict(self)
        if record["token_ids"] is None:
            del record["token_ids"]
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> GenerationResult:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in record.items() if k in names})


@dataclass
class BackendStats:
    """Counters a backend keeps across calls (thread-safe increments).

    ``requests`` counts requests sent (an HTTP attempt or an in-process generation), ``retries``
    the attempts that were repeated, ``failed`` the records given up on.
    """

    requests: int = 0
    retries: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int | None) -> None:
        with self._lock:
            for name, value in counts.items():
                if value:
                    setattr(self, name, getattr(self, name) + value)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "retries": self.retries,
            "failed": self.failed,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }
