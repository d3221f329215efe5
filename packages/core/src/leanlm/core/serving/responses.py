"""The response side: a job's events read in the event loop and shaped as OpenAI answers.

A job yields ``("text", piece)`` events, then ``("end", finish_reason, completion_tokens)`` or
``("error", message)``. Non-streamed requests gather them into one ``text_completion`` /
``chat.completion`` body; streamed ones become server-sent events, one chunk per piece, then
``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request

from leanlm.core.serving.engine import Job
from leanlm.core.serving.protocol import APIError


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
    """(answer text, finish_reason, completion tokens) once the job ends."""
    parts = []
    while True:
        event = await next_event(request, job)
        if event[0] == "text":
            parts.append(event[1])
        elif event[0] == "end":
            return "".join(parts), event[1], event[2]
        else:
            raise APIError(500, f"decoding failed: {event[1]}", kind="server_error")


def completion_body(
    rid: str, created: int, model: str, chat: bool, text: str, reason: str, prompt_tokens: int, n: int
) -> dict[str, Any]:
    """A whole (non-streamed) ``chat.completion`` or ``text_completion`` answer with its usage."""
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": n, "total_tokens": prompt_tokens + n}
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason}
        kind = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
        kind = "text_completion"
    return {
        "id": rid,
        "object": kind,
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage,
    }


def sse_chunk(
    rid: str, created: int, model: str, chat: bool, delta: str | None, reason: str | None, role: bool = False
) -> str:
    """One server-sent event: a chat delta (the first one carries the role) or a completion piece."""
    if chat:
        d: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
        if delta:
            d["content"] = delta
        choice: dict[str, Any] = {"index": 0, "delta": d, "finish_reason": reason}
    else:
        choice = {"index": 0, "text": delta or "", "logprobs": None, "finish_reason": reason}
    kind = "chat.completion.chunk" if chat else "text_completion"
    data = {"id": rid, "object": kind, "created": created, "model": model, "choices": [choice]}
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def sse_stream(
    request: Request, job: Job, chat: bool, rid: str, created: int, model: str
) -> AsyncIterator[str]:
    """The job's events as server-sent events, ``data: [DONE]`` last; the job is cancelled on exit."""
    try:
        if chat:
            yield sse_chunk(rid, created, model, chat, None, None, role=True)
        while True:
            event = await next_event(request, job)
            if event[0] == "text":
                yield sse_chunk(rid, created, model, chat, event[1], None)
            elif event[0] == "end":
                yield sse_chunk(rid, created, model, chat, None, event[1])
                break
            else:
                err = {"error": {"message": f"decoding failed: {event[1]}", "type": "server_error"}}
                yield f"data: {json.dumps(err)}\n\n"
                break
        yield "data: [DONE]\n\n"
    finally:
        job.cancel()  # a no-op after the end; stops the decoding of a client that went away
