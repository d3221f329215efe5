"""The ``openai`` backend: any OpenAI-compatible server (OpenAI, a vLLM server, TGI's messages API).

Chats go to ``/chat/completions``, plain prompts to ``/completions``, through ``AsyncOpenAI``'s
documented low-level ``post`` (authentication, base URL, timeouts and the typed HTTP errors of the
SDK, but no typed request/response models: those cost about 0.3 ms of CPU per request, which
shows at high concurrency on a small CPU, and the plain JSON is checked here instead).
The client's own retries are off (``max_retries=0``): the engine in ``remote.py`` retries, so
that ``stats.retries`` is true and the backoff is one policy for all backends.
"""

from __future__ import annotations

import os
from typing import Any

from leanlm.core.errors import UserError
from leanlm.core.generation.remote import MalformedResponse, RemoteBackend, Verdict, normalize_url
from leanlm.core.generation.types import GenerationRequest, GenerationResult, SamplingParams

KEY_HELP = (
    "set OPENAI_API_KEY (or pass api_key=/--api-key); a local server that ignores keys "
    "(vLLM, TGI, a test server) still needs one, any value works, e.g. OPENAI_API_KEY=EMPTY"
)


def _retry_after(error: Any) -> float | None:
    """Seconds from a Retry-After (or retry-after-ms) header, when the server sent one."""
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None) or {}
    try:
        if headers.get("retry-after-ms") is not None:
            return float(headers["retry-after-ms"]) / 1000
        if headers.get("retry-after") is not None:
            return float(headers["retry-after"])
    except ValueError:  # an HTTP date instead of seconds: fall back to our own backoff
        return None
    return None


def _parse(data: Any, chat: bool) -> tuple[str, dict[str, Any], str | None]:
    """(text, usage, finish_reason) from a completions or chat-completions JSON body; ``MalformedResponse`` otherwise."""
    try:
        choice = data["choices"][0]
        text = choice["message"]["content"] if chat else choice["text"]
    except (TypeError, KeyError, IndexError):  # also a non-JSON body, which the SDK hands back as a str
        raise MalformedResponse(f"response without text: {str(data)[:120]!r}") from None
    if not isinstance(text, str):
        raise MalformedResponse(f"response text is {type(text).__name__}, expected a string")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return text, usage, choice.get("finish_reason") if isinstance(choice, dict) else None


class OpenAIBackend(RemoteBackend):
    name = "openai"

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        max_tokens_field: str = "max_tokens",
        extra_body: dict[str, Any] | None = None,
        **remote: Any,
    ):
        """``model``: None asks the server (``/models``) and takes the first (what a vLLM server
        serves). ``base_url``/``api_key`` default to ``OPENAI_BASE_URL``/``OPENAI_API_KEY``; a bare
        ``host:port`` becomes ``http://host:port/v1``. ``max_tokens_field``: ``max_completion_tokens``
        for OpenAI reasoning models. ``extra_body``: extra JSON fields (e.g. vLLM's ``top_k``).
        ``remote``: ``RemoteBackend``'s knobs (``concurrency``, ``max_retries``, ``timeout``,
        ``backoff_base``, ``backoff_max``; ``BackendSpec.remote_options()``)."""
        super().__init__(**remote)
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            raise UserError(f"no API key for the openai backend: {KEY_HELP}")
        url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        self.base_url = normalize_url(url) if url else None
        self.api_key = key
        self.model = model
        self.max_tokens_field = max_tokens_field
        self.extra_body = dict(extra_body or {})
        self._client: Any = None
        import openai  # noqa: F401 (a second or more: pay it when the backend is built)

    @property
    def where(self) -> str:
        return self.base_url or "api.openai.com"

    async def _open(self) -> None:
        from openai import AsyncOpenAI  # imported in __init__ already: the cost is not paid mid-run

        self._client = AsyncOpenAI(
            api_key=self.api_key, base_url=self.base_url, timeout=self.timeout, max_retries=0
        )
        if self.model is None:
            try:
                models = await self._client.models.list()
                self.model = models.data[0].id
            except Exception as e:
                raise UserError(
                    f"no model given and {self.where} did not list one ({e}); pass model="
                ) from None

    async def _close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def _arguments(self, params: SamplingParams) -> dict[str, Any]:
        args: dict[str, Any] = {
            "model": self.model,
            self.max_tokens_field: params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
        }
        if params.stop:
            args["stop"] = list(params.stop)
        args.update(self.extra_body)
        return args

    async def _attempt(self, request: GenerationRequest, params: SamplingParams) -> GenerationResult:
        body = self._arguments(params)
        if request.messages is not None:
            body["messages"] = request.messages
            data = await self._client.post("/chat/completions", cast_to=object, body=body)
        else:
            body["prompt"] = request.prompt
            data = await self._client.post("/completions", cast_to=object, body=body)
        text, usage, finish_reason = _parse(data, chat=request.messages is not None)
        meta = dict(request.meta)
        if finish_reason is not None:  # "length" tells callers the answer was cut at max_new_tokens
            meta["finish_reason"] = finish_reason
        return GenerationResult(
            id=request.id,
            text=text,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            meta=meta,
        )

    def _classify(self, error: BaseException) -> tuple[Verdict, str, float | None]:
        import openai

        if isinstance(error, openai.AuthenticationError):
            return Verdict.FATAL, f"{self.where} rejected the API key (401): {KEY_HELP}", None
        if isinstance(error, openai.PermissionDeniedError):
            return Verdict.FATAL, f"{self.where} refused access (403): {error.message}", None
        if isinstance(error, openai.NotFoundError):
            return (
                Verdict.FATAL,
                f"{self.where}: model {self.model!r} or endpoint not found (404): {error.message}",
                None,
            )
        if isinstance(error, openai.RateLimitError):
            if getattr(error, "code", None) == "insufficient_quota":  # no retry will help
                return Verdict.FATAL, f"{self.where}: quota exhausted (429 insufficient_quota)", None
            return Verdict.RETRY, "rate limited (429)", _retry_after(error)
        if isinstance(error, openai.APIStatusError):
            status = error.status_code
            verdict = Verdict.RETRY if status >= 500 or status in {408, 409} else Verdict.FAIL
            return verdict, f"HTTP {status}: {error.message}"[:300], _retry_after(error)
        if isinstance(error, openai.APITimeoutError):
            return Verdict.RETRY, f"timed out after {self.timeout:g}s", None
        if isinstance(error, openai.APIConnectionError):
            return Verdict.RETRY, f"connection error to {self.where}: {error.__cause__ or error}", None
        if isinstance(error, (openai.APIResponseValidationError, ValueError)):
            return Verdict.RETRY, f"malformed response: {error}"[:300], None
        return Verdict.FAIL, f"{type(error).__name__}: {error}"[:300], None
