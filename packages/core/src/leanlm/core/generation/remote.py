"""The shared engine of the HTTP backends: asyncio, a concurrency limit, retries with backoff.

Each request is one task; a semaphore keeps at most ``concurrency`` in flight. A backend's
``_attempt`` sends one request and returns a result, or raises; ``_classify`` sorts the exception:

- ``RETRY`` (429, 5xx, timeout, dropped connection, malformed body): wait, then try again, up to
  ``max_retries`` retries. The wait is ``min(backoff_max, backoff_base * 2**k)`` with jitter
  (uniformly in its upper half: spread out, never zero), or the server's Retry-After if longer.
- ``FAIL`` (a 400 for this one request, say): record ``ok=False`` at once.
- ``FATAL`` (401, missing model, ...): every request would fail the same way, so stop the run with
  a ``UserError``; results already delivered stay delivered (and written).

An unreachable server is fatal too: before the first request a TCP connect to ``base_url`` must
succeed (connection refused, an unknown host or no answer within ``PROBE_SECONDS`` stop the run
at once), and ``max_connect_failures`` failed connects in a row mid-run (the server went away)
stop it instead of retrying every request into a long wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import socket
import threading
from collections.abc import Coroutine, Sequence
from typing import Any

from leanlm.core.errors import UserError
from leanlm.core.generation.base import Backend, OnResult
from leanlm.core.generation.types import GenerationRequest, GenerationResult, SamplingParams

log = logging.getLogger(__name__)


class Verdict(enum.Enum):
    RETRY = "retry"
    FAIL = "fail"
    FATAL = "fatal"


class MalformedResponse(ValueError):
    """The server answered 200 with a body that is not the expected shape."""


PROBE_SECONDS = 10.0


def is_connect_failure(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) is a failed TCP connect: refused, unknown host, unreachable."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ConnectionRefusedError | socket.gaierror) or type(e).__name__ == "ConnectError":
            return True
        if isinstance(e, OSError) and e.errno in {101, 111, 113}:  # ENETUNREACH, ECONNREFUSED, EHOSTUNREACH
            return True
        e = e.__cause__ or e.__context__
    return False


async def probe(url: str, seconds: float = PROBE_SECONDS) -> None:
    """Open and close one TCP connection to ``url``'s host and port; a UserError if that fails."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, port), seconds)
    except (TimeoutError, OSError) as e:
        if isinstance(e, TimeoutError):
            why = f"no answer within {seconds:g}s"
        else:
            why = "connection refused" if isinstance(e, ConnectionRefusedError) else (e.strerror or str(e))
        raise UserError(
            f"cannot reach the server at {url}: {why} (is it running? check --base_url)"
        ) from None
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def normalize_url(url: str, api_path: str = "/v1") -> str:
    """``10.0.0.5:8080`` -> ``http://10.0.0.5:8080/v1``; a URL with a path is kept as is."""
    from urllib.parse import urlsplit

    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if not parts.netloc:
        raise UserError(f"not a server address: {url!r} (expected host:port or http://host:port/v1)")
    if parts.path in {"", "/"}:
        return f"{parts.scheme}://{parts.netloc}{api_path}"
    return url.rstrip("/")


def run_coroutine(coro: Coroutine[Any, Any, Any]) -> Any:
    """``asyncio.run`` that also works when the caller already runs an event loop (a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as e:  # re-raised in the caller's thread
            box["error"] = e

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


class RemoteBackend(Backend):
    """Base of the ``openai`` and ``tgi`` backends (see the module docstring)."""

    def __init__(
        self,
        concurrency: int = 8,
        max_retries: int = 6,
        timeout: float = 120.0,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        max_connect_failures: int = 8,
    ):
        super().__init__()
        if concurrency < 1:
            raise UserError(f"concurrency must be >= 1, got {concurrency}")
        if max_retries < 0:
            raise UserError(f"max_retries must be >= 0, got {max_retries}")
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.timeout = timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_connect_failures = max_connect_failures
        self._connect_failures = 0  # failed connects in a row, over all requests
        self._reached = False  # set by the first successful preflight

    @property
    def where(self) -> str:
        return getattr(self, "base_url", None) or self.name

    # -- what a backend provides -------------------------------------------------------------
    async def _open(self) -> None:
        """Create the client inside the running event loop."""

    async def _close(self) -> None:
        """Close what ``_open`` created."""

    async def _attempt(self, request: GenerationRequest, params: SamplingParams) -> GenerationResult:
        raise NotImplementedError

    def _classify(self, error: BaseException) -> tuple[Verdict, str, float | None]:
        """(verdict, one-line description, server-requested wait in seconds or None)."""
        raise NotImplementedError

    # -- the engine --------------------------------------------------------------------------
    def backoff(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0-based)."""
        cap = min(self.backoff_max, self.backoff_base * 2**retry)
        wait = cap / 2 + random.uniform(0, cap / 2)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.backoff_max))
        return wait

    async def _one(self, request: GenerationRequest, params: SamplingParams, limit: asyncio.Semaphore) -> Any:
        async with limit:
            retry = 0
            while True:
                self.stats.add(requests=1)
                try:
                    result = await self._attempt(request, params)
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    verdict, why, retry_after = self._classify(e)
                    if verdict is Verdict.FATAL:
                        raise UserError(why) from None
                    self._count_connect_failure(e, why)
                    if verdict is Verdict.RETRY and retry < self.max_retries:
                        wait = self.backoff(retry, retry_after)
                        log.debug("%s: %s; retry %d in %.2fs", request.id, why, retry + 1, wait)
                        self.stats.add(retries=1)
                        retry += 1
                        await asyncio.sleep(wait)
                        continue
                    tries = f" after {retry + 1} attempts" if retry else ""
                    self.stats.add(failed=1)
                    return GenerationResult.failure(request, f"{why}{tries}")
                self._connect_failures = 0
                self.stats.add(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens)
                return result

    def _count_connect_failure(self, error: BaseException, why: str) -> None:
        if not is_connect_failure(error):
            return
        self._connect_failures += 1
        if self._connect_failures >= self.max_connect_failures:
            raise UserError(
                f"lost the server at {self.where}: {self._connect_failures} connection attempts in a row "
                f"failed ({why}); finished answers are kept: restart the server and re-run to resume"
            )

    async def _run_all(
        self, requests: Sequence[GenerationRequest], params: SamplingParams, on_result: OnResult
    ) -> None:
        self._connect_failures = 0
        await self._open()
        try:
            limit = asyncio.Semaphore(self.concurrency)
            tasks = [asyncio.ensure_future(self._one(r, params, limit)) for r in requests]
            try:
                for next_done in asyncio.as_completed(tasks):
                    on_result(await next_done)
            finally:  # a fatal error (or Ctrl-C): stop what is still queued or in flight
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await self._close()

    def preflight(self) -> None:
        """One TCP connect to ``base_url`` (once per backend): an unreachable server stops the run here."""
        base_url = getattr(self, "base_url", None)
        if base_url and not self._reached:
            run_coroutine(probe(base_url))
        self._reached = True

    def run(self, requests: Sequence[GenerationRequest], params: SamplingParams, on_result: OnResult) -> None:
        self.preflight()
        run_coroutine(self._run_all(requests, params, on_result))
