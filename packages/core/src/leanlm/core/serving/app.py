"""The OpenAI-compatible HTTP API of ``leanlm serve`` (FastAPI): models, completions, chat, streaming.

Routes: ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions`` (both with
``"stream": true`` as server-sent events ending in ``data: [DONE]``), ``GET /health``. Errors use
OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``: 400 for a malformed body, an
unknown field value, a prompt over ``max_prompt_tokens`` or ``max_tokens`` over the server's
limit; 401 for a missing or wrong API key (when the server has one); 404 for a model it does not
serve; 503 when the queue is full (with Retry-After). A client that disconnects stops its decoding.
Request bodies and errors live in ``protocol``, answer shapes and the event stream in ``responses``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse

from leanlm.core.errors import UserError
from leanlm.core.generation.types import GenerationRequest, SamplingParams
from leanlm.core.serving.engine import EngineBase, Job, QueueFull
from leanlm.core.serving.protocol import (
    APIError,
    ChatBody,
    CompletionBody,
    Message,
    SamplingBody,
    ServerLimits,
    stop_list,
)
from leanlm.core.serving.responses import collect, completion_body, sse_stream

__all__ = ["APIError", "ChatBody", "CompletionBody", "Message", "ServerLimits", "create_app"]


async def _api_error(request: Request, exc: APIError) -> JSONResponse:
    return exc.response()


async def _bad_body(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A body FastAPI could not validate, as a 400 naming the first bad field."""
    first = exc.errors()[0] if exc.errors() else {"msg": "invalid request body", "loc": ()}
    where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
    message = "request body is not valid JSON" if first.get("type") == "json_invalid" else first["msg"]
    return APIError(400, f"{where}: {message}" if where else message, param=where or None).response()


def _auth_middleware(api_key: str | None) -> Any:
    """A middleware answering 401 to a ``/v1`` request without ``Authorization: Bearer <api_key>``."""

    async def auth(request: Request, call_next: Any) -> Any:
        if api_key and request.url.path.startswith("/v1"):
            given = request.headers.get("authorization", "")
            if given != f"Bearer {api_key}":
                message = "missing or wrong API key (send Authorization: Bearer <key>)"
                return APIError(401, message, kind="authentication_error", code="invalid_api_key").response()
        return await call_next(request)

    return auth


class _Routes:
    """The handlers of the ``/v1`` routes for one engine serving one model name."""

    def __init__(self, engine: EngineBase, served_name: str, limits: ServerLimits):
        self.engine, self.served_name, self.limits = engine, served_name, limits

    async def health(self) -> dict[str, Any]:
        return {"status": "ok", "waiting": self.engine.waiting.qsize()}

    async def models(self) -> dict[str, Any]:
        card = {"id": self.served_name, "object": "model", "created": 0, "owned_by": "leanlm"}
        return {"object": "list", "data": [card]}

    async def completions(self, body: CompletionBody, request: Request) -> Any:
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if len(prompts) != 1:
            message = "send one prompt per request (a list of several is not supported)"
            raise APIError(400, message, param="prompt")
        job = self.submit(body, GenerationRequest(id="0", prompt=prompts[0]))
        return await self.answer(request, job, False, body)

    async def chat_completions(self, body: ChatBody, request: Request) -> Any:
        # OpenAI's newer "developer" role is the system prompt for the models served here
        messages = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.content}
            for m in body.messages
        ]
        job = self.submit(body, GenerationRequest(id="0", messages=messages))
        return await self.answer(request, job, True, body)

    def _new_tokens(self, body: SamplingBody) -> int:
        """The request's ``max_tokens`` (the server's default if unset); 400 over the server's limit."""
        wanted = body.max_completion_tokens or body.max_tokens or self.limits.default_max_tokens
        if wanted > self.limits.max_tokens:
            message = f"max_tokens {wanted} is over this server's limit of {self.limits.max_tokens}"
            raise APIError(400, message, param="max_tokens")
        return wanted

    def _prompt_ids(self, request: GenerationRequest) -> list[int]:
        """The prompt's token ids; 400 for a prompt the model cannot take or one over the limit."""
        try:
            ids = self.engine.prompt_ids(request)
        except UserError as e:  # e.g. chat messages for a model without a chat template
            raise APIError(400, str(e), param="messages") from None
        if len(ids) > self.limits.max_prompt_tokens:
            most = self.limits.max_prompt_tokens
            message = f"the prompt has {len(ids)} tokens; this server accepts at most {most}"
            raise APIError(400, message, param="prompt", code="context_length_exceeded")
        return ids

    def submit(self, body: SamplingBody, request: GenerationRequest) -> Job:
        """Check the request against the served model and limits and queue it (503 when full)."""
        if body.model != self.served_name:
            message = f"model {body.model!r} is not served here; this server serves {self.served_name!r}"
            raise APIError(404, message, param="model", code="model_not_found")
        wanted = self._new_tokens(body)
        ids = self._prompt_ids(request)
        params = SamplingParams(
            max_new_tokens=wanted,
            temperature=body.temperature,
            top_p=body.top_p,
            seed=body.seed or 0,
            stop=stop_list(body.stop),
        )
        job = Job(ids, params, asyncio.get_running_loop(), request)
        try:
            self.engine.submit(job)
        except QueueFull as e:
            raise APIError(
                503, f"server busy: {e}; retry shortly", kind="server_error", headers={"Retry-After": "1"}
            ) from None
        return job

    async def answer(self, request: Request, job: Job, chat: bool, body: SamplingBody) -> Any:
        """The job's answer: one JSON body, or a server-sent event stream when ``body.stream``."""
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        if body.stream:
            events = sse_stream(request, job, chat, rid, created, self.served_name)
            return StreamingResponse(
                events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
            )
        text, reason, n = await collect(request, job)
        return completion_body(rid, created, self.served_name, chat, text, reason, len(job.prompt_ids), n)


def create_app(
    engine: EngineBase, served_name: str, limits: ServerLimits, api_key: str | None = None
) -> FastAPI:
    """The FastAPI application serving ``engine`` under the model name ``served_name``."""
    app = FastAPI(title="leanlm serve", version="1")
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(RequestValidationError, _bad_body)
    app.middleware("http")(_auth_middleware(api_key))
    routes = _Routes(engine, served_name, limits)
    app.get("/health")(routes.health)
    app.get("/v1/models")(routes.models)
    app.post("/v1/completions")(routes.completions)
    app.post("/v1/chat/completions")(routes.chat_completions)
    return app
