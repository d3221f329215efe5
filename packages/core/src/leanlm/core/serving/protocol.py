"""The request side of the OpenAI API that ``leanlm serve`` speaks: bodies, limits and errors.

Errors use OpenAI's shape ``{"error": {"message", "type", "param", "code"}}`` with the HTTP status
the route raises them with (400 malformed, 401 key, 404 model, 503 busy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field


@dataclass
class ServerLimits:
    max_prompt_tokens: int = 4096
    max_tokens: int = 1024  # the most new tokens one request may ask for
    default_max_tokens: int = 256


class APIError(Exception):
    """An error answered in OpenAI's JSON shape with HTTP ``status`` (and optional headers)."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code
        self.headers = headers

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


class SamplingBody(BaseModel):
    """The sampling fields both completion routes take (OpenAI's names and ranges; n must be 1)."""

    # clients send fields (user, logprobs: false, ...) we need not act on
    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    n: int = Field(1, ge=1, le=1)


class CompletionBody(SamplingBody):
    prompt: str | list[str]


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer"]
    content: str


class ChatBody(SamplingBody):
    messages: list[Message] = Field(min_length=1)


def stop_list(stop: str | list[str] | None) -> tuple[str, ...]:
    """The request's stop strings (at most 4, as OpenAI allows), empty ones dropped."""
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if len(stops) > 4:
        raise APIError(400, "at most 4 stop sequences are allowed", param="stop")
    return tuple(s for s in stops if s)
