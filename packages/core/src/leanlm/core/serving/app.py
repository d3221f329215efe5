"""The OpenAI-compatible HTTP API of ``leanlm serve`` (FastAPI): models, completions, chat, streaming.

Routes: ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions`` (both with
``"stream": true`` as server-sent events ending in ``data: [DONE]``), ``GET /health``. Errors use
OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``: 400 for a malformed body, an
unknown field value, a prompt over ``max_prompt_tokens`` or ``max_tokens`` over the server's
limit; 401 for a missing or wrong API key (when the server has one); 404 for a model it does not
serve; 503 when the queue is full (with Retry-After). A client that disconnects stops its decoding.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from leanlm.core.errors import UserError
from leanlm.core.generation.types import GenerationRequest, SamplingParams
from leanlm.core.serving.engine import EngineBase, Job, QueueFull


@dataclass
class ServerLimits:
    max_prompt_tokens: int = 4096
    max_tokens: int = 1024  # the most new tokens one request may ask for
    default_max_tokens: int = 256


class APIError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code
        self.headers = headers

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


class _Sampling(BaseModel):
    model_config = ConfigDict(
        extra="ignore"
    )  # clients send fields (user, logprobs: false, ...) we need not act on

    model: str
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    n: int = Field(1, ge=1, le=1)


class CompletionBody(_Sampling):
    prompt: str | list[str]


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer"]
    content: str


class ChatBody(_Sampling):
    messages: list[Message] = Field(min_length=1)


def _stop_list(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if len(stops) > 4:
        raise APIError(400, "at most 4 stop sequences are allowed", param="stop")
    return tuple(s for s in stops if s)


def create_app(
    engine: EngineBase, served_name: str, limits: ServerLimits, api_key: str | None = None
) -> FastAPI:
    """The FastAPI application serving ``engine`` under the model name ``served_name``."""
    app = FastAPI(title="leanlm serve", version="1")

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _bad_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"msg": "invalid request body", "loc": ()}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        message = "request body is not valid JSON" if first.get("type") == "json_invalid" else first["msg"]
        return APIError(400, f"{where}: {message}" if where else message, param=where or None).response()

    @app.middleware("http")
    async def _auth(request: Request, call_next: Any) -> Any:
        if api_key and request.url.path.startswith("/v1"):
            given = request.headers.get("authorization", "")
            if given != f"Bearer {api_key}":
                return APIError(401, "missing or wrong API key (send Authorization: Bearer <key>)",
                                kind="authentication_error", code="invalid_api_key").response()  # fmt: skip
        return await call_next(request)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "waiting": engine.waiting.qsize()}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": served_name, "object": "model", "created": 0, "owned_by": "leanlm"}],
        }

    def job_for(body: _Sampling, request: GenerationRequest) -> Job:
        if body.model != served_name:
            raise APIError(404, f"model {body.model!r} is not served here; this server serves {served_name!r}",
                           param="model", code="model_not_found")  # fmt: skip
        wanted = body.max_completion_tokens or body.max_tokens or limits.default_max_tokens
        if wanted > limits.max_tokens:
            raise APIError(400, f"max_tokens {wanted} is over this server's limit of {limits.max_tokens}",
                           param="max_tokens")  # fmt: skip
        try:
            ids = engine.prompt_ids(request)
        except UserError as e:  # e.g. chat messages for a model without a chat template
            raise APIError(400, str(e), param="messages") from None
        if len(ids) > limits.max_prompt_tokens:
            raise APIError(400, f"the prompt has {len(ids)} tokens; this server accepts at most "
                                f"{limits.max_prompt_tokens}", param="prompt", code="context_length_exceeded")  # fmt: skip
        params = SamplingParams(max_new_tokens=wanted, temperature=body.temperature, top_p=body.top_p,
                                seed=body.seed or 0, stop=_stop_list(body.stop))  # fmt: skip
        job = Job(ids, params, asyncio.get_running_loop(), request)
        try:
            engine.submit(job)
        except QueueFull as e:
            raise APIError(503, f"server busy: {e}; retry shortly", kind="server_error",
                           headers={"Retry-After": "1"}) from None  # fmt: skip
        return job

    async def run(request: Request, job: Job, chat: bool, body: _Sampling) -> Any:
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        if body.stream:
            return StreamingResponse(stream(request, job, chat, rid, created), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})  # fmt: skip
        text, reason, n = await collect(request, job)
        usage = {"prompt_tokens": len(job.prompt_ids), "completion_tokens": n,
                 "total_tokens": len(job.prompt_ids) + n}  # fmt: skip
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason}
            return {"id": rid, "object": "chat.completion", "created": created, "model": served_name,
                    "choices": [choice], "usage": usage}  # fmt: skip
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
        return {"id": rid, "object": "text_completion", "created": created, "model": served_name,
                "choices": [choice], "usage": usage}  # fmt: skip

    async def next_event(request: Request, job: Job) -> tuple:
        """The job's next event; cancels the job when the client disconnects while we wait."""
        while True:
            try:
                return await asyncio.wait_for(job.events.get(), timeout=0.5)
            except TimeoutError:
                if await request.is_disconnected():
                    job.cancel()
                    raise asyncio.CancelledError from None

    async def collect(request: Request, job: Job) -> tuple[str, str, int]:
        parts = []
        while True:
            event = await next_event(request, job)
            if event[0] == "text":
                parts.append(event[1])
            elif event[0] == "end":
                return "".join(parts), event[1], event[2]
            else:
                raise APIError(500, f"decoding failed: {event[1]}", kind="server_error")

    async def stream(request: Request, job: Job, chat: bool, rid: str, created: int) -> AsyncIterator[str]:
        kind = "chat.completion.chunk" if chat else "text_completion"

        def chunk(delta: str | None, reason: str | None, role: bool = False) -> str:
            if chat:
                d: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
                if delta:
                    d["content"] = delta
                choice: dict[str, Any] = {"index": 0, "delta": d, "finish_reason": reason}
            else:
                choice = {"index": 0, "text": delta or "", "logprobs": None, "finish_reason": reason}
            data = {"id": rid, "object": kind, "created": created, "model": served_name, "choices": [choice]}
            return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

        try:
            if chat:
                yield chunk(None, None, role=True)
            while True:
                event = await next_event(request, job)
                if event[0] == "text":
                    yield chunk(event[1], None)
                elif event[0] == "end":
                    yield chunk(None, event[1])
                    break
                else:
                    err = {"error": {"message": f"decoding failed: {event[1]}", "type": "server_error"}}
                    yield f"data: {json.dumps(err)}\n\n"
                    break
            yield "data: [DONE]\n\n"
        finally:
            job.cancel()  # a no-op after the end; stops the decoding of a client that went away

    @app.post("/v1/completions")
    async def completions(body: CompletionBody, request: Request) -> Any:
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if len(prompts) != 1:
            raise APIError(
                400, "send one prompt per request (a list of several is not supported)", param="prompt"
            )
        job = job_for(body, GenerationRequest(id="0", prompt=prompts[0]))
        return await run(request, job, False, body)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatBody, request: Request) -> Any:
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.content}
                    for m in body.messages]  # fmt: skip
        job = job_for(body, GenerationRequest(id="0", messages=messages))
        return await run(request, job, True, body)

    return app
