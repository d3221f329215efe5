"""The ``tgi`` backend: a text-generation-inference server through ``huggingface_hub``.

Prompts go to TGI's ``/generate`` (``AsyncInferenceClient.text_generation``), chats to its messages
API ``/v1/chat/completions`` (``chat_completion``). Retries and concurrency: ``remote.py``.

The client gets an ``httpx.AsyncClient`` of ours instead of huggingface_hub's session: the hub's
session refuses every request when ``HF_HUB_OFFLINE=1`` (even to a server on this machine) and
we want its connection pool sized to ``concurrency``.
"""

from __future__ import annotations

import os
from typing import Any

from leanlm.core.errors import UserError
from leanlm.core.generation.remote import MalformedResponse, RemoteBackend, Verdict, normalize_url
from leanlm.core.generation.types import GenerationRequest, GenerationResult, SamplingParams


class TGIBackend(RemoteBackend):
    name = "tgi"

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        **remote: Any,
    ):
        """``base_url``: the server root (``host:port`` works); default ``TGI_BASE_URL``.
        ``api_key``: sent as a bearer token (default ``HF_TOKEN``, for Inference Endpoints).
        ``remote``: ``RemoteBackend``'s knobs (``concurrency``, ``max_retries``, ``timeout``, ...)."""
        super().__init__(**remote)
        url = base_url or os.environ.get("TGI_BASE_URL")
        if not url:
            raise UserError("the tgi backend needs the server address: base_url=/--base-url or TGI_BASE_URL")
        self.base_url = normalize_url(url, api_path="")
        self.api_key = api_key or os.environ.get("HF_TOKEN") or None
        self._client: Any = None
        self._http: Any = None

    async def _open(self) -> None:
        import httpx
        from huggingface_hub import AsyncInferenceClient

        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        self._http = httpx.AsyncClient(timeout=self.timeout, limits=limits)
        # a placeholder token keeps huggingface_hub from looking up (and sending) a saved hub login
        self._client = AsyncInferenceClient(token=self.api_key or "none", timeout=self.timeout)
        self._client._async_client = self._http  # see the module docstring

    async def _close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        self._client = self._http = None

    async def _attempt(self, request: GenerationRequest, params: SamplingParams) -> GenerationResult:
        sampling: dict[str, Any] = {"seed": params.seed, "stop": list(params.stop) if params.stop else None}
        if request.messages is not None:
            out = await self._client.chat_completion(
                request.messages,
                model=self.base_url,
                max_tokens=params.max_new_tokens,
                temperature=params.temperature,
                top_p=params.top_p,
                **sampling,
            )
            choices = getattr(out, "choices", None)
            text = choices[0].message.content if choices else None
            usage = getattr(out, "usage", None)
            prompt_tokens = getattr(usage, "prompt_tokens", None)
            completion_tokens = getattr(usage, "completion_tokens", None)
        else:
            # TGI rejects temperature 0 and top_p 1: greedy is do_sample=False with both left out
            knobs = {} if params.greedy else {"temperature": params.temperature, "do_sample": True}
            if not params.greedy and params.top_p < 1:
                knobs["top_p"] = params.top_p
            out = await self._client.text_generation(
                request.prompt,
                model=f"{self.base_url}/generate",
                details=True,
                max_new_tokens=params.max_new_tokens,
                **knobs,
                **sampling,
            )
            text = getattr(out, "generated_text", None)
            details = getattr(out, "details", None)
            prompt_tokens = None  # TGI reports prompt tokens only with decoder_input_details
            completion_tokens = getattr(details, "generated_tokens", None)
        if not isinstance(text, str):
            raise MalformedResponse(f"response without text: {str(out)[:120]!r}")
        return GenerationResult(
            id=request.id,
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            meta=dict(request.meta),
        )

    def _classify(self, error: BaseException) -> tuple[Verdict, str, float | None]:
        import httpx
        from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError

        # huggingface_hub 1.x wraps HTTP errors in HfHubHTTPError; 2.x lets httpx's own error through
        response = getattr(error, "response", None)
        if isinstance(error, (HfHubHTTPError, httpx.HTTPStatusError)) and response is not None:
            status = response.status_code
            first_line = str(error).splitlines()[0][:200]
            if status in {401, 403}:
                return (
                    Verdict.FATAL,
                    f"{self.base_url} refused the token ({status}): set HF_TOKEN or api_key=",
                    None,
                )
            if status == 404:
                return Verdict.FATAL, f"{self.base_url}: endpoint not found (404); is it a TGI server?", None
            retry_after = response.headers.get("retry-after")
            try:
                wait = float(retry_after) if retry_after is not None else None
            except ValueError:
                wait = None
            if status == 429 or status >= 500 or status in {408, 409}:
                return Verdict.RETRY, f"HTTP {status}: {first_line}", wait
            return Verdict.FAIL, f"HTTP {status}: {first_line}", None
        if isinstance(error, (InferenceTimeoutError, httpx.TimeoutException, TimeoutError)):
            return Verdict.RETRY, f"timed out after {self.timeout:g}s", None
        if isinstance(error, httpx.TransportError):
            return Verdict.RETRY, f"connection error to {self.base_url}: {error!r}"[:300], None
        if isinstance(error, (ValueError, KeyError, TypeError)):
            return Verdict.RETRY, f"malformed response: {error}"[:300], None
        return Verdict.FAIL, f"{type(error).__name__}: {error}"[:300], None
