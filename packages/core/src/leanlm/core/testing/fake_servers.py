"""Loopback test servers speaking the OpenAI and TGI HTTP protocols, with scripted faults.

    with FakeServer(responder=lambda body: "hi", faults={"prompt 3": ["429", "500"]}) as server:
        backend = get_backend("openai", base_url=server.openai_url, api_key="x", model="m")
        ...
        assert len(server.requests) == ...

One threaded HTTP/1.1 server on 127.0.0.1 (a free port) answers every route:

- OpenAI: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models``
- TGI: ``POST /generate`` and ``POST /`` (text generation), ``POST /v1/chat/completions`` (messages API),
  ``GET /info``

The text comes from ``responder(body) -> str`` (``body`` is the request's parsed JSON); token
counts are whitespace word counts. Faults decide, per request, to answer 429 (with Retry-After),
401, 500/503, a malformed JSON body, or to sleep past the client's timeout before answering.
``latency`` (seconds) delays every answer, for benchmarks. ``requests`` is a thread-safe log.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Responder = Callable[[dict[str, Any]], str]


@dataclass(frozen=True)
class Fault:
    """One injected misbehaviour. ``kind``: rate_limit, status, unauthorized, malformed, delay."""

    kind: str
    status: int = 500
    retry_after: float = 0.0
    delay: float = 0.0

    @classmethod
    def parse(cls, spec: Fault | str | None) -> Fault | None:
        """``"429"``, ``"429:2"`` (Retry-After 2 s), ``"401"``, ``"500"``/``"503"``, ``"malformed"``,
        ``"timeout"``/``"delay:3"`` (sleep 3 s, then answer), or ``None``/``"ok"`` for no fault."""
        if spec is None or isinstance(spec, Fault):
            return spec
        name, _, arg = str(spec).partition(":")
        if name in {"ok", ""}:
            return None
        if name == "429":
            return cls("rate_limit", status=429, retry_after=float(arg or 0))
        if name == "401":
            return cls("unauthorized", status=401)
        if name.isdigit():
            return cls("status", status=int(name))
        if name == "malformed":
            return cls("malformed", status=200)
        if name in {"timeout", "delay"}:
            return cls("delay", delay=float(arg or 5.0))
        raise ValueError(f"unknown fault {spec!r}")


# faults: a list (applied to the 1st, 2nd, ... request received since the plan was set), a dict {key: [faults for that key's
# 1st, 2nd, ... attempt]} where key is the prompt or the last message's content, or a callable
# (request_number, body) -> fault.
FaultPlan = Sequence[Any] | dict[str, Sequence[Any]] | Callable[[int, dict[str, Any]], Any] | None


@dataclass
class LoggedRequest:
    number: int
    method: str
    path: str
    body: dict[str, Any] | None
    fault: Fault | None
    time: float
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str | None:
        return request_key(self.body)


def request_key(body: dict[str, Any] | None) -> str | None:
    """What identifies a request's content: the prompt, TGI's inputs, or the last message's content."""
    if not body:
        return None
    for name in ("prompt", "inputs"):
        if isinstance(body.get(name), str):
            return body[name]
    messages = body.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        content = messages[-1].get("content")
        return content if isinstance(content, str) else json.dumps(content)
    return None


def echo_responder(body: dict[str, Any]) -> str:
    """The default answer: ``"echo: "`` + the request's key."""
    return f"echo: {request_key(body)}"


def _words(text: str | None) -> int:
    return len((text or "").split())


def _prompt_text(body: dict[str, Any]) -> str:
    if "messages" in body:
        return " ".join(str(m.get("content", "")) for m in body.get("messages") or [] if isinstance(m, dict))
    return str(body.get("prompt", body.get("inputs", "")))


@dataclass
class _State:
    responder: Responder
    faults: FaultPlan
    latency: float
    model: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    log: list[LoggedRequest] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    last_number: int = 0
    in_flight: int = 0
    max_in_flight: int = 0  # the most POSTs being handled at once (checks a client's concurrency limit)
    plan_start: int = 0  # request number before the current fault plan was set (lists index from it)
    stop_after: int | None = None  # answer this many POSTs, then close every connection and stop listening
    on_stop: Callable[[], None] | None = None

    def decide(self, body: dict[str, Any] | None) -> tuple[int, Fault | None]:
        with self.lock:
            self.last_number += 1
            number = self.last_number
            plan, spec = self.faults, None
            if callable(plan):
                spec = plan(number, body or {})
            elif isinstance(plan, dict):
                key = request_key(body) or ""
                attempt = self.attempts.get(key, 0)
                self.attempts[key] = attempt + 1
                seq = plan.get(key, ())
                spec = seq[attempt] if attempt < len(seq) else None
            elif plan:
                index = number - 1 - self.plan_start
                spec = plan[index] if index < len(plan) else None
            return number, Fault.parse(spec)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections, as against a real server
    # TCP_NODELAY, as real servers (uvicorn, TGI's router) set it: the headers and the body go out in two
    # writes, and with Nagle's algorithm the body waited for the client's delayed ACK of the headers
    # (about 40 ms on Linux), which made every answer 40 ms late and the client look slow.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # silence the per-request stderr lines
        pass

    def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout): nothing to do
            self.close_connection = True

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        state = self.server.state
        path = self.path.split("?")[0].rstrip("/")
        with state.lock:
            state.log.append(LoggedRequest(0, "GET", path, None, None, time.time()))
        if path in {"/v1/models", "/models"}:
            self._json(
                200, {"object": "list", "data": [{"id": state.model, "object": "model", "owned_by": "fake"}]}
            )
        elif path == "/info":
            self._json(200, {"model_id": state.model, "max_concurrent_requests": 128})
        elif path == "/health":
            self._send(200, b"")
        else:
            self._json(404, {"error": f"no route GET {path}"})

    def do_POST(self) -> None:  # noqa: N802
        state = self.server.state
        path = self.path.split("?")[0].rstrip("/") or "/"
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = None
        number, fault = state.decide(body)
        headers = {k.lower(): v for k, v in self.headers.items()}
        with state.lock:
            state.log.append(LoggedRequest(number, "POST", path, body, fault, time.time(), headers))
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            self._answer(path, body, number, fault)
        finally:
            with state.lock:
                state.in_flight -= 1
        if state.stop_after is not None and number >= state.stop_after:
            self.close_connection = True  # a server that went away keeps no connection open
            if number == state.stop_after and state.on_stop is not None:
                threading.Thread(target=state.on_stop, daemon=True).start()

    def _answer(self, path: str, body: Any, number: int, fault: Fault | None) -> None:
        state = self.server.state
        if state.latency:
            time.sleep(state.latency)
        if body is None or not isinstance(body, dict):
            return self._json(400, {"error": {"message": "request body is not a JSON object"}})
        if fault is not None:
            if fault.kind == "delay":
                time.sleep(fault.delay)  # then answer normally: the client has usually timed out by now
            elif fault.kind == "malformed":
                return self._send(200, b'{"id": "broken", "choices": [')
            else:
                headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.kind == "rate_limit" else None
                message = {429: "rate limited", 401: "invalid api key"}.get(fault.status, "server error")
                return self._json(
                    fault.status, {"error": {"message": message, "code": fault.status}}, headers
                )
        routes = {
            "/v1/chat/completions": self._chat,
            "/chat/completions": self._chat,
            "/v1/completions": self._completion,
            "/completions": self._completion,
            "/generate": self._tgi_generate,
            "/": self._tgi_generate,
        }
        handler = routes.get(path)
        if handler is None:
            return self._json(404, {"error": {"message": f"no route POST {path}"}})
        handler(body, number)

    # -- protocol answers ------------------------------------------------------------------
    def _text(self, body: dict[str, Any]) -> str:
        text = self.server.state.responder(body)
        stop = body.get("stop") or (body.get("parameters") or {}).get("stop")
        for s in [stop] if isinstance(stop, str) else stop or []:
            if s and s in text:
                text = text[: text.find(s)]
        return text

    def _usage(self, body: dict[str, Any], text: str) -> dict[str, int]:
        p, c = _words(_prompt_text(body)), _words(text)
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    def _chat(self, body: dict[str, Any], number: int) -> None:
        if not isinstance(body.get("messages"), list):
            return self._json(400, {"error": {"message": "'messages' is required"}})
        text = self._text(body)
        self._json(
            200,
            {
                "id": f"chatcmpl-{number}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model") or self.server.state.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                        "logprobs": None,
                    }
                ],
                "usage": self._usage(body, text),
            },
        )

    def _completion(self, body: dict[str, Any], number: int) -> None:
        if not isinstance(body.get("prompt"), str):
            return self._json(400, {"error": {"message": "'prompt' must be a string"}})
        text = self._text(body)
        self._json(
            200,
            {
                "id": f"cmpl-{number}",
                "object": "text_completion",
                "created": int(time.time()),
                "model": body.get("model") or self.server.state.model,
                "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
                "usage": self._usage(body, text),
            },
        )

    def _tgi_generate(self, body: dict[str, Any], number: int) -> None:
        if not isinstance(body.get("inputs"), str):
            return self._json(422, {"error": "'inputs' must be a string", "error_type": "validation"})
        text = self._text(body)
        out: dict[str, Any] = {"generated_text": text}
        params = body.get("parameters") or {}
        if params.get("details"):
            out["details"] = {
                "finish_reason": "eos_token",
                "generated_tokens": _words(text),
                "seed": params.get("seed"),
                "prefill": [],
                "tokens": [],
            }
        # TGI answers /generate with an object, the compat route "/" with a one-element list
        self._json(200, out if self.path.rstrip("/") == "/generate" else [out])


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a handler sleeping through a "timeout" fault must not delay shutdown
    request_queue_size = 256
    allow_reuse_address = True
    state: _State


class FakeServer:
    """A loopback OpenAI + TGI server; use as a context manager (it stops itself on exit)."""

    def __init__(
        self,
        responder: Responder | None = None,
        faults: FaultPlan = None,
        latency: float = 0.0,
        model: str = "fake-model",
    ):
        self.state = _State(responder or echo_responder, faults, latency, model)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> FakeServer:
        if self._server is None:
            self._server = _Server(("127.0.0.1", 0), _Handler)
            self._server.state = self.state
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
            self._thread.daemon = True
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server, self._thread = None, None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the server is not running")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """The root, e.g. ``http://127.0.0.1:40123`` (what a TGI client takes)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_url(self) -> str:
        """The OpenAI base URL, ``<url>/v1``."""
        return f"{self.url}/v1"

    # -- control and inspection --------------------------------------------------------------
    def set_faults(self, faults: FaultPlan) -> None:
        with self.state.lock:
            self.state.faults = faults
            self.state.attempts.clear()
            self.state.plan_start = self.state.last_number

    def stop_after(self, answered: int) -> None:
        """Answer ``answered`` more POSTs, then go away (connections closed, the port refuses)."""
        with self.state.lock:
            self.state.stop_after = self.state.last_number + answered
            self.state.on_stop = self.stop

    def set_latency(self, seconds: float) -> None:
        self.state.latency = seconds

    @property
    def requests(self) -> list[LoggedRequest]:
        """A copy of the log of POST and GET requests received, in arrival order."""
        with self.state.lock:
            return list(self.state.log)

    def posts(self) -> list[LoggedRequest]:
        return [r for r in self.requests if r.method == "POST"]

    def keys(self) -> list[str | None]:
        """The key (prompt / last message) of every POST received, in arrival order."""
        return [r.key for r in self.posts()]

    @property
    def max_in_flight(self) -> int:
        return self.state.max_in_flight

    def clear(self) -> None:
        """Forget the log and the in-flight maximum."""
        with self.state.lock:
            self.state.log.clear()
            self.state.max_in_flight = self.state.in_flight
