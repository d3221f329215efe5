"""``BackendSpec``: which generation backend a command uses and how to reach it, in one place.

Every command that generates (Lion's roles, ``bita-gen-outputs``, ``bitdistiller-generate``) takes
the same flags: ``--backend`` (hf | openai | tgi | vllm | a registered one such as bita, dllm),
``--model`` (a local model for in-process backends, the served name for servers), ``--base_url``,
``--api_key``, ``--concurrency``, ``--max_retries``, ``--timeout``, ``--batch_size`` (in-process
batching) and ``--dtype``. ``BackendSpec.from_flags(**flags)`` reads them (``None`` = the default)
and ``build()`` makes the backend, so the mapping from flags to a backend exists once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from leanlm.core.errors import UserError

LOCAL = ("hf", "transformers", "vllm")
SERVERS = ("openai", "tgi")


@dataclass(frozen=True)
class BackendSpec:
    """A generation backend by name plus its options.

    ``model``: for ``hf``/``vllm`` and registered backends the model to load (name, folder; None =
    the embedded model); for ``openai`` the served model's name (None: ask the server); unused by
    ``tgi``. Server knobs (``concurrency``, ``max_retries``, ``timeout``, ``backoff_base``) go to
    ``RemoteBackend``; ``batch_size``/``dtype`` to in-process backends; ``options`` to the backend
    as extra keyword arguments (e.g. BiTA's ``tree``).
    """

    backend: str = "hf"
    model: str | None = None
    base_url: str | None = None
    api_key: str | None = None
    concurrency: int = 8
    max_retries: int = 6
    timeout: float = 120.0
    backoff_base: float = 1.0  # seconds before the first retry (doubles each retry)
    batch_size: int = 8
    dtype: str | None = None
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "backend", str(self.backend).lower().strip())
        if int(self.concurrency) < 1:
            raise UserError(f"--concurrency must be >= 1, got {self.concurrency}")
        if int(self.max_retries) < 0:
            raise UserError(f"--max_retries must be >= 0, got {self.max_retries}")
        if float(self.timeout) <= 0:
            raise UserError(f"--timeout must be > 0 seconds, got {self.timeout}")
        if int(self.batch_size) < 1:
            raise UserError(f"--batch_size must be >= 1, got {self.batch_size}")
        if self.backend == "tgi" and not self.base_url:
            raise UserError("the tgi backend needs --base_url (the text-generation-inference server)")

    @classmethod
    def from_flags(cls, **flags: Any) -> BackendSpec:
        """A spec from command-line flags; ``None`` values keep the defaults, unknown names are refused."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(flags) - known)
        if unknown:
            raise UserError(
                f"unknown backend option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**{k: v for k, v in flags.items() if v is not None})

    @property
    def is_server(self) -> bool:
        return self.backend in SERVERS

    def remote_options(self) -> dict[str, Any]:
        """The ``RemoteBackend`` knobs (retries, backoff, concurrency, timeout)."""
        return {
            "concurrency": int(self.concurrency),
            "max_retries": int(self.max_retries),
            "timeout": float(self.timeout),
            "backoff_base": float(self.backoff_base),
        }

    def build(self) -> Any:
        """The backend (``get_backend``); local ones load their model now."""
        from leanlm.core.generation import get_backend

        name, extra = self.backend, dict(self.options)
        if name in ("hf", "transformers"):
            local = {"model": self.model or "default", "batch_size": int(self.batch_size)}
            return get_backend("hf", **local, **({"dtype": self.dtype} if self.dtype else {}), **extra)
        if name == "openai":
            return get_backend(
                "openai",
                model=self.model,
                base_url=self.base_url,
                api_key=self.api_key,
                **self.remote_options(),
                **extra,
            )
        if name == "tgi":
            return get_backend(
                "tgi", base_url=self.base_url, api_key=self.api_key, **self.remote_options(), **extra
            )
        if name == "vllm":
            return get_backend(
                "vllm",
                model=self.model or "default",
                **({"dtype": self.dtype} if self.dtype else {}),
                **extra,
            )
        # a backend a method registered (BiTA, D-LLM decoding): it loads the model itself
        return get_backend(
            name, model=self.model or "default", **({"dtype": self.dtype} if self.dtype else {}), **extra
        )

    def key(self) -> tuple:
        """Specs with equal keys can share one backend (one loaded model, one connection pool)."""
        d = {k: v for k, v in asdict(self).items() if k not in ("api_key", "options")}
        return tuple(sorted(d.items())) + tuple(sorted((k, str(v)) for k, v in self.options.items()))

    def public(self) -> dict[str, Any]:
        """The spec without the secret, for state files and reports."""
        d = asdict(self)
        d["api_key"] = "***" if self.api_key else None
        return d
