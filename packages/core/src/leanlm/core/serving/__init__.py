"""``leanlm serve``: any model ``load_model`` opens, behind an OpenAI-compatible HTTP API.

    leanlm serve --model runs/int4/packed --port 8000            # plain, packed low-bit, a fine-tune
    curl localhost:8000/v1/chat/completions -d '{"model": "runs/int4/packed", "messages": [...]}'

Lion's ``--base_url``, ``bita-gen-outputs --backend openai`` and the official ``openai`` client can
point at it. It is the server for CPUs and for the models vLLM cannot run; for GPU serving of a
plain or GPTQ model, ``vllm serve`` is the right engine. ``Server`` runs it in a background thread
(tests, benchmarks); ``serve`` runs it in the foreground.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from leanlm.core.errors import UserError
from leanlm.core.serving.app import ServerLimits, create_app
from leanlm.core.serving.engine import BackendEngine, Engine, EngineBase

log = logging.getLogger(__name__)


def build_engine(
    model: str | Any,
    tokenizer: Any = None,
    max_batch: int = 8,
    max_queue: int = 256,
    dtype: str | None = None,
    device: str | None = None,
    backend: str = "hf",
    backend_options: dict[str, Any] | None = None,
) -> EngineBase:
    """An ``Engine`` for a model name/path (loaded with ``load_model``) or a model object + tokenizer.

    ``backend``: ``hf`` (batched, streamed token by token) or a backend a method registered under
    ``leanlm.backends`` (built with ``model=``, ``dtype``/``device`` when given, and
    ``backend_options``, e.g. BiTA's ``{"tree": "1-1"}``; served one request at a time, not streamed
    by token).
    """
    from leanlm.core.generation import get_backend
    from leanlm.core.models import load_model, load_tokenizer

    if backend not in ("hf", "transformers"):
        if not isinstance(model, str):
            raise UserError("a registered backend is built from a model name or folder, not a model object")
        given = {k: v for k, v in (("dtype", dtype), ("device", device)) if v is not None}
        built = get_backend(backend, model=model, **given, **(backend_options or {}))
        tok = tokenizer or getattr(built, "tokenizer", None) or load_tokenizer(model)
        return BackendEngine(built, tok, max_queue=max_queue)
    if isinstance(model, str):
        tokenizer = load_tokenizer(model) if tokenizer is None else tokenizer
        model = load_model(model, dtype=dtype, device=device)
    if tokenizer is None:
        raise UserError("serving a model object needs its tokenizer")
    return Engine(model, tokenizer, max_batch=max_batch, max_queue=max_queue)


class Server:
    """``leanlm serve`` in a background thread on ``host:port`` (port 0: a free one)."""

    def __init__(
        self,
        engine: EngineBase,
        served_name: str,
        limits: ServerLimits | None = None,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        import uvicorn

        self.engine = engine
        self.app = create_app(engine, served_name, limits or ServerLimits(), api_key)
        self.sock = socket.create_server((host, port))
        self.host, self.port = self.sock.getsockname()[:2]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def openai_url(self) -> str:
        return f"{self.url}/v1"

    def start(self) -> Server:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self.engine.close()
        self.sock.close()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    model: str = "default",
    host: str = "127.0.0.1",
    port: int = 8000,
    served_name: str | None = None,
    api_key: str | None = None,
    max_batch: int = 8,
    max_queue: int = 256,
    max_prompt_tokens: int = 4096,
    max_tokens: int = 1024,
    dtype: str | None = None,
    device: str | None = None,
    backend: str = "hf",
    backend_options: dict[str, Any] | None = None,
) -> None:
    """Load ``model`` and serve it until interrupted (Ctrl-C)."""
    import uvicorn

    engine = build_engine(
        model,
        max_batch=max_batch,
        max_queue=max_queue,
        dtype=dtype,
        device=device,
        backend=backend,
        backend_options=backend_options,
    )
    name = served_name or model
    app = create_app(engine, name, ServerLimits(max_prompt_tokens, max_tokens, min(256, max_tokens)), api_key)
    log.info(
        "serving %s as %r on http://%s:%d/v1 (batch %d, key %s)",
        model,
        name,
        host,
        port,
        max_batch,
        "required" if api_key else "not required",
    )
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        engine.close()
