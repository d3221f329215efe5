"""The loopback fake server speaks each protocol and injects the faults it is told to."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from leanlm.core.testing.fake_servers import FakeServer, Fault


def post(server: FakeServer, path: str, body: dict, timeout: float = 5.0) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=timeout)


def test_protocol_shapes():
    with FakeServer(lambda body: "one two three", model="m1") as server:
        chat = post(
            server, "/v1/chat/completions", {"model": "x", "messages": [{"role": "user", "content": "hi"}]}
        )
        assert chat.status_code == 200
        data = chat.json()
        assert (
            data["object"] == "chat.completion"
            and data["choices"][0]["message"]["content"] == "one two three"
        )
        assert data["usage"] == {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}
        comp = post(server, "/v1/completions", {"model": "x", "prompt": "a b", "stop": ["two"]}).json()
        assert comp["choices"][0]["text"] == "one " and comp["usage"]["prompt_tokens"] == 2
        tgi = post(server, "/generate", {"inputs": "a", "parameters": {"details": True}}).json()
        assert tgi["generated_text"] == "one two three" and tgi["details"]["generated_tokens"] == 3
        assert post(server, "/", {"inputs": "a"}).json() == [{"generated_text": "one two three"}]
        assert httpx.get(server.openai_url + "/models").json()["data"][0]["id"] == "m1"
        assert post(server, "/v1/completions", {"messages": []}).status_code == 400
        assert post(server, "/nope", {}).status_code == 404
        assert [r.path for r in server.posts()] == [
            "/v1/chat/completions",
            "/v1/completions",
            "/generate",
            "/",
            "/v1/completions",
            "/nope",
        ]


def test_fault_list_and_kinds():
    faults = ["429:1.5", "401", "503", "malformed", None, "delay:0.6"]
    with FakeServer(faults=faults) as server:
        body = {"prompt": "p"}
        r = post(server, "/v1/completions", body)
        assert r.status_code == 429 and r.headers["retry-after"] == "1.5"
        assert post(server, "/v1/completions", body).status_code == 401
        assert post(server, "/v1/completions", body).status_code == 503
        bad = post(server, "/v1/completions", body)
        assert bad.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            bad.json()
        assert post(server, "/v1/completions", body).json()["choices"][0]["text"] == "echo: p"
        with pytest.raises(httpx.ReadTimeout):
            post(server, "/v1/completions", body, timeout=0.2)
        assert post(server, "/v1/completions", body).status_code == 200  # the plan is used up
        assert [f.kind if f else None for f in (r.fault for r in server.posts())] == [
            "rate_limit",
            "unauthorized",
            "status",
            "malformed",
            None,
            "delay",
            None,
        ]


def test_fault_per_key_and_callable():
    with FakeServer(faults={"a": ["500", "500"]}) as server:
        codes = [post(server, "/v1/completions", {"prompt": k}).status_code for k in ["a", "b", "a", "a"]]
        assert codes == [500, 200, 500, 200]
        server.set_faults(lambda n, body: "429" if n % 2 == 0 else None)
        codes = [post(server, "/v1/completions", {"prompt": "x"}).status_code for _ in range(4)]
        assert codes[1] == 429 and codes[3] == 429 and codes[0] == codes[2] == 200
    with pytest.raises(ValueError, match="unknown fault"):
        Fault.parse("explode")


def test_latency_log_threads_and_stop():
    with FakeServer(latency=1.0) as server:  # long enough that all 8 overlap even on a busy machine
        url = server.url
        t0 = time.perf_counter()
        threads = [
            threading.Thread(target=post, args=(server, "/generate", {"inputs": str(i)})) for i in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        assert 1.0 <= elapsed < 4.0  # handled in parallel, not one after another (8 x 1 s)
        assert server.max_in_flight == 8
        assert sorted(server.keys()) == [str(i) for i in range(8)]
    with pytest.raises(httpx.ConnectError):
        httpx.post(url + "/generate", json={"inputs": "late"}, timeout=1)
